//! Captum's perturbation methods, with batched forward passes: [`Occlusion`] (a sliding window
//! over the pixels of images `[B, C, H, W]`, all channels at once) and [`FeatureAblation`]
//! (features given by a mask, inputs of any rank).

use candle_core::{DType, Tensor};

use crate::error::{ExplainError, Result};
use crate::methods::{check, check_image, target_column, Attribution};
use crate::model::{Model, ReluMode};

/// Occlusion (Captum's `Occlusion` with `sliding_window_shapes = (C, wh, ww)`,
/// `strides = (C, sh, sw)`): each window position is replaced by `baseline` in all channels and
/// the drop of the target logit, `y_t(x) − y_t(x_occluded)`, is given to every element of the
/// window; an element covered by several windows gets their average (Captum's weights). An
/// element no window covers (when the strides do not reach the border) gets 0, where Captum
/// divides 0 by 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occlusion {
    pub window: (usize, usize),
    pub stride: (usize, usize),
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
    pub mask: FeatureMask,
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
type Region = Vec<usize>;

/// Every element of the `[y0, y1) × [x0, x1)` rectangle of a `c × h × w` image, all channels.
fn rectangle((c, h, w): (usize, usize, usize), (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> Region {
    (0..c).flat_map(|ch| (y0..y1).flat_map(move |y| (x0..x1).map(move |x| (ch * h + y) * w + x))).collect()
}

/// Perturbs every region of every sample, and gives each element the average drop
/// `y_t(x) − y_t(x with region r at the baseline)` of the regions that cover it (0 where none
/// does). The logits are those of the unperturbed batch.
fn attribute_regions<M: Model + ?Sized>(
    model: &M,
    input: &Tensor,
    targets: &[usize],
    regions: &[Region],
    baseline: f32,
    batch_size: usize,
) -> Result<Attribution> {
    let logits = model.forward(&input.detach(), ReluMode::Standard)?.detach();
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
        for chunk in regions.chunks(batch_size.max(1)) {
            let mut batch = Vec::with_capacity(chunk.len() * per_sample);
            for region in chunk {
                let start = batch.len();
                batch.extend_from_slice(sample);
                for &e in region {
                    batch[start + e] = baseline;
                }
            }
            let mut shape = input.dims().to_vec();
            shape[0] = chunk.len();
            let scores = target_column(&model.forward(&Tensor::from_vec(batch, shape, input.device())?, ReluMode::Standard)?, target)?;
            for (region, score) in chunk.iter().zip(scores) {
                for &e in region {
                    own[e] += original - score;
                }
            }
        }
        for (v, &n) in own.iter_mut().zip(&count) {
            *v = if n > 0 { *v / n as f32 } else { 0.0 };
        }
    }
    Ok(Attribution { attribution: Tensor::from_vec(out, input.dims(), input.device())?, layer_attribution: None, logits: Some(logits) })
}

impl Occlusion {
    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
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

impl FeatureAblation {
    pub fn attribute<M: Model + ?Sized>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        check(input, targets)?;
        let per_sample: usize = input.dims()[1..].iter().product();
        let regions: Vec<Region> = match &self.mask {
            FeatureMask::Elements => (0..per_sample).map(|e| vec![e]).collect(),
            FeatureMask::Grid(0) => return Err(ExplainError::Invalid("Feature Ablation needs a grid of at least 1 pixel".into())),
            FeatureMask::Grid(g) => {
                let (_, h, w) = check_image(input, targets, "Feature Ablation on a grid")?;
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
        };
        attribute_regions(model, input, targets, &regions, self.baseline, self.batch_size)
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
