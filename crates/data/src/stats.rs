//! Counts a reader checks first: images and patients per class, visits, history lengths.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::dataset::Dataset;
use crate::name::Label;

/// Image and patient counts of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCounts {
    pub images: usize,
    pub patients: usize,
}

/// Summary statistics of a data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub images: usize,
    pub patients: usize,
    pub healthy: ClassCounts,
    pub disease: ClassCounts,
    /// Patients found in both class folders (on different days).
    pub patients_in_both: usize,
    /// Number of patients by their number of visits.
    pub visits_per_patient: BTreeMap<usize, usize>,
    /// Number of images by history length (visits up to and including the image).
    pub history_len: BTreeMap<usize, usize>,
}

impl Stats {
    pub fn of(dataset: &Dataset) -> Self {
        let mut per_label: BTreeMap<Label, (usize, BTreeSet<_>)> = BTreeMap::new();
        let mut visits: BTreeMap<_, usize> = BTreeMap::new();
        let mut history_len = BTreeMap::new();
        for r in dataset.records() {
            let entry = per_label.entry(r.label).or_default();
            entry.0 += 1;
            entry.1.insert(r.patient);
            *visits.entry(r.patient).or_default() += 1;
            *history_len.entry(r.history_len).or_default() += 1;
        }
        let counts = |label| {
            per_label
                .get(&label)
                .map(|(images, patients)| ClassCounts { images: *images, patients: patients.len() })
                .unwrap_or_default()
        };
        let patients_in_both = match (per_label.get(&Label::Healthy), per_label.get(&Label::Disease)) {
            (Some((_, h)), Some((_, d))) => h.intersection(d).count(),
            _ => 0,
        };
        let mut visits_per_patient = BTreeMap::new();
        for n in visits.values() {
            *visits_per_patient.entry(*n).or_default() += 1;
        }
        Self {
            images: dataset.len(),
            patients: visits.len(),
            healthy: counts(Label::Healthy),
            disease: counts(Label::Disease),
            patients_in_both,
            visits_per_patient,
            history_len,
        }
    }

    /// Patients with exactly one visit.
    pub fn single_visit_patients(&self) -> usize {
        self.visits_per_patient.get(&1).copied().unwrap_or(0)
    }

    /// The largest number of visits of one patient.
    pub fn max_visits(&self) -> usize {
        self.visits_per_patient.keys().next_back().copied().unwrap_or(0)
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<10} {:>7} {:>9}", "class", "images", "patients")?;
        writeln!(f, "{:<10} {:>7} {:>9}", "disease", self.disease.images, self.disease.patients)?;
        writeln!(f, "{:<10} {:>7} {:>9}", "healthy", self.healthy.images, self.healthy.patients)?;
        writeln!(f, "{:<10} {:>7} {:>9}", "total", self.images, self.patients)?;
        if self.patients_in_both > 0 {
            writeln!(f, "patients in both classes: {}", self.patients_in_both)?;
        }
        writeln!(
            f,
            "patients with a single visit: {}; most visits of one patient: {}",
            self.single_visit_patients(),
            self.max_visits()
        )?;
        writeln!(f, "\n{:<12} {:>9}", "visits", "patients")?;
        for (n, count) in &self.visits_per_patient {
            writeln!(f, "{n:<12} {count:>9}")?;
        }
        writeln!(f, "\n{:<12} {:>9}", "history len", "images")?;
        for (n, count) in &self.history_len {
            writeln!(f, "{n:<12} {count:>9}")?;
        }
        Ok(())
    }
}
