//! Differentiable building blocks candle lacks or cannot differentiate:
//! a padded max-pool with PyTorch's semantics and backward, softmax and LayerNorm written as
//! compositions of differentiable ops. ReLU with its guided mode comes from `tgc-explain`
//! (re-exported here), so a fused kernel's ReLU follows the rule an explainer asks through
//! `Hooks::relu_mode`.

use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

pub use tgc_explain::{relu, ReluMode};

use crate::vecmath::{self, GemmKernel};
use crate::winograd::WinogradKernel;

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

/// A backward kernel as a candle op on (the tensor it reads, the output gradient): `f` maps
/// their contiguous values to the input gradient, shaped as the first.
struct Backward<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(&[f32], &[f32], &Shape) -> Result<Vec<f32>>> CustomOp2 for Backward<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let saved = contiguous_f32(s1, l1, self.name)?;
        let grad = contiguous_f32(s2, l2, self.name)?;
        Ok((CpuStorage::F32((self.f)(saved, grad, l1.shape())?), l1.shape().clone()))
    }
}

/// Runs the backward kernel `f` on `saved` and `grad` (see [`Backward`]).
fn backward(name: &'static str, saved: &Tensor, grad: &Tensor, f: impl Fn(&[f32], &[f32], &Shape) -> Result<Vec<f32>>) -> Result<Tensor> {
    saved.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &Backward { name, f })
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

    /// The input indices `lo..hi` that output index `o` covers along an axis of `size` (the
    /// padding clipped off; never empty, since the padding is at most half the kernel).
    fn window(&self, o: usize, size: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride) as isize - self.padding as isize;
        start.max(0) as usize..((start + self.kernel as isize) as usize).min(size)
    }

    /// Calls `visit(output_index, input_index_of_window_max)` for every output element of one
    /// `h × w` plane (indices local to the plane). As PyTorch's CPU kernel: the index starts at
    /// the window's first element and the maximum at −∞, and an element replaces them when it
    /// is greater or NaN (ties keep the first maximum in row-major order; a later NaN wins).
    /// The updates are selects, not branches: on real activations they are unpredictable.
    fn plane_argmax(&self, plane: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize), mut visit: impl FnMut(usize, usize)) {
        let cols: Vec<std::ops::Range<usize>> = (0..ow).map(|ox| self.window(ox, w)).collect();
        for oy in 0..oh {
            let ys = self.window(oy, h);
            for (ox, xs) in cols.iter().enumerate() {
                let mut arg = ys.start * w + xs.start;
                let mut best = f32::NEG_INFINITY;
                for y in ys.clone() {
                    for (x, &v) in plane[y * w..(y + 1) * w][xs.clone()].iter().enumerate() {
                        let take = v > best || v.is_nan();
                        best = if take { v } else { best };
                        arg = if take { y * w + xs.start + x } else { arg };
                    }
                }
                visit(oy * ow + ox, arg);
            }
        }
    }

    /// The window maxima of one plane into `dst` (rows of `ow`), as rows then columns: the
    /// maximum of each row's windows first (`rows`, `h × ow`), then of those over each
    /// window's rows. A NaN anywhere in a window gives NaN; ties are equal values, so the
    /// order does not change the result of [`MaxPool2d::plane_argmax`]'s rule.
    fn plane_max(&self, plane: &[f32], (h, w): (usize, usize), ow: usize, rows: &mut Vec<f32>, dst: &mut [f32]) {
        let max = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
        rows.resize(h * ow, 0.0);
        let cols: Vec<std::ops::Range<usize>> = (0..ow).map(|ox| self.window(ox, w)).collect();
        for (src, dst) in plane.chunks(w).zip(rows.chunks_mut(ow)) {
            for (d, xs) in dst.iter_mut().zip(&cols) {
                *d = src[xs.clone()].iter().fold(f32::NEG_INFINITY, |m, &v| max(m, v));
            }
        }
        for (oy, d) in dst.chunks_mut(ow).enumerate() {
            d.fill(f32::NEG_INFINITY);
            for y in self.window(oy, h) {
                d.iter_mut().zip(&rows[y * ow..(y + 1) * ow]).for_each(|(d, &v)| *d = max(*d, v));
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
        out.par_chunks_mut(oh * ow).zip(x.par_chunks(h * w)).for_each_init(Vec::new, |rows, (dst, plane)| {
            self.plane_max(plane, (h, w), ow, rows, dst);
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
    winograd: Option<Arc<WinogradPair>>,
}

/// The Winograd kernels of a 3×3, stride 1, padding 1 convolution: the forward one, and the
/// input gradient's (made at the first backward pass: feature extraction never needs it).
#[derive(Debug)]
struct WinogradPair {
    forward: WinogradKernel,
    transposed: OnceLock<WinogradKernel>,
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
        let params = FrozenParams::new("conv2d", weight, bias)?;
        let (c_out, c_in, _, _) = params.weight.dims4()?;
        let winograd = (kh == 3 && stride == 1 && padding == 1)
            .then(|| Arc::new(WinogradPair { forward: WinogradKernel::new(&params.flat_weight, c_out, c_in), transposed: OnceLock::new() }));
        Ok(Self { params, stride, padding, winograd })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, None, None)
    }

    /// `relu(conv(x) + bias + residual)` in one op: the residual add and the ReLU run in the
    /// convolution's epilogue, and the backward pass masks the gradient once (with the guided
    /// rule when `relu` is `Guided`) before forming the input gradient. The same function as
    /// the separate ops, with fewer passes over the activations and none of their buffers.
    pub fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>, relu_mode: Option<ReluMode>) -> Result<Tensor> {
        let p = &self.params;
        let (_, c_in, h, w) = x.dims4()?;
        let (c_out, wc_in, k, _) = p.weight.dims4()?;
        if wc_in != c_in {
            candle_core::bail!("conv2d: input {:?} has {c_in} channels, the kernel {:?} wants {wc_in}", x.dims(), p.weight.dims());
        }
        if !x.device().is_cpu() {
            let mut y = x.conv2d(&p.weight, self.padding, self.stride, 1, 1)?;
            if let Some(b) = &p.bias {
                y = y.broadcast_add(&b.reshape((1, c_out, 1, 1))?)?;
            }
            if let Some(r) = residual {
                y = (y + r)?;
            }
            return match relu_mode {
                Some(mode) => relu(&y, mode),
                None => Ok(y),
            };
        }
        let geometry = Geometry { k, stride: self.stride, padding: self.padding, h, w, c_in, c_out };
        let (oh, ow) = (geometry.out(h)?, geometry.out(w)?);
        let op = ConvOp { geometry, weight: p.flat_weight.clone(), bias: p.flat_bias.clone(), relu: relu_mode, winograd: self.winograd.clone() };
        match residual {
            None => x.contiguous()?.apply_op1(op),
            Some(r) => {
                let expected = [x.dim(0)?, c_out, oh, ow];
                if r.dims() != expected {
                    candle_core::bail!("conv2d: residual {:?} does not match the output {expected:?}", r.dims());
                }
                x.contiguous()?.apply_op2(&r.contiguous()?, op)
            }
        }
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

    /// The output indices `lo..hi` (of `out` of them) whose input index at kernel offset `kk`
    /// lies inside `0..size`; outside that range they read the padding.
    fn valid(&self, kk: usize, size: usize, out: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride, self.padding);
        // o·s + kk − p ≥ 0  ⇔  o ≥ ⌈(p − kk)/s⌉;  o·s + kk − p ≤ size − 1  ⇔  o ≤ ⌊(size − 1 + p − kk)/s⌋
        let lo = p.saturating_sub(kk).div_ceil(s).min(out);
        let hi = if size + p > kk { ((size - 1 + p - kk) / s + 1).min(out) } else { 0 };
        lo..hi.max(lo)
    }

    /// Whether this convolution runs in bands of output rows (see [`ConvOp::run_banded`]).
    fn banded(&self) -> bool {
        self.c_out * self.c_in * self.k * self.k * 4 <= BANDED_MAX_WEIGHT_BYTES
    }

    /// How one image's `oh` output rows are cut into bands: the ranges of output rows. A
    /// band's columns stay near [`BAND_BYTES`], an image has at least [`MIN_BANDS`] (for two
    /// threads at batch 1), and two bands with one between them never read the same input
    /// row, so the input gradient can add every other band at once. They depend on the
    /// geometry only, so an image gives the same bits alone or in a batch.
    fn bands(&self, (oh, ow): (usize, usize)) -> Vec<std::ops::Range<usize>> {
        let kk = self.c_in * self.k * self.k;
        let count = (kk * oh * ow * 4).div_ceil(BAND_BYTES).max(MIN_BANDS).min(oh);
        // Output rows o0..o0+R read input rows up to (o0 + R − 1)·s + k − 1 − p; the band after
        // the next starts reading at (o0 + 2R)·s − p: apart when R·s > k − 1 − s.
        let min_rows = if self.k > self.stride { (self.k - 1 - self.stride) / self.stride + 1 } else { 1 };
        let rows = oh.div_ceil(count.max(1)).max(min_rows);
        (0..oh).step_by(rows.max(1)).map(|o| o..(o + rows).min(oh)).collect()
    }

    /// One image `[C_in, H, W]` → `cols` `[C_in·k·k, L]`, row `c·k·k + ky·k + kx`.
    fn im2col(&self, image: &[f32], cols: &mut [f32]) -> Result<()> {
        let (h, w, k) = (self.h, self.w, self.k);
        let (oh, ow) = (self.out(h)?, self.out(w)?);
        let l = oh * ow;
        // One task per (channel, ky): k rows of `cols` each.
        cols.par_chunks_mut(k * l).enumerate().for_each(|(task, rows)| {
            let (c, ky) = (task / k, task % k);
            let plane = &image[c * h * w..(c + 1) * h * w];
            for kx in 0..k {
                self.im2col_row(plane, (ky, kx), 0..oh, ow, &mut rows[kx * l..(kx + 1) * l]);
            }
        });
        Ok(())
    }

    /// The columns of output rows `oys` only, on the calling thread: `cols` `[C_in·k·k,
    /// oys.len()·ow]`, the same rows as [`Geometry::im2col`].
    fn im2col_band(&self, image: &[f32], oys: std::ops::Range<usize>, ow: usize, cols: &mut [f32]) {
        let (h, w, k) = (self.h, self.w, self.k);
        let n = oys.len() * ow;
        for (row, dst) in cols.chunks_mut(n).enumerate() {
            let (c, ky, kx) = (row / (k * k), row / k % k, row % k);
            self.im2col_row(&image[c * h * w..(c + 1) * h * w], (ky, kx), oys.clone(), ow, dst);
        }
    }

    /// One row of the columns: what kernel offset `(ky, kx)` reads from one input channel
    /// `plane` for the output rows `oys` (`ow` values each), zero in the padding.
    fn im2col_row(&self, plane: &[f32], (ky, kx): (usize, usize), oys: std::ops::Range<usize>, ow: usize, row: &mut [f32]) {
        let (h, w, s) = (self.h, self.w, self.stride);
        let cols_ok = self.valid(kx, w, ow);
        for (oy, dst) in oys.zip(row.chunks_mut(ow)) {
            let Some(iy) = self.src(oy, ky, h) else {
                dst.fill(0.0);
                continue;
            };
            let src = &plane[iy * w..(iy + 1) * w];
            dst[..cols_ok.start].fill(0.0);
            dst[cols_ok.end..].fill(0.0);
            let first = cols_ok.start * s + kx - self.padding;
            for (j, d) in dst[cols_ok.clone()].iter_mut().enumerate() {
                *d = src[first + j * s];
            }
        }
    }

    /// The adjoint of [`Geometry::im2col_band`]: adds the columns of output rows `oys` into
    /// one image `[C_in, H, W]` behind `image`, on the calling thread.
    ///
    /// # Safety
    /// `image` points to `C_in·H·W` values, and no other thread touches the input rows that
    /// these output rows read (see [`Geometry::bands`]) meanwhile.
    unsafe fn col2im_band(&self, cols: &[f32], oys: std::ops::Range<usize>, ow: usize, image: *mut f32) {
        let (h, w, k, s) = (self.h, self.w, self.k, self.stride);
        let n = oys.len() * ow;
        for (row, src) in cols.chunks(n).enumerate() {
            let (c, ky, kx) = (row / (k * k), row / k % k, row % k);
            let ok = self.valid(kx, w, ow);
            let first = ok.start * s + kx - self.padding;
            for (oy, src) in oys.clone().zip(src.chunks(ow)) {
                let Some(iy) = self.src(oy, ky, h) else {
                    continue;
                };
                // SAFETY: row `iy` of channel `c` lies inside the image; the caller keeps it ours.
                let dst = unsafe { std::slice::from_raw_parts_mut(image.add((c * h + iy) * w), w) };
                for (j, v) in src[ok.clone()].iter().enumerate() {
                    dst[first + j * s] += v;
                }
            }
        }
    }

    /// The adjoint of [`Geometry::im2col`]: adds `cols` back into one image `[C_in, H, W]`.
    /// Each input row gathers what every kernel offset sends it, so rows run in parallel.
    fn col2im(&self, cols: &[f32], image: &mut [f32]) -> Result<()> {
        let (h, w, k, s, p) = (self.h, self.w, self.k, self.stride, self.padding);
        let (oh, ow) = (self.out(h)?, self.out(w)?);
        let l = oh * ow;
        let col_ranges: Vec<std::ops::Range<usize>> = (0..k).map(|kx| self.valid(kx, w, ow)).collect();
        image.par_chunks_mut(w).enumerate().for_each(|(task, dst)| {
            let (c, iy) = (task / h, task % h);
            let rows = &cols[c * k * k * l..(c + 1) * k * k * l];
            for ky in 0..k {
                // Output row oy reads input row iy at offset ky when oy·s + ky − p = iy.
                let Some(num) = (iy + p).checked_sub(ky) else {
                    continue;
                };
                if num % s != 0 || num / s >= oh {
                    continue;
                }
                let oy = num / s;
                for (kx, ok) in col_ranges.iter().enumerate() {
                    let src = &rows[(ky * k + kx) * l + oy * ow..][..ow];
                    let first = ok.start * s + kx - p;
                    for (j, v) in src[ok.clone()].iter().enumerate() {
                        dst[first + j * s] += v;
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

/// `dst[m×n] = a[m×k] · b[k×n]`, all row-major, on the calling thread (for callers that run
/// many small products in parallel themselves).
///
/// A column's result does not depend on how many columns there are: with one column the `gemm`
/// crate would take its vector path, whose sums round differently, so a zero column is added
/// (an image's Winograd tiles then give the same bits alone as in a batch).
pub(crate) fn gemm_serial(dst: &mut [f32], a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "gemm operand sizes");
    if n == 1 {
        let padded: Vec<f32> = b.iter().flat_map(|&v| [v, 0.0]).collect();
        let mut out = vec![0f32; 2 * m];
        gemm_serial(&mut out, a, &padded, (m, k, 2));
        dst.iter_mut().zip(out.chunks(2)).for_each(|(d, pair)| *d = pair[0]);
        return;
    }
    // SAFETY: lengths checked above, strides of row-major layouts.
    unsafe {
        gemm_strided(
            (dst.as_mut_ptr(), n as isize, 1),
            false,
            Mat(a.as_ptr(), k as isize, 1),
            Mat(b.as_ptr(), n as isize, 1),
            (m, k, n),
            gemm::Parallelism::None,
        );
    }
}

fn gemm_tt(dst: &mut [f32], accumulate: bool, a: &[f32], a_transposed: bool, b: &[f32], b_transposed: bool, (m, k, n): (usize, usize, usize)) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "gemm operand sizes");
    let a = if a_transposed { Mat(a.as_ptr(), 1, m as isize) } else { Mat(a.as_ptr(), k as isize, 1) };
    let b = if b_transposed { Mat(b.as_ptr(), 1, k as isize) } else { Mat(b.as_ptr(), n as isize, 1) };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the pointers come from slices whose lengths were checked against m, k, n above,
    // and the strides describe those row-major (or transposed) layouts exactly.
    unsafe { gemm_strided((dst.as_mut_ptr(), n as isize, 1), accumulate, a, b, (m, k, n), parallelism) }
}

/// A strided matrix: pointer to element (0, 0), row stride, column stride.
#[derive(Clone, Copy)]
struct Mat(*const f32, isize, isize);

/// `dst (+)= a · b`, `[m×k]·[k×n]`, every matrix given by its pointer and strides.
///
/// # Safety
/// Every index `(i, j)` in range must be in bounds of the buffers behind the pointers, and
/// nothing else may write `dst` meanwhile.
unsafe fn gemm_strided(dst: (*mut f32, isize, isize), accumulate: bool, a: Mat, b: Mat, dims: (usize, usize, usize), parallelism: gemm::Parallelism) {
    gemm_with(vecmath::gemm_kernel(), dst, accumulate, a, b, dims, parallelism)
}

/// [`gemm_strided`] with the given micro-kernels ([`GemmKernel`]), all positive strides.
///
/// The `gemm` crate picks its kernels from the CPU alone; with the `avx512-gemm` feature its
/// blocked driver is called here with the kernels of our choice, after the same normalisation
/// its entry point makes (a destination with unit row stride is computed transposed), and
/// [`GemmKernel::Portable`] is the crate's scalar kernels, as its own dispatch gives a CPU
/// without AVX2 + FMA (its dispatch itself would take the AVX-512 kernels on an AVX-512 CPU,
/// above a `TGC_SIMD=baseline` cap). Without the feature, or off x86-64, every kernel is the
/// crate's own dispatch (AVX2 + FMA on x86-64 CPUs with them).
///
/// # Safety
/// As [`gemm_strided`]; a kernel the CPU lacks panics instead of running.
unsafe fn gemm_with(
    kernel: GemmKernel,
    dst: (*mut f32, isize, isize),
    accumulate: bool,
    a: Mat,
    b: Mat,
    (m, k, n): (usize, usize, usize),
    parallelism: gemm::Parallelism,
) {
    #[cfg(all(target_arch = "x86_64", feature = "avx512-gemm"))]
    {
        use gemm_common::simd::{MixedSimd, Scalar, V3, V4};
        // `dst = dst + a·b` with dst (pointer, row stride, column stride).
        let (dst, a, b, m, n) = if dst.2.abs() < dst.1.abs() {
            // Transposed: dstᵀ = bᵀ·aᵀ, so the micro-kernels walk the destination's columns.
            ((dst.0, dst.2, dst.1), Mat(b.0, b.2, b.1), Mat(a.0, a.2, a.1), n, m)
        } else {
            (dst, a, b, m, n)
        };
        macro_rules! blocked {
            ($simd:ty, $lanes:literal, $kernels:path) => {{
                use $kernels as uk;
                let simd = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new().expect("the CPU lacks the matrix product's instruction set");
                gemm_common::gemm::gemm_basic_generic::<$simd, f32, $lanes, { uk::MR_DIV_N * $lanes }, { uk::NR }, { uk::MR_DIV_N }, { uk::H_M }, { uk::H_N }>(
                    simd,
                    m,
                    n,
                    k,
                    dst.0,
                    dst.2,
                    dst.1,
                    accumulate,
                    a.0,
                    a.2,
                    a.1,
                    b.0,
                    b.2,
                    b.1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    |x, y, z| x * y + z,
                    &uk::UKR,
                    &uk::H_UKR,
                    false,
                    parallelism,
                )
            }};
        }
        match kernel {
            GemmKernel::Avx512 => blocked!(V4, 16, gemm_f32::microkernel::avx512f::f32),
            GemmKernel::Avx2Fma => blocked!(V3, 8, gemm_f32::microkernel::fma::f32),
            GemmKernel::Portable => blocked!(Scalar, 1, gemm_f32::microkernel::scalar::f32),
        }
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512-gemm")))]
    {
        let _ = kernel;
        gemm::gemm(m, n, k, dst.0, dst.2, dst.1, accumulate, a.0, a.2, a.1, b.0, b.2, b.1, 1.0, 1.0, false, false, false, parallelism);
    }
}

/// Convolutions whose kernel matrix is at most this large run in bands of output rows
/// ([`ConvOp::run_banded`]); larger ones (`layer3`/`layer4`'s strided 3×3) build one image's
/// columns and let the matrix product split the kernel rows between the threads, so that no
/// thread packs the whole kernel for a few columns.
const BANDED_MAX_WEIGHT_BYTES: usize = 512 << 10;
/// Target size of one band's columns.
const BAND_BYTES: usize = 512 << 10;
/// The fewest bands an image is cut into (work for two threads at batch 1).
const MIN_BANDS: usize = 4;

/// Forward: per image, im2col then `out = bias + W · cols`, then the epilogue (residual add,
/// ReLU). Applied as a one-input op without residual, as a two-input op with it.
struct ConvOp {
    geometry: Geometry,
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
    relu: Option<ReluMode>,
    winograd: Option<Arc<WinogradPair>>,
}

impl ConvOp {
    fn run(&self, x: &[f32], batch: usize, residual: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let (oh, ow) = (g.out(g.h)?, g.out(g.w)?);
        if let Some(wg) = &self.winograd {
            let out = wg.forward.conv(x, batch, (g.h, g.w), self.bias.as_deref().map(|b| b.as_slice()), residual, self.relu.is_some());
            return Ok((CpuStorage::F32(out), Shape::from((batch, g.c_out, oh, ow))));
        }
        let (l, kk) = (oh * ow, g.c_in * g.k * g.k);
        let mut out = vec![0f32; batch * g.c_out * l];
        if g.banded() {
            self.run_banded(x, batch, residual, &mut out, (oh, ow));
            return Ok((CpuStorage::F32(out), Shape::from((batch, g.c_out, oh, ow))));
        }
        let mut cols = vec![0f32; kk * l];
        for (i, (image, dst)) in x.chunks(g.c_in * g.h * g.w).zip(out.chunks_mut(g.c_out * l)).enumerate() {
            g.im2col(image, &mut cols)?;
            if let Some(bias) = &self.bias {
                for (row, v) in dst.chunks_mut(l).zip(bias.iter()) {
                    row.fill(*v);
                }
            }
            gemm_into(dst, self.bias.is_some(), &self.weight, false, &cols, (g.c_out, kk, l));
            let res = residual.map(|r| &r[i * g.c_out * l..(i + 1) * g.c_out * l]);
            epilogue(dst, res, self.relu.is_some(), l);
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, g.c_out, oh, ow))))
    }

    /// The forward of a convolution with a small kernel matrix and many output pixels (the
    /// stem, the strided 1×1 and `layer2`'s strided 3×3): each task takes a band of one image's
    /// output rows, builds that band's columns in a buffer that stays in cache and multiplies
    /// on its own thread, so no image-sized column buffer is written and read back and a
    /// single image keeps both cores busy. The bands depend on the geometry only, not on the
    /// batch, so an image gives the same bits alone or in a batch.
    fn run_banded(&self, x: &[f32], batch: usize, residual: Option<&[f32]>, out: &mut [f32], (oh, ow): (usize, usize)) {
        let g = self.geometry;
        let (l, kk, image_len) = (oh * ow, g.c_in * g.k * g.k, g.c_in * g.h * g.w);
        let bands = g.bands((oh, ow));
        let out_ptr = SharedPtr(out.as_mut_ptr());
        (0..batch * bands.len()).into_par_iter().for_each_init(Vec::new, |cols: &mut Vec<f32>, task| {
            let (b, oys) = (task / bands.len(), bands[task % bands.len()].clone());
            let n = oys.len() * ow;
            cols.resize(kk * n, 0.0);
            g.im2col_band(&x[b * image_len..(b + 1) * image_len], oys.clone(), ow, cols);
            let first = b * g.c_out * l + oys.start * ow;
            // SAFETY: the task owns columns `oys` of image `b` in every channel row: the
            // segments `first + c·l .. + n`, disjoint from every other task's.
            let segment = |c: usize| unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(first + c * l), n) };
            if let Some(bias) = &self.bias {
                (0..g.c_out).for_each(|c| segment(c).fill(bias[c]));
            }
            // SAFETY: `c_out` rows of `n` values at stride `l` from `first` lie inside `out`
            // (the segments above); `weight` is `[c_out × kk]` and `cols` `[kk × n]`.
            unsafe {
                gemm_strided(
                    (out_ptr.get().add(first), l as isize, 1),
                    self.bias.is_some(),
                    Mat(self.weight.as_ptr(), kk as isize, 1),
                    Mat(cols.as_ptr(), n as isize, 1),
                    (g.c_out, kk, n),
                    gemm::Parallelism::None,
                )
            };
            for c in 0..g.c_out {
                epilogue_row(segment(c), residual.map(|r| &r[first + c * l..first + c * l + n]), self.relu.is_some());
            }
        });
    }

    /// The gradient at the convolution's output: `grad` masked where the ReLU was off (and
    /// clamped at zero under the guided rule), or `grad` itself without a ReLU.
    fn output_grad(&self, res: &Tensor, grad_res: &Tensor) -> Result<Tensor> {
        match self.relu {
            None => grad_res.contiguous(),
            Some(mode) => grad_res.contiguous()?.apply_op2_no_bwd(&res.contiguous()?, &ReluMask(mode)),
        }
    }

    fn input_grad(&self, grad: &Tensor) -> Result<Tensor> {
        grad.apply_op1_no_bwd(&ConvInputGrad { geometry: self.geometry, weight: self.weight.clone(), winograd: self.winograd.clone() })
    }
}

/// `dst += residual`, then `relu`, in place, one channel row of `l` values at a time.
fn epilogue(dst: &mut [f32], residual: Option<&[f32]>, relu: bool, l: usize) {
    if residual.is_none() && !relu {
        return;
    }
    dst.par_chunks_mut(l).enumerate().for_each(|(c, row)| epilogue_row(row, residual.map(|r| &r[c * l..(c + 1) * l]), relu));
}

/// The convolutions' epilogue on one stretch of output: `dst += residual` (same length), then
/// `relu`, in place.
pub(crate) fn epilogue_row(dst: &mut [f32], residual: Option<&[f32]>, relu: bool) {
    if let Some(r) = residual {
        dst.iter_mut().zip(r).for_each(|(d, v)| *d += v);
    }
    if relu {
        dst.iter_mut().for_each(|d| *d = d.max(0.0));
    }
}

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "conv2d")?;
        self.run(x, layout.shape().dims4()?.0, None)
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.input_grad(&self.output_grad(res, grad_res)?)?))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d-im2col-residual"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "conv2d")?;
        let residual = contiguous_f32(s2, l2, "conv2d residual")?;
        self.run(x, l1.shape().dims4()?.0, Some(residual))
    }

    fn bwd(&self, _arg1: &Tensor, _arg2: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = self.output_grad(res, grad_res)?;
        Ok((Some(self.input_grad(&grad)?), Some(grad)))
    }
}

/// (gradient, ReLU output) → the gradient at the ReLU's input: `grad` where the output is
/// positive (PyTorch's `threshold_backward`), `max(grad, 0)` there under the guided rule, and
/// `max(grad, 0)` everywhere under the deconvolution rule.
struct ReluMask(ReluMode);

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let grad = contiguous_f32(s1, l1, "relu backward")?;
        let out = contiguous_f32(s2, l2, "relu backward")?;
        if grad.len() != out.len() {
            candle_core::bail!("relu backward: gradient {:?} and output {:?} differ", l1.shape(), l2.shape());
        }
        let (guided, deconvolution) = (self.0 == ReluMode::Guided, self.0 == ReluMode::Deconvolution);
        let mut masked = vec![0f32; grad.len()];
        const CHUNK: usize = 1 << 14;
        masked.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(out.par_chunks(CHUNK)).for_each(|((m, g), o)| {
            for ((m, &g), &o) in m.iter_mut().zip(g).zip(o) {
                *m = if deconvolution {
                    g.max(0.0)
                } else if o > 0.0 {
                    if guided {
                        g.max(0.0)
                    } else {
                        g
                    }
                } else {
                    0.0
                };
            }
        });
        Ok((CpuStorage::F32(masked), l1.shape().clone()))
    }
}

/// Input gradient of [`ConvOp`]: per image, `col2im(Wᵀ · grad)`, or the Winograd
/// convolution with the transposed kernel.
struct ConvInputGrad {
    geometry: Geometry,
    weight: Arc<Vec<f32>>,
    winograd: Option<Arc<WinogradPair>>,
}

impl ConvInputGrad {
    /// The input gradient band by band, as the forward of [`ConvOp::run_banded`]: each task
    /// forms `Wᵀ · grad` for one band's output pixels in a buffer of its own and adds it into
    /// the input rows the band read. Every other band runs at once (their input rows are
    /// apart), then the rest.
    fn banded(&self, grad: &[f32], batch: usize, input_grad: &mut [f32], (oh, ow): (usize, usize)) {
        let g = self.geometry;
        let (l, kk, image_len) = (oh * ow, g.c_in * g.k * g.k, g.c_in * g.h * g.w);
        let bands = g.bands((oh, ow));
        let ptr = SharedPtr(input_grad.as_mut_ptr());
        for parity in 0..2 {
            let tasks: Vec<(usize, std::ops::Range<usize>)> =
                (0..batch).flat_map(|b| bands.iter().skip(parity).step_by(2).map(move |o| (b, o.clone()))).collect();
            tasks.into_par_iter().for_each_init(Vec::new, |cols: &mut Vec<f32>, (b, oys)| {
                let n = oys.len() * ow;
                cols.resize(kk * n, 0.0);
                let first = b * g.c_out * l + oys.start * ow;
                // SAFETY: `weight` is `[c_out × kk]` (read transposed), `grad` holds `c_out`
                // rows of `l` values per image, of which columns `first.. + n` belong to the band.
                unsafe {
                    gemm_strided(
                        (cols.as_mut_ptr(), n as isize, 1),
                        false,
                        Mat(self.weight.as_ptr(), 1, kk as isize),
                        Mat(grad.as_ptr().add(first), l as isize, 1),
                        (kk, g.c_out, n),
                        gemm::Parallelism::None,
                    );
                    // SAFETY: bands of one parity read disjoint input rows (`Geometry::bands`).
                    g.col2im_band(cols, oys, ow, ptr.get().add(b * image_len));
                }
            });
        }
    }
}

impl CustomOp1 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "conv2d-input-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let grad = contiguous_f32(storage, layout, "conv2d backward")?;
        let g = self.geometry;
        let b = layout.shape().dims4()?.0;
        if let Some(wg) = &self.winograd {
            let kernel = wg.transposed.get_or_init(|| WinogradKernel::new_transposed(&self.weight, g.c_out, g.c_in));
            let input_grad = kernel.conv(grad, b, (g.h, g.w), None, None, false);
            return Ok((CpuStorage::F32(input_grad), Shape::from((b, g.c_in, g.h, g.w))));
        }
        let (oh, ow) = (g.out(g.h)?, g.out(g.w)?);
        let l = oh * ow;
        let kk = g.c_in * g.k * g.k;
        let mut input_grad = vec![0f32; b * g.c_in * g.h * g.w];
        if g.banded() {
            self.banded(grad, b, &mut input_grad, (oh, ow));
            return Ok((CpuStorage::F32(input_grad), Shape::from((b, g.c_in, g.h, g.w))));
        }
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

    /// Several layers on the same input as one (`[W₁; W₂; …]`, outputs side by side): one
    /// larger matrix product instead of several small ones.
    pub fn concat(layers: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.params.weight).collect();
        let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.params.bias.as_ref()).collect();
        Self::new(Tensor::cat(&weights, 0)?, biases.map(|b| Tensor::cat(&b, 0)).transpose()?)
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

/// `x · Wᵀ + b` for row-major rows `x` `[rows, inp]` and `W` `[out, inp]`.
fn linear_rows(x: &[f32], weight: &[f32], bias: Option<&[f32]>, (inp, out): (usize, usize)) -> Vec<f32> {
    let rows = x.len() / inp;
    let mut y = vec![0f32; rows * out];
    if let Some(bias) = bias {
        for row in y.chunks_mut(out) {
            row.copy_from_slice(bias);
        }
    }
    gemm_tt(&mut y, bias.is_some(), x, false, weight, true, (rows, inp, out));
    y
}

/// The input gradient `g · W` of [`linear_rows`] for `g` `[rows, out]`.
fn linear_input_grad_rows(g: &[f32], weight: &[f32], (inp, out): (usize, usize)) -> Vec<f32> {
    let rows = g.len() / out;
    let mut dx = vec![0f32; rows * inp];
    gemm_tt(&mut dx, false, g, false, weight, false, (rows, out, inp));
    dx
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
        let y = linear_rows(x, &self.weight, self.bias.as_deref().map(Vec::as_slice), (self.inp, self.out));
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
        let dx = linear_input_grad_rows(g, &self.weight, (self.inp, self.out));
        let mut dims = layout.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = self.inp;
        Ok((CpuStorage::F32(dx), Shape::from(dims)))
    }
}

/// Softmax over the last dimension, `softmax(x / scale)`, as one op with its own backward
/// `dx = y ⊙ (g − Σ g ⊙ y) / scale` (candle-nn's fused kernel has none). Rows run in parallel.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    scaled_softmax_last_dim(x, 1.0)
}

/// `softmax(x / divisor)` over the last dimension (attention scores over `√d_head`: the
/// division is done as PyTorch's `scores / math.sqrt(d)` does it).
pub fn scaled_softmax_last_dim(x: &Tensor, divisor: f32) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let x = (x / divisor as f64)?;
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        return e.broadcast_div(&e.sum_keepdim(D::Minus1)?);
    }
    x.contiguous()?.apply_op1(Softmax { divisor })
}

/// Values per parallel task of the row-wise ops: whole rows of `n`, about 16 Ki values.
fn rows_chunk(n: usize) -> usize {
    (16_384 / n.max(1)).max(1) * n.max(1)
}

/// Rows of the last dimension, in parallel blocks of whole rows.
fn rows_par<'a>(out: &'a mut [f32], n: usize) -> impl IndexedParallelIterator<Item = &'a mut [f32]> {
    out.par_chunks_mut(rows_chunk(n))
}

/// The softmax backward of one row in place: `g ← y ⊙ (g − Σ g ⊙ y) / divisor`.
fn softmax_backward_row(g: &mut [f32], y: &[f32], divisor: f32) {
    let dot: f32 = g.iter().zip(y).map(|(g, y)| g * y).sum();
    for (d, y) in g.iter_mut().zip(y) {
        *d = y * (*d - dot) / divisor;
    }
}

struct Softmax {
    divisor: f32,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "softmax")?;
        let n = layout.shape().dims().last().copied().unwrap_or(1);
        let mut y = x.to_vec();
        rows_par(&mut y, n).for_each(|block| block.chunks_mut(n).for_each(|row| vecmath::softmax_in_place(row, self.divisor)));
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("softmax-last-dim-backward", res, grad_res, |y, g, shape| {
            let n = shape.dims().last().copied().unwrap_or(1);
            let mut dx = g.to_vec();
            let chunk = rows_chunk(n);
            dx.par_chunks_mut(chunk).zip(y.par_chunks(chunk)).for_each(|(block, yb)| {
                for (row, yr) in block.chunks_mut(n).zip(yb.chunks(n)) {
                    softmax_backward_row(row, yr, self.divisor);
                }
            });
            Ok(dx)
        })?))
    }
}

/// Multi-head self-attention on the packed projections `qkv` `[B, T, 3H]` (`[Q | K | V]`, heads
/// side by side within each, as one fused `Linear` gives them): per batch item and head,
/// `softmax(Q Kᵀ / √d) V`, written straight into the merged `[B, T, H]` context. One op, with a
/// backward that recomputes the attention probabilities instead of keeping them and forms the
/// packed gradient `[dQ | dK | dV]`:
/// `dV = Pᵀ dO`, `dS = P ⊙ (dO Vᵀ − rowsum(P ⊙ dO Vᵀ)) / √d`, `dQ = dS K`, `dK = dSᵀ Q`.
/// Batch items and heads run in parallel.
pub fn multi_head_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, h3) = qkv.dims3()?;
    if heads == 0 || h3 % (3 * heads) != 0 {
        candle_core::bail!("attention: packed projections {:?} do not split into q, k, v of {heads} heads", qkv.dims());
    }
    let (h, dh) = (h3 / 3, h3 / 3 / heads);
    if !qkv.device().is_cpu() {
        let split = |i: usize| -> Result<Tensor> { qkv.narrow(2, i * h, h)?.reshape((b, t, heads, dh))?.transpose(1, 2)?.contiguous() };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let probs = scaled_softmax_last_dim(&q.matmul(&k.t()?)?, (dh as f32).sqrt())?;
        return probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h));
    }
    qkv.contiguous()?.apply_op1(Attention { heads })
}

#[derive(Clone, Copy)]
struct Attention {
    heads: usize,
}

/// Where one (batch item, head) task reads and writes.
#[derive(Clone, Copy)]
struct HeadSlice {
    t: usize,
    h: usize,
    dh: usize,
    /// Offset of the task's Q block in the packed `[B, T, 3H]` buffer (K is `h` further, V `2h`).
    packed: usize,
    /// Offset of the task's block in a `[B, T, H]` buffer.
    merged: usize,
}

impl Attention {
    fn slice(&self, (t, h3): (usize, usize), task: usize) -> HeadSlice {
        let (bi, head) = (task / self.heads, task % self.heads);
        let h = h3 / 3;
        let dh = h / self.heads;
        HeadSlice { t, h, dh, packed: bi * t * h3 + head * dh, merged: bi * t * h + head * dh }
    }

    /// The probabilities `softmax(Q Kᵀ / √d)` `[t×t]` of one task.
    ///
    /// # Safety
    /// `qkv` holds `[B, T, 3H]` and `s` is a slice of it.
    unsafe fn probabilities(qkv: &[f32], s: HeadSlice, probs: &mut [f32]) {
        let (rs, ts) = (3 * s.h as isize, s.t as isize);
        let q = Mat(qkv.as_ptr().add(s.packed), rs, 1);
        let kt = Mat(qkv.as_ptr().add(s.packed + s.h), 1, rs);
        gemm_strided((probs.as_mut_ptr(), ts, 1), false, q, kt, (s.t, s.dh, s.t), gemm::Parallelism::None);
        let divisor = (s.dh as f32).sqrt();
        probs.chunks_mut(s.t).for_each(|row| vecmath::softmax_in_place(row, divisor));
    }

    /// The merged context `[B, T, H]` of packed projections `qkv` `[B, T, 3H]`.
    fn forward_rows(&self, qkv: &[f32], (b, t, h3): (usize, usize, usize)) -> Vec<f32> {
        let h = h3 / 3;
        let mut out = vec![0f32; b * t * h];
        let out_ptr = SharedPtr(out.as_mut_ptr());
        (0..b * self.heads).into_par_iter().for_each_init(
            || vec![0f32; t * t],
            |probs, task| {
                let s = self.slice((t, h3), task);
                // SAFETY: qkv is [B, T, 3H] and out [B, T, H]; the task writes only its own
                // head's columns of its own batch item of `out`.
                unsafe {
                    Self::probabilities(qkv, s, probs);
                    let v = Mat(qkv.as_ptr().add(s.packed + 2 * s.h), 3 * h as isize, 1);
                    gemm_strided(
                        (out_ptr.get().add(s.merged), h as isize, 1),
                        false,
                        Mat(probs.as_ptr(), t as isize, 1),
                        v,
                        (t, t, s.dh),
                        gemm::Parallelism::None,
                    );
                }
            },
        );
        out
    }

    /// The packed gradient `[dQ | dK | dV]` `[B, T, 3H]` from the context's gradient `dout`.
    fn backward_rows(&self, qkv: &[f32], dout: &[f32], (b, t, h3): (usize, usize, usize)) -> Vec<f32> {
        let mut grads = vec![0f32; b * t * h3];
        let ptr = SharedPtr(grads.as_mut_ptr());
        let (rs, hs, ts) = (h3 as isize, (h3 / 3) as isize, t as isize);
        (0..b * self.heads).into_par_iter().for_each_init(
            || (vec![0f32; t * t], vec![0f32; t * t]),
            |(probs, dp), task| {
                let s = self.slice((t, h3), task);
                let at = |offset: usize| Mat(qkv.as_ptr().wrapping_add(offset), rs, 1);
                let (q, k, v) = (at(s.packed), at(s.packed + s.h), at(s.packed + 2 * s.h));
                let base = ptr.get();
                // SAFETY: qkv and grads are [B, T, 3H], dout [B, T, H]; the task writes only
                // its own head's columns of its own batch item in each third of `grads`.
                unsafe {
                    Self::probabilities(qkv, s, probs);
                    let d_out = Mat(dout.as_ptr().add(s.merged), hs, 1);
                    // dV = Pᵀ dO
                    gemm_strided((base.add(s.packed + 2 * s.h), rs, 1), false, Mat(probs.as_ptr(), 1, ts), d_out, (t, t, s.dh), gemm::Parallelism::None);
                    // dP = dO Vᵀ
                    gemm_strided((dp.as_mut_ptr(), ts, 1), false, d_out, Mat(v.0, 1, rs), (t, s.dh, t), gemm::Parallelism::None);
                    let divisor = (s.dh as f32).sqrt();
                    for (row, p) in dp.chunks_mut(t).zip(probs.chunks(t)) {
                        softmax_backward_row(row, p, divisor);
                    }
                    // dQ = dS K, dK = dSᵀ Q
                    gemm_strided((base.add(s.packed), rs, 1), false, Mat(dp.as_ptr(), ts, 1), k, (t, t, s.dh), gemm::Parallelism::None);
                    gemm_strided((base.add(s.packed + s.h), rs, 1), false, Mat(dp.as_ptr(), 1, ts), q, (t, t, s.dh), gemm::Parallelism::None);
                }
            },
        );
        grads
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "multi-head-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout, "attention")?;
        let (b, t, h3) = layout.shape().dims3()?;
        Ok((CpuStorage::F32(self.forward_rows(qkv, (b, t, h3))), Shape::from((b, t, h3 / 3))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("multi-head-attention-backward", qkv, grad_res, |qkv, dout, shape| Ok(self.backward_rows(qkv, dout, shape.dims3()?)))?))
    }
}

/// A raw pointer shared by parallel tasks that write disjoint elements.
pub(crate) struct SharedPtr(pub(crate) *mut f32);
// SAFETY: the tasks sharing it write disjoint indices (see the call sites).
unsafe impl Sync for SharedPtr {}
unsafe impl Send for SharedPtr {}

impl SharedPtr {
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}

/// LayerNorm over the last dimension (biased variance, like PyTorch) as one op: rows in
/// parallel, and a backward that forms the input gradient only (the affine parameters are
/// constants of a frozen backbone):
/// `dx = (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) / σ` with `ĝ = g ⊙ γ`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    flat_weight: Arc<Vec<f32>>,
    flat_bias: Arc<Vec<f32>>,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        let (weight, bias) = (vb.get(size, "weight")?, vb.get(size, "bias")?);
        let flat = |t: &Tensor| -> Result<Arc<Vec<f32>>> { Ok(Arc::new(t.to_dtype(DType::F32)?.to_vec1()?)) };
        Ok(Self { flat_weight: flat(&weight)?, flat_bias: flat(&bias)?, weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.flat_weight.len();
        if x.dim(D::Minus1)? != n {
            candle_core::bail!("layer norm: input {:?} does not end in {n}", x.dims());
        }
        if !x.device().is_cpu() {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            return normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias);
        }
        x.contiguous()?.apply_op1(LayerNormOp { weight: self.flat_weight.clone(), bias: self.flat_bias.clone(), eps: self.eps })
    }
}

struct LayerNormOp {
    weight: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    eps: f64,
}

/// LayerNorm of every row of `x` (rows of `weight.len()`), rows in parallel.
fn layer_norm_rows(x: &[f32], weight: &[f32], bias: &[f32], eps: f64) -> Vec<f32> {
    let n = weight.len();
    let mut y = x.to_vec();
    rows_par(&mut y, n).for_each(|block| {
        for row in block.chunks_mut(n) {
            let (mean, rstd) = row_moments(row, eps);
            for ((v, g), b) in row.iter_mut().zip(weight.iter()).zip(bias.iter()) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
    });
    y
}

/// The input gradient of [`layer_norm_rows`] for the rows' gradient `g`.
fn layer_norm_backward_rows(x: &[f32], g: &[f32], weight: &[f32], eps: f64) -> Vec<f32> {
    let n = weight.len();
    let mut dx = g.to_vec();
    let chunk = rows_chunk(n);
    dx.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(block, xb)| {
        let mut xhat = vec![0f32; n];
        for (row, xr) in block.chunks_mut(n).zip(xb.chunks(n)) {
            let (mean, rstd) = row_moments(xr, eps);
            let (mut sum_g, mut sum_gx) = (0f64, 0f64);
            for ((d, xh), (&xv, &gamma)) in row.iter_mut().zip(xhat.iter_mut()).zip(xr.iter().zip(weight.iter())) {
                *xh = (xv - mean) * rstd;
                *d *= gamma;
                sum_g += *d as f64;
                sum_gx += (*d * *xh) as f64;
            }
            let (mean_g, mean_gx) = ((sum_g / n as f64) as f32, (sum_gx / n as f64) as f32);
            for (d, xh) in row.iter_mut().zip(&xhat) {
                *d = (*d - mean_g - xh * mean_gx) * rstd;
            }
        }
    });
    dx
}

/// Mean and `1/√(var + eps)` of one row, accumulated in f64.
fn row_moments(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "layer norm")?;
        Ok((CpuStorage::F32(layer_norm_rows(x, &self.weight, &self.bias, self.eps)), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("layer-norm-backward", arg, grad_res, |x, g, _| Ok(layer_norm_backward_rows(x, g, &self.weight, self.eps)))?))
    }
}

/// GELU as one op with a one-pass backward: the exact form `x·Φ(x)` (derivative
/// `Φ(x) + x·φ(x)`, `erf` as PyTorch's vectorised kernel computes it, see [`vecmath`]) or the
/// tanh approximation (`gelu_new`), elements in parallel.
pub fn gelu(x: &Tensor, exact: bool) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return if exact { x.gelu_erf() } else { x.gelu() };
    }
    x.contiguous()?.apply_op1(Gelu { exact })
}

#[derive(Clone, Copy)]
struct Gelu {
    exact: bool,
}

const ELEMENTS_PER_TASK: usize = 1 << 14;

/// GELU of every element, in parallel blocks.
fn gelu_rows(x: &[f32], exact: bool) -> Vec<f32> {
    let mut y = x.to_vec();
    y.par_chunks_mut(ELEMENTS_PER_TASK).for_each(|c| vecmath::gelu_in_place(c, exact));
    y
}

/// The input gradient of [`gelu_rows`] at `x` for the gradient `g`.
fn gelu_backward_rows(x: &[f32], g: &[f32], exact: bool) -> Vec<f32> {
    let mut dx = g.to_vec();
    dx.par_chunks_mut(ELEMENTS_PER_TASK).zip(x.par_chunks(ELEMENTS_PER_TASK)).for_each(|(d, x)| vecmath::gelu_backward_in_place(x, d, exact));
    dx
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "gelu")?;
        Ok((CpuStorage::F32(gelu_rows(x, self.exact)), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("gelu-backward", arg, grad_res, |x, g, _| Ok(gelu_backward_rows(x, g, self.exact)))?))
    }
}

/// Tensors this crate computes with are f32.
pub const DTYPE: DType = DType::F32;

/// A pre-LayerNorm transformer encoder block as one op (ViT's layer):
/// `h = x + W_o·Attn(W_qkv·LN₁(x))`, `y = h + W₂·GELU(W₁·LN₂(h))`. The forward keeps what its
/// backward needs (the projections `[Q | K | V]`, the residual `h`, the MLP's pre-activation)
/// and the backward forms the input gradient through the whole block, so the autograd graph
/// holds one node per block instead of a dozen — without a zero-filled gradient buffer, an
/// accumulation and a residual add for every inner tensor. Same operations in the same order
/// as the layers applied one by one (sums commute), so the same results.
#[derive(Debug, Clone)]
pub struct EncoderBlock {
    pub layernorm_before: LayerNorm,
    pub qkv: Linear,
    pub output: Linear,
    pub layernorm_after: LayerNorm,
    pub intermediate: Linear,
    pub mlp_output: Linear,
    pub heads: usize,
    /// The exact (erf) GELU, else the tanh approximation.
    pub exact_gelu: bool,
}

/// What the block's backward reads, kept by its forward.
struct EncoderSaved {
    qkv: Vec<f32>,
    h: Vec<f32>,
    pre_activation: Vec<f32>,
}

impl EncoderBlock {
    /// The block on `x` `[B, T, H]` (CPU tensors; elsewhere apply the layers one by one).
    pub fn forward(self: &Arc<Self>, x: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden();
        if x.rank() != 3 || x.dim(2)? != hidden || !x.device().is_cpu() {
            candle_core::bail!("encoder block: input {:?} on {:?} is not [B, T, {hidden}] on the CPU", x.dims(), x.device().location());
        }
        x.contiguous()?.apply_op1(EncoderBlockOp { block: self.clone(), saved: Arc::new(OnceLock::new()) })
    }

    fn hidden(&self) -> usize {
        self.layernorm_before.flat_weight.len()
    }

    fn intermediate_size(&self) -> usize {
        self.intermediate.params.flat_weight.len() / self.hidden()
    }

    fn run(&self, x: &[f32], (b, t): (usize, usize)) -> (Vec<f32>, EncoderSaved) {
        let (hd, inter) = (self.hidden(), self.intermediate_size());
        let linear = |l: &Linear, v: &[f32], dims| linear_rows(v, &l.params.flat_weight, l.params.flat_bias.as_deref().map(Vec::as_slice), dims);
        let (ln1, ln2) = (&self.layernorm_before, &self.layernorm_after);
        let qkv = linear(&self.qkv, &layer_norm_rows(x, &ln1.flat_weight, &ln1.flat_bias, ln1.eps), (hd, 3 * hd));
        let context = Attention { heads: self.heads }.forward_rows(&qkv, (b, t, 3 * hd));
        let mut h = linear(&self.output, &context, (hd, hd));
        add_in_place(&mut h, x);
        let pre_activation = linear(&self.intermediate, &layer_norm_rows(&h, &ln2.flat_weight, &ln2.flat_bias, ln2.eps), (hd, inter));
        let mut y = linear(&self.mlp_output, &gelu_rows(&pre_activation, self.exact_gelu), (inter, hd));
        add_in_place(&mut y, &h);
        (y, EncoderSaved { qkv, h, pre_activation })
    }

    fn input_gradient(&self, x: &[f32], saved: &EncoderSaved, dy: &[f32], (b, t): (usize, usize)) -> Vec<f32> {
        let (hd, inter) = (self.hidden(), self.intermediate_size());
        let (ln1, ln2) = (&self.layernorm_before, &self.layernorm_after);
        let d_act = linear_input_grad_rows(dy, &self.mlp_output.params.flat_weight, (inter, hd));
        let d_pre = gelu_backward_rows(&saved.pre_activation, &d_act, self.exact_gelu);
        let d_norm2 = linear_input_grad_rows(&d_pre, &self.intermediate.params.flat_weight, (hd, inter));
        let mut dh = layer_norm_backward_rows(&saved.h, &d_norm2, &ln2.flat_weight, ln2.eps);
        add_in_place(&mut dh, dy);
        let d_context = linear_input_grad_rows(&dh, &self.output.params.flat_weight, (hd, hd));
        let d_qkv = Attention { heads: self.heads }.backward_rows(&saved.qkv, &d_context, (b, t, 3 * hd));
        let d_norm1 = linear_input_grad_rows(&d_qkv, &self.qkv.params.flat_weight, (hd, 3 * hd));
        let mut dx = layer_norm_backward_rows(x, &d_norm1, &ln1.flat_weight, ln1.eps);
        add_in_place(&mut dx, &dh);
        dx
    }
}

/// `acc += v`, elementwise, in parallel blocks.
fn add_in_place(acc: &mut [f32], v: &[f32]) {
    acc.par_chunks_mut(ELEMENTS_PER_TASK).zip(v.par_chunks(ELEMENTS_PER_TASK)).for_each(|(a, v)| a.iter_mut().zip(v).for_each(|(a, v)| *a += v));
}

struct EncoderBlockOp {
    block: Arc<EncoderBlock>,
    saved: Arc<OnceLock<EncoderSaved>>,
}

impl CustomOp1 for EncoderBlockOp {
    fn name(&self) -> &'static str {
        "encoder-block"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "encoder block")?;
        let (b, t, _) = layout.shape().dims3()?;
        let (y, saved) = self.block.run(x, (b, t));
        // Kept only while the output is part of a graph being differentiated: without
        // gradient tracking candle drops this op, and the activations with it.
        let _ = self.saved.set(saved);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("encoder-block-backward", arg, grad_res, |x, dy, shape| {
            let (b, t, _) = shape.dims3()?;
            let recomputed;
            let saved = match self.saved.get() {
                Some(saved) => saved,
                None => {
                    recomputed = self.block.run(x, (b, t)).1;
                    &recomputed
                }
            };
            Ok(self.block.input_gradient(x, saved, dy, (b, t)))
        })?))
    }
}

#[cfg(test)]
mod gemm_tests {
    use super::*;

    /// The kernels this CPU can run.
    fn kernels() -> Vec<GemmKernel> {
        let mut kernels = vec![GemmKernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(GemmKernel::Avx2Fma);
            }
            if cfg!(feature = "avx512-gemm") && std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(GemmKernel::Avx512);
            } else {
                println!("no AVX-512 matrix-product kernels here (the CPU lacks AVX-512 or the avx512-gemm feature is off): not tested");
            }
        }
        kernels
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `a·b` in f64 with the bound `Σ|a||b|` of each element's rounding error's scale.
    fn reference(a: &[f32], a_t: bool, b: &[f32], b_t: bool, (m, k, n): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
        let at = |i: usize, p: usize| f64::from(if a_t { a[p * m + i] } else { a[i * k + p] });
        let bt = |p: usize, j: usize| f64::from(if b_t { b[j * k + p] } else { b[p * n + j] });
        let mut value = vec![0.0; m * n];
        let mut scale = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    value[i * n + j] += at(i, p) * bt(p, j);
                    scale[i * n + j] += (at(i, p) * bt(p, j)).abs();
                }
            }
        }
        (value, scale)
    }

    #[test]
    fn every_kernel_computes_the_product_in_every_layout() {
        for kernel in kernels() {
            for (case, &(m, k, n)) in [(1, 1, 1), (3, 5, 7), (1, 300, 2), (24, 300, 1), (17, 33, 16), (65, 130, 197), (197, 768, 64)].iter().enumerate() {
                for (a_t, b_t, accumulate) in [(false, false, false), (true, false, false), (false, true, true), (true, true, true)] {
                    let (a, b) = (random(m * k, case as u64), random(k * n, 100 + case as u64));
                    let start = random(m * n, 200 + case as u64);
                    let mut dst = start.clone();
                    let mat_a = if a_t { Mat(a.as_ptr(), 1, m as isize) } else { Mat(a.as_ptr(), k as isize, 1) };
                    let mat_b = if b_t { Mat(b.as_ptr(), 1, k as isize) } else { Mat(b.as_ptr(), n as isize, 1) };
                    // SAFETY: row-major buffers of exactly these sizes and strides.
                    unsafe { gemm_with(kernel, (dst.as_mut_ptr(), n as isize, 1), accumulate, mat_a, mat_b, (m, k, n), gemm::Parallelism::Rayon(2)) };
                    let (value, scale) = reference(&a, a_t, &b, b_t, (m, k, n));
                    for i in 0..m * n {
                        let expected = value[i] + if accumulate { f64::from(start[i]) } else { 0.0 };
                        let error = (f64::from(dst[i]) - expected).abs();
                        assert!(
                            error <= 1e-6 * (scale[i] + 1.0),
                            "{kernel:?} {m}×{k}×{n} a_t {a_t} b_t {b_t} acc {accumulate}: element {i} is {} not {expected}",
                            dst[i]
                        );
                    }
                }
            }
        }
    }

    /// A column's bits do not depend on how many columns are computed with it (Winograd's
    /// tiles of one image give the same bits alone as in a batch), with every kernel.
    #[test]
    fn a_columns_result_does_not_depend_on_the_number_of_columns() {
        let (m, k) = (64, 96);
        let a = random(m * k, 1);
        for kernel in kernels() {
            let product = |n: usize| {
                let b: Vec<f32> = random(k * 40, 2).chunks(40).flat_map(|row| row[..n].to_vec()).collect();
                let mut dst = vec![0f32; m * n];
                // SAFETY: row-major buffers of exactly these sizes and strides.
                unsafe {
                    gemm_with(
                        kernel,
                        (dst.as_mut_ptr(), n as isize, 1),
                        false,
                        Mat(a.as_ptr(), k as isize, 1),
                        Mat(b.as_ptr(), n as isize, 1),
                        (m, k, n),
                        gemm::Parallelism::None,
                    )
                };
                dst.chunks(n).map(|row| row[..2].to_vec()).collect::<Vec<_>>()
            };
            let two = product(2);
            for n in [3, 6, 17, 40] {
                assert_eq!(product(n), two, "{kernel:?}: the first two columns of {n} differ from two alone");
            }
        }
    }
}
