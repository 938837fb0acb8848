//! Captum's forward-only Shapley methods and feature permutation. They need no gradient, so
//! they explain any candle model, one whose backward pass candle cannot run included. Features
//! are given by a [`FeatureMask`] (one per element, a grid, or an id mask); an absent feature
//! takes the [`Baseline`]; every element of a feature gets the feature's value. Forward passes
//! run `perturbations_per_eval` perturbed samples at a time; each image draws from the seed
//! afresh, so its map does not depend on the batch it is in.

use std::any::Any;

use candle_core::{DType, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::attribute::{check, target_column, Attribute, Attribution, Unchecked};
use crate::error::{ExplainError, Result};
use crate::gradient::logits_of;
use crate::model::{Hooks, Model};
use crate::perturbation::{compose, scores, spread, Baseline, FeatureMask, Region};

/// The most features [`ShapleyValues`] takes: it evaluates all `2^M` coalitions of each image
/// (65,536 forward passes at 16 features).
pub const MAX_EXACT_FEATURES: usize = 16;

/// One image's samples: its values, its baseline's, its features.
pub(crate) struct Sample {
    pub x: Vec<f32>,
    pub baseline: Vec<f32>,
}

/// The input's samples, the features and the logits, as every forward-only method starts.
pub(crate) fn prepare(input: &Tensor, targets: &[usize], mask: &FeatureMask, baseline: &Baseline, method: &str) -> Result<(Vec<Sample>, Vec<Region>)> {
    let b = check(input, targets)?;
    let regions = mask.regions(input, targets, method)?;
    if regions.is_empty() {
        return Err(ExplainError::Invalid(format!("{method}: the feature mask has no features")));
    }
    let x: Vec<f32> = input.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let per_sample = x.len() / b.max(1);
    let base = baseline.values(input)?;
    let samples = x.chunks(per_sample.max(1)).take(b).map(|xi| Sample { x: xi.to_vec(), baseline: base.clone() }).collect();
    Ok((samples, regions))
}

/// The per-feature values of every image spread over their elements, with the logits.
pub(crate) fn finish(model: &dyn Model, input: &Tensor, values: &[Vec<f64>], regions: &[Region]) -> Result<Unchecked> {
    let per_sample: usize = input.dims()[1..].iter().product();
    let map: Vec<f32> = values.iter().flat_map(|v| spread(v, regions, per_sample)).collect();
    let logits = logits_of(model, input)?;
    Ok(Unchecked::new(Attribution {
        attribution: Tensor::from_vec(map, input.dims(), input.device())?,
        layer_attribution: None,
        logits: Some(logits),
        convergence_delta: None,
    }))
}

fn check_samples(n: usize, method: &str) -> Result<()> {
    if n == 0 {
        return Err(ExplainError::Invalid(format!("{method} needs at least one sample")));
    }
    Ok(())
}

/// Captum's `ShapleyValueSampling`: for each of `n_samples` random feature orders, the features
/// are added one by one to the baseline in that order, each getting the change of the target's
/// score it makes; a feature's value is the mean of its changes. Each order's changes add up
/// to `f(x) − f(baseline)`, so the values do too. `n_samples · M + 1` forward evaluations per
/// image for `M` features.
#[derive(Debug, Clone)]
pub struct ShapleyValueSampling {
    /// The features.
    pub mask: FeatureMask,
    /// What an absent feature takes.
    pub baseline: Baseline,
    /// Random feature orders (Captum's default 25).
    pub n_samples: usize,
    /// Perturbed samples per forward pass.
    pub perturbations_per_eval: usize,
    /// Seed of the orders.
    pub seed: u64,
}

impl Default for ShapleyValueSampling {
    fn default() -> Self {
        Self { mask: FeatureMask::Elements, baseline: Baseline::default(), n_samples: 25, perturbations_per_eval: 16, seed: 0 }
    }
}

impl Attribute for ShapleyValueSampling {
    fn name(&self) -> String {
        "shapley-value-sampling".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check_samples(self.n_samples, "Shapley value sampling")?;
        let (samples, regions) = prepare(input, targets, &self.mask, &self.baseline, "Shapley value sampling")?;
        let m = regions.len();
        let mut values = Vec::with_capacity(samples.len());
        for (sample, &target) in samples.iter().zip(targets) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            let start = scores(model, input, 1, |_, batch| batch.extend_from_slice(&sample.baseline), target, 1)?[0];
            let mut total = vec![0f64; m];
            for _ in 0..self.n_samples {
                let mut order: Vec<usize> = (0..m).collect();
                order.shuffle(&mut rng);
                // Step k: the first k + 1 features of the order present (steps come in order).
                let mut present = vec![false; m];
                let step = |k: usize, batch: &mut Vec<f32>| {
                    present[order[k]] = true;
                    compose(batch, &sample.x, &sample.baseline, &regions, &present);
                };
                let evals = scores(model, input, m, step, target, self.perturbations_per_eval)?;
                let mut previous = start;
                for (&f, &now) in order.iter().zip(&evals) {
                    total[f] += (now - previous) as f64;
                    previous = now;
                }
            }
            values.push(total.into_iter().map(|t| t / self.n_samples as f64).collect());
        }
        finish(model, input, &values, &regions)
    }
}

/// Captum's `ShapleyValues`: the exact Shapley value of every feature,
/// `φ_i = Σ_{S ∌ i} |S|!(M−|S|−1)!/M! · (f(S ∪ {i}) − f(S))`, from the target's score of all
/// `2^M` coalitions (the mean over all `M!` orders that Captum walks, with fewer passes).
/// Refuses more than [`MAX_EXACT_FEATURES`] features.
#[derive(Debug, Clone)]
pub struct ShapleyValues {
    /// The features.
    pub mask: FeatureMask,
    /// What an absent feature takes.
    pub baseline: Baseline,
    /// Perturbed samples per forward pass.
    pub perturbations_per_eval: usize,
}

impl Default for ShapleyValues {
    fn default() -> Self {
        Self { mask: FeatureMask::Elements, baseline: Baseline::default(), perturbations_per_eval: 16 }
    }
}

/// The target's score of every coalition of `m` features, indexed by the coalition's bits.
pub(crate) fn all_coalitions(model: &dyn Model, input: &Tensor, sample: &Sample, regions: &[Region], target: usize, per_eval: usize) -> Result<Vec<f64>> {
    let m = regions.len();
    let coalition = |bits: usize, batch: &mut Vec<f32>| {
        let present: Vec<bool> = (0..m).map(|f| bits >> f & 1 == 1).collect();
        compose(batch, &sample.x, &sample.baseline, regions, &present);
    };
    Ok(scores(model, input, 1 << m, coalition, target, per_eval)?.into_iter().map(f64::from).collect())
}

/// Exact Shapley values from the scores of every coalition.
pub(crate) fn shapley_from_coalitions(v: &[f64], m: usize) -> Vec<f64> {
    let factorial = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
    let weight: Vec<f64> = (0..m).map(|s| factorial(s) * factorial(m - s - 1) / factorial(m)).collect();
    (0..m)
        .map(|i| (0..v.len()).filter(|bits| bits >> i & 1 == 0).map(|bits: usize| weight[bits.count_ones() as usize] * (v[bits | 1 << i] - v[bits])).sum())
        .collect()
}

impl Attribute for ShapleyValues {
    fn name(&self) -> String {
        "shapley-values".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let (samples, regions) = prepare(input, targets, &self.mask, &self.baseline, "Shapley values")?;
        let m = regions.len();
        if m > MAX_EXACT_FEATURES {
            return Err(ExplainError::Invalid(format!(
                "exact Shapley values of {m} features need 2^{m} forward passes per image; at most {MAX_EXACT_FEATURES} features (use a coarser --grid, or shapley-value-sampling / kernel-shap)"
            )));
        }
        let mut values = Vec::with_capacity(samples.len());
        for (sample, &target) in samples.iter().zip(targets) {
            let v = all_coalitions(model, input, sample, &regions, target, self.perturbations_per_eval)?;
            values.push(shapley_from_coalitions(&v, m));
        }
        finish(model, input, &values, &regions)
    }
}

/// Captum's `FeaturePermutation`: each feature in turn is shuffled across the batch (the rows
/// take each other's values there, by a seeded permutation that moves at least one row) and a
/// row's value is the drop of its target's score, `f(x) − f(x_permuted)`. Needs a batch of at
/// least two.
#[derive(Debug, Clone)]
pub struct FeaturePermutation {
    /// The features.
    pub mask: FeatureMask,
    /// Permuted batches per forward pass.
    pub perturbations_per_eval: usize,
    /// Seed of the permutations.
    pub seed: u64,
}

impl Default for FeaturePermutation {
    fn default() -> Self {
        Self { mask: FeatureMask::Elements, perturbations_per_eval: 4, seed: 0 }
    }
}

impl Attribute for FeaturePermutation {
    fn name(&self) -> String {
        "feature-permutation".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let b = check(input, targets)?;
        if b < 2 {
            return Err(ExplainError::Invalid("feature permutation shuffles features across the batch: it needs at least two samples".into()));
        }
        let regions = self.mask.regions(input, targets, "Feature permutation")?;
        let x: Vec<f32> = input.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let per_sample = x.len() / b;
        let logits = logits_of(model, input)?;
        let original: Vec<f32> = targets.iter().enumerate().map(|(i, &t)| Ok(target_column(&logits.narrow(0, i, 1)?, t)?[0])).collect::<Result<_>>()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut values = vec![vec![0f64; regions.len()]; b];
        let per_eval = self.perturbations_per_eval.max(1);
        for (chunk_index, chunk) in regions.chunks(per_eval).enumerate() {
            let mut batch = Vec::with_capacity(chunk.len() * x.len());
            for region in chunk {
                let mut perm: Vec<usize> = (0..b).collect();
                while perm.iter().enumerate().all(|(i, &p)| i == p) {
                    perm.shuffle(&mut rng);
                }
                let mut permuted = x.clone();
                for (i, &from) in perm.iter().enumerate() {
                    for &e in region {
                        permuted[i * per_sample + e] = x[from * per_sample + e];
                    }
                }
                batch.extend(permuted);
            }
            let mut shape = input.dims().to_vec();
            shape[0] = chunk.len() * b;
            let out = model.forward(&Tensor::from_vec(batch, shape, input.device())?.to_dtype(input.dtype())?, &Hooks::none())?;
            for k in 0..chunk.len() {
                for (i, &t) in targets.iter().enumerate() {
                    let score = target_column(&out.narrow(0, k * b + i, 1)?, t)?[0];
                    values[i][chunk_index * per_eval + k] = (original[i] - score) as f64;
                }
            }
        }
        let map: Vec<f32> = values.iter().flat_map(|v| spread(v, &regions, per_sample)).collect();
        Ok(Unchecked::new(Attribution {
            attribution: Tensor::from_vec(map, input.dims(), input.device())?,
            layer_attribution: None,
            logits: Some(logits),
            convergence_delta: None,
        }))
    }
}
