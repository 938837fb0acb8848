//! Differentiable building blocks candle lacks or cannot differentiate:
//! a padded max-pool with PyTorch's semantics and backward, softmax and LayerNorm written as
//! compositions of differentiable ops. ReLU with its guided mode comes from `tgc-explain`.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use rayon::prelude::*;
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

/// Output size of a sliding window (PyTorch's floor rule): `(size + 2p − k) / s + 1`.
fn window_out(op: &str, size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize> {
    let padded = size + 2 * padding;
    if padded < kernel {
        candle_core::bail!("{op}: input size {size} is smaller than the kernel {kernel}");
    }
    Ok((padded - kernel) / stride + 1)
}

impl MaxPool2d {
    fn out_size(&self, size: usize) -> Result<usize> {
        window_out("max_pool2d", size, self.kernel, self.stride, self.padding)
    }

    /// Calls `visit(output_index, input_index_of_window_max)` for every output element of one
    /// `h × w` plane (indices local to the plane). Ties keep the first maximum in row-major
    /// order; a NaN wins and a later NaN replaces it, as in PyTorch's CPU kernel.
    fn plane_argmax(&self, plane: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize), mut visit: impl FnMut(usize, usize)) {
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
                        let idx = y as usize * w + xx as usize;
                        let v = plane[idx];
                        if v > best || v.is_nan() || arg == usize::MAX {
                            best = v;
                            arg = idx;
                        }
                    }
                }
                visit(oy * ow + ox, arg);
            }
        }
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
        let (h, w) = (dims.2, dims.3);
        let mut out = vec![0f32; dims.0 * dims.1 * oh * ow];
        out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each(|(dst, plane)| {
            self.plane_argmax(plane, (h, w), (oh, ow), |o, i| dst[o] = plane[i]);
        });
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
        let (_, _, h, w) = l1.shape().dims4()?;
        let (oh, ow) = (self.0.out_size(h)?, self.0.out_size(w)?);
        let mut grad_in = vec![0f32; x.len()];
        grad_in.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).zip(g.par_chunks(oh * ow)).for_each(|((dst, plane), gp)| {
            self.0.plane_argmax(plane, (h, w), (oh, ow), |o, i| dst[i] += gp[o]);
        });
        Ok((CpuStorage::F32(grad_in), l1.shape().clone()))
    }
}

/// 2-D convolution (no dilation, one group) with an optional bias, computed per image as
/// im2col followed by one matrix product `W · cols` (the `gemm` crate, multi-threaded) whose
/// output starts from the bias. Backward computes only the input gradient, `col2im(Wᵀ · grad)`:
/// the weights are constants here, so no weight gradient is formed (candle's own matmul
/// backward would always compute one), and no im2col buffer is kept for the backward pass.
/// Off the CPU it falls back to candle's `conv2d`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    params: FrozenParams,
    stride: usize,
    padding: usize,
}

/// A frozen layer's weight `[out, …]` and optional bias `[out]`, as tensors (for the candle
/// fallback off the CPU) and as shared f32 buffers (for the gemm kernels).
#[derive(Debug, Clone)]
struct FrozenParams {
    weight: Tensor,
    bias: Option<Tensor>,
    flat_weight: Arc<Vec<f32>>,
    flat_bias: Option<Arc<Vec<f32>>>,
}

impl FrozenParams {
    fn new(op: &str, weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let out = weight.dim(0)?;
        if let Some(b) = &bias {
            if b.dims() != [out] {
                candle_core::bail!("{op}: bias {:?} does not fit {out} outputs", b.dims());
            }
        }
        let flat = |t: &Tensor| -> Result<Arc<Vec<f32>>> { Ok(Arc::new(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)) };
        Ok(Self { flat_weight: flat(&weight)?, flat_bias: bias.as_ref().map(flat).transpose()?, weight, bias })
    }
}

impl Conv2d {
    /// `weight` `[C_out, C_in, k, k]`, `bias` `[C_out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Result<Self> {
        let (_, _, kh, kw) = weight.dims4()?;
        if kh != kw || stride == 0 {
            candle_core::bail!("conv2d: square kernels and stride ≥ 1 only, got {:?} stride {stride}", weight.dims());
        }
        Ok(Self { params: FrozenParams::new("conv2d", weight, bias)?, stride, padding })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let (_, c_in, h, w) = x.dims4()?;
        let (c_out, wc_in, k, _) = p.weight.dims4()?;
        if wc_in != c_in {
            candle_core::bail!("conv2d: input {:?} has {c_in} channels, the kernel {:?} wants {wc_in}", x.dims(), p.weight.dims());
        }
        if !x.device().is_cpu() {
            let y = x.conv2d(&p.weight, self.padding, self.stride, 1, 1)?;
            return match &p.bias {
                Some(b) => y.broadcast_add(&b.reshape((1, c_out, 1, 1))?),
                None => Ok(y),
            };
        }
        let geometry = Geometry { k, stride: self.stride, padding: self.padding, h, w, c_in, c_out };
        geometry.out(h)?;
        geometry.out(w)?;
        x.contiguous()?.apply_op1(ConvOp { geometry, weight: p.flat_weight.clone(), bias: p.flat_bias.clone() })
    }
}

/// A one-off [`Conv2d`] without bias.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    Conv2d::new(weight.clone(), None, stride, padding)?.forward(x)
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    k: usize,
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
    c_in: usize,
    c_out: usize,
}

impl Geometry {
    fn out(&self, size: usize) -> Result<usize> {
        window_out("conv2d", size, self.k, self.stride, self.padding)
    }

    /// The input index read by output index `o` at kernel offset `kk`, or None in the padding.
    fn src(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        let i = (o * self.stride + kk) as isize - self.padding as isize;
        (i >= 0 && (i as usize) < size).then_some(i as usize)
    }

    /// One image `[C_in, H, W]` → `cols` `[C_in·k·k, L]`, row `c·k·k + ky·k + kx`.
    fn im2col(&self, image: &[f32], cols: &mut [f32]) -> Result<()> {
        let (h, w, k) = (self.h, self.w, self.k);
        let (oh, ow) = (self.out(h)?, self.out(w)?);
        let l = oh * ow;
        cols.par_chunks_mut(k * k * l).enumerate().for_each(|(c, rows)| {
            let plane = &image[c * h * w..(c + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &mut rows[(ky * k + kx) * l..(ky * k + kx + 1) * l];
                    for oy in 0..oh {
                        let dst = &mut row[oy * ow..(oy + 1) * ow];
                        let Some(iy) = self.src(oy, ky, h) else {
                            dst.fill(0.0);
                            continue;
                        };
                        let src = &plane[iy * w..(iy + 1) * w];
                        for (ox, d) in dst.iter_mut().enumerate() {
                            *d = self.src(ox, kx, w).map_or(0.0, |ix| src[ix]);
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// The adjoint of [`Geometry::im2col`]: adds `cols` back into one image `[C_in, H, W]`.
    fn col2im(&self, cols: &[f32], image: &mut [f32]) -> Result<()> {
        let (h, w, k) = (self.h, self.w, self.k);
        let (oh, ow) = (self.out(h)?, self.out(w)?);
        let l = oh * ow;
        image.par_chunks_mut(h * w).enumerate().for_each(|(c, plane)| {
            let rows = &cols[c * k * k * l..(c + 1) * k * k * l];
            for ky in 0..k {
                for kx in 0..k {
                    let row = &rows[(ky * k + kx) * l..(ky * k + kx + 1) * l];
                    for oy in 0..oh {
                        let Some(iy) = self.src(oy, ky, h) else { continue };
                        let dst = &mut plane[iy * w..(iy + 1) * w];
                        for (ox, v) in row[oy * ow..(oy + 1) * ow].iter().enumerate() {
                            if let Some(ix) = self.src(ox, kx, w) {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

/// `dst[m×n] (+)= a · b` for row-major `a` (`[m×k]`, or `[k×m]` read transposed) and `b`
/// (`[k×n]`, or `[n×k]` read transposed).
fn gemm_into(dst: &mut [f32], accumulate: bool, a: &[f32], a_transposed: bool, b: &[f32], (m, k, n): (usize, usize, usize)) {
    gemm_tt(dst, accumulate, a, a_transposed, b, false, (m, k, n))
}

fn gemm_tt(dst: &mut [f32], accumulate: bool, a: &[f32], a_transposed: bool, b: &[f32], b_transposed: bool, (m, k, n): (usize, usize, usize)) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "gemm operand sizes");
    let (a_rs, a_cs) = if a_transposed { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the pointers come from slices whose lengths were checked against m, k, n above,
    // and the strides describe those row-major (or transposed) layouts exactly.
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.as_mut_ptr(), 1, n as isize, accumulate,
            a.as_ptr(), a_cs, a_rs,
            b.as_ptr(), b_cs, b_rs,
            1.0, 1.0, false, false, false,
            parallelism,
        );
    }
}

/// Forward: per image, im2col then `out = bias + W · cols`.
struct ConvOp {
    geometry: Geometry,
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
}

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "conv2d")?;
        let g = self.geometry;
        let b = layout.shape().dims4()?.0;
        let (oh, ow) = (g.out(g.h)?, g.out(g.w)?);
        let (l, kk) = (oh * ow, g.c_in * g.k * g.k);
        let mut out = vec![0f32; b * g.c_out * l];
        let mut cols = vec![0f32; kk * l];
        for (image, dst) in x.chunks(g.c_in * g.h * g.w).zip(out.chunks_mut(g.c_out * l)) {
            g.im2col(image, &mut cols)?;
            if let Some(bias) = &self.bias {
                for (row, v) in dst.chunks_mut(l).zip(bias.iter()) {
                    row.fill(*v);
                }
            }
            gemm_into(dst, self.bias.is_some(), &self.weight, false, &cols, (g.c_out, kk, l));
        }
        Ok((CpuStorage::F32(out), Shape::from((b, g.c_out, oh, ow))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = ConvInputGrad { geometry: self.geometry, weight: self.weight.clone() };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// Input gradient of [`ConvOp`]: per image, `col2im(Wᵀ · grad)`.
struct ConvInputGrad {
    geometry: Geometry,
    weight: Arc<Vec<f32>>,
}

impl CustomOp1 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "conv2d-input-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let grad = contiguous_f32(storage, layout, "conv2d backward")?;
        let g = self.geometry;
        let b = layout.shape().dims4()?.0;
        let l = g.out(g.h)? * g.out(g.w)?;
        let kk = g.c_in * g.k * g.k;
        let mut input_grad = vec![0f32; b * g.c_in * g.h * g.w];
        let mut cols = vec![0f32; kk * l];
        for (gout, dst) in grad.chunks(g.c_out * l).zip(input_grad.chunks_mut(g.c_in * g.h * g.w)) {
            gemm_into(&mut cols, false, &self.weight, true, gout, (kk, g.c_out, l));
            g.col2im(&cols, dst)?;
        }
        Ok((CpuStorage::F32(input_grad), Shape::from((b, g.c_in, g.h, g.w))))
    }
}

/// `y = x · Wᵀ + b` over the last dimension, with a backward that forms only the input
/// gradient `grad · W` (the weights are constants; candle-nn's `Linear` would also compute
/// their gradient). Loaded from `weight` `[out, in]` and `bias` `[out]` like `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    params: FrozenParams,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        weight.dims2()?;
        Ok(Self { params: FrozenParams::new("linear", weight, bias)? })
    }

    /// Loads `weight` and, when `with_bias`, `bias` from a `VarBuilder`.
    pub fn load(inp: usize, out: usize, with_bias: bool, vb: candle_nn::VarBuilder) -> Result<Self> {
        let bias = if with_bias { Some(vb.get(out, "bias")?) } else { None };
        Self::new(vb.get((out, inp), "weight")?, bias)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let (out, inp) = p.weight.dims2()?;
        if x.dim(D::Minus1)? != inp {
            candle_core::bail!("linear: input {:?} does not end in {inp}", x.dims());
        }
        if !x.device().is_cpu() {
            let y = x.broadcast_matmul(&p.weight.t()?)?;
            return match &p.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        x.contiguous()?.apply_op1(LinearOp { inp, out, weight: p.flat_weight.clone(), bias: p.flat_bias.clone() })
    }
}

struct LinearOp {
    inp: usize,
    out: usize,
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
}

impl CustomOp1 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "linear")?;
        let rows = x.len() / self.inp;
        let mut y = vec![0f32; rows * self.out];
        if let Some(bias) = &self.bias {
            for row in y.chunks_mut(self.out) {
                row.copy_from_slice(bias);
            }
        }
        gemm_tt(&mut y, self.bias.is_some(), x, false, &self.weight, true, (rows, self.inp, self.out));
        let mut dims = layout.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = self.out;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = LinearInputGrad { inp: self.inp, out: self.out, weight: self.weight.clone() };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

struct LinearInputGrad {
    inp: usize,
    out: usize,
    weight: Arc<Vec<f32>>,
}

impl CustomOp1 for LinearInputGrad {
    fn name(&self) -> &'static str {
        "linear-input-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(storage, layout, "linear backward")?;
        let rows = g.len() / self.out;
        let mut dx = vec![0f32; rows * self.inp];
        gemm_tt(&mut dx, false, g, false, &self.weight, false, (rows, self.out, self.inp));
        let mut dims = layout.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = self.inp;
        Ok((CpuStorage::F32(dx), Shape::from(dims)))
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
