//! `cargo xtask reproduce`: the whole TemporalGradCam experiment in one command. Builds `tgc`
//! in release and runs each step through it, skipping steps whose outputs are complete (a
//! marker per step records the command and the inputs that produced them: `steps.rs`), then
//! writes the report.

mod report;
mod slurm;
mod steps;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use steps::{Inputs, Runner};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the whole experiment (data statistics → features → training → explanations →
    /// temporal explanations → faithfulness → report).
    Reproduce(ReproduceArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocols {
    Holdout,
    Original,
    Both,
}

#[derive(Parser, Clone)]
pub struct ReproduceArgs {
    /// The data: an OASIS_2D folder (default data/OASIS_2D) or a BIDS dataset (then with
    /// --slice and --labels, passed to every step that reads the data; docs/DATA.md).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// ResNet-18 weights (default timm/resnet18.tv_in1k; random:<seed> for offline runs).
    #[arg(long)]
    pub weights_resnet: Option<String>,
    /// ViT weights (default google/vit-base-patch16-224).
    #[arg(long)]
    pub weights_vit: Option<String>,
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Iterations per experiment (default 5; 2 with --quick).
    #[arg(long)]
    pub iterations: Option<usize>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "holdout")]
    pub protocol: Protocols,
    /// Generate phantoms and use random-init backbones: fully offline, labelled as such.
    #[arg(long)]
    pub synthetic: bool,
    /// A smoke run: fewer iterations, epochs, samples and curve steps.
    #[arg(long)]
    pub quick: bool,
    /// Where the backbones run in feature extraction, explanations and faithfulness: cpu,
    /// cuda or cuda:N (then tgc is built with CUDA by scripts/build-cuda.sh, into target/cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Submit every step to Slurm (from a login node; tgc must be on a shared file system): the
    /// heavy steps as job arrays of --shards tasks, their merges held with
    /// --dependency=afterok, the rest as single jobs; each awaited in turn (scripts/slurm/).
    #[arg(long)]
    pub slurm: bool,
    /// Array tasks of each heavy step with --slurm.
    #[arg(long, default_value_t = 4, requires = "slurm")]
    pub shards: usize,
    /// At most this many tasks of an array at once (default: all of them).
    #[arg(long, requires = "slurm")]
    pub parallel: Option<usize>,
    /// More sbatch options for every job, e.g. "--partition=short --time=1:00:00".
    #[arg(long, requires = "slurm", allow_hyphen_values = true)]
    pub sbatch: Option<String>,
}

/// How every step reads `--data`: the same flags as `tgc`'s (see `tgc extract --help`), passed
/// through as given.
#[derive(clap::Args, Clone, Default)]
pub struct SourceArgs {
    /// oasis2d or bids (detected when left out); with --synthetic, the layout generated.
    #[arg(long)]
    pub layout: Option<String>,
    /// The slice 3-D scans are cut to: axial|coronal|sagittal:<index|mid>.
    #[arg(long)]
    pub slice: Option<String>,
    /// BIDS labels: TABLE:COLUMN=POS,…/NEG,… or TABLE:COLUMN>X; repeatable.
    #[arg(long)]
    pub labels: Vec<String>,
    #[arg(long)]
    pub space: Option<String>,
    #[arg(long)]
    pub desc: Option<String>,
    #[arg(long)]
    pub bids_filter: Vec<String>,
    #[arg(long)]
    pub day_column: Option<String>,
    #[arg(long)]
    pub label_subject_column: Option<String>,
    #[arg(long)]
    pub label_day_column: Option<String>,
    #[arg(long)]
    pub match_window: Option<u32>,
}

impl SourceArgs {
    /// The flags as `tgc` takes them.
    fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut one = |flag: &str, value: &Option<String>| {
            if let Some(v) = value {
                out.extend([format!("--{flag}"), v.clone()]);
            }
        };
        one("layout", &self.layout);
        one("slice", &self.slice);
        one("space", &self.space);
        one("desc", &self.desc);
        one("day-column", &self.day_column);
        one("label-subject-column", &self.label_subject_column);
        one("label-day-column", &self.label_day_column);
        one("match-window", &self.match_window.map(|w| w.to_string()));
        for l in &self.labels {
            out.extend([s("--labels"), l.clone()]);
        }
        for f in &self.bids_filter {
            out.extend([s("--bids-filter"), f.clone()]);
        }
        out
    }

    fn is_bids(&self) -> bool {
        self.layout.as_deref() == Some("bids")
    }
}

pub const BACKBONES: [(&str, &str); 2] = [("resnet18", "ResNet"), ("vit", "ViT")];

/// The methods of the report's second grid (`explain-more-*`) common to both backbones.
const MORE_METHODS: &str = "hirescam,gradcam++,xgradcam,layercam,eigencam,feature-ablation";

/// The second grid's methods for a backbone: the ViT's starts with its attention explanations;
/// Ablation-CAM runs the pass after the layer once per channel, cheap for ResNet-18's `layer4`
/// (35 ms an image), 768 transformer blocks an image for the ViT (40 s), so the ViT and
/// `--quick` leave it out.
fn more_methods(backbone: &str, quick: bool) -> String {
    match (backbone, quick) {
        ("vit", _) => format!("attention-rollout,chefer,{MORE_METHODS}"),
        (_, true) => MORE_METHODS.to_owned(),
        _ => format!("{MORE_METHODS},ablationcam"),
    }
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Task::Reproduce(args) => reproduce(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask's parent folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Writes `path` (creating its folder) through tgc-data's temporary-file-and-rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(tgc_data::write_atomic(path, |w| std::io::Write::write_all(w, bytes).map_err(|e| e.to_string()))?)
}

/// Removes `path`, a file or a folder with all it holds; a path that is not there is fine.
pub fn remove_path(path: &Path) -> Result<()> {
    let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}

/// Removes the entries of `dir` (files and folders) whose name `unwanted` picks; a missing
/// `dir` has none.
pub fn remove_entries(dir: &Path, unwanted: impl Fn(&str) -> bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        if path.file_name().is_some_and(|n| unwanted(&n.to_string_lossy())) {
            remove_path(&path)?;
        }
    }
    Ok(())
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn reproduce(args: ReproduceArgs) -> Result<()> {
    let start = Instant::now();
    let root = root();
    let out = if args.out.is_absolute() { args.out.clone() } else { std::env::current_dir()?.join(&args.out) };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let quick = args.quick;
    check_data(&args, &root)?;
    let tgc = build_tgc(&root, &args.device)?;
    let mut runner = Runner::new(tgc.clone(), out.clone());
    if args.slurm {
        if args.shards == 0 {
            bail!("--shards must be at least 1");
        }
        runner.slurm = Some(slurm::Slurm {
            shards: args.shards,
            parallel: args.parallel.unwrap_or(args.shards).max(1),
            logs: out.join("slurm"),
            extra: args.sbatch.as_deref().unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
        });
    }
    let (data, weights_resnet, weights_vit) = data_and_weights(&args, &root, &out, &mut runner)?;
    if weights_resnet.starts_with("random:") || weights_vit.starts_with("random:") {
        println!("NOTE: RANDOM-INIT backbone weights (resnet18: {weights_resnet}, vit: {weights_vit}); every output says so");
    }
    std::fs::create_dir_all(out.join("figures"))?;
    // Every step that reads the data reruns when its content changes.
    runner.data = Some(steps::data_fingerprint(&data)?);
    let plan = Plan { out: &out, data: &data, source: source_flags(&args), quick, seed: args.seed, device: &args.device };
    // 1. Data statistics.
    stats_step(&plan, &mut runner)?;
    // 2. Features.
    feature_steps(&plan, &mut runner, &weights_resnet, &weights_vit)?;
    // 3–4. Linear probes and temporal DNNs.
    let protocols: Vec<&str> = match args.protocol {
        Protocols::Holdout => vec!["holdout"],
        Protocols::Original => vec!["original"],
        Protocols::Both => vec!["holdout", "original"],
    };
    training_steps(&plan, &mut runner, &protocols, args.iterations.unwrap_or(if quick { 2 } else { 5 }))?;
    // 5–7. Explanations, temporal explanations and faithfulness, with iteration 0's models of
    // the first protocol, on that iteration's own test split.
    let mut temporal_patients: Vec<(&str, Vec<String>)> = Vec::new();
    for (b, model) in BACKBONES {
        temporal_patients.push((b, explanation_steps(&plan, &mut runner, protocols[0], b, model)?));
    }
    // 8. Report.
    let report_start = Instant::now();
    let cohort = cohort_description(&plan);
    report::write(&tgc, &out, &protocols, &temporal_patients, args.synthetic, cohort.as_deref(), &root.join("xtask/study_results.csv"))?;
    runner.timings.push(("report".into(), report_start.elapsed().as_secs_f64(), false));
    report::write_timings(&out, &runner.timings, start.elapsed().as_secs_f64())?;
    println!("report: {}", out.join("report.html").display());
    Ok(())
}

/// What the steps of one reproduction share.
struct Plan<'a> {
    out: &'a Path,
    data: &'a Path,
    /// How the steps read the data (`--layout`, `--slice`, `--labels` …).
    source: Vec<String>,
    quick: bool,
    seed: u64,
    /// `--device` of the steps that run a backbone.
    device: &'a str,
}

impl Plan<'_> {
    /// `--data DIR` and how to read it, for every step that reads the data.
    fn data_args(&self) -> Vec<String> {
        let mut args = vec![s("--data"), path(self.data)];
        args.extend(self.source.iter().cloned());
        args
    }
}

/// The source flags of every step: as given, and for a synthetic BIDS cohort the generated
/// tables' labels and the mid axial slice unless given.
fn source_flags(args: &ReproduceArgs) -> Vec<String> {
    let mut source = args.source.clone();
    if args.synthetic && source.is_bids() {
        if source.labels.is_empty() {
            source.labels.push(s("sessions:diagnosis=AD/CN"));
        }
        source.slice.get_or_insert_with(|| s("axial:mid"));
    }
    source.flags()
}

/// "a BIDS cohort (DIR), slice S, labels L" when the steps cut scans to a slice; `None` for
/// OASIS_2D.
fn cohort_description(plan: &Plan) -> Option<String> {
    let value = |flag: &str| plan.source.windows(2).filter(|w| w[0] == flag).map(|w| w[1].clone()).collect::<Vec<_>>();
    let slice = value("--slice").pop()?;
    Some(format!("a BIDS cohort ({}), 3-D scans cut to slice {slice}, labels {}", plan.data.display(), value("--labels").join(" and ")))
}

/// The real data folder must be there unless the run is synthetic.
fn check_data(args: &ReproduceArgs, root: &Path) -> Result<()> {
    if !args.synthetic {
        let data = args.data.clone().unwrap_or_else(|| root.join("data/OASIS_2D"));
        let bids = data.join("dataset_description.json").is_file()
            || std::fs::read_dir(&data).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("sub-"))).unwrap_or(false);
        if !bids && (!data.join("disease").is_dir() || !data.join("healthy").is_dir()) {
            bail!(
                "data folder {} not found (it needs disease/ and healthy/, or is a BIDS dataset).\n  Get OASIS_2D as data/README.md explains and pass --data DIR, \
                 or run fully offline on synthetic phantoms with random-init backbones: cargo xtask reproduce --synthetic",
                data.display()
            );
        }
        if bids && (args.source.slice.is_none() || args.source.labels.is_empty()) {
            bail!("{} is a BIDS dataset: give --slice axial|coronal|sagittal:<index|mid> and --labels (docs/DATA.md)", data.display());
        }
    }
    Ok(())
}

/// Builds the `tgc` binary (release; with CUDA through scripts/build-cuda.sh for a `cuda`
/// device) and returns its path.
fn build_tgc(root: &Path, device: &str) -> Result<PathBuf> {
    if device != "cpu" {
        println!("building tgc with CUDA (scripts/build-cuda.sh) for --device {device}…");
        let status = Command::new(root.join("scripts").join("build-cuda.sh")).current_dir(root).status().context("running scripts/build-cuda.sh")?;
        if !status.success() {
            bail!("scripts/build-cuda.sh failed: a CUDA build of tgc is needed for --device {device}");
        }
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target").join("cuda"));
        return Ok(target.join("release").join("tgc"));
    }
    println!("building tgc (release)…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "tgc-cli"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building tgc failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("tgc"))
}

/// The data folder (generated phantoms when synthetic) and each backbone's weights.
fn data_and_weights(args: &ReproduceArgs, root: &Path, out: &Path, runner: &mut Runner) -> Result<(PathBuf, String, String)> {
    let quick = args.quick;
    // Data and weights.
    Ok(if args.synthetic {
        let data = out.join("data");
        let (patients, size) = if quick { ("12", "64") } else { ("24", "256") };
        let mut synth = vec![s("data"), s("synth"), s("--out"), path(&data), s("--patients"), s(patients), s("--size"), s(size), s("--seed"), s(args.seed)];
        if args.source.is_bids() {
            synth.extend([s("--layout"), s("bids")]);
        }
        runner.step("synth", &synth, &Inputs { owns: Some(data.clone()), ..Inputs::default() })?;
        let random = format!("random:{}", args.seed);
        (data, args.weights_resnet.clone().unwrap_or_else(|| random.clone()), args.weights_vit.clone().unwrap_or(random))
    } else {
        (
            args.data.clone().unwrap_or_else(|| root.join("data/OASIS_2D")),
            args.weights_resnet.clone().unwrap_or_else(|| "timm/resnet18.tv_in1k".into()),
            args.weights_vit.clone().unwrap_or_else(|| "google/vit-base-patch16-224".into()),
        )
    })
}

/// Step 1: the data statistics, the history-length figure and the manifest.
fn stats_step(plan: &Plan, runner: &mut Runner) -> Result<()> {
    let out = plan.out;
    let figures = out.join("figures");
    let reads_data = || Inputs { data: true, ..Inputs::default() };
    let mut args = vec![s("data"), s("stats")];
    args.extend(plan.data_args());
    args.extend([s("--plot"), path(&figures.join("history_length.png")), s("--manifest"), path(&out.join("manifest.csv"))]);
    runner.step("stats", &args, &reads_data())
}

/// Step 2: the features of every backbone.
fn feature_steps(plan: &Plan, runner: &mut Runner, weights_resnet: &str, weights_vit: &str) -> Result<()> {
    let out = plan.out;
    let reads_data = || Inputs { data: true, ..Inputs::default() };
    let weights = |b: &str| {
        if b == "resnet18" {
            weights_resnet.to_owned()
        } else {
            weights_vit.to_owned()
        }
    };
    for (b, _) in BACKBONES {
        let w = weights(b);
        let features = out.join("features").join(format!("{b}.safetensors"));
        std::fs::create_dir_all(features.parent().unwrap_or(&out))?;
        let mut args = vec![s("extract"), s("--backbone"), s(b), s("--weights"), w.clone()];
        args.extend(plan.data_args());
        args.extend([s("--out"), path(&features), s("--device"), s(plan.device)]);
        runner.step(&format!("features-{b}"), &args, &reads_data()).map_err(|e| {
            if w.starts_with("random:") {
                e
            } else {
                e.context(format!(
                    "cannot get {b} weights `{w}`. Without network access, put the checkpoint in the Hugging Face cache \
                         (HF_HOME / HF_HUB_CACHE), pass a local folder with --weights-{}, or use random:<seed> (or --synthetic)",
                    if b == "resnet18" { "resnet" } else { "vit" }
                ))
            }
        })?;
    }

    Ok(())
}

/// Steps 3–4: the linear probes and temporal DNNs of every protocol and backbone.
fn training_steps(plan: &Plan, runner: &mut Runner, protocols: &[&str], iterations: usize) -> Result<()> {
    let (out, quick) = (plan.out, plan.quick);
    for p in protocols {
        for (b, _) in BACKBONES {
            let features = path(&out.join("features").join(format!("{b}.safetensors")));
            let runs = path(&out.join("runs").join(p));
            let mut common =
                vec![s("--features"), features, s("--out"), runs, s("--iterations"), s(iterations), s("--seed"), s(plan.seed), s("--protocol"), s(p)];
            let mut probe = vec![s("train")];
            probe.extend(common.clone());
            let mut dnn = vec![s("train-temporal"), s("--seq-len"), s(3)];
            if quick {
                probe.extend([s("--epochs"), s(5)]);
                common.extend([s("--epochs"), s(10)]);
            }
            dnn.extend(common);
            let after_features = || Inputs { after: vec![format!("features-{b}")], ..Inputs::default() };
            runner.step(&format!("train-{p}-{b}"), &probe, &after_features())?;
            runner.step(&format!("train-temporal-{p}-{b}"), &dnn, &after_features())?;
        }
    }

    Ok(())
}

/// Steps 5–7 for backbone `b` (its runs in folders named `model`): explanations, the library's
/// other methods, temporal strips and faithfulness; returns the patients whose strips were drawn.
fn explanation_steps(plan: &Plan, runner: &mut Runner, p0: &str, b: &str, model: &str) -> Result<Vec<String>> {
    let (out, quick) = (plan.out, plan.quick);
    let shap_samples = if quick { 5 } else { 50 };
    // The explanation steps read the probe of iteration 0 and the slices; each owns its folder.
    let explains = |folder: &str| Inputs { after: vec![format!("train-{p0}-{b}")], data: true, owns: Some(out.join(folder).join(b)) };
    let probe_dir = path(&out.join("runs").join(p0).join(model).join("0"));
    let per_class = if quick { 1 } else { 2 };
    // The test slices of the run, the same for the explanation and faithfulness steps.
    let mut slices = vec![s("--run"), probe_dir];
    slices.extend(plan.data_args());
    slices.extend([s("--split"), s("test"), s("--samples-per-class"), s(per_class), s("--device"), s(plan.device)]);
    let explain = |method_args: &[String], folder: &str| -> Vec<String> {
        let mut args = vec![s("explain")];
        args.extend(slices.iter().cloned());
        args.extend(method_args.iter().cloned());
        args.extend([s("--out"), path(&out.join(folder).join(b))]);
        args
    };
    runner.step(
        &format!("explain-{b}"),
        &explain(&[s("--samples"), s(shap_samples), s("--method"), s("gradient-shap,gradcam,guided-gradcam,guided-backprop")], "explanations"),
        &explains("explanations"),
    )?;
    // The library's other methods on the same slices, for the report's second grid: the
    // CAM family at the same layer (Score-CAM left out: one forward per channel), and
    // Feature Ablation on 32-pixel blocks.
    runner.step(
        &format!("explain-more-{b}"),
        &explain(&[s("--method"), s(more_methods(b, quick)), s("--grid"), s(if quick { 64 } else { 32 })], "explanations-more"),
        &explains("explanations-more"),
    )?;
    let dnn_dir = out.join("runs").join(p0).join(format!("{model}_seq_3")).join("0");
    let mut patients = report::test_patients_with_history(&dnn_dir, &out.join("manifest.csv"))?;
    patients.truncate(if quick { 1 } else { 3 });
    // The strips of patients an earlier configuration explained, or of an older layout.
    remove_entries(&out.join("temporal").join(b), |name| !patients.iter().any(|p| p == name))?;
    for patient in &patients {
        // One folder a patient, so that a rerun leaves no strip of an earlier configuration.
        let folder = out.join("temporal").join(b).join(patient);
        let mut args = vec![s("explain-temporal"), s("--run"), path(&dnn_dir)];
        args.extend(plan.data_args());
        args.extend([s("--patient"), s(patient), s("--out"), path(&folder), s("--device"), s(plan.device)]);
        runner.step(
            &format!("explain-temporal-{b}-{patient}"),
            &args,
            &Inputs { after: vec![format!("train-temporal-{p0}-{b}"), s("stats")], data: true, owns: Some(folder.clone()) },
        )?;
    }
    // The same slices as the explanations, measured.
    let mut faithfulness = vec![s("faithfulness")];
    faithfulness.extend(slices);
    faithfulness.extend([
        s("--samples"),
        s(shap_samples.min(20)),
        s("--curve-steps"),
        s(if quick { 5 } else { 20 }),
        s("--road-percentiles"),
        s(if quick { "50" } else { "20,40,60,80" }),
        s("--sensitivity-samples"),
        s(if quick { 2 } else { 5 }),
        s("--out"),
        path(&out.join("faithfulness").join(b)),
    ]);
    runner.step(&format!("faithfulness-{b}"), &faithfulness, &explains("faithfulness"))?;
    Ok(patients)
}
