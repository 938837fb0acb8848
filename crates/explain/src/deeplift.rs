//! DeepLift and DeepLiftShap (Captum's `DeepLift` and `DeepLiftShap`, Rescale rule,
//! `multiply_by_inputs`): one pass over the inputs and their references together, every
//! nonlinearity the model marks replacing its backward by Captum's rule for it
//! ([`Hooks::with_deeplift`]; the rules are described in the `rules` module).

use std::any::Any;

use candle_core::{DType, Tensor, Var};

use crate::attribute::{check, Attribute, Attribution, Unchecked};
use crate::error::{ExplainError, Result};
use crate::gradient::{auto_batch_rows, backward_failed, completeness_gaps, no_input_gradient, target_sum, Baselines};
use crate::model::{Hooks, Model};

/// Captum's default eps of the DeepLift rules: where `|Δin|` is below it, the ordinary gradient.
pub const DEEPLIFT_EPS: f32 = 1e-10;

/// DeepLift (Shrikumar et al. 2017; Captum's `DeepLift`): `(x − b) ⊙ m`, the multipliers `m`
/// backpropagated from the target with the Rescale rule at every marked ReLU, elementwise
/// nonlinearity and max-pool, and ordinary gradients elsewhere (convolutions, linear layers,
/// normalisations, GELU and softmax, as Captum). The attributions add up to
/// `f(x) − f(b)` at the target up to the [`Attribution::convergence_delta`] (exactly, for models
/// whose max-pools do not overlap or see a reference constant over each window).
#[derive(Debug, Clone)]
pub struct DeepLift {
    /// The reference: one baseline per image (zeros, or a distribution of one image).
    pub baselines: Baselines,
    /// Below this `|Δin|` a rule keeps the ordinary gradient (Captum's 1e-10).
    pub eps: f32,
    /// Input/reference pairs per pass; `None` sizes them to memory.
    pub batch_size: Option<usize>,
}

impl Default for DeepLift {
    fn default() -> Self {
        Self { baselines: Baselines::Zeros, eps: DEEPLIFT_EPS, batch_size: None }
    }
}

/// DeepLiftShap (Captum's `DeepLiftShap`): DeepLift against every baseline of a distribution
/// (at least two), averaged; the convergence delta is the mean of the per-baseline deltas, the
/// completeness gap of the averaged map against `f(x) − mean f(b)`.
#[derive(Debug, Clone)]
pub struct DeepLiftShap {
    /// The baseline distribution (two or more images per input).
    pub baselines: Baselines,
    /// Below this `|Δin|` a rule keeps the ordinary gradient (Captum's 1e-10).
    pub eps: f32,
    /// Input/reference pairs per pass; `None` sizes them to memory.
    pub batch_size: Option<usize>,
}

impl DeepLiftShap {
    /// DeepLiftShap over `baselines`.
    pub fn new(baselines: Baselines) -> Self {
        Self { baselines, eps: DEEPLIFT_EPS, batch_size: None }
    }
}

impl Attribute for DeepLift {
    fn name(&self) -> String {
        "deeplift".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let (input, references) = references(input, targets, &self.baselines)?;
        if references.len() != 1 {
            return Err(ExplainError::Invalid(format!(
                "DeepLift takes one baseline per image, got a distribution of {}: use DeepLiftShap (deeplift-shap) to average over several",
                references.len()
            )));
        }
        let out = deeplift_pairs(model, &input, &references[0], targets, self.eps, self.batch_size)?;
        Ok(Unchecked::new(out))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn multiplies_by_inputs(&self) -> bool {
        true
    }
}

impl Attribute for DeepLiftShap {
    fn name(&self) -> String {
        "deeplift-shap".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let (input, references) = references(input, targets, &self.baselines)?;
        if references.len() < 2 {
            return Err(ExplainError::Invalid(
                "DeepLiftShap averages over a baseline distribution of at least two images (Captum asserts the same): give more baselines, or use DeepLift"
                    .into(),
            ));
        }
        let n = references.len() as f64;
        let runs = references.iter().map(|r| deeplift_pairs(model, &input, r, targets, self.eps, self.batch_size)).collect::<Result<Vec<_>>>()?;
        let mean = |parts: Vec<&Tensor>| -> Result<Tensor> { Ok((Tensor::stack(&parts, 0)?.sum(0)? / n)?) };
        let attribution = mean(runs.iter().map(|a| &a.attribution).collect())?;
        let delta = mean(runs.iter().filter_map(|a| a.convergence_delta.as_ref()).collect())?;
        let logits = runs.into_iter().next().and_then(|a| a.logits);
        Ok(Unchecked::new(Attribution { attribution, layer_attribution: None, logits, convergence_delta: Some(delta) }))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn multiplies_by_inputs(&self) -> bool {
        true
    }
}

/// The input as f32 and its references: for each candidate baseline of the distribution, a
/// batch `[B, …]` holding every image's copy of it.
fn references(input: &Tensor, targets: &[usize], baselines: &Baselines) -> Result<(Tensor, Vec<Tensor>)> {
    let b = check(input, targets)?;
    let input = input.detach().to_dtype(DType::F32)?;
    let per_image = input.elem_count() / b.max(1);
    let x: Vec<f32> = input.flatten_all()?.to_vec1()?;
    let mut per_candidate: Vec<Vec<f32>> = Vec::new();
    for i in 0..b {
        let candidates = baselines.candidates(&x[i * per_image..(i + 1) * per_image], &input.dims()[1..])?;
        let n = candidates.len() / per_image.max(1);
        if per_candidate.is_empty() {
            per_candidate = vec![Vec::with_capacity(b * per_image); n];
        }
        for (k, c) in candidates.chunks(per_image).enumerate() {
            per_candidate[k].extend_from_slice(c);
        }
    }
    let references = per_candidate.into_iter().map(|v| Tensor::from_vec(v, input.shape(), input.device())).collect::<candle_core::Result<Vec<_>>>()?;
    Ok((input, references))
}

/// DeepLift of each image against its reference (`input` and `reference` both `[B, …]`), in
/// passes of at most `batch_size` pairs: attribution, logits at the input, convergence delta.
fn deeplift_pairs(model: &dyn Model, input: &Tensor, reference: &Tensor, targets: &[usize], eps: f32, batch_size: Option<usize>) -> Result<Attribution> {
    let b = input.dim(0)?;
    // Each pass holds both rows of a pair and the rules' copies of every activation.
    let chunk = batch_size.unwrap_or_else(|| (auto_batch_rows(input.elem_count() / b.max(1)) / 2).max(1)).max(1);
    let (mut maps, mut logits, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    while start < b {
        let len = chunk.min(b - start);
        let (x, r) = (input.narrow(0, start, len)?, reference.narrow(0, start, len)?);
        let part_targets = &targets[start..start + len];
        let var = Var::from_tensor(&Tensor::cat(&[&x, &r], 0)?)?;
        let hooks = Hooks::none().with_deeplift(len, eps);
        let out = model.forward(var.as_tensor(), &hooks)?;
        if !hooks.marked_anything() {
            return Err(ExplainError::Invalid(
                "DeepLift replaces the backward rule of the model's nonlinearities, but its pass marks none (nor anything else): route every ReLU through \
                 Hooks::relu, other elementwise nonlinearities through Hooks::nonlinear and max-pools through Hooks::max_pool2d"
                    .into(),
            ));
        }
        let both_targets: Vec<usize> = part_targets.iter().chain(part_targets).copied().collect();
        let grads = target_sum(&out, &both_targets, 1)?.backward().map_err(backward_failed)?;
        let g = grads.get(var.as_tensor()).cloned().ok_or_else(no_input_gradient)?.narrow(0, 0, len)?;
        let map = (&x - &r)?.mul(&g)?;
        let out = out.detach();
        let (at_input, at_reference) = (out.narrow(0, 0, len)?, out.narrow(0, len, len)?);
        deltas.extend(completeness_gaps(&map, &at_input, &at_reference, part_targets)?);
        maps.push(map);
        logits.push(at_input);
        start += len;
    }
    let delta = Tensor::from_vec(deltas, b, input.device())?;
    Ok(Attribution { attribution: Tensor::cat(&maps, 0)?, layer_attribution: None, logits: Some(Tensor::cat(&logits, 0)?), convergence_delta: Some(delta) })
}
