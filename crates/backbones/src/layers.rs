//! The models' layers, each run by one of two implementations chosen at load time: the CPU
//! kernels of `tgc-kernels` (fused, Winograd, packed weights) or the device-generic ops of
//! [`crate::generic`]. The models are written once against these types.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::generic;

/// Which implementation runs a model's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ops {
    /// The CPU kernels on the CPU, the device-generic ops on any other device.
    #[default]
    Auto,
    /// The device-generic ops on every device: candle's tensor ops only (what a GPU runs; on
    /// the CPU, slower, and equal to the kernels to ~1e-6 — the tests check it).
    Generic,
}

impl Ops {
    /// Whether the device-generic ops run on `device`.
    pub fn generic_on(self, device: &Device) -> bool {
        self == Self::Generic || !device.is_cpu()
    }
}

/// A device as the command line names it: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// `nn.Linear` with constant weights.
#[derive(Debug, Clone)]
pub(crate) enum Linear {
    Kernel(tgc_kernels::ops::Linear),
    Generic { weight: Tensor, bias: Option<Tensor> },
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>, generic: bool) -> Result<Self> {
        weight.dims2()?;
        Ok(if generic { Self::Generic { weight, bias } } else { Self::Kernel(tgc_kernels::ops::Linear::new(weight, bias)?) })
    }

    /// Loads `weight` `[out, inp]` and, when `with_bias`, `bias` from a `VarBuilder`.
    pub(crate) fn load(inp: usize, out: usize, with_bias: bool, vb: VarBuilder, generic: bool) -> Result<Self> {
        let bias = if with_bias { Some(vb.get(out, "bias")?) } else { None };
        Self::new(vb.get((out, inp), "weight")?, bias, generic)
    }

    /// Several layers on the same input as one, outputs side by side.
    pub(crate) fn concat(layers: &[Linear]) -> Result<Self> {
        match layers {
            [Self::Generic { .. }, ..] => {
                let mut weights = Vec::new();
                let mut biases = Some(Vec::new());
                for l in layers {
                    let Self::Generic { weight, bias } = l else { candle_core::bail!("linear: concatenating layers of both implementations") };
                    weights.push(weight);
                    match (bias, biases.as_mut()) {
                        (Some(b), Some(bs)) => bs.push(b),
                        _ => biases = None,
                    }
                }
                let bias = biases.map(|b| Tensor::cat(&b, 0)).transpose()?;
                Ok(Self::Generic { weight: Tensor::cat(&weights, 0)?, bias })
            }
            _ => {
                let kernels = layers
                    .iter()
                    .map(|l| l.kernel().cloned().ok_or_else(|| candle_core::Error::msg("linear: concatenating layers of both implementations")))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Self::Kernel(tgc_kernels::ops::Linear::concat(&kernels)?))
            }
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Kernel(k) => k.forward(x),
            Self::Generic { weight, bias } => generic::linear(x, weight, bias.as_ref()),
        }
    }

    /// The CPU kernel, when this layer runs one (for the fused blocks).
    pub(crate) fn kernel(&self) -> Option<&tgc_kernels::ops::Linear> {
        match self {
            Self::Kernel(k) => Some(k),
            Self::Generic { .. } => None,
        }
    }
}

/// LayerNorm over the last axis with constant affine parameters.
#[derive(Debug, Clone)]
pub(crate) enum LayerNorm {
    Kernel(tgc_kernels::ops::LayerNorm),
    Generic { weight: Tensor, bias: Tensor, eps: f64 },
}

impl LayerNorm {
    pub(crate) fn new(size: usize, eps: f64, vb: VarBuilder, generic: bool) -> Result<Self> {
        Ok(if generic {
            Self::Generic { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps }
        } else {
            Self::Kernel(tgc_kernels::ops::LayerNorm::new(size, eps, vb)?)
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Kernel(k) => k.forward(x),
            Self::Generic { weight, bias, eps } => generic::layer_norm(x, weight, bias, *eps),
        }
    }

    pub(crate) fn kernel(&self) -> Option<&tgc_kernels::ops::LayerNorm> {
        match self {
            Self::Kernel(k) => Some(k),
            Self::Generic { .. } => None,
        }
    }
}

/// A 2-D convolution with constant weights `[O, C, k, k]` and bias, zero padding.
#[derive(Debug, Clone)]
pub(crate) enum Conv2d {
    Kernel(tgc_kernels::ops::Conv2d),
    Generic { weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize },
}

impl Conv2d {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize, generic: bool) -> Result<Self> {
        Ok(if generic {
            weight.dims4()?;
            Self::Generic { weight, bias, stride, padding }
        } else {
            Self::Kernel(tgc_kernels::ops::Conv2d::new(weight, bias, stride, padding)?)
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Kernel(k) => k.forward(x),
            Self::Generic { weight, bias, stride, padding } => generic::conv2d(x, weight, bias.as_ref(), *stride, *padding),
        }
    }
}
