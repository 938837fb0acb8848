//! The kernels' public entry points in one place (each lives in the file of its op family).

pub use crate::attention::{multi_head_attention, scaled_softmax_last_dim, softmax_last_dim};
pub use crate::conv::{conv2d, Conv2d};
pub use crate::elementwise::{gelu, relu, ReluRule};
pub use crate::encoder::EncoderBlock;
pub use crate::matmul::{matmul, matmul_slices, Linear};
pub use crate::norm::LayerNorm;
pub use crate::pool::{max_pool2d, spatial_mean};
pub use crate::shared::DTYPE;
