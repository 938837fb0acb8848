//! `tgc train` and `tgc train-temporal`: repeated experiments on a features file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use tgc_backbones::extract::FeatureSet;
use tgc_data::SeqLen;
use tgc_temporal::report::{self, RunInfo};
use tgc_temporal::evaluation::{BootstrapConfig, EvalUnit};
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
    /// Master seed; iteration seeds (patient splits, initialisation, shuffling) derive from it.
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
    /// Unit of the headline table: every test image, or each test patient once at the last
    /// visit (both are always written to results.csv).
    #[arg(long, default_value = "image")]
    pub eval_unit: EvalUnit,
    /// Draws of the patient-level bootstrap of the test metrics.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap_draws: usize,
    /// Seed of the bootstrap (mixed with each iteration's seed).
    #[arg(long, default_value_t = 0)]
    pub bootstrap_seed: u64,
}

#[derive(Args)]
pub struct TrainTemporalArgs {
    #[command(flatten)]
    pub common: TrainArgs,
    /// Visits per sequence (the current one and up to seq_len − 1 earlier ones).
    #[arg(long, default_value_t = 3)]
    pub seq_len: usize,
    /// Skip the baselines trained beside the temporal model by default: the same DNN on
    /// history only (constant visit features) and the earlier-visit rule.
    #[arg(long)]
    pub no_baselines: bool,
}

/// `tgc train`: the linear probe.
pub fn run(args: TrainArgs) -> Result<()> {
    let features = load_features(&args.features)?;
    let summary = run_one(&features, &args, HeadKind::Probe)?;
    print!("{}", report::markdown_table(std::slice::from_ref(&summary)));
    Ok(())
}

/// `tgc train-temporal`: the temporal DNN and, unless `--no-baselines`, what the visit pattern
/// alone achieves on the same splits.
pub fn run_temporal(args: TrainTemporalArgs) -> Result<()> {
    let seq_len = SeqLen::new(args.seq_len).context("--seq-len")?;
    let features = load_features(&args.common.features)?;
    let mut heads = vec![HeadKind::Dnn { seq_len }];
    if !args.no_baselines {
        heads.extend([HeadKind::HistoryOnly { seq_len }, HeadKind::EarlierVisitRule]);
    }
    let summaries = heads.into_iter().map(|h| run_one(&features, &args.common, h)).collect::<Result<Vec<_>>>()?;
    print!("{}", report::markdown_table(&summaries));
    if let Some(reading) = report::confound_reading(&summaries) {
        println!("{reading}\n");
        let path = args.common.out.join(format!("{}_confound.md", model_name(&features, HeadKind::Dnn { seq_len })));
        tgc_data::write_atomic(&path, |w| std::io::Write::write_all(w, format!("{reading}\n").as_bytes()).map_err(|e| e.to_string()))?;
    }
    Ok(())
}

fn load_features(path: &Path) -> Result<FeatureSet> {
    let features = FeatureSet::load(path).with_context(|| format!("reading features {}", path.display()))?;
    if features.orientation() != Some(tgc_data::ORIENTATION) {
        tracing::warn!(
            features = %path.display(),
            found = features.orientation().unwrap_or("none recorded"),
            expected = tgc_data::ORIENTATION,
            "these features were computed from slices in another orientation than the study's; re-run `tgc extract`"
        );
    }
    if features.random_weights() {
        println!(
            "NOTE: these features come from RANDOM-INIT backbone weights ({}); results are not those of a pretrained model",
            features.metadata.get("weights").map(String::as_str).unwrap_or("unknown")
        );
    }
    Ok(features)
}

/// One model over every iteration: per-iteration files, the summary files, the summary.
fn run_one(features: &FeatureSet, args: &TrainArgs, head: HeadKind) -> Result<report::Summary> {
    let mut config = ExperimentConfig::new(head);
    config.iterations = args.iterations;
    config.seed = args.seed;
    config.protocol = args.protocol;
    config.bootstrap = BootstrapConfig { draws: args.bootstrap_draws, seed: args.bootstrap_seed };
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        anyhow::bail!("--lr must be a positive number, got {}", args.lr);
    }
    config.train.lr = args.lr;
    if let Some(epochs) = args.epochs {
        config.train.max_epochs = epochs;
    }
    let model = model_name(features, head);
    let info = RunInfo {
        model: model.clone(),
        protocol: args.protocol,
        backbone: features.metadata.get("backbone").cloned().unwrap_or_else(|| "unknown".into()),
        random_weights: features.random_weights(),
        weights: features.metadata.get("weights").cloned().unwrap_or_else(|| "unknown".into()),
        imagenet_normalize: features.metadata.get("imagenet_normalize").is_some_and(|v| v == "true"),
        features: args.features.display().to_string(),
        eval_unit: args.eval_unit,
    };
    let bar = progress::bar(config.iterations as u64, &model);
    let results = run_experiment(features, &config, |it| {
        let dir = report::iteration_dir(&args.out, &model, it.index);
        report::write_iteration(&dir, &info, &config, it)?;
        if !it.outcome.history.is_empty() {
            plot::history(&it.outcome.history, &dir.join("history.png"), &format!("{model} iteration {} ({}){}", it.index, info.protocol, if info.random_weights { ", RANDOM-INIT backbone" } else { "" }))
                .map_err(|e| tgc_temporal::TrainError::Write { path: dir.join("history.png"), message: e.to_string() })?;
        }
        bar.inc(1);
        Ok(())
    })
    .with_context(|| format!("training {model}"))?;
    bar.finish_and_clear();
    let summary = report::summarize(&results, &info)?;
    let model_dir = args.out.join(&model);
    report::write_summary(&model_dir, &results, &summary)?;
    println!("{} results written to {}", report::display_model(&model), model_dir.display());
    Ok(summary)
}
