//! Turning attributions into pictures the way Captum's `visualize_image_attr` does (the study's
//! figures were drawn by it): [`normalize_attr`] with its signs and cumulative-sum outlier
//! threshold, its default colour maps ([`Sign::colormap`]), blended heat maps; plus viridis,
//! the study's "masked image", and PNG files written atomically.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{ExplainError, Result};
pub use crate::normalize::{normalize_attr, normalized_magnitude, Sign};

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

impl Sign {
    /// Captum's default colour map for this sign: `RdWhGn` (red–white–green over [−1, 1]) for
    /// `All`, matplotlib's `Greens`, `Reds` and `Blues` over [0, 1] for the others.
    pub fn colormap(self) -> Colormap {
        match self {
            Sign::All => Colormap::RdWhGn,
            Sign::Positive => Colormap::Greens,
            Sign::Negative => Colormap::Reds,
            Sign::AbsoluteValue => Colormap::Blues,
        }
    }
}

/// The colour maps `visualize_image_attr` uses by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colormap {
    /// matplotlib's `Blues` over [0, 1].
    Blues,
    /// matplotlib's `Greens` over [0, 1].
    Greens,
    /// matplotlib's `Reds` over [0, 1].
    Reds,
    /// Captum's `RdWhGn`: red at −1, white at 0, green (`#008000`) at 1.
    RdWhGn,
    /// matplotlib's `viridis` over [0, 1].
    Viridis,
}

impl Colormap {
    /// The colour of a normalized value (`[−1, 1]` for `RdWhGn`, `[0, 1]` otherwise).
    pub fn colour(self, v: f32) -> [u8; 3] {
        // ColorBrewer's nine stops, as matplotlib's `_Blues_data` etc. list them.
        const BLUES: [[u8; 3]; 9] =
            [[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214], [66, 146, 198], [33, 113, 181], [8, 81, 156], [8, 48, 107]];
        const GREENS: [[u8; 3]; 9] =
            [[247, 252, 245], [229, 245, 224], [199, 233, 192], [161, 217, 155], [116, 196, 118], [65, 171, 93], [35, 139, 69], [0, 109, 44], [0, 68, 27]];
        const REDS: [[u8; 3]; 9] =
            [[255, 245, 240], [254, 224, 210], [252, 187, 161], [252, 146, 114], [251, 106, 74], [239, 59, 44], [203, 24, 29], [165, 15, 21], [103, 0, 13]];
        const RD_WH_GN: [[u8; 3]; 3] = [[255, 0, 0], [255, 255, 255], [0, 128, 0]];
        match self {
            Colormap::Blues => interpolate(&BLUES, v),
            Colormap::Greens => interpolate(&GREENS, v),
            Colormap::Reds => interpolate(&REDS, v),
            Colormap::RdWhGn => interpolate(&RD_WH_GN, if v.is_finite() { (v + 1.0) / 2.0 } else { 0.5 }),
            Colormap::Viridis => viridis(v),
        }
    }
}

/// Linear interpolation between equally spaced stops over [0, 1].
fn interpolate(stops: &[[u8; 3]], t: f32) -> [u8; 3] {
    let segments = (stops.len() - 1) as f32;
    let x = if t.is_finite() { t.clamp(0.0, 1.0) * segments } else { 0.0 };
    let i = (x.floor() as usize).min(stops.len() - 2);
    let f = x - i as f32;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        *o = (stops[i][c] as f32 * (1.0 - f) + stops[i + 1][c] as f32 * f).round() as u8;
    }
    out
}

/// `visualize_image_attr(method="blended_heat_map")`: the slice in grey with the colour map
/// drawn over it at `alpha_overlay` (Captum's default 0.5).
pub fn blended_heat_map(slice: &[f32], values: &[f32], h: usize, w: usize, colormap: Colormap, alpha_overlay: f32) -> RgbImage {
    let a = alpha_overlay.clamp(0.0, 1.0);
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        let grey = slice[i].clamp(0.0, 1.0) * 255.0;
        Rgb(colormap.colour(values[i]).map(|c| ((1.0 - a) * grey + a * c as f32).round() as u8))
    })
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

/// A vertical colour bar (`height` tall, `width` wide) of `colormap` over [0, 1], high values
/// at the top.
pub fn colour_bar(width: u32, height: u32, colormap: Colormap) -> RgbImage {
    RgbImage::from_fn(width, height, |_, y| Rgb(colormap.colour(1.0 - y as f32 / (height.max(2) - 1) as f32)))
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
    use candle_core::{Device, Tensor};

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
    fn absolute_value_sums_channels_before_the_absolute_value() {
        // Pixel 0: channels +3 and −3 cancel (a per-channel |·| would give 6). Pixels 1..4 are
        // 1, 2, 3, 4. Sorted magnitudes 0 1 2 3 4, cumulative 0 1 3 6 10: 98 % of 10 is 9.8,
        // first reached at 4, so the scale is 4.
        let t = Tensor::from_vec(vec![3f32, 1.0, 2.0, 3.0, 4.0, -3.0, 0.0, 0.0, 0.0, 0.0], (2, 1, 5), &Device::Cpu).unwrap();
        let (n, h, w) = normalize_attr(&t, Sign::AbsoluteValue, 2.0).unwrap();
        assert_eq!((h, w), (1, 5));
        assert_eq!(n, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn the_scale_is_a_cumulative_sum_threshold_not_a_percentile() {
        // 99 ones and one 100: cumulative sums reach 98 % of 199 (195.02) only at the 100,
        // so nothing is clipped and the ones become 0.01. A 98th percentile would be 1.
        let mut v = vec![1f32; 100];
        v[7] = 100.0;
        let t = Tensor::from_vec(v, (10, 10), &Device::Cpu).unwrap();
        let (n, _, _) = normalize_attr(&t, Sign::AbsoluteValue, 2.0).unwrap();
        assert_eq!(n[7], 1.0);
        assert!((n[0] - 0.01).abs() < 1e-7, "{}", n[0]);
        // With outlier_perc = 60, the 40 % target (79.6) is reached at the 80th value, a 1.
        let (n, _, _) = normalize_attr(&t, Sign::AbsoluteValue, 60.0).unwrap();
        assert_eq!((n[0], n[7]), (1.0, 1.0));
    }

    #[test]
    fn signed_modes() {
        // Values −4, −1, 2, 6 (one channel). all: magnitudes 1 2 4 6, total 13, 98 % = 12.74
        // reached at 6 → −4/6, −1/6, 2/6, 1. positive: 0 0 2 6 → scale 6. negative: −4 −1 0 0,
        // magnitudes total 5, 4.9 reached at 4 → threshold −4, values 1, 0.25, 0, 0.
        let t = Tensor::from_vec(vec![-4f32, -1.0, 2.0, 6.0], (1, 1, 4), &Device::Cpu).unwrap();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        let (all, _, _) = normalize_attr(&t, Sign::All, 2.0).unwrap();
        assert!(close(&all, &[-4.0 / 6.0, -1.0 / 6.0, 2.0 / 6.0, 1.0]), "{all:?}");
        let (pos, _, _) = normalize_attr(&t, Sign::Positive, 2.0).unwrap();
        assert!(close(&pos, &[0.0, 0.0, 2.0 / 6.0, 1.0]), "{pos:?}");
        let (neg, _, _) = normalize_attr(&t, Sign::Negative, 2.0).unwrap();
        assert!(close(&neg, &[1.0, 0.25, 0.0, 0.0]), "{neg:?}");
        // An all-zero map stays zero; a NaN is refused.
        let zero = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(normalize_attr(&zero, Sign::All, 2.0).unwrap().0, vec![0.0; 4]);
        let nan = Tensor::from_vec(vec![f32::NAN, 1.0], (1, 2), &Device::Cpu).unwrap();
        assert!(normalize_attr(&nan, Sign::All, 2.0).is_err());
    }

    #[test]
    fn captum_colour_maps() {
        assert_eq!(Colormap::Blues.colour(0.0), [247, 251, 255]);
        assert_eq!(Colormap::Blues.colour(1.0), [8, 48, 107]);
        assert_eq!(Colormap::RdWhGn.colour(-1.0), [255, 0, 0]);
        assert_eq!(Colormap::RdWhGn.colour(0.0), [255, 255, 255]);
        assert_eq!(Colormap::RdWhGn.colour(1.0), [0, 128, 0]);
        // Blended at 0.5 over black: half the colour.
        let img = blended_heat_map(&[0.0], &[1.0], 1, 1, Colormap::Greens, 0.5);
        assert_eq!(img.get_pixel(0, 0).0, [0, 34, 14]);
    }

    #[test]
    fn overlay_keeps_the_slice_where_attribution_is_zero() {
        let img = overlay(&[0.5, 0.5], &[0.0, 1.0], 1, 2, 0.6);
        assert_eq!(img.get_pixel(0, 0).0, [128, 128, 128]);
        assert_ne!(img.get_pixel(1, 0).0, [128, 128, 128]);
        assert_eq!(masked(&[0.5, 1.0], &[0.0, 1.0], 1, 2).get_pixel(1, 0).0, [255, 255, 255]);
    }
}
