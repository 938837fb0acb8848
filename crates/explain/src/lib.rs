//! Attribution methods for any differentiable candle model, with Captum's and
//! pytorch-grad-cam's semantics.
//!
//! A model implements [`Model`]: `forward(input) -> logits [B, classes]` for an input of any
//! rank (images `[B, C, H, W]`, volumes `[B, C, D, H, W]`, sequences `[B, T, F]`) — enough for
//! the gradient and perturbation methods; any function of tensors is one through [`FnModel`].
//! Two capabilities are opt-in: named layers ([`Model::split`]) for the layer methods, which
//! take the layer per call (`GradCam::new("conv")`), and guided ReLUs
//! ([`Model::supports_guided`]) for Guided Backprop and Guided Grad-CAM.
//! A method is a small value holding its settings; `attribute(model, input, targets)` returns an
//! [`Attribution`] shaped like the input (`[B, 1, …spatial]` for the layer methods).
//! Methods: [`GradCam`], [`GuidedBackprop`], [`GuidedGradCam`], [`GradientShap`], [`Saliency`],
//! [`InputXGradient`], [`IntegratedGradients`], the CAM family ([`Cam`]: HiResCAM, Grad-CAM++,
//! XGrad-CAM, LayerCAM, EigenCAM, EigenGradCAM, Score-CAM, Ablation-CAM), [`Occlusion`],
//! [`FeatureAblation`], [`NoiseTunnel`] around any of them, and for transformers
//! [`AttentionRollout`] and [`Chefer`]; [`Method::attribute_all`] runs
//! several sharing their passes. Rendering (colormaps, overlays, PNG) lives in [`render`]
//! behind the default `render` feature. This crate knows nothing of any data set.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use tgc_explain::{relu, GradCam, Method, Model, Occlusion, ReluMode, Saliency, Split};
//!
//! /// conv(1→2, 3×3) → ReLU → ["conv"] → mean → linear(2→2)
//! struct Tiny { conv: Tensor, fc: Tensor }
//!
//! impl Tiny {
//!     fn head(&self, a: &Tensor) -> candle_core::Result<Tensor> {
//!         a.mean((2, 3))?.matmul(&self.fc.t()?)
//!     }
//! }
//!
//! impl Model for Tiny {
//!     fn forward(&self, x: &Tensor, mode: ReluMode) -> candle_core::Result<Tensor> {
//!         self.head(&relu(&x.conv2d(&self.conv, 1, 1, 1, 1)?, mode)?)
//!     }
//!     fn supports_guided(&self) -> bool {
//!         true // every ReLU goes through tgc_explain::relu
//!     }
//!     fn layers(&self) -> Vec<String> {
//!         vec!["conv".into()]
//!     }
//!     fn split<'a>(&'a self, layer: &str, x: &Tensor, mode: ReluMode) -> candle_core::Result<Split<'a>> {
//!         assert_eq!(layer, "conv");
//!         Ok(Split::new(relu(&x.conv2d(&self.conv, 1, 1, 1, 1)?, mode)?, |a| self.head(a)))
//!     }
//! }
//!
//! # fn main() -> tgc_explain::Result<()> {
//! let cpu = Device::Cpu;
//! let model = Tiny { conv: Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &cpu)?, fc: Tensor::new(&[[1f32, -1.0], [-1.0, 1.0]], &cpu)? };
//! let x = Tensor::rand(0f32, 1.0, (1, 1, 8, 8), &cpu)?;
//! let cam = GradCam::new("conv").attribute(&model, &x, &[0])?;
//! assert_eq!(cam.attribution.dims(), &[1, 1, 8, 8]);
//! let methods = [Method::Saliency(Saliency), Method::Occlusion(Occlusion { window: (2, 2), stride: (2, 2), ..Default::default() })];
//! for result in Method::attribute_all(&methods, &model, &x, &[0])? {
//!     assert_eq!(result.attribution.dims(), &[1, 1, 8, 8]);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A fuller example — a candle-nn CNN trained on generated images, explained at a chosen layer
//! with Grad-CAM, Integrated Gradients and Occlusion, saved as PNGs — is
//! `cargo run --release -p tgc-explain --example own_cnn` (see the crate's README).

mod attention;
mod cam;
mod check;
mod error;
pub mod faithfulness;
mod interpolate;
mod methods;
mod model;
mod noise_tunnel;
mod perturbation;
mod quadrature;
#[cfg(feature = "render")]
pub mod render;

pub use attention::{AttentionRollout, Chefer, HeadFusion};
pub use cam::{Cam, CamKind};
pub use check::non_finite;
pub use error::{ExplainError, Result};
pub use interpolate::{resize, upsample_bilinear, upsample_bilinear_align_corners, upsample_nearest, Interpolation};
pub use methods::{
    auto_batch_rows, Attribution, Baselines, GradCam, GradientShap, GradientShapConfig, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
    IntegratedGradientsConfig, Method, Saliency, AUTO_BATCH_VALUES,
};
pub use model::{relu, FnModel, Model, ReluMode, Split};
pub use noise_tunnel::{NoiseTunnel, NoiseTunnelType};
pub use perturbation::{FeatureAblation, FeatureMask, Occlusion};
pub use quadrature::gauss_legendre_unit;
