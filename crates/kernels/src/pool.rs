//! 2-D max-pooling with PyTorch's semantics (−∞ padding, first maximum of each window) and
//! its backward pass, which candle's `max_pool2d` refuses when kernel ≠ stride.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::shared::{contiguous_f32, window_out};

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
pub(crate) struct MaxPool2d {
    kernel: usize,
    stride: usize,
    padding: usize,
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
pub(crate) struct MaxPool2dBackward(MaxPool2d);

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

/// The mean over the spatial dimensions, `[B, C, H, W]` → `[B, C]` (global average pooling):
/// on the CPU each plane summed in index order in f32 and divided by `H·W`, on every CPU the
/// same (candle's row sums take an 8-lane AVX2 path on CPUs with AVX2 and a scalar loop
/// elsewhere); candle's `mean` off the CPU. The gradient spreads `g / (H·W)` over each plane.
pub fn spatial_mean(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if !x.device().is_cpu() || x.dtype() != crate::shared::DTYPE {
        return x.mean((2, 3));
    }
    x.contiguous()?.apply_op1(SpatialMean { plane: h * w })
}

struct SpatialMean {
    plane: usize,
}

impl CustomOp1 for SpatialMean {
    fn name(&self) -> &'static str {
        "spatial-mean"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "spatial mean")?;
        let n = self.plane as f32;
        let means = x.chunks(self.plane.max(1)).map(|plane| plane.iter().fold(0f32, |s, &v| s + v) / n).collect();
        let dims = layout.dims();
        Ok((CpuStorage::F32(means), Shape::from((dims[0], dims[1]))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let spread = (grad / self.plane as f64)?.unsqueeze(2)?.unsqueeze(3)?.broadcast_as(arg.shape())?.contiguous()?;
        Ok(Some(spread))
    }
}
