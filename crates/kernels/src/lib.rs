//! Fast CPU kernels, each with its backward pass, for candle models that are to be explained:
//! candle-nn's fused `layer_norm`, `softmax_last_dim` and `rms_norm` record no backward pass and
//! candle's `max_pool2d` refuses kernel ≠ stride, so a model built from them cannot give input
//! gradients. Entry points in [`ops`]: [`ops::Conv2d`] (im2col, banded and Winograd paths, with
//! a fused residual add and a ReLU whose backward follows an [`ops::ReluRule`]), [`ops::Linear`],
//! [`ops::LayerNorm`], [`ops::softmax_last_dim`], [`ops::multi_head_attention`],
//! [`ops::EncoderBlock`] (a whole ViT block), [`ops::gelu`], [`ops::relu`], [`ops::max_pool2d`];
//! [`vecmath`] picks the SIMD level and the matrix-product micro-kernels from the CPU;
//! [`denormals`] flushes denormal numbers to zero in every computing thread. One file
//! per op family; what two families share lives in `shared.rs`. Depends on candle only.

mod attention;
mod conv;
pub mod denormals;
mod elementwise;
mod encoder;
mod gemm;
mod matmul;
mod norm;
pub mod ops;
mod pool;
mod shared;
pub mod vecmath;
mod winograd;
