//! Batched feature extraction over a data set, with a per-image cache, into a
//! [`tgc_data::FeatureSet`] (the features file format lives with the data).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tgc_data::{write_atomic, Dataset, FeatureSet};

use crate::backbone::Backbone;
use crate::error::{BackboneError, Result};
use crate::weights::sha256_hex;

/// Settings of [`extract_features`].
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub batch_size: usize,
    /// Folder of cached per-image features; `None` computes everything.
    pub cache_dir: Option<PathBuf>,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self { batch_size: 8, cache_dir: Some(default_cache_dir()) }
    }
}

/// `TGC_CACHE_DIR`, else `$XDG_CACHE_HOME/tgc/features`, else `~/.cache/tgc/features`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TGC_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tgc").join("features")
}

/// Computes (or fetches from the cache) the features of every record, in batches.
/// `progress` is called with the number of images done after each batch.
pub fn extract_features(backbone: &Backbone, dataset: &Dataset, config: &ExtractConfig, progress: impl FnMut(usize)) -> Result<(FeatureSet, usize)> {
    let all: Vec<usize> = (0..dataset.len()).collect();
    extract_features_of(backbone, dataset, &all, config, progress)
}

/// [`extract_features`] of the records `indices` (a shard's), in that order: the rows of the
/// result are those records'. An image's features do not depend on the images batched with it,
/// so shards' rows equal those of one process extracting everything.
pub fn extract_features_of(
    backbone: &Backbone,
    dataset: &Dataset,
    indices: &[usize],
    config: &ExtractConfig,
    mut progress: impl FnMut(usize),
) -> Result<(FeatureSet, usize)> {
    let dim = backbone.feature_dim();
    let n = indices.len();
    let records: Vec<&tgc_data::Record> = indices.iter().map(|&i| &dataset.records()[i]).collect();
    let mut features = vec![0f32; n * dim];
    let mut keys = Vec::with_capacity(n);
    let mut missing = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let bytes = std::fs::read(&record.path).map_err(|e| tgc_data::DataError::Read { path: record.path.clone(), message: e.to_string() })?;
        let key = cache_key(backbone, dataset.reader_key().as_deref(), &bytes);
        let hit = match &config.cache_dir {
            Some(dir) => read_cached(&dir.join(format!("{key}.safetensors")), dim),
            None => Cached::Absent,
        };
        match hit {
            Cached::Hit(row) => features[i * dim..(i + 1) * dim].copy_from_slice(&row),
            Cached::Absent => missing.push(i),
            Cached::Corrupt(path, why) => {
                tracing::warn!(entry = %path.display(), image = %record.path.display(), reason = %why, "corrupted feature-cache entry: recomputing and replacing it");
                missing.push(i);
            }
        }
        keys.push(key);
    }
    let cached = n - missing.len();
    progress(cached);
    let mut done = cached;
    for chunk in missing.chunks(config.batch_size.max(1)) {
        let images = chunk.iter().map(|&i| dataset.load_image(indices[i])).collect::<tgc_data::Result<Vec<_>>>()?;
        let input = backbone.preprocess_batch(&images)?;
        let rows: Vec<Vec<f32>> = backbone.features(&input)?.to_dtype(DType::F32)?.to_vec2()?;
        for (&i, row) in chunk.iter().zip(rows) {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(BackboneError::Weights {
                    source_name: backbone.identity().source.clone(),
                    message: format!("the features of {} hold NaN or infinite values", records[i].path.display()),
                });
            }
            features[i * dim..(i + 1) * dim].copy_from_slice(&row);
            if let Some(dir) = &config.cache_dir {
                write_cached(dir, &keys[i], &row);
            }
        }
        done += chunk.len();
        progress(done);
    }
    let identity = backbone.identity();
    let metadata = HashMap::from([
        ("backbone".to_owned(), backbone.kind().as_str().to_owned()),
        ("weights".to_owned(), identity.source.clone()),
        ("weights_digest".to_owned(), identity.digest.clone()),
        ("random_weights".to_owned(), identity.random.to_string()),
        ("imagenet_normalize".to_owned(), backbone.preprocess_settings().imagenet_normalize.to_string()),
        ("data".to_owned(), dataset.root().display().to_string()),
        ("orientation".to_owned(), tgc_data::ORIENTATION.to_owned()),
        ("ops".to_owned(), backbone.ops_description()),
        ("layout".to_owned(), dataset.layout().as_str().to_owned()),
    ]);
    let mut metadata = metadata;
    if let Some(slice) = dataset.slice() {
        metadata.insert("slice".to_owned(), slice.to_string());
        metadata.insert("slice_layout".to_owned(), tgc_data::SLICE_LAYOUT.to_owned());
    }
    if let Some(days) = &dataset.report().day_source {
        metadata.insert("days".to_owned(), days.to_string());
    }
    // BIDS rows name their sessions, so that features join with the cohort's tables.
    if records.iter().any(|r| r.session.is_some()) {
        let sessions: Vec<String> = records.iter().map(|r| r.session.as_ref().map(|s| s.prefix()).unwrap_or_default()).collect();
        metadata.insert("sessions".to_owned(), serde_json::to_string(&sessions).unwrap_or_default());
    }
    let set = FeatureSet {
        features,
        dim,
        patient_id: records.iter().map(|r| r.patient.number() as i64).collect(),
        day: records.iter().map(|r| r.day as i64).collect(),
        label: records.iter().map(|r| r.label.index() as i64).collect(),
        metadata,
    };
    Ok((set, cached))
}

/// The cache key of one image: the model, the preprocessing, the reading convention and, for
/// scans cut to a slice, the slice and its layout (`reader`), then the file's bytes.
fn cache_key(backbone: &Backbone, reader: Option<&str>, image_bytes: &[u8]) -> String {
    let p = backbone.preprocess_settings();
    let header = format!(
        "tgc-features-v2|{}|{}|{}|{:?}|{}|",
        tgc_data::ORIENTATION,
        backbone.kind(),
        backbone.identity().digest,
        p.resize_shorter_to,
        p.imagenet_normalize
    );
    let mut bytes = header.into_bytes();
    // The device-generic ops' features differ from the kernels' in the last bits: their own
    // entries (the kernels' keys are those of earlier versions, so their caches stay valid).
    if backbone.runs_generic_ops() {
        bytes.extend_from_slice(b"generic-ops|");
    }
    // Cut slices get keys of their own; OASIS_2D slices keep the keys of earlier versions.
    if let Some(reader) = reader {
        bytes.extend_from_slice(format!("{reader}|").as_bytes());
    }
    bytes.extend_from_slice(sha256_hex(image_bytes).as_bytes());
    sha256_hex(&bytes)
}

/// What the cache holds for one image.
enum Cached {
    Hit(Vec<f32>),
    Absent,
    /// An entry that fails its checks (unreadable, wrong length, checksum mismatch).
    Corrupt(PathBuf, String),
}

/// The checksum stored with every entry: SHA-256 of the row's little-endian bytes.
fn row_checksum(row: &[f32]) -> String {
    sha256_hex(&row.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
}

fn read_cached(path: &Path, dim: usize) -> Cached {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Cached::Absent,
        Err(e) => return Cached::Corrupt(path.to_owned(), e.to_string()),
    };
    let corrupt = |why: String| Cached::Corrupt(path.to_owned(), why);
    let checksum = match safetensors::SafeTensors::read_metadata(&bytes) {
        Ok((_, meta)) => meta.metadata().as_ref().and_then(|m| m.get("sha256").cloned()),
        Err(e) => return corrupt(format!("not a safetensors file: {e}")),
    };
    let row: Vec<f32> = match candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map(|t| t.get("features").map(|f| f.to_vec1::<f32>())) {
        Ok(Some(Ok(row))) => row,
        _ => return corrupt("no readable `features` vector".to_owned()),
    };
    if row.len() != dim {
        return corrupt(format!("{} values, expected {dim}", row.len()));
    }
    match checksum {
        Some(sum) if sum == row_checksum(&row) => Cached::Hit(row),
        Some(_) => corrupt("checksum mismatch".to_owned()),
        None => corrupt("no checksum (written by an older tgc)".to_owned()),
    }
}

/// A cache write that fails only costs a recomputation later, so it warns instead of failing.
fn write_cached(dir: &Path, key: &str, row: &[f32]) {
    let path = dir.join(format!("{key}.safetensors"));
    let result = std::fs::create_dir_all(dir).map_err(|e| e.to_string()).and_then(|()| {
        let t = Tensor::from_slice(row, row.len(), &Device::Cpu).map_err(|e| e.to_string())?;
        let meta = HashMap::from([("sha256".to_owned(), row_checksum(row))]);
        let bytes = tgc_data::safetensors_bytes([("features", &t)], meta)?;
        write_atomic(&path, |w| std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())).map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the feature cache");
    }
}
