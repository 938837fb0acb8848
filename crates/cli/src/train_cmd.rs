//! `tgc train` and `tgc train-temporal`: repeated experiments on a features file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use std::collections::HashMap;
use tgc_data::FeatureSet;
use tgc_data::SeqLen;
use tgc_temporal::evaluation::{BootstrapConfig, EvalUnit};
use tgc_temporal::report::{self, RunInfo};

use tgc_backbones::resnet_train_bn::StudyBnResNet18;
use tgc_backbones::{Preprocess, WeightSource};
use tgc_temporal::train_bn_inputs::StudyBackbone;
use tgc_temporal::{model_name, run_experiment_with, ExperimentConfig, HeadKind, Protocol};

use crate::args::{DeviceArg, SourceArgs};

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

/// How the backbone's BatchNorm behaves while the probe trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackboneBn {
    /// Eval mode, running statistics: features computed once (what "frozen" means).
    Frozen,
    /// The study's `run.py` (`model.train()` every batch on a frozen ResNet-18): batch
    /// statistics while training, drifting running statistics used by every evaluation.
    /// Recomputes the backbone every batch; `--protocol original`, ResNet-18 only.
    Study,
}

#[derive(Args)]
pub struct TrainProbeArgs {
    #[command(flatten)]
    pub common: TrainArgs,
    /// BatchNorm of the backbone during training: frozen, or study (see --help).
    #[arg(long, value_enum, default_value = "frozen")]
    pub backbone_bn: BackboneBn,
    /// With --backbone-bn study: the data folder the features were extracted from (default: the
    /// one the features file names).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// With --backbone-bn study on a BIDS data set: how it is read (the same --slice,
    /// --labels … as the extraction).
    #[command(flatten)]
    pub source: SourceArgs,
    /// With --backbone-bn study: where the backbone runs (cpu, cuda or cuda:N); the probe
    /// itself trains on the CPU. Frozen features run no backbone here.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

/// `tgc results`: several experiments' `results.csv` as one table.
#[derive(Args)]
pub struct ResultsArgs {
    /// The experiments' results.csv files, their rows in this order (the first one's columns).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The combined table (.csv).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_results(args: ResultsArgs) -> Result<()> {
    report::combine_results(&args.inputs, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!("{} experiments' results written to {}", args.inputs.len(), args.out.display());
    Ok(())
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
pub fn run(args: TrainProbeArgs) -> Result<()> {
    let features = load_features(&args.common.features)?;
    let study = match args.backbone_bn {
        BackboneBn::Frozen => {
            if !args.device.0.is_cpu() {
                println!("NOTE: --device {} is for --backbone-bn study; frozen features run no backbone, the probe trains on the CPU", args.device);
            }
            None
        }
        BackboneBn::Study => Some(study_backbone(&features, &args)?),
    };
    let summary = run_one(&features, &args.common, HeadKind::Probe, study.as_ref())?;
    print!("{}", report::markdown_table(std::slice::from_ref(&summary)));
    Ok(())
}

/// The pretrained ResNet-18 with separate BatchNorm and the preprocessed image of every
/// features row, for `--backbone-bn study`.
fn study_backbone(features: &FeatureSet, args: &TrainProbeArgs) -> Result<StudyBackbone> {
    if args.common.protocol != Protocol::Original {
        anyhow::bail!("--backbone-bn study is a mode of the study's protocol: add --protocol original");
    }
    let meta = |k: &str| features.metadata.get(k).cloned();
    if meta("backbone").as_deref() != Some("resnet18") {
        anyhow::bail!(
            "--backbone-bn study needs ResNet-18 features (the ViT has no BatchNorm); {} holds {}",
            args.common.features.display(),
            meta("backbone").unwrap_or_else(|| "unknown".into())
        );
    }
    let source: WeightSource = meta("weights").context("the features file does not name its weights")?.parse()?;
    let data = match (&args.data, meta("data")) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => PathBuf::from(d),
        (None, None) => {
            anyhow::bail!("give --data: the features file does not name its data folder")
        }
    };
    let dataset = args.source.open(&data)?;
    let by_key: HashMap<(u64, i64), usize> = dataset.records().iter().enumerate().map(|(i, r)| ((r.patient.number(), i64::from(r.day)), i)).collect();
    let preprocess = Preprocess { resize_shorter_to: None, imagenet_normalize: meta("imagenet_normalize").as_deref() == Some("true") };
    let bar = progress::bar(features.len() as u64, "loading slices");
    let mut images = Vec::with_capacity(features.len());
    for (&p, &d) in features.patient_id.iter().zip(&features.day) {
        let &i = by_key
            .get(&(u64::try_from(p).unwrap_or(u64::MAX), d))
            .with_context(|| format!("{} has no slice of patient {p} day {d} named in {}", data.display(), args.common.features.display()))?;
        images.push(preprocess.apply(&dataset.load_image(i)?, &args.device.0)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let net = StudyBnResNet18::load_on(&source, &args.device.0).with_context(|| format!("loading ResNet-18 weights {source}"))?;
    println!("study BatchNorm: the backbone runs in training mode every batch ({} slices of {})", images.len(), data.display());
    Ok(StudyBackbone { net, images: candle_core::Tensor::stack(&images, 0)? })
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
    let summaries = heads.into_iter().map(|h| run_one(&features, &args.common, h, None)).collect::<Result<Vec<_>>>()?;
    print!("{}", report::markdown_table(&summaries));
    if let Some(reading) = report::write_confound(&args.common.out, &model_name(&features, HeadKind::Dnn { seq_len }), &summaries)? {
        println!("{reading}\n");
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
fn run_one(features: &FeatureSet, args: &TrainArgs, head: HeadKind, study: Option<&StudyBackbone>) -> Result<report::Summary> {
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
    let model = if study.is_some() { format!("{}_study_bn", model_name(features, head)) } else { model_name(features, head) };
    let info = RunInfo {
        model: model.clone(),
        protocol: args.protocol,
        backbone: features.metadata.get("backbone").cloned().unwrap_or_else(|| "unknown".into()),
        random_weights: features.random_weights(),
        weights: features.metadata.get("weights").cloned().unwrap_or_else(|| "unknown".into()),
        imagenet_normalize: features.metadata.get("imagenet_normalize").is_some_and(|v| v == "true"),
        features: args.features.display().to_string(),
        eval_unit: args.eval_unit,
        backbone_bn: if study.is_some() { "study".into() } else { "frozen".into() },
    };
    let bar = progress::bar(config.iterations as u64, &model);
    let results = run_experiment_with(features, &config, study, |it| {
        let dir = report::iteration_dir(&args.out, &model, it.index);
        report::write_iteration(&dir, &info, &config, it)?;
        if !it.outcome.history.is_empty() {
            plot::history(
                &it.outcome.history,
                &dir.join("history.png"),
                &format!("{model} iteration {} ({}){}", it.index, info.protocol, if info.random_weights { ", RANDOM-INIT backbone" } else { "" }),
            )
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
