//! Frozen image backbones on candle: ResNet-18 ([`resnet`]) and ViT ([`vit`]) built from
//! Hugging Face checkpoints ([`WeightSource`]), the study's preprocessing ([`Preprocess`]),
//! penultimate features, and one forward pass that marks its layers, ReLUs, max-pool and
//! attention for the explainers (`tgc-explain`'s `Hooks`), differentiable to the input (the
//! kernels of `tgc-kernels`). Entry point: [`Backbone::load`]. [`resnet_train_bn`] is ResNet-18 with
//! BatchNorm in training mode, as the study's training loop ran it.

mod backbone;
mod classifier;
mod error;
pub mod extract;
pub mod generic;
mod layers;
mod preprocess;
mod random_init;
pub mod resnet;
mod resnet3d;
pub mod resnet_train_bn;
pub mod vit;
mod weights;

pub use backbone::{Backbone, BackboneKind, LoadOptions, Randomize};
pub use classifier::Classifier;
pub use error::{BackboneError, Result};
pub use layers::{device_name, Ops};

pub use preprocess::{resize_bilinear_aa, shorter_side_size, Preprocess};
pub use resnet3d::ResNet3d;
pub use weights::{hub_cache, load_weights, LoadedWeights, WeightSource, WeightsIdentity};
