//! The matrix product `C (+)= A·B`, packed, blocked and threaded here so that its summation
//! order is ours and the same on every CPU.
//!
//! **The order.** Every output is one chain of fused multiply-adds over `k` in increasing
//! order, started from the destination's value when accumulating and from `+0.0` otherwise:
//!
//! ```text
//! acc = accumulate ? C[i][j] : 0.0
//! for p in 0..k { acc = fma(A[i][p], B[p][j], acc) }      // one rounding per step
//! C[i][j] = acc
//! ```
//!
//! Nothing else touches a sum: the `k` loop is cut into blocks of `kc` (the chain is stored
//! to `C` after a block and reloaded before the next, which does not change a value), `k` is
//! never split across threads, and the vector lanes, tiles and threads only decide *which*
//! outputs are computed together. So the 16-wide AVX-512 kernel, the 8-wide AVX2 + FMA one
//! and the portable one (`f32::mul_add`, which is exact in software too) give the same bits,
//! at any thread count, for a row alone or in a batch. Zero padding of partial tiles adds
//! only outputs that are thrown away.
//!
//! **The blocking** (Goto's, with the roles of BLIS's A and B swapped because our vectors
//! run along a row of `C`): an `MR × kc` panel of A stays in L1 while the `kc × nc` block of
//! B, packed in `NR`-wide panels, streams from L2; A's `mc × kc` block sits in L3.

use crate::vecmath::GemmKernel;

/// A strided matrix: pointer to element (0, 0), row stride, column stride.
#[derive(Clone, Copy)]
pub(crate) struct Mat(pub(crate) *const f32, pub(crate) isize, pub(crate) isize);

/// A strided destination: pointer to element (0, 0), row stride, column stride.
#[derive(Clone, Copy)]
pub(crate) struct MatMut(pub(crate) *mut f32, pub(crate) isize, pub(crate) isize);

// SAFETY: the pointers are only dereferenced inside `gemm`, whose callers guarantee that the
// buffers outlive the call and that the threads write disjoint outputs.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}
unsafe impl Send for MatMut {}
unsafe impl Sync for MatMut {}

impl Mat {
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> f32 {
        *self.0.offset(i as isize * self.1 + j as isize * self.2)
    }
}

impl MatMut {
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> *mut f32 {
        self.0.offset(i as isize * self.1 + j as isize * self.2)
    }
}

/// Whether a product may use rayon's threads or must stay on the calling one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    One,
    Rayon,
}

/// A kernel's tile and blocking: `MR × NR` outputs a tile (`NR` along a row of C, in
/// vectors), `kc` steps of `k` a block, `nc` columns of B packed together (L2), `mc` rows of A
/// packed together (L3).
#[derive(Clone, Copy)]
struct Blocking {
    kc: usize,
    nc: usize,
    mc: usize,
}

/// One tile's `kc` steps: `acc[i][j] = fma(a_i[p], b_p[j], acc[i][j])` for `p` in order,
/// row `i` of A read from `a[i] + p·a_step` and row `p` of B (`NR` contiguous values) from
/// `b + p·b_step`; the accumulators start from the `MR × NR` outputs at `c` (rows `c_rs`
/// apart, unit column stride) when `load`, from zero otherwise, and are stored there. The one
/// definition every kernel compiles: the SIMD builds differ only in the instructions the
/// compiler may use, and every lane is a separate output.
#[inline(always)]
unsafe fn tile<const MR: usize, const NR: usize>(
    kc: usize,
    a: [*const f32; MR],
    a_step: usize,
    b: *const f32,
    b_step: usize,
    c: *mut f32,
    c_rs: usize,
    load: bool,
) {
    let mut acc = [[0f32; NR]; MR];
    if load {
        for (i, row) in acc.iter_mut().enumerate() {
            *row = *(c.add(i * c_rs) as *const [f32; NR]);
        }
    }
    for p in 0..kc {
        let bp = &*(b.add(p * b_step) as *const [f32; NR]);
        for i in 0..MR {
            let ai = *a[i].add(p * a_step);
            for j in 0..NR {
                acc[i][j] = ai.mul_add(bp[j], acc[i][j]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        *(c.add(i * c_rs) as *mut [f32; NR]) = *row;
    }
}

/// A tile function: `(kc, A's row pointers, A's step, B, B's step, C, C's row stride, load)`.
type TileFn<const MR: usize> = unsafe fn(usize, [*const f32; MR], usize, *const f32, usize, *mut f32, usize, bool);

/// The AVX-512 tile: 8 rows × 48 columns (24 of the 32 vector registers; eight row pointers
/// leave the general registers enough not to spill).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn tile_avx512(kc: usize, a: [*const f32; 8], a_step: usize, b: *const f32, b_step: usize, c: *mut f32, c_rs: usize, load: bool) {
    tile::<8, 48>(kc, a, a_step, b, b_step, c, c_rs, load)
}

/// The AVX2 + FMA tile: 6 rows × 16 columns (12 of the 16 vector registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(kc: usize, a: [*const f32; 6], a_step: usize, b: *const f32, b_step: usize, c: *mut f32, c_rs: usize, load: bool) {
    tile::<6, 16>(kc, a, a_step, b, b_step, c, c_rs, load)
}

/// The portable tile, built for the baseline instruction set (`mul_add` is the C library's
/// `fmaf` there, exact like the instruction).
unsafe fn tile_portable(kc: usize, a: [*const f32; 4], a_step: usize, b: *const f32, b_step: usize, c: *mut f32, c_rs: usize, load: bool) {
    tile::<4, 8>(kc, a, a_step, b, b_step, c, c_rs, load)
}

/// `dst (+)= a·b`, `[m×k]·[k×n]`, every matrix given by its pointer and strides, with the
/// micro-kernels `kernel`, in the order of this module's documentation.
///
/// # Safety
/// Every index in range must be in bounds of the buffers behind the pointers, `dst` must not
/// alias `a` or `b` nor itself (distinct `(i, j)` are distinct elements), nothing else may
/// write `dst` meanwhile, and the CPU must have the kernel's instructions
/// ([`GemmKernel::available`]).
pub(crate) unsafe fn gemm(kernel: GemmKernel, dst: MatMut, accumulate: bool, a: Mat, b: Mat, (m, k, n): (usize, usize, usize), threads: Threads) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.at(i, j) = 0.0;
                }
            }
        }
        return;
    }
    let problem = Problem { dst, accumulate, a, b, k };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        GemmKernel::Avx512 => {
            assert!(std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl"), "the CPU lacks AVX-512");
            problem.run::<8, 48>(tile_avx512, Blocking { kc: 384, nc: 480, mc: 4032 }, (m, n), threads)
        }
        #[cfg(target_arch = "x86_64")]
        GemmKernel::Avx2Fma => {
            assert!(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"), "the CPU lacks AVX2 + FMA");
            problem.run::<6, 16>(tile_avx2, Blocking { kc: 512, nc: 320, mc: 4080 }, (m, n), threads)
        }
        #[cfg(not(target_arch = "x86_64"))]
        GemmKernel::Avx512 | GemmKernel::Avx2Fma => panic!("no x86-64 kernels off x86-64"),
        GemmKernel::Portable => problem.run::<4, 8>(tile_portable, Blocking { kc: 256, nc: 256, mc: 4096 }, (m, n), threads),
    }
}

/// One product's operands (the dimensions of a part are given to [`Problem::part`]).
#[derive(Clone, Copy)]
struct Problem {
    dst: MatMut,
    accumulate: bool,
    a: Mat,
    b: Mat,
    k: usize,
}

impl Problem {
    /// Splits the outputs among rayon's threads (rows or columns, whichever has more tiles)
    /// and computes each part with [`Problem::part`].
    unsafe fn run<const MR: usize, const NR: usize>(self, tile: TileFn<MR>, blocking: Blocking, (m, n): (usize, usize), threads: Threads) {
        let workers = if threads == Threads::Rayon && m * n * self.k >= 1 << 18 { rayon::current_num_threads() } else { 1 };
        let (row_tiles, col_tiles) = (m.div_ceil(MR), n.div_ceil(NR));
        let parts = workers.min(row_tiles.max(col_tiles));
        if parts <= 1 {
            return self.part::<MR, NR>(tile, blocking, (0, m), (0, n));
        }
        use rayon::prelude::*;
        let split = |len: usize, unit: usize, tiles: usize, part: usize| ((tiles * part / parts) * unit).min(len);
        if col_tiles >= row_tiles {
            (0..parts).into_par_iter().for_each(|p| self.part::<MR, NR>(tile, blocking, (0, m), (split(n, NR, col_tiles, p), split(n, NR, col_tiles, p + 1))));
        } else {
            (0..parts).into_par_iter().for_each(|p| self.part::<MR, NR>(tile, blocking, (split(m, MR, row_tiles, p), split(m, MR, row_tiles, p + 1)), (0, n)));
        }
    }

    /// The outputs of rows `r0..r1` and columns `c0..c1`, on this thread. A is read where it
    /// lies when one of its strides is 1 (its values are broadcast one at a time), else packed;
    /// B is always packed in `NR`-wide panels (read in place, rows a power-of-two apart evict
    /// each other from the caches: 1024³ ran at 60 % of the packed speed).
    unsafe fn part<const MR: usize, const NR: usize>(
        self,
        tile: TileFn<MR>,
        Blocking { kc, nc, mc }: Blocking,
        (r0, r1): (usize, usize),
        (c0, c1): (usize, usize),
    ) {
        if r0 >= r1 || c0 >= c1 {
            return;
        }
        let (a, b, dst) = (self.a, self.b, self.dst);
        PACKS.with(|packs| {
            let mut packs = packs.borrow_mut();
            let (pack_a, pack_b) = &mut *packs;
            let k = self.k;
            for ic in (r0..r1).step_by(mc) {
                let rows = mc.min(r1 - ic);
                for pc in (0..k).step_by(kc) {
                    let depth = kc.min(k - pc);
                    let load = self.accumulate || pc > 0;
                    // A's rows: element (i, p) of the block at `row(i) + p·a_step`.
                    let a_direct = a.1 == 1 || a.2 == 1;
                    if !a_direct {
                        pack_panels::<MR>(pack_a, a, (ic, rows), (pc, depth));
                    }
                    let a_step = if a.2 == 1 {
                        1
                    } else if a.1 == 1 {
                        a.2 as usize
                    } else {
                        MR
                    };
                    let row = |i: usize| -> *const f32 {
                        if a_direct {
                            a.0.offset((ic + i) as isize * a.1 + pc as isize * a.2)
                        } else {
                            pack_a.as_ptr().add((i / MR) * MR * depth + i % MR)
                        }
                    };
                    for jc in (c0..c1).step_by(nc) {
                        let cols = nc.min(c1 - jc);
                        pack_panels::<NR>(pack_b, Mat(b.0, b.2, b.1), (jc, cols), (pc, depth));
                        for ir in (0..rows).step_by(MR) {
                            let h = MR.min(rows - ir);
                            // Rows past the end repeat the tile's first row: read, never stored.
                            let a_rows: [*const f32; MR] = std::array::from_fn(|i| row(ir + if i < h { i } else { 0 }));
                            for jr in (0..cols).step_by(NR) {
                                let (pb, b_step) = (pack_b.as_ptr().add(jr * depth), NR);
                                let (i0, j0) = (ic + ir, jc + jr);
                                let w = NR.min(cols - jr);
                                if dst.2 == 1 && dst.1 > 0 && w == NR && h == MR {
                                    tile(depth, a_rows, a_step, pb, b_step, dst.at(i0, j0), dst.1 as usize, load);
                                } else {
                                    // A partial tile or a strided destination: through a copy.
                                    let mut acc = [[0f32; NR]; MR];
                                    if load {
                                        for (i, row) in acc.iter_mut().enumerate().take(h) {
                                            for (j, v) in row.iter_mut().enumerate().take(w) {
                                                *v = *dst.at(i0 + i, j0 + j);
                                            }
                                        }
                                    }
                                    tile(depth, a_rows, a_step, pb, b_step, acc.as_mut_ptr().cast(), NR, load);
                                    for (i, row) in acc.iter().enumerate().take(h) {
                                        for (j, v) in row.iter().enumerate().take(w) {
                                            *dst.at(i0 + i, j0 + j) = *v;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

thread_local! {
    /// Each thread's packing buffers (A's rows, B's columns), kept between products.
    static PACKS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Makes `buf` at least `len` long, keeping its length between products (every packed value
/// and padding zero is written by the packing itself, so nothing is cleared first).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// Packs rows `i0..i0+rows`, columns `p0..p0+depth` of `m` as panels of `W` rows, each
/// `[depth][W]`, the last one zero-padded: A's row panels, and B's column panels as those of
/// `Bᵀ` (the view with its strides swapped).
unsafe fn pack_panels<const W: usize>(buf: &mut Vec<f32>, m: Mat, (i0, rows): (usize, usize), (p0, depth): (usize, usize)) {
    let panels = rows.div_ceil(W);
    grow(buf, panels * W * depth);
    for panel in 0..panels {
        let out = &mut buf[panel * W * depth..(panel + 1) * W * depth];
        let h = W.min(rows - panel * W);
        let base = i0 + panel * W;
        if h < W {
            for p in 0..depth {
                out[p * W + h..(p + 1) * W].fill(0.0);
            }
        }
        if m.1 == 1 {
            // A panel's values for one `p` lie side by side: copied as a row.
            for p in 0..depth {
                let src = m.0.offset(base as isize + (p0 + p) as isize * m.2);
                if h == W {
                    *(out.as_mut_ptr().add(p * W) as *mut [f32; W]) = *(src as *const [f32; W]);
                } else {
                    out[p * W..p * W + h].copy_from_slice(std::slice::from_raw_parts(src, h));
                }
            }
        } else {
            let mut i = 0;
            #[cfg(target_arch = "x86_64")]
            if m.2 == 1 && W % 8 == 0 && std::arch::is_x86_feature_detected!("avx2") {
                // Each row contiguous along `p` (a weight `[out, in]` read transposed): 8 × 8
                // blocks transposed in registers, the rest one value at a time.
                let whole = depth / 8 * 8;
                while i + 8 <= h {
                    transpose_8x8_blocks(m.0.offset((base + i) as isize * m.1 + p0 as isize), m.1 as usize, out.as_mut_ptr().add(i), W, whole);
                    for p in whole..depth {
                        for ii in i..i + 8 {
                            out[p * W + ii] = m.at(base + ii, p0 + p);
                        }
                    }
                    i += 8;
                }
            }
            for i in i..h {
                for p in 0..depth {
                    out[p * W + i] = m.at(base + i, p0 + p);
                }
            }
        }
    }
}

/// `out[p·out_stride + r] = src[r·src_stride + p]` for 8 rows `r` and `p < depth` (a multiple
/// of 8): blocks of 8 × 8 values transposed in AVX registers. Moves values only.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_8x8_blocks(src: *const f32, src_stride: usize, out: *mut f32, out_stride: usize, depth: usize) {
    use std::arch::x86_64::*;
    for p in (0..depth).step_by(8) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride + p)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let rows = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, row) in rows.into_iter().enumerate() {
            _mm256_storeu_ps(out.add((p + i) * out_stride), row);
        }
    }
}

/// The documented order written out plainly, one output at a time: what every kernel must
/// equal bit for bit (the tests' reference).
///
/// # Safety
/// As [`gemm`].
#[cfg(test)]
pub(crate) unsafe fn reference(dst: MatMut, accumulate: bool, a: Mat, b: Mat, (m, k, n): (usize, usize, usize)) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = if accumulate { *dst.at(i, j) } else { 0.0 };
            for p in 0..k {
                acc = a.at(i, p).mul_add(b.at(p, j), acc);
            }
            *dst.at(i, j) = acc;
        }
    }
}

/// Deterministic test values in [-1, 1) (a linear congruential generator).
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel equals the documented order written out plainly, bit for bit, in every
    /// layout of A, B and the destination, accumulating or not, on one thread or several, with
    /// sizes that leave partial tiles and cross the `kc` and `nc` blocks.
    #[test]
    fn every_kernel_is_the_documented_order_bit_for_bit() {
        let shapes = [(1, 1, 1), (1, 700, 3), (7, 5, 33), (13, 1030, 17), (29, 64, 341), (66, 513, 70)];
        for (case, &(m, k, n)) in shapes.iter().enumerate() {
            let (a, b, start) = (test_values(m * k, case as u64), test_values(k * n, 50 + case as u64), test_values(m * n, 90 + case as u64));
            for code in 0..16 {
                let (a_t, b_t, dst_t, accumulate) = (code & 1 != 0, code & 2 != 0, code & 4 != 0, code & 8 != 0);
                let ma = if a_t { Mat(a.as_ptr(), 1, m as isize) } else { Mat(a.as_ptr(), k as isize, 1) };
                let mb = if b_t { Mat(b.as_ptr(), 1, k as isize) } else { Mat(b.as_ptr(), n as isize, 1) };
                let strides = if dst_t { (1, m as isize) } else { (n as isize, 1) };
                let mut want = start.clone();
                // SAFETY: buffers of exactly these sizes and strides.
                unsafe { reference(MatMut(want.as_mut_ptr(), strides.0, strides.1), accumulate, ma, mb, (m, k, n)) };
                for kernel in GemmKernel::available() {
                    for threads in [Threads::One, Threads::Rayon] {
                        let mut got = start.clone();
                        // SAFETY: as above; `available` lists only kernels this CPU runs.
                        unsafe { gemm(kernel, MatMut(got.as_mut_ptr(), strides.0, strides.1), accumulate, ma, mb, (m, k, n), threads) };
                        let same = got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{kernel:?} {m}×{k}×{n} aᵀ {a_t} bᵀ {b_t} dstᵀ {dst_t} accumulate {accumulate} {threads:?}");
                    }
                }
            }
        }
    }
}
