//! File-name convention of OASIS_2D: `affined_OAS<patient>_MR_d<day>.nii[.gz]`.

use std::fmt;
use std::path::Path;

/// A patient (a subject), identified as the study identifies it: the integer of the file name's
/// first number (`affined_OAS30001_MR_d0129` → 30001, what `re.findall(r'\d+', name)[0]` gives
/// its `dataset.py`). Written `OAS30001` for people, `30001` in files and tables.
///
/// A BIDS subject whose label is not an OASIS id (`sub-ADNI002S0295`, `sub-01a`) is numbered by
/// its rank among the data set's subject labels and carries the label, which is how people see
/// it (`sub-ADNI002S0295`) and how tables join it (the manifest's `participant_id`). Identity
/// is the number alone: a data set never gives one number two labels.
#[derive(Debug, Clone, Copy)]
pub struct PatientId {
    number: u64,
    subject: Option<&'static str>,
}

impl PartialEq for PatientId {
    fn eq(&self, other: &Self) -> bool {
        self.number == other.number
    }
}
impl Eq for PatientId {}
impl std::hash::Hash for PatientId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.number.hash(state);
    }
}
impl PartialOrd for PatientId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PatientId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.number.cmp(&other.number)
    }
}

impl PatientId {
    pub fn new(number: u64) -> Self {
        Self { number, subject: None }
    }

    /// A numbered BIDS subject that carries its label (without `sub-`).
    pub fn with_subject(number: u64, label: &str) -> Self {
        Self { number, subject: Some(intern(label)) }
    }

    /// Parses `OAS30001` or `30001`; anything else is refused.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("OAS").unwrap_or(text);
        if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(Self::new)
    }

    /// The study's integer id (features files, manifests, tables).
    pub fn number(self) -> u64 {
        self.number
    }

    /// The BIDS subject label of a subject numbered by rank (without `sub-`).
    pub fn subject(self) -> Option<&'static str> {
        self.subject
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subject {
            Some(label) => write!(f, "sub-{label}"),
            None => write!(f, "OAS{}", self.number),
        }
    }
}

/// Subject labels live as long as the process: there are as many as a cohort has subjects.
fn intern(label: &str) -> &'static str {
    static LABELS: std::sync::Mutex<std::collections::BTreeSet<&'static str>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut labels = LABELS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&known) = labels.get(label) {
        return known;
    }
    let leaked: &'static str = Box::leak(label.to_owned().into_boxed_str());
    labels.insert(leaked);
    leaked
}

/// The two classes of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    Healthy = 0,
    Disease = 1,
}

impl Label {
    pub const ALL: [Label; 2] = [Label::Healthy, Label::Disease];

    /// The class index used by the models (`healthy` = 0, `disease` = 1).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(index: usize) -> Option<Self> {
        match index {
            0 => Some(Label::Healthy),
            1 => Some(Label::Disease),
            _ => None,
        }
    }

    /// The folder that holds this class's images.
    pub fn folder(self) -> &'static str {
        match self {
            Label::Healthy => "healthy",
            Label::Disease => "disease",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

/// Whether a path looks like a NIfTI image (`.nii` or `.nii.gz`).
pub fn is_nifti(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// Parses `affined_OAS<patient>_MR_d<day>.nii[.gz]` into patient and day (OASIS-3 ids start
/// with 3: `affined_OAS30001_MR_d0129`).
pub fn parse_file_name(file_name: &str) -> Option<(PatientId, u32)> {
    let stem = file_name.strip_suffix(".nii.gz").or_else(|| file_name.strip_suffix(".nii"))?;
    let rest = stem.strip_prefix("affined_OAS")?;
    let (patient, day) = rest.split_once("_MR_d")?;
    if day.is_empty() || day.len() > 9 || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((PatientId::parse(patient)?, day.parse().ok()?))
}

/// The file name for a patient's visit, the inverse of [`parse_file_name`].
pub fn file_name(patient: &PatientId, day: u32) -> String {
    format!("affined_OAS{}_MR_d{:04}.nii.gz", patient.number(), day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_names() {
        // The study's ids: the integer of the first number in the name.
        let (p, d) = parse_file_name("affined_OAS30001_MR_d0129.nii.gz").unwrap();
        assert_eq!(p.number(), 30001);
        assert_eq!(p.to_string(), "OAS30001");
        assert_eq!(d, 129);
        let (p, d) = parse_file_name("affined_OAS31172_MR_d3946.nii").unwrap();
        assert_eq!((p.number(), d), (31172, 3946));
    }

    #[test]
    fn refuses_other_names() {
        for bad in [
            "affined_OAS30001_MR_d0129.nii.gz.bak",
            "affined_OAS30001_MR_d.nii.gz",
            "affined_OAS_MR_d0001.nii.gz",
            "affined_OAS3x001_MR_d0001.nii.gz",
            "OAS30001_MR_d0129.nii.gz",
            "affined_OAS30001_CT_d0129.nii.gz",
            "affined_OAS30001_MR_d01a9.nii.gz",
            "affined_OAS30001_MR_d0129.img",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn patient_ids_parse_with_or_without_prefix() {
        assert_eq!(PatientId::parse("OAS30001"), Some(PatientId::new(30001)));
        assert_eq!(PatientId::parse("30001"), Some(PatientId::new(30001)));
        for bad in ["", "OAS", "OAS3x", "-1", "3000 1", "1234567890123456789"] {
            assert_eq!(PatientId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn file_name_round_trips() {
        let p = PatientId::new(30042);
        assert_eq!(file_name(&p, 7), "affined_OAS30042_MR_d0007.nii.gz");
        assert_eq!(parse_file_name(&file_name(&p, 7)), Some((p, 7)));
    }
}
