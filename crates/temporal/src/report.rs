//! Files of an experiment: per iteration `config.json`, `train.json`, `test.json`,
//! `history.csv` and the checkpoint `model.safetensors`; across iterations `iterations.csv`,
//! `results.csv` (mean and standard deviation, computed with polars) and `results.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;
use tgc_data::write_atomic;

use crate::error::{Result, TrainError};
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
    write_json(&dir.join("test.json"), &serde_json::json!({ "run": info, "test_metrics": it.test_metrics, "auc_note": auc_note(&it.test_metrics) }))?;
    let mut csv = String::from("epoch,train_loss,selection_loss,lr\n");
    for e in &it.outcome.history {
        csv.push_str(&format!("{},{},{},{}\n", e.epoch, e.train_loss, e.selection_loss, e.lr));
    }
    write_text(&dir.join("history.csv"), &csv)?;
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

fn safetensors_bytes<'a>(tensors: impl Iterator<Item = (&'a str, &'a candle_core::Tensor)>, metadata: HashMap<String, String>) -> std::result::Result<Vec<u8>, String> {
    safetensors::serialize(tensors, Some(metadata)).map_err(|e| e.to_string())
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
            Column::new("best_epoch".into(), results.iter().map(|r| r.outcome.best_epoch as u32).collect::<Vec<_>>()),
        ],
    )?)
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
    })
}

/// `results.csv`: one row per summary.
pub fn summaries_frame(summaries: &[Summary]) -> Result<DataFrame> {
    let f = |g: fn(&Summary) -> f64| summaries.iter().map(g).collect::<Vec<f64>>();
    let o = |g: fn(&Summary) -> Option<f64>| summaries.iter().map(g).collect::<Vec<Option<f64>>>();
    Ok(DataFrame::new(
        summaries.len(),
        vec![
            Column::new("model".into(), summaries.iter().map(|s| s.info.model.clone()).collect::<Vec<_>>()),
            Column::new("protocol".into(), summaries.iter().map(|s| s.info.protocol.to_string()).collect::<Vec<_>>()),
            Column::new("backbone_weights".into(), summaries.iter().map(|s| if s.info.random_weights { "random" } else { "pretrained" }).collect::<Vec<_>>()),
            Column::new("iterations".into(), summaries.iter().map(|s| s.iterations as u32).collect::<Vec<_>>()),
            Column::new("loss_mean".into(), f(|s| s.loss.0)),
            Column::new("loss_std".into(), f(|s| s.loss.1)),
            Column::new("accuracy_mean".into(), f(|s| s.accuracy.0)),
            Column::new("accuracy_std".into(), f(|s| s.accuracy.1)),
            Column::new("f1_mean".into(), f(|s| s.f1.0)),
            Column::new("f1_std".into(), f(|s| s.f1.1)),
            Column::new("auc_mean".into(), o(|s| s.auc.map(|a| a.0))),
            Column::new("auc_std".into(), o(|s| s.auc.map(|a| a.1))),
            Column::new("auc_defined_iterations".into(), summaries.iter().map(|s| s.auc_defined as u32).collect::<Vec<_>>()),
        ],
    )?)
}

/// The study's table (Model | Loss | Accuracy | F1-score | AUC, means) plus a ± column per
/// metric, headed by the protocol and the kind of backbone weights.
pub fn markdown_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    let mut groups: Vec<(Protocol, bool)> = Vec::new();
    for s in summaries {
        let key = (s.info.protocol, s.info.random_weights);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    for (protocol, random) in groups {
        let weights = if random { "RANDOM-INIT backbone weights (not pretrained)" } else { "pretrained backbone weights" };
        let selection = match protocol {
            Protocol::Holdout => "model selection on a patient-level validation split; test evaluated once",
            Protocol::Original => "the study's protocol: early stopping and LR schedule watch the test split (optimistic)",
        };
        out.push_str(&format!("Protocol **{protocol}** ({selection}); {weights}.\n\n"));
        out.push_str("| Model | Loss | ± | Accuracy | ± | F1-score | ± | AUC | ± |\n|---|---|---|---|---|---|---|---|---|\n");
        for s in summaries.iter().filter(|s| s.info.protocol == protocol && s.info.random_weights == random) {
            let auc = match s.auc {
                Some((m, sd)) if s.auc_defined == s.iterations => format!("{m:.4} | {sd:.4}"),
                Some((m, sd)) => format!("{m:.4}* | {sd:.4}"),
                None => "n/a† | n/a".to_owned(),
            };
            out.push_str(&format!(
                "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {} |\n",
                s.info.model, s.loss.0, s.loss.1, s.accuracy.0, s.accuracy.1, s.f1.0, s.f1.1, auc
            ));
        }
        out.push('\n');
        if summaries.iter().any(|s| s.auc_defined < s.iterations) {
            out.push_str("\\* AUC averaged over the iterations whose test split holds both classes. † undefined in every iteration (single-class test splits).\n\n");
        }
    }
    out
}

/// Writes `DIR/<model>/iterations.csv`, `results.csv` and `results.md` for one experiment.
pub fn write_summary(model_dir: &Path, results: &[Iteration], summary: &Summary) -> Result<()> {
    std::fs::create_dir_all(model_dir).map_err(|e| TrainError::Write { path: model_dir.to_owned(), message: e.to_string() })?;
    tgc_data::write_table(&iterations_frame(results)?, &model_dir.join("iterations.csv"))?;
    tgc_data::write_table(&summaries_frame(std::slice::from_ref(summary))?, &model_dir.join("results.csv"))?;
    write_text(&model_dir.join("results.md"), &markdown_table(std::slice::from_ref(summary)))
}
