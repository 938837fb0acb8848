//! The attribution methods. Each takes an input batch `[B, …]` and one target class per
//! sample, and runs its forward/backward passes batched. The gradient methods take inputs of
//! any rank; the layer methods up-sample their map to the input's spatial axes (`[B, C, H, W]`
//! images, `[B, C, D, H, W]` volumes).

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{ExplainError, Result};
use crate::interpolate::{resize, Interpolation};
use crate::model::{Model, ReluMode};
use crate::quadrature::gauss_legendre_unit;
use crate::{AttentionRollout, Cam, Chefer, FeatureAblation, NoiseTunnel, Occlusion};

/// The result of a method.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// Shaped like the input (`[B, 1, …spatial]` for the layer methods), at its resolution.
    pub attribution: Tensor,
    /// The layer methods' layer-resolution map before ReLU, `[B, …layer spatial]`.
    pub layer_attribution: Option<Tensor>,
    /// The model's logits on the (unperturbed) input, `[B, classes]`, when the method's passes
    /// computed them (every method but GradientSHAP and Integrated Gradients, which never run
    /// the input itself; [`attribute_all`] fills them in for every method).
    pub logits: Option<Tensor>,
}

/// Any method, for callers that choose one at run time.
#[derive(Debug, Clone)]
pub enum Method {
    GradCam(GradCam),
    GuidedBackprop(GuidedBackprop),
    GuidedGradCam(GuidedGradCam),
    GradientShap(GradientShap),
    Saliency(Saliency),
    InputXGradient(InputXGradient),
    IntegratedGradients(IntegratedGradients),
    /// One of pytorch-grad-cam's CAMs (HiResCAM, Grad-CAM++, …).
    Cam(Cam),
    Occlusion(Occlusion),
    FeatureAblation(FeatureAblation),
    /// A method under Captum's `NoiseTunnel`.
    NoiseTunnel(Box<NoiseTunnel>),
    /// Attention rollout over a transformer's blocks.
    AttentionRollout(AttentionRollout),
    /// Chefer et al.'s gradient-weighted attention relevance.
    Chefer(Chefer),
}

impl Method {
    /// Runs the method; a NaN or infinity in its logits or attribution is an error naming the
    /// method, never a silent NaN map.
    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let out = self.attribute_unchecked(model, input, targets)?;
        self.checked(out)
    }

    fn attribute_unchecked<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        match self {
            Method::GradCam(m) => m.attribute(model, input, targets),
            Method::GuidedBackprop(m) => m.attribute(model, input, targets),
            Method::GuidedGradCam(m) => m.attribute(model, input, targets),
            Method::GradientShap(m) => m.attribute(model, input, targets),
            Method::Saliency(m) => m.attribute(model, input, targets),
            Method::InputXGradient(m) => m.attribute(model, input, targets),
            Method::IntegratedGradients(m) => m.attribute(model, input, targets),
            Method::Cam(m) => m.attribute(model, input, targets),
            Method::Occlusion(m) => m.attribute(model, input, targets),
            Method::FeatureAblation(m) => m.attribute(model, input, targets),
            Method::NoiseTunnel(m) => m.attribute(model, input, targets),
            Method::AttentionRollout(m) => m.attribute(model, input, targets),
            Method::Chefer(m) => m.attribute(model, input, targets),
        }
    }

    /// Runs several methods on the same input and targets, sharing passes where their
    /// definitions allow, and returns one result per method, in order, each with the logits.
    /// Grad-CAM, Guided Backprop and Guided Grad-CAM share one forward pass (and, when the
    /// model's pass after the layer has no ReLU, one guided backward pass gives both the
    /// layer's gradient and the guided input gradient); Saliency and Input×Gradient share one
    /// input gradient; the logits come from whichever pass ran the input, or from one forward
    /// pass when only GradientSHAP or Integrated Gradients were asked. The results equal those
    /// of the methods run one by one.
    pub fn attribute_all<M: Model + ?Sized>(methods: &[Method], model: &M, input: &Tensor, targets: &[usize]) -> Result<Vec<Attribution>> {
        check(input, targets)?;
        // The layer of the first Grad-CAM / Guided Grad-CAM is the shared pass's; one naming
        // another layer runs alone.
        fn layer_of(m: &Method) -> Option<Option<&str>> {
            match m {
                Method::GradCam(g) => Some(g.layer.as_deref()),
                Method::GuidedGradCam(g) => Some(g.layer.as_deref()),
                _ => None,
            }
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
        let any = |f: fn(&Method) -> bool| methods.iter().any(f);
        let want_guided =
            any(|m| matches!(m, Method::GuidedBackprop(_))) || methods.iter().any(|m| matches!(m, Method::GuidedGradCam(_)) && in_shared(m).unwrap_or(false));
        let want_plain = any(|m| matches!(m, Method::Saliency(_) | Method::InputXGradient(_)));
        let shared = match (&shared_layer, want_map || want_guided) {
            (layer, true) => Some(guided_and_cam(model, layer.as_deref().filter(|_| want_map), input, targets, want_guided)?),
            _ => None,
        };
        let plain = if want_plain { Some(input_gradient(model, &input.detach(), targets, 1, ReluMode::Standard)?) } else { None };
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
                let mut a = match m {
                    Method::GradCam(_) if shares => cam_attribution(map(), logits.clone(), input)?,
                    Method::GuidedBackprop(_) => Attribution { attribution: guided(), layer_attribution: None, logits: None },
                    Method::GuidedGradCam(_) if shares => guided_grad_cam(&guided(), map(), logits.clone(), input)?,
                    Method::Saliency(_) => Attribution { attribution: plain_grad().abs()?, layer_attribution: None, logits: None },
                    Method::InputXGradient(_) => Attribution { attribution: input.mul(&plain_grad())?, layer_attribution: None, logits: None },
                    other => other.attribute_unchecked(model, input, targets)?,
                };
                a.logits = Some(logits.clone());
                m.checked(a)
            })
            .collect()
    }

    /// The same method explaining `layer` when it is a layer method (Grad-CAM, Guided
    /// Grad-CAM, the CAM family, and such a method under a noise tunnel); others unchanged.
    pub fn with_layer(self, layer: &str) -> Method {
        let layer = Some(layer.to_owned());
        match self {
            Method::GradCam(_) => Method::GradCam(GradCam { layer }),
            Method::GuidedGradCam(_) => Method::GuidedGradCam(GuidedGradCam { layer }),
            Method::Cam(c) => Method::Cam(Cam { layer, ..c }),
            Method::NoiseTunnel(nt) => {
                let inner = nt.inner.clone().with_layer(layer.as_deref().unwrap_or_default());
                Method::NoiseTunnel(Box::new(NoiseTunnel { inner, ..*nt }))
            }
            other => other,
        }
    }

    /// A NaN or infinity in the logits or the attribution is an error naming the method.
    fn checked(&self, out: Attribution) -> Result<Attribution> {
        for (what, t) in [("logits", out.logits.as_ref()), ("attribution", Some(&out.attribution))] {
            if let Some((count, first)) = t.map(crate::check::non_finite).transpose()?.flatten() {
                return Err(ExplainError::NonFinite { method: self.name(), what, count, first });
            }
        }
        Ok(out)
    }

    /// The command-line name (`gradcam`, `guided-backprop`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Method::GradCam(_) => "gradcam",
            Method::GuidedBackprop(_) => "guided-backprop",
            Method::GuidedGradCam(_) => "guided-gradcam",
            Method::GradientShap(_) => "gradient-shap",
            Method::Saliency(_) => "saliency",
            Method::InputXGradient(_) => "input-x-gradient",
            Method::IntegratedGradients(_) => "integrated-gradients",
            Method::Cam(c) => c.kind.name(),
            Method::Occlusion(_) => "occlusion",
            Method::FeatureAblation(_) => "feature-ablation",
            Method::NoiseTunnel(nt) => interned(format!("{}-{}", nt.inner.name(), nt.kind.name())),
            Method::AttentionRollout(_) => "attention-rollout",
            Method::Chefer(_) => "chefer",
        }
    }
}

/// A name made at run time (a method under a noise tunnel), kept for the life of the process:
/// there are a few dozen possible names at most.
fn interned(name: String) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = names.iter().find(|n| **n == name) {
        return found;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}

/// The batch size of an input `[B, …]` with one target per sample.
pub(crate) fn check(input: &Tensor, targets: &[usize]) -> Result<usize> {
    if input.rank() < 2 {
        return Err(ExplainError::Invalid(format!("input must be a batch [B, …] of at least 2 axes, got {:?}", input.dims())));
    }
    let b = input.dim(0)?;
    if targets.len() != b {
        return Err(ExplainError::Invalid(format!("{} targets for a batch of {b}", targets.len())));
    }
    Ok(b)
}

/// An image batch `[B, C, H, W]` with one target per sample (the methods whose windows or
/// blocks are 2-D): `(B, H, W)`.
pub(crate) fn check_image(input: &Tensor, targets: &[usize], method: &str) -> Result<(usize, usize, usize)> {
    check(input, targets)?;
    let (b, _, h, w) = input.dims4().map_err(|_| ExplainError::Invalid(format!("{method} takes images [B, C, H, W], got {:?}", input.dims())))?;
    Ok((b, h, w))
}

/// The layer a layer method explains: the one it names, or the model's default. The model's
/// `split` refuses a name it does not have.
pub(crate) fn resolve_layer<M: Model + ?Sized>(model: &M, named: Option<&str>) -> Result<String> {
    match named {
        Some(layer) => Ok(layer.to_owned()),
        None => model.default_layer().ok_or_else(|| ExplainError::Invalid("a layer method needs a model with layers (Model::layers / Model::split)".into())),
    }
}

/// The pass split at `layer`, with the model's refusal turned into an error naming its layers.
pub(crate) fn split_at<'a, M: Model + ?Sized>(model: &'a M, layer: &str, input: &Tensor, mode: ReluMode) -> Result<crate::model::Split<'a>> {
    model.split(layer, input, mode).map_err(|e| {
        let layers = model.layers();
        let known = if layers.is_empty() { "none".to_owned() } else { layers.join(", ") };
        ExplainError::Invalid(format!("layer `{layer}`: {e} (the model's layers: {known})"))
    })
}

/// Refuses a guided method on a model that does not declare guided ReLUs.
pub(crate) fn check_guided<M: Model + ?Sized>(model: &M, method: &str) -> Result<()> {
    if model.supports_guided() {
        Ok(())
    } else {
        Err(ExplainError::Invalid(format!("{method} needs a model whose ReLUs follow the guided mode (Model::supports_guided)")))
    }
}

/// A target class the model has, or an error naming both.
pub(crate) fn check_target(target: usize, classes: usize) -> Result<()> {
    if target >= classes {
        return Err(ExplainError::Invalid(format!("target class {target} but the model has {classes} classes")));
    }
    Ok(())
}

/// Column `target` of logits `[n, classes]`: the target's score of every row.
pub(crate) fn target_column(logits: &Tensor, target: usize) -> Result<Vec<f32>> {
    check_target(target, logits.dim(1)?)?;
    Ok(logits.narrow(1, target, 1)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
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

/// Gradient of the target logits with respect to `points` (`[B·repeat, …]`), and the
/// logits at those points (the guided mode changes only the backward pass, not the logits).
fn input_gradient<M: Model + ?Sized>(model: &M, points: &Tensor, targets: &[usize], repeat: usize, mode: ReluMode) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(points)?;
    let logits = model.forward(var.as_tensor(), mode)?;
    let grads = target_sum(&logits, targets, repeat)?.backward()?;
    let g = grads.get(var.as_tensor()).cloned().ok_or_else(|| ExplainError::Invalid("the model's output does not depend on its input".into()))?;
    Ok((g, logits.detach()))
}

fn logits_of<M: Model + ?Sized>(model: &M, input: &Tensor) -> Result<Tensor> {
    Ok(model.forward(&input.detach(), ReluMode::Standard)?.detach())
}

/// Grad-CAM (Captum's `LayerGradCam`) at `layer` (the model's default when `None`):
/// weights = mean of ∂y/∂A over the layer's spatial axes; map = Σ_k w_k A_k (kept before ReLU
/// as `layer_attribution`); `attribution` = ReLU(map) up-sampled to the input's spatial axes,
/// bilinear (trilinear for volumes) with align_corners = false.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GradCam {
    pub layer: Option<String>,
}

impl GradCam {
    /// Grad-CAM at the named layer (one of the model's [`Model::layers`]).
    pub fn new(layer: impl Into<String>) -> Self {
        Self { layer: Some(layer.into()) }
    }

    /// The layer map `[B, …layer spatial]` before ReLU, and the logits.
    pub fn layer_map<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<(Tensor, Tensor)> {
        check(input, targets)?;
        let layer = resolve_layer(model, self.layer.as_deref())?;
        let split = split_at(model, &layer, &input.detach(), ReluMode::Standard)?;
        let activation = Var::from_tensor(&split.activation.detach())?;
        let logits = split.rest(activation.as_tensor())?;
        let grads = target_sum(&logits, targets, 1)?.backward()?;
        let g = grads.get(activation.as_tensor()).ok_or_else(|| ExplainError::Invalid(format!("the logits do not depend on layer `{layer}`")))?;
        Ok((cam_map(activation.as_tensor(), g)?, logits.detach()))
    }

    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let (map, logits) = self.layer_map(model, input, targets)?;
        cam_attribution(map, logits, input)
    }
}

/// Guided Backprop: the input gradient with every ReLU's backward replaced by guided ReLU
/// (for models that declare [`Model::supports_guided`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuidedBackprop;

impl GuidedBackprop {
    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        check_guided(model, "Guided Backprop")?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Guided)?;
        Ok(Attribution { attribution: g, layer_attribution: None, logits: Some(logits) })
    }
}

/// Guided Grad-CAM (Captum's `GuidedGradCam`) at `layer`: Guided Backprop × the ReLU'd
/// Grad-CAM map up-sampled with nearest interpolation, broadcast over channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuidedGradCam {
    pub layer: Option<String>,
}

impl GuidedGradCam {
    pub fn new(layer: impl Into<String>) -> Self {
        Self { layer: Some(layer.into()) }
    }

    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        let layer = resolve_layer(model, self.layer.as_deref())?;
        let shared = guided_and_cam(model, Some(&layer), input, targets, true)?;
        let (map, guided) = (shared.map.expect("asked for the map"), shared.guided.expect("asked for the guided gradient"));
        guided_grad_cam(&guided, map, shared.logits, input)
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
    Ok(Attribution { attribution: up, layer_attribution: Some(map), logits: Some(logits) })
}

fn guided_grad_cam(guided: &Tensor, map: Tensor, logits: Tensor, input: &Tensor) -> Result<Attribution> {
    let cam = upsample_map(&map.relu()?, input, Interpolation::Nearest)?;
    Ok(Attribution { attribution: guided.broadcast_mul(&cam)?, layer_attribution: Some(map), logits: Some(logits) })
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
/// as few passes as the model allows: when the pass after the layer has no ReLU
/// ([`Model::relu_free_after`]) the layer's gradient is the same in both modes, so one guided
/// forward and one backward give both; otherwise the layer map comes from its own (standard)
/// pass, as Captum's `LayerGradCam` computes it.
fn guided_and_cam<M: Model + ?Sized>(model: &M, layer: Option<&str>, input: &Tensor, targets: &[usize], want_guided: bool) -> Result<GuidedAndCam> {
    check(input, targets)?;
    let Some(layer) = layer else {
        check_guided(model, "Guided Backprop")?;
        let (guided, logits) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Guided)?;
        return Ok(GuidedAndCam { map: None, guided: Some(guided), logits });
    };
    let cam = GradCam::new(layer);
    if !want_guided {
        let (map, logits) = cam.layer_map(model, input, targets)?;
        return Ok(GuidedAndCam { map: Some(map), guided: None, logits });
    }
    check_guided(model, "Guided Backprop / Guided Grad-CAM")?;
    if !model.relu_free_after(layer) {
        let (map, logits) = cam.layer_map(model, input, targets)?;
        let (guided, _) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Guided)?;
        return Ok(GuidedAndCam { map: Some(map), guided: Some(guided), logits });
    }
    let var = Var::from_tensor(&input.detach())?;
    let split = split_at(model, layer, var.as_tensor(), ReluMode::Guided)?;
    let (hooked, slot) = crate::model::capture_gradient(&split.activation)?;
    let logits = split.rest(&hooked)?;
    let grads = target_sum(&logits, targets, 1)?.backward()?;
    let guided = grads.get(var.as_tensor()).cloned().ok_or_else(|| ExplainError::Invalid("the model's output does not depend on its input".into()))?;
    let g = slot.take().ok_or_else(|| ExplainError::Invalid(format!("the logits do not depend on layer `{layer}`")))?;
    let map = cam_map(&split.activation.detach(), &g)?;
    Ok(GuidedAndCam { map: Some(map), guided: Some(guided), logits: logits.detach() })
}

/// Saliency (Captum's default `abs=True`): |∂y/∂x|.
#[derive(Debug, Clone, Copy, Default)]
pub struct Saliency;

impl Saliency {
    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Standard)?;
        Ok(Attribution { attribution: g.abs()?, layer_attribution: None, logits: Some(logits) })
    }
}

/// Input × Gradient.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputXGradient;

impl InputXGradient {
    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Standard)?;
        Ok(Attribution { attribution: input.mul(&g)?, layer_attribution: None, logits: Some(logits) })
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
    Uniform { count: usize, low: f32, high: f32, seed: u64 },
    /// `count` images of Gaussian noise `N(mean, std²)`, drawn once with `seed`.
    Gaussian { count: usize, mean: f32, std: f32, seed: u64 },
}

impl Baselines {
    /// The candidate baselines of one image `x` (`per_image` values), concatenated.
    fn candidates(&self, x: &[f32], image_dims: &[usize]) -> Result<Vec<f32>> {
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
    pub n_samples: usize,
    /// Standard deviation of the Gaussian noise added to the input for each sample.
    pub stdevs: f32,
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
    pub config: GradientShapConfig,
}

impl GradientShap {
    pub fn new(config: GradientShapConfig) -> Self {
        Self { config }
    }

    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
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
        Ok(Attribution { attribution, layer_attribution: None, logits: None })
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
fn batched_gradients<M: Model + ?Sized>(model: &M, points: &Tensor, targets: &[usize], repeat: usize, batch_size: Option<usize>) -> Result<Tensor> {
    let rows = points.dim(0)?;
    let chunk = batch_size.unwrap_or_else(|| auto_batch_rows(points.elem_count() / rows.max(1))).max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < rows {
        let len = chunk.min(rows - start);
        let part = points.narrow(0, start, len)?;
        let part_targets: Vec<usize> = (start..start + len).map(|r| targets[r / repeat]).collect();
        parts.push(input_gradient(model, &part, &part_targets, 1, ReluMode::Standard)?.0);
        start += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Settings of [`IntegratedGradients`] (Captum's defaults: 50 Gauss–Legendre steps, zero
/// baseline).
#[derive(Debug, Clone)]
pub struct IntegratedGradientsConfig {
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
    pub config: IntegratedGradientsConfig,
}

impl IntegratedGradients {
    pub fn new(config: IntegratedGradientsConfig) -> Self {
        Self { config }
    }

    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let b = check(input, targets)?;
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
        // One value per step, broadcast over an image's axes.
        let mut per_step = vec![1, steps];
        per_step.extend(std::iter::repeat_n(1, input.rank() - 1));
        // Rows image-major: image i's steps are rows i·steps .. (i+1)·steps.
        let alpha_t = Tensor::from_vec(alphas.iter().map(|&a| a as f32).collect::<Vec<_>>(), per_step.clone(), &Device::Cpu)?.to_device(input.device())?;
        let points = diff.unsqueeze(1)?.broadcast_mul(&alpha_t)?.broadcast_add(&baseline.unsqueeze(1)?)?;
        let mut flat_shape = input.dims().to_vec();
        flat_shape[0] = b * steps;
        let points = points.reshape(flat_shape)?;
        let grads = batched_gradients(model, &points, targets, steps, self.config.internal_batch_size)?;
        let w_t = Tensor::from_vec(weights.iter().map(|&w| w as f32).collect::<Vec<_>>(), per_step.clone(), &Device::Cpu)?.to_device(input.device())?;
        let mut grid = input.dims().to_vec();
        grid.insert(1, steps);
        grid[0] = b;
        let integrated = grads.reshape(grid)?.broadcast_mul(&w_t)?.sum(1)?;
        Ok(Attribution { attribution: diff.mul(&integrated)?, layer_attribution: None, logits: None })
    }
}
