//! Scanning an OASIS_2D folder into records (file, patient, day, label).
//!
//! What is an error and what is skipped: a file whose name ends in `.nii`/`.nii.gz` but does not
//! follow the naming convention is an error (it is almost certainly meant to be data); any other
//! file (a README, `.DS_Store`, a mask folder) is skipped with a warning. Image contents are read
//! by [`Dataset::load_image`] / [`Dataset::validate`], so scanning stays cheap.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::image::{read_nifti, Image};
use crate::name::{is_nifti, parse_file_name, Label, PatientId};

/// One image of the data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub path: PathBuf,
    pub patient: PatientId,
    pub day: u32,
    pub label: Label,
    /// Number of this patient's visits with day ≤ this day (this one included).
    pub history_len: usize,
}

/// The images of one data folder, sorted by (patient, day).
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    records: Vec<Record>,
}

impl Dataset {
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
    pub fn from_entries(root: &Path, mut entries: Vec<(PathBuf, PatientId, u32, Label)>) -> Result<Self> {
        entries.sort_by(|a, b| (&a.1, a.2, &a.0).cmp(&(&b.1, b.2, &b.0)));
        for pair in entries.windows(2) {
            if pair[0].1 == pair[1].1 && pair[0].2 == pair[1].2 {
                return Err(DataError::Duplicate {
                    what: format!("patient {} day {}", pair[0].1, pair[0].2),
                    first: pair[0].0.clone(),
                    second: pair[1].0.clone(),
                });
            }
        }
        let mut visits_so_far: HashMap<PatientId, usize> = HashMap::new();
        let records = entries
            .into_iter()
            .map(|(path, patient, day, label)| {
                let count = visits_so_far.entry(patient).or_default();
                *count += 1;
                Record { path, day, label, history_len: *count, patient }
            })
            .collect();
        Ok(Self { root: root.to_owned(), records })
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

    /// Reads the image of record `index`.
    pub fn load_image(&self, index: usize) -> Result<Image> {
        let record = self.records.get(index).ok_or_else(|| DataError::InvalidArgument(format!("record {index} out of range ({} records)", self.len())))?;
        read_nifti(&record.path)
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
