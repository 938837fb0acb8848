//! What several kernel files share: contiguous f32 views of candle storage, the backward-op
//! wrapper, frozen weights, window sizes, the convolutions' epilogue, row chunking for rayon, a
//! raw pointer for disjoint parallel writes, and the dtype of every kernel.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("{op}: only f32 is supported, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// A backward kernel as a candle op on (the tensor it reads, the output gradient): `f` maps
/// their contiguous values to the input gradient, shaped as the first.
pub(crate) struct Backward<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(&[f32], &[f32], &Shape) -> Result<Vec<f32>>> CustomOp2 for Backward<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let saved = contiguous_f32(s1, l1, self.name)?;
        let grad = contiguous_f32(s2, l2, self.name)?;
        Ok((CpuStorage::F32((self.f)(saved, grad, l1.shape())?), l1.shape().clone()))
    }
}

/// Runs the backward kernel `f` on `saved` and `grad` (see [`Backward`]).
pub(crate) fn backward(name: &'static str, saved: &Tensor, grad: &Tensor, f: impl Fn(&[f32], &[f32], &Shape) -> Result<Vec<f32>>) -> Result<Tensor> {
    saved.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &Backward { name, f })
}

/// Output size of a sliding window (PyTorch's floor rule): `(size + 2p − k) / s + 1`.
pub(crate) fn window_out(op: &str, size: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize> {
    let padded = size + 2 * padding;
    if padded < kernel {
        candle_core::bail!("{op}: input size {size} is smaller than the kernel {kernel}");
    }
    Ok((padded - kernel) / stride + 1)
}

/// A frozen layer's weight `[out, …]` and optional bias `[out]`, as tensors (for the candle
/// fallback off the CPU) and as shared f32 buffers (for the gemm kernels).
#[derive(Debug, Clone)]
pub(crate) struct FrozenParams {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    pub(crate) flat_weight: Arc<Vec<f32>>,
    pub(crate) flat_bias: Option<Arc<Vec<f32>>>,
}

impl FrozenParams {
    pub(crate) fn new(op: &str, weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let out = weight.dim(0)?;
        if let Some(b) = &bias {
            if b.dims() != [out] {
                candle_core::bail!("{op}: bias {:?} does not fit {out} outputs", b.dims());
            }
        }
        let flat = |t: &Tensor| -> Result<Arc<Vec<f32>>> { Ok(Arc::new(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)) };
        Ok(Self { flat_weight: flat(&weight)?, flat_bias: bias.as_ref().map(flat).transpose()?, weight, bias })
    }
}

/// The convolutions' epilogue on one stretch of output: `dst += residual` (same length), then
/// `relu`, in place.
pub(crate) fn epilogue_row(dst: &mut [f32], residual: Option<&[f32]>, relu: bool) {
    if let Some(r) = residual {
        dst.iter_mut().zip(r).for_each(|(d, v)| *d += v);
    }
    if relu {
        dst.iter_mut().for_each(|d| *d = d.max(0.0));
    }
}

/// Values per parallel task of the row-wise ops: whole rows of `n`, about 16 Ki values.
pub(crate) fn rows_chunk(n: usize) -> usize {
    (16_384 / n.max(1)).max(1) * n.max(1)
}

/// Rows of the last dimension, in parallel blocks of whole rows.
pub(crate) fn rows_par<'a>(out: &'a mut [f32], n: usize) -> impl IndexedParallelIterator<Item = &'a mut [f32]> {
    out.par_chunks_mut(rows_chunk(n))
}

/// A raw pointer shared by parallel tasks that write disjoint elements.
pub(crate) struct SharedPtr(pub(crate) *mut f32);

// SAFETY: the tasks sharing it write disjoint indices (see the call sites).
unsafe impl Sync for SharedPtr {}

unsafe impl Send for SharedPtr {}

impl SharedPtr {
    pub(crate) fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Tensors this crate computes with are f32.
pub const DTYPE: DType = DType::F32;
