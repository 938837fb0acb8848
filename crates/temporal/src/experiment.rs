//! Repeated experiments: each iteration splits patients with its own seed, trains a head and
//! evaluates it on the test split, under one of two selection protocols.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tgc_backbones::extract::FeatureSet;
use tgc_data::{build_sequences, train_test_split, Label, PatientId, SeqLen, Split};

use crate::error::{Result, TrainError};
use crate::metrics::Metrics;
use crate::model::{Head, LinearProbe, TemporalDnn};
use crate::train::{eval_metrics, train, Samples, TrainConfig, TrainOutcome};

/// Which split drives early stopping and the learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A stratified patient-level validation split carved from the training patients; the
    /// test split is evaluated once, at the end.
    Holdout,
    /// The study's protocol: the test split itself drives selection (optimistic numbers).
    Original,
}

impl FromStr for Protocol {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "holdout" => Ok(Self::Holdout),
            "original" => Ok(Self::Original),
            other => Err(TrainError::Invalid(format!("unknown protocol `{other}` (holdout or original)"))),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Holdout => "holdout",
            Self::Original => "original",
        })
    }
}

/// The head to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Probe,
    Dnn { seq_len: SeqLen },
}

/// Settings of an experiment (the study's values by default).
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentConfig {
    pub iterations: usize,
    pub seed: u64,
    pub protocol: Protocol,
    pub test_fraction: f64,
    /// Fraction of the training patients held out for selection (holdout protocol).
    pub validation_fraction: f64,
    pub head: HeadKind,
    pub train: TrainConfig,
    pub hidden: usize,
    pub dropout: f32,
}

impl ExperimentConfig {
    pub fn new(head: HeadKind) -> Self {
        Self {
            iterations: 5,
            seed: 7,
            protocol: Protocol::Holdout,
            test_fraction: 0.2,
            validation_fraction: 0.2,
            head,
            train: match head {
                HeadKind::Probe => TrainConfig::probe(),
                HeadKind::Dnn { .. } => TrainConfig::dnn(),
            },
            hidden: 64,
            dropout: 0.1,
        }
    }
}

/// The study's model name: `ResNet`, `ResNet_seq_3`, `ViT`, `ViT_seq_3`.
pub fn model_name(features: &FeatureSet, head: HeadKind) -> String {
    let base = match features.metadata.get("backbone").map(String::as_str) {
        Some("resnet18") => "ResNet".to_owned(),
        Some("vit") => "ViT".to_owned(),
        Some(other) => other.to_owned(),
        None => "Model".to_owned(),
    };
    match head {
        HeadKind::Probe => base,
        HeadKind::Dnn { seq_len } => format!("{base}_seq_{}", seq_len.get()),
    }
}

/// Seed of iteration `i`: SplitMix64 of the master seed and the index.
pub fn iteration_seed(master: u64, i: usize) -> u64 {
    let mut z = master.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One finished iteration.
#[derive(Debug)]
pub struct Iteration {
    pub index: usize,
    pub seed: u64,
    /// Patients as the study's integer ids (30001 for `OAS30001`).
    pub train_patients: Vec<u64>,
    pub validation_patients: Vec<u64>,
    pub test_patients: Vec<u64>,
    pub outcome: TrainOutcome,
    pub train_metrics: Metrics,
    pub selection_metrics: Metrics,
    pub test_metrics: Metrics,
    /// The restored best checkpoint.
    pub state: HashMap<String, Tensor>,
}

/// Runs every iteration; `on_iteration` sees each as it finishes (for files and progress).
pub fn run_experiment(features: &FeatureSet, config: &ExperimentConfig, mut on_iteration: impl FnMut(&Iteration) -> Result<()>) -> Result<Vec<Iteration>> {
    if config.iterations == 0 {
        return Err(TrainError::Invalid("iterations must be at least 1".into()));
    }
    let inputs = Inputs::new(features, config.head)?;
    let mut results = Vec::new();
    for index in 0..config.iterations {
        let seed = iteration_seed(config.seed, index);
        let outer = train_test_split(&inputs.patients, config.test_fraction, seed)
            .map_err(|e| TrainError::Split(format!("iteration {index}: cannot split patients into train and test: {e}")))?;
        let (fit, selection_side) = match config.protocol {
            Protocol::Original => (outer.train.clone(), outer.test.clone()),
            Protocol::Holdout => {
                let train_patients: BTreeMap<PatientId, Label> =
                    inputs.patients.iter().filter(|(p, _)| outer.train.contains(*p)).map(|(p, l)| (p.clone(), *l)).collect();
                let inner = train_test_split(&train_patients, config.validation_fraction, seed ^ 0x5EED)
                    .map_err(|e| TrainError::Split(format!("iteration {index}: cannot carve a validation split from the training patients: {e}")))?;
                (inner.train, inner.test)
            }
        };
        let fit_split = Split { train: fit.clone(), test: selection_side.clone() };
        let train_set = inputs.samples(|p| fit_split.train.contains(p))?;
        let selection_set = inputs.samples(|p| fit_split.test.contains(p))?;
        let test_set = inputs.samples(|p| outer.test.contains(p))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut head = match config.head {
            HeadKind::Probe => Head::Probe(LinearProbe::new(inputs.width, &mut rng)?),
            HeadKind::Dnn { .. } => Head::Dnn(TemporalDnn::new(inputs.width, config.hidden, config.dropout, &mut rng)?),
        };
        let outcome = train(&mut head, &train_set, &selection_set, &config.train, &mut rng)?;
        let names = |set: &std::collections::BTreeSet<PatientId>| set.iter().map(|p| p.number()).collect::<Vec<_>>();
        let iteration = Iteration {
            index,
            seed,
            train_patients: names(&fit),
            validation_patients: if config.protocol == Protocol::Holdout { names(&selection_side) } else { Vec::new() },
            test_patients: names(&outer.test),
            train_metrics: eval_metrics(&head, &train_set)?,
            selection_metrics: eval_metrics(&head, &selection_set)?,
            test_metrics: eval_metrics(&head, &test_set)?,
            state: head.state_dict()?,
            outcome,
        };
        tracing::debug!(iteration = index, accuracy = iteration.test_metrics.accuracy, loss = iteration.test_metrics.loss, "iteration done");
        on_iteration(&iteration)?;
        results.push(iteration);
    }
    Ok(results)
}

/// Per-image model inputs (features, or flattened sequences) with patients and labels.
struct Inputs {
    rows: Vec<f32>,
    width: usize,
    labels: Vec<u8>,
    patient_of: Vec<PatientId>,
    patients: BTreeMap<PatientId, Label>,
}

impl Inputs {
    fn new(features: &FeatureSet, head: HeadKind) -> Result<Self> {
        if features.is_empty() || features.dim == 0 {
            return Err(TrainError::Invalid("the features file holds no samples".into()));
        }
        let mut labels = Vec::with_capacity(features.len());
        let mut patient_of = Vec::with_capacity(features.len());
        for (i, (&l, &p)) in features.label.iter().zip(&features.patient_id).enumerate() {
            let label = Label::from_index(usize::try_from(l).unwrap_or(usize::MAX))
                .ok_or_else(|| TrainError::Invalid(format!("sample {i} has label {l}; labels must be 0 or 1")))?;
            labels.push(label.index() as u8);
            let id = u64::try_from(p).map(PatientId::new).map_err(|_| TrainError::Invalid(format!("sample {i} has patient id {p}")))?;
            patient_of.push(id);
        }
        // A patient's stratification label is that of the latest visit.
        let mut latest: BTreeMap<PatientId, (i64, Label)> = BTreeMap::new();
        for i in 0..features.len() {
            let label = Label::from_index(labels[i] as usize).expect("checked above");
            let entry = latest.entry(patient_of[i].clone()).or_insert((features.day[i], label));
            if features.day[i] >= entry.0 {
                *entry = (features.day[i], label);
            }
        }
        let patients = latest.into_iter().map(|(p, (_, l))| (p, l)).collect();
        let (rows, width) = match head {
            HeadKind::Probe => (features.features.clone(), features.dim),
            HeadKind::Dnn { seq_len } => {
                let keys: Vec<(PatientId, u32)> = patient_of
                    .iter()
                    .zip(&features.day)
                    .map(|(p, &d)| (p.clone(), u32::try_from(d).unwrap_or(u32::MAX)))
                    .collect();
                let sequences = build_sequences(&keys, seq_len)?;
                let rows = sequences.iter().flat_map(|s| s.gather(&features.features, features.dim)).collect();
                (rows, seq_len.get() * features.dim)
            }
        };
        Ok(Self { rows, width, labels, patient_of, patients })
    }

    fn samples(&self, keep: impl Fn(&PatientId) -> bool) -> Result<Samples> {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for (i, p) in self.patient_of.iter().enumerate() {
            if keep(p) {
                rows.extend_from_slice(&self.rows[i * self.width..(i + 1) * self.width]);
                y.push(self.labels[i]);
            }
        }
        Samples::new(rows, self.width, y)
    }
}
