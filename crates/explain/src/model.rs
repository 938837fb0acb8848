//! The trait a model implements to be explained, its capabilities, and the closure adapter.

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

/// A differentiable classifier: logits `[B, classes]` of an input `[B, …]` of any rank —
/// images `[B, C, H, W]`, volumes `[B, C, D, H, W]`, sequences `[B, T, F]`. Samples of a batch
/// must not interact (eval mode), and the pass must be built from differentiable candle ops.
///
/// `forward` is all the gradient and perturbation methods need. Two capabilities are opt-in:
/// - **guided backpropagation** — [`Model::supports_guided`] returns true and every ReLU of the
///   model goes through [`relu`] with the `mode` it is given; the guided methods refuse a model
///   that does not declare it;
/// - **layers** — named split points for the layer methods (Grad-CAM and the CAM family):
///   [`Model::layers`] lists them and [`Model::split`] runs the pass to one of them, returning
///   the activation and the rest of the pass. The layer is chosen per call
///   (`GradCam::new("layer3")`); `GradCam::default()` takes [`Model::default_layer`].
///
/// A function of tensors is a model through [`FnModel`].
pub trait Model {
    /// The logits `[B, classes]`. `mode` is [`ReluMode::Guided`] only for a model that
    /// declares [`Model::supports_guided`]; others may ignore it.
    fn forward(&self, input: &Tensor, mode: ReluMode) -> candle_core::Result<Tensor>;

    /// Whether every ReLU follows `mode` (the guided methods need it). Default: no.
    fn supports_guided(&self) -> bool {
        false
    }

    /// The named split points, in forward order. Default: none.
    fn layers(&self) -> Vec<String> {
        Vec::new()
    }

    /// The layer the layer methods explain when none is named: by default the last split point.
    fn default_layer(&self) -> Option<String> {
        self.layers().pop()
    }

    /// The pass to `layer` in `mode`: the activation there (channels on axis 1, then the
    /// spatial axes: `[B, K, h, w]` or `[B, K, d, h, w]`) and the rest of the pass.
    fn split<'a>(&'a self, layer: &str, input: &Tensor, mode: ReluMode) -> candle_core::Result<Split<'a>> {
        let _ = (input, mode);
        candle_core::bail!("this model exposes no layers (asked for `{layer}`)")
    }

    /// Whether the pass after `layer` has no ReLU, so that the gradient at the layer is the
    /// same under both modes. When true, methods asked together (Grad-CAM with Guided Backprop
    /// or Guided Grad-CAM) take the layer's gradient and the guided input gradient from one
    /// guided backward pass. `false` (the default) is always safe.
    fn relu_free_after(&self, layer: &str) -> bool {
        let _ = layer;
        false
    }

    /// Opt-in: a transformer's attention, for [`crate::AttentionRollout`] and
    /// [`crate::Chefer`]. Runs the forward pass with every block's attention probabilities
    /// `[B, heads, T, T]` passed through `tap(block, probs)`, in block order, going on with what
    /// `tap` returns (the methods record the probabilities and hook their gradient). Token 0
    /// is the class token and tokens `1..=h·w` the patches of an `h × w` grid, row-major.
    /// Returns the logits and the grid; `None` (the default) for a model without attention.
    fn forward_attention(
        &self,
        input: &Tensor,
        tap: &mut dyn FnMut(usize, &Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Option<(Tensor, (usize, usize))>> {
        let _ = (input, tap);
        Ok(None)
    }
}

impl<M: Model + ?Sized> Model for &M {
    fn forward(&self, input: &Tensor, mode: ReluMode) -> candle_core::Result<Tensor> {
        (**self).forward(input, mode)
    }
    fn supports_guided(&self) -> bool {
        (**self).supports_guided()
    }
    fn layers(&self) -> Vec<String> {
        (**self).layers()
    }
    fn default_layer(&self) -> Option<String> {
        (**self).default_layer()
    }
    fn split<'a>(&'a self, layer: &str, input: &Tensor, mode: ReluMode) -> candle_core::Result<Split<'a>> {
        (**self).split(layer, input, mode)
    }
    fn relu_free_after(&self, layer: &str) -> bool {
        (**self).relu_free_after(layer)
    }
    fn forward_attention(
        &self,
        input: &Tensor,
        tap: &mut dyn FnMut(usize, &Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Option<(Tensor, (usize, usize))>> {
        (**self).forward_attention(input, tap)
    }
}

/// A model's pass cut at a layer: the activation there and the rest of the pass, a function
/// from (a tensor shaped like) the activation to the logits. The rest may hold tensors of the
/// batch it was cut from (a ViT's class token, say); a CAM that runs it on other batch sizes
/// falls back to one row at a time when it refuses them.
pub struct Split<'a> {
    pub activation: Tensor,
    rest: Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a>,
}

impl<'a> Split<'a> {
    pub fn new(activation: Tensor, rest: impl Fn(&Tensor) -> candle_core::Result<Tensor> + 'a) -> Self {
        Self { activation, rest: Box::new(rest) }
    }

    /// The logits from `activation` (the split's own, or one derived from it).
    pub fn rest(&self, activation: &Tensor) -> candle_core::Result<Tensor> {
        (self.rest)(activation)
    }
}

impl std::fmt::Debug for Split<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split").field("activation", &self.activation.dims()).finish_non_exhaustive()
    }
}

/// Any function of tensors as a [`Model`] (Captum's `forward_func`): the gradient and
/// perturbation methods explain it; it has no layers and no guided mode.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tgc_explain::{FnModel, Saliency};
/// let w = Tensor::new(&[[1f32, -2.0, 3.0]], &Device::Cpu)?; // one class, three features
/// let model = FnModel(|x: &Tensor| x.matmul(&w.t()?));
/// let x = Tensor::new(&[[1f32, 1.0, 1.0]], &Device::Cpu)?;
/// let saliency = Saliency.attribute(&model, &x, &[0])?.attribution;
/// assert_eq!(saliency.to_vec2::<f32>()?, vec![vec![1.0, 2.0, 3.0]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FnModel<F>(pub F);

impl<F: Fn(&Tensor) -> candle_core::Result<Tensor>> Model for FnModel<F> {
    fn forward(&self, input: &Tensor, _mode: ReluMode) -> candle_core::Result<Tensor> {
        (self.0)(input)
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
