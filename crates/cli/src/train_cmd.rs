//! `tgc train` and `tgc train-temporal`: repeated experiments on a features file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use tgc_backbones::extract::FeatureSet;
use tgc_data::SeqLen;
use tgc_temporal::report::{self, RunInfo};
use tgc_temporal::{model_name, run_experiment, ExperimentConfig, HeadKind, Protocol};

use crate::{plot, progress};

#[derive(Args)]
pub struct TrainArgs {
    /// Features file written by `tgc extract`.
    #[arg(long)]
    pub features: PathBuf,
    /// Output folder; results go to DIR/<model>/…
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Master seed; iteration seeds derive from it.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// holdout (selection on a validation split) or original (the study's: on the test split).
    #[arg(long, default_value = "holdout")]
    pub protocol: Protocol,
    /// Maximum epochs (default 25 for the probe, 100 for the temporal DNN).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Initial learning rate of Adam.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
}

#[derive(Args)]
pub struct TrainTemporalArgs {
    #[command(flatten)]
    pub common: TrainArgs,
    /// Visits per sequence (the current one and up to seq_len − 1 earlier ones).
    #[arg(long, default_value_t = 3)]
    pub seq_len: usize,
}

pub fn run(args: TrainArgs, head: HeadKind) -> Result<()> {
    let features = FeatureSet::load(&args.features).with_context(|| format!("reading features {}", args.features.display()))?;
    if features.orientation() != Some(tgc_data::ORIENTATION) {
        tracing::warn!(
            features = %args.features.display(),
            found = features.orientation().unwrap_or("none recorded"),
            expected = tgc_data::ORIENTATION,
            "these features were computed from slices in another orientation than the study's; re-run `tgc extract`"
        );
    }
    let mut config = ExperimentConfig::new(head);
    config.iterations = args.iterations;
    config.seed = args.seed;
    config.protocol = args.protocol;
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        anyhow::bail!("--lr must be a positive number, got {}", args.lr);
    }
    config.train.lr = args.lr;
    if let Some(epochs) = args.epochs {
        config.train.max_epochs = epochs;
    }
    let model = model_name(&features, head);
    let info = RunInfo {
        model: model.clone(),
        protocol: args.protocol,
        backbone: features.metadata.get("backbone").cloned().unwrap_or_else(|| "unknown".into()),
        random_weights: features.random_weights(),
        weights: features.metadata.get("weights").cloned().unwrap_or_else(|| "unknown".into()),
        imagenet_normalize: features.metadata.get("imagenet_normalize").is_some_and(|v| v == "true"),
        features: args.features.display().to_string(),
    };
    if info.random_weights {
        println!("NOTE: these features come from RANDOM-INIT backbone weights ({}); results are not those of a pretrained model", info.weights);
    }
    let bar = progress::bar(config.iterations as u64, &model);
    let results = run_experiment(&features, &config, |it| {
        let dir = report::iteration_dir(&args.out, &model, it.index);
        report::write_iteration(&dir, &info, &config, it)?;
        plot::history(&it.outcome.history, &dir.join("history.png"), &format!("{model} iteration {} ({}){}", it.index, info.protocol, if info.random_weights { ", RANDOM-INIT backbone" } else { "" }))
            .map_err(|e| tgc_temporal::TrainError::Write { path: dir.join("history.png"), message: e.to_string() })?;
        bar.inc(1);
        Ok(())
    })
    .with_context(|| format!("training {model}"))?;
    bar.finish_and_clear();
    let summary = report::summarize(&results, &info)?;
    let model_dir = args.out.join(&model);
    report::write_summary(&model_dir, &results, &summary)?;
    print!("{}", report::markdown_table(std::slice::from_ref(&summary)));
    println!("results written to {}", display(&model_dir));
    Ok(())
}

pub fn run_temporal(args: TrainTemporalArgs) -> Result<()> {
    let seq_len = SeqLen::new(args.seq_len).context("--seq-len")?;
    run(args.common, HeadKind::Dnn { seq_len })
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
