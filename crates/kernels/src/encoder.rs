//! A whole ViT encoder block (pre-norm attention and MLP with residuals) as one op whose
//! backward reuses what the forward kept.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::attention::Attention;
use crate::elementwise::{gelu_backward_rows, gelu_rows, ELEMENTS_PER_TASK};
use crate::matmul::{linear_input_grad_rows, linear_rows, Linear};
use crate::norm::{layer_norm_backward_rows, layer_norm_rows, LayerNorm};
use crate::shared::{backward, contiguous_f32};

/// A pre-LayerNorm transformer encoder block as one op (ViT's layer):
/// `h = x + W_o·Attn(W_qkv·LN₁(x))`, `y = h + W₂·GELU(W₁·LN₂(h))`. The forward keeps what its
/// backward needs (the projections `[Q | K | V]`, the residual `h`, the MLP's pre-activation)
/// and the backward forms the input gradient through the whole block, so the autograd graph
/// holds one node per block instead of a dozen — without a zero-filled gradient buffer, an
/// accumulation and a residual add for every inner tensor. Same operations in the same order
/// as the layers applied one by one (sums commute), so the same results.
#[derive(Debug, Clone)]
pub struct EncoderBlock {
    pub layernorm_before: LayerNorm,
    pub qkv: Linear,
    pub output: Linear,
    pub layernorm_after: LayerNorm,
    pub intermediate: Linear,
    pub mlp_output: Linear,
    pub heads: usize,
    /// The exact (erf) GELU, else the tanh approximation.
    pub exact_gelu: bool,
}

/// What the block's backward reads, kept by its forward.
pub(crate) struct EncoderSaved {
    qkv: Vec<f32>,
    h: Vec<f32>,
    pre_activation: Vec<f32>,
}

impl EncoderBlock {
    /// The block on `x` `[B, T, H]` (CPU tensors; elsewhere apply the layers one by one).
    pub fn forward(self: &Arc<Self>, x: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden();
        if x.rank() != 3 || x.dim(2)? != hidden || !x.device().is_cpu() {
            candle_core::bail!("encoder block: input {:?} on {:?} is not [B, T, {hidden}] on the CPU", x.dims(), x.device().location());
        }
        x.contiguous()?.apply_op1(EncoderBlockOp { block: self.clone(), saved: Arc::new(OnceLock::new()) })
    }

    fn hidden(&self) -> usize {
        self.layernorm_before.flat_weight.len()
    }

    fn intermediate_size(&self) -> usize {
        self.intermediate.params.flat_weight.len() / self.hidden()
    }

    fn run(&self, x: &[f32], (b, t): (usize, usize)) -> (Vec<f32>, EncoderSaved) {
        let (hd, inter) = (self.hidden(), self.intermediate_size());
        let linear = |l: &Linear, v: &[f32], dims| linear_rows(v, &l.params.flat_weight, l.params.flat_bias.as_deref().map(Vec::as_slice), dims);
        let (ln1, ln2) = (&self.layernorm_before, &self.layernorm_after);
        let qkv = linear(&self.qkv, &layer_norm_rows(x, &ln1.flat_weight, &ln1.flat_bias, ln1.eps), (hd, 3 * hd));
        let context = Attention { heads: self.heads }.forward_rows(&qkv, (b, t, 3 * hd));
        let mut h = linear(&self.output, &context, (hd, hd));
        add_in_place(&mut h, x);
        let pre_activation = linear(&self.intermediate, &layer_norm_rows(&h, &ln2.flat_weight, &ln2.flat_bias, ln2.eps), (hd, inter));
        let mut y = linear(&self.mlp_output, &gelu_rows(&pre_activation, self.exact_gelu), (inter, hd));
        add_in_place(&mut y, &h);
        (y, EncoderSaved { qkv, h, pre_activation })
    }

    fn input_gradient(&self, x: &[f32], saved: &EncoderSaved, dy: &[f32], (b, t): (usize, usize)) -> Vec<f32> {
        let (hd, inter) = (self.hidden(), self.intermediate_size());
        let (ln1, ln2) = (&self.layernorm_before, &self.layernorm_after);
        let d_act = linear_input_grad_rows(dy, &self.mlp_output.params.flat_weight, (inter, hd));
        let d_pre = gelu_backward_rows(&saved.pre_activation, &d_act, self.exact_gelu);
        let d_norm2 = linear_input_grad_rows(&d_pre, &self.intermediate.params.flat_weight, (hd, inter));
        let mut dh = layer_norm_backward_rows(&saved.h, &d_norm2, &ln2.flat_weight, ln2.eps);
        add_in_place(&mut dh, dy);
        let d_context = linear_input_grad_rows(&dh, &self.output.params.flat_weight, (hd, hd));
        let d_qkv = Attention { heads: self.heads }.backward_rows(&saved.qkv, &d_context, (b, t, 3 * hd));
        let d_norm1 = linear_input_grad_rows(&d_qkv, &self.qkv.params.flat_weight, (hd, 3 * hd));
        let mut dx = layer_norm_backward_rows(x, &d_norm1, &ln1.flat_weight, ln1.eps);
        add_in_place(&mut dx, &dh);
        dx
    }
}

/// `acc += v`, elementwise, in parallel blocks.
pub(crate) fn add_in_place(acc: &mut [f32], v: &[f32]) {
    acc.par_chunks_mut(ELEMENTS_PER_TASK).zip(v.par_chunks(ELEMENTS_PER_TASK)).for_each(|(a, v)| a.iter_mut().zip(v).for_each(|(a, v)| *a += v));
}

pub(crate) struct EncoderBlockOp {
    block: Arc<EncoderBlock>,
    saved: Arc<OnceLock<EncoderSaved>>,
}

impl CustomOp1 for EncoderBlockOp {
    fn name(&self) -> &'static str {
        "encoder-block"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "encoder block")?;
        let (b, t, _) = layout.shape().dims3()?;
        let (y, saved) = self.block.run(x, (b, t));
        // Kept only while the output is part of a graph being differentiated: without
        // gradient tracking candle drops this op, and the activations with it.
        let _ = self.saved.set(saved);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("encoder-block-backward", arg, grad_res, |x, dy, shape| {
            let (b, t, _) = shape.dims3()?;
            let recomputed;
            let saved = match self.saved.get() {
                Some(saved) => saved,
                None => {
                    recomputed = self.block.run(x, (b, t)).1;
                    &recomputed
                }
            };
            Ok(self.block.input_gradient(x, saved, dy, (b, t)))
        })?))
    }
}
