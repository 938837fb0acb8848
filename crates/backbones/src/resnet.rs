//! ResNet-18 in torchvision's layout (`timm/resnet18.tv_in1k`): `conv1`, `bn1`,
//! `layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}`, `layer{2,3,4}.0.downsample.{0,1}`, optional `fc`.
//!
//! BatchNorm runs in eval mode (running statistics, eps 1e-5) and is folded into the preceding
//! convolution at load time: `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`, which is the same
//! function with one pass over the activations fewer. The stem max-pool is 3×3, stride 2,
//! padding 1 with PyTorch's semantics (see [`tgc_kernels::ops::max_pool2d`]).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use tgc_explain::{Hooks, MaxPool2d, ReluMode};

use tgc_kernels::ops::{max_pool2d, ReluRule};

use crate::generic;
use crate::layers::{Conv2d, Ops};

const BN_EPS: f64 = 1e-5;

/// The stem's max-pool: 3×3, stride 2, padding 1.
const STEM_POOL: MaxPool2d = MaxPool2d { kernel: 3, stride: 2, padding: 1 };

/// A convolution without bias followed by eval-mode BatchNorm, folded into one convolution.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, (k, stride, padding): (usize, usize, usize), conv: VarBuilder, bn: VarBuilder, generic: bool) -> Result<Self> {
        let w = conv.get((cout, cin, k, k), "weight")?;
        let gamma = bn.get(cout, "weight")?;
        let beta = bn.get(cout, "bias")?;
        let mean = bn.get(cout, "running_mean")?;
        let var = bn.get(cout, "running_var")?;
        if var.min(0)?.to_scalar::<f32>()? < 0.0 {
            candle_core::bail!("`{}.running_var` holds a negative variance", bn.prefix());
        }
        let scale = gamma.div(&(var + BN_EPS)?.sqrt()?)?;
        let weight = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
        let bias = beta.sub(&mean.mul(&scale)?)?;
        Ok(Self { conv: Conv2d::new(weight, Some(bias), stride, padding, generic)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }

    /// `relu(conv(x) + residual)` with the add and the ReLU fused into the convolution (a ReLU
    /// marked in `hooks`, whose backward rule the fused kernel follows), or the ReLU as an op
    /// of its own when the method needs one (DeepLift).
    fn forward_relu(&self, x: &Tensor, residual: Option<&Tensor>, hooks: &Hooks) -> Result<Tensor> {
        let Conv2d::Kernel(conv) = &self.conv else {
            let y = self.conv.forward(x)?;
            return hooks.relu(&match residual {
                Some(r) => (y + r)?,
                None => y,
            });
        };
        match hooks.relu_mode() {
            Some(mode) => conv.forward_fused(x, residual, Some(relu_rule(mode))),
            None => hooks.relu(&conv.forward_fused(x, residual, None)?),
        }
    }
}

/// The kernels' name for the backward rule an explainer asks of a ReLU.
fn relu_rule(mode: ReluMode) -> ReluRule {
    match mode {
        ReluMode::Standard => ReluRule::Standard,
        ReluMode::Guided => ReluRule::Guided,
        ReluMode::Deconvolution => ReluRule::Deconvolution,
    }
}

#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    downsample: Option<ConvBn>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder, generic: bool) -> Result<Self> {
        let conv1 = ConvBn::new(cin, cout, (3, stride, 1), vb.pp("conv1"), vb.pp("bn1"), generic)?;
        let conv2 = ConvBn::new(cout, cout, (3, 1, 1), vb.pp("conv2"), vb.pp("bn2"), generic)?;
        let downsample = if stride != 1 || cin != cout {
            let d = vb.pp("downsample");
            Some(ConvBn::new(cin, cout, (1, stride, 0), d.pp(0), d.pp(1), generic)?)
        } else {
            None
        };
        Ok(Self { conv1, conv2, downsample })
    }

    /// The block; torchvision's BasicBlock calls its ReLU twice, so two ReLUs are marked.
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        let y = self.conv1.forward_relu(x, None, hooks)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        self.conv2.forward_relu(&y, Some(&shortcut), hooks)
    }
}

/// ResNet-18. Input `[B, 3, H, W]`; `layer4` is `[B, 512, H/32, W/32]`; features `[B, 512]`.
#[derive(Debug, Clone)]
pub struct ResNet18 {
    stem: ConvBn,
    layers: Vec<Vec<BasicBlock>>,
    fc: Option<candle_nn::Linear>,
    generic: bool,
}

impl ResNet18 {
    pub const FEATURE_DIM: usize = 512;

    /// Builds the model on the weights' device, the CPU kernels on the CPU; `fc` (the
    /// ImageNet classifier) is loaded when the weights have it.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Self::with_ops(vb, Ops::Auto)
    }

    /// [`ResNet18::new`] with the layers run by `ops`.
    pub fn with_ops(vb: VarBuilder, ops: Ops) -> Result<Self> {
        let generic = ops.generic_on(vb.device());
        let stem = ConvBn::new(3, 64, (7, 2, 3), vb.pp("conv1"), vb.pp("bn1"), generic)?;
        let mut layers = Vec::new();
        let mut cin = 64;
        for (i, cout) in [64, 128, 256, 512].into_iter().enumerate() {
            let vb_layer = vb.pp(format!("layer{}", i + 1));
            let stride = if i == 0 { 1 } else { 2 };
            let blocks = vec![BasicBlock::new(cin, cout, stride, vb_layer.pp(0), generic)?, BasicBlock::new(cout, cout, 1, vb_layer.pp(1), generic)?];
            layers.push(blocks);
            cin = cout;
        }
        let fc = if vb.contains_tensor("fc.weight") {
            let classes = vb.pp("fc").get_unchecked("weight")?.dim(0)?;
            Some(candle_nn::linear(512, classes, vb.pp("fc"))?)
        } else {
            None
        };
        Ok(Self { stem, layers, fc, generic })
    }

    /// Number of stages (`layer1` … `layer4`).
    pub const STAGES: usize = 4;

    /// The 512-d penultimate features (global average pooling of `layer4`), the stages' outputs
    /// (after their last ReLU) marked as layers `layer1` … `layer4`, every ReLU and the stem's
    /// max-pool marked.
    pub fn forward(&self, x: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        let mut x = self.stem.forward_relu(x, None, hooks)?;
        let MaxPool2d { kernel, stride, padding } = STEM_POOL;
        x = hooks.max_pool2d(&x, STEM_POOL, |x| {
            if self.generic {
                generic::max_pool2d(x, kernel, stride, padding)
            } else {
                max_pool2d(x, kernel, stride, padding)
            }
        })?;
        for (i, stage) in self.layers.iter().enumerate() {
            for block in stage {
                x = block.forward(&x, hooks)?;
            }
            x = hooks.layer(&format!("layer{}", i + 1), &x)?;
        }
        tgc_kernels::ops::spatial_mean(&x)
    }

    /// The features of a plain pass.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x, &Hooks::none())
    }

    /// The checkpoint's own classifier (`fc`) applied to features, when it has one.
    pub fn classifier(&self) -> Option<&candle_nn::Linear> {
        self.fc.as_ref()
    }

    /// ImageNet logits through `fc` (for parity checks with other implementations).
    pub fn logits(&self, x: &Tensor) -> Result<Option<Tensor>> {
        match &self.fc {
            Some(fc) => Ok(Some(fc.forward(&self.features(x)?)?)),
            None => Ok(None),
        }
    }
}
