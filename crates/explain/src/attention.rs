//! Explanations from a transformer's attention (marked with [`Hooks::attention`]), as maps over the
//! patch grid up-sampled to the input:
//! - [`AttentionRollout`] (Abnar & Zuidema 2020, as jacobgil/vit-explain computes it): per
//!   block, the heads fused (mean, max or min), the lowest `discard_ratio` of the fused matrix's
//!   entries zeroed (never the class token's attention to itself), `Â = (A + I) / 2` with rows
//!   renormalised, `R = Â_L ⋯ Â_1`; the map is `R[CLS, patches]`. (vit-explain divides by
//!   `a.sum(dim=-1)` broadcast along the last axis, which scales columns; we renormalise rows,
//!   as the method is defined.)
//! - [`Chefer`] (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability"): `R = I`;
//!   for each block in order `Ā = mean_heads((∇A ⊙ A)⁺)` with ∇A the gradient of the target
//!   logit, `R ← R + Ā·R`; the map is `R[CLS, patches]`.
//!
//! `layer_attribution` is the map `[B, h, w]` itself (no scaling); `attribution` its bilinear
//! up-sampling (align_corners = false) to the input `[B, 1, H, W]`.

use candle_core::{DType, Tensor};

use std::any::Any;

use crate::attribute::{check, Attribute, Attribution, Unchecked};
use crate::error::{ExplainError, Result};
use crate::gradient::{backward_of_targets, upsample_map};
use crate::interpolate::Interpolation;
use crate::model::{Hooks, Model};

/// How attention rollout fuses the heads of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadFusion {
    #[default]
    /// The mean over heads.
    Mean,
    /// The maximum over heads.
    Max,
    /// The minimum over heads.
    Min,
}

/// Attention rollout; `discard_ratio` in [0, 1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AttentionRollout {
    /// How each block's heads are fused.
    pub head_fusion: HeadFusion,
    /// The fraction of each block's fused entries, the lowest, set to zero.
    pub discard_ratio: f32,
}

/// Chefer et al.'s gradient-weighted attention relevance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chefer;

/// The attention probabilities of every block, as `[B][block]` row-major `heads × T × T`
/// matrices, with their gradients when asked for.
struct Trace {
    probs: Vec<Vec<f32>>,
    grads: Option<Vec<Vec<f32>>>,
    logits: Tensor,
    heads: usize,
    tokens: usize,
    grid: (usize, usize),
    blocks: usize,
}

fn trace(model: &dyn Model, input: &Tensor, targets: &[usize], gradients: bool) -> Result<Trace> {
    let batch = check(input, targets)?;
    let hooks = Hooks::none().watch_attention(gradients);
    // The input as a variable, so that the pass is recorded for the backward pass.
    let var = candle_core::Var::from_tensor(&input.detach())?;
    let logits = model.forward(var.as_tensor(), &hooks)?;
    let (recorded, grids) = hooks.attention_maps();
    let Some((heads, tokens)) = recorded.first().map(|p| (p.dim(1), p.dim(2))) else {
        return Err(ExplainError::Invalid("the attention methods need a transformer that marks its attention probabilities (Hooks::attention)".into()));
    };
    let (heads, tokens) = (heads?, tokens?);
    let grid = grids[0];
    if grids.iter().any(|g| *g != grid) {
        return Err(ExplainError::Invalid(format!("the blocks' attention maps are marked with different patch grids: {grids:?}")));
    }
    if tokens != grid.0 * grid.1 + 1 {
        return Err(ExplainError::Invalid(format!("{tokens} tokens for a {}×{} patch grid and a class token", grid.0, grid.1)));
    }
    let grads = if gradients {
        backward_of_targets(&logits, targets)?;
        Some(hooks.attention_gradients().ok_or_else(|| ExplainError::Invalid("the logits do not depend on every block's attention".into()))?)
    } else {
        None
    };
    let per_image = |tensors: &[Tensor]| -> Result<Vec<Vec<f32>>> {
        let mut images = vec![Vec::with_capacity(tensors.len() * heads * tokens * tokens); batch];
        for t in tensors {
            if t.dims() != [batch, heads, tokens, tokens] {
                return Err(ExplainError::Invalid(format!("attention {:?}, expected [{batch}, {heads}, {tokens}, {tokens}]", t.dims())));
            }
            let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            for (image, chunk) in images.iter_mut().zip(v.chunks(heads * tokens * tokens)) {
                image.extend_from_slice(chunk);
            }
        }
        Ok(images)
    };
    Ok(Trace {
        probs: per_image(&recorded)?,
        grads: grads.map(|g| per_image(&g)).transpose()?,
        logits: logits.detach(),
        heads,
        tokens,
        grid,
        blocks: recorded.len(),
    })
}

/// `a · r` for `n × n` row-major matrices.
fn matmul(a: &[f64], r: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik != 0.0 {
                for (o, rv) in out[i * n..(i + 1) * n].iter_mut().zip(&r[k * n..(k + 1) * n]) {
                    *o += aik * rv;
                }
            }
        }
    }
    out
}

fn identity(n: usize) -> Vec<f64> {
    let mut m = vec![0f64; n * n];
    for i in 0..n {
        m[i * n + i] = 1.0;
    }
    m
}

/// The maps `R[CLS, patches]` as `[B, h, w]` and the up-sampled attribution.
fn finish(trace: &Trace, maps: Vec<f32>, input: &Tensor) -> Result<Attribution> {
    let (h, w) = trace.grid;
    let map = Tensor::from_vec(maps, (trace.probs.len(), h, w), input.device())?;
    let up = upsample_map(&map, input, Interpolation::Linear { align_corners: false })?;
    Ok(Attribution { attribution: up, layer_attribution: Some(map), logits: Some(trace.logits.clone()), convergence_delta: None })
}

impl Attribute for AttentionRollout {
    fn name(&self) -> String {
        "attention-rollout".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        if !(0.0..1.0).contains(&self.discard_ratio) {
            return Err(ExplainError::Invalid(format!("the discard ratio must be in [0, 1), got {}", self.discard_ratio)));
        }
        let trace = trace(model, input, targets, false)?;
        let (n, heads) = (trace.tokens, trace.heads);
        let mut maps = Vec::with_capacity(trace.probs.len() * (n - 1));
        for image in &trace.probs {
            let mut r = identity(n);
            for block in image.chunks(heads * n * n).take(trace.blocks) {
                let mut fused: Vec<f64> = (0..n * n)
                    .map(|e| {
                        let values = (0..heads).map(|hd| block[hd * n * n + e] as f64);
                        match self.head_fusion {
                            HeadFusion::Mean => values.sum::<f64>() / heads as f64,
                            HeadFusion::Max => values.fold(f64::NEG_INFINITY, f64::max),
                            HeadFusion::Min => values.fold(f64::INFINITY, f64::min),
                        }
                    })
                    .collect();
                let discard = (n as f32 * n as f32 * self.discard_ratio) as usize;
                if discard > 0 {
                    let mut order: Vec<usize> = (0..n * n).collect();
                    order.sort_by(|&a, &b| fused[a].total_cmp(&fused[b]));
                    for &e in order[..discard].iter().filter(|&&e| e != 0) {
                        fused[e] = 0.0;
                    }
                }
                for i in 0..n {
                    fused[i * n + i] += 1.0;
                    let row = &mut fused[i * n..(i + 1) * n];
                    let sum: f64 = row.iter().sum();
                    row.iter_mut().for_each(|v| *v /= sum);
                }
                r = matmul(&fused, &r, n);
            }
            maps.extend(r[1..n].iter().map(|&v| v as f32));
        }
        finish(&trace, maps, input).map(Unchecked::new)
    }
}

impl Attribute for Chefer {
    fn name(&self) -> String {
        "chefer".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let trace = trace(model, input, targets, true)?;
        let (n, heads) = (trace.tokens, trace.heads);
        let grads = trace.grads.as_ref().expect("asked for gradients");
        let mut maps = Vec::with_capacity(trace.probs.len() * (n - 1));
        for (image, grad) in trace.probs.iter().zip(grads) {
            let mut r = identity(n);
            for (a, g) in image.chunks(heads * n * n).zip(grad.chunks(heads * n * n)) {
                let mean: Vec<f64> = (0..n * n)
                    .map(|e| (0..heads).map(|hd| (a[hd * n * n + e] as f64 * g[hd * n * n + e] as f64).max(0.0)).sum::<f64>() / heads as f64)
                    .collect();
                let add = matmul(&mean, &r, n);
                r.iter_mut().zip(add).for_each(|(r, a)| *r += a);
            }
            maps.extend(r[1..n].iter().map(|&v| v as f32));
        }
        finish(&trace, maps, input).map(Unchecked::new)
    }
}
