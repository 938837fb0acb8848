//! Separable filters with reflected borders: the Gaussian blur baseline and SSIM's window.

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
pub(super) fn separable_filter<T>(plane: &[T], h: usize, w: usize, kernel: &[T]) -> Vec<T>
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

#[cfg(test)]
mod tests {
    use super::*;
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
