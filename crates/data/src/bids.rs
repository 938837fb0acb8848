//! BIDS datasets of 3-D scans: which files are the images, which session each belongs to, which
//! run is used, and what day each session is.
//!
//! - Images are `sub-<label>/[ses-<label>/]anat/*_T1w.nii[.gz]` (Clinica's CAPS layout,
//!   `subjects/sub-*/ses-*/t1_linear/*_T1w.nii.gz`, too). Everything else is ignored: other
//!   suffixes (T2w, FLAIR…), other folders (func/, dwi/, derivatives/, sourcedata/), hidden
//!   files.
//! - Entity filters (`space-…`, `desc-…`, any `key-value`) keep the files that carry them all.
//! - Several T1w left in a session: the one with the lowest `run-` (no `run-` counts lowest,
//!   then the file name decides); the others are counted as runs left out. Files that differ in
//!   more than their run (two spaces, two `desc-`) are an error asking for a filter.
//! - The visit day: a session label `d<digits>` (OASIS-3: days since entry), or a named column
//!   of `sub-*_sessions.tsv`, else the session's rank among the subject's sessions in natural
//!   label order (`M6` before `M12`); a data set without sessions has one visit per subject.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::delimited::{is_missing, TextTable};
use crate::error::{DataError, Result};

/// Makes `out` a BIDS derivative dataset: its `dataset_description.json` (`DatasetType:
/// derivative`, `GeneratedBy` naming tgc and its version, the source dataset) — written once,
/// atomically; an existing one is left as it is.
pub fn write_derivative_description(out: &Path, source: &Path, what: &str) -> Result<()> {
    let path = out.join("dataset_description.json");
    if path.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(out).map_err(|e| DataError::Write { path: out.to_owned(), message: e.to_string() })?;
    let description = serde_json::json!({
        "Name": format!("tgc {what}"),
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{ "Name": "tgc", "Version": env!("CARGO_PKG_VERSION"), "Description": what }],
        "SourceDatasets": [{ "URL": format!("file://{}", std::fs::canonicalize(source).unwrap_or_else(|_| source.to_owned()).display()) }],
    });
    crate::atomic::write_atomic(&path, |w| std::io::Write::write_all(w, format!("{description:#}\n").as_bytes()).map_err(|e| e.to_string()))
}

/// Where the visit days of a BIDS data set came from (outputs say it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaySource {
    /// Session labels of OASIS-3's form `d<digits>`.
    SessionLabel,
    /// A column of the subjects' `sessions.tsv`.
    Column(String),
    /// No day anywhere: the session's rank among the subject's sessions (0, 1, …).
    Rank,
    /// No session level: one visit per subject, day 0.
    NoSessions,
}

impl std::fmt::Display for DaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaySource::SessionLabel => f.write_str("days from session labels (d<digits>)"),
            DaySource::Column(c) => write!(f, "days from sessions.tsv column `{c}`"),
            DaySource::Rank => f.write_str("no visit days in the data: each session's rank among its subject's sessions stands in for its day"),
            DaySource::NoSessions => f.write_str("no sessions: one visit per subject"),
        }
    }
}

/// One session's image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found {
    /// Subject label, without `sub-`.
    pub subject: String,
    /// Session label, without `ses-`.
    pub session: Option<String>,
    pub path: PathBuf,
    pub subject_dir: PathBuf,
    pub runs_left_out: usize,
    /// Whether the chosen file carries a `space-` entity (registered to a template).
    pub has_space: bool,
}

/// What a scan of a BIDS tree found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    pub found: Vec<Found>,
    /// Sessions with no T1w image (no anat/, or none that passes the filters), as `sub-X/ses-Y`.
    pub without_t1w: Vec<String>,
}

/// Whether `root` looks like a BIDS dataset (or a Clinica CAPS folder) rather than OASIS_2D.
pub(crate) fn looks_like_bids(root: &Path) -> bool {
    root.join("dataset_description.json").is_file() || !subject_dirs(root).unwrap_or_default().is_empty()
}

/// The subject folders: `root/sub-*`, or `root/subjects/sub-*` (CAPS).
fn subject_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = list_prefixed(root, "sub-")?;
    if out.is_empty() && root.join("subjects").is_dir() {
        out = list_prefixed(&root.join("subjects"), "sub-")?;
    }
    Ok(out)
}

/// Sub-folders of `dir` named `<prefix><label>` (label non-empty, no hidden entries), sorted.
fn list_prefixed(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (name, path) in list(dir)? {
        if let Some(label) = name.strip_prefix(prefix) {
            if path.is_dir() && valid_label(label) {
                out.push((label.to_owned(), path));
            } else if path.is_dir() {
                tracing::warn!(folder = %path.display(), "skipping: not a BIDS label (letters and digits only)");
            }
        }
    }
    Ok(out)
}

/// Entries of a folder with UTF-8 names, hidden ones left out, sorted by name.
fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read_err = |e: std::io::Error| DataError::Read { path: dir.to_owned(), message: e.to_string() };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "skipping: file name is not UTF-8");
            continue;
        };
        if !name.starts_with('.') {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// BIDS labels are alphanumeric.
fn valid_label(label: &str) -> bool {
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A BIDS file name's entities (in order) and suffix: `sub-01_ses-a_run-2_T1w.nii.gz` →
/// ([sub 01, ses a, run 2], T1w). `None` for names that are not `.nii`/`.nii.gz`. Tokens
/// without a `-` before the suffix (CAPS's `…_T1w_space-…_T1w`) are kept out of the entities.
pub(crate) fn parse_name(name: &str) -> Option<(Vec<(String, String)>, String)> {
    let stem = name.strip_suffix(".nii.gz").or_else(|| name.strip_suffix(".nii"))?;
    let mut tokens: Vec<&str> = stem.split('_').collect();
    let suffix = tokens.pop()?.to_owned();
    if suffix.is_empty() || suffix.contains('-') {
        return None;
    }
    let entities = tokens.iter().filter_map(|t| t.split_once('-')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    Some((entities, suffix))
}

fn entity<'a>(entities: &'a [(String, String)], key: &str) -> Option<&'a str> {
    entities.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Scans a BIDS tree; `filters` are `(key, value)` entities every image must carry.
pub(crate) fn scan(root: &Path, filters: &[(String, String)]) -> Result<Scan> {
    let subjects = subject_dirs(root)?;
    if subjects.is_empty() {
        return Err(DataError::Bids { path: root.to_owned(), message: "no subject folders (sub-<label>/) here".into() });
    }
    let mut scan = Scan::default();
    for (subject, subject_dir) in subjects {
        let sessions = list_prefixed(&subject_dir, "ses-")?;
        let session_dirs: Vec<(Option<String>, PathBuf)> =
            if sessions.is_empty() { vec![(None, subject_dir.clone())] } else { sessions.into_iter().map(|(l, p)| (Some(l), p)).collect() };
        for (session, dir) in session_dirs {
            match choose_image(&subject, session.as_deref(), &dir, filters)? {
                Some((path, runs_left_out, has_space)) => {
                    scan.found.push(Found { subject: subject.clone(), session, path, subject_dir: subject_dir.clone(), runs_left_out, has_space })
                }
                None => scan.without_t1w.push(match &session {
                    Some(s) => format!("sub-{subject}/ses-{s}"),
                    None => format!("sub-{subject}"),
                }),
            }
        }
    }
    Ok(scan)
}

/// The session's T1w image after filtering, the number of other runs, and whether it has a
/// `space-` entity; `None` when it has none.
fn choose_image(subject: &str, session: Option<&str>, dir: &Path, filters: &[(String, String)]) -> Result<Option<(PathBuf, usize, bool)>> {
    let mut candidates = Vec::new();
    for folder in ["anat", "t1_linear"] {
        let folder = dir.join(folder);
        if !folder.is_dir() {
            continue;
        }
        for (name, path) in list(&folder)? {
            let Some((entities, suffix)) = parse_name(&name) else { continue };
            if suffix != "T1w" || !path.is_file() {
                continue;
            }
            let bad = |message: String| DataError::Bids { path: path.clone(), message };
            if entity(&entities, "sub") != Some(subject) {
                return Err(bad(format!("the file name's subject is not its folder's (sub-{subject})")));
            }
            if entity(&entities, "ses") != session {
                return Err(bad(format!("the file name's session is not its folder's ({})", session.map_or("none".into(), |s| format!("ses-{s}")))));
            }
            if !filters.iter().all(|(k, v)| entity(&entities, k) == Some(v.as_str())) {
                continue;
            }
            let run = match entity(&entities, "run") {
                None => 0,
                Some(r) => r.parse::<u32>().map_err(|_| bad(format!("run-{r} is not a number")))?,
            };
            candidates.push((run, name, path, entities));
        }
    }
    if candidates.is_empty() {
        return Ok(None);
    }
    let without_run = |e: &[(String, String)]| e.iter().filter(|(k, _)| k != "run").cloned().collect::<Vec<_>>();
    let first = without_run(&candidates[0].3);
    if candidates.iter().any(|c| without_run(&c.3) != first) {
        let names: Vec<&str> = candidates.iter().map(|c| c.1.as_str()).collect();
        return Err(DataError::Bids {
            path: dir.to_owned(),
            message: format!(
                "several T1w images differ in more than their run ({}): choose one kind with --space, --desc or --bids-filter KEY-VALUE",
                names.join(", ")
            ),
        });
    }
    candidates.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let left_out = candidates.len() - 1;
    let (_, _, path, entities) = candidates.swap_remove(0);
    Ok(Some((path, left_out, entity(&entities, "space").is_some())))
}

/// The visit day of every found session (in `found`'s order) and where the days came from.
pub(crate) fn days(found: &[Found], day_column: Option<&str>) -> Result<(Vec<u32>, DaySource)> {
    if let Some(column) = day_column {
        let mut tables: HashMap<PathBuf, TextTable> = HashMap::new();
        let mut days = Vec::with_capacity(found.len());
        for f in found {
            let Some(session) = &f.session else {
                return Err(DataError::Bids { path: f.path.clone(), message: format!("--day-column {column}: this image belongs to no session") });
            };
            let path = sessions_tsv(&f.subject_dir, &f.subject);
            if !tables.contains_key(&path) {
                if !path.is_file() {
                    return Err(DataError::Bids { path, message: format!("--day-column {column} needs this sessions table, which is missing") });
                }
                tables.insert(path.clone(), TextTable::read(&path)?);
            }
            let table = &tables[&path];
            let (line, cells) = session_row(table, session)?.ok_or_else(|| DataError::Bids {
                path: path.clone(),
                message: format!("no row for ses-{session} (needed for its day, --day-column {column})"),
            })?;
            let col = table.column(column)?;
            days.push(parse_day(&cells[col]).ok_or_else(|| table.cell_error(line, col, format!("`{}` is not a day count (a whole number ≥ 0)", cells[col])))?);
        }
        return Ok((days, DaySource::Column(column.to_owned())));
    }
    if found.iter().all(|f| f.session.is_none()) {
        return Ok((vec![0; found.len()], DaySource::NoSessions));
    }
    let from_labels: Option<Vec<u32>> = found.iter().map(|f| f.session.as_deref().and_then(oasis_day)).collect();
    if let Some(days) = from_labels {
        return Ok((days, DaySource::SessionLabel));
    }
    let mut by_subject: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for f in found {
        by_subject.entry(&f.subject).or_default().push(f.session.as_deref().unwrap_or(""));
    }
    for labels in by_subject.values_mut() {
        labels.sort_by(|a, b| natural_cmp(a, b));
    }
    let days = found.iter().map(|f| by_subject[f.subject.as_str()].iter().position(|&l| l == f.session.as_deref().unwrap_or("")).unwrap_or(0) as u32).collect();
    Ok((days, DaySource::Rank))
}

/// `sub-<label>_sessions.tsv` in the subject's folder.
pub(crate) fn sessions_tsv(subject_dir: &Path, subject: &str) -> PathBuf {
    subject_dir.join(format!("sub-{subject}_sessions.tsv"))
}

/// The row of `ses-<session>` in a sessions table (its `session_id` column), if any.
pub(crate) fn session_row<'a>(table: &'a TextTable, session: &str) -> Result<Option<(u64, &'a Vec<String>)>> {
    let id = table.column("session_id")?;
    let wanted = format!("ses-{session}");
    Ok(table.rows.iter().find(|(_, cells)| cells[id] == wanted || cells[id] == session).map(|(line, cells)| (*line, cells)))
}

/// OASIS-3's session label `d0129` → day 129.
pub(crate) fn oasis_day(label: &str) -> Option<u32> {
    let digits = label.strip_prefix('d')?;
    (!digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// A day count in a table: a whole number ≥ 0 (`129`, `129.0`).
pub(crate) fn parse_day(cell: &str) -> Option<u32> {
    if is_missing(cell) {
        return None;
    }
    let value: f64 = cell.parse().ok()?;
    (value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= u32::MAX as f64).then_some(value as u32)
}

/// Natural order: runs of digits compare as numbers (`M6` < `M12`).
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let chunks = |s: &str| {
        let mut out: Vec<(bool, String)> = Vec::new();
        for ch in s.chars() {
            let digit = ch.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(ch),
                _ => out.push((digit, ch.to_string())),
            }
        }
        out
    };
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, ta), (db, tb)) in ca.iter().zip(&cb) {
        let ord = if *da && *db {
            let (na, nb) = (ta.trim_start_matches('0'), tb.trim_start_matches('0'));
            na.len().cmp(&nb.len()).then_with(|| na.cmp(nb))
        } else {
            ta.cmp(tb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_entities_and_suffix() {
        let (e, s) = parse_name("sub-OAS30001_ses-d0129_run-01_T1w.nii.gz").unwrap();
        assert_eq!(s, "T1w");
        assert_eq!(entity(&e, "run"), Some("01"));
        let (e, s) = parse_name("sub-ADNI011S4105_ses-M00_T1w_space-MNI152NLin2009cSym_res-1x1x1_T1w.nii.gz").unwrap();
        assert_eq!((entity(&e, "space"), s.as_str()), (Some("MNI152NLin2009cSym"), "T1w"));
        assert_eq!(parse_name("sub-01_T1w.json"), None);
        assert_eq!(parse_name("sub-01_run-1.nii"), None);
    }

    #[test]
    fn session_labels_and_natural_order() {
        assert_eq!(oasis_day("d0129"), Some(129));
        assert_eq!(oasis_day("M12"), None);
        assert_eq!(oasis_day("d"), None);
        let mut labels = vec!["M12", "M6", "M00", "bl"];
        labels.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(labels, ["M00", "M6", "M12", "bl"]);
        assert_eq!(parse_day("129.0"), Some(129));
        assert_eq!(parse_day("-3"), None);
        assert_eq!(parse_day("12.5"), None);
        assert_eq!(parse_day("n/a"), None);
    }
}
