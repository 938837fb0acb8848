//! Attribution methods for any differentiable candle model, with Captum's semantics.
//!
//! A model implements [`Explainable`]: a forward pass to a target layer's activation, a forward
//! pass from that activation to the logits, and a ReLU mode switch for guided backpropagation.
//! A method is a small value holding its settings; `attribute(model, input, targets)` returns an
//! [`Attribution`] shaped like the input (`[B, C, H, W]`; `[B, 1, H, W]` for Grad-CAM).
//! Methods: [`GradCam`], [`GuidedBackprop`], [`GuidedGradCam`], [`GradientShap`], [`Saliency`],
//! [`InputXGradient`], [`IntegratedGradients`]. Rendering (colormaps, overlays, PNG) lives in
//! [`render`] behind the default `render` feature. This crate knows nothing of any data set.

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
