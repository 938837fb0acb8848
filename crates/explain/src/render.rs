//! Turning attributions into pictures: a perceptual colormap (viridis), heat maps, overlays on
//! the slice (blended), the study's "masked image", and PNG files written atomically.

use std::path::Path;

use candle_core::Tensor;
use image::{Rgb, RgbImage};

use crate::error::{ExplainError, Result};

/// Viridis: matplotlib's colours at t = 0, 0.1, …, 1, linearly interpolated.
pub fn viridis(t: f32) -> [u8; 3] {
    const STOPS: [[u8; 3]; 11] = [
        [68, 1, 84],
        [72, 36, 117],
        [65, 68, 135],
        [53, 95, 141],
        [42, 120, 142],
        [33, 145, 140],
        [34, 168, 132],
        [68, 191, 112],
        [122, 209, 81],
        [189, 223, 38],
        [253, 231, 37],
    ];
    let x = if t.is_finite() { t.clamp(0.0, 1.0) * 10.0 } else { 0.0 };
    let i = (x.floor() as usize).min(9);
    let f = x - i as f32;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        *o = (STOPS[i][c] as f32 * (1.0 - f) + STOPS[i + 1][c] as f32 * f).round() as u8;
    }
    out
}

/// A map of attribution magnitude in [0, 1]: |attribution| summed over channels, divided by
/// its 98th percentile and clipped (Captum's `visualize_image_attr` with
/// `sign="absolute_value"`, `outlier_perc=2`). Input `[C, H, W]` or `[H, W]`.
pub fn normalized_magnitude(attribution: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    let a = attribution.to_dtype(candle_core::DType::F32)?;
    let a = match a.rank() {
        2 => a.abs()?,
        3 => a.abs()?.sum(0)?,
        _ => return Err(ExplainError::Invalid(format!("an attribution to render is [C, H, W] or [H, W], got {:?}", a.dims()))),
    };
    let (h, w) = a.dims2()?;
    let values: Vec<f32> = a.flatten_all()?.to_vec1()?;
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let scale = if sorted.is_empty() { 0.0 } else { sorted[((sorted.len() - 1) as f32 * 0.98).round() as usize] };
    let norm = values.iter().map(|v| if scale > 0.0 { (v / scale).clamp(0.0, 1.0) } else { 0.0 }).collect();
    Ok((norm, h, w))
}

/// The heat map of normalized values (`h·w`, row-major) in viridis.
pub fn heatmap(values: &[f32], h: usize, w: usize) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| Rgb(viridis(values[y as usize * w + x as usize])))
}

/// The slice in grey with the heat map blended over it where the attribution is strong:
/// `(1 − a)·grey + a·colour` with `a = alpha · value`.
pub fn overlay(slice: &[f32], values: &[f32], h: usize, w: usize, alpha: f32) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        let grey = slice[i].clamp(0.0, 1.0) * 255.0;
        let colour = viridis(values[i]);
        let a = (alpha * values[i]).clamp(0.0, 1.0);
        Rgb(colour.map(|c| ((1.0 - a) * grey + a * c as f32).round() as u8))
    })
}

/// The study's "masked image": the slice multiplied by the normalized attribution.
pub fn masked(slice: &[f32], values: &[f32], h: usize, w: usize) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        let v = (slice[i].clamp(0.0, 1.0) * values[i] * 255.0).round() as u8;
        Rgb([v, v, v])
    })
}

/// A vertical colour bar (`height` tall, `width` wide), high values at the top.
pub fn colour_bar(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |_, y| Rgb(viridis(1.0 - y as f32 / (height.max(2) - 1) as f32)))
}

/// Writes a PNG through a temporary file renamed into place.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let err = |message: String| ExplainError::Write { path: path.to_owned(), message };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    let result = image
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| err(e.to_string())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn viridis_ends() {
        // matplotlib: viridis(0) = (68, 1, 84), viridis(1) = (253, 231, 37).
        let lo = viridis(0.0);
        let hi = viridis(1.0);
        assert_eq!((lo, hi), ([68, 1, 84], [253, 231, 37]));
        // Halfway between the 0.5 and 0.6 stops.
        assert_eq!(viridis(0.55), [34, 157, 136]);
    }

    #[test]
    fn magnitude_sums_channels_and_clips_outliers() {
        // 50 pixels: 49 with |sum| 1, one outlier 100: the 98th percentile is 1.
        let mut v = vec![0.5f32; 2 * 50];
        v[49] = 50.0;
        v[99] = -50.0;
        let t = Tensor::from_vec(v, (2, 5, 10), &Device::Cpu).unwrap();
        let (n, h, w) = normalized_magnitude(&t).unwrap();
        assert_eq!((h, w), (5, 10));
        assert!(n.iter().all(|&x| x == 1.0));
    }

    #[test]
    fn overlay_keeps_the_slice_where_attribution_is_zero() {
        let img = overlay(&[0.5, 0.5], &[0.0, 1.0], 1, 2, 0.6);
        assert_eq!(img.get_pixel(0, 0).0, [128, 128, 128]);
        assert_ne!(img.get_pixel(1, 0).0, [128, 128, 128]);
        assert_eq!(masked(&[0.5, 1.0], &[0.0, 1.0], 1, 2).get_pixel(1, 0).0, [255, 255, 255]);
    }
}
