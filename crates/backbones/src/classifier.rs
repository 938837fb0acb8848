//! A backbone with its trained linear head (the probe checkpoint: `weight` [2, D], `bias` [2]),
//! explainable through [`tgc_explain::Model`].

use std::path::Path;

use candle_core::{DType, Tensor};
use tgc_explain::{Hooks, Model};

use crate::backbone::Backbone;
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
            return Err(err(format!("head shapes weight {:?} / bias {:?} do not fit {} features of {}", weight.dims(), bias.dims(), d, backbone.kind())));
        }
        Self::new(backbone, weight, bias)
    }

    /// Logits `[B, classes]` of a preprocessed batch.
    pub fn logits(&self, input: &Tensor) -> Result<Tensor> {
        self.head(&self.backbone.features(input)?)
    }

    fn head(&self, features: &Tensor) -> Result<Tensor> {
        Ok(tgc_kernels::ops::matmul(features, &self.weight.t()?)?.broadcast_add(&self.bias)?)
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

/// Logits of a preprocessed batch `[B, 3, H, W]`, the backbone's marks (its layers, ReLUs and
/// attention) for the explainers; the layers are the backbone's (`layer1`…`layer4`,
/// `block0`…), the default the last.
impl Model for Classifier {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        self.head(&self.backbone.forward(input, hooks).map_err(to_candle)?).map_err(to_candle)
    }

    fn layers(&self) -> Vec<String> {
        self.backbone.layer_names()
    }

    fn default_layer(&self) -> Option<String> {
        Some(self.backbone.last_layer())
    }
}
