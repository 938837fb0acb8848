/// Errors of attribution; shapes and indices at fault are named.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{method}: the {what} holds {count} NaN or infinite value(s), first at flat index {first} (non-finite weights or inputs?)")]
    NonFinite { method: String, what: &'static str, count: usize, first: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[cfg(feature = "render")]
    #[error("cannot write {path}: {message}")]
    Write { path: std::path::PathBuf, message: String },
}

pub type Result<T, E = ExplainError> = std::result::Result<T, E>;
