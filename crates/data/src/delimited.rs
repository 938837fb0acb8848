//! The tables a cohort comes with — BIDS's `participants.tsv` and `sub-*_sessions.tsv`, clinical
//! CSV/TSV exports — read strictly, so that every error names the file, the line and the column.
//! (The tables tgc writes itself go through polars, `table.rs`.)

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// A table read as text: its header and rows, each with the file line it came from.
#[derive(Debug, Clone)]
pub(crate) struct TextTable {
    pub path: PathBuf,
    pub columns: Vec<String>,
    /// (line in the file, cells), cells as many as `columns`.
    pub rows: Vec<(u64, Vec<String>)>,
}

impl TextTable {
    /// Reads a `.tsv` (tab-separated, BIDS) or `.csv` (comma-separated, quotes allowed) table
    /// with a header line. A row with more or fewer cells than the header is an error naming
    /// its line; so is a file that is not UTF-8.
    pub fn read(path: &Path) -> Result<Self> {
        let err = |message: String| DataError::InputTable { path: path.to_owned(), line: None, column: None, message };
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        let delimiter = if name.ends_with(".tsv") {
            b'\t'
        } else if name.ends_with(".csv") {
            b','
        } else {
            return Err(err("a label table must be a .tsv or .csv file".into()));
        };
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).quoting(delimiter == b',').has_headers(true).flexible(false).from_reader(file);
        let header = reader.headers().map_err(|e| csv_error(path, &e))?;
        let columns: Vec<String> = header.iter().map(|c| c.trim().trim_start_matches('\u{feff}').to_owned()).collect();
        if columns.iter().all(String::is_empty) {
            return Err(err("the table has no header line".into()));
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, &e))?;
            let line = record.position().map_or(0, |p| p.line());
            rows.push((line, record.iter().map(|c| c.trim().to_owned()).collect()));
        }
        Ok(Self { path: path.to_owned(), columns, rows })
    }

    /// The index of `column`, or an error naming the file and the columns there are.
    pub fn column(&self, column: &str) -> Result<usize> {
        self.columns.iter().position(|c| c == column).ok_or_else(|| DataError::InputTable {
            path: self.path.clone(),
            line: None,
            column: Some(column.to_owned()),
            message: format!("no such column (the table has: {})", self.columns.join(", ")),
        })
    }

    /// The first of `candidates` the table has.
    pub fn first_column(&self, candidates: &[&str]) -> Option<usize> {
        candidates.iter().find_map(|c| self.columns.iter().position(|have| have == c))
    }

    /// An error at one cell.
    pub fn cell_error(&self, line: u64, column: usize, message: String) -> DataError {
        DataError::InputTable { path: self.path.clone(), line: Some(line), column: self.columns.get(column).cloned(), message }
    }
}

/// BIDS's missing value (`n/a`), and an empty cell.
pub(crate) fn is_missing(cell: &str) -> bool {
    cell.is_empty() || cell.eq_ignore_ascii_case("n/a")
}

fn csv_error(path: &Path, e: &csv::Error) -> DataError {
    let line = e.position().map(|p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("this row has {len} cells, the header has {expected_len} (a truncated or malformed row)")
        }
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_owned(),
        _ => e.to_string(),
    };
    DataError::InputTable { path: path.to_owned(), line, column: None, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tsv_and_quoted_csv_and_names_a_short_row() {
        let dir = tempfile::tempdir().unwrap();
        let tsv = dir.path().join("t.tsv");
        std::fs::write(&tsv, "session_id\tdiagnosis\nses-M00\tCN\nses-M12\tn/a\n").unwrap();
        let t = TextTable::read(&tsv).unwrap();
        assert_eq!(t.columns, ["session_id", "diagnosis"]);
        assert_eq!(t.rows, vec![(2, vec!["ses-M00".to_owned(), "CN".to_owned()]), (3, vec!["ses-M12".to_owned(), "n/a".to_owned()])]);
        assert!(is_missing(&t.rows[1].1[1]));
        let csv = dir.path().join("c.csv");
        std::fs::write(&csv, "OASISID,dx1\nOAS30001,\"AD Dementia, probable\"\n").unwrap();
        assert_eq!(TextTable::read(&csv).unwrap().rows[0].1[1], "AD Dementia, probable");
        std::fs::write(&tsv, "session_id\tdiagnosis\nses-M00\tCN\nses-M12\n").unwrap();
        let e = TextTable::read(&tsv).unwrap_err().to_string();
        assert!(e.contains("t.tsv") && e.contains("line 3") && e.contains("1 cells"), "{e}");
        let e = TextTable::read(&csv).unwrap().column("CDRTOT").unwrap_err().to_string();
        assert!(e.contains("c.csv") && e.contains("CDRTOT") && e.contains("OASISID, dx1"), "{e}");
    }
}
