//! Deletion and insertion curves: pixels removed (or revealed) in decreasing importance, the
//! target's probability integrated; several maps of a slice in one stream of batches.

use candle_core::{DType, Tensor, D};

use super::filter::gaussian_blur;
use crate::attribute::check_target;
use crate::error::{ExplainError, Result};
use crate::model::{Hooks, Model};

/// What replaces removed (or not yet revealed) pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// All zero.
    Zero,
    /// A Gaussian blur of the input (σ in pixels).
    Blur {
        /// The blur's σ, in pixels.
        sigma_px: u32,
    },
}

/// Settings of [`deletion_insertion`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveConfig {
    /// Number of steps; the curve has `steps + 1` points from 0 to all pixels.
    pub steps: usize,
    /// What removed pixels become.
    pub baseline: Baseline,
    /// Images per forward batch.
    pub batch_size: usize,
}

impl Default for CurveConfig {
    fn default() -> Self {
        Self { steps: 20, baseline: Baseline::Zero, batch_size: 16 }
    }
}

/// The two curves of one image: target-class probability after each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    /// Most relevant pixels removed first (lower area is better).
    pub deletion: Vec<f32>,
    /// Most relevant pixels inserted first into the baseline (higher area is better).
    pub insertion: Vec<f32>,
}

impl Curves {
    /// Area under the deletion curve over [0, 1] (trapezoids): lower is better.
    pub fn deletion_auc(&self) -> f32 {
        trapezoid(&self.deletion)
    }

    /// Area under the insertion curve: higher is better.
    pub fn insertion_auc(&self) -> f32 {
        trapezoid(&self.insertion)
    }
}

fn trapezoid(ys: &[f32]) -> f32 {
    if ys.len() < 2 {
        return ys.first().copied().unwrap_or(0.0);
    }
    let dx = 1.0 / (ys.len() - 1) as f32;
    ys.windows(2).map(|w| 0.5 * (w[0] + w[1]) * dx).sum()
}

/// Deletion (remove pixels in decreasing attribution order, replaced by the baseline) and
/// insertion (reveal them on the baseline) curves of one image `[1, C, H, W]` for a map of
/// `H·W` importances. Pixels are removed in all channels at once; ties keep row-major order.
/// Each curve's `steps + 1` images are evaluated in batches.
pub fn deletion_insertion<M: Model + ?Sized>(model: &M, input: &Tensor, importance: &[f32], target: usize, config: &CurveConfig) -> Result<Curves> {
    Ok(deletion_insertion_many(model, input, &[importance], target, config)?.remove(0))
}

/// [`deletion_insertion`] for several maps of the same image (one per method, say), as one
/// stream of batches: the curves' shared end points (the image itself, and the baseline) are
/// evaluated once for all maps, and each perturbed image is built only when its batch runs.
pub fn deletion_insertion_many<M: Model + ?Sized>(
    model: &M,
    input: &Tensor,
    importances: &[&[f32]],
    target: usize,
    config: &CurveConfig,
) -> Result<Vec<Curves>> {
    let (b, c, h, w) = input.dims4()?;
    if b != 1 || importances.iter().any(|m| m.len() != h * w) || config.steps == 0 {
        return Err(ExplainError::Invalid(format!(
            "deletion/insertion take one image and H·W maps with steps ≥ 1 (input {:?}, maps of {:?}, steps {})",
            input.dims(),
            importances.iter().map(|m| m.len()).collect::<Vec<_>>(),
            config.steps
        )));
    }
    let x: Vec<f32> = input.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let base = match config.baseline {
        Baseline::Zero => vec![0.0; x.len()],
        Baseline::Blur { sigma_px } => gaussian_blur(&x, c, h, w, sigma_px as f32),
    };
    let orders: Vec<Vec<usize>> = importances
        .iter()
        .map(|importance| {
            let mut order: Vec<usize> = (0..h * w).collect();
            order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
            order
        })
        .collect();
    let steps = config.steps;
    let counts: Vec<usize> = (0..=steps).map(|s| (s * h * w + steps / 2) / steps).collect();
    // The images to evaluate: 0 = the input, 1 = the baseline, then for each map the interior
    // points (steps 1 .. steps−1) of its deletion curve and of its insertion curve.
    let interior = steps - 1;
    let total = 2 + importances.len() * 2 * interior;
    let build = |j: usize, img: &mut [f32]| {
        if j < 2 {
            img.copy_from_slice(if j == 0 { &x } else { &base });
            return;
        }
        let j = j - 2;
        let (map, rest) = (j / (2 * interior), j % (2 * interior));
        let (deleting, k) = (rest < interior, counts[rest % interior + 1]);
        img.copy_from_slice(if deleting { &x } else { &base });
        let from = if deleting { &base } else { &x };
        for &p in &orders[map][..k] {
            for ch in 0..c {
                img[ch * h * w + p] = from[ch * h * w + p];
            }
        }
    };
    let probs = target_probabilities(model, total, (c, h, w), input.device(), target, config.batch_size, build)?;
    let (at_input, at_base) = (probs[0], probs[1]);
    Ok((0..importances.len())
        .map(|m| {
            let own = &probs[2 + m * 2 * interior..2 + (m + 1) * 2 * interior];
            let deletion = std::iter::once(at_input).chain(own[..interior].iter().copied()).chain(std::iter::once(at_base)).collect();
            let insertion = std::iter::once(at_base).chain(own[interior..].iter().copied()).chain(std::iter::once(at_input)).collect();
            Curves { deletion, insertion }
        })
        .collect())
}

/// The target's softmax probability for `count` images `[c, h, w]`, each written by
/// `build(index, image)` only when its batch of `batch_size` runs.
pub(super) fn target_probabilities<M: Model + ?Sized>(
    model: &M,
    count: usize,
    (c, h, w): (usize, usize, usize),
    device: &candle_core::Device,
    target: usize,
    batch_size: usize,
    build: impl Fn(usize, &mut [f32]),
) -> Result<Vec<f32>> {
    let per_image = c * h * w;
    let chunk = batch_size.max(1);
    let mut probs = Vec::with_capacity(count);
    let mut start = 0;
    while start < count {
        let len = chunk.min(count - start);
        let mut images = vec![0f32; len * per_image];
        for (i, img) in images.chunks_mut(per_image).enumerate() {
            build(start + i, img);
        }
        let logits = model.forward(&Tensor::from_vec(images, (len, c, h, w), device)?, &Hooks::none())?;
        check_target(target, logits.dim(1)?)?;
        probs.extend(softmax_rows(&logits)?.iter().map(|row| row[target]));
        start += len;
    }
    Ok(probs)
}

fn softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let m = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.to_dtype(DType::F32)?.to_vec2()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn trapezoid_area() {
        assert!((trapezoid(&[1.0, 0.0]) - 0.5).abs() < 1e-7);
        assert!((trapezoid(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-7);
    }
}
