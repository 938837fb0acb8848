//! Elementwise ops with their backward passes: the ReLU's backward rules (standard, guided,
//! deconvolution) as a fused kernel applies them, and GELU (exact erf and tanh forms).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::shared::{backward, contiguous_f32};
use crate::vecmath::{self};

/// The backward rule of a ReLU, which an explainer chooses (`tgc_explain::ReluMode` maps onto
/// it one to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReluRule {
    /// The derivative: the gradient where the input was positive.
    #[default]
    Standard,
    /// Guided backpropagation: `max(grad, 0)` where the input was positive.
    Guided,
    /// Deconvolution: `max(grad, 0)` everywhere, the forward mask ignored.
    Deconvolution,
}

/// ReLU whose backward follows `rule`, on any device (the rule's kernel is CPU code; the copies
/// are differentiable).
pub fn relu(x: &Tensor, rule: ReluRule) -> Result<Tensor> {
    if rule == ReluRule::Standard {
        return x.relu();
    }
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(RuledRelu(rule))
    } else {
        x.to_device(&candle_core::Device::Cpu)?.contiguous()?.apply_op1(RuledRelu(rule))?.to_device(x.device())
    }
}

/// `max(x, 0)` whose backward is [`ReluMask`] under its rule.
struct RuledRelu(ReluRule);

impl CustomOp1 for RuledRelu {
    fn name(&self) -> &'static str {
        "relu-with-rule"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "relu")?;
        Ok((CpuStorage::F32(x.iter().map(|v| v.max(0.0)).collect()), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op2_no_bwd(&res.contiguous()?, &ReluMask(self.0))?))
    }
}

/// (gradient, ReLU output) → the gradient at the ReLU's input: `grad` where the output is
/// positive (PyTorch's `threshold_backward`), `max(grad, 0)` there under the guided rule, and
/// `max(grad, 0)` everywhere under the deconvolution rule.
pub(crate) struct ReluMask(pub(crate) ReluRule);

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let grad = contiguous_f32(s1, l1, "relu backward")?;
        let out = contiguous_f32(s2, l2, "relu backward")?;
        if grad.len() != out.len() {
            candle_core::bail!("relu backward: gradient {:?} and output {:?} differ", l1.shape(), l2.shape());
        }
        let (guided, deconvolution) = (self.0 == ReluRule::Guided, self.0 == ReluRule::Deconvolution);
        let mut masked = vec![0f32; grad.len()];
        const CHUNK: usize = 1 << 14;
        masked.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(out.par_chunks(CHUNK)).for_each(|((m, g), o)| {
            for ((m, &g), &o) in m.iter_mut().zip(g).zip(o) {
                *m = if deconvolution || (guided && o > 0.0) {
                    g.max(0.0)
                } else if o > 0.0 {
                    g
                } else {
                    0.0
                };
            }
        });
        Ok((CpuStorage::F32(masked), l1.shape().clone()))
    }
}

/// GELU as one op with a one-pass backward: the exact form `x·Φ(x)` (derivative
/// `Φ(x) + x·φ(x)`, `erf` as PyTorch's vectorised kernel computes it, see [`vecmath`]) or the
/// tanh approximation (`gelu_new`), elements in parallel.
pub fn gelu(x: &Tensor, exact: bool) -> Result<Tensor> {
    if !x.device().is_cpu() {
        return if exact { x.gelu_erf() } else { x.gelu() };
    }
    x.contiguous()?.apply_op1(Gelu { exact })
}

#[derive(Clone, Copy)]
pub(crate) struct Gelu {
    exact: bool,
}

pub(crate) const ELEMENTS_PER_TASK: usize = 1 << 14;

/// GELU of every element, in parallel blocks.
pub(crate) fn gelu_rows(x: &[f32], exact: bool) -> Vec<f32> {
    let mut y = x.to_vec();
    y.par_chunks_mut(ELEMENTS_PER_TASK).for_each(|c| vecmath::gelu_in_place(c, exact));
    y
}

/// The input gradient of [`gelu_rows`] at `x` for the gradient `g`.
pub(crate) fn gelu_backward_rows(x: &[f32], g: &[f32], exact: bool) -> Vec<f32> {
    let mut dx = g.to_vec();
    dx.par_chunks_mut(ELEMENTS_PER_TASK).zip(x.par_chunks(ELEMENTS_PER_TASK)).for_each(|(d, x)| vecmath::gelu_backward_in_place(x, d, exact));
    dx
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "gelu")?;
        Ok((CpuStorage::F32(gelu_rows(x, self.exact)), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("gelu-backward", arg, grad_res, |x, g, _| Ok(gelu_backward_rows(x, g, self.exact)))?))
    }
}
