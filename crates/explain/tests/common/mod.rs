//! The toy CNN the method tests explain: answers follow by hand.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use tgc_explain::{relu, Hooks, Model, ReluMode};

/// Deterministic values in [−0.5, 0.5) from a linear congruential generator.
pub fn pseudo(shape: &[usize], seed: u64) -> Tensor {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// conv(1→K, 3×3, pad 1) → ReLU (optional) → [target layer] → global average pool → fc(K→2).
pub struct Toy {
    pub conv_w: Tensor,
    pub conv_b: Tensor,
    pub fc_w: Tensor,
    pub fc_b: Tensor,
    pub relu: bool,
}

impl Toy {
    /// Four channels.
    pub fn new(seed: u64, relu: bool) -> Self {
        Self::with_channels(4, seed, relu)
    }

    pub fn with_channels(k: usize, seed: u64, relu: bool) -> Self {
        Self {
            conv_w: pseudo(&[k, 1, 3, 3], seed),
            conv_b: pseudo(&[1, k, 1, 1], seed + 1),
            fc_w: pseudo(&[2, k], seed + 2),
            fc_b: pseudo(&[2], seed + 3),
            relu,
        }
    }

    /// The target layer's activation, flattened.
    pub fn activation(&self, x: &Tensor) -> Vec<f32> {
        v(&self.to_layer(x, ReluMode::Standard).unwrap())
    }

    /// The pass to the layer `conv`.
    pub fn to_layer(&self, input: &Tensor, mode: ReluMode) -> candle_core::Result<Tensor> {
        let pre = input.conv2d(&self.conv_w, 1, 1, 1, 1)?.broadcast_add(&self.conv_b)?;
        if self.relu {
            relu(&pre, mode)
        } else {
            Ok(pre)
        }
    }

    /// The pass from the layer `conv` to the logits.
    pub fn from_layer(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        a.mean((2, 3))?.matmul(&self.fc_w.t()?)?.broadcast_add(&self.fc_b)
    }
}

impl Toy {
    /// The pass to the layer `conv`, marked.
    pub fn forward_to_layer(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let pre = input.conv2d(&self.conv_w, 1, 1, 1, 1)?.broadcast_add(&self.conv_b)?;
        let a = if self.relu { hooks.relu(&pre)? } else { pre };
        hooks.layer("conv", &a)
    }
}

impl Model for Toy {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        self.from_layer(&self.forward_to_layer(input, hooks)?)
    }

    fn layers(&self) -> Vec<String> {
        vec!["conv".into()]
    }
}

pub fn v(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}
