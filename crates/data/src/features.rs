//! The features file: one safetensors file per backbone with `features` [N, D] f32 and
//! `patient_id` (the study's integer id), `day`, `label` [N] i64, metadata naming the backbone,
//! its weights and the slice orientation. Written by `tgc extract`, read by training.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::atomic::write_atomic;
use crate::error::{DataError, Result};
use crate::safetensors_file::safetensors_bytes;

/// Features of every image of a data set, in record order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    /// Row-major `[n, dim]`.
    pub features: Vec<f32>,
    pub dim: usize,
    pub patient_id: Vec<i64>,
    pub day: Vec<i64>,
    pub label: Vec<i64>,
    /// `backbone`, `weights`, `weights_digest`, `random_weights`, `data`, … as strings.
    pub metadata: HashMap<String, String>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.label.len()
    }

    pub fn is_empty(&self) -> bool {
        self.label.is_empty()
    }

    /// Whether the backbone that made these features had random weights.
    pub fn random_weights(&self) -> bool {
        self.metadata.get("random_weights").map(|v| v == "true").unwrap_or(false)
    }

    /// The slice orientation the features were computed in (`tgc_data::ORIENTATION` today;
    /// `None` for files written before it was recorded, which read slices transposed).
    pub fn orientation(&self) -> Option<&str> {
        self.metadata.get("orientation").map(String::as_str)
    }

    /// The features of a whole data set from those of its shards: `parts` pairs each shard's
    /// features with the positions its rows take in the whole (`0..total`, each once). The
    /// metadata must agree (but for `sessions`, one entry per row, merged by position), so the
    /// result is what one process extracting everything writes. Errors name the part (by its
    /// index in `parts`) and what is wrong.
    pub fn assemble(parts: &[(FeatureSet, Vec<usize>)], total: usize) -> Result<FeatureSet> {
        let bad = |message: String| DataError::InvalidArgument(message);
        let Some((first, _)) = parts.first() else { return Err(bad("no parts to assemble".into())) };
        let dim = first.dim;
        let mut features = vec![0f32; total * dim];
        let (mut patient_id, mut day, mut label) = (vec![0i64; total], vec![0i64; total], vec![0i64; total]);
        let mut sessions: Vec<String> = vec![String::new(); total];
        let mut with_sessions = false;
        let mut owner: Vec<Option<usize>> = vec![None; total];
        let without_sessions = |m: &HashMap<String, String>| -> Vec<(String, String)> {
            let mut kv: Vec<(String, String)> = m.iter().filter(|(k, _)| k.as_str() != "sessions").map(|(k, v)| (k.clone(), v.clone())).collect();
            kv.sort();
            kv
        };
        let reference = without_sessions(&first.metadata);
        for (p, (set, positions)) in parts.iter().enumerate() {
            if set.dim != dim || positions.len() != set.len() {
                return Err(bad(format!("part {p}: {} rows of {} features for {} positions (part 0 has {dim} features)", set.len(), set.dim, positions.len())));
            }
            if without_sessions(&set.metadata) != reference {
                let theirs = without_sessions(&set.metadata);
                let differing: Vec<String> =
                    reference.iter().filter(|kv| !theirs.contains(kv)).map(|(k, v)| format!("{k}: {v:?} in part 0, {:?} here", set.metadata.get(k))).collect();
                return Err(bad(format!("part {p} was extracted with another configuration than part 0 ({})", differing.join("; "))));
            }
            let row_sessions: Option<Vec<String>> = match set.metadata.get("sessions") {
                Some(json) => Some(serde_json::from_str(json).map_err(|e| bad(format!("part {p}: its sessions metadata is not a list: {e}")))?),
                None => None,
            };
            for (row, &at) in positions.iter().enumerate() {
                if at >= total {
                    return Err(bad(format!("part {p}: row {row} is at position {at}, beyond the {total} rows of the whole")));
                }
                if let Some(other) = owner[at] {
                    return Err(bad(format!("parts {other} and {p} both hold row {at}: they overlap")));
                }
                owner[at] = Some(p);
                features[at * dim..(at + 1) * dim].copy_from_slice(&set.features[row * dim..(row + 1) * dim]);
                (patient_id[at], day[at], label[at]) = (set.patient_id[row], set.day[row], set.label[row]);
                if let Some(s) = &row_sessions {
                    with_sessions = true;
                    sessions[at] = s.get(row).cloned().unwrap_or_default();
                }
            }
        }
        if let Some(missing) = owner.iter().position(Option::is_none) {
            return Err(bad(format!("no part holds row {missing} of {total}")));
        }
        let mut metadata = first.metadata.clone();
        metadata.remove("sessions");
        if with_sessions {
            metadata.insert("sessions".to_owned(), serde_json::to_string(&sessions).unwrap_or_default());
        }
        Ok(FeatureSet { features, dim, patient_id, day, label, metadata })
    }

    /// Writes the safetensors file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let err = |message: String| DataError::Write { path: path.to_owned(), message };
        if self.features.len() != n * self.dim || [self.patient_id.len(), self.day.len()] != [n, n] {
            return Err(err(format!(
                "{} feature values, {} patient ids and {} days for {n} rows of {}",
                self.features.len(),
                self.patient_id.len(),
                self.day.len(),
                self.dim
            )));
        }
        let le = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let features: Vec<u8> = self.features.iter().flat_map(|x| x.to_le_bytes()).collect();
        let (patient_id, day, label) = (le(&self.patient_id), le(&self.day), le(&self.label));
        fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> std::result::Result<TensorView<'_>, String> {
            TensorView::new(dtype, shape, data).map_err(|e| e.to_string())
        }
        let tensors = [
            ("features", view(Dtype::F32, vec![n, self.dim], &features).map_err(err)?),
            ("patient_id", view(Dtype::I64, vec![n], &patient_id).map_err(err)?),
            ("day", view(Dtype::I64, vec![n], &day).map_err(err)?),
            ("label", view(Dtype::I64, vec![n], &label).map_err(err)?),
        ];
        let bytes = safetensors_bytes(tensors, self.metadata.clone()).map_err(err)?;
        write_atomic(path, |w| std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string()))
    }

    /// Reads a features file, checking that every tensor is there with consistent lengths.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |message: String| DataError::Read { path: path.to_owned(), message };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let get = |name: &str| tensors.tensor(name).map_err(|_| err(format!("missing tensor `{name}`")));
        let features = get("features")?;
        let [n, dim] = *features.shape() else {
            return Err(err(format!("`features` must be [N, D], got {:?}", features.shape())));
        };
        let ints = |name: &str| -> Result<Vec<i64>> {
            let t = get(name)?;
            if t.shape() != [n] {
                return Err(err(format!("`{name}` has shape {:?}, expected [{n}] like `features`", t.shape())));
            }
            numbers(&t)
                .map(|v| v.into_iter().map(|x| x as i64).collect())
                .ok_or_else(|| err(format!("`{name}` has dtype {:?}, not an integer type", t.dtype())))
        };
        let features: Vec<f32> = numbers(&features)
            .map(|v| v.into_iter().map(|x| x as f32).collect())
            .ok_or_else(|| err(format!("`features` has dtype {:?}, not a float type", features.dtype())))?;
        if let Some(bad) = features.iter().position(|v| !v.is_finite()) {
            return Err(err(format!("`features` row {} holds a NaN or infinite value (column {})", bad / dim.max(1), bad % dim.max(1))));
        }
        Ok(Self { features, dim, patient_id: ints("patient_id")?, day: ints("day")?, label: ints("label")?, metadata })
    }
}

/// A tensor's values as f64 for the dtypes a features file may hold: floats for `features`
/// (f32, f64, f16 read as written by other tools), integers for the rest. `None` for others.
fn numbers(t: &TensorView<'_>) -> Option<Vec<f64>> {
    let data = t.data();
    macro_rules! read {
        ($ty:ty) => {
            data.chunks_exact(std::mem::size_of::<$ty>()).map(|c| <$ty>::from_le_bytes(c.try_into().expect("chunk of the type's size")) as f64).collect()
        };
    }
    Some(match t.dtype() {
        Dtype::F32 => read!(f32),
        Dtype::F64 => read!(f64),
        Dtype::I64 => read!(i64),
        Dtype::I32 => read!(i32),
        Dtype::U32 => read!(u32),
        Dtype::U8 => read!(u8),
        _ => return None,
    })
}
