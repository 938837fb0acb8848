//! Captum's `visualize_image_attr` normalisation as numbers (no pictures): the channels
//! summed, a sign applied, values divided by the cumulative-sum outlier threshold. The
//! faithfulness measures compare maps normalised this way; `render` draws them.

use candle_core::Tensor;

use crate::error::{ExplainError, Result};

/// Which values `visualize_image_attr` shows (its `sign` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Signed values scaled to [−1, 1].
    All,
    /// Positive values only, in [0, 1].
    Positive,
    /// Negative values only, shown as magnitudes in [0, 1].
    Negative,
    /// |Σ_channels attribution| in [0, 1].
    AbsoluteValue,
}

/// Captum's `_normalize_attr` with `reduction_axis` over the channels: the channels are summed
/// **first** (signed), then the sign is applied (`AbsoluteValue` takes |sum|, `Positive` keeps
/// sum > 0, `Negative` sum < 0), then the values are divided by the threshold at which the
/// cumulative sum of the sorted magnitudes reaches `100 − outlier_perc` % of their total
/// (`_cumulative_sum_threshold`) and clipped to [−1, 1]. An all-zero map stays zero (Captum
/// refuses a zero scale). Input `[C, H, W]` or `[H, W]`; output row-major `h·w`.
pub fn normalize_attr(attribution: &Tensor, sign: Sign, outlier_perc: f32) -> Result<(Vec<f32>, usize, usize)> {
    if !(0.0..=100.0).contains(&outlier_perc) {
        return Err(ExplainError::Invalid(format!("outlier_perc must be in [0, 100], got {outlier_perc}")));
    }
    let a = attribution.to_dtype(candle_core::DType::F32)?;
    let a = match a.rank() {
        2 => a,
        3 => a.sum(0)?,
        _ => return Err(ExplainError::Invalid(format!("an attribution to render is [C, H, W] or [H, W], got {:?}", a.dims()))),
    };
    let (h, w) = a.dims2()?;
    let combined: Vec<f32> = a.flatten_all()?.to_vec1()?;
    if let Some(bad) = combined.iter().position(|v| !v.is_finite()) {
        return Err(ExplainError::Invalid(format!("attribution has a non-finite value at pixel ({}, {})", bad / w, bad % w)));
    }
    let values: Vec<f32> = match sign {
        Sign::All => combined,
        Sign::Positive => combined.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect(),
        Sign::Negative => combined.iter().map(|&v| if v < 0.0 { v } else { 0.0 }).collect(),
        Sign::AbsoluteValue => combined.iter().map(|v| v.abs()).collect(),
    };
    let magnitudes: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let mut threshold = cumulative_sum_threshold(&magnitudes, 100.0 - outlier_perc);
    if sign == Sign::Negative {
        threshold = -threshold;
    }
    let norm = values.iter().map(|v| if threshold != 0.0 { (v / threshold).clamp(-1.0, 1.0) } else { 0.0 }).collect();
    Ok((norm, h, w))
}

/// Captum's `_cumulative_sum_threshold`: the first sorted value at which the running sum
/// reaches `percentile` % of the total (the sums in f64, so that large maps do not drift).
fn cumulative_sum_threshold(values: &[f32], percentile: f32) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let total: f64 = sorted.iter().map(|&v| v as f64).sum();
    let target = total * 0.01 * percentile as f64;
    let mut running = 0.0f64;
    for &v in &sorted {
        running += v as f64;
        if running >= target {
            return v;
        }
    }
    sorted.last().copied().unwrap_or(0.0)
}

/// The map tgc draws by default: Captum's `sign="absolute_value"`, `outlier_perc=2`, in [0, 1].
pub fn normalized_magnitude(attribution: &Tensor) -> Result<(Vec<f32>, usize, usize)> {
    normalize_attr(attribution, Sign::AbsoluteValue, 2.0)
}
