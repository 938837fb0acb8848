//! ROAD — RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022): the pixels a map
//! ranks highest (MoRF) or lowest (LeRF) are removed at increasing percentiles and filled in by
//! noisy linear imputation, so that what the model sees carries no trace of the removal's shape
//! (the class-information leak that zero or blur baselines have). Each removed pixel becomes
//! the weighted mean of its 8 neighbours (1/6 for the 4 direct ones, 1/12 for the diagonals,
//! neighbours outside the image left out), solved jointly for all removed pixels, plus
//! Gaussian noise, as the authors' `NoisyLinearImputer`.

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::error::{ExplainError, Result};
use crate::model::Model;

/// Settings of [`road`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoadConfig {
    /// Fractions of the pixels removed, each in (0, 1).
    pub percentiles: Vec<f32>,
    /// Standard deviation of the noise added to imputed pixels (the authors' 0.01).
    /// The imputation's noise.
    pub noise: f32,
    /// Seed of the noise.
    pub seed: u64,
    /// Images per forward batch.
    pub batch_size: usize,
}

impl Default for RoadConfig {
    /// 10 %, 20 %, … 90 %, noise 0.01.
    fn default() -> Self {
        Self { percentiles: (1..10).map(|i| i as f32 / 10.0).collect(), noise: 0.01, seed: 0, batch_size: 16 }
    }
}

/// The target-class probability after each percentile's removal, most relevant first (MoRF:
/// a faithful map makes it fall fast, lower is better) and least relevant first (LeRF: higher
/// is better).
#[derive(Debug, Clone, PartialEq)]
pub struct Road {
    /// Most relevant first, per percentile.
    pub morf: Vec<f32>,
    /// Least relevant first, per percentile.
    pub lerf: Vec<f32>,
}

impl Road {
    /// Mean MoRF probability over the percentiles (lower is better).
    pub fn morf_mean(&self) -> f32 {
        self.morf.iter().sum::<f32>() / self.morf.len().max(1) as f32
    }

    /// Mean LeRF probability over the percentiles (higher is better).
    pub fn lerf_mean(&self) -> f32 {
        self.lerf.iter().sum::<f32>() / self.lerf.len().max(1) as f32
    }
}

/// The 8-neighbourhood and its weights.
const NEIGHBOURS: [(isize, isize, f64); 8] = [
    (1, 1, 1.0 / 12.0),
    (0, 1, 1.0 / 6.0),
    (-1, 1, 1.0 / 12.0),
    (1, -1, 1.0 / 12.0),
    (0, -1, 1.0 / 6.0),
    (-1, -1, 1.0 / 12.0),
    (1, 0, 1.0 / 6.0),
    (-1, 0, 1.0 / 6.0),
];

/// One `c × h × w` image with the pixels where `removed` is true (all channels) replaced by
/// noisy linear imputation. Channels that are equal are solved once.
pub fn noisy_linear_imputation(image: &[f32], (c, h, w): (usize, usize, usize), removed: &[bool], noise: f32, rng: &mut ChaCha8Rng) -> Result<Vec<f32>> {
    if image.len() != c * h * w || removed.len() != h * w {
        return Err(ExplainError::Invalid(format!("imputation of a {c}×{h}×{w} image with a mask of {} pixels", removed.len())));
    }
    if removed.iter().all(|&r| r) {
        return Err(ExplainError::Invalid("ROAD cannot impute an image with every pixel removed".into()));
    }
    let unknown: Vec<usize> = (0..h * w).filter(|&p| removed[p]).collect();
    let mut index = vec![usize::MAX; h * w];
    for (i, &p) in unknown.iter().enumerate() {
        index[p] = i;
    }
    // The system A·x = b: A_ii = Σ of the valid neighbours' weights, A_ij = −w for a removed
    // neighbour j; b_i = Σ w · value over the known neighbours. A is symmetric and, with any
    // pixel known, positive definite on every component touching one.
    let neighbours = |p: usize| {
        let (y, x) = ((p / w) as isize, (p % w) as isize);
        NEIGHBOURS.iter().filter_map(move |&(dy, dx, wt)| {
            let (ny, nx) = (y + dy, x + dx);
            (ny >= 0 && nx >= 0 && (ny as usize) < h && (nx as usize) < w).then_some((ny as usize * w + nx as usize, wt))
        })
    };
    let diagonal: Vec<f64> = unknown.iter().map(|&p| neighbours(p).map(|(_, wt)| wt).sum()).collect();
    // The off-diagonal entries, row by row (compressed rows): each unknown's removed neighbours
    // as (their unknown's index, weight), so that applying A is one pass over a flat list.
    let mut starts = Vec::with_capacity(unknown.len() + 1);
    let mut entries: Vec<(u32, f64)> = Vec::with_capacity(8 * unknown.len());
    starts.push(0);
    for &p in &unknown {
        entries.extend(neighbours(p).filter(|(q, _)| removed[*q]).map(|(q, wt)| (index[q] as u32, wt)));
        starts.push(entries.len());
    }
    let apply = |x: &[f64], out: &mut [f64]| {
        for (i, o) in out.iter_mut().enumerate() {
            let row = &entries[starts[i]..starts[i + 1]];
            *o = diagonal[i] * x[i] - row.iter().map(|&(j, wt)| wt * x[j as usize]).sum::<f64>();
        }
    };
    let mut out = image.to_vec();
    let plane = h * w;
    let normal = Normal::new(0.0f32, noise.max(0.0)).map_err(|e| ExplainError::Invalid(e.to_string()))?;
    let mut solved: Vec<(usize, Vec<f64>)> = Vec::new();
    for ch in 0..c {
        let channel = &image[ch * plane..(ch + 1) * plane];
        let same = solved.iter().find(|(other, _)| image[other * plane..(other + 1) * plane] == *channel).map(|(_, x)| x.clone());
        let x = match same {
            Some(x) => x,
            None => {
                let b: Vec<f64> = unknown.iter().map(|&p| neighbours(p).filter(|(q, _)| !removed[*q]).map(|(q, wt)| wt * channel[q] as f64).sum()).collect();
                let x = conjugate_gradient(&apply, &b, &diagonal);
                solved.push((ch, x.clone()));
                x
            }
        };
        for (&p, v) in unknown.iter().zip(&x) {
            out[ch * plane + p] = *v as f32 + if noise > 0.0 { normal.sample(rng) } else { 0.0 };
        }
    }
    Ok(out)
}

/// Jacobi-preconditioned conjugate gradients for the symmetric positive definite `apply`,
/// to a relative residual of 1e-7 (well below the f32 images' resolution).
fn conjugate_gradient(apply: &dyn Fn(&[f64], &mut [f64]), b: &[f64], diagonal: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut x = vec![0f64; n];
    let mut r = b.to_vec();
    let mut z: Vec<f64> = r.iter().zip(diagonal).map(|(r, d)| r / d).collect();
    let mut p = z.clone();
    let mut rz: f64 = r.iter().zip(&z).map(|(a, b)| a * b).sum();
    let target = 1e-14 * b.iter().map(|v| v * v).sum::<f64>().max(f64::MIN_POSITIVE);
    let mut ap = vec![0f64; n];
    if r.iter().map(|v| v * v).sum::<f64>() <= target {
        return x;
    }
    for _ in 0..10 * n.max(10) {
        apply(&p, &mut ap);
        let pap: f64 = p.iter().zip(&ap).map(|(a, b)| a * b).sum();
        if pap <= 0.0 {
            break;
        }
        let alpha = rz / pap;
        // One pass: the step, the new residual, its preconditioned form and both dot products.
        let (mut rz_next, mut rr) = (0f64, 0f64);
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
            z[i] = r[i] / diagonal[i];
            rz_next += r[i] * z[i];
            rr += r[i] * r[i];
        }
        if rr <= target {
            break;
        }
        let beta = rz_next / rz;
        rz = rz_next;
        for i in 0..n {
            p[i] = z[i] + beta * p[i];
        }
    }
    x
}

/// ROAD of one image `[1, C, H, W]` for a map of `H·W` importances: for each percentile the
/// top (MoRF) or bottom (LeRF) fraction of pixels by importance (ties in row-major order) is
/// imputed, and the target's softmax probability recorded. The imputation noise is seeded.
pub fn road<M: Model + ?Sized>(model: &M, input: &Tensor, importance: &[f32], target: usize, config: &RoadConfig) -> Result<Road> {
    let (b, c, h, w) = input.dims4()?;
    if b != 1 || importance.len() != h * w || config.percentiles.is_empty() || config.percentiles.iter().any(|p| !(*p > 0.0 && *p < 1.0)) {
        return Err(ExplainError::Invalid(format!(
            "ROAD takes one image, an H·W map and percentiles in (0, 1) (input {:?}, map of {}, percentiles {:?})",
            input.dims(),
            importance.len(),
            config.percentiles
        )));
    }
    let x: Vec<f32> = input.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    let mut order: Vec<usize> = (0..h * w).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
    // The imputations, MoRF then LeRF, in parallel; each draws its noise from its own seed.
    let n = config.percentiles.len();
    let images: Vec<Vec<f32>> = (0..2 * n)
        .into_par_iter()
        .map(|j| {
            let (most_first, p) = (j < n, config.percentiles[j % n]);
            let k = ((p * (h * w) as f32).round() as usize).clamp(1, h * w - 1);
            let mut removed = vec![false; h * w];
            let chosen = if most_first { &order[..k] } else { &order[h * w - k..] };
            for &q in chosen {
                removed[q] = true;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(j as u64));
            noisy_linear_imputation(&x, (c, h, w), &removed, config.noise, &mut rng)
        })
        .collect::<Result<_>>()?;
    let probs = super::curves::target_probabilities(model, images.len(), (c, h, w), input.device(), target, config.batch_size, |j, img| {
        img.copy_from_slice(&images[j])
    })?;
    Ok(Road { morf: probs[..n].to_vec(), lerf: probs[n..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_image_is_filled_in_exactly() {
        // The stencil is symmetric, so it reproduces any affine image inside a hole that keeps
        // off the border; two equal channels are solved once, a third differs.
        let (h, w) = (12, 10);
        let mut image = Vec::new();
        for ch in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    image.push(if ch < 2 { 0.3 * x as f32 - 0.2 * y as f32 + 1.0 } else { 0.1 * y as f32 });
                }
            }
        }
        let removed: Vec<bool> = (0..h * w).map(|p| (2..9).contains(&(p / w)) && (3..8).contains(&(p % w)) && p != 5 * w + 5).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let filled = noisy_linear_imputation(&image, (3, h, w), &removed, 0.0, &mut rng).unwrap();
        for (i, (a, b)) in filled.iter().zip(&image).enumerate() {
            assert!((a - b).abs() < 1e-4, "element {i}: {a} vs {b}");
        }
        // With noise, only the removed pixels move.
        let noisy = noisy_linear_imputation(&image, (3, h, w), &removed, 0.5, &mut rng).unwrap();
        for (p, r) in removed.iter().enumerate() {
            assert_eq!(noisy[p] == image[p], !r, "pixel {p}");
        }
        assert!(noisy_linear_imputation(&image, (3, h, w), &vec![true; h * w], 0.0, &mut rng).is_err());
    }
}
