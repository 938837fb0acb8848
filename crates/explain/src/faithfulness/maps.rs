//! Measures of maps themselves: the randomisation check's similarity (Spearman, SSIM), the
//! noise floor of the rank statistics, sparseness, complexity, and — where the truth is known —
//! energy inside a region and the pointing game.

use super::filter::separable_filter;

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
}
