//! Softmax over the last axis (scaled, with its backward) and multi-head self-attention from a
//! packed `[Q | K | V]` projection, forward and backward in one op each.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::matmul::{gemm_strided, Mat, Threads};
use crate::shared::{backward, contiguous_f32, rows_chunk, rows_par, SharedPtr};
use crate::vecmath::{self};

/// Softmax over the last dimension, `softmax(x / scale)`, as one op with its own backward
/// `dx = y ⊙ (g − Σ g ⊙ y) / scale` (candle-nn's fused kernel has none). Rows run in parallel.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    scaled_softmax_last_dim(x, 1.0)
}

/// `softmax(x / divisor)` over the last dimension (attention scores over `√d_head`: the
/// division is done as PyTorch's `scores / math.sqrt(d)` does it).
pub fn scaled_softmax_last_dim(x: &Tensor, divisor: f32) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let x = (x / divisor as f64)?;
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        return e.broadcast_div(&e.sum_keepdim(D::Minus1)?);
    }
    x.contiguous()?.apply_op1(Softmax { divisor })
}

/// The softmax backward of one row in place: `g ← y ⊙ (g − Σ g ⊙ y) / divisor`.
pub(crate) fn softmax_backward_row(g: &mut [f32], y: &[f32], divisor: f32) {
    let dot: f32 = g.iter().zip(y).map(|(g, y)| g * y).sum();
    for (d, y) in g.iter_mut().zip(y) {
        *d = y * (*d - dot) / divisor;
    }
}

pub(crate) struct Softmax {
    divisor: f32,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "softmax")?;
        let n = layout.shape().dims().last().copied().unwrap_or(1);
        let mut y = x.to_vec();
        rows_par(&mut y, n).for_each(|block| block.chunks_mut(n).for_each(|row| vecmath::softmax_in_place(row, self.divisor)));
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("softmax-last-dim-backward", res, grad_res, |y, g, shape| {
            let n = shape.dims().last().copied().unwrap_or(1);
            let mut dx = g.to_vec();
            let chunk = rows_chunk(n);
            dx.par_chunks_mut(chunk).zip(y.par_chunks(chunk)).for_each(|(block, yb)| {
                for (row, yr) in block.chunks_mut(n).zip(yb.chunks(n)) {
                    softmax_backward_row(row, yr, self.divisor);
                }
            });
            Ok(dx)
        })?))
    }
}

/// Multi-head self-attention on the packed projections `qkv` `[B, T, 3H]` (`[Q | K | V]`, heads
/// side by side within each, as one fused `Linear` gives them): per batch item and head,
/// `softmax(Q Kᵀ / √d) V`, written straight into the merged `[B, T, H]` context. One op, with a
/// backward that recomputes the attention probabilities instead of keeping them and forms the
/// packed gradient `[dQ | dK | dV]`:
/// `dV = Pᵀ dO`, `dS = P ⊙ (dO Vᵀ − rowsum(P ⊙ dO Vᵀ)) / √d`, `dQ = dS K`, `dK = dSᵀ Q`.
/// Batch items and heads run in parallel.
pub fn multi_head_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, h3) = qkv.dims3()?;
    if heads == 0 || h3 % (3 * heads) != 0 {
        candle_core::bail!("attention: packed projections {:?} do not split into q, k, v of {heads} heads", qkv.dims());
    }
    let (h, dh) = (h3 / 3, h3 / 3 / heads);
    if !qkv.device().is_cpu() {
        let split = |i: usize| -> Result<Tensor> { qkv.narrow(2, i * h, h)?.reshape((b, t, heads, dh))?.transpose(1, 2)?.contiguous() };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let probs = scaled_softmax_last_dim(&q.matmul(&k.t()?)?, (dh as f32).sqrt())?;
        return probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h));
    }
    qkv.contiguous()?.apply_op1(Attention { heads })
}

#[derive(Clone, Copy)]
pub(crate) struct Attention {
    pub(crate) heads: usize,
}

/// Where one (batch item, head) task reads and writes.
#[derive(Clone, Copy)]
pub(crate) struct HeadSlice {
    t: usize,
    h: usize,
    dh: usize,
    /// Offset of the task's Q block in the packed `[B, T, 3H]` buffer (K is `h` further, V `2h`).
    packed: usize,
    /// Offset of the task's block in a `[B, T, H]` buffer.
    merged: usize,
}

impl Attention {
    fn slice(&self, (t, h3): (usize, usize), task: usize) -> HeadSlice {
        let (bi, head) = (task / self.heads, task % self.heads);
        let h = h3 / 3;
        let dh = h / self.heads;
        HeadSlice { t, h, dh, packed: bi * t * h3 + head * dh, merged: bi * t * h + head * dh }
    }

    /// The probabilities `softmax(Q Kᵀ / √d)` `[t×t]` of one task.
    ///
    /// # Safety
    /// `qkv` holds `[B, T, 3H]` and `s` is a slice of it.
    unsafe fn probabilities(qkv: &[f32], s: HeadSlice, probs: &mut [f32]) {
        let (rs, ts) = (3 * s.h as isize, s.t as isize);
        let q = Mat(qkv.as_ptr().add(s.packed), rs, 1);
        let kt = Mat(qkv.as_ptr().add(s.packed + s.h), 1, rs);
        gemm_strided((probs.as_mut_ptr(), ts, 1), false, q, kt, (s.t, s.dh, s.t), Threads::One);
        let divisor = (s.dh as f32).sqrt();
        probs.chunks_mut(s.t).for_each(|row| vecmath::softmax_in_place(row, divisor));
    }

    /// The merged context `[B, T, H]` of packed projections `qkv` `[B, T, 3H]`.
    pub(crate) fn forward_rows(&self, qkv: &[f32], (b, t, h3): (usize, usize, usize)) -> Vec<f32> {
        let h = h3 / 3;
        let mut out = vec![0f32; b * t * h];
        let out_ptr = SharedPtr(out.as_mut_ptr());
        (0..b * self.heads).into_par_iter().for_each_init(
            || vec![0f32; t * t],
            |probs, task| {
                let s = self.slice((t, h3), task);
                // SAFETY: qkv is [B, T, 3H] and out [B, T, H]; the task writes only its own
                // head's columns of its own batch item of `out`.
                unsafe {
                    Self::probabilities(qkv, s, probs);
                    let v = Mat(qkv.as_ptr().add(s.packed + 2 * s.h), 3 * h as isize, 1);
                    gemm_strided((out_ptr.get().add(s.merged), h as isize, 1), false, Mat(probs.as_ptr(), t as isize, 1), v, (t, t, s.dh), Threads::One);
                }
            },
        );
        out
    }

    /// The packed gradient `[dQ | dK | dV]` `[B, T, 3H]` from the context's gradient `dout`.
    pub(crate) fn backward_rows(&self, qkv: &[f32], dout: &[f32], (b, t, h3): (usize, usize, usize)) -> Vec<f32> {
        let mut grads = vec![0f32; b * t * h3];
        let ptr = SharedPtr(grads.as_mut_ptr());
        let (rs, hs, ts) = (h3 as isize, (h3 / 3) as isize, t as isize);
        (0..b * self.heads).into_par_iter().for_each_init(
            || (vec![0f32; t * t], vec![0f32; t * t]),
            |(probs, dp), task| {
                let s = self.slice((t, h3), task);
                let at = |offset: usize| Mat(qkv.as_ptr().wrapping_add(offset), rs, 1);
                let (q, k, v) = (at(s.packed), at(s.packed + s.h), at(s.packed + 2 * s.h));
                let base = ptr.get();
                // SAFETY: qkv and grads are [B, T, 3H], dout [B, T, H]; the task writes only
                // its own head's columns of its own batch item in each third of `grads`.
                unsafe {
                    Self::probabilities(qkv, s, probs);
                    let d_out = Mat(dout.as_ptr().add(s.merged), hs, 1);
                    // dV = Pᵀ dO
                    gemm_strided((base.add(s.packed + 2 * s.h), rs, 1), false, Mat(probs.as_ptr(), 1, ts), d_out, (t, t, s.dh), Threads::One);
                    // dP = dO Vᵀ
                    gemm_strided((dp.as_mut_ptr(), ts, 1), false, d_out, Mat(v.0, 1, rs), (t, s.dh, t), Threads::One);
                    let divisor = (s.dh as f32).sqrt();
                    for (row, p) in dp.chunks_mut(t).zip(probs.chunks(t)) {
                        softmax_backward_row(row, p, divisor);
                    }
                    // dQ = dS K, dK = dSᵀ Q
                    gemm_strided((base.add(s.packed), rs, 1), false, Mat(dp.as_ptr(), ts, 1), k, (t, t, s.dh), Threads::One);
                    gemm_strided((base.add(s.packed + s.h), rs, 1), false, Mat(dp.as_ptr(), 1, ts), q, (t, t, s.dh), Threads::One);
                }
            },
        );
        grads
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "multi-head-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout, "attention")?;
        let (b, t, h3) = layout.shape().dims3()?;
        Ok((CpuStorage::F32(self.forward_rows(qkv, (b, t, h3))), Shape::from((b, t, h3 / 3))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("multi-head-attention-backward", qkv, grad_res, |qkv, dout, shape| Ok(self.backward_rows(qkv, dout, shape.dims3()?)))?))
    }
}
