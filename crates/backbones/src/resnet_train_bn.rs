//! ResNet-18 as the study's `run.py` trains its probe: parameters frozen, but `model.train()`
//! is called every batch, so BatchNorm normalises with the **batch** statistics during training
//! and moves its running statistics towards them (momentum 0.1, unbiased variance), and the
//! evaluations use those drifted statistics. [`crate::resnet::ResNet18`] folds eval-mode
//! BatchNorm into the convolutions instead (a truly frozen backbone); this model keeps them
//! apart. No gradients flow into it: the probe trains on its outputs.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::layers::{Conv2d, Ops};

/// PyTorch's `BatchNorm2d` (affine, tracking running statistics).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub momentum: f64,
    pub eps: f64,
}

impl BatchNorm2d {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            running_mean: vb.get(channels, "running_mean")?,
            running_var: vb.get(channels, "running_var")?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// From explicit tensors (`[C]` each), with PyTorch's defaults (momentum 0.1, eps 1e-5).
    pub fn from_tensors(weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor) -> Self {
        Self { weight, bias, running_mean, running_var, momentum: 0.1, eps: 1e-5 }
    }

    fn affine(&self, x: &Tensor, mean: &Tensor, var: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let shape = (1, c, 1, 1);
        let scale = self.weight.div(&(var + self.eps)?.sqrt()?)?;
        let shift = self.bias.sub(&mean.mul(&scale)?)?;
        x.broadcast_mul(&scale.reshape(shape)?)?.broadcast_add(&shift.reshape(shape)?)
    }

    /// Training mode: normalise `[B, C, H, W]` with the batch's per-channel mean and biased
    /// variance; update the running statistics with the unbiased variance:
    /// `running ← (1 − momentum)·running + momentum·batch`.
    pub fn forward_train(&mut self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = b * h * w;
        if n < 2 {
            candle_core::bail!("BatchNorm2d in training mode needs more than one value per channel, got input {:?}", x.dims());
        }
        let flat = x.transpose(0, 1)?.reshape((c, n))?.to_dtype(DType::F64)?;
        let mean = flat.mean(D::Minus1)?;
        let centred = flat.broadcast_sub(&mean.unsqueeze(1)?)?;
        let biased = centred.sqr()?.mean(D::Minus1)?;
        let unbiased = (&biased * (n as f64 / (n - 1) as f64))?;
        let (mean, biased, unbiased) = (mean.to_dtype(x.dtype())?, biased.to_dtype(x.dtype())?, unbiased.to_dtype(x.dtype())?);
        let y = self.affine(x, &mean, &biased)?;
        let m = self.momentum;
        self.running_mean = ((&self.running_mean * (1.0 - m))? + (mean * m)?)?;
        self.running_var = ((&self.running_var * (1.0 - m))? + (unbiased * m)?)?;
        Ok(y)
    }

    /// Evaluation mode: the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.affine(x, &self.running_mean, &self.running_var)
    }
}

#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, (k, stride, padding): (usize, usize, usize), conv: VarBuilder, bn: VarBuilder, generic: bool) -> Result<Self> {
        Ok(Self { conv: Conv2d::new(conv.get((cout, cin, k, k), "weight")?, None, stride, padding, generic)?, bn: BatchNorm2d::new(cout, bn)? })
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv.forward(x)?;
        if train {
            self.bn.forward_train(&y)
        } else {
            self.bn.forward_eval(&y)
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    conv1: ConvBn,
    conv2: ConvBn,
    downsample: Option<ConvBn>,
}

/// ResNet-18 with separate BatchNorm layers in train or eval mode.
#[derive(Debug, Clone)]
pub struct StudyBnResNet18 {
    stem: ConvBn,
    blocks: Vec<(String, Block)>,
    generic: bool,
}

impl StudyBnResNet18 {
    /// Builds the model from torchvision-layout weights (the same keys as [`crate::ResNet18`]).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_ops(vb, Ops::Auto)
    }

    /// [`StudyBnResNet18::new`] with the convolutions and the max-pool run by `ops`.
    pub fn with_ops(vb: VarBuilder, ops: Ops) -> Result<Self> {
        let generic = ops.generic_on(vb.device());
        let stem = ConvBn::new(3, 64, (7, 2, 3), vb.pp("conv1"), vb.pp("bn1"), generic)?;
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (i, cout) in [64, 128, 256, 512].into_iter().enumerate() {
            for j in 0..2 {
                let name = format!("layer{}.{j}", i + 1);
                let b = vb.pp(&name);
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                let input = if j == 0 { cin } else { cout };
                let downsample = if stride != 1 || input != cout {
                    let d = b.pp("downsample");
                    Some(ConvBn::new(input, cout, (1, stride, 0), d.pp(0), d.pp(1), generic)?)
                } else {
                    None
                };
                let block = Block {
                    conv1: ConvBn::new(input, cout, (3, stride, 1), b.pp("conv1"), b.pp("bn1"), generic)?,
                    conv2: ConvBn::new(cout, cout, (3, 1, 1), b.pp("conv2"), b.pp("bn2"), generic)?,
                    downsample,
                };
                blocks.push((name, block));
            }
            cin = cout;
        }
        Ok(Self { stem, blocks, generic })
    }

    /// Loads the weights of `source` (hub, folder, file or `random:<seed>`).
    pub fn load(source: &crate::WeightSource) -> crate::Result<Self> {
        Self::load_on(source, &candle_core::Device::Cpu)
    }

    /// [`StudyBnResNet18::load`] on `device` (the device-generic ops off the CPU).
    pub fn load_on(source: &crate::WeightSource, device: &candle_core::Device) -> crate::Result<Self> {
        let weights = crate::load_weights(source, device)?;
        Self::new(weights.vb).map_err(|e| crate::BackboneError::Weights { source_name: source.to_string(), message: e.to_string() })
    }

    /// The 512-d features of `[B, 3, H, W]`; `train` uses and updates batch statistics.
    pub fn features(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward(x, train)?.relu()?;
        x = if self.generic { crate::generic::max_pool2d(&x, 3, 2, 1)? } else { tgc_kernels::ops::max_pool2d(&x, 3, 2, 1)? };
        for (_, block) in &mut self.blocks {
            let y = block.conv1.forward(&x, train)?.relu()?;
            let y = block.conv2.forward(&y, train)?;
            let shortcut = match &mut block.downsample {
                Some(d) => d.forward(&x, train)?,
                None => x.clone(),
            };
            x = (y + shortcut)?.relu()?;
        }
        x.mean((2, 3))
    }

    /// Every BatchNorm's running statistics under its checkpoint name
    /// (`layer1.0.bn1.running_mean`, …), to save or to restore with [`Self::load_running_stats`].
    pub fn running_stats(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        let mut put = |name: &str, bn: &BatchNorm2d| {
            out.insert(format!("{name}.running_mean"), bn.running_mean.clone());
            out.insert(format!("{name}.running_var"), bn.running_var.clone());
        };
        put("bn1", &self.stem.bn);
        for (name, b) in &self.blocks {
            put(&format!("{name}.bn1"), &b.conv1.bn);
            put(&format!("{name}.bn2"), &b.conv2.bn);
            if let Some(d) = &b.downsample {
                put(&format!("{name}.downsample.1"), &d.bn);
            }
        }
        out
    }

    /// Restores statistics taken by [`Self::running_stats`].
    pub fn load_running_stats(&mut self, stats: &HashMap<String, Tensor>) -> Result<()> {
        let get = |name: &str, bn: &mut BatchNorm2d| -> Result<()> {
            let find = |k: String| stats.get(&k).cloned().ok_or_else(|| candle_core::Error::msg(format!("running statistics lack `{k}`")));
            bn.running_mean = find(format!("{name}.running_mean"))?;
            bn.running_var = find(format!("{name}.running_var"))?;
            Ok(())
        };
        get("bn1", &mut self.stem.bn)?;
        for (name, b) in &mut self.blocks {
            get(&format!("{name}.bn1"), &mut b.conv1.bn)?;
            get(&format!("{name}.bn2"), &mut b.conv2.bn)?;
            if let Some(d) = &mut b.downsample {
                get(&format!("{name}.downsample.1"), &mut d.bn)?;
            }
        }
        Ok(())
    }
}
