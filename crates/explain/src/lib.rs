//! Attribution methods for any candle model, with Captum's and pytorch-grad-cam's semantics.
//!
//! A model implements [`Model`]: `forward(input, hooks) -> logits [B, classes]` for an input of
//! any rank (images `[B, C, H, W]`, volumes `[B, C, D, H, W]`, sequences `[B, T, F]`), written
//! once. Through [`Hooks`] the pass marks what a method may see or change — named layers for
//! the layer methods, ReLUs (and other nonlinearities, max-pools) for the guided, deconvolution and
//! DeepLift rules, attention maps for the transformer methods;
//! with no method listening every mark is the identity. Any function of tensors is a model
//! through [`FnModel`].
//!
//! Every method implements one trait, [`Attribute`] (`name`, `attribute`, which refuses NaN
//! and infinite results), and is a small value holding its settings; `attribute(&model, &input,
//! &targets)` returns an [`Attribution`] shaped like the input (`[B, 1, …spatial]` for the
//! layer methods). [`Method`] holds any of them, a user's own included, for [`NoiseTunnel`] and
//! for [`Method::attribute_all`], which runs several sharing their passes; [`METHODS`] lists the
//! built-in ones.
//!
//! - gradients: [`Saliency`], [`InputXGradient`], [`IntegratedGradients`], [`GradientShap`],
//!   [`GuidedBackprop`];
//! - layers: [`GradCam`], [`GuidedGradCam`], the CAM family ([`Cam`]: HiResCAM, Grad-CAM++,
//!   XGrad-CAM, LayerCAM, EigenCAM, EigenGradCAM, Score-CAM, Ablation-CAM);
//! - forward passes only, for any model (candle cannot differentiate every model: its fused
//!   `layer_norm`, `rms_norm` and `softmax_last_dim` record no backward pass): [`Occlusion`],
//!   [`FeatureAblation`], [`ShapleyValueSampling`], [`ShapleyValues`], [`KernelShap`],
//!   [`Lime`], [`FeaturePermutation`];
//! - transformers: [`AttentionRollout`], [`Chefer`];
//! - [`NoiseTunnel`] around any of them; faithfulness metrics in [`faithfulness`].
//!
//! Rendering (colormaps, overlays, PNG) lives in `render` behind the default `render`
//! feature. This crate knows nothing of any data set.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use tgc_explain::{Attribute, GradCam, GuidedBackprop, Hooks, Method, Model, Occlusion, Saliency};
//!
//! /// conv(1→2, 3×3) → ReLU → ["conv"] → mean → linear(2→2), written once.
//! struct Tiny { conv: Tensor, fc: Tensor }
//!
//! impl Model for Tiny {
//!     fn forward(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
//!         let a = hooks.relu(&x.conv2d(&self.conv, 1, 1, 1, 1)?)?; // a ReLU the guided methods may change
//!         let a = hooks.layer("conv", &a)?; // a layer the CAMs may read
//!         a.mean((2, 3))?.matmul(&self.fc.t()?)
//!     }
//!     fn layers(&self) -> Vec<String> {
//!         vec!["conv".into()]
//!     }
//! }
//!
//! # fn main() -> tgc_explain::Result<()> {
//! let cpu = Device::Cpu;
//! let model = Tiny { conv: Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &cpu)?, fc: Tensor::new(&[[1f32, -1.0], [-1.0, 1.0]], &cpu)? };
//! let x = Tensor::rand(0f32, 1.0, (1, 1, 8, 8), &cpu)?;
//! let cam = GradCam::new("conv").attribute(&model, &x, &[0])?;
//! assert_eq!(cam.attribution.dims(), &[1, 1, 8, 8]);
//! let methods = [Method::new(Saliency), Method::new(GuidedBackprop), Method::new(Occlusion { window: (2, 2), stride: (2, 2), ..Default::default() })];
//! for result in Method::attribute_all(&methods, &model, &x, &[0])? {
//!     assert_eq!(result.attribution.dims(), &[1, 1, 8, 8]);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A fuller example — a candle-nn CNN trained on generated images, explained at a chosen layer
//! with Grad-CAM, Integrated Gradients and Occlusion, saved as PNGs — is the crate's `own_cnn`
//! example; `candle_models` explains candle-transformers' own ResNet-18 and ViT.

#![warn(missing_docs)]

mod attention;
mod attribute;
mod cam;
mod catalog;
mod check;
mod custom_grad;
mod deeplift;
mod error;
pub mod faithfulness;
mod gradient;
mod interpolate;
mod layer_integrated;
mod model;
mod noise_tunnel;
#[cfg_attr(not(feature = "render"), allow(dead_code))]
mod normalize;
mod perturbation;
mod quadrature;
#[cfg(feature = "render")]
pub mod render;
mod rules;
mod shapley;
mod surrogate;

pub use attention::{AttentionRollout, Chefer, HeadFusion};
pub use attribute::{Attribute, Attribution, Method, Unchecked};
pub use cam::{Cam, CamKind};
pub use catalog::{method_info, MethodInfo, MethodSettings, Needs, METHODS};
pub use check::non_finite;
pub use custom_grad::{custom_backward, identity_with_backward};
pub use deeplift::{DeepLift, DeepLiftShap, DEEPLIFT_EPS};
pub use error::{ExplainError, Result};
pub use gradient::{
    auto_batch_rows, Baselines, Deconvolution, GradCam, GradientShap, GradientShapConfig, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
    IntegratedGradientsConfig, Saliency, AUTO_BATCH_VALUES,
};
pub use interpolate::{resize, upsample_bilinear, upsample_bilinear_align_corners, upsample_nearest, Interpolation};
pub use layer_integrated::LayerIntegratedGradients;
pub use model::{relu, FnModel, Hooks, LayerGradient, Model, ReluMode};
pub use noise_tunnel::{NoiseTunnel, NoiseTunnelType};
pub use perturbation::{Baseline, FeatureAblation, FeatureMask, Occlusion};
pub use quadrature::gauss_legendre_unit;
pub use rules::MaxPool2d;
pub use shapley::{FeaturePermutation, ShapleyValueSampling, ShapleyValues, MAX_EXACT_FEATURES};
pub use surrogate::{KernelShap, Lime};
