//! The manifest: one row per image (path, patient_id, day, label, history_len, split) as a
//! polars `DataFrame`, exported to CSV or Parquet with [`crate::write_table`]. A BIDS data set's
//! manifest adds `participant_id` and `session_id` (`sub-…`, `ses-…`: the keys its tables use).

use polars::prelude::*;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::split::Split;

/// Builds the manifest. `split` fills the `split` column with `train`/`test`; without one the
/// column holds nulls.
pub fn manifest(dataset: &Dataset, split: Option<&Split>) -> Result<DataFrame> {
    let records = dataset.records();
    let path: Vec<String> = records.iter().map(|r| r.path.display().to_string()).collect();
    let patient: Vec<u64> = records.iter().map(|r| r.patient.number()).collect();
    let day: Vec<u32> = records.iter().map(|r| r.day).collect();
    let label: Vec<u32> = records.iter().map(|r| r.label.index() as u32).collect();
    let history: Vec<u32> = records.iter().map(|r| r.history_len as u32).collect();
    let side: Vec<Option<&str>> = records.iter().map(|r| split.and_then(|s| s.side_of(&r.patient)).map(|s| s.as_str())).collect();
    let mut columns = vec![
        Column::new("path".into(), path),
        Column::new("patient_id".into(), patient),
        Column::new("day".into(), day),
        Column::new("label".into(), label),
        Column::new("history_len".into(), history),
        Column::new("split".into(), side),
    ];
    if records.iter().any(|r| r.session.is_some()) {
        let subject: Vec<Option<String>> = records.iter().map(|r| r.session.as_ref().map(|s| format!("sub-{}", s.subject))).collect();
        let session: Vec<Option<String>> = records.iter().map(|r| r.session.as_ref().and_then(|s| s.session.as_ref()).map(|s| format!("ses-{s}"))).collect();
        columns.insert(2, Column::new("participant_id".into(), subject));
        columns.insert(3, Column::new("session_id".into(), session));
    }
    Ok(DataFrame::new(records.len(), columns)?)
}
