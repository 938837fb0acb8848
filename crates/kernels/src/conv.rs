//! 2-D convolution with frozen weights: im2col, banded and Winograd (see `winograd.rs`) paths,
//! an optional fused residual add and ReLU, and the input gradient as a convolution.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::elementwise::{ReluMask, ReluRule};
use crate::matmul::{gemm_into, gemm_strided, Mat, Threads};
use crate::shared::{contiguous_f32, epilogue_row, window_out, FrozenParams, SharedPtr};
use crate::winograd::WinogradKernel;

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
pub(crate) struct WinogradPair {
    forward: WinogradKernel,
    transposed: OnceLock<WinogradKernel>,
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
    pub fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>, relu: Option<ReluRule>) -> Result<Tensor> {
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
            return match relu {
                Some(rule) => crate::elementwise::relu(&y, rule),
                None => Ok(y),
            };
        }
        let geometry = Geometry { k, stride: self.stride, padding: self.padding, h, w, c_in, c_out };
        let (oh, ow) = (geometry.out(h)?, geometry.out(w)?);
        let op = ConvOp { geometry, weight: p.flat_weight.clone(), bias: p.flat_bias.clone(), relu, winograd: self.winograd.clone() };
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
pub(crate) struct Geometry {
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

/// Convolutions whose kernel matrix is at most this large run in bands of output rows
/// ([`ConvOp::run_banded`]); larger ones (`layer3`/`layer4`'s strided 3×3) build one image's
/// columns and let the matrix product split the kernel rows between the threads, so that no
/// thread packs the whole kernel for a few columns.
pub(crate) const BANDED_MAX_WEIGHT_BYTES: usize = 512 << 10;

/// Target size of one band's columns.
pub(crate) const BAND_BYTES: usize = 512 << 10;

/// The fewest bands an image is cut into (work for two threads at batch 1).
pub(crate) const MIN_BANDS: usize = 4;

/// Forward: per image, im2col then `out = bias + W · cols`, then the epilogue (residual add,
/// ReLU). Applied as a one-input op without residual, as a two-input op with it.
pub(crate) struct ConvOp {
    geometry: Geometry,
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
    relu: Option<ReluRule>,
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
                    Threads::One,
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
pub(crate) fn epilogue(dst: &mut [f32], residual: Option<&[f32]>, relu: bool, l: usize) {
    if residual.is_none() && !relu {
        return;
    }
    dst.par_chunks_mut(l).enumerate().for_each(|(c, row)| epilogue_row(row, residual.map(|r| &r[c * l..(c + 1) * l]), relu));
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

/// Input gradient of [`ConvOp`]: per image, `col2im(Wᵀ · grad)`, or the Winograd
/// convolution with the transposed kernel.
pub(crate) struct ConvInputGrad {
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
                        Threads::One,
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
