//! Captum's perturbation methods, with batched forward passes: [`Occlusion`] and
//! [`FeatureAblation`] on images `[B, C, H, W]`, windows and features spanning all channels.

use candle_core::Tensor;

use crate::error::{ExplainError, Result};
use crate::methods::{check, target_column, Attribution};
use crate::model::{Explainable, ReluMode};

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

/// Captum's `FeatureAblation` with a feature mask of `grid × grid` blocks over all channels
/// (`grid` 1 is one feature per pixel position): each feature in turn is replaced by `baseline`
/// and `y_t(x) − y_t(x_ablated)` is given to all its elements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureAblation {
    pub grid: usize,
    pub baseline: f32,
    /// Ablated images per forward pass.
    pub batch_size: usize,
}

impl Default for FeatureAblation {
    fn default() -> Self {
        Self { grid: 16, baseline: 0.0, batch_size: 16 }
    }
}

/// One perturbation: the rectangle `[y0, y1) × [x0, x1)` set to the baseline in all channels.
type Region = (usize, usize, usize, usize);

/// `y_t(x) − y_t(x with region r at the baseline)` for every region, image by image, and the
/// logits of the unperturbed batch (an input `check`ed by the caller).
fn region_drops<M: Explainable>(model: &M, input: &Tensor, targets: &[usize], regions: &[Region], baseline: f32, batch_size: usize) -> Result<(Vec<Vec<f32>>, Tensor)> {
    let (c, h, w) = (input.dim(1)?, input.dim(2)?, input.dim(3)?);
    let logits = model.forward(&input.detach(), ReluMode::Standard)?.detach();
    let x: Vec<f32> = input.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    let per_image = c * h * w;
    let mut drops = Vec::with_capacity(targets.len());
    for (i, &target) in targets.iter().enumerate() {
        let original = target_column(&logits.narrow(0, i, 1)?, target)?[0];
        let image = &x[i * per_image..(i + 1) * per_image];
        let mut own = Vec::with_capacity(regions.len());
        for chunk in regions.chunks(batch_size.max(1)) {
            let mut batch = Vec::with_capacity(chunk.len() * per_image);
            for &(y0, y1, x0, x1) in chunk {
                let mut copy = image.to_vec();
                for ch in 0..c {
                    for y in y0..y1 {
                        copy[ch * h * w + y * w + x0..ch * h * w + y * w + x1].fill(baseline);
                    }
                }
                batch.extend(copy);
            }
            let batch = Tensor::from_vec(batch, (chunk.len(), c, h, w), input.device())?;
            let scores = target_column(&model.forward(&batch, ReluMode::Standard)?, target)?;
            own.extend(scores.into_iter().map(|s| original - s));
        }
        drops.push(own);
    }
    Ok((drops, logits))
}

impl Occlusion {
    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let (b, h, w) = check(input, targets)?;
        let c = input.dim(1)?;
        let ((wh, ww), (sh, sw)) = (self.window, self.stride);
        if wh == 0 || ww == 0 || sh == 0 || sw == 0 || wh > h || ww > w {
            return Err(ExplainError::Invalid(format!("Occlusion window {:?} / stride {:?} do not fit a {h}×{w} input", self.window, self.stride)));
        }
        // Captum's shift counts: 1 + ⌊(size − window) / stride⌋ per axis.
        let mut regions = Vec::new();
        for y in 0..=(h - wh) / sh {
            for x in 0..=(w - ww) / sw {
                regions.push((y * sh, y * sh + wh, x * sw, x * sw + ww));
            }
        }
        let (drops, logits) = region_drops(model, input, targets, &regions, self.baseline, self.batch_size)?;
        let mut out = vec![0f32; b * c * h * w];
        for (i, own) in drops.iter().enumerate() {
            let mut total = vec![0f32; h * w];
            let mut count = vec![0f32; h * w];
            for (&(y0, y1, x0, x1), d) in regions.iter().zip(own) {
                for y in y0..y1 {
                    for x in x0..x1 {
                        total[y * w + x] += d;
                        count[y * w + x] += 1.0;
                    }
                }
            }
            for ch in 0..c {
                for (p, (t, n)) in total.iter().zip(&count).enumerate() {
                    out[(i * c + ch) * h * w + p] = if *n > 0.0 { t / n } else { 0.0 };
                }
            }
        }
        Ok(Attribution { attribution: Tensor::from_vec(out, (b, c, h, w), input.device())?, layer_attribution: None, logits: Some(logits) })
    }
}

impl FeatureAblation {
    pub fn attribute<M: Explainable>(&self, model: &M, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        let (b, h, w) = check(input, targets)?;
        let c = input.dim(1)?;
        let g = self.grid;
        if g == 0 {
            return Err(ExplainError::Invalid("Feature Ablation needs a grid of at least 1 pixel".into()));
        }
        let mut regions = Vec::new();
        for y in (0..h).step_by(g) {
            for x in (0..w).step_by(g) {
                regions.push((y, (y + g).min(h), x, (x + g).min(w)));
            }
        }
        let (drops, logits) = region_drops(model, input, targets, &regions, self.baseline, self.batch_size)?;
        let mut out = vec![0f32; b * c * h * w];
        for (i, own) in drops.iter().enumerate() {
            for (&(y0, y1, x0, x1), d) in regions.iter().zip(own) {
                for ch in 0..c {
                    for y in y0..y1 {
                        out[(i * c + ch) * h * w + y * w + x0..(i * c + ch) * h * w + y * w + x1].fill(*d);
                    }
                }
            }
        }
        Ok(Attribution { attribution: Tensor::from_vec(out, (b, c, h, w), input.device())?, layer_attribution: None, logits: Some(logits) })
    }
}
