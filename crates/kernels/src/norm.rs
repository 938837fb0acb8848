//! LayerNorm over the last axis with a one-pass backward (candle-nn's fused `layer_norm`
//! records none).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::shared::{backward, contiguous_f32, rows_chunk, rows_par};

/// LayerNorm over the last dimension (biased variance, like PyTorch) as one op: rows in
/// parallel, and a backward that forms the input gradient only (the affine parameters are
/// constants of a frozen backbone):
/// `dx = (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) / σ` with `ĝ = g ⊙ γ`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) flat_weight: Arc<Vec<f32>>,
    pub(crate) flat_bias: Arc<Vec<f32>>,
    pub(crate) eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        let (weight, bias) = (vb.get(size, "weight")?, vb.get(size, "bias")?);
        let flat = |t: &Tensor| -> Result<Arc<Vec<f32>>> { Ok(Arc::new(t.to_dtype(DType::F32)?.to_vec1()?)) };
        Ok(Self { flat_weight: flat(&weight)?, flat_bias: flat(&bias)?, weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.flat_weight.len();
        if x.dim(D::Minus1)? != n {
            candle_core::bail!("layer norm: input {:?} does not end in {n}", x.dims());
        }
        if !x.device().is_cpu() {
            let mean = x.mean_keepdim(D::Minus1)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            return normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias);
        }
        x.contiguous()?.apply_op1(LayerNormOp { weight: self.flat_weight.clone(), bias: self.flat_bias.clone(), eps: self.eps })
    }
}

pub(crate) struct LayerNormOp {
    weight: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    eps: f64,
}

/// LayerNorm of every row of `x` (rows of `weight.len()`), rows in parallel.
pub(crate) fn layer_norm_rows(x: &[f32], weight: &[f32], bias: &[f32], eps: f64) -> Vec<f32> {
    let n = weight.len();
    let mut y = x.to_vec();
    rows_par(&mut y, n).for_each(|block| {
        for row in block.chunks_mut(n) {
            let (mean, rstd) = row_moments(row, eps);
            for ((v, g), b) in row.iter_mut().zip(weight.iter()).zip(bias.iter()) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
    });
    y
}

/// The input gradient of [`layer_norm_rows`] for the rows' gradient `g`.
pub(crate) fn layer_norm_backward_rows(x: &[f32], g: &[f32], weight: &[f32], eps: f64) -> Vec<f32> {
    let n = weight.len();
    let mut dx = g.to_vec();
    let chunk = rows_chunk(n);
    dx.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(block, xb)| {
        let mut xhat = vec![0f32; n];
        for (row, xr) in block.chunks_mut(n).zip(xb.chunks(n)) {
            let (mean, rstd) = row_moments(xr, eps);
            let (mut sum_g, mut sum_gx) = (0f64, 0f64);
            for ((d, xh), (&xv, &gamma)) in row.iter_mut().zip(xhat.iter_mut()).zip(xr.iter().zip(weight.iter())) {
                *xh = (xv - mean) * rstd;
                *d *= gamma;
                sum_g += *d as f64;
                sum_gx += (*d * *xh) as f64;
            }
            let (mean_g, mean_gx) = ((sum_g / n as f64) as f32, (sum_gx / n as f64) as f32);
            for (d, xh) in row.iter_mut().zip(&xhat) {
                *d = (*d - mean_g - xh * mean_gx) * rstd;
            }
        }
    });
    dx
}

/// Mean and `1/√(var + eps)` of one row, accumulated in f64.
pub(crate) fn row_moments(row: &[f32], eps: f64) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "layer norm")?;
        Ok((CpuStorage::F32(layer_norm_rows(x, &self.weight, &self.bias, self.eps)), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(backward("layer-norm-backward", arg, grad_res, |x, g, _| Ok(layer_norm_backward_rows(x, g, &self.weight, self.eps)))?))
    }
}
