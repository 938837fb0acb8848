//! Captum's perturbation methods, with batched forward passes: [`Occlusion`] (a sliding window
//! over the pixels of images `[B, C, H, W]`, all channels at once) and [`FeatureAblation`]
//! (features given by a mask, inputs of any rank).

use candle_core::{DType, Tensor};

use std::any::Any;

use crate::attribute::{check, check_image, target_column, Attribute, Attribution, Unchecked};
use crate::error::{ExplainError, Result};
use crate::model::{Hooks, Model};

/// Occlusion (Captum's `Occlusion` with `sliding_window_shapes = (C, wh, ww)`,
/// `strides = (C, sh, sw)`): each window position is replaced by `baseline` in all channels and
/// the drop of the target logit, `y_t(x) − y_t(x_occluded)`, is given to every element of the
/// window; an element covered by several windows gets their average (Captum's weights). An
/// element no window covers (when the strides do not reach the border) gets 0, where Captum
/// divides 0 by 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occlusion {
    /// The window's height and width.
    pub window: (usize, usize),
    /// The window's steps down and across.
    pub stride: (usize, usize),
    /// The value an occluded or ablated element takes.
    pub baseline: f32,
    /// Occluded images per forward pass.
    pub batch_size: usize,
}

impl Default for Occlusion {
    /// A 16×16 window moved by 8 pixels, baseline 0.
    fn default() -> Self {
        Self { window: (16, 16), stride: (8, 8), baseline: 0.0, batch_size: 16 }
    }
}

/// Which elements of a sample are ablated together (Captum's `feature_mask`).
#[derive(Debug, Clone, Default)]
pub enum FeatureMask {
    /// Every element of a sample is its own feature (Captum's default).
    #[default]
    Elements,
    /// Images `[B, C, H, W]`: each `n × n` block of pixels, over all channels, is one feature
    /// (`Grid(1)`: one feature per pixel position).
    Grid(usize),
    /// Integer feature ids whose shape broadcasts to one sample (`[1, 1, H, W]` shares ids
    /// across channels, as Captum's masks do); elements with the same id are one feature.
    Ids(Tensor),
}

/// Captum's `FeatureAblation`: each feature in turn is replaced by `baseline` and
/// `y_t(x) − y_t(x_ablated)` is given to all its elements.
#[derive(Debug, Clone)]
pub struct FeatureAblation {
    /// The features.
    pub mask: FeatureMask,
    /// The value an occluded or ablated element takes.
    pub baseline: f32,
    /// Ablated inputs per forward pass.
    pub batch_size: usize,
}

impl Default for FeatureAblation {
    /// One feature per element, baseline 0.
    fn default() -> Self {
        Self { mask: FeatureMask::Elements, baseline: 0.0, batch_size: 16 }
    }
}

impl FeatureAblation {
    /// `grid × grid` pixel blocks over all channels.
    pub fn grid(grid: usize) -> Self {
        Self { mask: FeatureMask::Grid(grid), ..Self::default() }
    }
}

/// One perturbation: the flat indices, within one sample, set to the baseline.
pub(crate) type Region = Vec<usize>;

/// Every element of the `[y0, y1) × [x0, x1)` rectangle of a `c × h × w` image, all channels.
fn rectangle((c, h, w): (usize, usize, usize), (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> Region {
    (0..c).flat_map(|ch| (y0..y1).flat_map(move |y| (x0..x1).map(move |x| (ch * h + y) * w + x))).collect()
}

/// Perturbs every region of every sample, and gives each element the average drop
/// `y_t(x) − y_t(x with region r at the baseline)` of the regions that cover it (0 where none
/// does). The logits are those of the unperturbed batch.
fn attribute_regions(model: &dyn Model, input: &Tensor, targets: &[usize], regions: &[Region], baseline: f32, batch_size: usize) -> Result<Unchecked> {
    let logits = model.forward(&input.detach(), &Hooks::none())?.detach();
    let x: Vec<f32> = input.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let per_sample = x.len() / targets.len().max(1);
    let mut out = vec![0f32; x.len()];
    let mut count = vec![0u32; per_sample];
    for region in regions {
        for &e in region {
            count[e] += 1;
        }
    }
    for (i, &target) in targets.iter().enumerate() {
        let original = target_column(&logits.narrow(0, i, 1)?, target)?[0];
        let sample = &x[i * per_sample..(i + 1) * per_sample];
        let own = &mut out[i * per_sample..(i + 1) * per_sample];
        let perturbed = |k: usize, batch: &mut Vec<f32>| {
            let start = batch.len();
            batch.extend_from_slice(sample);
            for &e in &regions[k] {
                batch[start + e] = baseline;
            }
        };
        for (region, score) in regions.iter().zip(scores(model, input, regions.len(), perturbed, target, batch_size)?) {
            for &e in region {
                own[e] += original - score;
            }
        }
        for (v, &n) in own.iter_mut().zip(&count) {
            *v = if n > 0 { *v / n as f32 } else { 0.0 };
        }
    }
    Ok(Unchecked::new(Attribution {
        attribution: Tensor::from_vec(out, input.dims(), input.device())?,
        layer_attribution: None,
        logits: Some(logits),
        convergence_delta: None,
    }))
}

impl Attribute for Occlusion {
    fn name(&self) -> String {
        "occlusion".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let (_, h, w) = check_image(input, targets, "Occlusion")?;
        let c = input.dim(1)?;
        let ((wh, ww), (sh, sw)) = (self.window, self.stride);
        if wh == 0 || ww == 0 || sh == 0 || sw == 0 || wh > h || ww > w {
            return Err(ExplainError::Invalid(format!("Occlusion window {:?} / stride {:?} do not fit a {h}×{w} input", self.window, self.stride)));
        }
        // Captum's shift counts: 1 + ⌊(size − window) / stride⌋ per axis.
        let mut regions = Vec::new();
        for y in 0..=(h - wh) / sh {
            for x in 0..=(w - ww) / sw {
                regions.push(rectangle((c, h, w), (y * sh, y * sh + wh), (x * sw, x * sw + ww)));
            }
        }
        attribute_regions(model, input, targets, &regions, self.baseline, self.batch_size)
    }
}

impl Attribute for FeatureAblation {
    fn name(&self) -> String {
        "feature-ablation".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        check(input, targets)?;
        let regions = self.mask.regions(input, targets, "Feature Ablation")?;
        attribute_regions(model, input, targets, &regions, self.baseline, self.batch_size)
    }
}

impl FeatureMask {
    /// The features of one sample of `input`, each the flat indices of its elements, in
    /// feature order (ids in increasing order for [`FeatureMask::Ids`]).
    pub(crate) fn regions(&self, input: &Tensor, targets: &[usize], method: &str) -> Result<Vec<Region>> {
        check(input, targets)?;
        let per_sample: usize = input.dims()[1..].iter().product();
        Ok(match self {
            FeatureMask::Elements => (0..per_sample).map(|e| vec![e]).collect(),
            FeatureMask::Grid(0) => return Err(ExplainError::Invalid(format!("{method} needs a grid of at least 1 pixel"))),
            FeatureMask::Grid(g) => {
                let (_, h, w) = check_image(input, targets, &format!("{method} on a grid"))?;
                let c = input.dim(1)?;
                let mut regions = Vec::new();
                for y in (0..h).step_by(*g) {
                    for x in (0..w).step_by(*g) {
                        regions.push(rectangle((c, h, w), (y, (y + g).min(h)), (x, (x + g).min(w))));
                    }
                }
                regions
            }
            FeatureMask::Ids(ids) => mask_regions(ids, input)?,
        })
    }
}

/// The regions of a feature-id mask, in increasing id order.
fn mask_regions(ids: &Tensor, input: &Tensor) -> Result<Vec<Region>> {
    let mut sample = input.dims().to_vec();
    sample[0] = 1;
    let squeezed = if ids.rank() == sample.len() { ids.clone() } else { ids.unsqueeze(0)? };
    let flat: Vec<f64> = squeezed
        .broadcast_as(sample.as_slice())
        .map_err(|_| ExplainError::Invalid(format!("a feature mask {:?} does not broadcast to one sample {sample:?}", ids.dims())))?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    let mut by_id: std::collections::BTreeMap<i64, Region> = std::collections::BTreeMap::new();
    for (e, &id) in flat.iter().enumerate() {
        if id.fract() != 0.0 || !id.is_finite() {
            return Err(ExplainError::Invalid(format!("a feature mask holds integer ids, found {id} at flat index {e}")));
        }
        by_id.entry(id as i64).or_default().push(e);
    }
    Ok(by_id.into_values().collect())
}

/// What a forward-only method puts in place of a feature that is "absent": Captum's
/// `baselines`, a scalar or a tensor shaped like one sample.
#[derive(Debug, Clone)]
pub enum Baseline {
    /// Every element of an absent feature takes this value.
    Value(f32),
    /// Elements take the values of this sample (`[1, …]` or shaped like one sample).
    Sample(Tensor),
}

impl Default for Baseline {
    /// Zero, Captum's default.
    fn default() -> Self {
        Baseline::Value(0.0)
    }
}

impl Baseline {
    /// The baseline values of one sample of `input`.
    pub(crate) fn values(&self, input: &Tensor) -> Result<Vec<f32>> {
        let per_sample: usize = input.dims()[1..].iter().product();
        match self {
            Baseline::Value(v) if v.is_finite() => Ok(vec![*v; per_sample]),
            Baseline::Value(v) => Err(ExplainError::Invalid(format!("a baseline must be finite, got {v}"))),
            Baseline::Sample(t) => {
                let values: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let fits = t.dims() == &input.dims()[1..] || (t.rank() == input.rank() && t.dim(0)? == 1 && t.dims()[1..] == input.dims()[1..]);
                if !fits {
                    return Err(ExplainError::Invalid(format!("a baseline {:?} does not match one sample of an input {:?}", t.dims(), input.dims())));
                }
                if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                    return Err(ExplainError::Invalid(format!("the baseline holds a NaN or infinity at flat index {bad}")));
                }
                Ok(values)
            }
        }
    }
}

/// Appends one sample with each feature taken from `x` where `present[f]`, from `baseline`
/// elsewhere (elements of no feature keep `x`'s value).
pub(crate) fn compose(out: &mut Vec<f32>, x: &[f32], baseline: &[f32], regions: &[Region], present: &[bool]) {
    let start = out.len();
    out.extend_from_slice(x);
    for (region, &keep) in regions.iter().zip(present) {
        if !keep {
            for &e in region {
                out[start + e] = baseline[e];
            }
        }
    }
}

/// The target's score of `count` perturbed samples of `input`'s shape, sample `k` appended to
/// a batch by `sample_at(k, batch)`: `per_eval` samples per forward pass, only one pass's batch
/// in memory at a time.
pub(crate) fn scores(
    model: &dyn Model,
    input: &Tensor,
    count: usize,
    mut sample_at: impl FnMut(usize, &mut Vec<f32>),
    target: usize,
    per_eval: usize,
) -> Result<Vec<f32>> {
    let per_sample: usize = input.dims()[1..].iter().product();
    let per_eval = per_eval.max(1);
    let mut out = Vec::with_capacity(count);
    for first in (0..count).step_by(per_eval) {
        let n = per_eval.min(count - first);
        let mut batch = Vec::with_capacity(n * per_sample);
        for k in first..first + n {
            sample_at(k, &mut batch);
        }
        let mut shape = input.dims().to_vec();
        shape[0] = n;
        let batch = Tensor::from_vec(batch, shape, input.device())?.to_dtype(input.dtype())?;
        out.extend(target_column(&model.forward(&batch, &Hooks::none())?, target)?);
    }
    Ok(out)
}

/// A per-feature value given to every element of its feature, as a map shaped like one sample
/// (elements of no feature get 0).
pub(crate) fn spread(values: &[f64], regions: &[Region], per_sample: usize) -> Vec<f32> {
    let mut out = vec![0f32; per_sample];
    for (region, &v) in regions.iter().zip(values) {
        for &e in region {
            out[e] = v as f32;
        }
    }
    out
}
