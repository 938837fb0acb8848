//! How a model does on its test split, beyond one accuracy: per image and per patient,
//! stratified by visit history (the visit-count confound), with patient-level bootstrap
//! confidence intervals.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::metrics::{evaluate, roc_auc, Metrics};

/// Which unit the headline table counts: every test image, or each test patient once (at the
/// last visit) so that patients with many visits do not dominate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EvalUnit {
    #[default]
    Image,
    Patient,
}

impl std::str::FromStr for EvalUnit {
    type Err = crate::error::TrainError;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "image" => Ok(Self::Image),
            "patient" => Ok(Self::Patient),
            other => Err(crate::error::TrainError::Invalid(format!("unknown evaluation unit `{other}` (image or patient)"))),
        }
    }
}

impl std::fmt::Display for EvalUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Image => "image",
            Self::Patient => "patient",
        })
    }
}

/// The test rows of one model: logits and what each image is.
#[derive(Debug, Clone, Default)]
pub struct TestRows {
    pub logits: Vec<[f32; 2]>,
    pub labels: Vec<u8>,
    /// The study's integer patient id of each row.
    pub patients: Vec<u64>,
    pub days: Vec<i64>,
    /// The patient's visits before this one.
    pub earlier_visits: Vec<usize>,
}

impl TestRows {
    fn subset(&self, keep: &[usize]) -> (Vec<[f32; 2]>, Vec<u8>) {
        (keep.iter().map(|&i| self.logits[i]).collect(), keep.iter().map(|&i| self.labels[i]).collect())
    }
}

/// Metrics of a subset of the test images, with its class counts: a stratum with one class has
/// no AUC (`metrics.auc` is `None`), and reports say so.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stratum {
    pub healthy: usize,
    pub disease: usize,
    pub metrics: Metrics,
}

impl Stratum {
    fn of(rows: &TestRows, keep: &[usize]) -> Self {
        let (logits, labels) = rows.subset(keep);
        let disease = labels.iter().filter(|&&y| y == 1).count();
        Self { healthy: labels.len() - disease, disease, metrics: evaluate(&logits, &labels) }
    }

    /// Whether both classes are present (otherwise the AUC is undefined).
    pub fn both_classes(&self) -> bool {
        self.healthy > 0 && self.disease > 0
    }
}

/// A 95 % percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// Settings of the patient-level bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BootstrapConfig {
    pub draws: usize,
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self { draws: 1000, seed: 0 }
    }
}

/// Accuracy and AUC intervals from resampling test **patients** with replacement (all images
/// of a drawn patient come along), so that patients with many visits do not count as
/// independent evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bootstrap {
    pub draws: usize,
    pub accuracy: Option<Interval>,
    /// Over the draws that hold both classes; `None` if fewer than half do.
    pub auc: Option<Interval>,
}

/// Everything reported about one model's test split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Every test image.
    pub image: Metrics,
    /// Each test patient once, at the last visit.
    pub patient: Metrics,
    /// Test images whose patient has no earlier visit.
    pub no_history: Stratum,
    /// Test images whose patient has at least one earlier visit.
    pub with_history: Stratum,
    /// Intervals of the image-level accuracy and AUC.
    pub bootstrap: Bootstrap,
}

/// Evaluates a model's test rows.
pub fn evaluate_test(rows: &TestRows, bootstrap: BootstrapConfig) -> Evaluation {
    let all: Vec<usize> = (0..rows.labels.len()).collect();
    let (logits, labels) = rows.subset(&all);
    let last: Vec<usize> = all.iter().copied().filter(|&i| !all.iter().any(|&j| rows.patients[j] == rows.patients[i] && rows.days[j] > rows.days[i])).collect();
    let (pl, py) = rows.subset(&last);
    let none: Vec<usize> = all.iter().copied().filter(|&i| rows.earlier_visits[i] == 0).collect();
    let some: Vec<usize> = all.iter().copied().filter(|&i| rows.earlier_visits[i] > 0).collect();
    Evaluation {
        image: evaluate(&logits, &labels),
        patient: evaluate(&pl, &py),
        no_history: Stratum::of(rows, &none),
        with_history: Stratum::of(rows, &some),
        bootstrap: patient_bootstrap(rows, bootstrap),
    }
}

/// The patient-level bootstrap of accuracy and AUC (see [`Bootstrap`]).
pub fn patient_bootstrap(rows: &TestRows, config: BootstrapConfig) -> Bootstrap {
    let mut patients: Vec<u64> = rows.patients.clone();
    patients.sort_unstable();
    patients.dedup();
    let rows_of: Vec<Vec<usize>> = patients.iter().map(|p| (0..rows.patients.len()).filter(|&i| rows.patients[i] == *p).collect()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let (mut accuracies, mut aucs) = (Vec::with_capacity(config.draws), Vec::with_capacity(config.draws));
    if !patients.is_empty() {
        for _ in 0..config.draws {
            let mut keep = Vec::new();
            for _ in 0..patients.len() {
                keep.extend_from_slice(&rows_of[rng.random_range(0..patients.len())]);
            }
            let (logits, labels) = rows.subset(&keep);
            let correct = logits.iter().zip(&labels).filter(|(l, &y)| u8::from(l[1] > l[0]) == y).count();
            accuracies.push(correct as f64 / labels.len() as f64);
            let scores: Vec<f64> = logits.iter().map(|l| (l[1] - l[0]) as f64).collect();
            if let Some(a) = roc_auc(&scores, &labels) {
                aucs.push(a);
            }
        }
    }
    Bootstrap { draws: config.draws, accuracy: interval(&mut accuracies), auc: if aucs.len() * 2 >= config.draws.max(1) { interval(&mut aucs) } else { None } }
}

/// The 2.5th and 97.5th percentiles (NumPy's default linear interpolation).
fn interval(values: &mut [f64]) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        let pos = q * (values.len() - 1) as f64;
        let (i, f) = (pos.floor() as usize, pos - pos.floor());
        values[i] + f * (values[(i + 1).min(values.len() - 1)] - values[i])
    };
    Some(Interval { lo: at(0.025), hi: at(0.975) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits that predict `class` (score ±1).
    fn predict(class: u8) -> [f32; 2] {
        if class == 1 {
            [0.0, 1.0]
        } else {
            [1.0, 0.0]
        }
    }

    #[test]
    fn the_bootstrap_resamples_patients_not_images() {
        // Patient 1: nine healthy images, all right. Patient 2: one healthy image, wrong.
        // Image accuracy 0.9. Drawing two patients: {1, 1} → 1.0, {1, 2} → 0.9, {2, 2} → 0.0,
        // with probabilities 1/4, 1/2, 1/4, so the interval is [0, 1]. Resampling the ten
        // images instead would almost never give 0 (0.1^10).
        let mut rows = TestRows::default();
        for d in 0..10 {
            let (patient, right) = if d < 9 { (1, true) } else { (2, false) };
            rows.logits.push(predict(if right { 0 } else { 1 }));
            rows.labels.push(0);
            rows.patients.push(patient);
            rows.days.push(d);
            rows.earlier_visits.push(if patient == 1 { d as usize } else { 0 });
        }
        let b = patient_bootstrap(&rows, BootstrapConfig { draws: 2000, seed: 3 });
        assert_eq!(b.accuracy, Some(Interval { lo: 0.0, hi: 1.0 }));
        // One class only: no AUC in any draw.
        assert_eq!(b.auc, None);
        assert_eq!(b, patient_bootstrap(&rows, BootstrapConfig { draws: 2000, seed: 3 }));
    }

    #[test]
    fn a_perfect_model_has_a_degenerate_interval() {
        let rows = TestRows {
            logits: vec![predict(0), predict(1), predict(1), predict(0)],
            labels: vec![0, 1, 1, 0],
            patients: vec![1, 2, 3, 4],
            days: vec![0; 4],
            earlier_visits: vec![0; 4],
        };
        let b = patient_bootstrap(&rows, BootstrapConfig::default());
        assert_eq!(b.accuracy, Some(Interval { lo: 1.0, hi: 1.0 }));
        assert_eq!(b.auc, Some(Interval { lo: 1.0, hi: 1.0 }));
    }

    #[test]
    fn strata_and_patient_unit() {
        // Patient 7 (healthy): days 0, 5, 9, predicted disease, healthy, healthy.
        // Patient 8 (disease): day 3, predicted disease. Patient 9 (disease): day 1, predicted healthy.
        let rows = TestRows {
            logits: vec![predict(1), predict(0), predict(0), predict(1), predict(0)],
            labels: vec![0, 0, 0, 1, 1],
            patients: vec![7, 7, 7, 8, 9],
            days: vec![0, 5, 9, 3, 1],
            earlier_visits: vec![0, 1, 2, 0, 0],
        };
        let e = evaluate_test(&rows, BootstrapConfig { draws: 10, seed: 0 });
        assert_eq!(e.image.accuracy, 3.0 / 5.0);
        // Per patient, at the last visit: 7 day 9 right, 8 right, 9 wrong.
        assert_eq!((e.patient.samples, e.patient.accuracy), (3, 2.0 / 3.0));
        // No earlier visit: 7 day 0 (wrong), 8 (right), 9 (wrong); with history: 7 days 5, 9.
        assert_eq!((e.no_history.healthy, e.no_history.disease), (1, 2));
        assert_eq!(e.no_history.metrics.accuracy, 1.0 / 3.0);
        assert_eq!((e.with_history.healthy, e.with_history.disease), (2, 0));
        assert_eq!(e.with_history.metrics.accuracy, 1.0);
        assert!(!e.with_history.both_classes() && e.with_history.metrics.auc.is_none());
    }
}
