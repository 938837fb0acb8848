//! Repeated experiments: each iteration splits patients with its own seed, trains a head and
//! evaluates it on the test split, under one of two selection protocols.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tgc_data::FeatureSet;
use tgc_data::{build_sequences, train_test_split, Label, PatientId, SeqLen, Split};

use crate::error::{Result, TrainError};
use crate::evaluation::{evaluate_test, BootstrapConfig, Evaluation, TestRows};
use crate::metrics::{evaluate, Metrics};
use crate::model::{Head, LinearProbe, TemporalDnn};
use crate::train::{train, train_with, Samples, TrainConfig, TrainOutcome};
use crate::train_bn_inputs::{StudyBackbone, StudyBnInputs};

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

/// The head to train, or a baseline that shows what the visit pattern alone gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Probe,
    Dnn {
        seq_len: SeqLen,
    },
    /// The temporal DNN with the same training on sequences whose real visits all carry the
    /// same constant feature vector (padding stays zero): what it can learn from the visit
    /// pattern alone.
    HistoryOnly {
        seq_len: SeqLen,
    },
    /// No model: healthy iff the patient has an earlier visit (scores for the AUC: fewer
    /// earlier visits, more disease-like).
    EarlierVisitRule,
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
    /// Patient-level bootstrap of the test metrics (its seed is mixed with each iteration's).
    pub bootstrap: BootstrapConfig,
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
                HeadKind::Probe | HeadKind::EarlierVisitRule => TrainConfig::probe(),
                HeadKind::Dnn { .. } | HeadKind::HistoryOnly { .. } => TrainConfig::dnn(),
            },
            hidden: 64,
            dropout: 0.1,
            bootstrap: BootstrapConfig::default(),
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
        HeadKind::HistoryOnly { seq_len } => format!("{base}_history_seq_{}", seq_len.get()),
        HeadKind::EarlierVisitRule => "Earlier_visit_rule".to_owned(),
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
    /// Per patient, by visit history, with bootstrap intervals.
    pub test_evaluation: Evaluation,
    /// The restored best checkpoint (empty for the earlier-visit rule).
    pub state: HashMap<String, Tensor>,
    /// With the study's BatchNorm mode: the backbone's running statistics restored with the
    /// best head (the test features were computed with them).
    pub backbone_bn: Option<HashMap<String, Tensor>>,
}

/// Runs every iteration; `on_iteration` sees each as it finishes (for files and progress).
pub fn run_experiment(features: &FeatureSet, config: &ExperimentConfig, on_iteration: impl FnMut(&Iteration) -> Result<()>) -> Result<Vec<Iteration>> {
    run_experiment_with(features, config, None, on_iteration)
}

/// [`run_experiment`], optionally training the probe as the study did: with `study`, every
/// training batch runs through its ResNet-18 with BatchNorm in training mode, evaluations use
/// the drifted running statistics, and each iteration starts from the pretrained ones. The
/// features file then supplies only the rows' patients, days and labels.
pub fn run_experiment_with(
    features: &FeatureSet,
    config: &ExperimentConfig,
    study: Option<&StudyBackbone>,
    mut on_iteration: impl FnMut(&Iteration) -> Result<()>,
) -> Result<Vec<Iteration>> {
    if config.iterations == 0 {
        return Err(TrainError::Invalid("iterations must be at least 1".into()));
    }
    if let Some(s) = study {
        if config.head != HeadKind::Probe {
            return Err(TrainError::Invalid("the study's BatchNorm mode trains the linear probe only".into()));
        }
        if s.images.dim(0)? != features.len() {
            return Err(TrainError::Invalid(format!("{} images for {} feature rows", s.images.dim(0)?, features.len())));
        }
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
        let (mut train_set, train_rows) = inputs.samples(|p| fit_split.train.contains(p))?;
        let (mut selection_set, selection_rows) = inputs.samples(|p| fit_split.test.contains(p))?;
        let (mut test_set, test_rows) = inputs.samples(|p| outer.test.contains(p))?;
        let mut backbone_bn = None;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (outcome, logits_of, state): (TrainOutcome, Box<dyn Fn(&Samples) -> Result<Vec<[f32; 2]>>>, _) = match config.head {
            HeadKind::EarlierVisitRule => {
                let outcome = TrainOutcome { history: Vec::new(), best_epoch: 0, stopped_early: false };
                (outcome, Box::new(rule_logits), HashMap::new())
            }
            kind => {
                let mut head = match kind {
                    HeadKind::Probe => Head::Probe(LinearProbe::new(inputs.width, &mut rng)?),
                    _ => Head::Dnn(TemporalDnn::new(inputs.width, config.hidden, config.dropout, &mut rng)?),
                };
                let outcome = match study {
                    None => train(&mut head, &train_set, &selection_set, &config.train, &mut rng)?,
                    Some(backbone) => {
                        let mut study_inputs =
                            StudyBnInputs::new(backbone, (train_rows.clone(), train_set.y.clone()), (selection_rows.clone(), selection_set.y.clone()));
                        let outcome = train_with(&mut head, &mut study_inputs, &config.train, &mut rng)?;
                        // Every evaluation sees the statistics restored with the best head.
                        train_set = study_inputs.eval_samples(&train_rows, &train_set.y)?;
                        selection_set = study_inputs.eval_samples(&selection_rows, &selection_set.y)?;
                        test_set = study_inputs.eval_samples(&test_rows, &test_set.y)?;
                        backbone_bn = Some(study_inputs.net.running_stats());
                        outcome
                    }
                };
                let state = head.state_dict()?;
                (outcome, Box::new(move |s: &Samples| head_logits(&head, s)), state)
            }
        };
        let metrics = |s: &Samples| -> Result<Metrics> {
            let mut m = evaluate(&logits_of(s)?, &s.y);
            if config.head == HeadKind::EarlierVisitRule {
                m.loss = f64::NAN; // the rule's logits are a device, not probabilities
            }
            Ok(m)
        };
        let mut rows = inputs.test_rows(&test_rows);
        rows.logits = logits_of(&test_set)?;
        let bootstrap = BootstrapConfig { seed: config.bootstrap.seed ^ seed, ..config.bootstrap };
        let names = |set: &std::collections::BTreeSet<PatientId>| set.iter().map(|p| p.number()).collect::<Vec<_>>();
        let iteration = Iteration {
            index,
            seed,
            train_patients: names(&fit),
            validation_patients: if config.protocol == Protocol::Holdout { names(&selection_side) } else { Vec::new() },
            test_patients: names(&outer.test),
            train_metrics: metrics(&train_set)?,
            selection_metrics: metrics(&selection_set)?,
            test_metrics: metrics(&test_set)?,
            test_evaluation: evaluate_test(&rows, bootstrap),
            state,
            backbone_bn,
            outcome,
        };
        tracing::debug!(iteration = index, accuracy = iteration.test_metrics.accuracy, loss = iteration.test_metrics.loss, "iteration done");
        on_iteration(&iteration)?;
        results.push(iteration);
    }
    Ok(results)
}

/// A head's logits on a set.
fn head_logits(head: &Head, samples: &Samples) -> Result<Vec<[f32; 2]>> {
    let logits: Vec<Vec<f32>> = head.forward_eval(&samples.x)?.to_vec2()?;
    Ok(logits.iter().map(|r| [r[0], r[1]]).collect())
}

/// The earlier-visit rule as logits: `[e − ½, ½ − e]` for `e` earlier visits predicts disease
/// only without an earlier visit, and its score `1 − 2e` orders images by their history.
fn rule_logits(samples: &Samples) -> Result<Vec<[f32; 2]>> {
    let earlier: Vec<f32> = samples.x.flatten_all()?.to_vec1()?;
    Ok(earlier.iter().map(|&e| [e - 0.5, 0.5 - e]).collect())
}

/// Per-image model inputs (features, flattened sequences, or the number of earlier visits for
/// the rule) with patients, days and labels.
struct Inputs {
    rows: Vec<f32>,
    width: usize,
    labels: Vec<u8>,
    patient_of: Vec<PatientId>,
    days: Vec<i64>,
    earlier_visits: Vec<usize>,
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
            let entry = latest.entry(patient_of[i]).or_insert((features.day[i], label));
            if features.day[i] >= entry.0 {
                *entry = (features.day[i], label);
            }
        }
        let patients = latest.into_iter().map(|(p, (_, l))| (p, l)).collect();
        let earlier_visits: Vec<usize> =
            (0..features.len()).map(|i| (0..features.len()).filter(|&j| patient_of[j] == patient_of[i] && features.day[j] < features.day[i]).count()).collect();
        let sequences = |seq_len: SeqLen, values: &[f32]| -> Result<Vec<f32>> {
            let keys: Vec<(PatientId, u32)> = patient_of.iter().zip(&features.day).map(|(p, &d)| (*p, u32::try_from(d).unwrap_or(u32::MAX))).collect();
            Ok(build_sequences(&keys, seq_len)?.iter().flat_map(|s| s.gather(values, features.dim)).collect())
        };
        let (rows, width) = match head {
            HeadKind::Probe => (features.features.clone(), features.dim),
            HeadKind::Dnn { seq_len } => (sequences(seq_len, &features.features)?, seq_len.get() * features.dim),
            HeadKind::HistoryOnly { seq_len } => (sequences(seq_len, &vec![1.0; features.features.len()])?, seq_len.get() * features.dim),
            HeadKind::EarlierVisitRule => (earlier_visits.iter().map(|&e| e as f32).collect(), 1),
        };
        Ok(Self { rows, width, labels, patient_of, days: features.day.clone(), earlier_visits, patients })
    }

    /// The rows of the patients `keep` accepts, and their indices.
    fn samples(&self, keep: impl Fn(&PatientId) -> bool) -> Result<(Samples, Vec<usize>)> {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        let mut kept = Vec::new();
        for (i, p) in self.patient_of.iter().enumerate() {
            if keep(p) {
                rows.extend_from_slice(&self.rows[i * self.width..(i + 1) * self.width]);
                y.push(self.labels[i]);
                kept.push(i);
            }
        }
        Ok((Samples::new(rows, self.width, y)?, kept))
    }

    /// What the evaluation needs to know about the given rows (logits left empty).
    fn test_rows(&self, kept: &[usize]) -> TestRows {
        TestRows {
            logits: Vec::new(),
            labels: kept.iter().map(|&i| self.labels[i]).collect(),
            patients: kept.iter().map(|&i| self.patient_of[i].number()).collect(),
            days: kept.iter().map(|&i| self.days[i]).collect(),
            earlier_visits: kept.iter().map(|&i| self.earlier_visits[i]).collect(),
        }
    }
}
