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
