//! A small 3-D ResNet-style classifier for volumes `[B, 1, D, H, W]`, to explain volumes from
//! the command line (`tgc explain --volume`) and in tests:
//!
//! ```text
//! stem   conv 3³ (1 → 8) + ReLU
//! block1 conv 3³ (8 → 8) + ReLU, conv 3³ (8 → 8), + input, ReLU
//! down   conv 3³ stride 2 (8 → 16) + ReLU
//! block2 conv 3³ (16 → 16) + ReLU, conv 3³ (16 → 16), + input, ReLU
//! head   mean over D, H, W; fc (16 → 2)
//! ```
//!
//! Checkpoint keys: `stem.{weight,bias}`, `block1.conv1.*`, `block1.conv2.*`, `down.*`,
//! `block2.conv1.*`, `block2.conv2.*`, `fc.{weight,bias}` (convolution weights
//! `[out, in, 3, 3, 3]`). The layers the explainers may split at are `stem`, `block1`, `down`
//! and `block2` (the default). Every ReLU follows the guided mode.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use tgc_explain::{Hooks, Model};

use crate::error::BackboneError;
use crate::weights::{load_weights, WeightSource, WeightsIdentity};

/// A 3-D convolution, kernel 3³, padding 1, as a sum over the kernel's depth of 2-D
/// convolutions of depth slices (candle has no 3-D convolution; each term is differentiable).
#[derive(Debug, Clone)]
struct Conv3d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
}

impl Conv3d {
    fn load(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get((c_out, c_in, 3, 3, 3), "weight")?, bias: vb.get(c_out, "bias")?, stride })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, d, h, w) = x.dims5()?;
        let c_out = self.weight.dim(0)?;
        let padded = x.pad_with_zeros(2, 1, 1)?;
        let d_out = (d + 2 - 3) / self.stride + 1;
        let mut sum: Option<Tensor> = None;
        for dz in 0..3 {
            let index: Vec<u32> = (0..d_out).map(|j| (dz + self.stride * j) as u32).collect();
            let planes = padded.index_select(&Tensor::new(index, x.device())?, 2)?.permute((0, 2, 1, 3, 4))?.reshape((b * d_out, c, h, w))?;
            let kernel = self.weight.narrow(2, dz, 1)?.squeeze(2)?.contiguous()?;
            // Off the CPU the im2col convolution, whose input gradient is a matrix product
            // (candle's CUDA conv2d backward is a naive transposed-convolution kernel).
            let term = if x.device().is_cpu() {
                planes.conv2d(&kernel, 1, self.stride, 1, 1)?
            } else {
                crate::generic::conv2d(&planes, &kernel, None, self.stride, 1)?
            };
            sum = Some(match sum {
                Some(s) => (s + term)?,
                None => term,
            });
        }
        let out = sum.expect("three kernel slices");
        let (_, _, ho, wo) = out.dims4()?;
        out.reshape((b, d_out, c_out, ho, wo))?.permute((0, 2, 1, 3, 4))?.broadcast_add(&self.bias.reshape((1, c_out, 1, 1, 1))?)
    }
}

#[derive(Debug, Clone)]
struct Block3d {
    conv1: Conv3d,
    conv2: Conv3d,
}

impl Block3d {
    fn load(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self { conv1: Conv3d::load(c, c, 1, vb.pp("conv1"))?, conv2: Conv3d::load(c, c, 1, vb.pp("conv2"))? })
    }

    fn forward(&self, x: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        let h = hooks.relu(&self.conv1.forward(x)?)?;
        hooks.relu(&(self.conv2.forward(&h)? + x)?)
    }
}

/// The 3-D model, with where its weights came from.
#[derive(Debug, Clone)]
pub struct ResNet3d {
    stem: Conv3d,
    block1: Block3d,
    down: Conv3d,
    block2: Block3d,
    fc_weight: Tensor,
    fc_bias: Tensor,
    identity: WeightsIdentity,
}

/// The marked layers, in forward order.
const LAYERS: [&str; 4] = ["stem", "block1", "down", "block2"];

impl ResNet3d {
    pub const CLASSES: usize = 2;

    /// Loads the model from a `.safetensors` file (or a folder holding `model.safetensors`) or
    /// builds it with `random:<seed>` weights (announced on screen by the caller). A missing or
    /// misshapen key is an error naming it.
    pub fn load(source: &WeightSource) -> crate::error::Result<Self> {
        Self::load_on(source, &candle_core::Device::Cpu)
    }

    /// [`ResNet3d::load`] with the weights on `device`.
    pub fn load_on(source: &WeightSource, device: &candle_core::Device) -> crate::error::Result<Self> {
        if matches!(source, WeightSource::Hub { .. }) {
            return Err(BackboneError::BadSource(format!("{source}: the 3-D model has no hub checkpoint; give a .safetensors file or random:<seed>")));
        }
        let weights = load_weights(source, device)?;
        let key_err = |e: candle_core::Error| BackboneError::Weights { source_name: source.to_string(), message: e.to_string() };
        let vb = weights.vb;
        let build = || -> Result<Self> {
            Ok(Self {
                stem: Conv3d::load(1, 8, 1, vb.pp("stem"))?,
                block1: Block3d::load(8, vb.pp("block1"))?,
                down: Conv3d::load(8, 16, 2, vb.pp("down"))?,
                block2: Block3d::load(16, vb.pp("block2"))?,
                fc_weight: vb.get((Self::CLASSES, 16), "fc.weight")?,
                fc_bias: vb.get(Self::CLASSES, "fc.bias")?,
                identity: weights.identity.clone(),
            })
        };
        build().map_err(key_err)
    }

    pub fn identity(&self) -> &WeightsIdentity {
        &self.identity
    }

    pub fn is_random(&self) -> bool {
        self.identity.random
    }
}

/// Logits `[B, 2]` of volumes `[B, 1, D, H, W]`; layers `stem`, `block1`, `down`, `block2`.
impl Model for ResNet3d {
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        match x.dims() {
            [_, 1, _, _, _] => {}
            dims => candle_core::bail!("the 3-D model takes volumes [B, 1, D, H, W], got {dims:?}"),
        }
        let h = hooks.layer("stem", &hooks.relu(&self.stem.forward(x)?)?)?;
        let h = hooks.layer("block1", &self.block1.forward(&h, hooks)?)?;
        let h = hooks.layer("down", &hooks.relu(&self.down.forward(&h)?)?)?;
        let h = hooks.layer("block2", &self.block2.forward(&h, hooks)?)?;
        tgc_kernels::ops::matmul(&tgc_kernels::ops::spatial_mean(&h.flatten_from(2)?.unsqueeze(3)?)?, &self.fc_weight.t()?)?.broadcast_add(&self.fc_bias)
    }

    fn layers(&self) -> Vec<String> {
        LAYERS.iter().map(|l| l.to_string()).collect()
    }
}
