//! Attribution methods for any differentiable candle model, with Captum's and
//! pytorch-grad-cam's semantics.
//!
//! A model implements [`Explainable`]: a forward pass to a target layer's activation, a forward
//! pass from that activation to the logits, and a ReLU mode switch for guided backpropagation.
//! A method is a small value holding its settings; `attribute(model, input, targets)` returns an
//! [`Attribution`] shaped like the input (`[B, C, H, W]`; `[B, 1, H, W]` for the CAMs).
//! Methods: [`GradCam`], [`GuidedBackprop`], [`GuidedGradCam`], [`GradientShap`], [`Saliency`],
//! [`InputXGradient`], [`IntegratedGradients`], the CAM family ([`Cam`]: HiResCAM, Grad-CAM++,
//! XGrad-CAM, LayerCAM, EigenCAM, EigenGradCAM, Score-CAM, Ablation-CAM), [`Occlusion`],
//! [`FeatureAblation`] and [`NoiseTunnel`] around any of them; [`Method::attribute_all`] runs
//! several sharing their passes. Rendering (colormaps, overlays, PNG) lives in [`render`]
//! behind the default `render` feature. This crate knows nothing of any data set.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use tgc_explain::{relu, Explainable, GradCam, Method, Occlusion, ReluMode, Saliency};
//!
//! /// conv(1→2, 3×3) → ReLU → [layer] → mean → linear(2→2)
//! struct Tiny { conv: Tensor, fc: Tensor }
//!
//! impl Explainable for Tiny {
//!     type Context = ();
//!     fn forward_to_layer(&self, x: &Tensor, mode: ReluMode) -> candle_core::Result<(Tensor, ())> {
//!         Ok((relu(&x.conv2d(&self.conv, 1, 1, 1, 1)?, mode)?, ()))
//!     }
//!     fn forward_from_layer(&self, a: &Tensor, _: &(), _: ReluMode) -> candle_core::Result<Tensor> {
//!         a.mean((2, 3))?.matmul(&self.fc.t()?)
//!     }
//! }
//!
//! # fn main() -> tgc_explain::Result<()> {
//! let cpu = Device::Cpu;
//! let model = Tiny { conv: Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &cpu)?, fc: Tensor::new(&[[1f32, -1.0], [-1.0, 1.0]], &cpu)? };
//! let x = Tensor::rand(0f32, 1.0, (1, 1, 8, 8), &cpu)?;
//! let cam = GradCam.attribute(&model, &x, &[0])?;
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

pub use cam::{Cam, CamKind};
pub use check::non_finite;
pub use error::{ExplainError, Result};
pub use interpolate::{upsample_bilinear, upsample_bilinear_align_corners, upsample_nearest};
pub use methods::{
    auto_batch_rows, Attribution, Baselines, GradCam, GradientShap, GradientShapConfig, GuidedBackprop, GuidedGradCam, InputXGradient,
    IntegratedGradients, IntegratedGradientsConfig, Method, Saliency, AUTO_BATCH_VALUES,
};
pub use model::{relu, Explainable, ReluMode};
pub use noise_tunnel::{NoiseTunnel, NoiseTunnelType};
pub use perturbation::{FeatureAblation, Occlusion};
pub use quadrature::gauss_legendre_unit;
