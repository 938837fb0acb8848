/// Errors of attribution; shapes and indices at fault are named.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("invalid argument: {0}")]
    /// An argument, shape or model that the method cannot take, said in words.
    Invalid(String),
    #[error("{method}: the {what} holds {count} NaN or infinite value(s), first at flat index {first} (non-finite weights or inputs?)")]
    /// A NaN or infinity in a method's `what` (`logits` or `attribution`): how many, and the first's flat index.
    #[allow(missing_docs)]
    NonFinite { method: String, what: &'static str, count: usize, first: usize },
    #[error(transparent)]
    /// An error of candle's.
    Candle(#[from] candle_core::Error),
    #[cfg(feature = "render")]
    #[error("cannot write {path}: {message}")]
    /// A file that could not be written.
    #[allow(missing_docs)]
    Write { path: std::path::PathBuf, message: String },
}

/// The crate's result type.
pub type Result<T, E = ExplainError> = std::result::Result<T, E>;
