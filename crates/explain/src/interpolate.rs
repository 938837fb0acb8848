//! Up-sampling of attribution maps to the input size, as `torch.nn.functional.interpolate`:
//! linear, bilinear or trilinear (by the number of axes resized) with `align_corners` false or
//! true, and nearest, over the last axes of a tensor. Each is separable, one axis at a time.

use candle_core::Tensor;

use crate::error::{ExplainError, Result};

/// How values between the source samples are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// (Bi/tri)linear; `align_corners` as PyTorch's flag.
    Linear {
        /// PyTorch's `align_corners`.
        align_corners: bool,
    },
    /// PyTorch's `mode="nearest"`: source `floor(o · in/out)`.
    Nearest,
}

/// Resizes the last `size.len()` axes of `map` to `size`.
pub fn resize(map: &Tensor, size: &[usize], mode: Interpolation) -> Result<Tensor> {
    let dims = map.dims().to_vec();
    if size.is_empty() || dims.len() < size.len() || size.contains(&0) {
        return Err(ExplainError::Invalid(format!("cannot resize the last {} axes of a {dims:?} map to {size:?}", size.len())));
    }
    let first = dims.len() - size.len();
    let mut data: Vec<f32> = map.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    let mut shape = dims.clone();
    for (a, &out) in size.iter().enumerate() {
        let axis = first + a;
        if shape[axis] != out {
            data = resize_axis(&data, &shape, axis, out, mode);
            shape[axis] = out;
        }
    }
    Ok(Tensor::from_vec(data, shape, map.device())?)
}

/// One axis of a row-major array resized.
fn resize_axis(data: &[f32], shape: &[usize], axis: usize, out: usize, mode: Interpolation) -> Vec<f32> {
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let scale = len as f32 / out as f32;
    // For each output position: two source indices and the weight of the second.
    let taps: Vec<(usize, usize, f32)> = (0..out)
        .map(|o| match mode {
            Interpolation::Nearest => {
                let i = ((o as f32 * scale).floor() as usize).min(len - 1);
                (i, i, 0.0)
            }
            Interpolation::Linear { align_corners } => {
                let src = if align_corners {
                    if out > 1 {
                        o as f32 * (len - 1) as f32 / (out - 1) as f32
                    } else {
                        0.0
                    }
                } else {
                    ((o as f32 + 0.5) * scale - 0.5).max(0.0)
                };
                let i0 = (src.floor() as usize).min(len - 1);
                (i0, (i0 + 1).min(len - 1), src - i0 as f32)
            }
        })
        .collect();
    let mut result = Vec::with_capacity(outer * out * inner);
    for block in data.chunks(len * inner).take(outer) {
        for &(i0, i1, l) in &taps {
            let (a, b) = (&block[i0 * inner..(i0 + 1) * inner], &block[i1 * inner..(i1 + 1) * inner]);
            result.extend(a.iter().zip(b).map(|(a, b)| a * (1.0 - l) + b * l));
        }
    }
    result
}

/// Bilinear interpolation with `align_corners=False` (no antialiasing) over the last two dims.
pub fn upsample_bilinear(map: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    resize(map, &[h, w], Interpolation::Linear { align_corners: false })
}

/// Bilinear interpolation with `align_corners=True` (`torch.nn.UpsamplingBilinear2d`): the
/// corner pixels of input and output coincide.
pub fn upsample_bilinear_align_corners(map: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    resize(map, &[h, w], Interpolation::Linear { align_corners: true })
}

/// Nearest-neighbour interpolation over the last two dims.
pub fn upsample_nearest(map: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    resize(map, &[h, w], Interpolation::Nearest)
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

    #[test]
    fn trilinear_is_linear_along_each_axis() {
        // A 2×2×2 cube with value 4z + 2y + x, resized to 3×3×3 with align_corners=True: every
        // output is the same affine function of its (fractional) source coordinates.
        let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let cube = Tensor::from_vec(v, (1, 2, 2, 2), &Device::Cpu).unwrap();
        let up = resize(&cube, &[3, 3, 3], Interpolation::Linear { align_corners: true }).unwrap();
        assert_eq!(up.dims(), &[1, 3, 3, 3]);
        let got = up.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for z in 0..3 {
            for y in 0..3 {
                for x in 0..3 {
                    let want = (4 * z + 2 * y + x) as f32 * 0.5;
                    assert!((got[z * 9 + y * 3 + x] - want).abs() < 1e-6, "({z},{y},{x})");
                }
            }
        }
        assert!(resize(&cube, &[3, 3, 3, 3, 3], Interpolation::Nearest).is_err());
    }
}
