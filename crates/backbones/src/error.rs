use std::path::PathBuf;

/// Errors of loading weights, building models and computing features. Each names the source,
/// file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    #[error("invalid weight source `{0}`: expected a hub id (org/name[@revision]), a folder, a .safetensors file or random:<seed>")]
    BadSource(String),
    #[error("weights {source_name}: {message}")]
    Weights { source_name: String, message: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unknown backbone `{0}` (expected resnet18 or vit)")]
    UnknownBackbone(String),
    #[error("unknown layer {0}")]
    UnknownLayer(String),
    #[error("input shape {got:?} does not fit: {expected}")]
    Shape { got: Vec<usize>, expected: String },
    #[error("feature cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error(transparent)]
    Data(#[from] tgc_data::DataError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = BackboneError> = std::result::Result<T, E>;
