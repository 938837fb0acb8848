//! Turning a slice into a backbone's input, exactly as the study did.
//!
//! ResNet: the slice repeated to 3 channels, no resize, no normalization.
//! ViT: values ×255 truncated toward zero, clipped to 0..=255, ÷255 (the study's round trip
//! through 8-bit), repeated to 3 channels, resized so the shorter side is `image_size` with
//! antialiased bilinear interpolation (torchvision `Resize(size)` on a float tensor, i.e.
//! `interpolate(mode="bilinear", antialias=True, align_corners=False)`).
//! Either may add ImageNet normalization for weights that expect it.

use candle_core::{Device, Tensor};
use tgc_data::Image;

use crate::error::Result;

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How a backbone wants its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// `Some(s)`: quantize to 8 bits and resize the shorter side to `s` (ViT).
    pub resize_shorter_to: Option<usize>,
    /// Subtract the ImageNet mean and divide by its standard deviation, per channel.
    pub imagenet_normalize: bool,
}

impl Preprocess {
    /// The input `[3, H', W']` for one slice.
    pub fn apply(&self, image: &Image, device: &Device) -> Result<Tensor> {
        let (mut h, mut w) = (image.height(), image.width());
        let mut pixels = image.pixels().to_vec();
        if let Some(size) = self.resize_shorter_to {
            for v in pixels.iter_mut() {
                *v = (*v * 255.0).trunc().clamp(0.0, 255.0) / 255.0;
            }
            let (nh, nw) = shorter_side_size(h, w, size);
            pixels = resize_bilinear_aa(&pixels, (h, w), (nh, nw));
            (h, w) = (nh, nw);
        }
        let mut channels = Vec::with_capacity(3 * h * w);
        for c in 0..3 {
            if self.imagenet_normalize {
                channels.extend(pixels.iter().map(|v| (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c]));
            } else {
                channels.extend_from_slice(&pixels);
            }
        }
        Ok(Tensor::from_vec(channels, (3, h, w), device)?)
    }
}

/// torchvision's `Resize(size)` for an int: the shorter side becomes `size`, the longer
/// `int(size · long / short)`.
pub fn shorter_side_size(h: usize, w: usize, size: usize) -> (usize, usize) {
    if h <= w {
        (size, (size as f64 * w as f64 / h as f64) as usize)
    } else {
        ((size as f64 * h as f64 / w as f64) as usize, size)
    }
}

/// Antialiased bilinear resize of a row-major single-channel image (PyTorch's
/// `_upsample_bilinear2d_aa`): a triangle filter whose support widens with the downscale
/// factor, weights normalized per output pixel; separable, rows then columns.
pub fn resize_bilinear_aa(pixels: &[f32], (h, w): (usize, usize), (nh, nw): (usize, usize)) -> Vec<f32> {
    let rows = aa_weights(h, nh);
    let cols = aa_weights(w, nw);
    // Horizontal pass: [h, w] -> [h, nw].
    let mut tmp = vec![0f32; h * nw];
    for y in 0..h {
        for (x, (start, weights)) in cols.iter().enumerate() {
            let src = &pixels[y * w + start..y * w + start + weights.len()];
            tmp[y * nw + x] = src.iter().zip(weights).map(|(a, b)| a * b).sum();
        }
    }
    // Vertical pass: [h, nw] -> [nh, nw].
    let mut out = vec![0f32; nh * nw];
    for (y, (start, weights)) in rows.iter().enumerate() {
        for (k, wt) in weights.iter().enumerate() {
            let src = &tmp[(start + k) * nw..(start + k + 1) * nw];
            for (o, s) in out[y * nw..(y + 1) * nw].iter_mut().zip(src) {
                *o += wt * s;
            }
        }
    }
    out
}

/// For each output index: the first input index and the normalized filter weights.
fn aa_weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f64 / output as f64;
    let (support, invscale) = if scale >= 1.0 { (scale, 1.0 / scale) } else { (1.0, 1.0) };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5).trunc() as isize).max(0) as usize;
            let xmax = ((center + support + 0.5).trunc() as usize).min(input);
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|j| {
                    let d = (j as f64 - center + 0.5) * invscale;
                    (1.0 - d.abs()).max(0.0)
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (xmin, weights.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_keeps_pixels() {
        let px: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(resize_bilinear_aa(&px, (3, 4), (3, 4)), px);
    }

    #[test]
    fn halving_averages_pairs() {
        // Scale 2: support 2, centres 1.0 and 3.0, weight of input j = triangle((j − c + 0.5)/2):
        // output 0 takes inputs 0..3 with 0.75, 0.75, 0.25; output 1 inputs 1..4 with 0.25, 0.75, 0.75.
        let out = resize_bilinear_aa(&[0.0, 4.0, 8.0, 12.0], (1, 4), (1, 2));
        let first = (0.75 * 0.0 + 0.75 * 4.0 + 0.25 * 8.0) / 1.75;
        let second = (0.25 * 4.0 + 0.75 * 8.0 + 0.75 * 12.0) / 1.75;
        assert!((out[0] - first).abs() < 1e-6, "{out:?}");
        assert!((out[1] - second).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn shorter_side_rule() {
        assert_eq!(shorter_side_size(256, 256, 224), (224, 224));
        assert_eq!(shorter_side_size(256, 300, 224), (224, 262));
        assert_eq!(shorter_side_size(300, 256, 224), (262, 224));
    }
}
