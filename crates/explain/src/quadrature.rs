//! Gauss–Legendre quadrature on [0, 1], the rule behind Captum's default
//! `method="gausslegendre"` for Integrated Gradients, and the path integral's two tensor steps
//! that Integrated Gradients and Layer Integrated Gradients share: the points on the straight
//! path ([`path_points`]) and the weighted sum of their gradients ([`weighted_step_sum`]).

use candle_core::{Device, Tensor};

use crate::error::Result;

/// `n` nodes in ascending order and their weights on [0, 1] (numpy's `leggauss(n)` mapped by
/// α = (x + 1)/2, w' = w/2). Newton iteration on the Legendre polynomial from the Chebyshev
/// guesses; converges to machine precision for any practical `n`.
pub fn gauss_legendre_unit(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n {
        // i-th root from the largest down, Chebyshev initial guess.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut derivative = 0.0;
        for _ in 0..100 {
            let (p, dp) = legendre(n, x);
            derivative = dp;
            let dx = p / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        let (_, dp) = legendre(n, x);
        if dp != 0.0 {
            derivative = dp;
        }
        let w = 2.0 / ((1.0 - x * x) * derivative * derivative);
        // Roots come largest first; store ascending.
        nodes[n - 1 - i] = 0.5 * (x + 1.0);
        weights[n - 1 - i] = 0.5 * w;
    }
    (nodes, weights)
}

/// P_n(x) and P_n'(x) by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
        p0 = p1;
        p1 = p2;
    }
    let dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, dp)
}

/// `start + α_s · diff` for each step `s` (`start`, `diff` `[B, …]`), rows sample-major:
/// `[B · steps, …]`, sample `i`'s steps in rows `i · steps ..`.
pub(crate) fn path_points(start: &Tensor, diff: &Tensor, alphas: &[f64]) -> Result<Tensor> {
    let b = start.dim(0)?;
    let a = per_step(alphas, start)?;
    let points = diff.unsqueeze(1)?.broadcast_mul(&a)?.broadcast_add(&start.unsqueeze(1)?)?;
    let mut shape = start.dims().to_vec();
    shape[0] = b * alphas.len();
    Ok(points.reshape(shape)?)
}

/// `Σ_s w_s · grads_s` per sample, from gradients at [`path_points`] rows `[B · steps, …]`:
/// `[B, …]`.
pub(crate) fn weighted_step_sum(grads: &Tensor, weights: &[f64]) -> Result<Tensor> {
    let steps = weights.len();
    let mut grid = grads.dims().to_vec();
    grid[0] /= steps.max(1);
    grid.insert(1, steps);
    Ok(grads.reshape(grid)?.broadcast_mul(&per_step(weights, grads)?)?.sum(1)?)
}

/// One value per step as `[1, steps, 1, …]`, broadcast over a sample's axes (`like` `[N, …]`).
fn per_step(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1, values.len()];
    shape.extend(std::iter::repeat_n(1, like.rank() - 1));
    Ok(Tensor::from_vec(values.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape, &Device::Cpu)?.to_device(like.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_point_rule_by_hand() {
        // leggauss(3): x = ±√(3/5), 0; w = 5/9, 8/9, 5/9.
        let (a, w) = gauss_legendre_unit(3);
        let r = (0.6f64).sqrt();
        let expected = [(1.0 - r) / 2.0, 0.5, (1.0 + r) / 2.0];
        for (x, e) in a.iter().zip(expected) {
            assert!((x - e).abs() < 1e-14, "{a:?}");
        }
        for (x, e) in w.iter().zip([5.0 / 18.0, 8.0 / 18.0, 5.0 / 18.0]) {
            assert!((x - e).abs() < 1e-14, "{w:?}");
        }
    }

    #[test]
    fn fifty_points_integrate_polynomials_exactly() {
        let (a, w) = gauss_legendre_unit(50);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-13);
        // ∫₀¹ x^k dx = 1/(k+1), exact up to degree 99.
        for k in [1, 7, 40, 99] {
            let s: f64 = a.iter().zip(&w).map(|(x, w)| w * x.powi(k)).sum();
            assert!((s - 1.0 / (k as f64 + 1.0)).abs() < 1e-12, "degree {k}: {s}");
        }
        assert!(a.windows(2).all(|p| p[0] < p[1]));
    }
}
