//! A backbone with its trained linear head (the probe checkpoint: `weight` [2, D], `bias` [2]),
//! explainable through [`tgc_explain::Explainable`].

use std::path::Path;

use candle_core::{DType, Tensor};
use tgc_explain::{Explainable, ReluMode};

use crate::backbone::{Backbone, TargetActivation};
use crate::error::{BackboneError, Result};

/// Backbone features followed by `Linear(D → classes)`.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub backbone: Backbone,
    weight: Tensor,
    bias: Tensor,
}

impl Classifier {
    /// Wraps a backbone with a head given as tensors `weight` [classes, D] and `bias` [classes].
    pub fn new(backbone: Backbone, weight: Tensor, bias: Tensor) -> Result<Self> {
        let d = backbone.feature_dim();
        let classes = weight.dim(0).unwrap_or(0);
        if weight.dims() != [classes, d] || bias.dims() != [classes] || classes == 0 {
            return Err(BackboneError::Shape {
                got: weight.dims().to_vec(),
                expected: format!("a head weight [classes, {d}] (with bias [classes], got {:?}) for {}", bias.dims(), backbone.kind()),
            });
        }
        let device = backbone.device().clone();
        Ok(Self { weight: weight.to_dtype(DType::F32)?.to_device(&device)?, bias: bias.to_dtype(DType::F32)?.to_device(&device)?, backbone })
    }

    /// Loads the head from a probe checkpoint (safetensors with `weight` and `bias`).
    pub fn load_head(backbone: Backbone, path: &Path) -> Result<Self> {
        let err = |message: String| BackboneError::Weights { source_name: path.display().to_string(), message };
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(|e| err(format!("cannot read the head: {e}")))?;
        let get = |k: &str| tensors.get(k).cloned().ok_or_else(|| err(format!("missing tensor `{k}` (a head holds `weight` [2, D] and `bias` [2])")));
        let (weight, bias) = (get("weight")?, get("bias")?);
        for (name, t) in [("weight", &weight), ("bias", &bias)] {
            if let Some((count, first)) = tgc_explain::non_finite(t)? {
                return Err(err(format!("tensor `{name}` holds {count} NaN or infinite value(s), first at flat index {first}")));
            }
        }
        let d = backbone.feature_dim();
        if weight.dims().len() != 2 || weight.dims()[1] != d || bias.dims() != [weight.dims()[0]] {
            return Err(err(format!(
                "head shapes weight {:?} / bias {:?} do not fit {} features of {}",
                weight.dims(),
                bias.dims(),
                d,
                backbone.kind()
            )));
        }
        Self::new(backbone, weight, bias)
    }

    /// Logits `[B, classes]` of a preprocessed batch.
    pub fn logits(&self, input: &Tensor) -> Result<Tensor> {
        self.head(&self.backbone.features(input)?)
    }

    fn head(&self, features: &Tensor) -> Result<Tensor> {
        Ok(features.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    pub fn head_weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn head_bias(&self) -> &Tensor {
        &self.bias
    }
}

fn to_candle(e: BackboneError) -> candle_core::Error {
    match e {
        BackboneError::Candle(e) => e,
        other => candle_core::Error::msg(other.to_string()),
    }
}

impl Explainable for Classifier {
    type Context = TargetActivation;

    fn forward_to_layer(&self, input: &Tensor, mode: ReluMode) -> candle_core::Result<(Tensor, TargetActivation)> {
        let target = self.backbone.forward_to_target(input, mode).map_err(to_candle)?;
        Ok((target.map().clone(), target))
    }

    fn forward_from_layer(&self, activation: &Tensor, context: &TargetActivation, mode: ReluMode) -> candle_core::Result<Tensor> {
        let features = self.backbone.features_from_target(activation, context, mode).map_err(to_candle)?;
        self.head(&features).map_err(to_candle)
    }

    fn relu_free_after_layer(&self) -> bool {
        self.backbone.relu_free_after_target()
    }
}
