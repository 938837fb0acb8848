//! Captum's `sensitivity_max` (Yeh et al. 2019): how much an explanation moves under small
//! input perturbations.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attribute::{check, Attribute};
use crate::error::{ExplainError, Result};
use crate::model::Model;

/// Settings of [`sensitivity_max`]: Captum's defaults (10 perturbations drawn uniformly from
/// the L∞ ball of radius 0.02; the Frobenius norm).
#[derive(Debug, Clone)]
pub struct SensitivityConfig {
    /// Perturbed inputs per image.
    pub n_perturb_samples: usize,
    /// Radius of the L∞ ball the perturbations are drawn from.
    pub perturb_radius: f32,
    /// Seed of the perturbations (each image draws from it afresh).
    pub seed: u64,
}

impl Default for SensitivityConfig {
    fn default() -> Self {
        Self { n_perturb_samples: 10, perturb_radius: 0.02, seed: 0 }
    }
}

/// Max-sensitivity of `method` for each image of `input` `[B, …]` at its target:
/// `max_k ‖e(x + δ_k) − e(x)‖ / ‖e(x)‖` (Frobenius norms; a zero `‖e(x)‖` counts as 1) over
/// `n_perturb_samples` perturbations `δ_k ~ U[−r, r]` elementwise. `at_input` is `e(x)` when
/// already computed. Lower is more robust.
pub fn sensitivity_max(
    method: &dyn Attribute,
    model: &dyn Model,
    input: &Tensor,
    targets: &[usize],
    at_input: Option<&Tensor>,
    config: &SensitivityConfig,
) -> Result<Vec<f64>> {
    let b = check(input, targets)?;
    let r = config.perturb_radius;
    if config.n_perturb_samples == 0 || !(r > 0.0 && r.is_finite()) {
        return Err(ExplainError::Invalid(format!(
            "sensitivity needs at least one perturbation and a finite radius > 0, got {} and {r}",
            config.n_perturb_samples
        )));
    }
    let input = input.detach().to_dtype(DType::F32)?;
    let explained = match at_input {
        Some(e) => e.clone(),
        None => method.attribute(model, &input, targets)?.attribution,
    };
    let flat = |t: &Tensor| -> Result<Vec<Vec<f32>>> { Ok(t.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2()?) };
    let reference = flat(&explained)?;
    let norms: Vec<f64> = reference.iter().map(|e| e.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt()).collect();
    let per_image = input.elem_count() / b.max(1);
    let x: Vec<f32> = input.flatten_all()?.to_vec1()?;
    let mut rngs: Vec<ChaCha8Rng> = (0..b).map(|_| ChaCha8Rng::seed_from_u64(config.seed)).collect();
    let mut worst = vec![0f64; b];
    for _ in 0..config.n_perturb_samples {
        let mut perturbed = Vec::with_capacity(x.len());
        for (i, rng) in rngs.iter_mut().enumerate() {
            perturbed.extend(x[i * per_image..(i + 1) * per_image].iter().map(|v| v + rng.random_range(-r..=r)));
        }
        let perturbed = Tensor::from_vec(perturbed, input.shape(), input.device())?;
        let moved = flat(&method.attribute(model, &perturbed, targets)?.attribution)?;
        for i in 0..b {
            let d: f64 = moved[i].iter().zip(&reference[i]).map(|(a, e)| ((a - e) as f64).powi(2)).sum::<f64>().sqrt();
            let norm = if norms[i] == 0.0 { 1.0 } else { norms[i] };
            worst[i] = worst[i].max(d / norm);
        }
    }
    Ok(worst)
}
