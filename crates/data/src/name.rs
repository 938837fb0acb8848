//! File-name convention of OASIS_2D: `affined_OAS3<patient>_MR_d<day>.nii[.gz]`.

use std::fmt;
use std::path::Path;

/// An OASIS-3 subject, written `OAS3xxxx` in file names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatientId(String);

impl PatientId {
    /// A patient id is the digits after `OAS3` (for example `0001`); anything else is refused.
    pub fn new(digits: &str) -> Option<Self> {
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(digits.to_owned()))
    }

    /// The digits after `OAS3` (the `Display` form adds the prefix).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits as a number (for integer tensors such as the features file's `patient_id`).
    pub fn number(&self) -> u64 {
        // At most 19 digits fit; OASIS ids have four.
        self.0.parse().unwrap_or(u64::MAX)
    }
}

impl fmt::Display for PatientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OAS3{}", self.0)
    }
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

/// Parses `affined_OAS3<patient>_MR_d<day>.nii[.gz]` into patient and day.
pub fn parse_file_name(file_name: &str) -> Option<(PatientId, u32)> {
    let stem = file_name
        .strip_suffix(".nii.gz")
        .or_else(|| file_name.strip_suffix(".nii"))?;
    let rest = stem.strip_prefix("affined_OAS3")?;
    let (patient, day) = rest.split_once("_MR_d")?;
    if day.is_empty() || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((PatientId::new(patient)?, day.parse().ok()?))
}

/// The file name for a patient's visit, the inverse of [`parse_file_name`].
pub fn file_name(patient: &PatientId, day: u32) -> String {
    format!("affined_OAS3{}_MR_d{:04}.nii.gz", patient.as_str(), day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_names() {
        let (p, d) = parse_file_name("affined_OAS30001_MR_d0129.nii.gz").unwrap();
        assert_eq!(p.as_str(), "0001");
        assert_eq!(p.to_string(), "OAS30001");
        assert_eq!(p.number(), 1);
        assert_eq!(d, 129);
        let (p, d) = parse_file_name("affined_OAS31172_MR_d3946.nii").unwrap();
        assert_eq!((p.as_str(), d), ("1172", 3946));
    }

    #[test]
    fn refuses_other_names() {
        for bad in [
            "affined_OAS30001_MR_d0129.nii.gz.bak",
            "affined_OAS30001_MR_d.nii.gz",
            "affined_OAS3_MR_d0001.nii.gz",
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
    fn file_name_round_trips() {
        let p = PatientId::new("0042").unwrap();
        assert_eq!(file_name(&p, 7), "affined_OAS30042_MR_d0007.nii.gz");
        assert_eq!(parse_file_name(&file_name(&p, 7)), Some((p, 7)));
    }
}
