//! The models' operations written with candle's tensor ops only, so that they run — forward
//! and backward — on every device candle has (CUDA through cuBLAS and candle's kernels): the
//! path the models take off the CPU, and on the CPU when [`crate::Ops::Generic`] asks for it
//! (the tests hold it equal to the CPU kernels of `tgc-kernels`).
//!
//! Semantics are PyTorch's, as the kernels': convolutions as im2col and one matrix product
//! (whose backward is a matrix product too: no transposed-convolution kernel), max-pooling with
//! −∞ padding whose gradient goes to each window's *first* maximum, LayerNorm with the biased
//! variance, GELU in the exact erf form or the tanh approximation. The weights are constants:
//! products form only their input gradient ([`frozen_matmul`]), not the weights'.

use candle_core::{Result, Tensor, D};
use tgc_explain::custom_backward;

/// `x · Wᵀ` over the last axis of `x` `[…, in]` for a constant `weight` `[out, in]`; backward
/// forms only `g · W` (candle's matmul would form the weight's gradient too).
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let value = x.detach().broadcast_matmul(&weight.t()?)?;
    let w = weight.clone();
    custom_backward(x, &value, move |g| g.broadcast_matmul(&w))
}

/// `x · Wᵀ + b` (PyTorch's `nn.Linear`) with a constant weight `[out, in]` and bias `[out]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = frozen_matmul(x, weight)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Rows `i, i + s, …, i + s·(n − 1)` of axis `dim` (which must reach `i + s·n`).
fn strided(x: &Tensor, dim: usize, i: usize, s: usize, n: usize) -> Result<Tensor> {
    if s == 1 {
        return x.narrow(dim, i, n);
    }
    let mut dims = x.dims().to_vec();
    dims[dim] = n;
    dims.insert(dim + 1, s);
    x.narrow(dim, i, s * n)?.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Pads the two spatial axes of `[B, C, H, W]` with `fill`: `before` on the top and left, and
/// on the bottom and right as many as make each axis `size.0` / `size.1` long.
fn pad_spatial(x: &Tensor, before: usize, size: (usize, usize), fill: f32) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (hp, wp) = size;
    if before == 0 && hp == h && wp == w {
        return Ok(x.clone());
    }
    let full = |dims: (usize, usize, usize, usize)| Tensor::full(fill, dims, x.device())?.to_dtype(x.dtype());
    let mut parts = Vec::new();
    if before > 0 {
        parts.push(full((b, c, h, before))?);
    }
    parts.push(x.clone());
    if wp > w + before {
        parts.push(full((b, c, h, wp - w - before))?);
    }
    let rows = Tensor::cat(&parts, 3)?;
    let mut parts = Vec::new();
    if before > 0 {
        parts.push(full((b, c, before, wp))?);
    }
    parts.push(rows);
    if hp > h + before {
        parts.push(full((b, c, hp - h - before, wp))?);
    }
    Tensor::cat(&parts, 2)
}

/// Output side of a window `k`, stride `s`, padding `p` over `n` (floor mode), or an error.
fn out_size(what: &str, n: usize, k: usize, s: usize, p: usize) -> Result<usize> {
    if k == 0 || s == 0 || n + 2 * p < k {
        candle_core::bail!("{what}: kernel {k}, stride {s}, padding {p} on a side of {n}");
    }
    Ok((n + 2 * p - k) / s + 1)
}

/// The `k × k` windows of `x` `[B, C, H, W]` (stride `s`, padding `p` with `fill`), as the
/// `k²` tensors `[B, C, OH, OW]` of each window offset, row-major.
fn windows(x: &Tensor, k: usize, s: usize, p: usize, fill: f32, what: &str) -> Result<Vec<Tensor>> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (out_size(what, h, k, s, p)?, out_size(what, w, k, s, p)?);
    // Room for offset k − 1 to step s·OH rows (the rows past the padding are never selected).
    let size = ((h + 2 * p).max(k - 1 + s * oh), (w + 2 * p).max(k - 1 + s * ow));
    let padded = pad_spatial(x, p, size, fill)?;
    let mut out = Vec::with_capacity(k * k);
    for i in 0..k {
        let rows = strided(&padded, 2, i, s, oh)?;
        for j in 0..k {
            out.push(strided(&rows, 3, j, s, ow)?);
        }
    }
    Ok(out)
}

/// 2-D convolution of `x` `[B, C, H, W]` with a constant `weight` `[O, C, k, k]` and `bias`
/// `[O]` (PyTorch's `conv2d`, zero padding, dilation 1, one group) as im2col and one product.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (o, wc, k, kw) = weight.dims4()?;
    if wc != c || kw != k {
        candle_core::bail!("conv2d: input {:?}, kernel {:?} (square kernels over the input's channels)", x.dims(), weight.dims());
    }
    let (oh, ow) = (out_size("conv2d", h, k, stride, padding)?, out_size("conv2d", w, k, stride, padding)?);
    let cols = if k == stride && padding == 0 && h % k == 0 && w % k == 0 {
        // Non-overlapping patches (a ViT's patch embedding): a reshape, no copies of windows.
        x.reshape((b, c, oh, k, ow, k))?.permute((0, 1, 3, 5, 2, 4))?.reshape((b, c * k * k, oh * ow))?
    } else if k == 1 && stride == 1 && padding == 0 {
        x.reshape((b, c, h * w))?
    } else {
        Tensor::stack(&windows(x, k, stride, padding, 0.0, "conv2d")?, 2)?.reshape((b, c * k * k, oh * ow))?
    };
    // [B, L, C·k²] · [O, C·k²]ᵀ → [B, L, O] → [B, O, OH, OW]
    let y = frozen_matmul(&cols.transpose(1, 2)?, &weight.reshape((o, c * k * k))?)?;
    let y = y.transpose(1, 2)?.reshape((b, o, oh, ow))?;
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, o, 1, 1))?),
        None => Ok(y),
    }
}

/// 2-D max-pooling of `[B, C, H, W]` with PyTorch's semantics: −∞ padding (at most half the
/// kernel), floor mode, the gradient of each window to its first maximum in row-major order.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if 2 * padding > kernel {
        candle_core::bail!("max_pool2d: padding {padding} is more than half the kernel {kernel}");
    }
    // The lowest finite value pads: every window holds an input element, which beats it, and
    // 0 · pad stays finite in the masked sum below.
    let win = windows(x, kernel, stride, padding, f32::MIN, "max_pool2d")?;
    let mut best = win[0].detach();
    for w in &win[1..] {
        best = best.maximum(&w.detach())?;
    }
    // One-hot masks of each window's first maximum; the pool is Σ mask·window, so that the
    // gradient reaches that element only.
    let mut taken = best.zeros_like()?;
    let mut out: Option<Tensor> = None;
    for w in &win {
        let hit = (w.detach().eq(&best)?.to_dtype(x.dtype())? * (1.0 - &taken)?)?;
        taken = (&taken + &hit)?;
        let term = (w * hit)?;
        out = Some(match out {
            Some(acc) => (acc + term)?,
            None => term,
        });
    }
    out.ok_or_else(|| candle_core::Error::msg("max_pool2d: an empty kernel"))
}

/// LayerNorm over the last axis (biased variance, `eps` inside the root), PyTorch's.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered.broadcast_div(&(var + eps)?.sqrt()?)?.broadcast_mul(weight)?.broadcast_add(bias)
}

/// `softmax(x / divisor)` over the last axis (the maximum subtracted, outside the graph).
pub fn scaled_softmax_last_dim(x: &Tensor, divisor: f32) -> Result<Tensor> {
    let x = (x / divisor as f64)?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// GELU: the exact `x·Φ(x)` (`exact`) or the tanh approximation.
pub fn gelu(x: &Tensor, exact: bool) -> Result<Tensor> {
    if exact {
        x.gelu_erf()
    } else {
        x.gelu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(dims: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = dims.iter().product();
        Tensor::from_vec((0..n).map(|_| rng.random_range(-1f32..1.0)).collect::<Vec<_>>(), dims, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        d / b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn conv2d_equals_candles_for_every_geometry_the_models_use() {
        for (k, s, p, hw) in [(7, 2, 3, 21), (3, 1, 1, 9), (3, 2, 1, 9), (1, 2, 0, 9), (1, 1, 0, 5), (4, 4, 0, 16)] {
            let x = rand(&[2, 3, hw, hw], 1);
            let w = rand(&[4, 3, k, k], 2);
            let b = rand(&[4], 3);
            let ours = conv2d(&x, &w, Some(&b), s, p).unwrap();
            let candle = x.conv2d(&w, p, s, 1, 1).unwrap().broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap()).unwrap();
            assert_eq!(ours.dims(), candle.dims(), "k{k} s{s} p{p}");
            assert!(max_rel(&ours, &candle) < 1e-6, "k{k} s{s} p{p}: {}", max_rel(&ours, &candle));
            // The input gradient: ⟨conv(x), r⟩ is linear in x, so its gradient is the adjoint,
            // which candle's own conv2d backward also forms.
            let xv = Var::from_tensor(&x).unwrap();
            let r = rand(ours.dims(), 4);
            let g_ours = conv2d(xv.as_tensor(), &w, None, s, p).unwrap().mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            let g_candle = xv.as_tensor().conv2d(&w, p, s, 1, 1).unwrap().mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, c) = (g_ours.get(xv.as_tensor()).unwrap(), g_candle.get(xv.as_tensor()).unwrap());
            assert!(max_rel(a, c) < 1e-5, "k{k} s{s} p{p} gradient: {}", max_rel(a, c));
        }
    }

    #[test]
    fn max_pool_pads_with_minus_infinity_and_sends_the_gradient_to_the_first_maximum() {
        // One 4×4 plane of ties and negatives: PyTorch's max_pool2d(3, 2, 1) gives
        // [[-1, 5], [5, 5]] with the gradient of each window at its first maximum.
        let x = Tensor::new(&[[[[-3f32, -1.0, -2.0, -4.0], [-5.0, -6.0, 5.0, 5.0], [-1.0, 5.0, -2.0, -2.0], [5.0, 5.0, -9.0, 0.0]]]], &Device::Cpu).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let y = max_pool2d(xv.as_tensor(), 3, 2, 1).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![-1.0, 5.0, 5.0, 5.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Window (0,0) rows 0..2, cols 0..2 → -1 at (0,1); (0,1) rows 0..2, cols 1..4 → 5 at
        // (1,2); (1,0) rows 1..4, cols 0..2 → 5 at (2,1); (1,1) rows 1..4, cols 1..4 → 5 at (1,2).
        let mut want = vec![0f32; 16];
        want[1] = 1.0;
        want[6] = 2.0;
        want[9] = 1.0;
        assert_eq!(g, want);
    }
}
