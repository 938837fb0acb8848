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
    /// Number of images by (label, history length): the visit-count confound at a glance.
    pub history_len_by_label: BTreeMap<(Label, usize), usize>,
    /// Images the earlier-visit rule (healthy iff the patient has an earlier visit) gets right.
    pub earlier_visit_rule_correct: usize,
}

impl Stats {
    pub fn of(dataset: &Dataset) -> Self {
        let mut per_label: BTreeMap<Label, (usize, BTreeSet<_>)> = BTreeMap::new();
        let mut visits: BTreeMap<_, usize> = BTreeMap::new();
        let mut history_len = BTreeMap::new();
        let mut history_len_by_label = BTreeMap::new();
        let mut earlier_visit_rule_correct = 0;
        for r in dataset.records() {
            *history_len_by_label.entry((r.label, r.history_len)).or_default() += 1;
            let predicted = if r.history_len > 1 { Label::Healthy } else { Label::Disease };
            earlier_visit_rule_correct += usize::from(predicted == r.label);
            let entry = per_label.entry(r.label).or_default();
            entry.0 += 1;
            entry.1.insert(r.patient);
            *visits.entry(r.patient).or_default() += 1;
            *history_len.entry(r.history_len).or_default() += 1;
        }
        let counts = |label| per_label.get(&label).map(|(images, patients)| ClassCounts { images: *images, patients: patients.len() }).unwrap_or_default();
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
            history_len_by_label,
            earlier_visit_rule_correct,
        }
    }

    /// Accuracy over all images of the rule "healthy iff the patient has an earlier visit",
    /// which uses no image at all.
    pub fn earlier_visit_rule_accuracy(&self) -> f64 {
        if self.images == 0 {
            return f64::NAN;
        }
        self.earlier_visit_rule_correct as f64 / self.images as f64
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
        writeln!(f, "patients with a single visit: {}; most visits of one patient: {}", self.single_visit_patients(), self.max_visits())?;
        writeln!(f, "\n{:<12} {:>9}", "visits", "patients")?;
        for (n, count) in &self.visits_per_patient {
            writeln!(f, "{n:<12} {count:>9}")?;
        }
        writeln!(f, "\n{:<12} {:>9} {:>9} {:>9}", "history len", "images", "disease", "healthy")?;
        for (n, count) in &self.history_len {
            let of = |label| self.history_len_by_label.get(&(label, *n)).copied().unwrap_or(0);
            writeln!(f, "{n:<12} {count:>9} {:>9} {:>9}", of(Label::Disease), of(Label::Healthy))?;
        }
        writeln!(
            f,
            "\nvisit-count confound: the rule \"healthy iff the patient has an earlier visit\" (no image used) \
             is right for {} of {} images (accuracy {:.2}); a temporal model can learn it from the zero padding",
            self.earlier_visit_rule_correct,
            self.images,
            self.earlier_visit_rule_accuracy()
        )?;
        Ok(())
    }
}
