//! Tables on disk, all through polars: CSV (with header) or Parquet by extension, written
//! atomically; CSV read back as text cells.

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;

use crate::atomic::write_atomic;
use crate::error::{DataError, Result};

/// Writes a data frame as CSV (with header) or Parquet, chosen by the file extension.
pub fn write_table(frame: &DataFrame, path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mut frame = frame.clone();
    match ext.as_str() {
        "csv" => write_atomic(path, |w| CsvWriter::new(w).include_header(true).finish(&mut frame).map_err(|e| e.to_string())),
        "parquet" => write_atomic(path, |w| ParquetWriter::new(w).finish(&mut frame).map(|_| ()).map_err(|e| e.to_string())),
        _ => Err(DataError::InvalidArgument(format!("{}: table files must end in .csv or .parquet", path.display()))),
    }
}

/// A CSV file's column names and its rows as named text cells (empty cells left out), every
/// column read as text so that files written by different runs read alike.
pub fn read_table(path: &Path) -> Result<(Vec<String>, Vec<HashMap<String, String>>)> {
    let err = |message: String| DataError::InvalidArgument(format!("{}: {message}", path.display()));
    if !path.is_file() {
        return Err(err("no such file".into()));
    }
    let frame = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(path.to_owned()))
        .and_then(|r| r.finish())
        .map_err(|e| err(format!("not a readable CSV table: {e}")))?;
    let names: Vec<String> = frame.get_column_names().iter().map(|n| n.to_string()).collect();
    let columns: Vec<&StringChunked> = frame.columns().iter().map(|c| c.str()).collect::<PolarsResult<_>>().map_err(|e| err(e.to_string()))?;
    let rows = (0..frame.height())
        .map(|i| {
            names.iter().zip(&columns).filter_map(|(name, column)| column.get(i).filter(|v| !v.is_empty()).map(|v| (name.clone(), v.to_owned()))).collect()
        })
        .collect();
    Ok((names, rows))
}
