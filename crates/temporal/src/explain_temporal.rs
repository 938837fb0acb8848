//! Explaining the temporal model: how much each visit mattered for the prediction at the last
//! one, and Grad-CAM maps of every visit's image with gradients flowing from the temporal
//! model's output through that visit's features into the backbone.

use candle_core::{Device, Tensor, Var};
use tgc_backbones::{Backbone, TargetActivation};
use tgc_explain::{gauss_legendre_unit, Explainable, ReluMode};

use crate::error::{Result, TrainError};
use crate::model::Head;

/// How per-visit importance is computed over the flattened sequence input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMethod {
    /// Integrated Gradients from the all-zero sequence (Gauss–Legendre, `steps` nodes).
    IntegratedGradients { steps: usize },
    InputXGradient,
}

/// Importance of each of the `seq_len` steps: the attribution of the step's feature vector,
/// summed. `sequence` is `[seq_len · dim]` with zeros for padded steps, whose importance is then
/// exactly zero (their input equals the baseline).
pub fn step_importance(head: &Head, sequence: &[f32], dim: usize, target: usize, method: StepMethod) -> Result<Vec<f32>> {
    if dim == 0 || sequence.len() % dim != 0 || target > 1 {
        return Err(TrainError::Invalid(format!("a sequence of {} values is not steps of {dim} (target {target})", sequence.len())));
    }
    let width = sequence.len();
    let x = Tensor::from_slice(sequence, (1, width), &Device::Cpu)?;
    let (alphas, weights) = match method {
        StepMethod::IntegratedGradients { steps } if steps > 0 => gauss_legendre_unit(steps),
        StepMethod::IntegratedGradients { .. } => return Err(TrainError::Invalid("Integrated Gradients needs at least one step".into())),
        StepMethod::InputXGradient => (vec![1.0], vec![1.0]),
    };
    let n = alphas.len();
    let alpha = Tensor::from_vec(alphas.iter().map(|&a| a as f32).collect::<Vec<_>>(), (n, 1), &Device::Cpu)?;
    let points = Var::from_tensor(&alpha.broadcast_mul(&x)?)?;
    let logits = head.forward_eval(points.as_tensor())?;
    let y = logits.narrow(1, target, 1)?.sum_all()?;
    let grads = y.backward()?;
    let g = grads.get(points.as_tensor()).ok_or_else(|| TrainError::Invalid("the output does not depend on the sequence".into()))?;
    let w = Tensor::from_vec(weights.iter().map(|&w| w as f32).collect::<Vec<_>>(), (n, 1), &Device::Cpu)?;
    let integrated = g.broadcast_mul(&w)?.sum_keepdim(0)?;
    let attribution: Vec<f32> = x.mul(&integrated)?.flatten_all()?.to_vec1()?;
    Ok(attribution.chunks(dim).map(|c| c.iter().sum()).collect())
}

/// The temporal model seen as one explainable function of a patient's real visits
/// `[k, 3, H, W]` (time order, k ≤ seq_len): backbone features of each visit, left-padded to
/// `seq_len`, through the DNN. Its logits `[1, 2]` are returned as k identical rows divided by
/// k, so that the methods' sum over rows is exactly the sequence's logit and one backward pass
/// yields every visit's gradient.
pub struct VisitSequence<'a> {
    pub backbone: &'a Backbone,
    pub head: &'a Head,
    pub seq_len: usize,
}

impl Explainable for VisitSequence<'_> {
    type Context = TargetActivation;

    fn forward_to_layer(&self, input: &Tensor, mode: ReluMode) -> candle_core::Result<(Tensor, TargetActivation)> {
        let target = self.backbone.forward_to_target(input, mode).map_err(|e| candle_core::Error::msg(e.to_string()))?;
        Ok((target.map().clone(), target))
    }

    fn forward_from_layer(&self, activation: &Tensor, context: &TargetActivation, mode: ReluMode) -> candle_core::Result<Tensor> {
        let features = self.backbone.features_from_target(activation, context, mode).map_err(|e| candle_core::Error::msg(e.to_string()))?;
        let (k, d) = features.dims2()?;
        if k == 0 || k > self.seq_len {
            candle_core::bail!("{k} visits for a sequence length of {}", self.seq_len);
        }
        let sequence = if k < self.seq_len {
            let pad = Tensor::zeros((self.seq_len - k, d), features.dtype(), features.device())?;
            Tensor::cat(&[&pad, &features], 0)?
        } else {
            features
        };
        let logits = self.head.forward_eval(&sequence.reshape((1, self.seq_len * d))?).map_err(|e| candle_core::Error::msg(e.to_string()))?;
        let classes = logits.dim(1)?;
        (logits / k as f64)?.broadcast_as((k, classes))?.contiguous()
    }
}
