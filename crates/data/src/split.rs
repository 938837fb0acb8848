//! Patient-level splits stratified by label: a train/test split and K folds.
//!
//! Patients are shuffled within each class by a ChaCha8 generator seeded with the caller's `u64`,
//! so a seed gives the same split on every machine and every build.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::name::{Label, PatientId};

/// Which side of a split an image or patient is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Train,
    Test,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Train => "train",
            Side::Test => "test",
        }
    }
}

/// Two disjoint sets of patients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: BTreeSet<PatientId>,
    pub test: BTreeSet<PatientId>,
}

impl Split {
    pub fn side_of(&self, patient: &PatientId) -> Option<Side> {
        if self.test.contains(patient) {
            Some(Side::Test)
        } else if self.train.contains(patient) {
            Some(Side::Train)
        } else {
            None
        }
    }

    /// Indices of the data set's records on `side`.
    pub fn indices(&self, dataset: &Dataset, side: Side) -> Vec<usize> {
        let set = match side {
            Side::Train => &self.train,
            Side::Test => &self.test,
        };
        (0..dataset.len()).filter(|&i| set.contains(&dataset.records()[i].patient)).collect()
    }
}

/// Splits patients so that about `test_fraction` of each class's patients are tested.
///
/// Each class contributes `round(test_fraction · n)` patients to the test side, clamped to
/// 1..=n−1 so that both sides see both classes; a class with fewer than two patients is an error.
pub fn train_test_split(patients: &BTreeMap<PatientId, Label>, test_fraction: f64, seed: u64) -> Result<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::InvalidArgument(format!("test fraction must lie strictly between 0 and 1, got {test_fraction}")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = Split { train: BTreeSet::new(), test: BTreeSet::new() };
    for (label, mut members) in by_label(patients, 2)? {
        members.shuffle(&mut rng);
        let n = members.len();
        let n_test = ((test_fraction * n as f64).round() as usize).clamp(1, n - 1);
        tracing::debug!(%label, n, n_test, "stratified split");
        split.test.extend(members.drain(..n_test));
        split.train.extend(members);
    }
    Ok(split)
}

/// Splits patients into `k` folds, each class spread evenly over the folds; fold `i`'s test side
/// is its own patients, its train side all others. Every fold's test side holds both classes.
pub fn stratified_k_fold(patients: &BTreeMap<PatientId, Label>, k: usize, seed: u64) -> Result<Vec<Split>> {
    if k < 2 {
        return Err(DataError::InvalidArgument(format!("K-fold needs k ≥ 2, got {k}")));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut folds: Vec<BTreeSet<PatientId>> = vec![BTreeSet::new(); k];
    // One counter across classes keeps fold sizes within one of each other.
    let mut next = 0;
    for (_, mut members) in by_label(patients, k)? {
        members.shuffle(&mut rng);
        for patient in members {
            folds[next % k].insert(patient);
            next += 1;
        }
    }
    let all: BTreeSet<PatientId> = patients.keys().cloned().collect();
    Ok(folds.into_iter().map(|test| Split { train: all.difference(&test).cloned().collect(), test }).collect())
}

/// Patients grouped by label (in id order), each class required to have `min` patients.
fn by_label(patients: &BTreeMap<PatientId, Label>, min: usize) -> Result<Vec<(Label, Vec<PatientId>)>> {
    Label::ALL
        .iter()
        .map(|&label| {
            let members: Vec<PatientId> = patients.iter().filter(|(_, &l)| l == label).map(|(p, _)| *p).collect();
            if members.len() < min {
                return Err(DataError::Split(format!(
                    "class {label} has {} patient(s); at least {min} are needed so that every side holds both classes",
                    members.len()
                )));
            }
            Ok((label, members))
        })
        .collect()
}
