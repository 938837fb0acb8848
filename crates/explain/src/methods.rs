//! The attribution methods. Each takes an input batch `[B, C, H, W]` and one target class per
//! sample, and runs its forward/backward passes batched.

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{ExplainError, Result};
use crate::interpolate::{upsample_bilinear, upsample_nearest};
use crate::model::{Explainable, ReluMode};
use crate::quadrature::gauss_legendre_unit;

/// The result of a method.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// `[B, C, H, W]` (or `[B, 1, H, W]` for Grad-CAM), at the input's resolution.
    pub attribution: Tensor,
    /// Grad-CAM's layer-resolution map before ReLU, `[B, h, w]`.
    pub layer_attribution: Option<Tensor>,
    /// The model's logits on the (unperturbed) input, `[B, classes]`.
    pub logits: Tensor,
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
}

impl Method {
    /// Runs the method; a NaN or infinity in its logits or attribution is an error naming the
    /// method, never a silent NaN map.
    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let out = match self {
            Method::GradCam(m) => m.attribute(model, input, targets),
            Method::GuidedBackprop(m) => m.attribute(model, input, targets),
            Method::GuidedGradCam(m) => m.attribute(model, input, targets),
            Method::GradientShap(m) => m.attribute(model, input, targets),
            Method::Saliency(m) => m.attribute(model, input, targets),
            Method::InputXGradient(m) => m.attribute(model, input, targets),
            Method::IntegratedGradients(m) => m.attribute(model, input, targets),
        }?;
        for (what, t) in [("logits", &out.logits), ("attribution", &out.attribution)] {
            if let Some((count, first)) = crate::check::non_finite(t)? {
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
        }
    }
}

fn check(input: &Tensor, targets: &[usize]) -> Result<(usize, usize, usize)> {
    let (b, _, h, w) = input
        .dims4()
        .map_err(|_| ExplainError::Invalid(format!("input must be [B, C, H, W], got {:?}", input.dims())))?;
    if targets.len() != b {
        return Err(ExplainError::Invalid(format!("{} targets for a batch of {b}", targets.len())));
    }
    Ok((b, h, w))
}

/// Σ_b logits[b, targets[b]] — its gradient gives every sample's own gradient at once.
fn target_sum(logits: &Tensor, targets: &[usize], repeat: usize) -> Result<Tensor> {
    let classes = logits.dim(1)?;
    let rows = logits.dim(0)?;
    let mut mask = vec![0f32; rows * classes];
    for r in 0..rows {
        let t = targets[r / repeat];
        if t >= classes {
            return Err(ExplainError::Invalid(format!("target class {t} but the model has {classes} classes")));
        }
        mask[r * classes + t] = 1.0;
    }
    let mask = Tensor::from_vec(mask, (rows, classes), logits.device())?.to_dtype(logits.dtype())?;
    Ok(logits.mul(&mask)?.sum_all()?)
}

/// Gradient of the target logits with respect to `points` (`[B·repeat, C, H, W]`), and the
/// logits at those points (the guided mode changes only the backward pass, not the logits).
fn input_gradient<M: Explainable>(model: &M, points: &Tensor, targets: &[usize], repeat: usize, mode: ReluMode) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(points)?;
    let logits = model.forward(var.as_tensor(), mode)?;
    let grads = target_sum(&logits, targets, repeat)?.backward()?;
    let g = grads
        .get(var.as_tensor())
        .cloned()
        .ok_or_else(|| ExplainError::Invalid("the model's output does not depend on its input".into()))?;
    Ok((g, logits.detach()))
}

fn logits_of<M: Explainable>(model: &M, input: &Tensor) -> Result<Tensor> {
    Ok(model.forward(&input.detach(), ReluMode::Standard)?.detach())
}

/// Grad-CAM (Captum's `LayerGradCam`): weights = spatial mean of ∂y/∂A; map = Σ_k w_k A_k
/// (kept before ReLU as `layer_attribution`); `attribution` = bilinear upsampling
/// (align_corners = false) of ReLU(map) to the input size.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradCam;

impl GradCam {
    /// The layer map `[B, h, w]` before ReLU, and the logits.
    pub fn layer_map<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<(Tensor, Tensor)> {
        check(input, targets)?;
        let (activation, context) = model.forward_to_layer(&input.detach(), ReluMode::Standard)?;
        let activation = Var::from_tensor(&activation.detach())?;
        let logits = model.forward_from_layer(activation.as_tensor(), &context, ReluMode::Standard)?;
        let grads = target_sum(&logits, targets, 1)?.backward()?;
        let g = grads
            .get(activation.as_tensor())
            .ok_or_else(|| ExplainError::Invalid("the logits do not depend on the target layer".into()))?;
        let weights = g.mean_keepdim(3)?.mean_keepdim(2)?;
        let map = activation.as_tensor().broadcast_mul(&weights)?.sum(1)?;
        Ok((map, logits.detach()))
    }

    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let (_, h, w) = check(input, targets)?;
        let (map, logits) = self.layer_map(model, input, targets)?;
        let up = upsample_bilinear(&map.relu()?, (h, w))?.unsqueeze(1)?;
        Ok(Attribution { attribution: up, layer_attribution: Some(map), logits })
    }
}

/// Guided Backprop: the input gradient with every ReLU's backward replaced by guided ReLU.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuidedBackprop;

impl GuidedBackprop {
    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Guided)?;
        Ok(Attribution { attribution: g, layer_attribution: None, logits })
    }
}

/// Guided Grad-CAM (Captum's `GuidedGradCam`): Guided Backprop × the ReLU'd Grad-CAM map
/// upsampled with nearest interpolation, broadcast over channels.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuidedGradCam;

impl GuidedGradCam {
    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let (_, h, w) = check(input, targets)?;
        let (map, logits) = GradCam.layer_map(model, input, targets)?;
        let cam = upsample_nearest(&map.relu()?, (h, w))?.unsqueeze(1)?;
        let (guided, _) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Guided)?;
        Ok(Attribution { attribution: guided.broadcast_mul(&cam)?, layer_attribution: Some(map), logits })
    }
}

/// Saliency (Captum's default `abs=True`): |∂y/∂x|.
#[derive(Debug, Clone, Copy, Default)]
pub struct Saliency;

impl Saliency {
    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Standard)?;
        Ok(Attribution { attribution: g.abs()?, layer_attribution: None, logits })
    }
}

/// Input × Gradient.
#[derive(Debug, Clone, Copy, Default)]
pub struct InputXGradient;

impl InputXGradient {
    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        let (g, logits) = input_gradient(model, &input.detach(), targets, 1, ReluMode::Standard)?;
        Ok(Attribution { attribution: input.mul(&g)?, layer_attribution: None, logits })
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
    /// Given images `[N, C, H, W]` (shaped like one input image).
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
    /// Samples per forward/backward batch (all of them by default).
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
/// with x' = x + N(0, stdevs²), b drawn from the baselines, α ~ U(0, 1), all seeded.
#[derive(Debug, Clone, Default)]
pub struct GradientShap {
    pub config: GradientShapConfig,
}

impl GradientShap {
    pub fn new(config: GradientShapConfig) -> Self {
        Self { config }
    }

    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let (batch, _, _) = check(input, targets)?;
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
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        let noise = Normal::new(0.0f32, self.config.stdevs.max(0.0)).map_err(|e| ExplainError::Invalid(e.to_string()))?;
        // Points b + α(x' − b) and differences x' − b, sample-major within each image.
        let mut points = Vec::with_capacity(batch * n * per_image);
        let mut diffs = Vec::with_capacity(batch * n * per_image);
        for i in 0..batch {
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
        Ok(Attribution { attribution, layer_attribution: None, logits: logits_of(model, &input)? })
    }
}

/// Gradients at `points` (`[B·repeat, …]`, `repeat` consecutive rows per target) in chunks of
/// `batch_size` rows.
fn batched_gradients<M: Explainable>(model: &M, points: &Tensor, targets: &[usize], repeat: usize, batch_size: Option<usize>) -> Result<Tensor> {
    let rows = points.dim(0)?;
    let chunk = batch_size.unwrap_or(rows).max(1);
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
    /// Rows per forward/backward batch; `None` runs all steps of all images at once.
    pub internal_batch_size: Option<usize>,
    /// A baseline `[1, C, H, W]` (or one per image); `None` is the zero image.
    pub baseline: Option<Tensor>,
}

impl Default for IntegratedGradientsConfig {
    fn default() -> Self {
        Self { steps: 50, internal_batch_size: Some(25), baseline: None }
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

    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let (b, _, _) = check(input, targets)?;
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
        // Rows image-major: image i's steps are rows i·steps .. (i+1)·steps.
        let alpha_t = Tensor::from_vec(alphas.iter().map(|&a| a as f32).collect::<Vec<_>>(), (1, steps, 1, 1, 1), &Device::Cpu)?
            .to_device(input.device())?;
        let points = diff
            .unsqueeze(1)?
            .broadcast_mul(&alpha_t)?
            .broadcast_add(&baseline.unsqueeze(1)?)?;
        let mut flat_shape = input.dims().to_vec();
        flat_shape[0] = b * steps;
        let points = points.reshape(flat_shape)?;
        let grads = batched_gradients(model, &points, targets, steps, self.config.internal_batch_size)?;
        let w_t = Tensor::from_vec(weights.iter().map(|&w| w as f32).collect::<Vec<_>>(), (1, steps, 1, 1, 1), &Device::Cpu)?
            .to_device(input.device())?;
        let mut grid = input.dims().to_vec();
        grid.insert(1, steps);
        grid[0] = b;
        let integrated = grads.reshape(grid)?.broadcast_mul(&w_t)?.sum(1)?;
        Ok(Attribution { attribution: diff.mul(&integrated)?, layer_attribution: None, logits: logits_of(model, &input)? })
    }
}
