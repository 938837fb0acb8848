//! The trait a model implements to be explained, and [`Hooks`]: the marks a model's single
//! forward pass makes for the methods to read or change.
//!
//! A model writes its pass once and says, at the places a method may care about, "here is
//! layer `layer4`", "here is a ReLU", "here are block 3's attention probabilities". With no
//! method listening ([`Hooks::none`]) each mark returns its input unchanged and costs nothing;
//! a method builds a [`Hooks`] that watches what it needs (a layer's activation and gradient,
//! a replaced activation, guided ReLUs, the attention maps) and reads the results after the
//! pass — PyTorch's module hooks, without hooks.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{Tensor, Var};

use crate::custom_grad::{custom_backward, identity_with_backward};

use crate::rules::{DeepLiftPass, MaxPool2d};

/// How ReLUs propagate gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReluMode {
    /// The ordinary derivative: grad where the input was positive.
    #[default]
    Standard,
    /// Guided backpropagation (Springenberg et al., Captum's `GuidedBackprop`): the incoming
    /// gradient is clamped at zero as well, `relu(grad)` where the input was positive.
    Guided,
    /// Deconvolution (Zeiler & Fergus, Captum's `Deconvolution`): `relu(grad)` whatever the
    /// input was — the forward mask is ignored.
    Deconvolution,
}

/// ReLU whose backward follows `mode` (what [`Hooks::relu`] applies), on any device. The
/// gradient is PyTorch's: zero where the input is zero (candle's own `relu` backward passes it
/// there, which matters wherever a zero input and a zero bias make exact zeros — the background
/// of a slice under weights with zero BatchNorm shifts).
pub fn relu(x: &Tensor, mode: ReluMode) -> candle_core::Result<Tensor> {
    let value = x.relu()?;
    if mode == ReluMode::Deconvolution {
        // The gradient clamped whatever the input was.
        return custom_backward(x, &value, |g| g.relu());
    }
    let open = x.detach().gt(0f64)?.to_dtype(x.dtype())?;
    match mode {
        ReluMode::Guided => custom_backward(x, &value, move |g| g.relu()?.mul(&open)),
        _ => custom_backward(x, &value, move |g| g.mul(&open)),
    }
}

/// A differentiable classifier: logits `[B, classes]` of an input `[B, …]` of any rank —
/// images `[B, C, H, W]`, volumes `[B, C, D, H, W]`, sequences `[B, T, F]`. Samples of a batch
/// must not interact (eval mode), and the pass must be built from differentiable candle ops.
///
/// `forward` is written once and marks, through `hooks`, what the methods may see or change:
/// - **layers** — `hooks.layer("layer4", &a)` (a map `[B, K, …spatial]`) or
///   `hooks.token_layer("block11", &tokens, grid)` (a transformer's tokens `[B, T, D]`, read as
///   a map of the patch tokens) for Grad-CAM and the CAM family; go on with what they return;
/// - **ReLUs** — `hooks.relu(&x)` (or [`Hooks::relu_mode`] where a kernel of your own applies
///   the ReLU) for Guided Backprop and Guided Grad-CAM; a model that marks nothing at all is
///   refused by them, one that marks layers but no ReLU is taken to have none (its guided
///   gradient is its gradient, as Captum's is on a model without ReLU modules);
/// - **attention** — `hooks.attention(&probs, grid)` for [`crate::AttentionRollout`] and
///   [`crate::Chefer`];
/// - a tensor made before a marked layer and used after it goes through [`Hooks::carry`].
///
/// A model with no marks explains with the gradient and perturbation methods; any function of
/// tensors is one through [`FnModel`].
pub trait Model {
    /// The logits `[B, classes]`, the pass marking its layers, ReLUs and attention in `hooks`.
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor>;

    /// The layers the pass marks, in forward order (for listings and the default layer).
    /// Default: none listed.
    fn layers(&self) -> Vec<String> {
        Vec::new()
    }

    /// The layer the layer methods explain when none is named: by default the last listed.
    fn default_layer(&self) -> Option<String> {
        self.layers().pop()
    }
}

impl<M: Model + ?Sized> Model for &M {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        (**self).forward(input, hooks)
    }
    fn layers(&self) -> Vec<String> {
        (**self).layers()
    }
    fn default_layer(&self) -> Option<String> {
        (**self).default_layer()
    }
}

impl<M: Model + ?Sized> Model for Box<M> {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        (**self).forward(input, hooks)
    }
    fn layers(&self) -> Vec<String> {
        (**self).layers()
    }
    fn default_layer(&self) -> Option<String> {
        (**self).default_layer()
    }
}

/// Any function of tensors as a [`Model`] (Captum's `forward_func`): the gradient and
/// perturbation methods explain it; it marks no layers and no ReLUs.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tgc_explain::{Attribute, FnModel, Saliency};
/// let w = Tensor::new(&[[1f32, -2.0, 3.0]], &Device::Cpu)?; // one class, three features
/// let model = FnModel(|x: &Tensor| x.matmul(&w.t()?));
/// let x = Tensor::new(&[[1f32, 1.0, 1.0]], &Device::Cpu)?;
/// let saliency = Saliency.attribute(&model, &x, &[0])?.attribution;
/// assert_eq!(saliency.to_vec2::<f32>()?, vec![vec![1.0, 2.0, 3.0]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FnModel<F>(pub F);

impl<F: Fn(&Tensor) -> candle_core::Result<Tensor>> Model for FnModel<F> {
    fn forward(&self, input: &Tensor, _hooks: &Hooks) -> candle_core::Result<Tensor> {
        (self.0)(input)
    }
}

/// What a method does at the watched layer's gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerGradient {
    /// No gradient: the activation only.
    #[default]
    None,
    /// The activation becomes a leaf of the graph: the backward pass stops there (the
    /// layer's gradient, cheaply; no input gradient).
    Cut,
    /// The gradient is recorded as it passes: both the layer's and the input's gradient.
    Through,
}

/// A replacement of the watched layer's activation `[B, …]` by `[B·r, …]` (`r` rows per
/// sample, sample-major): the rest of the pass runs on the replacement.
type Replace = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// What a method asked to watch.
#[derive(Default)]
struct Plan {
    relu: ReluMode,
    layer: Option<String>,
    gradient: LayerGradient,
    replace: Option<Replace>,
    attention: Option<bool>,
}

/// What the pass recorded.
#[derive(Default)]
struct Record {
    layers: Vec<String>,
    relus: usize,
    /// ReLUs marked after the watched layer.
    relus_after: Option<usize>,
    activation: Option<Tensor>,
    leaf: Option<Var>,
    slot: Option<GradientSlot>,
    expansion: usize,
    /// The batch size before the replacement.
    rows_before: usize,
    attention: Vec<(Tensor, Option<GradientSlot>)>,
    grids: Vec<(usize, usize)>,
    /// Elementwise nonlinearities and max-pools marked ([`Hooks::nonlinear`],
    /// [`Hooks::max_pool2d`]).
    others: usize,
    /// The DeepLift rules' state, in a DeepLift pass.
    deeplift: Option<DeepLiftPass>,
}

/// The marks of one forward pass: a model calls them where its pass has a layer, a ReLU or an
/// attention map; a method sets up what to watch before the pass ([`Hooks::none`] and the
/// `with_*`/`watch_*` builders) and reads what was recorded after it. One `Hooks` serves one
/// pass.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tgc_explain::{Hooks, LayerGradient, Model};
///
/// /// conv(1→2, 3×3) → ReLU → ["conv"] → mean → linear(2→2)
/// struct Tiny { conv: Tensor, fc: Tensor }
///
/// impl Model for Tiny {
///     fn forward(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
///         let a = hooks.relu(&x.conv2d(&self.conv, 1, 1, 1, 1)?)?;
///         let a = hooks.layer("conv", &a)?;
///         a.mean((2, 3))?.matmul(&self.fc.t()?)
///     }
///     fn layers(&self) -> Vec<String> {
///         vec!["conv".into()]
///     }
/// }
///
/// # fn main() -> candle_core::Result<()> {
/// let cpu = Device::Cpu;
/// let model = Tiny { conv: Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &cpu)?, fc: Tensor::new(&[[1f32, -1.0], [-1.0, 1.0]], &cpu)? };
/// let x = Tensor::rand(0f32, 1.0, (1, 1, 8, 8), &cpu)?;
/// // A plain call: every mark is the identity.
/// let logits = model.forward(&x, &Hooks::none())?;
/// // A method's call: the layer's activation and gradient.
/// let hooks = Hooks::none().watch_layer("conv", LayerGradient::Cut);
/// let logits = model.forward(&x, &hooks)?;
/// let grads = logits.narrow(1, 0, 1)?.sum_all()?.backward()?;
/// assert_eq!(hooks.layer_activation().unwrap().dims(), &[1, 2, 8, 8]);
/// assert_eq!(hooks.layer_gradient(&grads).unwrap().dims(), &[1, 2, 8, 8]);
/// assert_eq!((hooks.marked_layers(), hooks.relus_marked()), (vec!["conv".to_string()], 1));
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct Hooks {
    plan: Plan,
    record: Mutex<Record>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("relu", &self.plan.relu)
            .field("layer", &self.plan.layer)
            .field("gradient", &self.plan.gradient)
            .field("replaces", &self.plan.replace.is_some())
            .field("attention", &self.plan.attention)
            .field("deeplift", &self.lock().deeplift.as_ref().map(|d| d.pairs))
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// Nothing watched: every mark returns its input (a plain forward pass).
    pub fn none() -> Self {
        Self::default()
    }

    // ---- what a method asks for (before the pass) ----

    /// ReLUs marked with [`Hooks::relu`] / [`Hooks::relu_mode`] follow `mode` backward.
    pub fn with_relu_mode(mut self, mode: ReluMode) -> Self {
        self.plan.relu = mode;
        self
    }

    /// Records the activation of layer `name` (and its gradient as `gradient` says).
    pub fn watch_layer(mut self, name: &str, gradient: LayerGradient) -> Self {
        self.plan.layer = Some(name.to_owned());
        self.plan.gradient = gradient;
        self
    }

    /// Replaces the activation `[B, …]` of layer `name` with `replace(activation)`, of `B·r`
    /// rows (`r` per sample, sample-major); the rest of the pass runs on it, tensors the model
    /// [`Hooks::carry`]s are repeated to match.
    pub fn replace_layer(mut self, name: &str, replace: impl Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static) -> Self {
        self.plan.layer = Some(name.to_owned());
        self.plan.replace = Some(Box::new(replace));
        self
    }

    /// Records every attention map marked with [`Hooks::attention`] (and its gradient, which
    /// needs the input to be a [`Var`], when `gradients`).
    pub fn watch_attention(mut self, gradients: bool) -> Self {
        self.plan.attention = Some(gradients);
        self
    }

    /// A DeepLift pass (Captum's `DeepLift`, Rescale rule): the input holds `pairs` inputs and
    /// then their `pairs` references, and every marked ReLU, elementwise nonlinearity and
    /// max-pool replaces its backward by Captum's rule for it (`|Δin| < eps` keeps the ordinary
    /// gradient; Captum's default eps is 1e-10). Fused ReLUs are refused
    /// ([`Hooks::relu_mode`] returns `None`), so the model applies them through [`Hooks::relu`].
    pub fn with_deeplift(mut self, pairs: usize, eps: f32) -> Self {
        self.record.get_mut().unwrap_or_else(|e| e.into_inner()).deeplift = Some(DeepLiftPass::new(pairs, eps));
        self
    }

    // ---- what a model calls (during the pass) ----

    /// Whether layer `name` is watched (or replaced) in this pass: a model may take a fused
    /// fast path through a part of the pass that holds no watched mark.
    pub fn watches(&self, name: &str) -> bool {
        self.plan.layer.as_deref() == Some(name)
    }

    /// Whether the attention maps are watched in this pass: a model whose fast path does not
    /// form them as tensors must take the path that does.
    pub fn watches_attention(&self) -> bool {
        self.plan.attention.is_some()
    }

    /// Marks layer `name`, an activation `[B, K, …spatial]` (channels on axis 1); the pass must
    /// go on with what this returns (the activation itself unless a method replaces it).
    pub fn layer(&self, name: &str, activation: &Tensor) -> candle_core::Result<Tensor> {
        let mut record = self.lock();
        record.layers.push(name.to_owned());
        if !self.watches(name) {
            return Ok(activation.clone());
        }
        if record.activation.is_some() {
            candle_core::bail!("the model marks layer `{name}` twice in one pass");
        }
        record.relus_after = Some(0);
        record.activation = Some(activation.detach());
        if let Some(replace) = &self.plan.replace {
            let b = activation.dim(0)?;
            let replaced = replace(&activation.detach())?;
            let rows = replaced.dim(0)?;
            if b == 0 || rows % b != 0 || replaced.dims()[1..] != activation.dims()[1..] {
                candle_core::bail!("layer `{name}`: a replacement {:?} for an activation {:?}", replaced.dims(), activation.dims());
            }
            record.expansion = rows / b;
            record.rows_before = b;
            return Ok(replaced);
        }
        match self.plan.gradient {
            LayerGradient::None => Ok(activation.clone()),
            LayerGradient::Cut => {
                let leaf = Var::from_tensor(&activation.detach())?;
                let out = leaf.as_tensor().clone();
                record.leaf = Some(leaf);
                Ok(out)
            }
            LayerGradient::Through => {
                let slot = GradientSlot::default();
                let out = slot.capture(activation)?;
                record.slot = Some(slot);
                Ok(out)
            }
        }
    }

    /// Marks layer `name` on a transformer's tokens `[B, T, D]` whose last `gh·gw` tokens are
    /// the patches of a `gh × gw` grid, row-major (the first `T − gh·gw`, a class token say, are
    /// kept aside): the layer methods see the patch tokens as a map `[B, D, gh, gw]`
    /// (pytorch-grad-cam's `reshape_transform`). Returns the tokens the pass goes on with.
    pub fn token_layer(&self, name: &str, tokens: &Tensor, grid: (usize, usize)) -> candle_core::Result<Tensor> {
        if !self.watches(name) {
            self.lock().layers.push(name.to_owned());
            return Ok(tokens.clone());
        }
        let (b, t, d) = tokens.dims3()?;
        let patches = grid.0 * grid.1;
        if patches == 0 || patches > t {
            candle_core::bail!("layer `{name}`: {t} tokens cannot hold a {}×{} patch grid", grid.0, grid.1);
        }
        let prefix = t - patches;
        let map = tokens.narrow(1, prefix, patches)?.transpose(1, 2)?.reshape((b, d, grid.0, grid.1))?;
        let map = self.layer(name, &map)?;
        let rows = map.dim(0)?;
        let patch_tokens = map.reshape((rows, d, patches))?.transpose(1, 2)?;
        if prefix == 0 {
            return patch_tokens.contiguous();
        }
        let head = self.carry(&tokens.narrow(1, 0, prefix)?)?;
        Tensor::cat(&[&head, &patch_tokens], 1)
    }

    /// A tensor `[B, …]` made before the watched layer and used after it (a residual stream, a
    /// class token): repeated row by row to match a replaced activation of `B·r` rows; itself
    /// otherwise, and when it already has the replacement's rows (a model may pass every such
    /// tensor of its pass through here).
    pub fn carry(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        let (r, before) = {
            let record = self.lock();
            (record.expansion, record.rows_before)
        };
        if r <= 1 || t.dim(0)? != before {
            return Ok(t.clone());
        }
        let mut dims = t.dims().to_vec();
        let b = dims[0];
        let mut expanded = vec![b, r];
        expanded.extend(&dims[1..]);
        dims[0] = b * r;
        t.unsqueeze(1)?.broadcast_as(expanded)?.contiguous()?.reshape(dims)
    }

    /// Marks a ReLU and applies it with the backward rule the method asked for.
    pub fn relu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut record = self.lock();
        record.relus += 1;
        if let Some(n) = record.relus_after.as_mut() {
            *n += 1;
        }
        match record.deeplift.as_mut() {
            Some(pass) => pass.rescale(x, &x.relu()?, &x.gt(0f64)?.to_dtype(x.dtype())?),
            None => relu(x, self.plan.relu),
        }
    }

    /// Marks a ReLU that a kernel of the model's own applies (fused into a convolution, say)
    /// and returns the backward rule that kernel must follow; `None` when the method needs the
    /// ReLU as a tensor op of its own (a DeepLift pass): apply it with [`Hooks::relu`] instead
    /// (this call then marked nothing).
    ///
    /// ```
    /// # use candle_core::Tensor;
    /// # use tgc_explain::Hooks;
    /// # fn fused_conv_relu(x: &Tensor, relu: Option<tgc_explain::ReluMode>) -> candle_core::Result<Tensor> { match relu { Some(m) => tgc_explain::relu(x, m), None => Ok(x.clone()) } }
    /// fn conv_relu(x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
    ///     match hooks.relu_mode() {
    ///         Some(mode) => fused_conv_relu(x, Some(mode)),
    ///         None => hooks.relu(&fused_conv_relu(x, None)?),
    ///     }
    /// }
    /// # let x = Tensor::new(&[-1f32, 2.0], &candle_core::Device::Cpu)?;
    /// # assert_eq!(conv_relu(&x, &Hooks::none())?.to_vec1::<f32>()?, vec![0.0, 2.0]);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn relu_mode(&self) -> Option<ReluMode> {
        let mut record = self.lock();
        if record.deeplift.is_some() {
            return None;
        }
        record.relus += 1;
        if let Some(n) = record.relus_after.as_mut() {
            *n += 1;
        }
        Some(self.plan.relu)
    }

    /// Marks an elementwise nonlinearity `f(x)` other than ReLU (sigmoid, tanh, ELU, softplus,
    /// leaky ReLU: the modules Captum's DeepLift rescales) and applies it: `f(x)` with its own
    /// gradient, except in a DeepLift pass, where the Rescale rule replaces the gradient. The
    /// guided and deconvolution rules leave it alone, as Captum's do. Leave GELU, softmax and
    /// normalisations unmarked to match Captum, which gives them their ordinary gradient.
    pub fn nonlinear(&self, x: &Tensor, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        let deeplift = {
            let mut record = self.lock();
            record.others += 1;
            record.deeplift.is_some()
        };
        if !deeplift {
            return f(x);
        }
        // f′(x) elementwise: the gradient of Σ f(x) at x.
        let var = Var::from_tensor(&x.detach())?;
        let y = f(var.as_tensor())?;
        let derivative = match y.sum_all()?.backward()?.get(var.as_tensor()) {
            Some(d) => d.clone(),
            None => x.zeros_like()?,
        };
        match self.lock().deeplift.as_mut() {
            Some(pass) => pass.rescale(x, &y.detach(), &derivative),
            None => candle_core::bail!("the DeepLift pass ended while a nonlinearity was marked"),
        }
    }

    /// Marks a 2-D max-pool of `x` `[B, C, H, W]` that `f` computes (with any implementation)
    /// and applies it: `f(x)`, except in a DeepLift pass, where the pool is taken with
    /// PyTorch's semantics under Captum's max-pool rule.
    pub fn max_pool2d(&self, x: &Tensor, pool: MaxPool2d, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        let mut record = self.lock();
        record.others += 1;
        match record.deeplift.as_mut() {
            Some(pass) => pass.max_pool2d(x, pool),
            None => {
                drop(record);
                f(x)
            }
        }
    }

    /// Marks a block's attention probabilities `[B, heads, T, T]` (rows summing to one) over
    /// tokens whose last `gh·gw` are the patches of a `gh × gw` grid, row-major, the first the
    /// class token; blocks in forward order. The pass must go on with what this returns.
    pub fn attention(&self, probs: &Tensor, grid: (usize, usize)) -> candle_core::Result<Tensor> {
        let Some(gradients) = self.plan.attention else {
            return Ok(probs.clone());
        };
        let mut record = self.lock();
        record.grids.push(grid);
        if gradients {
            let slot = GradientSlot::default();
            let out = slot.capture(probs)?;
            record.attention.push((probs.detach(), Some(slot)));
            Ok(out)
        } else {
            record.attention.push((probs.detach(), None));
            Ok(probs.clone())
        }
    }

    // ---- what a method reads (after the pass, and after its backward pass) ----

    /// Every layer the pass marked, in order.
    pub fn marked_layers(&self) -> Vec<String> {
        self.lock().layers.clone()
    }

    /// How many ReLUs the pass marked.
    pub fn relus_marked(&self) -> usize {
        self.lock().relus
    }

    /// Whether the pass marked anything at all (a layer, a ReLU, another nonlinearity, a
    /// max-pool, attention): a method that changes backward rules refuses a model that marks
    /// nothing, whose nonlinearities it cannot see.
    pub fn marked_anything(&self) -> bool {
        let record = self.lock();
        record.relus + record.others + record.layers.len() + record.attention.len() > 0
    }

    /// How many ReLUs the pass marked after the watched layer (`None` if it was not reached):
    /// with none, the layer's gradient is the same under both ReLU modes.
    pub fn relus_after_layer(&self) -> Option<usize> {
        self.lock().relus_after
    }

    /// The watched layer's activation (detached).
    pub fn layer_activation(&self) -> Option<Tensor> {
        self.lock().activation.clone()
    }

    /// The target's gradient at the watched layer, from the store the backward pass returned;
    /// `None` when none arrived (the logits do not depend on the layer).
    pub fn layer_gradient(&self, grads: &candle_core::backprop::GradStore) -> Option<Tensor> {
        let record = self.lock();
        match &record.leaf {
            Some(leaf) => grads.get(leaf.as_tensor()).cloned(),
            None => record.slot.as_ref().and_then(GradientSlot::take),
        }
    }

    /// The recorded attention maps, in block order, with their grids.
    pub fn attention_maps(&self) -> (Vec<Tensor>, Vec<(usize, usize)>) {
        let record = self.lock();
        (record.attention.iter().map(|(p, _)| p.clone()).collect(), record.grids.clone())
    }

    /// The gradients at the recorded attention maps, after the backward pass; `None` when one
    /// did not arrive.
    pub fn attention_gradients(&self) -> Option<Vec<Tensor>> {
        let record = self.lock();
        record.attention.iter().map(|(_, slot)| slot.as_ref().and_then(GradientSlot::take)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a captured gradient is left by the backward pass.
#[derive(Clone, Default)]
struct GradientSlot(Arc<Mutex<Option<Tensor>>>);

impl GradientSlot {
    fn take(&self) -> Option<Tensor> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    /// `x` itself, the gradient flowing back through it recorded here (PyTorch's tensor hook):
    /// the gradient at an intermediate tensor, which candle's backward pass does not keep.
    fn capture(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let slot = self.clone();
        identity_with_backward(x, move |g| {
            if let Ok(mut s) = slot.0.lock() {
                *s = Some(g.clone());
            }
            Ok(g.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn carry_repeats_rows_sample_major() {
        let hooks = Hooks::none().replace_layer("a", |t| Tensor::cat(&[t, t, t], 0)?.reshape((3, 2, 1))?.contiguous());
        let a = Tensor::new(&[[[1f32], [2.0]]], &Device::Cpu).unwrap();
        let out = hooks.layer("a", &a).unwrap();
        assert_eq!(out.dims(), &[3, 2, 1]);
        let c = hooks.carry(&Tensor::new(&[[7f32, 8.0]], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(c.to_vec2::<f32>().unwrap(), vec![vec![7.0, 8.0]; 3]);
    }

    #[test]
    fn relu_gradients_are_pytorchs_zero_at_zero_in_every_mode() {
        let x = Var::new(&[-1f32, 0.0, 2.0], &Device::Cpu).unwrap();
        let g = Tensor::new(&[3f32, 3.0, -3.0], &Device::Cpu).unwrap();
        for (mode, want) in [(ReluMode::Standard, [0.0, 0.0, -3.0]), (ReluMode::Guided, [0.0, 0.0, 0.0]), (ReluMode::Deconvolution, [3.0, 3.0, 0.0])] {
            let y = relu(x.as_tensor(), mode).unwrap();
            assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 0.0, 2.0]);
            let grads = y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), want, "{mode:?}");
        }
    }

    #[test]
    fn a_layer_marked_twice_is_an_error() {
        let hooks = Hooks::none().watch_layer("a", LayerGradient::None);
        let a = Tensor::new(&[[[1f32]]], &Device::Cpu).unwrap();
        hooks.layer("a", &a).unwrap();
        assert!(hooks.layer("a", &a).unwrap_err().to_string().contains("twice"));
    }
}
