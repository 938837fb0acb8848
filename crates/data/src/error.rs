use std::path::PathBuf;

/// Everything that can go wrong while reading, splitting or generating a data set.
/// Each variant names the file or the value at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data folder {0} does not exist or is not a folder")]
    MissingFolder(PathBuf),
    #[error("class folder {path} is missing (expected `disease/` and `healthy/` inside the data folder)")]
    MissingClassFolder { path: PathBuf },
    #[error("class folder {path} holds no NIfTI images (*.nii or *.nii.gz)")]
    EmptyClassFolder { path: PathBuf },
    #[error("cannot parse file name {path}: expected affined_OAS3<patient>_MR_d<day>.nii[.gz]")]
    BadFileName { path: PathBuf },
    #[error("{what} appears twice: {first} and {second}")]
    Duplicate { what: String, first: PathBuf, second: PathBuf },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: unsupported NIfTI datatype {datatype} (only real scalar types are accepted)")]
    UnsupportedDatatype { path: PathBuf, datatype: String },
    #[error("{path}: expected a 2-D slice (or a 3-D volume with one slice), found dimensions {dims:?}")]
    NotASlice { path: PathBuf, dims: Vec<usize> },
    #[error("{path}: {count} voxel(s) are NaN or infinite, first at (row {row}, column {col})")]
    NonFinite { path: PathBuf, count: usize, row: usize, col: usize },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("invalid split: {0}")]
    Split(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{}", at_cell(path, *line, column.as_deref(), message))]
    InputTable { path: PathBuf, line: Option<u64>, column: Option<String>, message: String },
    #[error("{path}: {message}")]
    Bids { path: PathBuf, message: String },
    #[error("table error: {0}")]
    Table(#[from] polars::error::PolarsError),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

fn at_cell(path: &std::path::Path, line: Option<u64>, column: Option<&str>, message: &str) -> String {
    let mut at = path.display().to_string();
    if let Some(line) = line {
        at.push_str(&format!(", line {line}"));
    }
    if let Some(column) = column {
        at.push_str(&format!(", column `{column}`"));
    }
    format!("{at}: {message}")
}
