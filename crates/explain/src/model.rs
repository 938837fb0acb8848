//! The small trait a model implements to be explained.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

/// How ReLUs propagate gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReluMode {
    /// The ordinary derivative: grad where the input was positive.
    #[default]
    Standard,
    /// Guided backpropagation (Springenberg et al., Captum's `GuidedBackprop`): the incoming
    /// gradient is clamped at zero as well, `relu(grad)` where the input was positive.
    Guided,
}

/// ReLU whose backward follows `mode`.
pub fn relu(x: &Tensor, mode: ReluMode) -> candle_core::Result<Tensor> {
    match mode {
        ReluMode::Standard => x.relu(),
        ReluMode::Guided => apply_identity(&x.relu()?, GuidedGrad),
    }
}

/// Applies an identity-forward op (whose point is its backward) on any device: its kernel is
/// CPU code, and the copies to and from the CPU are differentiable.
fn apply_identity(x: &Tensor, op: impl CustomOp1 + Send + Sync + 'static) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(op)
    } else {
        x.to_device(&candle_core::Device::Cpu)?.contiguous()?.apply_op1(op)?.to_device(x.device())
    }
}

/// The identity forward of [`GuidedGrad`] and [`Capture`]: a copy of the f32 input.
fn identity_forward(storage: &CpuStorage, layout: &Layout, what: &str) -> candle_core::Result<(CpuStorage, Shape)> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("{what}: only f32 is supported, got {:?}", other.dtype()),
    };
    let data = match layout.contiguous_offsets() {
        Some((start, end)) => &data[start..end],
        None => candle_core::bail!("{what}: input must be contiguous"),
    };
    Ok((CpuStorage::F32(data.to_vec()), layout.shape().clone()))
}

/// Identity forward; backward passes `relu(grad)`. Placed after a ReLU it turns the ReLU's
/// backward into guided backprop's rule.
struct GuidedGrad;

impl CustomOp1 for GuidedGrad {
    fn name(&self) -> &'static str {
        "guided-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        identity_forward(storage, layout, "guided ReLU")
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.relu()?))
    }
}

/// A differentiable classifier split at a target layer.
///
/// `forward_to_layer` maps an input batch `[B, C, H, W]` to the target layer's activation as a
/// map `[B, K, h, w]` plus whatever the rest of the pass needs (`Context`); `forward_from_layer`
/// continues from a map of that shape (the activation itself, or a tensor derived from it) to
/// the logits `[B, classes]`. Both must be built from differentiable candle ops, and every ReLU
/// must follow `mode`. Samples of a batch must not interact (eval mode).
pub trait Explainable {
    type Context;

    fn forward_to_layer(&self, input: &Tensor, mode: ReluMode) -> candle_core::Result<(Tensor, Self::Context)>;

    fn forward_from_layer(&self, activation: &Tensor, context: &Self::Context, mode: ReluMode) -> candle_core::Result<Tensor>;

    /// Whether the pass after the target layer contains no ReLU, so that the gradient at the
    /// layer is the same under both modes. When true, methods asked together (Grad-CAM with
    /// Guided Backprop or Guided Grad-CAM) take the layer's gradient and the guided input
    /// gradient from one guided backward pass. `false` (the default) is always safe.
    fn relu_free_after_layer(&self) -> bool {
        false
    }

    /// The whole forward pass.
    fn forward(&self, input: &Tensor, mode: ReluMode) -> candle_core::Result<Tensor> {
        let (activation, context) = self.forward_to_layer(input, mode)?;
        self.forward_from_layer(&activation, &context, mode)
    }
}

/// Identity forward that records the gradient flowing back through it (PyTorch's tensor
/// hook): the gradient at an intermediate tensor, which candle's backward pass does not keep.
pub(crate) fn capture_gradient(x: &Tensor) -> candle_core::Result<(Tensor, GradientSlot)> {
    let slot = GradientSlot::default();
    Ok((apply_identity(x, Capture(slot.clone()))?, slot))
}

/// Where [`capture_gradient`] leaves the gradient.
#[derive(Clone, Default)]
pub(crate) struct GradientSlot(std::sync::Arc<std::sync::Mutex<Option<Tensor>>>);

impl GradientSlot {
    pub(crate) fn take(&self) -> Option<Tensor> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

struct Capture(GradientSlot);

impl CustomOp1 for Capture {
    fn name(&self) -> &'static str {
        "capture-gradient"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        identity_forward(storage, layout, "gradient capture")
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if let Ok(mut slot) = (self.0).0.lock() {
            *slot = Some(grad_res.clone());
        }
        Ok(Some(grad_res.clone()))
    }
}
