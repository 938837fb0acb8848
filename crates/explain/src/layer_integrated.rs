//! Layer Integrated Gradients (Captum's `LayerIntegratedGradients`): Integrated Gradients in
//! the space of a layer's activation.

use std::any::Any;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, Var};

use crate::attribute::{check, Attribute, Attribution, Method, Unchecked};
use crate::error::{ExplainError, Result};
use crate::gradient::{auto_batch_rows, backward_failed, resolve_layer, target_sum, unmarked_layer, upsample_map};
use crate::interpolate::Interpolation;
use crate::model::{Hooks, LayerGradient, Model};
use crate::quadrature::{gauss_legendre_unit, path_points, weighted_step_sum};

/// Layer Integrated Gradients at `layer` (Captum's `LayerIntegratedGradients`,
/// `multiply_by_inputs`, Gauss–Legendre steps): with `a(x)` the layer's activation,
/// `(a(x) − a(b)) ⊙ Σ_i w_i ∂f/∂a at a(b) + α_i (a(x) − a(b))`, the rest of the model run from
/// the interpolated activation (the pass up to the layer runs on the input, as Captum's forward
/// hook does). `layer_attribution` is the attribution shaped like the layer `[B, K, …]`;
/// `attribution` is its sum over channels up-sampled to the input (bilinear, as a CAM).
/// On a transformer's token layer ([`Hooks::token_layer`]) only the patch tokens are
/// interpolated; the class token keeps the input's value.
#[derive(Debug, Clone)]
pub struct LayerIntegratedGradients {
    /// The layer (one the model marks); `None`: the model's default.
    pub layer: Option<String>,
    /// Quadrature points (Captum's 50).
    pub steps: usize,
    /// Interpolated activations per forward/backward pass; `None` sizes them to memory.
    pub internal_batch_size: Option<usize>,
    /// The input baseline `[1, …]` (or one per sample) whose activation is the path's start;
    /// `None` is zero.
    pub baseline: Option<Tensor>,
}

impl Default for LayerIntegratedGradients {
    fn default() -> Self {
        Self { layer: None, steps: 50, internal_batch_size: None, baseline: None }
    }
}

impl LayerIntegratedGradients {
    /// Layer Integrated Gradients at the named layer with Captum's defaults.
    pub fn new(layer: impl Into<String>) -> Self {
        Self { layer: Some(layer.into()), ..Self::default() }
    }

    /// The layer's activation of `x` (one plain pass).
    fn activation(model: &dyn Model, layer: &str, x: &Tensor) -> Result<Tensor> {
        let hooks = Hooks::none().watch_layer(layer, LayerGradient::None);
        model.forward(x, &hooks)?;
        hooks.layer_activation().ok_or_else(|| unmarked_layer(layer, &hooks))
    }
}

impl Attribute for LayerIntegratedGradients {
    fn name(&self) -> String {
        "layer-integrated-gradients".into()
    }

    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let b = check(input, targets)?;
        if self.steps == 0 {
            return Err(ExplainError::Invalid("Layer Integrated Gradients needs at least one step".into()));
        }
        let layer = resolve_layer(model, self.layer.as_deref())?;
        let input = input.detach().to_dtype(DType::F32)?;
        let baseline = match &self.baseline {
            Some(t) => t.to_dtype(DType::F32)?.broadcast_as(input.shape())?.contiguous()?,
            None => input.zeros_like()?,
        };
        let at_input = Self::activation(model, &layer, &input)?;
        let at_baseline = Self::activation(model, &layer, &baseline)?;
        let diff = (&at_input - &at_baseline)?;
        let (alphas, weights) = gauss_legendre_unit(self.steps);
        // Steps per pass: the rows a pass runs after the layer are B · steps.
        let rows = self.internal_batch_size.unwrap_or_else(|| auto_batch_rows(input.elem_count() / b.max(1)));
        let steps_per_pass = (rows / b.max(1)).clamp(1, self.steps);
        let mut integrated = at_input.zeros_like()?;
        for first in (0..self.steps).step_by(steps_per_pass) {
            let count = steps_per_pass.min(self.steps - first);
            let (alpha, weight) = (&alphas[first..first + count], &weights[first..first + count]);
            let points = path_points(&at_baseline, &diff, alpha)?;
            let leaf: Arc<Mutex<Option<Var>>> = Arc::default();
            let slot = leaf.clone();
            let hooks = Hooks::none().replace_layer(&layer, move |_| {
                let var = Var::from_tensor(&points)?;
                let t = var.as_tensor().clone();
                if let Ok(mut s) = slot.lock() {
                    *s = Some(var);
                }
                Ok(t)
            });
            let out = model.forward(&input, &hooks)?;
            let var = leaf.lock().ok().and_then(|v| v.clone()).ok_or_else(|| unmarked_layer(&layer, &hooks))?;
            let grads = target_sum(&out, targets, count)?.backward().map_err(backward_failed)?;
            let g = grads.get(var.as_tensor()).cloned().ok_or_else(|| ExplainError::Invalid(format!("the logits do not depend on layer `{layer}`")))?;
            integrated = (integrated + weighted_step_sum(&g, weight)?)?;
        }
        let layer_attribution = diff.mul(&integrated)?;
        let (at_x, delta) = crate::gradient::convergence_delta(model, &layer_attribution, &input, &baseline, targets)?;
        if layer_attribution.rank() < 3 {
            return Err(ExplainError::Invalid(format!("layer `{layer}` is {:?}: a layer attribution needs [B, K, …spatial]", layer_attribution.dims())));
        }
        let map = layer_attribution.sum(1)?;
        let attribution = upsample_map(&map, &input, Interpolation::Linear { align_corners: false })?;
        Ok(Unchecked::new(Attribution { attribution, layer_attribution: Some(layer_attribution), logits: Some(at_x), convergence_delta: Some(delta) }))
    }

    fn with_layer(&self, layer: &str) -> Option<Method> {
        Some(Method::new(Self { layer: Some(layer.to_owned()), ..self.clone() }))
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
