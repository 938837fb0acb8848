//! Files of an experiment: per iteration `config.json`, `train.json`, `test.json`,
//! `history.csv` and the checkpoint `model.safetensors`; across iterations `iterations.csv`,
//! `results.csv` (mean and standard deviation, computed with polars) and `results.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;
use tgc_data::write_atomic;

use crate::error::{Result, TrainError};
use crate::evaluation::{EvalUnit, Stratum};
use crate::experiment::{ExperimentConfig, HeadKind, Iteration, Protocol};
use crate::metrics::Metrics;

/// What produced a set of results; printed in every report.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub model: String,
    pub protocol: Protocol,
    /// The backbone that made the features (`resnet18`, `vit`), from the features file.
    pub backbone: String,
    pub random_weights: bool,
    /// The backbone's weight source, as `--weights` takes it.
    pub weights: String,
    /// Whether the inputs were ImageNet-normalized when the features were made.
    pub imagenet_normalize: bool,
    pub features: String,
    /// The unit of the headline table.
    pub eval_unit: EvalUnit,
    /// `frozen` (eval-mode features) or `study` (the study's BatchNorm in training mode).
    pub backbone_bn: String,
}

impl RunInfo {
    pub fn weights_label(&self) -> &'static str {
        if self.random_weights {
            "RANDOM-INIT backbone weights"
        } else {
            "pretrained backbone weights"
        }
    }
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()).map_err(|e| e.to_string()))?;
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Write { path: path.to_owned(), message: e.to_string() })?;
    write_text(path, &(text + "\n"))
}

/// The folder of one iteration: `DIR/<model>/<iteration>`.
pub fn iteration_dir(out: &Path, model: &str, index: usize) -> PathBuf {
    out.join(model).join(index.to_string())
}

/// Writes one iteration's files into `dir` (created if needed).
pub fn write_iteration(dir: &Path, info: &RunInfo, config: &ExperimentConfig, it: &Iteration) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Write { path: dir.to_owned(), message: e.to_string() })?;
    let head = match config.head {
        HeadKind::Probe => "linear_probe".to_owned(),
        HeadKind::Dnn { seq_len } => format!("temporal_dnn(seq_len={})", seq_len.get()),
        HeadKind::HistoryOnly { seq_len } => format!("temporal_dnn(seq_len={}) on constant visit features (history only)", seq_len.get()),
        HeadKind::EarlierVisitRule => "earlier-visit rule (no model)".to_owned(),
    };
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({
            "run": info,
            "head": head,
            "iteration": it.index,
            "iteration_seed": it.seed,
            "master_seed": config.seed,
            "test_fraction": config.test_fraction,
            "validation_fraction": config.validation_fraction,
            "hidden": config.hidden,
            "dropout": config.dropout,
            "train": config.train,
            "train_patients": it.train_patients,
            "validation_patients": it.validation_patients,
            "test_patients": it.test_patients,
        }),
    )?;
    write_json(
        &dir.join("train.json"),
        &serde_json::json!({
            "epochs_run": it.outcome.history.len(),
            "best_epoch": it.outcome.best_epoch,
            "stopped_early": it.outcome.stopped_early,
            "selection": if config.protocol == Protocol::Original { "test split (original protocol)" } else { "validation split (holdout protocol)" },
            "train_metrics": it.train_metrics,
            "selection_metrics": it.selection_metrics,
        }),
    )?;
    write_json(
        &dir.join("test.json"),
        &serde_json::json!({
            "run": info,
            "test_metrics": it.test_metrics,
            "auc_note": auc_note(&it.test_metrics),
            "evaluation": it.test_evaluation,
        }),
    )?;
    let history = &it.outcome.history;
    let frame = DataFrame::new(
        history.len(),
        vec![
            Column::new("epoch".into(), history.iter().map(|e| e.epoch as u64).collect::<Vec<_>>()),
            Column::new("train_loss".into(), history.iter().map(|e| e.train_loss).collect::<Vec<_>>()),
            Column::new("selection_loss".into(), history.iter().map(|e| e.selection_loss).collect::<Vec<_>>()),
            Column::new("lr".into(), history.iter().map(|e| e.lr).collect::<Vec<_>>()),
        ],
    )?;
    tgc_data::write_table(&frame, &dir.join("history.csv"))?;
    if let Some(stats) = &it.backbone_bn {
        save_checkpoint(&dir.join("backbone_bn.safetensors"), stats, info)?;
    }
    if it.state.is_empty() {
        return Ok(()); // the earlier-visit rule has no parameters
    }
    save_checkpoint(&dir.join("model.safetensors"), &it.state, info)
}

fn auc_note(m: &Metrics) -> Option<&'static str> {
    m.auc.is_none().then_some("AUC undefined: the test split holds a single class")
}

/// Writes a state dict as safetensors with the run's identity in the metadata.
pub fn save_checkpoint(path: &Path, state: &HashMap<String, candle_core::Tensor>, info: &RunInfo) -> Result<()> {
    let metadata = HashMap::from([
        ("model".to_owned(), info.model.clone()),
        ("protocol".to_owned(), info.protocol.to_string()),
        ("random_weights".to_owned(), info.random_weights.to_string()),
        ("weights".to_owned(), info.weights.clone()),
        ("backbone".to_owned(), info.backbone.clone()),
    ]);
    let mut names: Vec<&String> = state.keys().collect();
    names.sort();
    let bytes = safetensors_bytes(names.into_iter().map(|k| (k.as_str(), &state[k])), metadata)
        .map_err(|message| TrainError::Write { path: path.to_owned(), message })?;
    write_atomic(path, |w| std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string()))?;
    Ok(())
}

fn safetensors_bytes<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a candle_core::Tensor)>,
    metadata: HashMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    tgc_data::safetensors_bytes(tensors, metadata)
}

/// Mean ± standard deviation of each metric over iterations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub info: RunInfo,
    pub iterations: usize,
    pub loss: (f64, f64),
    pub accuracy: (f64, f64),
    pub f1: (f64, f64),
    /// Over the iterations where the AUC is defined; `None` if it never is.
    pub auc: Option<(f64, f64)>,
    pub auc_defined: usize,
    /// Test patients, summed over iterations.
    pub test_patients: usize,
    /// Each test patient once, at the last visit.
    pub patient_accuracy: (f64, f64),
    pub patient_f1: (f64, f64),
    pub patient_auc: Option<(f64, f64)>,
    /// Means over iterations of the patient-bootstrap 95 % interval bounds (image unit).
    pub accuracy_ci: Option<(f64, f64)>,
    pub auc_ci: Option<(f64, f64)>,
    /// Test images without / with an earlier visit.
    pub no_history: StratumSummary,
    pub with_history: StratumSummary,
}

/// A history stratum over iterations: images (summed), accuracy mean ± std, AUC over the
/// iterations where the stratum holds both classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StratumSummary {
    pub healthy: usize,
    pub disease: usize,
    pub accuracy: (f64, f64),
    pub auc: Option<(f64, f64)>,
}

impl StratumSummary {
    fn of(strata: &[&Stratum]) -> Self {
        Self {
            healthy: strata.iter().map(|s| s.healthy).sum(),
            disease: strata.iter().map(|s| s.disease).sum(),
            accuracy: mean_std(&strata.iter().filter(|s| s.metrics.samples > 0).map(|s| s.metrics.accuracy).collect::<Vec<_>>()),
            auc: opt_mean_std(&strata.iter().filter_map(|s| s.metrics.auc).collect::<Vec<_>>()),
        }
    }
}

/// Mean and sample standard deviation (ddof 1; 0 for one value; NaN for none).
fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = if v.len() > 1 { (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt() } else { 0.0 };
    (m, sd)
}

fn opt_mean_std(v: &[f64]) -> Option<(f64, f64)> {
    (!v.is_empty()).then(|| mean_std(v))
}

impl PartialEq for RunInfo {
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model && self.protocol == other.protocol && self.random_weights == other.random_weights
    }
}

/// Per-iteration metrics as a data frame (the AUC column is null where undefined).
pub fn iterations_frame(results: &[Iteration]) -> Result<DataFrame> {
    let n = results.len();
    let col = |f: fn(&Metrics) -> f64| results.iter().map(|r| f(&r.test_metrics)).collect::<Vec<f64>>();
    Ok(DataFrame::new(
        n,
        vec![
            Column::new("iteration".into(), results.iter().map(|r| r.index as u32).collect::<Vec<_>>()),
            Column::new("seed".into(), results.iter().map(|r| r.seed).collect::<Vec<_>>()),
            Column::new("loss".into(), col(|m| m.loss)),
            Column::new("accuracy".into(), col(|m| m.accuracy)),
            Column::new("f1".into(), col(|m| m.f1)),
            Column::new("auc".into(), results.iter().map(|r| r.test_metrics.auc).collect::<Vec<Option<f64>>>()),
            Column::new("test_samples".into(), results.iter().map(|r| r.test_metrics.samples as u32).collect::<Vec<_>>()),
            Column::new("accuracy_ci_lo".into(), results.iter().map(|r| r.test_evaluation.bootstrap.accuracy.map(|i| i.lo)).collect::<Vec<_>>()),
            Column::new("accuracy_ci_hi".into(), results.iter().map(|r| r.test_evaluation.bootstrap.accuracy.map(|i| i.hi)).collect::<Vec<_>>()),
            Column::new("auc_ci_lo".into(), results.iter().map(|r| r.test_evaluation.bootstrap.auc.map(|i| i.lo)).collect::<Vec<_>>()),
            Column::new("auc_ci_hi".into(), results.iter().map(|r| r.test_evaluation.bootstrap.auc.map(|i| i.hi)).collect::<Vec<_>>()),
            Column::new("patient_accuracy".into(), results.iter().map(|r| r.test_evaluation.patient.accuracy).collect::<Vec<_>>()),
            Column::new("patient_f1".into(), results.iter().map(|r| r.test_evaluation.patient.f1).collect::<Vec<_>>()),
            Column::new("patient_auc".into(), results.iter().map(|r| r.test_evaluation.patient.auc).collect::<Vec<_>>()),
            Column::new("test_patients".into(), results.iter().map(|r| r.test_evaluation.patient.samples as u32).collect::<Vec<_>>()),
            Column::new("no_history_images".into(), results.iter().map(|r| r.test_evaluation.no_history.metrics.samples as u32).collect::<Vec<_>>()),
            Column::new("no_history_accuracy".into(), results.iter().map(|r| finite(r.test_evaluation.no_history.metrics.accuracy)).collect::<Vec<_>>()),
            Column::new("no_history_auc".into(), results.iter().map(|r| r.test_evaluation.no_history.metrics.auc).collect::<Vec<_>>()),
            Column::new("with_history_images".into(), results.iter().map(|r| r.test_evaluation.with_history.metrics.samples as u32).collect::<Vec<_>>()),
            Column::new("with_history_accuracy".into(), results.iter().map(|r| finite(r.test_evaluation.with_history.metrics.accuracy)).collect::<Vec<_>>()),
            Column::new("with_history_auc".into(), results.iter().map(|r| r.test_evaluation.with_history.metrics.auc).collect::<Vec<_>>()),
            Column::new("best_epoch".into(), results.iter().map(|r| r.outcome.best_epoch as u32).collect::<Vec<_>>()),
        ],
    )?)
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Mean and sample standard deviation (ddof 1; 0 for a single iteration) with polars.
pub fn summarize(results: &[Iteration], info: &RunInfo) -> Result<Summary> {
    let frame = iterations_frame(results)?;
    let stats = |name: &str| -> Result<Option<(f64, f64)>> {
        let s = frame.column(name)?.as_materialized_series();
        Ok(s.mean().map(|m| (m, s.std(1).unwrap_or(0.0))))
    };
    let nan = (f64::NAN, f64::NAN);
    Ok(Summary {
        info: info.clone(),
        iterations: results.len(),
        loss: stats("loss")?.unwrap_or(nan),
        accuracy: stats("accuracy")?.unwrap_or(nan),
        f1: stats("f1")?.unwrap_or(nan),
        auc: stats("auc")?,
        auc_defined: results.iter().filter(|r| r.test_metrics.auc.is_some()).count(),
        test_patients: results.iter().map(|r| r.test_evaluation.patient.samples).sum(),
        patient_accuracy: stats("patient_accuracy")?.unwrap_or(nan),
        patient_f1: stats("patient_f1")?.unwrap_or(nan),
        patient_auc: stats("patient_auc")?,
        accuracy_ci: stats("accuracy_ci_lo")?.zip(stats("accuracy_ci_hi")?).map(|(lo, hi)| (lo.0, hi.0)),
        auc_ci: stats("auc_ci_lo")?.zip(stats("auc_ci_hi")?).map(|(lo, hi)| (lo.0, hi.0)),
        no_history: StratumSummary::of(&results.iter().map(|r| &r.test_evaluation.no_history).collect::<Vec<_>>()),
        with_history: StratumSummary::of(&results.iter().map(|r| &r.test_evaluation.with_history).collect::<Vec<_>>()),
    })
}

/// `results.csv`: one row per summary.
pub fn summaries_frame(summaries: &[Summary]) -> Result<DataFrame> {
    let o = |g: &dyn Fn(&Summary) -> Option<f64>| summaries.iter().map(g).collect::<Vec<Option<f64>>>();
    let count = |g: fn(&Summary) -> usize| summaries.iter().map(|s| g(s) as u32).collect::<Vec<u32>>();
    // A (first, second) pair per summary as the columns `<name>_<first>` and `<name>_<second>`
    // (`mean`/`std`, or `lo`/`hi` for an interval).
    let pair = |name: &str, (a, b): (&str, &str), g: fn(&Summary) -> Option<(f64, f64)>| {
        [Column::new(format!("{name}_{a}").into(), o(&|s| g(s).map(|p| p.0))), Column::new(format!("{name}_{b}").into(), o(&|s| g(s).map(|p| p.1)))]
    };
    let ms = ("mean", "std");
    let mut columns = vec![
        Column::new("model".into(), summaries.iter().map(|s| s.info.model.clone()).collect::<Vec<_>>()),
        Column::new("protocol".into(), summaries.iter().map(|s| s.info.protocol.to_string()).collect::<Vec<_>>()),
        Column::new("backbone_weights".into(), summaries.iter().map(|s| if s.info.random_weights { "random" } else { "pretrained" }).collect::<Vec<_>>()),
        Column::new("iterations".into(), count(|s| s.iterations)),
    ];
    columns.extend(pair("loss", ms, |s| Some(s.loss)));
    columns.extend(pair("accuracy", ms, |s| Some(s.accuracy)));
    columns.extend(pair("f1", ms, |s| Some(s.f1)));
    columns.extend(pair("auc", ms, |s| s.auc));
    columns.push(Column::new("auc_defined_iterations".into(), count(|s| s.auc_defined)));
    columns.extend(pair("accuracy_ci", ("lo", "hi"), |s| s.accuracy_ci));
    columns.extend(pair("auc_ci", ("lo", "hi"), |s| s.auc_ci));
    columns.push(Column::new("test_patients".into(), count(|s| s.test_patients)));
    columns.extend(pair("patient_accuracy", ms, |s| Some(s.patient_accuracy)));
    columns.extend(pair("patient_f1", ms, |s| Some(s.patient_f1)));
    columns.extend(pair("patient_auc", ms, |s| s.patient_auc));
    for (name, stratum) in [("no_history", (|s: &Summary| &s.no_history) as fn(&Summary) -> &StratumSummary), ("with_history", |s: &Summary| &s.with_history)] {
        columns
            .push(Column::new(format!("{name}_images").into(), summaries.iter().map(|s| (stratum(s).healthy + stratum(s).disease) as u32).collect::<Vec<_>>()));
        columns.push(Column::new(format!("{name}_accuracy_mean").into(), o(&|s| Some(stratum(s).accuracy.0))));
        columns.push(Column::new(format!("{name}_accuracy_std").into(), o(&|s| Some(stratum(s).accuracy.1))));
        columns.push(Column::new(format!("{name}_auc_mean").into(), o(&|s| stratum(s).auc.map(|a| a.0))));
    }
    Ok(DataFrame::new(summaries.len(), columns)?)
}

/// A row label as the study writes it, with the baselines spelled out.
pub fn display_model(model: &str) -> String {
    if model == "Earlier_visit_rule" {
        return "Earlier-visit rule (no model)".to_owned();
    }
    if let Some(base) = model.strip_suffix("_study_bn") {
        return format!("{base} (study BatchNorm)");
    }
    if let Some((base, n)) = model.split_once("_history_seq_") {
        return format!("{base} history only (Seq {n})");
    }
    match model.split_once("_seq_") {
        Some((base, n)) => format!("{base} (Seq {n})"),
        None => model.to_owned(),
    }
}

fn pm((m, sd): (f64, f64)) -> String {
    if m.is_finite() {
        format!("{m:.4} ± {sd:.4}")
    } else {
        "—".to_owned()
    }
}

fn ci(c: Option<(f64, f64)>) -> String {
    c.map(|(lo, hi)| format!("[{lo:.2}, {hi:.2}]")).unwrap_or_else(|| "n/a".to_owned())
}

/// The study's table (Model | Loss | Accuracy | F1-score | AUC, mean ± std over iterations)
/// in the chosen evaluation unit, with the patient-bootstrap 95 % intervals (image unit), then
/// the metrics by visit history; headed by the protocol and the kind of backbone weights.
pub fn markdown_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    let mut groups: Vec<(Protocol, bool, EvalUnit)> = Vec::new();
    for s in summaries {
        let key = (s.info.protocol, s.info.random_weights, s.info.eval_unit);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    for (protocol, random, unit) in groups {
        let weights = if random { "RANDOM-INIT backbone weights (not pretrained)" } else { "pretrained backbone weights" };
        let selection = match protocol {
            Protocol::Holdout => "model selection on a patient-level validation split; test evaluated once",
            Protocol::Original => "the study's protocol: early stopping and LR schedule watch the test split (optimistic)",
        };
        let of: Vec<&Summary> =
            summaries.iter().filter(|s| s.info.protocol == protocol && s.info.random_weights == random && s.info.eval_unit == unit).collect();
        let counted = match unit {
            EvalUnit::Image => "every test image",
            EvalUnit::Patient => "each test patient once, at the last visit",
        };
        out.push_str(&format!("Protocol **{protocol}** ({selection}); {weights}. Counting {counted}; mean ± std over iterations.\n\n"));
        out.push_str("| Model | Loss | Accuracy | F1-score | AUC | Accuracy 95% CI | AUC 95% CI |\n|---|---|---|---|---|---|---|\n");
        for s in &of {
            let (acc, f1, auc, auc_defined) = match unit {
                EvalUnit::Image => (s.accuracy, s.f1, s.auc, s.auc_defined == s.iterations),
                EvalUnit::Patient => (s.patient_accuracy, s.patient_f1, s.patient_auc, true),
            };
            let auc = match auc {
                Some(a) if auc_defined => pm(a),
                Some(a) => format!("{}*", pm(a)),
                None => "n/a†".to_owned(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                display_model(&s.info.model),
                pm(s.loss),
                pm(acc),
                pm(f1),
                auc,
                ci(s.accuracy_ci),
                ci(s.auc_ci)
            ));
        }
        out.push_str("\nIntervals: patient-level bootstrap of the test images (test patients resampled with replacement), 2.5th–97.5th percentiles, averaged over iterations.");
        if of.iter().any(|s| s.info.model == "Earlier_visit_rule") {
            out.push_str(" Loss is not defined for the rule (—).");
        }
        out.push('\n');
        if of.iter().any(|s| s.auc_defined < s.iterations) {
            out.push_str(
                "\\* AUC averaged over the iterations whose test split holds both classes. † undefined in every iteration (single-class test splits).\n",
            );
        }
        out.push_str("\nBy visit history (test images; counts summed over iterations; AUC only where a stratum holds both classes):\n\n");
        out.push_str("| Model | No earlier visit: images (healthy/disease) | Accuracy | AUC | ≥ 1 earlier visit: images (healthy/disease) | Accuracy | AUC |\n|---|---|---|---|---|---|---|\n");
        for s in &of {
            let stratum = |st: &StratumSummary| {
                let auc = match st.auc {
                    Some(a) => pm(a),
                    None if st.healthy == 0 || st.disease == 0 => "one class only".to_owned(),
                    None => "n/a".to_owned(),
                };
                format!("{} ({}/{}) | {} | {}", st.healthy + st.disease, st.healthy, st.disease, pm(st.accuracy), auc)
            };
            out.push_str(&format!("| {} | {} | {} |\n", display_model(&s.info.model), stratum(&s.no_history), stratum(&s.with_history)));
        }
        out.push('\n');
    }
    out
}

/// A paragraph that reads the temporal model against its baselines (same splits, same
/// iterations): how far it is above what the visit pattern alone gives. `None` without both a
/// temporal model and a baseline among `summaries`.
pub fn confound_reading(summaries: &[Summary]) -> Option<String> {
    let find = |pred: &dyn Fn(&str) -> bool| summaries.iter().find(|s| pred(&s.info.model));
    let dnn = find(&|m| m.contains("_seq_") && !m.contains("_history_"))?;
    let history = find(&|m| m.contains("_history_seq_"));
    let rule = find(&|m| m == "Earlier_visit_rule");
    if history.is_none() && rule.is_none() {
        return None;
    }
    let acc: fn(&Summary) -> (f64, f64) = match dnn.info.eval_unit {
        EvalUnit::Image => |s| s.accuracy,
        EvalUnit::Patient => |s| s.patient_accuracy,
    };
    let counted = if dnn.info.eval_unit == EvalUnit::Image { "test images" } else { "test patients (last visits)" };
    let (m, sd) = acc(dnn);
    let mut text = format!(
        "**Visit-count confound** ({} protocol, accuracy over {counted}, mean ± std over {} iterations). {} reaches {}.",
        dnn.info.protocol,
        dnn.iterations,
        display_model(&dnn.info.model),
        pm((m, sd))
    );
    let versus = |other: &Summary| {
        let (om, osd) = acc(other);
        let gap = m - om;
        let spread = (sd * sd + osd * osd).sqrt();
        let verdict = if gap.abs() <= spread {
            "within the spread of the iterations: the images add nothing measurable"
        } else if gap > 0.0 {
            "beyond the spread of the iterations"
        } else {
            "below it"
        };
        (om, osd, gap, verdict)
    };
    if let Some(h) = history {
        let (om, osd, gap, verdict) = versus(h);
        text.push_str(&format!(
            " The same DNN, trained the same way on history only (every real visit replaced by one constant vector, padding kept), reaches {}: the difference is {gap:+.4}, {verdict}.",
            pm((om, osd))
        ));
    }
    if let Some(r) = rule {
        let (om, osd, gap, verdict) = versus(r);
        text.push_str(&format!(
            " The earlier-visit rule (healthy iff the patient has an earlier visit; no image, no training) reaches {}: the difference is {gap:+.4}, {verdict}.",
            pm((om, osd))
        ));
    }
    text.push_str(&format!(
        " By history, {} is right on {} of test images without an earlier visit and {} of those with one.",
        display_model(&dnn.info.model),
        pm(dnn.no_history.accuracy),
        pm(dnn.with_history.accuracy)
    ));
    Some(text)
}

/// Writes `DIR/<model>_confound.md`, the [`confound_reading`] of `summaries`, and returns it;
/// nothing when there is no reading.
pub fn write_confound(dir: &Path, model: &str, summaries: &[Summary]) -> Result<Option<String>> {
    let Some(reading) = confound_reading(summaries) else { return Ok(None) };
    write_text(&dir.join(format!("{model}_confound.md")), &format!("{reading}\n"))?;
    Ok(Some(reading))
}

/// The results of several experiments in one `results.csv`: the rows of each experiment's
/// `results.csv` (written by [`write_summary`]), in the order given, under the first one's
/// columns. Cells are copied as text, so the combined file says exactly what each run's says.
pub fn combine_results(inputs: &[PathBuf], out: &Path) -> Result<()> {
    let mut header: Option<Vec<String>> = None;
    let mut rows: Vec<HashMap<String, String>> = Vec::new();
    for path in inputs {
        let (names, table) = tgc_data::read_table(path)?;
        header.get_or_insert(names);
        rows.extend(table);
    }
    let columns: Vec<Column> = header
        .unwrap_or_default()
        .iter()
        .map(|name| Column::new(name.into(), rows.iter().map(|r| r.get(name).cloned()).collect::<Vec<Option<String>>>()))
        .collect();
    tgc_data::write_table(&DataFrame::new(rows.len(), columns)?, out)?;
    Ok(())
}

/// Writes `DIR/<model>/iterations.csv`, `results.csv` and `results.md` for one experiment.
pub fn write_summary(model_dir: &Path, results: &[Iteration], summary: &Summary) -> Result<()> {
    std::fs::create_dir_all(model_dir).map_err(|e| TrainError::Write { path: model_dir.to_owned(), message: e.to_string() })?;
    tgc_data::write_table(&iterations_frame(results)?, &model_dir.join("iterations.csv"))?;
    tgc_data::write_table(&summaries_frame(std::slice::from_ref(summary))?, &model_dir.join("results.csv"))?;
    write_text(&model_dir.join("results.md"), &markdown_table(std::slice::from_ref(summary)))
}
