//! Captum's surrogate-model methods, forward-only: [`Lime`] and [`KernelShap`] fit a linear
//! model of the target's score over binary coalition vectors (feature present or at the
//! baseline) and give each feature its coefficient. The fits are done exactly here: ordinary
//! or weighted least squares (the minimum-norm solution where the samples do not determine
//! it, as NumPy's `lstsq` and scikit-learn's `LinearRegression` give) and scikit-learn's Lasso
//! by coordinate descent to convergence.

use std::any::Any;

use candle_core::Tensor;
use rand::seq::index::sample as sample_indices;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attribute::{Attribute, Unchecked};
use crate::error::{ExplainError, Result};
use crate::model::Model;
use crate::perturbation::{compose, scores, Baseline, FeatureMask};
use crate::shapley::{all_coalitions, finish, prepare, MAX_EXACT_FEATURES};

/// Captum's `KernelShap`: `n_samples` coalitions — all features present, none present, then
/// coalitions whose size `k` is drawn with probability ∝ `(M−1) / (k(M−k))` and whose members
/// are drawn uniformly — scored by the model and fitted by ordinary least squares with an
/// intercept (the Shapley kernel lies in the sampling, every sample weighs 1). The values
/// approximate Shapley values. When `n_samples ≥ 2^M` every coalition is used instead, with
/// the Shapley kernel's weights and the efficiency constraint (`Σφ = f(x) − f(baseline)`,
/// intercept `f(baseline)`): Lundberg & Lee's exact Kernel SHAP, which equals
/// [`crate::ShapleyValues`].
#[derive(Debug, Clone)]
pub struct KernelShap {
    /// The features.
    pub mask: FeatureMask,
    /// What an absent feature takes.
    pub baseline: Baseline,
    /// Coalitions to score (Captum's default 25).
    pub n_samples: usize,
    /// Perturbed samples per forward pass.
    pub perturbations_per_eval: usize,
    /// Seed of the coalitions.
    pub seed: u64,
}

impl Default for KernelShap {
    fn default() -> Self {
        Self { mask: FeatureMask::Elements, baseline: Baseline::default(), n_samples: 25, perturbations_per_eval: 16, seed: 0 }
    }
}

/// `n` coalitions of `m` features as Captum's KernelSHAP draws them: all present, none, then
/// sizes by the Shapley kernel and members uniformly.
fn kernel_coalitions(m: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<bool>> {
    let mut out = vec![vec![true; m], vec![false; m]];
    let sizes: Vec<f64> = (1..m).map(|k| (m - 1) as f64 / (k * (m - k)) as f64).collect();
    let total: f64 = sizes.iter().sum();
    while out.len() < n && !sizes.is_empty() {
        let mut u = rng.random::<f64>() * total;
        let mut k = sizes.len();
        for (i, p) in sizes.iter().enumerate() {
            if u < *p {
                k = i + 1;
                break;
            }
            u -= p;
        }
        let mut z = vec![false; m];
        for f in sample_indices(rng, m, k) {
            z[f] = true;
        }
        out.push(z);
    }
    out.truncate(n.max(1));
    out
}

impl Attribute for KernelShap {
    fn name(&self) -> String {
        "kernel-shap".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        if self.n_samples < 2 {
            return Err(ExplainError::Invalid(format!("KernelSHAP needs at least 2 samples (all features and none), got {}", self.n_samples)));
        }
        let (samples, regions) = prepare(input, targets, &self.mask, &self.baseline, "KernelSHAP")?;
        let m = regions.len();
        let every = m <= MAX_EXACT_FEATURES && self.n_samples >= 1 << m;
        let mut values = Vec::with_capacity(samples.len());
        for (sample, &target) in samples.iter().zip(targets) {
            if every {
                let v = all_coalitions(model, input, sample, &regions, target, self.perturbations_per_eval)?;
                values.push(exact_kernel_shap(&v, m)?);
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            let coalitions = kernel_coalitions(m, self.n_samples, &mut rng);
            let coalition = |k: usize, batch: &mut Vec<f32>| compose(batch, &sample.x, &sample.baseline, &regions, &coalitions[k]);
            let y: Vec<f64> = scores(model, input, coalitions.len(), coalition, target, self.perturbations_per_eval)?.into_iter().map(f64::from).collect();
            let x: Vec<Vec<f64>> = coalitions.iter().map(|z| z.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect()).collect();
            values.push(linear_fit(&x, &y, &vec![1.0; y.len()], 0.0)?);
        }
        finish(model, input, &values, &regions)
    }
}

/// Kernel SHAP over every coalition: weighted least squares with the Shapley kernel
/// `π(z) = (M−1) / (C(M,|z|) |z| (M−|z|))` over the coalitions with `0 < |z| < M`, with
/// `φ_0 = f(∅)` and `Σφ = f(all) − f(∅)` imposed (the last feature eliminated).
fn exact_kernel_shap(v: &[f64], m: usize) -> Result<Vec<f64>> {
    let full = (1usize << m) - 1;
    let delta = v[full] - v[0];
    if m == 1 {
        return Ok(vec![delta]);
    }
    let binom = |n: usize, k: usize| (0..k).fold(1f64, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
    let (mut x, mut y, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for bits in 1..full {
        let s = bits.count_ones() as usize;
        let z = |f: usize| (bits >> f & 1) as f64;
        x.push((0..m - 1).map(|f| z(f) - z(m - 1)).collect::<Vec<f64>>());
        y.push(v[bits] - v[0] - z(m - 1) * delta);
        w.push((m - 1) as f64 / (binom(m, s) * (s * (m - s)) as f64));
    }
    let mut phi = weighted_least_squares(&x, &y, &w)?;
    let last = delta - phi.iter().sum::<f64>();
    phi.push(last);
    Ok(phi)
}

/// Captum's `Lime` with its defaults: `n_samples` coalitions with each feature present with
/// probability ½, weighted by the exponential kernel of the cosine distance between the input
/// and the perturbed input, `exp(−d² / (2·kernel_width²))` with `d = 1 − cos(x, x')`, and fitted
/// by scikit-learn's `Lasso(alpha)` (with an intercept; `alpha = 0` fits weighted least
/// squares instead).
#[derive(Debug, Clone)]
pub struct Lime {
    /// The features.
    pub mask: FeatureMask,
    /// What an absent feature takes.
    pub baseline: Baseline,
    /// Coalitions to score (Captum's default 50).
    pub n_samples: usize,
    /// Perturbed samples per forward pass.
    pub perturbations_per_eval: usize,
    /// Seed of the coalitions.
    pub seed: u64,
    /// The Lasso's penalty (Captum's default 0.01).
    pub alpha: f64,
    /// The similarity kernel's width (Captum's default 1).
    pub kernel_width: f64,
}

impl Default for Lime {
    fn default() -> Self {
        Self { mask: FeatureMask::Elements, baseline: Baseline::default(), n_samples: 50, perturbations_per_eval: 16, seed: 0, alpha: 0.01, kernel_width: 1.0 }
    }
}

impl Attribute for Lime {
    fn name(&self) -> String {
        "lime".into()
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        if self.n_samples == 0 || !(self.alpha >= 0.0 && self.alpha.is_finite()) || !(self.kernel_width > 0.0 && self.kernel_width.is_finite()) {
            return Err(ExplainError::Invalid(format!(
                "LIME needs n_samples ≥ 1, alpha ≥ 0 and kernel_width > 0, got {}, {} and {}",
                self.n_samples, self.alpha, self.kernel_width
            )));
        }
        let (samples, regions) = prepare(input, targets, &self.mask, &self.baseline, "LIME")?;
        let m = regions.len();
        let mut values = Vec::with_capacity(samples.len());
        for (sample, &target) in samples.iter().zip(targets) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            let coalitions: Vec<Vec<bool>> = (0..self.n_samples).map(|_| (0..m).map(|_| rng.random::<bool>()).collect()).collect();
            // Each perturbed input's similarity to the input, taken as it is composed.
            let mut w = Vec::with_capacity(coalitions.len());
            let coalition = |k: usize, batch: &mut Vec<f32>| {
                let start = batch.len();
                compose(batch, &sample.x, &sample.baseline, &regions, &coalitions[k]);
                let d = 1.0 - cosine(&sample.x, &batch[start..]);
                w.push((-d * d / (2.0 * self.kernel_width * self.kernel_width)).exp());
            };
            let y: Vec<f64> = scores(model, input, coalitions.len(), coalition, target, self.perturbations_per_eval)?.into_iter().map(f64::from).collect();
            let x: Vec<Vec<f64>> = coalitions.iter().map(|z| z.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect()).collect();
            values.push(linear_fit(&x, &y, &w, self.alpha)?);
        }
        finish(model, input, &values, &regions)
    }
}

/// PyTorch's `CosineSimilarity` of two flat vectors (norms clamped at 1e-8).
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na.max(1e-8) * nb.max(1e-8))
}

/// The coefficients of a linear model with an intercept fitted to rows `x` and targets `y`
/// with sample weights `w`: weighted least squares (minimum-norm) when `alpha = 0`, else
/// scikit-learn's Lasso `min 1/(2n) Σ w'_i (y_i − b − x_i·β)² + α‖β‖₁` with `w'` the weights
/// scaled to sum to `n`.
pub(crate) fn linear_fit(x: &[Vec<f64>], y: &[f64], w: &[f64], alpha: f64) -> Result<Vec<f64>> {
    let n = y.len();
    let m = x.first().map_or(0, Vec::len);
    let total: f64 = w.iter().sum();
    if n == 0 || !(total > 0.0) {
        return Err(ExplainError::Invalid("a linear fit needs samples of positive total weight".into()));
    }
    let w: Vec<f64> = w.iter().map(|v| v * n as f64 / total).collect();
    // Centre with the weighted means (the intercept), scale rows by √w.
    let mean_x: Vec<f64> = (0..m).map(|j| x.iter().zip(&w).map(|(r, wi)| r[j] * wi).sum::<f64>() / n as f64).collect();
    let mean_y = y.iter().zip(&w).map(|(v, wi)| v * wi).sum::<f64>() / n as f64;
    let xc: Vec<Vec<f64>> = x.iter().zip(&w).map(|(r, wi)| r.iter().zip(&mean_x).map(|(v, mu)| (v - mu) * wi.sqrt()).collect()).collect();
    let yc: Vec<f64> = y.iter().zip(&w).map(|(v, wi)| (v - mean_y) * wi.sqrt()).collect();
    if alpha == 0.0 {
        return min_norm_least_squares(&xc, &yc);
    }
    Ok(lasso(&xc, &yc, alpha))
}

/// Weighted least squares without an intercept: `min Σ w_i (y_i − x_i·β)²`.
fn weighted_least_squares(x: &[Vec<f64>], y: &[f64], w: &[f64]) -> Result<Vec<f64>> {
    let xs: Vec<Vec<f64>> = x.iter().zip(w).map(|(r, wi)| r.iter().map(|v| v * wi.sqrt()).collect()).collect();
    let ys: Vec<f64> = y.iter().zip(w).map(|(v, wi)| v * wi.sqrt()).collect();
    min_norm_least_squares(&xs, &ys)
}

/// The minimum-norm solution of `min ‖Aβ − b‖²` (NumPy's `lstsq`): Householder QR with column
/// pivoting, `A P = Q R`, the rank `r` from `R`'s diagonal, then the minimum-norm solution of
/// the `r × M` system `R₁ z = (Qᵀb)₁` as `z = R₁ᵀ (R₁R₁ᵀ)⁻¹ c` and `β = P z`.
pub(crate) fn min_norm_least_squares(a: &[Vec<f64>], b: &[f64]) -> Result<Vec<f64>> {
    let n = a.len();
    let m = a.first().map_or(0, Vec::len);
    if m == 0 {
        return Ok(Vec::new());
    }
    // Column-major copy.
    let mut cols: Vec<Vec<f64>> = (0..m).map(|j| a.iter().map(|r| r[j]).collect()).collect();
    let mut rhs = b.to_vec();
    let mut perm: Vec<usize> = (0..m).collect();
    let steps = n.min(m);
    let mut diag_max = 0f64;
    let mut rank = 0;
    for k in 0..steps {
        // Pivot: the remaining column of largest norm below row k.
        let norm = |c: &Vec<f64>| c[k..].iter().map(|v| v * v).sum::<f64>();
        let (p, best) = (k..m).map(|j| (j, norm(&cols[j]))).fold((k, -1.0), |acc, (j, v)| if v > acc.1 { (j, v) } else { acc });
        cols.swap(k, p);
        perm.swap(k, p);
        let alpha = best.sqrt();
        if k == 0 {
            diag_max = alpha;
        }
        if alpha <= diag_max * 1e-12 * (n.max(m) as f64) || alpha == 0.0 {
            break;
        }
        rank += 1;
        // Householder reflector v with H x = −sign(x_k)‖x‖ e_k.
        let sign = if cols[k][k] >= 0.0 { 1.0 } else { -1.0 };
        let mut v: Vec<f64> = cols[k][k..].to_vec();
        v[0] += sign * alpha;
        let vnorm2: f64 = v.iter().map(|x| x * x).sum();
        let reflect = |c: &mut [f64]| {
            let dot: f64 = v.iter().zip(c.iter()).map(|(a, b)| a * b).sum();
            let f = 2.0 * dot / vnorm2;
            for (ci, vi) in c.iter_mut().zip(&v) {
                *ci -= f * vi;
            }
        };
        for col in cols.iter_mut().skip(k) {
            reflect(&mut col[k..]);
        }
        reflect(&mut rhs[k..]);
    }
    let r = rank;
    // R₁ (r × m): row i, column j = cols[j][i].
    let r1 = |i: usize, j: usize| cols[j][i];
    // G = R₁R₁ᵀ (r × r), symmetric positive definite; Cholesky G = L Lᵀ.
    let mut g = vec![0f64; r * r];
    for i in 0..r {
        for j in 0..=i {
            let s: f64 = (i.max(j)..m).map(|k| r1(i, k) * r1(j, k)).sum();
            g[i * r + j] = s;
            g[j * r + i] = s;
        }
    }
    let mut l = vec![0f64; r * r];
    for i in 0..r {
        for j in 0..=i {
            let s: f64 = g[i * r + j] - (0..j).map(|k| l[i * r + k] * l[j * r + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return Err(ExplainError::Invalid("least squares: the system is numerically singular".into()));
                }
                l[i * r + i] = s.sqrt();
            } else {
                l[i * r + j] = s / l[j * r + j];
            }
        }
    }
    // Solve L Lᵀ u = c, then z = R₁ᵀ u.
    let c = &rhs[..r];
    let mut t = vec![0f64; r];
    for i in 0..r {
        t[i] = (c[i] - (0..i).map(|k| l[i * r + k] * t[k]).sum::<f64>()) / l[i * r + i];
    }
    let mut u = vec![0f64; r];
    for i in (0..r).rev() {
        u[i] = (t[i] - (i + 1..r).map(|k| l[k * r + i] * u[k]).sum::<f64>()) / l[i * r + i];
    }
    let mut beta = vec![0f64; m];
    for (j, &pj) in perm.iter().enumerate() {
        beta[pj] = (0..r.min(j + 1)).map(|i| r1(i, j) * u[i]).sum();
    }
    Ok(beta)
}

/// scikit-learn's Lasso without intercept on prepared data: `min 1/(2n)‖y − Xβ‖² + α‖β‖₁` by
/// cyclic coordinate descent until no coefficient moves by more than 1e-12 of the largest.
fn lasso(x: &[Vec<f64>], y: &[f64], alpha: f64) -> Vec<f64> {
    let n = y.len();
    let m = x.first().map_or(0, Vec::len);
    let cols: Vec<Vec<f64>> = (0..m).map(|j| x.iter().map(|r| r[j]).collect()).collect();
    let norms: Vec<f64> = cols.iter().map(|c| c.iter().map(|v| v * v).sum()).collect();
    let mut beta = vec![0f64; m];
    let mut residual = y.to_vec();
    let threshold = alpha * n as f64;
    for _ in 0..100_000 {
        let mut largest_change = 0f64;
        let mut largest = 0f64;
        for j in 0..m {
            if norms[j] == 0.0 {
                continue;
            }
            let old = beta[j];
            let rho: f64 = cols[j].iter().zip(&residual).map(|(c, r)| c * r).sum::<f64>() + norms[j] * old;
            let new = rho.signum() * (rho.abs() - threshold).max(0.0) / norms[j];
            if new != old {
                for (r, c) in residual.iter_mut().zip(&cols[j]) {
                    *r -= c * (new - old);
                }
                beta[j] = new;
            }
            largest_change = largest_change.max((new - old).abs());
            largest = largest.max(new.abs());
        }
        if largest_change <= 1e-12 * largest.max(1e-300) {
            break;
        }
    }
    beta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_solves_a_full_rank_system_and_gives_the_minimum_norm_otherwise() {
        // y = 2a − b exactly.
        let a = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0], vec![2.0, 1.0]];
        let b = vec![2.0, -1.0, 1.0, 3.0];
        let beta = min_norm_least_squares(&a, &b).unwrap();
        assert!((beta[0] - 2.0).abs() < 1e-12 && (beta[1] + 1.0).abs() < 1e-12, "{beta:?}");
        // One equation a + b = 2: the minimum-norm solution is (1, 1).
        let beta = min_norm_least_squares(&[vec![1.0, 1.0]], &[2.0]).unwrap();
        assert!((beta[0] - 1.0).abs() < 1e-12 && (beta[1] - 1.0).abs() < 1e-12, "{beta:?}");
        // Two equal columns: the minimum-norm solution splits the weight.
        let beta = min_norm_least_squares(&[vec![1.0, 1.0], vec![2.0, 2.0], vec![3.0, 3.0]], &[2.0, 4.0, 6.0]).unwrap();
        assert!((beta[0] - 1.0).abs() < 1e-9 && (beta[1] - 1.0).abs() < 1e-9, "{beta:?}");
    }

    #[test]
    fn lasso_soft_thresholds_an_orthogonal_design() {
        // Orthogonal centred columns with ‖x_j‖² = n: β_j = soft(xᵀy / n, α).
        let x = vec![vec![1.0, 1.0], vec![1.0, -1.0], vec![-1.0, 1.0], vec![-1.0, -1.0]];
        let y = vec![3.0, 1.0, -1.0, -3.0]; // = 2·x0 + 1·x1
        let beta = linear_fit(&x, &y, &[1.0; 4], 0.5).unwrap();
        assert!((beta[0] - 1.5).abs() < 1e-9 && (beta[1] - 0.5).abs() < 1e-9, "{beta:?}");
        let beta = linear_fit(&x, &y, &[1.0; 4], 0.0).unwrap();
        assert!((beta[0] - 2.0).abs() < 1e-9 && (beta[1] - 1.0).abs() < 1e-9, "{beta:?}");
    }

    #[test]
    fn kernel_coalitions_start_with_all_and_none_and_never_repeat_them() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let c = kernel_coalitions(6, 200, &mut rng);
        assert_eq!(c.len(), 200);
        assert_eq!((c[0].clone(), c[1].clone()), (vec![true; 6], vec![false; 6]));
        assert!(c[2..].iter().all(|z| z.iter().any(|&p| p) && !z.iter().all(|&p| p)));
    }
}
