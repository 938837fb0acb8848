//! Labels of a BIDS cohort from its tables: `--labels TABLE:COLUMN=POS,…/NEG,…` (the column's
//! values of each class) or `--labels TABLE:COLUMN>X` (a threshold on a numeric column: `>`,
//! `>=`, `<`, `<=` make the positive class, disease). `TABLE` is `sessions` (each subject's
//! `sub-*_sessions.tsv`, a row per session), `participants` (`participants.tsv`, one label per
//! subject) or a clinical CSV/TSV of visits, matched to a session by the nearest day within a
//! window (the nearest row whose cell is not missing; OASIS's scripts use ±180 days) — or, when
//! it has a `session_id` column (Clinica's merged TSV) and no day column is named, by subject
//! and session.
//!
//! `n/a` and empty cells are missing. A session without a label is skipped and counted, never
//! guessed; equidistant visits of different classes leave it unlabelled too. A missing column,
//! a value of neither class, and two tables that disagree are errors naming the file, the
//! column and the line. Every cell of the column is checked, matched or not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::bids::{parse_day, session_row, sessions_tsv};
use crate::delimited::{is_missing, TextTable};
use crate::error::{DataError, Result};
use crate::name::Label;

/// Where a label comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelTable {
    Sessions,
    Participants,
    /// A clinical table of visits (subject, day, values).
    Visits(PathBuf),
}

/// Comparison of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
}

/// Which values are which class.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassRule {
    Values {
        positive: Vec<String>,
        negative: Vec<String>,
    },
    /// Positive (disease) when `value <cmp> threshold`, negative otherwise.
    Threshold {
        cmp: Cmp,
        threshold: f64,
    },
}

/// One `--labels` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSpec {
    pub table: LabelTable,
    pub column: String,
    pub rule: ClassRule,
}

impl FromStr for LabelSpec {
    type Err = DataError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            DataError::InvalidArgument(format!(
                "--labels `{text}`: {why}; expected TABLE:COLUMN=POS,…/NEG,… or TABLE:COLUMN>X (also >=, <, <=), TABLE being sessions, participants or a .csv/.tsv file"
            ))
        };
        let (table, rest) = text.split_once(':').ok_or_else(|| bad("no `:` after the table"))?;
        let table = match table {
            "sessions" => LabelTable::Sessions,
            "participants" => LabelTable::Participants,
            "" => return Err(bad("no table")),
            path => LabelTable::Visits(PathBuf::from(path)),
        };
        let at = rest.find(['=', '>', '<']).ok_or_else(|| bad("no `=`, `>` or `<` after the column"))?;
        let column = rest[..at].trim().to_owned();
        if column.is_empty() {
            return Err(bad("no column"));
        }
        let rule_text = &rest[at..];
        let rule = if let Some(values) = rule_text.strip_prefix('=') {
            let (pos, neg) = values.split_once('/').ok_or_else(|| bad("the values need both classes, POS,…/NEG,…"))?;
            let list = |s: &str| s.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect::<Vec<_>>();
            let (positive, negative) = (list(pos), list(neg));
            if positive.is_empty() || negative.is_empty() {
                return Err(bad("each class needs at least one value"));
            }
            if let Some(both) = positive.iter().find(|v| negative.contains(v)) {
                return Err(bad(&format!("`{both}` is in both classes")));
            }
            ClassRule::Values { positive, negative }
        } else {
            let (cmp, number) = if let Some(n) = rule_text.strip_prefix(">=") {
                (Cmp::Ge, n)
            } else if let Some(n) = rule_text.strip_prefix("<=") {
                (Cmp::Le, n)
            } else if let Some(n) = rule_text.strip_prefix('>') {
                (Cmp::Gt, n)
            } else {
                (Cmp::Lt, &rule_text[1..])
            };
            let threshold: f64 = number.trim().parse().ok().filter(|t: &f64| t.is_finite()).ok_or_else(|| bad(&format!("`{number}` is not a number")))?;
            ClassRule::Threshold { cmp, threshold }
        };
        Ok(Self { table, column, rule })
    }
}

impl ClassRule {
    /// The class of a (not missing) cell, or why it is neither.
    fn classify(&self, cell: &str) -> std::result::Result<Label, String> {
        match self {
            ClassRule::Values { positive, negative } => {
                if positive.iter().any(|v| v == cell) {
                    Ok(Label::Disease)
                } else if negative.iter().any(|v| v == cell) {
                    Ok(Label::Healthy)
                } else {
                    Err(format!("`{cell}` is in neither class (disease: {}; healthy: {})", positive.join(", "), negative.join(", ")))
                }
            }
            ClassRule::Threshold { cmp, threshold } => {
                let value: f64 = cell.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| format!("`{cell}` is not a number"))?;
                let positive = match cmp {
                    Cmp::Gt => value > *threshold,
                    Cmp::Ge => value >= *threshold,
                    Cmp::Lt => value < *threshold,
                    Cmp::Le => value <= *threshold,
                };
                Ok(if positive { Label::Disease } else { Label::Healthy })
            }
        }
    }
}

/// How a clinical table of visits is matched to sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitMatch {
    /// The subject column; default the first of `participant_id`, `OASISID`, `subject_id`,
    /// `subject`, `Subject`. Values match with or without `sub-`.
    pub subject_column: Option<String>,
    /// The day column; default the first of `days_to_visit`, `day`, `days`.
    pub day_column: Option<String>,
    /// The largest distance in days between a session and its visit.
    pub window_days: u32,
}

impl Default for VisitMatch {
    fn default() -> Self {
        Self { subject_column: None, day_column: None, window_days: 180 }
    }
}

/// A session to label.
pub(crate) struct SessionKey<'a> {
    pub subject: &'a str,
    pub session: Option<&'a str>,
    pub subject_dir: &'a Path,
    pub day: u32,
}

/// A session's label, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Labelled(Label),
    Unlabelled(String),
}

/// Where one label came from: the file and line, for the disagreement error.
type Sourced = std::result::Result<(Label, PathBuf, u64), String>;

/// Labels every session from every spec; where two specs label a session they must agree.
/// `days_are_real` is false when the days are ranks (a visit table cannot be matched then).
pub(crate) fn label_sessions(root: &Path, sessions: &[SessionKey], specs: &[LabelSpec], matching: &VisitMatch, days_are_real: bool) -> Result<Vec<Outcome>> {
    let mut per_spec: Vec<Vec<Sourced>> = Vec::new();
    for spec in specs {
        per_spec.push(match &spec.table {
            LabelTable::Sessions => from_sessions(sessions, spec)?,
            LabelTable::Participants => from_participants(root, sessions, spec)?,
            LabelTable::Visits(path) => {
                let table = TextTable::read(&resolve(root, path))?;
                if matching.day_column.is_none() && table.columns.iter().any(|c| c == "session_id") {
                    per_spec.push(from_session_rows(&table, sessions, spec, matching)?);
                    continue;
                }
                if !days_are_real {
                    return Err(DataError::InvalidArgument(format!(
                        "--labels {}: a visit table is matched by day, and this data set's sessions have no days (give --day-column)",
                        path.display()
                    )));
                }
                from_visits(&table, sessions, spec, matching)?
            }
        });
    }
    let mut out = Vec::with_capacity(sessions.len());
    for (i, key) in sessions.iter().enumerate() {
        let mut chosen: Option<&(Label, PathBuf, u64)> = None;
        let mut why = Vec::new();
        for labels in &per_spec {
            match &labels[i] {
                Ok(found) => match chosen {
                    Some(first) if first.0 != found.0 => {
                        return Err(DataError::InvalidArgument(format!(
                            "the label tables disagree on {}: {} line {} says {}, {} line {} says {}",
                            describe(key),
                            first.1.display(),
                            first.2,
                            first.0,
                            found.1.display(),
                            found.2,
                            found.0
                        )))
                    }
                    Some(_) => {}
                    None => chosen = Some(found),
                },
                Err(reason) => why.push(reason.clone()),
            }
        }
        out.push(match chosen {
            Some((label, _, _)) => Outcome::Labelled(*label),
            None => Outcome::Unlabelled(why.join("; ")),
        });
    }
    Ok(out)
}

fn describe(key: &SessionKey) -> String {
    match key.session {
        Some(s) => format!("sub-{}/ses-{s}", key.subject),
        None => format!("sub-{}", key.subject),
    }
}

/// A table path as given, else relative to the data set's root.
fn resolve(root: &Path, path: &Path) -> PathBuf {
    if path.is_file() || path.is_absolute() {
        path.to_owned()
    } else {
        root.join(path)
    }
}

/// Checks every non-missing cell of the spec's column and returns the column index.
fn checked_column(table: &TextTable, spec: &LabelSpec) -> Result<usize> {
    let col = table.column(&spec.column)?;
    for (line, cells) in &table.rows {
        if !is_missing(&cells[col]) {
            spec.rule.classify(&cells[col]).map_err(|why| table.cell_error(*line, col, why))?;
        }
    }
    Ok(col)
}

fn from_sessions(sessions: &[SessionKey], spec: &LabelSpec) -> Result<Vec<Sourced>> {
    let mut tables: HashMap<PathBuf, Option<(TextTable, usize)>> = HashMap::new();
    let mut out = Vec::with_capacity(sessions.len());
    for key in sessions {
        let path = sessions_tsv(key.subject_dir, key.subject);
        if !tables.contains_key(&path) {
            let table = if path.is_file() {
                let t = TextTable::read(&path)?;
                let col = checked_column(&t, spec)?;
                Some((t, col))
            } else {
                None
            };
            tables.insert(path.clone(), table);
        }
        let Some((table, col)) = &tables[&path] else {
            out.push(Err("no sessions.tsv".to_owned()));
            continue;
        };
        let Some(session) = key.session else {
            out.push(Err("no session to look up in sessions.tsv".to_owned()));
            continue;
        };
        out.push(match session_row(table, session)? {
            None => Err("no row in sessions.tsv".to_owned()),
            Some((_, cells)) if is_missing(&cells[*col]) => Err(format!("`{}` is n/a in sessions.tsv", spec.column)),
            Some((line, cells)) => Ok((spec.rule.classify(&cells[*col]).map_err(|why| table.cell_error(line, *col, why))?, path.clone(), line)),
        });
    }
    Ok(out)
}

fn from_participants(root: &Path, sessions: &[SessionKey], spec: &LabelSpec) -> Result<Vec<Sourced>> {
    let path = root.join("participants.tsv");
    if !path.is_file() {
        return Err(DataError::Bids { path, message: "--labels participants:… needs this table, which is missing".into() });
    }
    let table = TextTable::read(&path)?;
    let col = checked_column(&table, spec)?;
    let id = table.column("participant_id")?;
    let mut by_subject: HashMap<&str, (u64, &str)> = HashMap::new();
    for (line, cells) in &table.rows {
        let subject = cells[id].strip_prefix("sub-").unwrap_or(&cells[id]);
        if let Some((first, _)) = by_subject.insert(subject, (*line, &cells[col])) {
            return Err(table.cell_error(*line, id, format!("sub-{subject} appears twice (also on line {first})")));
        }
    }
    Ok(sessions
        .iter()
        .map(|key| match by_subject.get(key.subject) {
            None => Err("subject not in participants.tsv".to_owned()),
            Some((_, cell)) if is_missing(cell) => Err(format!("`{}` is n/a in participants.tsv", spec.column)),
            Some((line, cell)) => Ok((spec.rule.classify(cell).expect("checked by checked_column"), path.clone(), *line)),
        })
        .collect())
}

/// The subject column of a table: given, or the first of the usual names.
fn subject_column(table: &TextTable, matching: &VisitMatch) -> Result<usize> {
    pick_column(table, &matching.subject_column, &["participant_id", "OASISID", "subject_id", "subject", "Subject"], "subject")
}

fn pick_column(table: &TextTable, given: &Option<String>, defaults: &[&str], what: &str) -> Result<usize> {
    match given {
        Some(name) => table.column(name),
        None => table.first_column(defaults).ok_or_else(|| DataError::InputTable {
            path: table.path.clone(),
            line: None,
            column: None,
            message: format!("no {what} column (looked for {}; name it with --label-{what}-column)", defaults.join(", ")),
        }),
    }
}

/// A table with a row per session (`participant_id`, `session_id`: Clinica's merged TSV, a
/// CAPS user's labels), matched by subject and session rather than by day.
fn from_session_rows(table: &TextTable, sessions: &[SessionKey], spec: &LabelSpec, matching: &VisitMatch) -> Result<Vec<Sourced>> {
    let col = checked_column(table, spec)?;
    let subject_col = subject_column(table, matching)?;
    let session_col = table.column("session_id")?;
    let strip = |cell: &str, prefix: &str| cell.strip_prefix(prefix).unwrap_or(cell).to_owned();
    let mut rows: HashMap<(String, String), (u64, &str)> = HashMap::new();
    for (line, cells) in &table.rows {
        let key = (strip(&cells[subject_col], "sub-"), strip(&cells[session_col], "ses-"));
        if let Some((first, _)) = rows.insert(key.clone(), (*line, &cells[col])) {
            return Err(table.cell_error(*line, session_col, format!("sub-{}/ses-{} appears twice (also on line {first})", key.0, key.1)));
        }
    }
    let name = table.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(sessions
        .iter()
        .map(|key| match rows.get(&(key.subject.to_owned(), key.session.unwrap_or("").to_owned())) {
            None => Err(format!("no row in {name}")),
            Some((_, cell)) if is_missing(cell) => Err(format!("`{}` is n/a in {name}", spec.column)),
            Some((line, cell)) => Ok((spec.rule.classify(cell).expect("checked by checked_column"), table.path.clone(), *line)),
        })
        .collect())
}

fn from_visits(table: &TextTable, sessions: &[SessionKey], spec: &LabelSpec, matching: &VisitMatch) -> Result<Vec<Sourced>> {
    let path = table.path.as_path();
    let col = checked_column(table, spec)?;
    let subject_col = subject_column(table, matching)?;
    let day_col = pick_column(table, &matching.day_column, &["days_to_visit", "day", "days"], "day")?;
    // Labelled visits per subject: (day, label, line).
    let mut visits: HashMap<&str, Vec<(u32, Label, u64)>> = HashMap::new();
    for (line, cells) in &table.rows {
        if is_missing(&cells[col]) {
            continue;
        }
        let day = parse_day(&cells[day_col])
            .ok_or_else(|| table.cell_error(*line, day_col, format!("`{}` is not a day count (a whole number ≥ 0)", cells[day_col])))?;
        let subject = cells[subject_col].strip_prefix("sub-").unwrap_or(&cells[subject_col]);
        let label = spec.rule.classify(&cells[col]).expect("checked by checked_column");
        visits.entry(subject).or_default().push((day, label, *line));
    }
    let window = matching.window_days;
    Ok(sessions
        .iter()
        .map(|key| {
            let Some(rows) = visits.get(key.subject) else { return Err(format!("subject not in {}", path.display())) };
            let best = rows.iter().map(|r| r.0.abs_diff(key.day)).min().unwrap_or(u32::MAX);
            if best > window {
                return Err(format!("no visit in {} within ±{window} days", path.display()));
            }
            let nearest: Vec<&(u32, Label, u64)> = rows.iter().filter(|r| r.0.abs_diff(key.day) == best).collect();
            if nearest.iter().any(|r| r.1 != nearest[0].1) {
                return Err(format!("equidistant visits of both classes in {}", path.display()));
            }
            Ok((nearest[0].1, path.to_owned(), nearest[0].2))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_specs_parse() {
        let s: LabelSpec = "sessions:diagnosis=AD,MCI/CN".parse().unwrap();
        assert_eq!(s.table, LabelTable::Sessions);
        assert_eq!(s.rule, ClassRule::Values { positive: vec!["AD".into(), "MCI".into()], negative: vec!["CN".into()] });
        let s: LabelSpec = "clinical/visits.csv:CDRTOT>0".parse().unwrap();
        assert_eq!(
            (s.table, s.column.as_str(), s.rule),
            (LabelTable::Visits("clinical/visits.csv".into()), "CDRTOT", ClassRule::Threshold { cmp: Cmp::Gt, threshold: 0.0 })
        );
        assert_eq!("participants:cdr>=0.5".parse::<LabelSpec>().unwrap().rule, ClassRule::Threshold { cmp: Cmp::Ge, threshold: 0.5 });
        for bad in ["sessions", "sessions:=AD/CN", "sessions:dx=AD", "sessions:dx=AD/AD", "sessions:dx>x", "sessions:dx", ":dx=A/B"] {
            assert!(bad.parse::<LabelSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_classify_and_name_what_is_neither() {
        let r = ClassRule::Threshold { cmp: Cmp::Gt, threshold: 0.0 };
        assert_eq!(r.classify("0.5"), Ok(Label::Disease));
        assert_eq!(r.classify("0"), Ok(Label::Healthy));
        assert!(r.classify("none").unwrap_err().contains("not a number"));
        let r = ClassRule::Values { positive: vec!["AD".into()], negative: vec!["CN".into()] };
        assert!(r.classify("MCI").unwrap_err().contains("`MCI` is in neither class"));
    }
}
