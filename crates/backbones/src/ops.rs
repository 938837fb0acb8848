//! Differentiable building blocks candle lacks or cannot differentiate:
//! a padded max-pool with PyTorch's semantics and backward, softmax and LayerNorm written as
//! compositions of differentiable ops. ReLU with its guided mode comes from `tgc-explain`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

pub use tgc_explain::{relu, ReluMode};

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// 2-D max-pooling over `[B, C, H, W]` with PyTorch's semantics: implicit −∞ padding, output
/// size `floor((H + 2p − k) / s) + 1`, and the gradient routed to the first maximum of each
/// window in row-major order (as `torch.nn.functional.max_pool2d` does on CPU).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if kernel == 0 || stride == 0 || padding * 2 > kernel {
        candle_core::bail!("max_pool2d: invalid kernel {kernel}, stride {stride}, padding {padding}");
    }
    let op = MaxPool2d { kernel, stride, padding };
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(op)
    } else {
        // The kernels are CPU code; the copies are differentiable.
        x.to_device(&candle_core::Device::Cpu)?.contiguous()?.apply_op1(op)?.to_device(x.device())
    }
}

#[derive(Clone, Copy)]
struct MaxPool2d {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl MaxPool2d {
    fn out_size(&self, size: usize) -> Result<usize> {
        let padded = size + 2 * self.padding;
        if padded < self.kernel {
            candle_core::bail!("max_pool2d: input size {size} is smaller than the kernel {}", self.kernel);
        }
        Ok((padded - self.kernel) / self.stride + 1)
    }

    /// Calls `visit(output_index, input_index_of_window_max)` for every output element.
    fn for_each_argmax(&self, x: &[f32], (b, c, h, w): (usize, usize, usize, usize), mut visit: impl FnMut(usize, usize)) -> Result<()> {
        let (oh, ow) = (self.out_size(h)?, self.out_size(w)?);
        for plane in 0..b * c {
            let base = plane * h * w;
            for oy in 0..oh {
                for ox in 0..ow {
                    let y0 = (oy * self.stride) as isize - self.padding as isize;
                    let x0 = (ox * self.stride) as isize - self.padding as isize;
                    let mut best = f32::NEG_INFINITY;
                    let mut arg = usize::MAX;
                    for ky in 0..self.kernel as isize {
                        let y = y0 + ky;
                        if y < 0 || y >= h as isize {
                            continue;
                        }
                        for kx in 0..self.kernel as isize {
                            let xx = x0 + kx;
                            if xx < 0 || xx >= w as isize {
                                continue;
                            }
                            let idx = base + y as usize * w + xx as usize;
                            let v = x[idx];
                            if v > best || v.is_nan() || arg == usize::MAX {
                                best = v;
                                arg = idx;
                                if v.is_nan() {
                                    break;
                                }
                            }
                        }
                    }
                    visit(plane * oh * ow + oy * ow + ox, arg);
                }
            }
        }
        Ok(())
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "max_pool2d")?;
        let dims = layout.shape().dims4()?;
        let (oh, ow) = (self.out_size(dims.2)?, self.out_size(dims.3)?);
        let mut out = vec![0f32; dims.0 * dims.1 * oh * ow];
        self.for_each_argmax(x, dims, |o, i| out[o] = x[i])?;
        Ok((CpuStorage::F32(out), Shape::from((dims.0, dims.1, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.to_device(arg.device())?.contiguous()?;
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad, &MaxPool2dBackward(*self))?))
    }
}

/// (input, grad of output) → grad of input, scattering each output gradient to its window max.
struct MaxPool2dBackward(MaxPool2d);

impl CustomOp2 for MaxPool2dBackward {
    fn name(&self) -> &'static str {
        "max-pool2d-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "max_pool2d backward")?;
        let g = contiguous_f32(s2, l2, "max_pool2d backward")?;
        let mut grad_in = vec![0f32; x.len()];
        self.0.for_each_argmax(x, l1.shape().dims4()?, |o, i| grad_in[i] += g[o])?;
        Ok((CpuStorage::F32(grad_in), l1.shape().clone()))
    }
}

/// 2-D convolution (no dilation, one group) as im2col followed by a batched matrix product:
/// `out[b] = W · cols(x[b])` with `W` the kernel as `[C_out, C_in·k·k]`. The same function as
/// `Tensor::conv2d`, but its input gradient is a matrix product followed by col2im, where
/// candle's CPU backward runs a direct transposed convolution.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c_in, h, w) = x.dims4()?;
    let (c_out, wc_in, kh, kw) = weight.dims4()?;
    if wc_in != c_in || kh != kw || stride == 0 {
        candle_core::bail!("conv2d: input {:?} and kernel {:?} (stride {stride}) do not fit", x.dims(), weight.dims());
    }
    if !x.device().is_cpu() {
        return x.conv2d(weight, padding, stride, 1, 1);
    }
    let geometry = Im2Col { k: kh, stride, padding, h, w };
    let (oh, ow) = (geometry.out(h)?, geometry.out(w)?);
    let cols = x.contiguous()?.apply_op1(geometry)?;
    let kernel = weight.reshape((c_out, c_in * kh * kw))?.broadcast_left(b)?;
    kernel.matmul(&cols)?.reshape((b, c_out, oh, ow))
}

/// `[B, C, H, W]` → `[B, C·k·k, H_out·W_out]`, row `c·k·k + ky·k + kx`, zero padding.
#[derive(Clone, Copy)]
struct Im2Col {
    k: usize,
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl Im2Col {
    fn out(&self, size: usize) -> Result<usize> {
        let padded = size + 2 * self.padding;
        if padded < self.k {
            candle_core::bail!("conv2d: input size {size} is smaller than the kernel {}", self.k);
        }
        Ok((padded - self.k) / self.stride + 1)
    }

    /// For row (ky, kx) and output row oy: the input row, or None in the padding.
    fn src(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        let i = (o * self.stride + kk) as isize - self.padding as isize;
        (i >= 0 && (i as usize) < size).then_some(i as usize)
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let x = contiguous_f32(storage, layout, "im2col")?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (oh, ow, k) = (self.out(h)?, self.out(w)?, self.k);
        let l = oh * ow;
        let mut cols = vec![0f32; b * c * k * k * l];
        // One (image, channel) plane fills k·k consecutive rows.
        cols.par_chunks_mut(k * k * l).enumerate().for_each(|(bc, rows)| {
            let plane = &x[bc * h * w..(bc + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut rows[(ky * k + kx) * l..(ky * k + kx + 1) * l];
                    for oy in 0..oh {
                        let Some(iy) = self.src(oy, ky, h) else { continue };
                        let dst = &mut row[oy * ow..(oy + 1) * ow];
                        let src = &plane[iy * w..(iy + 1) * w];
                        for (ox, d) in dst.iter_mut().enumerate() {
                            if let Some(ix) = self.src(ox, kx, w) {
                                *d = src[ix];
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(cols), Shape::from((b, c * k * k, l))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (b, c, _, _) = arg.dims4()?;
        let grad = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im { geometry: *self, b, c })?;
        Ok(Some(grad))
    }
}

/// The adjoint of [`Im2Col`]: scatters-adds columns back into `[B, C, H, W]`.
struct Col2Im {
    geometry: Im2Col,
    b: usize,
    c: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let cols = contiguous_f32(storage, layout, "col2im")?;
        let g = self.geometry;
        let (h, w, k) = (g.h, g.w, g.k);
        let (oh, ow) = (g.out(h)?, g.out(w)?);
        let l = oh * ow;
        let mut x = vec![0f32; self.b * self.c * h * w];
        x.par_chunks_mut(h * w).enumerate().for_each(|(bc, plane)| {
            let rows = &cols[bc * k * k * l..(bc + 1) * k * k * l];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &rows[(ky * k + kx) * l..(ky * k + kx + 1) * l];
                    for oy in 0..oh {
                        let Some(iy) = g.src(oy, ky, h) else { continue };
                        let dst = &mut plane[iy * w..(iy + 1) * w];
                        for (ox, v) in row[oy * ow..(oy + 1) * ow].iter().enumerate() {
                            if let Some(ix) = g.src(ox, kx, w) {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(x), Shape::from((self.b, self.c, h, w))))
    }
}

/// Softmax over the last dimension from differentiable ops (candle-nn's fused kernel has no
/// backward). The max subtracted for stability is detached: softmax does not depend on it.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// LayerNorm over the last dimension (biased variance, like PyTorch), differentiable.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// Tensors this crate computes with are f32.
pub const DTYPE: DType = DType::F32;
