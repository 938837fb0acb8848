//! A data set's records (image, patient, day, label), from either source layout: an OASIS_2D
//! folder (`disease/`, `healthy/`) or a BIDS dataset of 3-D scans (see `bids.rs`, `labels.rs`),
//! whose images are cut to one slice ([`SliceSpec`]) when read. No step downstream knows which
//! layout its records came from.
//!
//! What is an error and what is skipped: a file whose name ends in `.nii`/`.nii.gz` but does not
//! follow the naming convention is an error (it is almost certainly meant to be data); any other
//! file (a README, `.DS_Store`, a mask folder) is skipped with a warning. Image contents are read
//! by [`Dataset::load_image`] / [`Dataset::validate`], so scanning stays cheap.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::bids::{self, DaySource};
use crate::error::{DataError, Result};
use crate::image::{read_nifti, Image};
use crate::labels::{label_sessions, LabelSpec, Outcome, SessionKey, VisitMatch};
use crate::name::{is_nifti, parse_file_name, Label, PatientId};
use crate::orient::{read_slice, SliceSpec};

/// One image of the data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub path: PathBuf,
    pub patient: PatientId,
    pub day: u32,
    pub label: Label,
    /// Number of this patient's visits with day ≤ this day (this one included).
    pub history_len: usize,
    /// The BIDS session the image belongs to (`None` for OASIS_2D).
    pub session: Option<BidsSession>,
}

/// A BIDS subject and session label (without `sub-`/`ses-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidsSession {
    pub subject: String,
    pub session: Option<String>,
}

impl BidsSession {
    /// `sub-X/ses-Y` (or `sub-X`): the derivative folder of the session's outputs.
    pub fn folder(&self) -> PathBuf {
        let mut path = PathBuf::from(format!("sub-{}", self.subject));
        if let Some(s) = &self.session {
            path.push(format!("ses-{s}"));
        }
        path
    }

    /// `sub-X_ses-Y` (or `sub-X`): the start of the session's output file names.
    pub fn prefix(&self) -> String {
        match &self.session {
            Some(s) => format!("sub-{}_ses-{s}", self.subject),
            None => format!("sub-{}", self.subject),
        }
    }
}

/// The two source layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Oasis2d,
    Bids,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Oasis2d => "oasis2d",
            Layout::Bids => "bids",
        }
    }
}

/// How to read a data folder: its layout (detected when `None`), the slice 3-D scans are cut
/// to, and for BIDS the entity filters, the day column and the label tables.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub layout: Option<Layout>,
    pub slice: Option<SliceSpec>,
    /// `(key, value)` entities every BIDS image must carry (`space`, `desc`, …).
    pub filters: Vec<(String, String)>,
    /// The `sessions.tsv` column holding each session's day.
    pub day_column: Option<String>,
    pub labels: Vec<LabelSpec>,
    pub visit_match: VisitMatch,
}

/// What reading a BIDS data set left out, and how its days were found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceReport {
    /// Sessions skipped, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// T1w runs present but not used (a session's other runs).
    pub runs_left_out: usize,
    pub day_source: Option<DaySource>,
    /// Sessions whose image carries no `space-` entity (not registered to a template).
    pub unregistered: usize,
    /// Subjects numbered by rank (their labels are not OASIS ids).
    pub subjects_by_rank: bool,
}

impl std::fmt::Display for SourceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(days) = &self.day_source {
            writeln!(f, "visit days: {days}")?;
        }
        if self.subjects_by_rank {
            writeln!(f, "patient ids: subjects numbered by rank of their label (not OASIS ids); outputs name them sub-<label>")?;
        }
        let skipped: usize = self.skipped.values().sum();
        writeln!(f, "sessions skipped: {skipped}")?;
        for (why, n) in &self.skipped {
            writeln!(f, "  {n:>5}  {why}")?;
        }
        writeln!(f, "T1w runs left out (a session's other runs; the lowest run- is used): {}", self.runs_left_out)?;
        if self.unregistered > 0 {
            writeln!(f, "images with no space- entity (not registered; tgc does not register scans): {}", self.unregistered)?;
        }
        Ok(())
    }
}

/// The images of one data folder, sorted by (patient, day).
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    records: Vec<Record>,
    layout: Layout,
    slice: Option<SliceSpec>,
    report: SourceReport,
}

impl Dataset {
    /// Opens a data folder of either layout (see [`SourceOptions`]).
    pub fn open_with(root: &Path, options: &SourceOptions) -> Result<Self> {
        if !root.is_dir() {
            return Err(DataError::MissingFolder(root.to_owned()));
        }
        let layout = options.layout.unwrap_or(if bids::looks_like_bids(root) { Layout::Bids } else { Layout::Oasis2d });
        let mut dataset = match layout {
            Layout::Oasis2d => {
                if !options.labels.is_empty() || !options.filters.is_empty() || options.day_column.is_some() {
                    return Err(DataError::InvalidArgument(format!(
                        "{} is an OASIS_2D folder (labels come from disease/ and healthy/): --labels, --space, --desc, --bids-filter and --day-column are for BIDS data sets",
                        root.display()
                    )));
                }
                Self::open(root)?
            }
            Layout::Bids => Self::open_bids(root, options)?,
        };
        dataset.slice = options.slice;
        Ok(dataset)
    }

    fn open_bids(root: &Path, options: &SourceOptions) -> Result<Self> {
        if options.labels.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "{} is a BIDS data set: name its labels with --labels (e.g. --labels participants:group=patient/control, --labels sessions:diagnosis=AD/CN, --labels clinical.csv:CDRTOT>0)",
                root.display()
            )));
        }
        let scan = bids::scan(root, &options.filters)?;
        let (days, day_source) = bids::days(&scan.found, options.day_column.as_deref())?;
        let keys: Vec<SessionKey> = scan
            .found
            .iter()
            .zip(&days)
            .map(|(f, &day)| SessionKey { subject: &f.subject, session: f.session.as_deref(), subject_dir: &f.subject_dir, day })
            .collect();
        let days_are_real = matches!(day_source, DaySource::SessionLabel | DaySource::Column(_));
        let outcomes = label_sessions(root, &keys, &options.labels, &options.visit_match, days_are_real)?;
        let mut report = SourceReport { day_source: Some(day_source), ..Default::default() };
        for s in &scan.without_t1w {
            tracing::debug!(session = %s, "skipping: no T1w image");
            *report.skipped.entry("no T1w image".to_owned()).or_default() += 1;
        }
        // Patient ids: the study's integers when every subject label is an OASIS id, else ranks.
        let mut subjects: Vec<&str> = scan.found.iter().map(|f| f.subject.as_str()).collect();
        subjects.dedup();
        let numbers: Option<Vec<u64>> = subjects.iter().map(|s| PatientId::parse(s).map(PatientId::number)).collect();
        let distinct = numbers.as_ref().is_some_and(|n| {
            let mut sorted = n.clone();
            sorted.sort_unstable();
            sorted.windows(2).all(|w| w[0] != w[1])
        });
        report.subjects_by_rank = !distinct;
        let ids: HashMap<&str, PatientId> = subjects
            .iter()
            .enumerate()
            .map(|(rank, s)| (*s, if distinct { PatientId::parse(s).expect("checked above") } else { PatientId::with_subject(rank as u64 + 1, s) }))
            .collect();
        let mut entries = Vec::new();
        for ((found, day), outcome) in scan.found.iter().zip(days).zip(outcomes) {
            let label = match outcome {
                Outcome::Labelled(label) => label,
                Outcome::Unlabelled(reason) => {
                    tracing::debug!(image = %found.path.display(), %reason, "skipping: no label");
                    *report.skipped.entry(format!("no label ({reason})")).or_default() += 1;
                    continue;
                }
            };
            report.runs_left_out += found.runs_left_out;
            report.unregistered += usize::from(!found.has_space);
            let session = BidsSession { subject: found.subject.clone(), session: found.session.clone() };
            entries.push(Entry { path: found.path.clone(), patient: ids[found.subject.as_str()], day, label, session: Some(session) });
        }
        if entries.is_empty() {
            return Err(DataError::Bids { path: root.to_owned(), message: format!("no labelled session with a T1w image (skipped: {:?})", report.skipped) });
        }
        if report.unregistered > 0 {
            tracing::warn!(
                "{} of {} images carry no space- entity: tgc does not register scans, and a slice index is the same anatomy across subjects only after registration (use a derivative such as Clinica's t1-linear or fMRIPrep's, with --space)",
                report.unregistered,
                entries.len()
            );
        }
        let mut dataset = Self::build(root, entries)?;
        dataset.layout = Layout::Bids;
        dataset.report = report;
        Ok(dataset)
    }

    /// Scans `root/disease` and `root/healthy`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(DataError::MissingFolder(root.to_owned()));
        }
        let mut found = Vec::new();
        for label in Label::ALL {
            let folder = root.join(label.folder());
            if !folder.is_dir() {
                return Err(DataError::MissingClassFolder { path: folder });
            }
            let before = found.len();
            scan_class_folder(&folder, label, &mut found)?;
            if found.len() == before {
                return Err(DataError::EmptyClassFolder { path: folder });
            }
        }
        Self::from_entries(root, found)
    }

    /// Builds a data set from (path, patient, day, label) entries, checking that no
    /// (patient, day) appears twice and filling in history lengths.
    pub fn from_entries(root: &Path, entries: Vec<(PathBuf, PatientId, u32, Label)>) -> Result<Self> {
        Self::build(root, entries.into_iter().map(|(path, patient, day, label)| Entry { path, patient, day, label, session: None }).collect())
    }

    fn build(root: &Path, mut entries: Vec<Entry>) -> Result<Self> {
        entries.sort_by(|a, b| (&a.patient, a.day, &a.path).cmp(&(&b.patient, b.day, &b.path)));
        for pair in entries.windows(2) {
            if pair[0].patient == pair[1].patient && pair[0].day == pair[1].day {
                return Err(DataError::Duplicate {
                    what: format!("patient {} day {}", pair[0].patient, pair[0].day),
                    first: pair[0].path.clone(),
                    second: pair[1].path.clone(),
                });
            }
        }
        let mut visits_so_far: HashMap<PatientId, usize> = HashMap::new();
        let records = entries
            .into_iter()
            .map(|Entry { path, patient, day, label, session }| {
                let count = visits_so_far.entry(patient).or_default();
                *count += 1;
                Record { path, day, label, history_len: *count, patient, session }
            })
            .collect();
        Ok(Self { root: root.to_owned(), records, layout: Layout::Oasis2d, slice: None, report: SourceReport::default() })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The slice 3-D scans are cut to, if any.
    pub fn slice(&self) -> Option<SliceSpec> {
        self.slice
    }

    /// What reading a BIDS data set left out (empty for OASIS_2D).
    pub fn report(&self) -> &SourceReport {
        &self.report
    }

    /// How images are read, for cache keys and metadata: `None` for OASIS_2D's 2-D slices;
    /// the slice and its layout convention for cut scans.
    pub fn reader_key(&self) -> Option<String> {
        self.slice.map(|s| format!("slice={s};layout={}", crate::orient::SLICE_LAYOUT))
    }

    /// The patient a `--patient` argument names: `OAS30001`, `30001` or `sub-<label>`.
    pub fn find_patient(&self, text: &str) -> Option<PatientId> {
        let wanted = PatientId::parse(text);
        let label = text.strip_prefix("sub-");
        self.records.iter().map(|r| r.patient).find(|p| match (p.subject(), label) {
            (Some(have), Some(l)) => have == l,
            (Some(have), None) => have == text || wanted == Some(*p),
            (None, _) => wanted == Some(*p) || label.and_then(PatientId::parse) == Some(*p),
        })
    }

    /// Keeps only the participants `labels` names (BIDS-Apps' `--participant-label`: a subject
    /// label with or without `sub-`, or an OASIS id as `OAS30001` or `30001`); an error names a
    /// label that matches no participant.
    pub fn retain_participants(&mut self, labels: &[String]) -> Result<()> {
        let mut keep = Vec::new();
        for label in labels {
            let patient = self
                .find_patient(label)
                .ok_or_else(|| DataError::InvalidArgument(format!("--participant-label {label}: no such participant in {}", self.root.display())))?;
            keep.push(patient);
        }
        self.records.retain(|r| keep.contains(&r.patient));
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Reads the image of record `index`: the 2-D slice, or the slice cut from the 3-D scan.
    pub fn load_image(&self, index: usize) -> Result<Image> {
        let record = self.record(index)?;
        match (self.slice, self.layout) {
            (Some(spec), _) => read_slice(&record.path, spec),
            (None, Layout::Bids) => Err(DataError::InvalidArgument(format!(
                "{} is a BIDS data set of 3-D scans: choose the slice the 2-D models see with --slice axial|coronal|sagittal:<index|mid>",
                self.root.display()
            ))),
            (None, Layout::Oasis2d) => read_nifti(&record.path),
        }
    }

    fn record(&self, index: usize) -> Result<&Record> {
        self.records.get(index).ok_or_else(|| DataError::InvalidArgument(format!("record {index} out of range ({} records)", self.len())))
    }

    /// Reads every image once and returns the distinct image sizes found (height, width).
    pub fn validate(&self) -> Result<Vec<(usize, usize)>> {
        let mut sizes = Vec::new();
        for index in 0..self.len() {
            let image = self.load_image(index)?;
            let size = (image.height(), image.width());
            if !sizes.contains(&size) {
                sizes.push(size);
            }
        }
        Ok(sizes)
    }

    /// Each patient with the label used for stratification: the label of the latest visit.
    pub fn patients(&self) -> BTreeMap<PatientId, Label> {
        // Records are sorted by (patient, day), so the last insert per patient wins.
        self.records.iter().map(|r| (r.patient, r.label)).collect()
    }

    /// Indices of the records of one patient, in ascending day order.
    pub fn visits_of(&self, patient: &PatientId) -> Vec<usize> {
        (0..self.len()).filter(|&i| &self.records[i].patient == patient).collect()
    }
}

/// A record before history lengths are known.
struct Entry {
    path: PathBuf,
    patient: PatientId,
    day: u32,
    label: Label,
    session: Option<BidsSession>,
}

fn scan_class_folder(folder: &Path, label: Label, found: &mut Vec<(PathBuf, PatientId, u32, Label)>) -> Result<()> {
    let read_err = |e: std::io::Error| DataError::Read { path: folder.to_owned(), message: e.to_string() };
    let mut paths: Vec<PathBuf> =
        std::fs::read_dir(folder).map_err(read_err)?.map(|entry| entry.map(|e| e.path())).collect::<std::io::Result<_>>().map_err(read_err)?;
    paths.sort();
    for path in paths {
        if !path.is_file() || !is_nifti(&path) {
            tracing::warn!(path = %path.display(), "skipping: not a NIfTI file");
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (patient, day) = parse_file_name(&name).ok_or_else(|| DataError::BadFileName { path: path.clone() })?;
        found.push((path, patient, day, label));
    }
    Ok(())
}
