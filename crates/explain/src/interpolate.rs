//! Upsampling of attribution maps to the input size, as `torch.nn.functional.interpolate`.

use candle_core::{Tensor, D};

use crate::error::{ExplainError, Result};

fn planes(map: &Tensor) -> Result<(Vec<usize>, usize, usize, Vec<f32>)> {
    let dims = map.dims().to_vec();
    if dims.len() < 2 {
        return Err(ExplainError::Invalid(format!("a map needs at least 2 dimensions, got {dims:?}")));
    }
    let (h, w) = (map.dim(D::Minus2)?, map.dim(D::Minus1)?);
    let data = map.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    Ok((dims, h, w, data))
}

fn rebuild(dims: &[usize], out: Vec<f32>, oh: usize, ow: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut shape = dims[..dims.len() - 2].to_vec();
    shape.extend([oh, ow]);
    Ok(Tensor::from_vec(out, shape, device)?)
}

/// Bilinear interpolation with `align_corners=False` (no antialiasing) over the last two dims.
pub fn upsample_bilinear(map: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    bilinear(map, size, false)
}

/// Bilinear interpolation with `align_corners=True` (`torch.nn.UpsamplingBilinear2d`): the
/// corner pixels of input and output coincide.
pub fn upsample_bilinear_align_corners(map: &Tensor, size: (usize, usize)) -> Result<Tensor> {
    bilinear(map, size, true)
}

fn bilinear(map: &Tensor, (oh, ow): (usize, usize), align_corners: bool) -> Result<Tensor> {
    let (dims, h, w, data) = planes(map)?;
    let axis = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|o| {
                let src = if align_corners {
                    if out > 1 { o as f32 * (inp - 1) as f32 / (out - 1) as f32 } else { 0.0 }
                } else {
                    ((o as f32 + 0.5) * scale - 0.5).max(0.0)
                };
                let i0 = (src.floor() as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(oh, h), axis(ow, w));
    let n = data.len() / (h * w);
    let mut out = Vec::with_capacity(n * oh * ow);
    for p in 0..n {
        let plane = &data[p * h * w..(p + 1) * h * w];
        for &(y0, y1, ly) in &ys {
            for &(x0, x1, lx) in &xs {
                let top = plane[y0 * w + x0] * (1.0 - lx) + plane[y0 * w + x1] * lx;
                let bottom = plane[y1 * w + x0] * (1.0 - lx) + plane[y1 * w + x1] * lx;
                out.push(top * (1.0 - ly) + bottom * ly);
            }
        }
    }
    rebuild(&dims, out, oh, ow, map.device())
}

/// Nearest-neighbour interpolation (PyTorch's `mode="nearest"`: source `floor(o · in/out)`).
pub fn upsample_nearest(map: &Tensor, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (dims, h, w, data) = planes(map)?;
    let axis = |out: usize, inp: usize| -> Vec<usize> {
        let scale = inp as f32 / out as f32;
        (0..out).map(|o| ((o as f32 * scale).floor() as usize).min(inp - 1)).collect()
    };
    let (ys, xs) = (axis(oh, h), axis(ow, w));
    let n = data.len() / (h * w);
    let mut out = Vec::with_capacity(n * oh * ow);
    for p in 0..n {
        let plane = &data[p * h * w..(p + 1) * h * w];
        for &y in &ys {
            out.extend(xs.iter().map(|&x| plane[y * w + x]));
        }
    }
    rebuild(&dims, out, oh, ow, map.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bilinear_two_to_four() {
        // align_corners=False, 2 → 4: sources −0.25→0, 0.25, 0.75, 1.25→ clamp.
        let m = Tensor::new(&[[0f32, 4.0]], &Device::Cpu).unwrap();
        let up = upsample_bilinear(&m, (1, 4)).unwrap();
        assert_eq!(up.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn nearest_two_to_five() {
        let m = Tensor::new(&[[1f32, 2.0]], &Device::Cpu).unwrap();
        let up = upsample_nearest(&m, (1, 5)).unwrap();
        // floor(o · 2/5): 0, 0, 0, 1, 1.
        assert_eq!(up.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.0, 1.0, 1.0, 2.0, 2.0]);
    }
}
