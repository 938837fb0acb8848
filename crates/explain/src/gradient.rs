//! The gradient methods. Each takes an input batch `[B, …]` and one target class per sample,
//! and runs its forward/backward passes batched. The input-gradient methods take inputs of any
//! rank; the layer methods up-sample their map to the input's spatial axes (`[B, C, H, W]`
//! images, `[B, C, D, H, W]` volumes). [`Method::attribute_all`] runs several sharing passes.

use std::any::Any;

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::attribute::{check, check_target, Attribute, Attribution, Method, Unchecked};
use crate::error::{ExplainError, Result};
use crate::interpolate::{resize, Interpolation};
use crate::model::{Hooks, LayerGradient, Model, ReluMode};
use crate::quadrature::{gauss_legendre_unit, path_points, weighted_step_sum};

impl Method {
    /// Runs several methods on the same input and targets, sharing passes where their
    /// definitions allow, and returns one result per method, in order, each with the logits
    /// and each checked for non-finite numbers. Grad-CAM, Guided Backprop and Guided Grad-CAM
    /// share one forward pass (and, when the model marks no ReLU after the layer, one guided
    /// backward pass gives both the layer's gradient and the guided input gradient); Saliency
    /// and Input×Gradient share one input gradient; any other method, a user's own included,
    /// runs alone; the logits come from whichever pass ran the input, or from one forward pass.
    /// The results equal those of the methods run one by one.
    pub fn attribute_all(methods: &[Method], model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Vec<Attribution>> {
        check(input, targets)?;
        // The layer of the first Grad-CAM / Guided Grad-CAM is the shared pass's; one naming
        // another layer runs alone.
        fn layer_of(m: &Method) -> Option<Option<&str>> {
            if let Some(g) = m.downcast_ref::<GradCam>() {
                return Some(g.layer.as_deref());
            }
            m.downcast_ref::<GuidedGradCam>().map(|g| g.layer.as_deref())
        }
        let shared_layer = match methods.iter().find_map(layer_of) {
            Some(named) => Some(resolve_layer(model, named)?),
            None => None,
        };
        let in_shared = |m: &Method| match layer_of(m) {
            Some(named) => Ok::<bool, ExplainError>(Some(resolve_layer(model, named)?) == shared_layer),
            None => Ok(false),
        };
        let mut want_map = false;
        for m in methods {
            want_map |= in_shared(m)?;
        }
        let is = |m: &Method, f: fn(&Method) -> bool| f(m);
        let guided_bp = |m: &Method| m.downcast_ref::<GuidedBackprop>().is_some();
        let guided_gc = |m: &Method| m.downcast_ref::<GuidedGradCam>().is_some();
        let plain_kind = |m: &Method| m.downcast_ref::<Saliency>().is_some() || m.downcast_ref::<InputXGradient>().is_some();
        let want_guided = methods.iter().any(|m| is(m, guided_bp)) || methods.iter().any(|m| guided_gc(m) && in_shared(m).unwrap_or(false));
        let want_plain = methods.iter().any(plain_kind);
        let shared = match (&shared_layer, want_map || want_guided) {
            (layer, true) => Some(guided_and_cam(model, layer.as_deref().filter(|_| want_map), input, targets, want_guided)?),
            _ => None,
        };
        let plain = if want_plain { Some(input_gradient(model, &input.detach(), targets, ReluMode::Standard)?) } else { None };
        let logits = match (&shared, &plain) {
            (Some(s), _) => s.logits.clone(),
            (None, Some((_, l))) => l.clone(),
            (None, None) => logits_of(model, input)?,
        };
        let map = || shared.as_ref().and_then(|s| s.map.clone()).expect("computed when asked");
        let guided = || shared.as_ref().and_then(|s| s.guided.clone()).expect("computed when asked");
        let plain_grad = || plain.as_ref().map(|p| p.0.clone()).expect("computed when asked");
        methods
            .iter()
            .map(|m| {
                let shares = in_shared(m)?;
                let mut a = if m.downcast_ref::<GradCam>().is_some() && shares {
                    cam_attribution(map(), logits.clone(), input)?
                } else if guided_bp(m) {
                    Attribution::map(guided())
                } else if guided_gc(m) && shares {
                    guided_grad_cam(&guided(), map(), logits.clone(), input)?
                } else if m.downcast_ref::<Saliency>().is_some() {
                    Attribution::map(plain_grad().abs()?)
                } else if m.downcast_ref::<InputXGradient>().is_some() {
                    Attribution::map(input.mul(&plain_grad())?)
                } else {
                    return m.compute(model, input, targets)?.check(&m.name()).map(|mut a| {
                        a.logits = Some(logits.clone());
                        a
                    });
                };
                a.logits = Some(logits.clone());
                Unchecked::new(a).check(&m.name())
            })
            .collect()
    }
}

/// The layer a layer method explains: the one it names, or the model's default.
pub(crate) fn resolve_layer(model: &dyn Model, named: Option<&str>) -> Result<String> {
    match named {
        Some(layer) => Ok(layer.to_owned()),
        None => model.default_layer().ok_or_else(|| {
            ExplainError::Invalid("a layer method needs a layer: name one, or list the model's layers (Model::layers) so that the last is the default".into())
        }),
    }
}

/// The error for a layer the pass did not mark, naming those it did.
pub(crate) fn unmarked_layer(layer: &str, hooks: &Hooks) -> ExplainError {
    let marked = hooks.marked_layers();
    let known = if marked.is_empty() { "none".to_owned() } else { marked.join(", ") };
    ExplainError::Invalid(format!("layer `{layer}`: the model's pass does not mark it (it marks: {known})"))
}

/// A guided pass must have marked something: a model that uses no hooks at all cannot have
/// its ReLUs replaced. One that marks its layers but no ReLU is taken to have none (a GELU
/// transformer), and its guided gradient is the gradient, as Captum's `GuidedBackprop` is on a
/// model without ReLU modules.
fn check_guided_marks(hooks: &Hooks, method: &str) -> Result<()> {
    if hooks.relus_marked() == 0 && hooks.marked_layers().is_empty() {
        return Err(ExplainError::Invalid(format!(
            "{method} replaces the backward rule of the model's ReLUs, but its pass marks none (nor anything else): route every ReLU through Hooks::relu (or Hooks::relu_mode for a fused kernel)"
        )));
    }
    Ok(())
}

/// The error for an input gradient that did not arrive: the model's output does not depend on
/// its input in candle's graph, which names the known causes and the way out.
pub(crate) fn no_input_gradient() -> ExplainError {
    ExplainError::Invalid(
        "no gradient reached the input: the model's output does not depend on it in candle's graph. Known causes in candle 0.11: \
         candle_nn::ops::layer_norm (taken by LayerNorm::forward on contiguous inputs), rms_norm and softmax_last_dim record no backward pass \
         (candle issues #2168, #3011, #3569), and max_pool2d's backward refuses kernel ≠ stride (an error of its own); a detach() or a \
         non-differentiable op in the forward pass does the same. Use the differentiable ops of tgc-kernels in the model, or explain it \
         with the forward-only methods, which need no gradient: Occlusion, FeatureAblation, ShapleyValueSampling, ShapleyValues, KernelShap, \
         Lime, FeaturePermutation"
            .into(),
    )
}

/// The error for a backward pass candle refused, with the way out.
pub(crate) fn backward_failed(e: candle_core::Error) -> ExplainError {
    ExplainError::Invalid(format!(
        "candle cannot run the model's backward pass: {e}. (candle 0.11's max_pool2d refuses its backward when kernel ≠ stride, as in ResNet's \
         3×3/2 stem pool.) Use the differentiable ops of tgc-kernels in the model, or explain it with the forward-only methods, which need \
         no gradient: Occlusion, FeatureAblation, ShapleyValueSampling, ShapleyValues, KernelShap, Lime, FeaturePermutation"
    ))
}

/// The target logits' sum, backward: every sample's own gradient at once.
pub(crate) fn backward_of_targets(logits: &Tensor, targets: &[usize]) -> Result<candle_core::backprop::GradStore> {
    target_sum(logits, targets, 1)?.backward().map_err(backward_failed)
}

/// Σ_b logits[b, targets[b]] — its gradient gives every sample's own gradient at once.
pub(crate) fn target_sum(logits: &Tensor, targets: &[usize], repeat: usize) -> Result<Tensor> {
    let (rows, classes) = logits.dims2().map_err(|_| ExplainError::Invalid(format!("the model must return logits [B, classes], got {:?}", logits.dims())))?;
    if rows != targets.len() * repeat {
        return Err(ExplainError::Invalid(format!("the model returned {rows} rows of logits for a batch of {}", targets.len() * repeat)));
    }
    let mut mask = vec![0f32; rows * classes];
    for r in 0..rows {
        let t = targets[r / repeat];
        check_target(t, classes)?;
        mask[r * classes + t] = 1.0;
    }
    let mask = Tensor::from_vec(mask, (rows, classes), logits.device())?.to_dtype(logits.dtype())?;
    Ok(logits.mul(&mask)?.sum_all()?)
}

/// Gradient of the target logits with respect to `points` (`[B, …]`, one target a row), and
/// the logits at those points (the guided mode changes only the backward pass, not the logits).
fn input_gradient(model: &dyn Model, points: &Tensor, targets: &[usize], mode: ReluMode) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(points)?;
    let hooks = Hooks::none().with_relu_mode(mode);
    let logits = model.forward(var.as_tensor(), &hooks)?;
    match mode {
        ReluMode::Standard => {}
        ReluMode::Guided => check_guided_marks(&hooks, "Guided Backprop")?,
        ReluMode::Deconvolution => check_guided_marks(&hooks, "Deconvolution")?,
    }
    let grads = backward_of_targets(&logits, targets)?;
    let g = grads.get(var.as_tensor()).cloned().ok_or_else(no_input_gradient)?;
    Ok((g, logits.detach()))
}

pub(crate) fn logits_of(model: &dyn Model, input: &Tensor) -> Result<Tensor> {
    Ok(model.forward(&input.detach(), &Hooks::none())?.detach())
}

/// Grad-CAM (Captum's `LayerGradCam`) at `layer` (the model's default when `None`):
/// weights = mean of ∂y/∂A over the layer's spatial axes; map = Σ_k w_k A_k (kept before ReLU
/// as `layer_attribution`); `attribution` = ReLU(map) up-sampled to the input's spatial axes,
/// bilinear (trilinear for volumes) with align_corners = false.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GradCam {
    /// The layer (one the model marks); `None`: the model's default.
    pub layer: Option<String>,
}

impl GradCam {
    /// Grad-CAM at the named layer (one the model marks).
    pub fn new(layer: impl Into<String>) -> Self {
        Self { layer: Some(layer.into()) }
    }

    /// The layer map `[B, …layer spatial]` before ReLU, and the logits.
    pub fn layer_map(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<(Tensor, Tensor)> {
        check(input, targets)?;
        let layer = resolve_layer(model, self.layer.as_deref())?;
        let hooks = Hooks::none().watch_layer(&layer, LayerGradient::Cut);
        let logits = model.forward(&input.detach(), &hooks)?;
        let activation = hooks.layer_activation().ok_or_else(|| unmarked_layer(&layer, &hooks))?;
        let grads = backward_of_targets(&logits, targets)?;
        let g = hooks.layer_gradient(&grads).ok_or_else(|| ExplainError::Invalid(format!("the logits do not depend on layer `{layer}`")))?;
        Ok((cam_map(&activation, &g)?, logits.detach()))
    }
}

impl Attribute for GradCam {
    fn name(&self) -> String {
        "gradcam".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let (map, logits) = self.layer_map(model, input, targets)?;
        Ok(Unchecked::new(cam_attribution(map, logits, input)?))
    }
    fn with_layer(&self, layer: &str) -> Option<Method> {
        Some(Method::new(GradCam::new(layer)))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// Guided Backprop: the input gradient with every ReLU's backward replaced by guided ReLU
/// (for models that mark their ReLUs, [`Hooks::relu`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuidedBackprop;

impl Attribute for GuidedBackprop {
    fn name(&self) -> String {
        "guided-backprop".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, ReluMode::Guided)?;
        Ok(Unchecked::new(Attribution { attribution: g, layer_attribution: None, logits: Some(logits), convergence_delta: None }))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// Deconvolution (Zeiler & Fergus 2014; Captum's `Deconvolution`): the input gradient with
/// every marked ReLU's backward replaced by `relu(grad)`, its forward mask ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deconvolution;

impl Attribute for Deconvolution {
    fn name(&self) -> String {
        "deconvolution".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, ReluMode::Deconvolution)?;
        Ok(Unchecked::new(Attribution { logits: Some(logits), ..Attribution::map(g) }))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// Guided Grad-CAM (Captum's `GuidedGradCam`) at `layer`: Guided Backprop × the ReLU'd
/// Grad-CAM map up-sampled with nearest interpolation, broadcast over channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuidedGradCam {
    /// The layer (one the model marks); `None`: the model's default.
    pub layer: Option<String>,
}

impl GuidedGradCam {
    /// Guided Grad-CAM at the named layer.
    pub fn new(layer: impl Into<String>) -> Self {
        Self { layer: Some(layer.into()) }
    }
}

impl Attribute for GuidedGradCam {
    fn name(&self) -> String {
        "guided-gradcam".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check(input, targets)?;
        let layer = resolve_layer(model, self.layer.as_deref())?;
        let shared = guided_and_cam(model, Some(&layer), input, targets, true)?;
        let (map, guided) = (shared.map.expect("asked for the map"), shared.guided.expect("asked for the guided gradient"));
        Ok(Unchecked::new(guided_grad_cam(&guided, map, shared.logits, input)?))
    }
    fn with_layer(&self, layer: &str) -> Option<Method> {
        Some(Method::new(GuidedGradCam::new(layer)))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// Σ_k w_k A_k with w_k the mean of the gradient over the layer's spatial axes:
/// `[B, …spatial]` from an activation `[B, K, …spatial]`.
fn cam_map(activation: &Tensor, gradient: &Tensor) -> Result<Tensor> {
    let dims = activation.dims();
    if dims.len() < 3 {
        return Err(ExplainError::Invalid(format!("a CAM needs a layer [B, K, …spatial], got {dims:?}")));
    }
    let weights = gradient.flatten_from(2)?.mean_keepdim(2)?;
    let map = activation.flatten_from(2)?.broadcast_mul(&weights)?.sum(1)?;
    let mut shape = vec![dims[0]];
    shape.extend(&dims[2..]);
    Ok(map.reshape(shape)?)
}

/// A layer map `[B, …spatial]` up-sampled to the input's spatial axes (`[B, C, …spatial]`):
/// `[B, 1, …input spatial]`.
pub(crate) fn upsample_map(map: &Tensor, input: &Tensor, mode: Interpolation) -> Result<Tensor> {
    let spatial = &input.dims()[2.min(input.rank())..];
    if map.rank() != spatial.len() + 1 {
        return Err(ExplainError::Invalid(format!(
            "a layer map {:?} cannot be up-sampled to an input {:?}: the layer needs as many spatial axes as the input",
            map.dims(),
            input.dims()
        )));
    }
    Ok(resize(map, spatial, mode)?.unsqueeze(1)?)
}

fn cam_attribution(map: Tensor, logits: Tensor, input: &Tensor) -> Result<Attribution> {
    let up = upsample_map(&map.relu()?, input, Interpolation::Linear { align_corners: false })?;
    Ok(Attribution { attribution: up, layer_attribution: Some(map), logits: Some(logits), convergence_delta: None })
}

fn guided_grad_cam(guided: &Tensor, map: Tensor, logits: Tensor, input: &Tensor) -> Result<Attribution> {
    let cam = upsample_map(&map.relu()?, input, Interpolation::Nearest)?;
    Ok(Attribution { attribution: guided.broadcast_mul(&cam)?, layer_attribution: Some(map), logits: Some(logits), convergence_delta: None })
}

/// What Grad-CAM, Guided Backprop and Guided Grad-CAM need, computed together.
struct GuidedAndCam {
    /// Grad-CAM's layer map before ReLU.
    map: Option<Tensor>,
    /// The guided input gradient.
    guided: Option<Tensor>,
    logits: Tensor,
}

/// The Grad-CAM map at `layer` (when given) and the guided input gradient (`want_guided`) with
/// as few passes as the model allows: one guided pass records the layer's gradient on its way
/// to the input; when the pass marked no ReLU after the layer that gradient is the same in
/// both modes and gives the map; otherwise the map comes from its own (standard) pass, as
/// Captum's `LayerGradCam` computes it.
fn guided_and_cam(model: &dyn Model, layer: Option<&str>, input: &Tensor, targets: &[usize], want_guided: bool) -> Result<GuidedAndCam> {
    check(input, targets)?;
    let Some(layer) = layer else {
        let (guided, logits) = input_gradient(model, &input.detach(), targets, ReluMode::Guided)?;
        return Ok(GuidedAndCam { map: None, guided: Some(guided), logits });
    };
    let cam = GradCam::new(layer);
    if !want_guided {
        let (map, logits) = cam.layer_map(model, input, targets)?;
        return Ok(GuidedAndCam { map: Some(map), guided: None, logits });
    }
    let var = Var::from_tensor(&input.detach())?;
    let hooks = Hooks::none().with_relu_mode(ReluMode::Guided).watch_layer(layer, LayerGradient::Through);
    let logits = model.forward(var.as_tensor(), &hooks)?;
    check_guided_marks(&hooks, "Guided Backprop / Guided Grad-CAM")?;
    let activation = hooks.layer_activation().ok_or_else(|| unmarked_layer(layer, &hooks))?;
    let grads = backward_of_targets(&logits, targets)?;
    let guided = grads.get(var.as_tensor()).cloned().ok_or_else(no_input_gradient)?;
    if hooks.relus_after_layer() != Some(0) {
        let (map, logits) = cam.layer_map(model, input, targets)?;
        return Ok(GuidedAndCam { map: Some(map), guided: Some(guided), logits });
    }
    let g = hooks.layer_gradient(&grads).ok_or_else(|| ExplainError::Invalid(format!("the logits do not depend on layer `{layer}`")))?;
    let map = cam_map(&activation, &g)?;
    Ok(GuidedAndCam { map: Some(map), guided: Some(guided), logits: logits.detach() })
}

/// Saliency (Captum's default `abs=True`): |∂y/∂x|.
#[derive(Debug, Clone, Copy, Default)]
pub struct Saliency;

impl Attribute for Saliency {
    fn name(&self) -> String {
        "saliency".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, ReluMode::Standard)?;
        Ok(Unchecked::new(Attribution { attribution: g.abs()?, layer_attribution: None, logits: Some(logits), convergence_delta: None }))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// Input × Gradient.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputXGradient;

impl Attribute for InputXGradient {
    fn name(&self) -> String {
        "input-x-gradient".into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, ReluMode::Standard)?;
        Ok(Unchecked::new(Attribution { attribution: input.mul(&g)?, layer_attribution: None, logits: Some(logits), convergence_delta: None }))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn multiplies_by_inputs(&self) -> bool {
        true
    }
}

/// The baseline distribution of [`GradientShap`] (Captum requires one; each sample draws one
/// baseline uniformly from it).
#[derive(Debug, Clone, Default)]
pub enum Baselines {
    /// The single all-zero image.
    #[default]
    Zeros,
    /// Two baselines per image: the all-zero image and the input itself (`{input·0, input·1}`,
    /// Captum's tutorial for a pretrained ResNet).
    ZerosAndInput,
    /// Given samples `[N, …]` (each shaped like one input sample).
    Images(Tensor),
    /// `count` images of uniform noise on `[low, high)`, drawn once with `seed`.
    #[allow(missing_docs)]
    Uniform { count: usize, low: f32, high: f32, seed: u64 },
    /// `count` images of Gaussian noise `N(mean, std²)`, drawn once with `seed`.
    #[allow(missing_docs)]
    Gaussian { count: usize, mean: f32, std: f32, seed: u64 },
}

impl Baselines {
    /// The candidate baselines of one image `x` (`per_image` values), concatenated.
    pub(crate) fn candidates(&self, x: &[f32], image_dims: &[usize]) -> Result<Vec<f32>> {
        let per_image = x.len();
        let noise = |count: usize, seed: u64, draw: &mut dyn FnMut(&mut ChaCha8Rng) -> f32| -> Result<Vec<f32>> {
            if count == 0 {
                return Err(ExplainError::Invalid("a noise baseline distribution needs at least one image".into()));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            Ok((0..count * per_image).map(|_| draw(&mut rng)).collect())
        };
        match self {
            Baselines::Zeros => Ok(vec![0.0; per_image]),
            Baselines::ZerosAndInput => Ok([vec![0.0; per_image], x.to_vec()].concat()),
            Baselines::Images(t) => {
                if t.rank() != image_dims.len() + 1 || t.dims()[1..] != *image_dims || t.dim(0)? == 0 {
                    return Err(ExplainError::Invalid(format!("baselines {:?} do not match an input image {:?}", t.dims(), image_dims)));
                }
                Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            }
            Baselines::Uniform { count, low, high, seed } => {
                if !(low < high) {
                    return Err(ExplainError::Invalid(format!("uniform baselines need low < high, got [{low}, {high})")));
                }
                noise(*count, *seed, &mut |rng| rng.random_range(*low..*high))
            }
            Baselines::Gaussian { count, mean, std, seed } => {
                if !(*std > 0.0 && std.is_finite() && mean.is_finite()) {
                    return Err(ExplainError::Invalid(format!("Gaussian baselines need a finite mean and std > 0, got N({mean}, {std}²)")));
                }
                let normal = Normal::new(*mean, *std).map_err(|e| ExplainError::Invalid(format!("Gaussian baselines: {e}")))?;
                noise(*count, *seed, &mut |rng| normal.sample(rng))
            }
        }
    }
}

/// Settings of [`GradientShap`].
#[derive(Debug, Clone)]
pub struct GradientShapConfig {
    /// Samples per image.
    pub n_samples: usize,
    /// Standard deviation of the Gaussian noise added to the input for each sample.
    pub stdevs: f32,
    /// The baseline distribution.
    pub baselines: Baselines,
    /// Seed of the baseline draws, the α draws and the input noise.
    pub seed: u64,
    /// Rows (samples × images) per forward/backward batch; `None` sizes the batches to
    /// memory ([`auto_batch_rows`]).
    pub batch_size: Option<usize>,
}

impl Default for GradientShapConfig {
    /// Captum's `GradientShap.attribute` defaults (`n_samples=5`, `stdevs=0`) with the
    /// all-zero baseline.
    fn default() -> Self {
        Self { n_samples: 5, stdevs: 0.0, baselines: Baselines::Zeros, seed: 0, batch_size: None }
    }
}

/// GradientSHAP (Captum's `GradientShap`): mean over samples of (x' − b) ⊙ ∇f(b + α(x' − b)),
/// with x' = x + N(0, stdevs²), b drawn from the baselines, α ~ U(0, 1), all seeded (each
/// image of a batch draws from the seed afresh: its map is the same alone or in a batch).
#[derive(Debug, Clone, Default)]
pub struct GradientShap {
    /// The settings.
    pub config: GradientShapConfig,
}

impl GradientShap {
    /// GradientSHAP with these settings.
    pub fn new(config: GradientShapConfig) -> Self {
        Self { config }
    }
}

impl Attribute for GradientShap {
    fn name(&self) -> String {
        "gradient-shap".into()
    }
    fn multiplies_by_inputs(&self) -> bool {
        true
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let batch = check(input, targets)?;
        let n = self.config.n_samples;
        if n == 0 {
            return Err(ExplainError::Invalid("GradientSHAP needs at least one sample".into()));
        }
        let input = input.detach().to_dtype(DType::F32)?;
        let per_image = input.elem_count() / batch;
        let x: Vec<f32> = input.flatten_all()?.to_vec1()?;
        if !(self.config.stdevs >= 0.0 && self.config.stdevs.is_finite()) {
            return Err(ExplainError::Invalid(format!("GradientSHAP stdevs must be a finite number ≥ 0, got {}", self.config.stdevs)));
        }
        let noise = Normal::new(0.0f32, self.config.stdevs.max(0.0)).map_err(|e| ExplainError::Invalid(e.to_string()))?;
        // Points b + α(x' − b) and differences x' − b, sample-major within each image. Every
        // image draws from the seed afresh, so its map does not depend on the batch it is in.
        let mut points = Vec::with_capacity(batch * n * per_image);
        let mut diffs = Vec::with_capacity(batch * n * per_image);
        for i in 0..batch {
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            let xi = &x[i * per_image..(i + 1) * per_image];
            let baselines = self.config.baselines.candidates(xi, &input.dims()[1..])?;
            let n_baselines = baselines.len() / per_image;
            for _ in 0..n {
                let base = &baselines[rng.random_range(0..n_baselines) * per_image..][..per_image];
                let alpha: f32 = rng.random();
                for (v, bv) in xi.iter().zip(base) {
                    let noisy = if self.config.stdevs > 0.0 { v + noise.sample(&mut rng) } else { *v };
                    diffs.push(noisy - bv);
                    points.push(bv + alpha * (noisy - bv));
                }
            }
        }
        let mut shape = input.dims().to_vec();
        shape[0] = batch * n;
        let points = Tensor::from_vec(points, shape.clone(), input.device())?;
        let diffs = Tensor::from_vec(diffs, shape, input.device())?;
        let grads = batched_gradients(model, &points, targets, n, self.config.batch_size)?;
        let per_sample = diffs.mul(&grads)?;
        let mut out_shape = input.dims().to_vec();
        out_shape.insert(1, n);
        out_shape[0] = batch;
        let attribution = per_sample.reshape(out_shape)?.mean(1)?;
        Ok(Unchecked::new(Attribution::map(attribution)))
    }
}

/// Input values of one internal batch when its size is left to the library: 16 rows of a
/// 3 × 256 × 256 image. The activations a forward/backward pass keeps grow with the input, so
/// this bounds the pass's memory whatever the image size (about 0.5 GB for ResNet-18).
pub const AUTO_BATCH_VALUES: usize = 16 * 3 * 256 * 256;

/// Rows per internal batch (Captum's `internal_batch_size`) for inputs of `values_per_row`
/// values when none is given: as many as fit [`AUTO_BATCH_VALUES`], at least one.
pub fn auto_batch_rows(values_per_row: usize) -> usize {
    (AUTO_BATCH_VALUES / values_per_row.max(1)).max(1)
}

/// Gradients at `points` (`[B·repeat, …]`, `repeat` consecutive rows per target) in chunks of
/// `batch_size` rows (sized to memory when `None`).
fn batched_gradients(model: &dyn Model, points: &Tensor, targets: &[usize], repeat: usize, batch_size: Option<usize>) -> Result<Tensor> {
    let rows = points.dim(0)?;
    let chunk = batch_size.unwrap_or_else(|| auto_batch_rows(points.elem_count() / rows.max(1))).max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = chunk.min(rows - start);
        let part = points.narrow(0, start, len)?;
        let part_targets: Vec<usize> = (start..start + len).map(|r| targets[r / repeat]).collect();
        parts.push(input_gradient(model, &part, &part_targets, ReluMode::Standard)?.0);
        start += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Settings of [`IntegratedGradients`] (Captum's defaults: 50 Gauss–Legendre steps, zero
/// baseline).
#[derive(Debug, Clone)]
pub struct IntegratedGradientsConfig {
    /// Quadrature points.
    pub steps: usize,
    /// Rows per forward/backward batch; `None` sizes the batches to memory
    /// ([`auto_batch_rows`]).
    pub internal_batch_size: Option<usize>,
    /// A baseline shaped like one input sample `[1, …]` (or one per sample); `None` is zero.
    pub baseline: Option<Tensor>,
}

impl Default for IntegratedGradientsConfig {
    fn default() -> Self {
        Self { steps: 50, internal_batch_size: None, baseline: None }
    }
}

/// Integrated Gradients: (x − b) ⊙ Σ_i w_i ∇f(b + α_i(x − b)) with Gauss–Legendre nodes and
/// weights on [0, 1].
#[derive(Debug, Clone, Default)]
pub struct IntegratedGradients {
    /// The settings.
    pub config: IntegratedGradientsConfig,
}

impl IntegratedGradients {
    /// Integrated Gradients with these settings.
    pub fn new(config: IntegratedGradientsConfig) -> Self {
        Self { config }
    }
}

impl Attribute for IntegratedGradients {
    fn name(&self) -> String {
        "integrated-gradients".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check(input, targets)?;
        let steps = self.config.steps;
        if steps == 0 {
            return Err(ExplainError::Invalid("Integrated Gradients needs at least one step".into()));
        }
        let input = input.detach().to_dtype(DType::F32)?;
        let baseline = match &self.config.baseline {
            Some(t) => t.to_dtype(DType::F32)?.broadcast_as(input.shape())?.contiguous()?,
            None => input.zeros_like()?,
        };
        let diff = (&input - &baseline)?;
        let (alphas, weights) = gauss_legendre_unit(steps);
        let points = path_points(&baseline, &diff, &alphas)?;
        let grads = batched_gradients(model, &points, targets, steps, self.config.internal_batch_size)?;
        let integrated = weighted_step_sum(&grads, &weights)?;
        let attribution = diff.mul(&integrated)?;
        let (logits, delta) = convergence_delta(model, &attribution, &input, &baseline, targets)?;
        Ok(Unchecked::new(Attribution { logits: Some(logits), convergence_delta: Some(delta), ..Attribution::map(attribution) }))
    }
    fn multiplies_by_inputs(&self) -> bool {
        true
    }
}

/// Captum's convergence delta of an attribution `[B, …]` of `input` against `baseline` (both
/// `[B, …]`): Σ attribution − (f(x) − f(b)) at each target, from one forward pass over both;
/// with the logits at the input.
pub(crate) fn convergence_delta(model: &dyn Model, attribution: &Tensor, input: &Tensor, baseline: &Tensor, targets: &[usize]) -> Result<(Tensor, Tensor)> {
    let b = input.dim(0)?;
    let logits = logits_of(model, &Tensor::cat(&[input, baseline], 0)?)?;
    let (at_input, at_baseline) = (logits.narrow(0, 0, b)?, logits.narrow(0, b, b)?);
    let delta = completeness_gaps(attribution, &at_input, &at_baseline, targets)?;
    Ok((at_input, Tensor::from_vec(delta, b, attribution.device())?))
}

/// Σ attribution − (f(x) − f(b)) at each row's target, from the logits at the inputs and at
/// their baselines (`[B, classes]` each).
pub(crate) fn completeness_gaps(attribution: &Tensor, at_input: &Tensor, at_baseline: &Tensor, targets: &[usize]) -> Result<Vec<f32>> {
    let gap = (at_input - at_baseline)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let sums = attribution.to_dtype(DType::F32)?.flatten_from(1)?.sum(1)?.to_vec1::<f32>()?;
    Ok(sums.iter().zip(targets).zip(&gap).map(|((s, &t), row)| s - row.get(t).copied().unwrap_or(f32::NAN)).collect())
}
