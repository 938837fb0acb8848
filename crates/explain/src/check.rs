//! Non-finite numbers are refused where they enter (weights, checkpoints, features) and leave
//! (logits, attributions): a NaN never travels silently into a map or a table.

use candle_core::{DType, Tensor};

/// The number of NaN or infinite values of `t` and the flat index of the first, if any.
pub fn non_finite(t: &Tensor) -> candle_core::Result<Option<(usize, usize)>> {
    let values: Vec<f32> = match t.dtype() {
        DType::F32 => t.flatten_all()?.to_vec1()?,
        DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        _ => return Ok(None),
    };
    let mut bad = values.iter().enumerate().filter(|(_, v)| !v.is_finite());
    Ok(bad.next().map(|(first, _)| (1 + bad.count(), first)))
}
