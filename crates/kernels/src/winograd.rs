//! Winograd F(2×2, 3×3) for the 3×3, stride 1, padding 1 convolutions of ResNet-18 (Lavin &
//! Gray, 2016): each 2×2 output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` over the 4×4 input tile `d`,
//! so a layer becomes 16 matrix products `U_ξ · V_ξ` (`[C_out × C_in] · [C_in × tiles]`), 2.25×
//! fewer multiplications than the direct form. The transforms' constants are 0, ±1 and ½,
//! exact in binary floating point; only the order of the sums differs from the direct form.
//!
//! The input gradient of such a convolution is the same convolution of the output gradient
//! with the kernel transposed over channels and flipped in space, so it runs through the same
//! code with a second set of transformed weights made at load.

use rayon::prelude::*;

use crate::matmul::gemm_serial;
use crate::shared::{epilogue_row, SharedPtr};

/// Transformed weights `U_ξ = G g Gᵀ` of one 3×3 kernel `[C_out, C_in, 3, 3]`, stored as 16
/// row-major `[C_out × C_in]` matrices.
#[derive(Debug)]
pub(crate) struct WinogradKernel {
    u: Vec<f32>,
    c_out: usize,
    c_in: usize,
}

/// Tiles of one block of work: the block's transformed inputs and products stay near 8 MiB.
const BLOCK_BYTES: usize = 8 << 20;
/// The fewest transformed values one parallel task of a transform handles.
const MIN_TASK_VALUES: usize = 4096;

impl WinogradKernel {
    /// From a kernel `[C_out, C_in, 3, 3]` (row-major).
    pub(crate) fn new(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        assert_eq!(weight.len(), c_out * c_in * 9, "3×3 kernel size");
        let mut u = vec![0f32; 16 * c_out * c_in];
        let plane = c_out * c_in;
        for (oc, g) in weight.chunks(9).enumerate() {
            // G g: [4 × 3]
            let mut gg = [[0f32; 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = g0;
                gg[1][j] = 0.5 * (g0 + g1 + g2);
                gg[2][j] = 0.5 * (g0 - g1 + g2);
                gg[3][j] = g2;
            }
            // (G g) Gᵀ: [4 × 4]
            for (i, row) in gg.iter().enumerate() {
                let (g0, g1, g2) = (row[0], row[1], row[2]);
                let t = [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2];
                for (j, v) in t.into_iter().enumerate() {
                    u[(i * 4 + j) * plane + oc] = v;
                }
            }
        }
        Self { u, c_out, c_in }
    }

    /// The kernel of the input gradient: `W'[c][k][a][b] = W[k][c][2 − a][2 − b]`.
    pub(crate) fn new_transposed(weight: &[f32], c_out: usize, c_in: usize) -> Self {
        let mut flipped = vec![0f32; weight.len()];
        for k in 0..c_out {
            for c in 0..c_in {
                for a in 0..3 {
                    for b in 0..3 {
                        flipped[(c * c_out + k) * 9 + a * 3 + b] = weight[(k * c_in + c) * 9 + (2 - a) * 3 + (2 - b)];
                    }
                }
            }
        }
        Self::new(&flipped, c_in, c_out)
    }

    /// `out = epilogue(conv(x) + bias)` for `x` `[batch, C_in, h, w]`, stride 1, padding 1,
    /// output `[batch, C_out, h, w]`; the epilogue adds `residual` (same shape as the output)
    /// and applies ReLU when asked.
    pub(crate) fn conv(&self, x: &[f32], batch: usize, (h, w): (usize, usize), bias: Option<&[f32]>, residual: Option<&[f32]>, relu: bool) -> Vec<f32> {
        let (c_in, c_out) = (self.c_in, self.c_out);
        assert_eq!(x.len(), batch * c_in * h * w, "winograd input size");
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let mut out = vec![0f32; batch * c_out * h * w];
        // Blocks of whole tile rows, over all images of the batch.
        let tile_rows = batch * th;
        let rows_per_block = (BLOCK_BYTES / (16 * 4 * c_in.max(c_out) * tw)).clamp(1, tile_rows);
        let max_tiles = rows_per_block * tw;
        let mut v = vec![0f32; 16 * c_in * max_tiles];
        let mut m = vec![0f32; 16 * c_out * max_tiles];
        let out_ptr = SharedPtr(out.as_mut_ptr());
        for first in (0..tile_rows).step_by(rows_per_block) {
            let rows = rows_per_block.min(tile_rows - first);
            let tiles = rows * tw;
            // Channels per task: at least a few thousand values to transform, so that small
            // maps (`layer4` at batch 1: 16 tiles a channel) are not one task a channel.
            let min_len = (MIN_TASK_VALUES / (16 * tiles)).max(1);
            let v = &mut v[..16 * c_in * tiles];
            let m = &mut m[..16 * c_out * tiles];
            // Input transform: V_ξ[c][t] = (Bᵀ d B)_ξ, channels in parallel.
            let v_ptr = SharedPtr(v.as_mut_ptr());
            (0..c_in).into_par_iter().with_min_len(min_len).for_each_init(
                || RowTransform::new(tw),
                |rows_t, c| {
                    let v_ptr = &v_ptr;
                    for r in 0..rows {
                        let (b, ty) = ((first + r) / th, (first + r) % th);
                        let plane = &x[(b * c_in + c) * h * w..(b * c_in + c + 1) * h * w];
                        rows_t.load(plane, (h, w), ty);
                        for xi in 0..16 {
                            // SAFETY: (ξ, c, tile row r) is written by the one task of channel c.
                            let dst = unsafe { std::slice::from_raw_parts_mut(v_ptr.get().add((xi * c_in + c) * tiles + r * tw), tw) };
                            rows_t.column_transform(xi, dst);
                        }
                    }
                },
            );
            // 16 products M_ξ = U_ξ · V_ξ, one per task.
            m.par_chunks_mut(c_out * tiles).zip(v.par_chunks(c_in * tiles)).enumerate().for_each(|(xi, (mx, vx))| {
                let ux = &self.u[xi * c_out * c_in..(xi + 1) * c_out * c_in];
                gemm_serial(mx, ux, vx, (c_out, c_in, tiles));
            });
            // Output transform, bias and epilogue, output channels in parallel.
            let m = &*m;
            (0..c_out).into_par_iter().with_min_len(min_len).for_each_init(
                || vec![0f32; 4 * tw],
                |y, k| {
                    let out_ptr = &out_ptr;
                    let bias = bias.map_or(0.0, |b| b[k]);
                    for r in 0..rows {
                        let (b, ty) = ((first + r) / th, (first + r) % th);
                        let base = (b * c_out + k) * h * w;
                        let mx: [&[f32]; 16] = std::array::from_fn(|xi| &m[(xi * c_out + k) * tiles + r * tw..(xi * c_out + k) * tiles + (r + 1) * tw]);
                        output_rows(&mx, y, tw);
                        for i in 0..2 {
                            let oy = 2 * ty + i;
                            if oy >= h {
                                continue;
                            }
                            // SAFETY: output row (b, k, oy) belongs to channel k's task and tile row r.
                            let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(base + oy * w), w) };
                            let (even, odd) = (&y[(2 * i) * tw..(2 * i + 1) * tw], &y[(2 * i + 1) * tw..(2 * i + 2) * tw]);
                            for (pair, (&e, &o)) in dst.chunks_mut(2).zip(even.iter().zip(odd)) {
                                pair[0] = e + bias;
                                if let Some(p) = pair.get_mut(1) {
                                    *p = o + bias;
                                }
                            }
                            epilogue_row(dst, residual.map(|r| &r[base + oy * w..base + (oy + 1) * w]), relu);
                        }
                    }
                },
            );
        }
        out
    }
}

/// The row transform `Bᵀ d` of one tile row, kept as even and odd padded columns so that the
/// column transform of every tile of the row is a handful of contiguous vector operations:
/// padded column `2k` (input column `2k − 1`) is `even[i][k]`, padded column `2k + 1` is
/// `odd[i][k]`, for `k` in `0..=tw`.
struct RowTransform {
    even: [Vec<f32>; 4],
    odd: [Vec<f32>; 4],
    /// The input rows before the transform, split the same way.
    rows_even: [Vec<f32>; 4],
    rows_odd: [Vec<f32>; 4],
    tw: usize,
}

impl RowTransform {
    fn new(tw: usize) -> Self {
        let zeros = || -> [Vec<f32>; 4] { std::array::from_fn(|_| vec![0.0; tw + 1]) };
        Self { even: zeros(), odd: zeros(), rows_even: zeros(), rows_odd: zeros(), tw }
    }

    /// Loads the input rows `2·ty − 1 … 2·ty + 2` (zeros outside the plane) and applies `Bᵀ`.
    fn load(&mut self, plane: &[f32], (h, w): (usize, usize), ty: usize) {
        let n = self.tw + 1;
        let (de, dodd) = (&mut self.rows_even, &mut self.rows_odd);
        for i in 0..4 {
            de[i].fill(0.0);
            dodd[i].fill(0.0);
            let y = 2 * ty as isize - 1 + i as isize;
            if y < 0 || y >= h as isize {
                continue;
            }
            let row = &plane[y as usize * w..(y as usize + 1) * w];
            // even[k] = row[2k − 1], odd[k] = row[2k]
            for (k, v) in de[i].iter_mut().enumerate().skip(1) {
                *v = row.get(2 * k - 1).copied().unwrap_or(0.0);
            }
            for (k, v) in dodd[i].iter_mut().enumerate() {
                *v = row.get(2 * k).copied().unwrap_or(0.0);
            }
        }
        for (d, out) in [(&*de, &mut self.even), (&*dodd, &mut self.odd)] {
            for k in 0..n {
                let (a, b, c, e) = (d[0][k], d[1][k], d[2][k], d[3][k]);
                out[0][k] = a - c;
                out[1][k] = b + c;
                out[2][k] = c - b;
                out[3][k] = b - e;
            }
        }
    }

    /// `dst[tx] = ((Bᵀ d) B)_ξ` of every tile `tx` of the row, ξ = 4i + j.
    fn column_transform(&self, xi: usize, dst: &mut [f32]) {
        let (i, j) = (xi / 4, xi % 4);
        let tw = self.tw;
        let (e0, e1) = (&self.even[i][..tw], &self.even[i][1..=tw]);
        let (o0, o1) = (&self.odd[i][..tw], &self.odd[i][1..=tw]);
        // Tile tx reads padded columns 2tx … 2tx + 3 = e0, o0, e1, o1.
        match j {
            0 => dst.iter_mut().zip(e0.iter().zip(e1)).for_each(|(d, (a, c))| *d = a - c),
            1 => dst.iter_mut().zip(o0.iter().zip(e1)).for_each(|(d, (b, c))| *d = b + c),
            2 => dst.iter_mut().zip(o0.iter().zip(e1)).for_each(|(d, (b, c))| *d = c - b),
            _ => dst.iter_mut().zip(o0.iter().zip(o1)).for_each(|(d, (b, e))| *d = b - e),
        }
    }
}

/// `Aᵀ m A` for every tile of a row: `m[ξ][tx]` → `y[2i + j][tx]`, output (i, j) of tile tx.
fn output_rows(m: &[&[f32]; 16], y: &mut [f32], tw: usize) {
    let (y00, rest) = y.split_at_mut(tw);
    let (y01, rest) = rest.split_at_mut(tw);
    let (y10, y11) = rest.split_at_mut(tw);
    for tx in 0..tw {
        let v = |xi: usize| m[xi][tx];
        // Aᵀ m, column j: t0 = m0j + m1j + m2j, t1 = m1j − m2j − m3j
        let t0: [f32; 4] = std::array::from_fn(|j| v(j) + v(4 + j) + v(8 + j));
        let t1: [f32; 4] = std::array::from_fn(|j| v(4 + j) - v(8 + j) - v(12 + j));
        y00[tx] = t0[0] + t0[1] + t0[2];
        y01[tx] = t0[1] - t0[2] - t0[3];
        y10[tx] = t1[0] + t1[1] + t1[2];
        y11[tx] = t1[1] - t1[2] - t1[3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3, stride 1, padding 1 convolution, in f64.
    fn direct(x: &[f32], wt: &[f32], batch: usize, c_in: usize, c_out: usize, h: usize, w: usize) -> Vec<f64> {
        let mut out = vec![0f64; batch * c_out * h * w];
        for b in 0..batch {
            for k in 0..c_out {
                for y in 0..h {
                    for xx in 0..w {
                        let mut s = 0f64;
                        for c in 0..c_in {
                            for a in 0..3 {
                                for e in 0..3 {
                                    let (iy, ix) = (y as isize + a as isize - 1, xx as isize + e as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    s += x[((b * c_in + c) * h + iy as usize) * w + ix as usize] as f64 * wt[((k * c_in + c) * 3 + a) * 3 + e] as f64;
                                }
                            }
                        }
                        out[((b * c_out + k) * h + y) * w + xx] = s;
                    }
                }
            }
        }
        out
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_direct_convolution_on_odd_and_even_sizes() {
        for (batch, c_in, c_out, h, w) in [(2, 3, 5, 7, 6), (1, 4, 2, 1, 1), (3, 2, 3, 4, 9), (1, 1, 1, 2, 3)] {
            let x = pseudo(batch * c_in * h * w, 1);
            let wt = pseudo(c_out * c_in * 9, 2);
            let bias = pseudo(c_out, 3);
            let expected = direct(&x, &wt, batch, c_in, c_out, h, w);
            let got = WinogradKernel::new(&wt, c_out, c_in).conv(&x, batch, (h, w), Some(&bias), None, false);
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                let e = e + bias[(i / (h * w)) % c_out] as f64;
                assert!((*g as f64 - e).abs() < 1e-5, "{batch}x{c_in}x{h}x{w} -> {c_out}: [{i}] {g} vs {e}");
            }
        }
    }

    #[test]
    fn epilogue_adds_the_residual_then_clamps() {
        let (c, h, w) = (2, 3, 3);
        let x = pseudo(c * h * w, 4);
        let wt = pseudo(c * c * 9, 5);
        let residual = pseudo(c * h * w, 6);
        let plain = WinogradKernel::new(&wt, c, c).conv(&x, 1, (h, w), None, None, false);
        let fused = WinogradKernel::new(&wt, c, c).conv(&x, 1, (h, w), None, Some(&residual), true);
        let mut clamped = 0;
        for ((p, r), f) in plain.iter().zip(&residual).zip(&fused) {
            assert!((f - (p + r).max(0.0)).abs() < 1e-6);
            clamped += usize::from(p + r < 0.0);
        }
        assert!(clamped > 0 && clamped < plain.len(), "the test must exercise both sides of the ReLU");
    }

    #[test]
    fn transposed_kernel_gives_the_adjoint() {
        // <conv(x), g> = <x, conv_T(g)> for the flipped, channel-transposed kernel.
        let (batch, c_in, c_out, h, w) = (2, 3, 4, 5, 6);
        let x = pseudo(batch * c_in * h * w, 7);
        let g = pseudo(batch * c_out * h * w, 8);
        let wt = pseudo(c_out * c_in * 9, 9);
        let y = WinogradKernel::new(&wt, c_out, c_in).conv(&x, batch, (h, w), None, None, false);
        let xt = WinogradKernel::new_transposed(&wt, c_out, c_in).conv(&g, batch, (h, w), None, None, false);
        let lhs: f64 = y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum();
        let rhs: f64 = x.iter().zip(&xt).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }

    #[test]
    fn an_image_gives_the_same_bits_alone_or_in_a_batch() {
        // A features cache mixes images computed in different batches: each must not depend on
        // the batch it was in, to the bit.
        let mut failed = Vec::new();
        for (c, h) in [(64, 16), (128, 8), (512, 2), (256, 4), (512, 8), (64, 2), (64, 4)] {
            let wt = pseudo(c * c * 9, 3);
            let wg = WinogradKernel::new(&wt, c, c);
            let x = pseudo(3 * c * h * h, 4);
            let batch = wg.conv(&x, 3, (h, h), None, None, false);
            for b in 0..3 {
                let alone = wg.conv(&x[b * c * h * h..(b + 1) * c * h * h], 1, (h, h), None, None, false);
                if alone != batch[b * c * h * h..(b + 1) * c * h * h] {
                    failed.push((c, h, b));
                }
            }
        }
        assert!(failed.is_empty(), "(channels, size, image) that differ: {failed:?}");
    }
}
