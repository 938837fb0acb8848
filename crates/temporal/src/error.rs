/// Errors of training and evaluation; each names the file, tensor or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error("{0}")]
    Split(String),
    #[error(transparent)]
    Data(#[from] tgc_data::DataError),
    #[error(transparent)]
    Backbone(#[from] tgc_backbones::BackboneError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("table: {0}")]
    Table(#[from] polars::error::PolarsError),
    #[error("cannot write {path}: {message}")]
    Write { path: std::path::PathBuf, message: String },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
