//! Matrix products: the dispatch to `gemm.rs`'s kernels (chosen per CPU by `vecmath`), strided
//! and serial variants, and the linear layer with frozen weights and its input gradient.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};

use crate::shared::{contiguous_f32, FrozenParams};
use crate::vecmath::{self, GemmKernel};

/// `dst[m×n] (+)= a · b` for row-major `a` (`[m×k]`, or `[k×m]` read transposed) and `b`
/// (`[k×n]`, or `[n×k]` read transposed).
pub(crate) fn gemm_into(dst: &mut [f32], accumulate: bool, a: &[f32], a_transposed: bool, b: &[f32], (m, k, n): (usize, usize, usize)) {
    gemm_tt(dst, accumulate, a, a_transposed, b, false, (m, k, n))
}

/// `dst[m×n] = a[m×k] · b[k×n]`, all row-major, on the calling thread (for callers that run
/// many small products in parallel themselves).
pub(crate) fn gemm_serial(dst: &mut [f32], a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "gemm operand sizes");
    // SAFETY: lengths checked above, strides of row-major layouts.
    unsafe {
        gemm_strided((dst.as_mut_ptr(), n as isize, 1), false, Mat(a.as_ptr(), k as isize, 1), Mat(b.as_ptr(), n as isize, 1), (m, k, n), Threads::One);
    }
}

pub(crate) fn gemm_tt(dst: &mut [f32], accumulate: bool, a: &[f32], a_transposed: bool, b: &[f32], b_transposed: bool, dims: (usize, usize, usize)) {
    gemm_tt_with(vecmath::gemm_kernel(), dst, accumulate, a, a_transposed, b, b_transposed, dims)
}

/// [`gemm_tt`] with the given micro-kernels, on rayon's threads. Panics on operand sizes that do
/// not fit and (in [`gemm_with`]) on a kernel the CPU lacks.
#[allow(clippy::too_many_arguments)]
fn gemm_tt_with(
    kernel: GemmKernel,
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_transposed: bool,
    b: &[f32],
    b_transposed: bool,
    (m, k, n): (usize, usize, usize),
) {
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "gemm operand sizes");
    let a = if a_transposed { Mat(a.as_ptr(), 1, m as isize) } else { Mat(a.as_ptr(), k as isize, 1) };
    let b = if b_transposed { Mat(b.as_ptr(), 1, k as isize) } else { Mat(b.as_ptr(), n as isize, 1) };
    // SAFETY: the pointers come from slices whose lengths were checked against m, k, n above,
    // and the strides describe those row-major (or transposed) layouts exactly.
    unsafe { gemm_with(kernel, (dst.as_mut_ptr(), n as isize, 1), accumulate, a, b, (m, k, n), Threads::Rayon) }
}

/// `dst[m×n] = a · b` with row-major operands — `a` `[m×k]` (or `[k×m]` read transposed), `b`
/// `[k×n]` (or `[n×k]` read transposed) — on rayon's threads with the micro-kernels `kernel`:
/// the product every kernel of this crate runs (they take [`vecmath::gemm_kernel`]'s choice),
/// public so that a benchmark can time each kernel on the CPU at hand. Errors on operands of
/// the wrong size and on a kernel this CPU or build lacks ([`GemmKernel::available`]).
#[allow(clippy::too_many_arguments)]
pub fn matmul_slices(
    kernel: GemmKernel,
    dst: &mut [f32],
    a: &[f32],
    a_transposed: bool,
    b: &[f32],
    b_transposed: bool,
    (m, k, n): (usize, usize, usize),
) -> Result<()> {
    if dst.len() != m * n || a.len() != m * k || b.len() != k * n {
        candle_core::bail!("matmul_slices: operands of {}, {} and {} values do not make [{m}×{k}]·[{k}×{n}]", a.len(), b.len(), dst.len());
    }
    if !GemmKernel::available().contains(&kernel) {
        candle_core::bail!("matmul_slices: the {} kernels are not available on this CPU and build", kernel.as_str());
    }
    gemm_tt_with(kernel, dst, false, a, a_transposed, b, b_transposed, (m, k, n));
    Ok(())
}

use crate::gemm::MatMut;
pub(crate) use crate::gemm::{Mat, Threads};

/// `dst (+)= a · b`, `[m×k]·[k×n]`, every matrix given by its pointer and strides.
///
/// # Safety
/// Every index `(i, j)` in range must be in bounds of the buffers behind the pointers, and
/// nothing else may write `dst` meanwhile.
pub(crate) unsafe fn gemm_strided(dst: (*mut f32, isize, isize), accumulate: bool, a: Mat, b: Mat, dims: (usize, usize, usize), threads: Threads) {
    gemm_with(vecmath::gemm_kernel(), dst, accumulate, a, b, dims, threads)
}

/// [`gemm_strided`] with the given micro-kernels ([`GemmKernel`]): [`crate::gemm::gemm`], whose
/// summation order is the same for every kernel, thread count and batch size.
///
/// # Safety
/// As [`gemm_strided`]; a kernel the CPU lacks panics instead of running.
pub(crate) unsafe fn gemm_with(
    kernel: GemmKernel,
    dst: (*mut f32, isize, isize),
    accumulate: bool,
    a: Mat,
    b: Mat,
    dims: (usize, usize, usize),
    threads: Threads,
) {
    crate::gemm::gemm(kernel, MatMut(dst.0, dst.1, dst.2), accumulate, a, b, dims, threads)
}

/// `a · b` for `a` `[…, m, k]` and `b` `[…, k, n]` with the same leading dimensions (any
/// strides: transposed views are read in place), differentiable in both: on the CPU in f32
/// our product's one summation order (`gemm.rs`), so what is computed or trained with it (a
/// linear probe, the temporal DNN, attention scores) gets the same bits on every CPU and
/// kernel path; candle's `matmul` elsewhere. Its backward forms `g · bᵀ` and `aᵀ · g` with
/// the same op.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ad, bd) = (a.dims(), b.dims());
    let r = ad.len();
    if r < 2 || bd.len() != r || ad[..r - 2] != bd[..r - 2] || ad[r - 1] != bd[r - 2] {
        candle_core::bail!("matmul: {ad:?} · {bd:?} do not fit ([…, m, k] · […, k, n], the same leading dimensions)");
    }
    if !a.device().is_cpu() || a.dtype() != crate::shared::DTYPE || b.dtype() != crate::shared::DTYPE {
        return a.matmul(b);
    }
    a.apply_op2(b, MatMul)
}

struct MatMul;

/// A layout's f32 data from its start, the strides of its last two dimensions, and the start
/// of each matrix of the leading ones (row-major order).
fn strided<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<(&'a [f32], isize, isize, Vec<usize>)> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("matmul: only f32 is supported") };
    let (dims, stride) = (layout.dims(), layout.stride());
    let r = dims.len();
    let mut starts = vec![0usize];
    for (&size, &step) in dims[..r - 2].iter().zip(&stride[..r - 2]) {
        starts = starts.iter().flat_map(|&s| (0..size).map(move |i| s + i * step)).collect();
    }
    Ok((&data[layout.start_offset()..], stride[r - 2] as isize, stride[r - 1] as isize, starts))
}

impl candle_core::CustomOp2 for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ad, bd) = (l1.dims(), l2.dims());
        let r = ad.len();
        let (m, k, n) = (ad[r - 2], ad[r - 1], bd[r - 1]);
        let ((a, ar, ac, a_starts), (b, br, bc, b_starts)) = (strided(s1, l1)?, strided(s2, l2)?);
        let mut dst = vec![0f32; a_starts.len() * m * n];
        for ((out, &sa), &sb) in dst.chunks_mut((m * n).max(1)).zip(&a_starts).zip(&b_starts) {
            // SAFETY: the layouts describe in-bounds elements of their storages for every index
            // below their dimensions, and `out` is a fresh row-major `[m×n]` buffer.
            unsafe {
                gemm_strided(
                    (out.as_mut_ptr(), n as isize, 1),
                    false,
                    Mat(a.as_ptr().add(sa), ar, ac),
                    Mat(b.as_ptr().add(sb), br, bc),
                    (m, k, n),
                    Threads::Rayon,
                )
            };
        }
        let mut dims = ad.to_vec();
        dims[r - 1] = n;
        Ok((CpuStorage::F32(dst), Shape::from(dims)))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(matmul(grad, &b.transpose(D::Minus2, D::Minus1)?)?), Some(matmul(&a.transpose(D::Minus2, D::Minus1)?, grad)?)))
    }
}

/// `y = x · Wᵀ + b` over the last dimension, with a backward that forms only the input
/// gradient `grad · W` (the weights are constants; candle-nn's `Linear` would also compute
/// their gradient). Loaded from `weight` `[out, in]` and `bias` `[out]` like `nn.Linear`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) params: FrozenParams,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        weight.dims2()?;
        Ok(Self { params: FrozenParams::new("linear", weight, bias)? })
    }

    /// Several layers on the same input as one (`[W₁; W₂; …]`, outputs side by side): one
    /// larger matrix product instead of several small ones.
    pub fn concat(layers: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = layers.iter().map(|l| &l.params.weight).collect();
        let biases: Option<Vec<&Tensor>> = layers.iter().map(|l| l.params.bias.as_ref()).collect();
        Self::new(Tensor::cat(&weights, 0)?, biases.map(|b| Tensor::cat(&b, 0)).transpose()?)
    }

    /// Loads `weight` and, when `with_bias`, `bias` from a `VarBuilder`.
    pub fn load(inp: usize, out: usize, with_bias: bool, vb: candle_nn::VarBuilder) -> Result<Self> {
        let bias = if with_bias { Some(vb.get(out, "bias")?) } else { None };
        Self::new(vb.get((out, inp), "weight")?, bias)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let (out, inp) = p.weight.dims2()?;
        if x.dim(D::Minus1)? != inp {
            candle_core::bail!("linear: input {:?} does not end in {inp}", x.dims());
        }
        if !x.device().is_cpu() {
            let y = x.broadcast_matmul(&p.weight.t()?)?;
            return match &p.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        x.contiguous()?.apply_op1(LinearOp { inp, out, weight: p.flat_weight.clone(), bias: p.flat_bias.clone() })
    }
}

/// `x · Wᵀ + b` for row-major rows `x` `[rows, inp]` and `W` `[out, inp]`.
pub(crate) fn linear_rows(x: &[f32], weight: &[f32], bias: Option<&[f32]>, (inp, out): (usize, usize)) -> Vec<f32> {
    let rows = x.len() / inp;
    let mut y = vec![0f32; rows * out];
    if let Some(bias) = bias {
        for row in y.chunks_mut(out) {
            row.copy_from_slice(bias);
        }
    }
    gemm_tt(&mut y, bias.is_some(), x, false, weight, true, (rows, inp, out));
    y
}

/// The input gradient `g · W` of [`linear_rows`] for `g` `[rows, out]`.
pub(crate) fn linear_input_grad_rows(g: &[f32], weight: &[f32], (inp, out): (usize, usize)) -> Vec<f32> {
    let rows = g.len() / out;
    let mut dx = vec![0f32; rows * inp];
    gemm_tt(&mut dx, false, g, false, weight, false, (rows, out, inp));
    dx
}

pub(crate) struct LinearOp {
    inp: usize,
    out: usize,
    weight: Arc<Vec<f32>>,
    bias: Option<Arc<Vec<f32>>>,
}

impl CustomOp1 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "linear")?;
        let y = linear_rows(x, &self.weight, self.bias.as_deref().map(Vec::as_slice), (self.inp, self.out));
        let mut dims = layout.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = self.out;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = LinearInputGrad { inp: self.inp, out: self.out, weight: self.weight.clone() };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

pub(crate) struct LinearInputGrad {
    inp: usize,
    out: usize,
    weight: Arc<Vec<f32>>,
}

impl CustomOp1 for LinearInputGrad {
    fn name(&self) -> &'static str {
        "linear-input-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(storage, layout, "linear backward")?;
        let dx = linear_input_grad_rows(g, &self.weight, (self.inp, self.out));
        let mut dims = layout.shape().dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = self.inp;
        Ok((CpuStorage::F32(dx), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::test_values as random;

    /// The kernels this CPU can run.
    fn kernels() -> Vec<GemmKernel> {
        let kernels = GemmKernel::available();
        if !kernels.contains(&GemmKernel::Avx512) {
            println!("no AVX-512 matrix-product kernels here (the CPU lacks AVX-512): not tested");
        }
        kernels
    }

    #[test]
    fn the_public_product_is_the_kernels_and_refuses_what_does_not_fit() {
        let (m, k, n) = (65, 130, 197);
        let (a, b) = (random(m * k, 1), random(k * n, 2));
        for kernel in kernels() {
            for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut ours = vec![0f32; m * n];
                matmul_slices(kernel, &mut ours, &a, a_t, &b, b_t, (m, k, n)).unwrap();
                let (value, scale) = reference(&a, a_t, &b, b_t, (m, k, n));
                for ((o, v), s) in ours.iter().zip(&value).zip(&scale) {
                    assert!((f64::from(*o) - v).abs() <= 1e-6 * s + 1e-30, "{kernel:?} {a_t} {b_t}: {o} vs {v}");
                }
            }
        }
        let mut dst = vec![0f32; m * n];
        let err = matmul_slices(kernels()[0], &mut dst, &a, false, &b, false, (m, k + 1, n)).unwrap_err().to_string();
        assert!(err.contains(&format!("[{m}×{}]", k + 1)), "{err}");
    }

    /// `a·b` in f64 with the bound `Σ|a||b|` of each element's rounding error's scale.
    fn reference(a: &[f32], a_t: bool, b: &[f32], b_t: bool, (m, k, n): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
        let at = |i: usize, p: usize| f64::from(if a_t { a[p * m + i] } else { a[i * k + p] });
        let bt = |p: usize, j: usize| f64::from(if b_t { b[j * k + p] } else { b[p * n + j] });
        let mut value = vec![0.0; m * n];
        let mut scale = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    value[i * n + j] += at(i, p) * bt(p, j);
                    scale[i * n + j] += (at(i, p) * bt(p, j)).abs();
                }
            }
        }
        (value, scale)
    }

    #[test]
    fn every_kernel_computes_the_product_in_every_layout() {
        for kernel in kernels() {
            for (case, &(m, k, n)) in [(1, 1, 1), (3, 5, 7), (1, 300, 2), (24, 300, 1), (17, 33, 16), (65, 130, 197), (197, 768, 64)].iter().enumerate() {
                for (a_t, b_t, accumulate) in [(false, false, false), (true, false, false), (false, true, true), (true, true, true)] {
                    let (a, b) = (random(m * k, case as u64), random(k * n, 100 + case as u64));
                    let start = random(m * n, 200 + case as u64);
                    let mut dst = start.clone();
                    let mat_a = if a_t { Mat(a.as_ptr(), 1, m as isize) } else { Mat(a.as_ptr(), k as isize, 1) };
                    let mat_b = if b_t { Mat(b.as_ptr(), 1, k as isize) } else { Mat(b.as_ptr(), n as isize, 1) };
                    // SAFETY: row-major buffers of exactly these sizes and strides.
                    unsafe { gemm_with(kernel, (dst.as_mut_ptr(), n as isize, 1), accumulate, mat_a, mat_b, (m, k, n), Threads::Rayon) };
                    let (value, scale) = reference(&a, a_t, &b, b_t, (m, k, n));
                    for i in 0..m * n {
                        let expected = value[i] + if accumulate { f64::from(start[i]) } else { 0.0 };
                        let error = (f64::from(dst[i]) - expected).abs();
                        assert!(
                            error <= 1e-6 * (scale[i] + 1.0),
                            "{kernel:?} {m}×{k}×{n} a_t {a_t} b_t {b_t} acc {accumulate}: element {i} is {} not {expected}",
                            dst[i]
                        );
                    }
                }
            }
        }
    }

    /// A row's bits do not depend on how many rows come with it — one row alone included,
    /// where the `gemm` crate would take its vector path — with every kernel, in every layout:
    /// an image's features are the same alone as in a batch, so shards of a data set give a
    /// one-process run's numbers.
    #[test]
    fn a_rows_result_does_not_depend_on_the_number_of_rows() {
        let (k, n) = (96, 40);
        let b = random(k * n, 2);
        let a = random(8 * k, 1);
        for kernel in kernels() {
            for (b_t, accumulate) in [(false, false), (true, false), (false, true)] {
                let product = |m: usize| {
                    let mut dst: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.01).collect();
                    let a = &a[..m * k];
                    let (a, b) = (Mat(a.as_ptr(), k as isize, 1), if b_t { Mat(b.as_ptr(), 1, k as isize) } else { Mat(b.as_ptr(), n as isize, 1) });
                    // SAFETY: row-major buffers of exactly these sizes and strides.
                    unsafe { gemm_with(kernel, (dst.as_mut_ptr(), n as isize, 1), accumulate, a, b, (m, k, n), Threads::Rayon) };
                    dst[..n].to_vec()
                };
                let one = product(1);
                for m in [2, 3, 8] {
                    assert_eq!(product(m), one, "{kernel:?} (bᵀ {b_t}, accumulate {accumulate}): row 0 of {m} rows differs from it alone");
                }
                // A single column likewise (the transposed case of the same vector path).
                let column = |cols: usize| {
                    let mut dst = vec![0f32; 8 * cols];
                    // SAFETY: row-major buffers of exactly these sizes and strides.
                    unsafe {
                        gemm_with(
                            kernel,
                            (dst.as_mut_ptr(), cols as isize, 1),
                            false,
                            Mat(a.as_ptr(), k as isize, 1),
                            Mat(b.as_ptr(), n as isize, 1),
                            (8, k, cols),
                            Threads::One,
                        )
                    };
                    dst.chunks(cols).map(|r| r[0]).collect::<Vec<_>>()
                };
                assert_eq!(column(1), column(5), "{kernel:?}: column 0 alone differs from it among 5");
            }
        }
    }

    /// A column's bits do not depend on how many columns are computed with it (Winograd's
    /// tiles of one image give the same bits alone as in a batch), with every kernel.
    #[test]
    fn a_columns_result_does_not_depend_on_the_number_of_columns() {
        let (m, k) = (64, 96);
        let a = random(m * k, 1);
        for kernel in kernels() {
            let product = |n: usize| {
                let b: Vec<f32> = random(k * 40, 2).chunks(40).flat_map(|row| row[..n].to_vec()).collect();
                let mut dst = vec![0f32; m * n];
                // SAFETY: row-major buffers of exactly these sizes and strides.
                unsafe {
                    gemm_with(
                        kernel,
                        (dst.as_mut_ptr(), n as isize, 1),
                        false,
                        Mat(a.as_ptr(), k as isize, 1),
                        Mat(b.as_ptr(), n as isize, 1),
                        (m, k, n),
                        Threads::One,
                    )
                };
                dst.chunks(n).map(|row| row[..2].to_vec()).collect::<Vec<_>>()
            };
            let two = product(2);
            for n in [3, 6, 17, 40] {
                assert_eq!(product(n), two, "{kernel:?}: the first two columns of {n} differ from two alone");
            }
        }
    }
}
