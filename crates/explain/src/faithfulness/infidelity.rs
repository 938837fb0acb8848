//! Captum's `infidelity` (Yeh et al. 2019): how far an attribution's dot product with small
//! perturbations is from the change they make to the model's output.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::attribute::{check, target_column};
use crate::error::{ExplainError, Result};
use crate::model::{Hooks, Model};
use crate::perturbation::scores;

/// Settings of [`infidelity`]: Captum's `n_perturb_samples` (10) and `normalize` (false), the
/// Gaussian perturbation of Captum's documentation (`I ~ N(0, std²)`, perturbed input `x − I`).
#[derive(Debug, Clone)]
pub struct InfidelityConfig {
    /// Perturbations per image.
    pub n_perturb_samples: usize,
    /// Standard deviation of the Gaussian perturbation (Captum's example: 0.003).
    pub noise_std: f32,
    /// Scale the attribution sums by the least-squares β first (Captum's `normalize`), which
    /// makes maps of any scale comparable.
    pub normalize: bool,
    /// The attribution is a sensitivity times (input − baseline) (see
    /// [`crate::Attribute::multiplies_by_inputs`]): the perturbations are divided by
    /// (input − baseline), 1 where that is 0 (Captum's `infidelity_perturb_func_decorator`).
    pub multiply_by_inputs: bool,
    /// The baseline for `multiply_by_inputs`, shaped like the input (or one sample); `None`: 0.
    pub baseline: Option<Tensor>,
    /// Seed of the perturbations (each image draws from it afresh).
    pub seed: u64,
    /// Perturbed inputs per forward pass.
    pub batch_size: usize,
}

impl Default for InfidelityConfig {
    fn default() -> Self {
        Self { n_perturb_samples: 10, noise_std: 0.003, normalize: false, multiply_by_inputs: false, baseline: None, seed: 0, batch_size: 16 }
    }
}

/// Infidelity of `attribution` for each image of `input` `[B, …]` at its target:
/// `E_I[(Σ I ⊙ a − (f(x) − f(x − I)))²]` over `n_perturb_samples` Gaussian perturbations `I`,
/// with Captum's `normalize` and `multiply_by_inputs` when asked. `attribution` may have fewer
/// channels than the input when it broadcasts to it (a CAM's `[B, 1, H, W]` map counts for every
/// channel of its pixel). Lower is more faithful; 0 for an exact linear account. The sums run
/// in f64, so inputs with denormal values (where Captum's f32 division overflows) stay finite.
pub fn infidelity(model: &dyn Model, input: &Tensor, attribution: &Tensor, targets: &[usize], config: &InfidelityConfig) -> Result<Vec<f64>> {
    let b = check(input, targets)?;
    let n = config.n_perturb_samples;
    if n == 0 {
        return Err(ExplainError::Invalid("infidelity needs at least one perturbation".into()));
    }
    let normal = Normal::new(0f32, config.noise_std).ok().filter(|_| config.noise_std > 0.0 && config.noise_std.is_finite());
    let normal = normal.ok_or_else(|| ExplainError::Invalid(format!("infidelity's noise std must be a finite number > 0, got {}", config.noise_std)))?;
    let input = input.detach().to_dtype(DType::F32)?;
    let attribution = attribution
        .detach()
        .to_dtype(DType::F32)?
        .broadcast_as(input.shape())
        .map_err(|_| ExplainError::Invalid(format!("an attribution {:?} does not broadcast to the input {:?}", attribution.dims(), input.dims())))?
        .contiguous()?;
    let baseline = match &config.baseline {
        Some(t) => t.to_dtype(DType::F32)?.broadcast_as(input.shape())?.contiguous()?,
        None => input.zeros_like()?,
    };
    let at_input = model.forward(&input, &Hooks::none())?;
    let mut out = Vec::with_capacity(b);
    for (i, &target) in targets.iter().enumerate() {
        let x: Vec<f32> = input.get(i)?.flatten_all()?.to_vec1()?;
        let a: Vec<f32> = attribution.get(i)?.flatten_all()?.to_vec1()?;
        let base: Vec<f32> = baseline.get(i)?.flatten_all()?.to_vec1()?;
        let f_x = target_column(&at_input.narrow(0, i, 1)?, target)?[0] as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let noise: Vec<Vec<f32>> = (0..n).map(|_| x.iter().map(|_| normal.sample(&mut rng)).collect()).collect();
        let one = input.narrow(0, i, 1)?;
        let perturbed = scores(model, &one, n, |k, batch| batch.extend(x.iter().zip(&noise[k]).map(|(v, e)| v - e)), target, config.batch_size)?;
        // Per perturbation: Σ I' ⊙ a (I' the perturbation, divided by x − b when asked) and
        // f(x) − f(x − I).
        let (mut aa, mut af, mut ff, mut plain) = (0f64, 0f64, 0f64, 0f64);
        for (e, f_perturbed) in noise.iter().zip(perturbed) {
            let sum: f64 = e
                .iter()
                .zip(&a)
                .zip(x.iter().zip(&base))
                .map(|((&e, &a), (&x, &b))| {
                    // In f64: an input of 1e-45 (the OASIS slices hold thousands of such
                    // denormals) makes e / (x − b) overflow f32.
                    let p = if config.multiply_by_inputs {
                        let d = x as f64 - b as f64;
                        e as f64 / if d == 0.0 { 1.0 } else { d }
                    } else {
                        e as f64
                    };
                    p * a as f64
                })
                .sum();
            let diff = f_x - f_perturbed as f64;
            aa += sum * sum;
            af += sum * diff;
            ff += diff * diff;
            plain += (sum - diff) * (sum - diff);
        }
        let total = if config.normalize {
            let beta = af / if aa == 0.0 { 1.0 } else { aa };
            beta * beta * aa - 2.0 * beta * af + ff
        } else {
            plain
        };
        let value = total / n as f64;
        if !value.is_finite() {
            return Err(ExplainError::Invalid(format!("infidelity of image {i} is {value}: the attribution or the model's output is not finite")));
        }
        out.push(value);
    }
    Ok(out)
}
