//! Is a map evidence? Deletion and insertion curves, ROAD (removal with noisy linear
//! imputation), the model-randomization check as a rank correlation, the map's sparseness
//! (Gini index) and complexity (entropy), and — where the truth is known — energy inside a
//! region and the pointing game; Captum's infidelity and max-sensitivity.

mod infidelity;
mod protocol;
mod road;
mod sensitivity;

pub use infidelity::{infidelity, InfidelityConfig};
pub use protocol::{compare_maps, evaluate, Evaluation, Measures, Protocol, Similarity};
pub use road::{noisy_linear_imputation, road, Road, RoadConfig};
pub use sensitivity::{sensitivity_max, SensitivityConfig};

use candle_core::{DType, Tensor, D};

use crate::attribute::check_target;
use crate::error::{ExplainError, Result};
use crate::model::{Hooks, Model};

/// What replaces removed (or not yet revealed) pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// All zero.
    Zero,
    /// A Gaussian blur of the input (σ in pixels).
    Blur {
        /// The blur's σ, in pixels.
        sigma_px: u32,
    },
}

/// Settings of [`deletion_insertion`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveConfig {
    /// Number of steps; the curve has `steps + 1` points from 0 to all pixels.
    pub steps: usize,
    /// What removed pixels become.
    pub baseline: Baseline,
    /// Images per forward batch.
    pub batch_size: usize,
}

impl Default for CurveConfig {
    fn default() -> Self {
        Self { steps: 20, baseline: Baseline::Zero, batch_size: 16 }
    }
}

/// The two curves of one image: target-class probability after each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    /// Most relevant pixels removed first (lower area is better).
    pub deletion: Vec<f32>,
    /// Most relevant pixels inserted first into the baseline (higher area is better).
    pub insertion: Vec<f32>,
}

impl Curves {
    /// Area under the deletion curve over [0, 1] (trapezoids): lower is better.
    pub fn deletion_auc(&self) -> f32 {
        trapezoid(&self.deletion)
    }

    /// Area under the insertion curve: higher is better.
    pub fn insertion_auc(&self) -> f32 {
        trapezoid(&self.insertion)
    }
}

fn trapezoid(ys: &[f32]) -> f32 {
    if ys.len() < 2 {
        return ys.first().copied().unwrap_or(0.0);
    }
    let dx = 1.0 / (ys.len() - 1) as f32;
    ys.windows(2).map(|w| 0.5 * (w[0] + w[1]) * dx).sum()
}

/// Deletion (remove pixels in decreasing attribution order, replaced by the baseline) and
/// insertion (reveal them on the baseline) curves of one image `[1, C, H, W]` for a map of
/// `H·W` importances. Pixels are removed in all channels at once; ties keep row-major order.
/// Each curve's `steps + 1` images are evaluated in batches.
pub fn deletion_insertion<M: Model + ?Sized>(model: &M, input: &Tensor, importance: &[f32], target: usize, config: &CurveConfig) -> Result<Curves> {
    Ok(deletion_insertion_many(model, input, &[importance], target, config)?.remove(0))
}

/// [`deletion_insertion`] for several maps of the same image (one per method, say), as one
/// stream of batches: the curves' shared end points (the image itself, and the baseline) are
/// evaluated once for all maps, and each perturbed image is built only when its batch runs.
pub fn deletion_insertion_many<M: Model + ?Sized>(
    model: &M,
    input: &Tensor,
    importances: &[&[f32]],
    target: usize,
    config: &CurveConfig,
) -> Result<Vec<Curves>> {
    let (b, c, h, w) = input.dims4()?;
    if b != 1 || importances.iter().any(|m| m.len() != h * w) || config.steps == 0 {
        return Err(ExplainError::Invalid(format!(
            "deletion/insertion take one image and H·W maps with steps ≥ 1 (input {:?}, maps of {:?}, steps {})",
            input.dims(),
            importances.iter().map(|m| m.len()).collect::<Vec<_>>(),
            config.steps
        )));
    }
    let x: Vec<f32> = input.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let base = match config.baseline {
        Baseline::Zero => vec![0.0; x.len()],
        Baseline::Blur { sigma_px } => gaussian_blur(&x, c, h, w, sigma_px as f32),
    };
    let orders: Vec<Vec<usize>> = importances
        .iter()
        .map(|importance| {
            let mut order: Vec<usize> = (0..h * w).collect();
            order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
            order
        })
        .collect();
    let steps = config.steps;
    let counts: Vec<usize> = (0..=steps).map(|s| (s * h * w + steps / 2) / steps).collect();
    // The images to evaluate: 0 = the input, 1 = the baseline, then for each map the interior
    // points (steps 1 .. steps−1) of its deletion curve and of its insertion curve.
    let interior = steps - 1;
    let total = 2 + importances.len() * 2 * interior;
    let build = |j: usize, img: &mut [f32]| {
        if j < 2 {
            img.copy_from_slice(if j == 0 { &x } else { &base });
            return;
        }
        let j = j - 2;
        let (map, rest) = (j / (2 * interior), j % (2 * interior));
        let (deleting, k) = (rest < interior, counts[rest % interior + 1]);
        img.copy_from_slice(if deleting { &x } else { &base });
        let from = if deleting { &base } else { &x };
        for &p in &orders[map][..k] {
            for ch in 0..c {
                img[ch * h * w + p] = from[ch * h * w + p];
            }
        }
    };
    let probs = target_probabilities(model, total, (c, h, w), input.device(), target, config.batch_size, build)?;
    let (at_input, at_base) = (probs[0], probs[1]);
    Ok((0..importances.len())
        .map(|m| {
            let own = &probs[2 + m * 2 * interior..2 + (m + 1) * 2 * interior];
            let deletion = std::iter::once(at_input).chain(own[..interior].iter().copied()).chain(std::iter::once(at_base)).collect();
            let insertion = std::iter::once(at_base).chain(own[interior..].iter().copied()).chain(std::iter::once(at_input)).collect();
            Curves { deletion, insertion }
        })
        .collect())
}

/// The target's softmax probability for `count` images `[c, h, w]`, each written by
/// `build(index, image)` only when its batch of `batch_size` runs.
fn target_probabilities<M: Model + ?Sized>(
    model: &M,
    count: usize,
    (c, h, w): (usize, usize, usize),
    device: &candle_core::Device,
    target: usize,
    batch_size: usize,
    build: impl Fn(usize, &mut [f32]),
) -> Result<Vec<f32>> {
    let per_image = c * h * w;
    let chunk = batch_size.max(1);
    let mut probs = Vec::with_capacity(count);
    let mut start = 0;
    while start < count {
        let len = chunk.min(count - start);
        let mut images = vec![0f32; len * per_image];
        for (i, img) in images.chunks_mut(per_image).enumerate() {
            build(start + i, img);
        }
        let logits = model.forward(&Tensor::from_vec(images, (len, c, h, w), device)?, &Hooks::none())?;
        check_target(target, logits.dim(1)?)?;
        probs.extend(softmax_rows(&logits)?.iter().map(|row| row[target]));
        start += len;
    }
    Ok(probs)
}

fn softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let m = logits.max_keepdim(D::Minus1)?;
    let e = logits.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.to_dtype(DType::F32)?.to_vec2()?)
}

/// Separable Gaussian blur with reflected borders, per channel (kernel radius 3σ).
pub fn gaussian_blur(x: &[f32], c: usize, h: usize, w: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return x.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let mut out = x.to_vec();
    for ch in 0..c {
        let plane = ch * h * w..(ch + 1) * h * w;
        out[plane.clone()].copy_from_slice(&separable_filter(&x[plane], h, w, &kernel));
    }
    out
}

/// SciPy's `reflect` border: d c b a | a b c d | d c b a.
fn reflect_index(i: isize, n: usize) -> usize {
    let n = n as isize;
    let mut i = i;
    while i < 0 || i >= n {
        i = if i < 0 { -i - 1 } else { 2 * n - i - 1 };
    }
    i as usize
}

/// Convolves an `h×w` plane with a centred odd-length kernel along rows, then columns, with
/// reflected borders.
fn separable_filter<T>(plane: &[T], h: usize, w: usize, kernel: &[T]) -> Vec<T>
where
    T: Copy + Default + std::ops::Mul<Output = T> + std::iter::Sum<T>,
{
    let r = (kernel.len() / 2) as isize;
    let along = |src: &[T], horizontal: bool| -> Vec<T> {
        let mut out = vec![T::default(); h * w];
        for y in 0..h {
            for x in 0..w {
                out[y * w + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, &kv)| {
                        let d = k as isize - r;
                        kv * if horizontal { src[y * w + reflect_index(x as isize + d, w)] } else { src[reflect_index(y as isize + d, h) * w + x] }
                    })
                    .sum();
            }
        }
        out
    };
    along(&along(plane, true), false)
}

/// Structural similarity of two `h×w` maps with values in [0, 1], as scikit-image's
/// `structural_similarity(data_range=1, gaussian_weights=True, sigma=1.5,
/// use_sample_covariance=False)` computes it: Gaussian-weighted local means, variances and
/// covariance (11-tap window, `reflect` borders), `C1 = 0.01²`, `C2 = 0.03²`, the SSIM map
/// averaged away from a 5-pixel border. `None` for maps smaller than the window.
pub fn ssim(a: &[f32], b: &[f32], h: usize, w: usize) -> Option<f64> {
    const RADIUS: usize = 5;
    if a.len() != h * w || b.len() != h * w || h < 2 * RADIUS + 1 || w < 2 * RADIUS + 1 {
        return None;
    }
    let kernel: Vec<f64> = {
        let k: Vec<f64> = (0..=2 * RADIUS).map(|i| (-0.5 * ((i as f64 - RADIUS as f64) / 1.5).powi(2)).exp()).collect();
        let sum: f64 = k.iter().sum();
        k.iter().map(|v| v / sum).collect()
    };
    let filter = |x: &[f64]| separable_filter(x, h, w, &kernel);
    let x: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let product = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<f64>>();
    let (ux, uy) = (filter(&x), filter(&y));
    let (uxx, uyy, uxy) = (filter(&product(&x, &x)), filter(&product(&y, &y)), filter(&product(&x, &y)));
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let mut total = 0.0;
    let mut count = 0usize;
    for r in RADIUS..h - RADIUS {
        for c in RADIUS..w - RADIUS {
            let i = r * w + c;
            let (vx, vy, vxy) = (uxx[i] - ux[i] * ux[i], uyy[i] - uy[i] * uy[i], uxy[i] - ux[i] * uy[i]);
            total += ((2.0 * ux[i] * uy[i] + c1) * (2.0 * vxy + c2)) / ((ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2));
            count += 1;
        }
    }
    Some(total / count as f64)
}

/// Spearman's rank correlation (average ranks for ties) of the maps [`above_noise`]; `None` if
/// either side is constant.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let (ra, rb) = (ranks(&above_noise(a)), ranks(&above_noise(b)));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// The fraction of a map's largest magnitude at or below which a value is f32 rounding noise
/// (about 8 units in the last place): [`above_noise`] counts it as 0.
pub const NOISE_RELATIVE: f32 = 1e-6;
/// The magnitude below which a value is noise whatever the map's scale: within eight orders of
/// magnitude of f32's denormal range (below ~1.2e-38), where whether the CPU flushes denormals
/// to zero decides the value (see `tgc_kernels::denormals`).
pub const NOISE_ABSOLUTE: f32 = 1e-30;

/// The map with its noise-level values set to 0: every value whose magnitude is at most
/// [`NOISE_RELATIVE`] of the map's largest or below [`NOISE_ABSOLUTE`]. The rank-based
/// statistics ([`spearman`], [`sparseness`], [`complexity`]) read maps through it, so noise
/// counts as ties at zero and cannot reorder a map: flushing denormals or not leaves them equal.
pub fn above_noise(map: &[f32]) -> Vec<f32> {
    let largest = map.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let floor = (NOISE_RELATIVE * largest).max(NOISE_ABSOLUTE);
    map.iter().map(|&v| if v.abs() <= floor { 0.0 } else { v }).collect()
}

fn ranks(v: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Sparseness (Chalasani et al. 2020, as Quantus computes it): the Gini index of the map's
/// |values| [`above_noise`] (each + 1e-7), `Σ_i (2i − n − 1) a_(i) / (n Σ a)` over the values in increasing
/// order. 0 for a uniform map, towards 1 when one value holds everything (higher = sparser).
pub fn sparseness(map: &[f32]) -> Option<f64> {
    if map.is_empty() {
        return None;
    }
    let mut a: Vec<f64> = above_noise(map).iter().map(|v| v.abs() as f64 + 1e-7).collect();
    a.sort_by(f64::total_cmp);
    let n = a.len() as f64;
    let weighted: f64 = a.iter().enumerate().map(|(i, v)| (2.0 * (i as f64 + 1.0) - n - 1.0) * v).sum();
    Some(weighted / (n * a.iter().sum::<f64>()))
}

/// Complexity (Bhatt et al. 2020, as Quantus computes it): the entropy (natural log) of the
/// map's |values| [`above_noise`] normalised to sum to one. 0 when one value holds everything, ln n for a
/// uniform map (lower = simpler); `None` for an all-zero map.
pub fn complexity(map: &[f32]) -> Option<f64> {
    let map = above_noise(map);
    let total: f64 = map.iter().map(|v| v.abs() as f64).sum();
    (total > 0.0).then(|| map.iter().map(|v| v.abs() as f64 / total).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum())
}

/// Fraction of the map's total |value| that lies inside the mask (mask > 0.5).
pub fn energy_in_mask(map: &[f32], mask: &[f32]) -> Option<f64> {
    let total: f64 = map.iter().map(|v| v.abs() as f64).sum();
    (total > 0.0).then(|| map.iter().zip(mask).filter(|(_, m)| **m > 0.5).map(|(v, _)| v.abs() as f64).sum::<f64>() / total)
}

/// Pointing game: whether the map's maximum |value| lies inside the mask.
pub fn pointing_hit(map: &[f32], mask: &[f32]) -> bool {
    map.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map(|(i, _)| mask[i] > 0.5).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_level_values_cannot_move_the_rank_statistics() {
        // A map with exact zeros, and the same map with noise there: denormals (what a CPU that
        // keeps them computes where one that flushes them gets 0), values computed from them,
        // and rounding-level values (≤ 1e-6 of the largest, 5).
        let clean: Vec<f32> = (0..400).map(|i| if i % 3 == 0 { 0.0 } else { ((i * 37 % 101) as f32 - 50.0) / 10.0 }).collect();
        let noise = |i: usize| match i % 4 {
            0 => f32::from_bits(i as u32 + 1),
            1 => -1e-33,
            2 => 4.9e-6,
            _ => 0.0,
        };
        let noisy: Vec<f32> = clean.iter().enumerate().map(|(i, &v)| if v == 0.0 { noise(i) } else { v }).collect();
        let other: Vec<f32> = (0..400).map(|i| ((i * 53 % 97) as f32 - 40.0) / 7.0).collect();
        assert_ne!(ranks(&clean), ranks(&noisy), "without the floor the noise would be ranked");
        assert_eq!(spearman(&noisy, &other), spearman(&clean, &other));
        assert!(spearman(&clean, &other).is_some());
        assert_eq!(sparseness(&noisy), sparseness(&clean));
        assert_eq!(complexity(&noisy), complexity(&clean));
        // Above the floor nothing changes: a real map at a small scale keeps its order.
        let small: Vec<f32> = clean.iter().map(|v| v * 1e-20).collect();
        assert!((spearman(&small, &clean).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(above_noise(&[5.0, 5.1e-6, -5.1e-6, 4.9e-6]), [5.0, 5.1e-6, -5.1e-6, 0.0]);
        // A map that is all noise is all zero: constant, no complexity.
        let tiny = [1e-33f32, 2e-33, -5e-34, f32::from_bits(9)];
        assert_eq!(spearman(&tiny, &other[..4]), None);
        assert_eq!(complexity(&tiny), None);
    }

    #[test]
    fn ssim_known_answers() {
        let (h, w) = (16, 20);
        let x: Vec<f32> = (0..h * w).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
        assert!((ssim(&x, &x, h, w).unwrap() - 1.0).abs() < 1e-12);
        // Two constant maps: no variance, so SSIM is the luminance term alone,
        // (2·0.5·0.25 + C1) / (0.5² + 0.25² + C1) with C1 = 1e-4.
        let (a, b) = (vec![0.5f32; h * w], vec![0.25f32; h * w]);
        let expected = (2.0 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4);
        assert!((ssim(&a, &b, h, w).unwrap() - expected).abs() < 1e-12);
        // An inverted map is structurally opposite; a map smaller than the window has no SSIM.
        let inv: Vec<f32> = x.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&x, &inv, h, w).unwrap() < -0.5);
        assert_eq!(ssim(&x[..100], &x[..100], 10, 10), None);
        // Reference values from scikit-image 0.26 `structural_similarity(x, y, data_range=1,
        // gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` on the same maps.
        let y: Vec<f32> = (0..h * w).map(|i| ((i * 53 + 7) % 97) as f32 / 96.0).collect();
        let got = ssim(&x, &y, h, w).unwrap();
        assert!((got - -0.012308245101859792).abs() < 1e-6, "{got}");
        let got = ssim(&x, &inv, h, w).unwrap();
        assert!((got - -0.9701687189194396).abs() < 1e-6, "{got}");
    }

    #[test]
    fn spearman_by_hand() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Ranks a = (1, 2.5, 2.5, 4), b = (1, 2, 3, 4): ρ = 4.5 / √(4.5 · 5).
        let r = spearman(&[1.0, 5.0, 5.0, 9.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((r - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn sparseness_and_complexity_known_answers() {
        let n = 100;
        let uniform = vec![0.5f32; n];
        let mut one = vec![0f32; n];
        one[17] = -3.0;
        assert!(sparseness(&uniform).unwrap().abs() < 1e-9);
        // One value of 3 among zeros: (n − 1)/n, up to the 1e-7 added to every value.
        assert!((sparseness(&one).unwrap() - (n as f64 - 1.0) / n as f64).abs() < 1e-5);
        assert!((complexity(&uniform).unwrap() - (n as f64).ln()).abs() < 1e-12);
        assert_eq!(complexity(&one), Some(0.0));
        assert!((complexity(&[1.0, -1.0, 0.0]).unwrap() - 2f64.ln()).abs() < 1e-12);
        // Values 1, 2, 3: Gini = (−2·1 + 0·2 + 2·3)/(3·6) = 4/18.
        assert!((sparseness(&[3.0, 1.0, 2.0]).unwrap() - 4.0 / 18.0).abs() < 1e-6);
        assert_eq!(complexity(&[0.0; 4]), None);
        assert_eq!(sparseness(&[]), None);
    }

    #[test]
    fn energy_and_pointing() {
        let map = [0.0, -3.0, 1.0, 0.0];
        let mask = [0.0, 1.0, 0.0, 0.0];
        assert_eq!(energy_in_mask(&map, &mask), Some(0.75));
        assert!(pointing_hit(&map, &mask));
        assert!(!pointing_hit(&map, &[0.0, 0.0, 1.0, 0.0]));
        assert_eq!(energy_in_mask(&[0.0; 4], &mask), None);
    }

    #[test]
    fn trapezoid_area() {
        assert!((trapezoid(&[1.0, 0.0]) - 0.5).abs() < 1e-7);
        assert!((trapezoid(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn blur_keeps_constants_and_smooths_a_spike() {
        let flat = vec![2.0f32; 25];
        assert!(gaussian_blur(&flat, 1, 5, 5, 1.0).iter().all(|v| (v - 2.0).abs() < 1e-5));
        let mut spike = vec![0f32; 25];
        spike[12] = 1.0;
        let b = gaussian_blur(&spike, 1, 5, 5, 1.0);
        assert!(b[12] < 1.0 && b[11] > 0.0 && (b.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    }
}
