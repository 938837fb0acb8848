//! The CAM family with the semantics of pytorch-grad-cam (jacobgil/pytorch-grad-cam): each
//! method makes a layer map `Σ_k w_k A_k` (or a per-position variant) from the target layer's
//! activation `A` `[B, K, …spatial]` (a map `[B, K, h, w]` or a volume `[B, K, d, h, w]`) and,
//! for the gradient methods, the gradient `G = ∂y_t/∂A`; sums `Σ_ij` run over all spatial
//! positions. `layer_attribution` is the library's `get_cam_image` result (before its ReLU and
//! min-max scaling); `attribution` is that map after ReLU, up-sampled (bi/trilinear,
//! align_corners=False) to the input, as for [`crate::GradCam`].
//!
//! | kind | map |
//! |---|---|
//! | HiResCAM | `Σ_k G_k ⊙ A_k` |
//! | Grad-CAM++ | `w_k = Σ_ij relu(G) α`, `α = G² / (2G² + Σ_ij A_k · G³ + 1e-6)` (0 where G = 0) |
//! | XGrad-CAM | `w_k = Σ_ij G A / (Σ_ij A_k + 1e-7)` |
//! | LayerCAM | `Σ_k relu(G_k) ⊙ A_k` |
//! | EigenCAM | projection of the centred `A` (positions × channels) on its first right singular vector |
//! | EigenGradCAM | the same projection of `G ⊙ A` |
//! | Score-CAM | `w = softmax_k(y_t(x ⊙ norm(up(A_k))))`: each channel, up-sampled with align_corners=True and min-max scaled, masks the input |
//! | Ablation-CAM | `w_k = (y_t − y_t(A with channel k ablated)) / y_t`; ablated = 0 when `min A = 0`, else `min A − 1e7` |
//!
//! A singular vector's sign is arbitrary (NumPy's depends on LAPACK); the Eigen methods pick
//! the sign that makes the projection's largest-magnitude value positive.

use std::any::Any;

use candle_core::Tensor;

use crate::attribute::{check, target_column, Attribute, Attribution, Method, Unchecked};
use crate::error::{ExplainError, Result};
use crate::gradient::{backward_of_targets, resolve_layer, unmarked_layer, upsample_map};
use crate::interpolate::{resize, Interpolation};
use crate::model::{Hooks, LayerGradient, Model};

/// Which CAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CamKind {
    /// HiResCAM: `Σ_k G_k ⊙ A_k`.
    HiResCam,
    /// Grad-CAM++.
    GradCamPlusPlus,
    /// XGrad-CAM.
    XGradCam,
    /// LayerCAM: `Σ_k relu(G_k) ⊙ A_k`.
    LayerCam,
    /// EigenCAM: the first principal component of the activation.
    EigenCam,
    /// EigenGradCAM: the first principal component of `G ⊙ A`.
    EigenGradCam,
    /// Score-CAM: channels weighted by the scores of the input they mask.
    ScoreCam,
    /// Ablation-CAM: channels weighted by the drop when each is ablated.
    AblationCam,
}

impl CamKind {
    /// Every kind, in the command line's order.
    pub const ALL: [CamKind; 8] = [
        CamKind::HiResCam,
        CamKind::GradCamPlusPlus,
        CamKind::XGradCam,
        CamKind::LayerCam,
        CamKind::EigenCam,
        CamKind::EigenGradCam,
        CamKind::ScoreCam,
        CamKind::AblationCam,
    ];

    /// pytorch-grad-cam's name in lower case (`hirescam`, `gradcam++`, …).
    pub fn name(self) -> &'static str {
        match self {
            CamKind::HiResCam => "hirescam",
            CamKind::GradCamPlusPlus => "gradcam++",
            CamKind::XGradCam => "xgradcam",
            CamKind::LayerCam => "layercam",
            CamKind::EigenCam => "eigencam",
            CamKind::EigenGradCam => "eigengradcam",
            CamKind::ScoreCam => "scorecam",
            CamKind::AblationCam => "ablationcam",
        }
    }

    fn needs_gradient(self) -> bool {
        !matches!(self, CamKind::EigenCam | CamKind::ScoreCam | CamKind::AblationCam)
    }
}

/// A CAM method at `layer` (the model's default when `None`); `batch_size` is the number of
/// masked inputs (Score-CAM) or ablated activations (Ablation-CAM) per forward pass
/// (16 as pytorch-grad-cam's; 128 for Ablation-CAM, where pytorch-grad-cam takes 32: each pass runs
/// the model up to the layer once for its whole batch of ablations, so fewer, larger passes are
/// cheaper, and the weights do not depend on the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cam {
    /// Which CAM.
    pub kind: CamKind,
    /// The layer (one the model marks); `None`: the model's default.
    pub layer: Option<String>,
    /// Score-CAM's masked inputs / Ablation-CAM's ablated activations per forward pass.
    pub batch_size: usize,
}

impl Cam {
    /// The CAM at the model's default layer, batch sizes 16 (128 for Ablation-CAM).
    pub fn new(kind: CamKind) -> Self {
        Self { kind, layer: None, batch_size: if kind == CamKind::AblationCam { 128 } else { 16 } }
    }

    /// The same method at the named layer.
    pub fn at(self, layer: impl Into<String>) -> Self {
        Self { layer: Some(layer.into()), ..self }
    }

    /// The layer map `[B, …layer spatial]` (before ReLU) and the logits.
    pub fn layer_map(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<(Tensor, Tensor)> {
        check(input, targets)?;
        let layer = resolve_layer(model, self.layer.as_deref())?;
        let gradient = if self.kind.needs_gradient() { LayerGradient::Cut } else { LayerGradient::None };
        let hooks = Hooks::none().watch_layer(&layer, gradient);
        let logits = model.forward(&input.detach(), &hooks)?;
        let activation = hooks.layer_activation().ok_or_else(|| unmarked_layer(&layer, &hooks))?;
        let dims = activation.dims().to_vec();
        if dims.len() < 3 {
            return Err(ExplainError::Invalid(format!("a CAM needs a layer [B, K, …spatial], got {dims:?} at `{layer}`")));
        }
        let (b, k) = (dims[0], dims[1]);
        let gradient = if self.kind.needs_gradient() {
            let grads = backward_of_targets(&logits, targets)?;
            let g = hooks.layer_gradient(&grads).ok_or_else(|| ExplainError::Invalid(format!("the logits do not depend on layer `{layer}`")))?;
            Some(to_vec(&g)?)
        } else {
            None
        };
        let logits = logits.detach();
        let a = to_vec(&activation)?;
        let hw: usize = dims[2..].iter().product();
        let mut maps = vec![0f32; b * hw];
        let plane = |i: usize, c: usize| -> std::ops::Range<usize> { (i * k + c) * hw..(i * k + c + 1) * hw };
        let weighted = |maps: &mut [f32], i: usize, weights: &[f32]| {
            for (c, wk) in weights.iter().enumerate() {
                for (m, v) in maps[i * hw..(i + 1) * hw].iter_mut().zip(&a[plane(i, c)]) {
                    *m += wk * v;
                }
            }
        };
        match self.kind {
            CamKind::HiResCam | CamKind::LayerCam => {
                let g = gradient.expect("gradient methods");
                for i in 0..b {
                    for c in 0..k {
                        let r = plane(i, c);
                        for ((m, av), gv) in maps[i * hw..(i + 1) * hw].iter_mut().zip(&a[r.clone()]).zip(&g[r]) {
                            let gv = if self.kind == CamKind::LayerCam { gv.max(0.0) } else { *gv };
                            *m += gv * av;
                        }
                    }
                }
            }
            CamKind::GradCamPlusPlus | CamKind::XGradCam => {
                let g = gradient.expect("gradient methods");
                for i in 0..b {
                    let weights: Vec<f32> = (0..k)
                        .map(|c| {
                            let r = plane(i, c);
                            let (ac, gc) = (&a[r.clone()], &g[r]);
                            let sum_a: f32 = ac.iter().sum();
                            if self.kind == CamKind::XGradCam {
                                gc.iter().zip(ac).map(|(g, a)| g * a).sum::<f32>() / (sum_a + 1e-7)
                            } else {
                                gc.iter()
                                    .map(|&g| {
                                        let (g2, g3) = (g * g, g * g * g);
                                        let alpha = if g != 0.0 { g2 / (2.0 * g2 + sum_a * g3 + 1e-6) } else { 0.0 };
                                        g.max(0.0) * alpha
                                    })
                                    .sum()
                            }
                        })
                        .collect();
                    weighted(&mut maps, i, &weights);
                }
            }
            CamKind::EigenCam | CamKind::EigenGradCam => {
                let source: Vec<f32> = match (&self.kind, &gradient) {
                    (CamKind::EigenGradCam, Some(g)) => a.iter().zip(g).map(|(a, g)| a * g).collect(),
                    _ => a.clone(),
                };
                for i in 0..b {
                    let projection = projection_2d(&source[i * k * hw..(i + 1) * k * hw], k, hw);
                    maps[i * hw..(i + 1) * hw].copy_from_slice(&projection);
                }
            }
            CamKind::ScoreCam => {
                for (i, weights) in self.score_cam_weights(model, input, targets, &activation)?.iter().enumerate() {
                    weighted(&mut maps, i, weights);
                }
            }
            CamKind::AblationCam => {
                for (i, weights) in self.ablation_cam_weights(model, &layer, input, targets, &a, &dims, &logits)?.iter().enumerate() {
                    weighted(&mut maps, i, weights);
                }
            }
        }
        let mut shape = vec![b];
        shape.extend(&dims[2..]);
        Ok((Tensor::from_vec(maps, shape, input.device())?, logits))
    }

    /// Score-CAM's channel weights per image: the softmax over channels of the target's score
    /// on the input masked by each channel's min–max-normalised, up-sampled activation.
    fn score_cam_weights(&self, model: &dyn Model, input: &Tensor, targets: &[usize], activation: &Tensor) -> Result<Vec<Vec<f32>>> {
        let dims = activation.dims();
        let (b, k) = (dims[0], dims[1]);
        let spatial = &input.dims()[2..];
        if spatial.len() != dims.len() - 2 {
            return Err(ExplainError::Invalid(format!("Score-CAM masks an input {:?} with a layer {dims:?}: their spatial axes differ", input.dims())));
        }
        let up = to_vec(&resize(activation, spatial, Interpolation::Linear { align_corners: true })?)?;
        let x = to_vec(&input.detach())?;
        let c_in = input.dim(1)?;
        let ihw: usize = spatial.iter().product();
        let mut out = Vec::with_capacity(b);
        for i in 0..b {
            let mut scores = Vec::with_capacity(k);
            for start in (0..k).step_by(self.batch_size.max(1)) {
                let n = self.batch_size.max(1).min(k - start);
                let mut batch = Vec::with_capacity(n * c_in * ihw);
                for c in start..start + n {
                    let m = &up[(i * k + c) * ihw..(i * k + c + 1) * ihw];
                    let (lo, hi) = m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                    for ch in 0..c_in {
                        let xc = &x[(i * c_in + ch) * ihw..(i * c_in + ch + 1) * ihw];
                        batch.extend(xc.iter().zip(m).map(|(x, m)| x * ((m - lo) / (hi - lo + 1e-8))));
                    }
                }
                let mut shape = input.dims().to_vec();
                shape[0] = n;
                let batch = Tensor::from_vec(batch, shape, input.device())?;
                let out = model.forward(&batch, &Hooks::none())?;
                scores.extend(target_column(&out, targets[i])?);
            }
            out.push(softmax(&scores));
        }
        Ok(out)
    }

    /// Ablation-CAM's channel weights per image: the relative drop of the target's score when
    /// the channel's activation `a` (flat, shaped `dims`) is ablated at `layer`.
    #[allow(clippy::too_many_arguments)]
    fn ablation_cam_weights(
        &self,
        model: &dyn Model,
        layer: &str,
        input: &Tensor,
        targets: &[usize],
        a: &[f32],
        dims: &[usize],
        logits: &Tensor,
    ) -> Result<Vec<Vec<f32>>> {
        let (b, k) = (dims[0], dims[1]);
        let hw: usize = dims[2..].iter().product();
        let min = a.iter().copied().fold(f32::INFINITY, f32::min);
        let ablated_value = if min == 0.0 { 0.0 } else { min - 1e7 };
        let mut out = Vec::with_capacity(b);
        for i in 0..b {
            let orig = logits.get(i)?.get(targets[i])?.to_scalar::<f32>()?;
            let one = &a[i * k * hw..(i + 1) * k * hw];
            let mut weights = Vec::with_capacity(k);
            for start in (0..k).step_by(self.batch_size.max(1)) {
                let n = self.batch_size.max(1).min(k - start);
                let mut batch = Vec::with_capacity(n * k * hw);
                for c in start..start + n {
                    let mut copy = one.to_vec();
                    copy[c * hw..(c + 1) * hw].fill(ablated_value);
                    batch.extend(copy);
                }
                let mut shape = dims.to_vec();
                shape[0] = n;
                let batch = Tensor::from_vec(batch, shape, input.device())?;
                let out = ablated_logits(model, layer, &input.narrow(0, i, 1)?, batch)?;
                weights.extend(target_column(&out, targets[i])?.into_iter().map(|s| (orig - s) / orig));
            }
            out.push(weights);
        }
        Ok(out)
    }
}

impl Attribute for Cam {
    fn name(&self) -> String {
        self.kind.name().into()
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let (map, logits) = self.layer_map(model, input, targets)?;
        let up = upsample_map(&map.relu()?, input, Interpolation::Linear { align_corners: false })?;
        Ok(Unchecked::new(Attribution { attribution: up, layer_attribution: Some(map), logits: Some(logits), convergence_delta: None }))
    }
    fn with_layer(&self, layer: &str) -> Option<Method> {
        Some(Method::new(self.clone().at(layer)))
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// Ablations of image `i` of a batch whose rest of the pass is bound to the batch: each
/// ablated activation replaces row `i` of the batch's activation, and row `i` of the output is
/// kept.
/// The logits of one image `[1, …]` with its activation at `layer` replaced by the `n` ablated
/// ones: one pass whose rest runs on `n` rows when the model carries what it needs past the
/// layer ([`Hooks::carry`]), else the image repeated `n` times (pytorch-grad-cam's way).
fn ablated_logits(model: &dyn Model, layer: &str, image: &Tensor, ablated: Tensor) -> Result<Tensor> {
    let n = ablated.dim(0)?;
    let expanded = ablated.clone();
    let hooks = Hooks::none().replace_layer(layer, move |_| Ok(expanded.clone()));
    if let Ok(out) = model.forward(image, &hooks) {
        if out.dim(0)? == n {
            return Ok(out);
        }
    }
    let mut dims = image.dims().to_vec();
    dims[0] = n;
    let repeated = image.broadcast_as(dims)?.contiguous()?;
    let hooks = Hooks::none().replace_layer(layer, move |_| Ok(ablated.clone()));
    Ok(model.forward(&repeated, &hooks)?)
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?)
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// pytorch-grad-cam's `get_2d_projection` of one `[K, hw]` activation: the positions × channels
/// matrix, centred per channel, projected on its first right singular vector. Computed from
/// the smaller Gram matrix by power iteration in f64.
fn projection_2d(activation: &[f32], k: usize, hw: usize) -> Vec<f32> {
    // X[p][c], centred per channel; NaN → 0 as the library does.
    let mut x = vec![0f64; hw * k];
    for c in 0..k {
        let plane = &activation[c * hw..(c + 1) * hw];
        let clean = |v: f32| if v.is_nan() { 0.0 } else { v as f64 };
        let mean = plane.iter().map(|&v| clean(v)).sum::<f64>() / hw as f64;
        for p in 0..hw {
            x[p * k + c] = clean(plane[p]) - mean;
        }
    }
    // The projection X v₁ equals σ₁ u₁; with the positions' Gram matrix X Xᵀ (hw × hw) it is
    // λ₁^{1/2} u₁, with the channels' XᵀX (k × k) it is X v₁ directly.
    let by_positions = hw <= k;
    let n = if by_positions { hw } else { k };
    let mut gram = vec![0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let s: f64 = if by_positions { (0..k).map(|c| x[i * k + c] * x[j * k + c]).sum() } else { (0..hw).map(|p| x[p * k + i] * x[p * k + j]).sum() };
            gram[i * n + j] = s;
            gram[j * n + i] = s;
        }
    }
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64 * 0.618_033_988_7).fract()).collect();
    let mut lambda = 0f64;
    for _ in 0..2000 {
        let mut next = vec![0f64; n];
        for i in 0..n {
            next[i] = (0..n).map(|j| gram[i * n + j] * v[j]).sum();
        }
        let norm = next.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm == 0.0 {
            return vec![0.0; hw];
        }
        next.iter_mut().for_each(|a| *a /= norm);
        let change: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        v = next;
        let converged = (norm - lambda).abs() <= 1e-12 * norm && change < 1e-10;
        lambda = norm;
        if converged {
            break;
        }
    }
    let mut projection: Vec<f64> =
        if by_positions { v.iter().map(|u| u * lambda.sqrt()).collect() } else { (0..hw).map(|p| (0..k).map(|c| x[p * k + c] * v[c]).sum()).collect() };
    let largest = projection.iter().copied().fold(0f64, |m, a| if a.abs() > m.abs() { a } else { m });
    if largest < 0.0 {
        projection.iter_mut().for_each(|a| *a = -*a);
    }
    projection.into_iter().map(|a| a as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_is_the_first_principal_component() {
        // Channel 1 is twice channel 0 along the positions, channel 2 is constant: the first
        // right singular vector is (1, 2, 0)/√5.
        let hw = 5;
        let c0 = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let c1 = [2.0f32, 4.0, 6.0, 8.0, 10.0];
        let act: Vec<f32> = c0.iter().chain(&c1).chain(&[7.0; 5]).copied().collect();
        let p = projection_2d(&act, 3, hw);
        // Centred: c0 − 3 and c1 − 6; projection = ±(c0' + 2 c1')/√5 (a singular vector's
        // sign is a convention).
        let want: Vec<f32> = (0..hw).map(|i| ((c0[i] - 3.0) + 2.0 * (c1[i] - 6.0)) / 5f32.sqrt()).collect();
        let sign = if p[0] * want[0] < 0.0 { -1.0 } else { 1.0 };
        for (got, want) in p.iter().zip(&want) {
            assert!((got - sign * want).abs() < 1e-5, "{p:?} vs ±{want:?}");
        }
        // The convention: the largest magnitude is positive.
        let largest = p.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        assert!(largest > 0.0);
        // More positions than channels takes the other Gram matrix: same answer.
        let wide: Vec<f32> = (0..2 * 7).map(|i| ((i * 7 % 5) as f32).sin()).collect();
        let by_channels = projection_2d(&wide, 2, 7);
        assert_eq!(by_channels.len(), 7);
        assert!(by_channels.iter().any(|v| v.abs() > 1e-3));
    }
}
