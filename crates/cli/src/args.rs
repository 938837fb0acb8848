//! The arguments every explanation command shares — which model (`--run`, or `--backbone`,
//! `--weights`, `--model`, `--layer`), which methods and their settings, which slices — so that
//! `explain`, `explain-temporal` and `faithfulness` spell them the same way.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, Ops, Randomize, WeightSource};
use tgc_data::{train_test_split, Dataset, FeatureSet, Label, PatientId, Side};
use tgc_explain::{Baselines, HeadFusion, Method, MethodInfo, MethodSettings, Needs, NoiseTunnel, NoiseTunnelType, METHODS};

/// The weights a command uses: the given source, or the backbone's default hub id.
pub fn weights_or_default(kind: BackboneKind, weights: Option<WeightSource>) -> Result<WeightSource> {
    match weights {
        Some(w) => Ok(w),
        None => Ok(kind.default_weights().parse()?),
    }
}

/// `--device`: where the models run — `cpu` (the CPU kernels), `cuda` or `cuda:N` (the
/// device-generic ops on GPU `N`). Opening it is the check: a binary built without CUDA, or a
/// machine without that GPU, is refused here with the reason.
#[derive(Debug, Clone)]
pub struct DeviceArg(pub candle_core::Device);

impl Default for DeviceArg {
    fn default() -> Self {
        Self(candle_core::Device::Cpu)
    }
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let ordinal = match s {
            "cpu" => return Ok(Self::default()),
            "cuda" => 0,
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => n,
                _ => return Err(format!("`{other}`: give cpu, cuda or cuda:N")),
            },
        };
        if !cfg!(feature = "cuda") {
            return Err(format!("`{s}`: this tgc was built without CUDA; build it with scripts/build-cuda.sh (README: GPU)"));
        }
        // candle's message, without the backtrace it carries under RUST_BACKTRACE.
        let first_line = |e: candle_core::Error| e.to_string().lines().next().unwrap_or_default().to_owned();
        candle_core::Device::new_cuda(ordinal).map(Self).map_err(|e| format!("`{s}`: no CUDA device {ordinal} here: {}", first_line(e)))
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&tgc_backbones::device_name(&self.0))
    }
}

/// Which ops the backbones run: `TGC_OPS=generic` takes the device-generic ops (the GPU's
/// path) on the CPU too, to check that path end to end without a GPU; otherwise the CPU
/// kernels on the CPU.
pub fn ops() -> Ops {
    match std::env::var("TGC_OPS").as_deref() {
        Ok("generic") => Ops::Generic,
        _ => Ops::Auto,
    }
}

/// Loads a backbone on `device` and says on screen when its weights are random.
pub fn load_backbone(kind: BackboneKind, source: &WeightSource, imagenet_normalize: bool, device: &DeviceArg) -> Result<Backbone> {
    let options = LoadOptions { imagenet_normalize, device: device.0.clone(), ops: ops(), ..LoadOptions::default() };
    let backbone = Backbone::load(kind, source, &options).with_context(|| format!("loading {kind} weights from {source}"))?;
    if backbone.is_random() {
        println!("NOTE: {kind} uses RANDOM-INIT weights ({source}); results are not those of a pretrained model");
    }
    Ok(backbone)
}

/// The model to explain: a training iteration's folder, or each part named.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A training iteration's folder (`OUT/<model>/<iteration>` written by `tgc train` or
    /// `tgc train-temporal`): its checkpoint, backbone, weight source and test patients are used.
    #[arg(long, conflicts_with_all = ["model", "weights"])]
    pub run: Option<PathBuf>,
    /// resnet18 or vit (given by --run otherwise).
    #[arg(long)]
    pub backbone: Option<BackboneKind>,
    /// Backbone weights: hub id, folder, .safetensors file or random:<seed> (default: the
    /// backbone's hub id).
    #[arg(long)]
    pub weights: Option<WeightSource>,
    /// Checkpoint of the head (`tgc train`) or temporal DNN (`tgc train-temporal`).
    #[arg(long, alias = "head")]
    pub model: Option<PathBuf>,
    /// Normalize inputs with the ImageNet mean and standard deviation (off in the study; with
    /// --run, taken from the run, and refused when the run was trained without it).
    #[arg(long)]
    pub imagenet_normalize: bool,
    /// The layer of the layer methods (the CAM family, Guided Grad-CAM, Layer Integrated
    /// Gradients), by the checkpoint's name: layer1..layer4 for ResNet-18; for a ViT the block
    /// `encoder.layer.<N>` or its alias `block<N>` (the output of its `layernorm_before`); for
    /// the 3-D model stem, block1, down or block2. Default: the last.
    #[arg(long)]
    pub layer: Option<String>,
    /// Where the models run: cpu, cuda or cuda:N (a CUDA build: scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

/// What a training iteration's `config.json` says about it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub train_patients: BTreeSet<PatientId>,
    pub test_patients: BTreeSet<PatientId>,
    /// The features file the run was trained on (`run.features`), whose rows name its images.
    pub features: Option<PathBuf>,
}

impl RunRecord {
    /// Errs when a picked slice is not among the images of the run's features file (the same
    /// patient, day and label): `--data` then names another data set than the one the run was
    /// trained and tested on, and its "test split" would be other images under the same
    /// patient numbers. A features file that is gone is only warned about.
    fn check_images(&self, dataset: &Dataset, picked: &[usize]) -> Result<()> {
        let Some(path) = &self.features else { return Ok(()) };
        let set = match FeatureSet::load(path) {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(run = %self.dir.display(), "cannot check the slices against the run's features file: {e}");
                return Ok(());
            }
        };
        let known: HashSet<(i64, i64, i64)> = (0..set.len()).map(|i| (set.patient_id[i], set.day[i], set.label[i])).collect();
        for &i in picked {
            let r = &dataset.records()[i];
            if !known.contains(&(r.patient.number() as i64, i64::from(r.day), r.label.index() as i64)) {
                bail!(
                    "{} (patient {}, day {}, {}) is not among the images the run {} was trained and tested on ({}, extracted from {}): \
                     --data names another data set than the run's",
                    r.path.display(),
                    r.patient.number(),
                    r.day,
                    r.label,
                    self.dir.display(),
                    path.display(),
                    set.metadata.get("data").map_or("an unnamed folder", String::as_str)
                );
            }
        }
        Ok(())
    }
}

/// A model ready to load.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    pub kind: BackboneKind,
    pub source: WeightSource,
    pub checkpoint: PathBuf,
    pub imagenet_normalize: bool,
    /// `--layer` as given; [`ModelChoice::layer`] checks it against the loaded backbone.
    pub layer: Option<String>,
    pub run: Option<RunRecord>,
    pub device: DeviceArg,
}

impl ModelArgs {
    pub fn resolve(&self) -> Result<ModelChoice> {
        let Some(dir) = &self.run else {
            let (Some(kind), Some(checkpoint)) = (self.backbone, self.model.clone()) else {
                bail!("give --run DIR, or --backbone and --model");
            };
            return Ok(ModelChoice {
                kind,
                source: weights_or_default(kind, self.weights.clone())?,
                checkpoint,
                imagenet_normalize: self.imagenet_normalize,
                layer: self.layer.clone(),
                run: None,
                device: self.device.clone(),
            });
        };
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).with_context(|| format!("--run {}: reading {}", dir.display(), config_path.display()))?;
        let config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config_path.display()))?;
        let field = |path: &[&str]| -> Result<&serde_json::Value> {
            path.iter()
                .try_fold(&config, |v, k| v.get(k))
                .with_context(|| format!("{} has no `{}` (written by an older tgc? re-run training)", config_path.display(), path.join(".")))
        };
        let text_of = |path: &[&str]| -> Result<String> {
            field(path)?.as_str().map(str::to_owned).with_context(|| format!("{}: `{}` is not a string", config_path.display(), path.join(".")))
        };
        let kind: BackboneKind = text_of(&["run", "backbone"])?.parse().with_context(|| format!("{}: run.backbone", config_path.display()))?;
        if let Some(given) = self.backbone {
            if given != kind {
                bail!("--backbone {given} but the run {} used {kind}", dir.display());
            }
        }
        let source: WeightSource = text_of(&["run", "weights"])?.parse().with_context(|| format!("{}: run.weights", config_path.display()))?;
        let imagenet_normalize = field(&["run", "imagenet_normalize"])?.as_bool().unwrap_or(false);
        if self.imagenet_normalize && !imagenet_normalize {
            bail!("--imagenet-normalize but the run {} was trained on inputs without it (the run's setting is used; leave the flag out)", dir.display());
        }
        if field(&["run", "backbone_bn"]).ok().and_then(|v| v.as_str()) == Some("study") {
            println!(
                "NOTE: {} trained with the study's BatchNorm; explanations use the backbone's pretrained statistics, not the drifted ones in backbone_bn.safetensors",
                dir.display()
            );
        }
        let patients = |key: &str| -> Result<BTreeSet<PatientId>> {
            field(&[key])?
                .as_array()
                .with_context(|| format!("{}: `{key}` is not a list", config_path.display()))?
                .iter()
                .map(|p| p.as_u64().map(PatientId::new).with_context(|| format!("{}: `{key}` holds {p}, not a patient number", config_path.display())))
                .collect()
        };
        let mut train_patients = patients("train_patients")?;
        train_patients.extend(patients("validation_patients")?);
        let checkpoint = dir.join("model.safetensors");
        if !checkpoint.is_file() {
            bail!("--run {}: no model.safetensors in it", dir.display());
        }
        Ok(ModelChoice {
            kind,
            source,
            checkpoint,
            imagenet_normalize,
            layer: self.layer.clone(),
            run: Some(RunRecord {
                dir: dir.clone(),
                train_patients,
                test_patients: patients("test_patients")?,
                features: field(&["run", "features"]).ok().and_then(|v| v.as_str()).map(PathBuf::from),
            }),
            device: self.device.clone(),
        })
    }
}

impl ModelChoice {
    /// The backbone (announcing random weights on screen).
    pub fn load_backbone(&self) -> Result<Backbone> {
        load_backbone(self.kind, &self.source, self.imagenet_normalize, &self.device)
    }

    /// The layer the layer methods explain on `backbone`: `--layer` by the backbone's name for
    /// it, or the last.
    pub fn layer(&self, backbone: &Backbone) -> Result<String> {
        match &self.layer {
            Some(name) => backbone.layer(name).context("--layer"),
            None => Ok(backbone.last_layer()),
        }
    }

    /// The same backbone with the weights under `randomize.prefixes` re-drawn at random.
    pub fn load_randomized_backbone(&self, randomize: Randomize) -> Result<Backbone> {
        let what = format!("{:?}", randomize.prefixes);
        let options = LoadOptions { imagenet_normalize: self.imagenet_normalize, randomize: Some(randomize), device: self.device.0.clone(), ops: ops() };
        Backbone::load(self.kind, &self.source, &options)
            .with_context(|| format!("loading {} weights from {} with {what} re-randomized", self.kind, self.source))
    }
}

/// A built-in method named on the command line: a row of `tgc_explain::METHODS`, the one
/// table of names and titles.
#[derive(Clone, Copy, Debug)]
pub struct MethodName(&'static MethodInfo);

impl PartialEq for MethodName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for MethodName {}

impl ValueEnum for MethodName {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: std::sync::LazyLock<Vec<MethodName>> = std::sync::LazyLock::new(|| METHODS.iter().map(MethodName).collect());
        &ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name))
    }
}

impl MethodName {
    /// The method called `name` (a programming error when there is none).
    pub fn named(name: &str) -> Self {
        Self(tgc_explain::method_info(name).expect("a built-in method"))
    }

    /// The column title used in the study's figures.
    pub fn title(self) -> &'static str {
        self.0.title
    }

    /// The command-line spelling (`guided-gradcam`, …).
    pub fn cli_name(self) -> String {
        self.0.name.to_owned()
    }

    /// What the method needs of a model.
    pub fn needs(self) -> Needs {
        self.0.needs
    }
}

/// GradientSHAP's baseline distribution on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum BaselinesArg {
    Zeros,
    ZerosAndInput,
    Uniform,
    Gaussian,
    File(PathBuf),
}

impl std::str::FromStr for BaselinesArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "zeros" => Self::Zeros,
            "zeros-and-input" => Self::ZerosAndInput,
            "uniform" => Self::Uniform,
            "gaussian" => Self::Gaussian,
            path if path.ends_with(".safetensors") => Self::File(PathBuf::from(path)),
            other => return Err(format!("`{other}`: expected zeros, zeros-and-input, uniform, gaussian or a .safetensors file of baseline images")),
        })
    }
}

/// The methods to run and their settings.
#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    /// Methods, comma-separated.
    #[arg(long, alias = "methods", value_enum, value_delimiter = ',', default_value = "gradient-shap,gradcam,guided-gradcam,guided-backprop")]
    pub method: Vec<MethodName>,
    /// Baselines of GradientSHAP (default zeros-and-input), DeepLift (default zeros; one image)
    /// and DeepLiftShap (no default; two or more images): zeros (the all-zero image),
    /// zeros-and-input ({input·0, input·1}, Captum's tutorial), uniform (8 images of U[0, 1)
    /// noise), gaussian (8 images of N(0.5, 0.25²) noise), or a .safetensors file whose
    /// `baselines` tensor is [N, 3, H, W].
    #[arg(long)]
    pub baselines: Option<BaselinesArg>,
    /// Samples per image: GradientSHAP's (default 50), Shapley value sampling's feature orders
    /// (25), KernelSHAP's (25) and LIME's (50) coalitions.
    #[arg(long)]
    pub samples: Option<usize>,
    /// GradientSHAP: standard deviation of the Gaussian noise added to the input per sample.
    #[arg(long, default_value_t = 1e-4)]
    pub stdevs: f32,
    /// Integrated Gradients steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Seed of the sampling methods' draws (GradientSHAP's baselines, α and noise, noise
    /// baselines, the noise tunnel, Shapley orders, KernelSHAP's and LIME's coalitions,
    /// feature permutations).
    #[arg(long, default_value_t = 0)]
    pub sampling_seed: u64,
    /// Rows per forward/backward batch of GradientSHAP and Integrated Gradients (Captum's
    /// `internal_batch_size`); by default sized to memory (16 rows of a 3×256² image).
    #[arg(long)]
    pub internal_batch_size: Option<usize>,
    /// Score-CAM / Ablation-CAM: masked inputs or ablated activations per forward pass
    /// (defaults 16 and 128; pytorch-grad-cam's 16 and 32); the perturbation methods: perturbed inputs per
    /// forward pass (Captum's `perturbations_per_eval`; default 16, feature-permutation 4).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Occlusion: side of the square window (over all channels), in pixels.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Occlusion: step of the window, in pixels.
    #[arg(long, default_value_t = 8)]
    pub stride: usize,
    /// Side of the square pixel blocks (over all channels) that are one feature each: Feature
    /// Ablation (default 16) and the forward-only shapley-values, shapley-value-sampling,
    /// kernel-shap, lime and feature-permutation (default: one feature per element).
    #[arg(long)]
    pub grid: Option<usize>,
    /// Run every method under Captum's NoiseTunnel: smoothgrad, smoothgrad_sq or vargrad.
    #[arg(long, value_enum)]
    pub noise_tunnel: Option<NoiseTunnelName>,
    /// NoiseTunnel: noisy samples per image.
    #[arg(long, default_value_t = 10)]
    pub nt_samples: usize,
    /// NoiseTunnel: standard deviation of the Gaussian noise added to the input.
    #[arg(long, default_value_t = 0.1)]
    pub nt_stdevs: f32,
    /// Attention rollout (ViT): how each block's heads are fused.
    #[arg(long, value_enum, default_value = "mean")]
    pub head_fusion: HeadFusionName,
    /// Attention rollout (ViT): the fraction of each block's fused attention entries, the lowest,
    /// set to zero (the class token's attention to itself is kept).
    #[arg(long, default_value_t = 0.0)]
    pub discard_ratio: f32,
}

/// Attention rollout's head fusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HeadFusionName {
    Mean,
    Max,
    Min,
}

/// Captum's `nt_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoiseTunnelName {
    Smoothgrad,
    #[value(name = "smoothgrad_sq")]
    SmoothgradSq,
    Vargrad,
}

impl MethodArgs {
    /// Every method of `--method`, in order, with its settings.
    /// The chosen methods, the layer methods explaining `layer`.
    pub fn methods(&self, layer: &str) -> Result<Vec<(MethodName, Method)>> {
        self.method.iter().map(|&m| Ok((m, self.method(m)?.at_layer(layer)))).collect()
    }

    /// Refuses methods the backbone cannot give: the attention methods need the ViT.
    pub fn check_backbone(&self, kind: BackboneKind) -> Result<()> {
        if kind != BackboneKind::Vit {
            if let Some(m) = self.method.iter().find(|m| m.needs() == Needs::Attention) {
                bail!("--method {} explains a transformer's attention: it needs --backbone vit, not {kind}", m.cli_name());
            }
        }
        Ok(())
    }

    /// The title of a method in figures and tables, naming the noise tunnel when there is one.
    pub fn title(&self, name: MethodName) -> String {
        match self.noise_tunnel {
            Some(nt) => format!("{} ({})", name.title(), Self::tunnel_type(nt).name()),
            None => name.title().to_owned(),
        }
    }

    fn tunnel_type(nt: NoiseTunnelName) -> NoiseTunnelType {
        match nt {
            NoiseTunnelName::Smoothgrad => NoiseTunnelType::SmoothGrad,
            NoiseTunnelName::SmoothgradSq => NoiseTunnelType::SmoothGradSq,
            NoiseTunnelName::Vargrad => NoiseTunnelType::VarGrad,
        }
    }

    /// One method with its settings, under the noise tunnel when one is asked.
    pub fn method(&self, name: MethodName) -> Result<Method> {
        let method = self.bare_method(name)?;
        Ok(match self.noise_tunnel {
            None => method,
            Some(nt) => {
                if self.nt_samples == 0 {
                    bail!("--nt-samples must be at least 1");
                }
                Method::new(NoiseTunnel {
                    inner: method,
                    kind: Self::tunnel_type(nt),
                    samples: self.nt_samples,
                    stdevs: self.nt_stdevs,
                    seed: self.sampling_seed,
                })
            }
        })
    }

    fn bare_method(&self, name: MethodName) -> Result<Method> {
        if self.window == 0 || self.stride == 0 {
            bail!("--window and --stride must be at least 1 pixel");
        }
        for (flag, value) in [("--grid", self.grid), ("--samples", self.samples), ("--batch-size", self.batch_size)] {
            if value == Some(0) {
                bail!("{flag} must be at least 1");
            }
        }
        let head_fusion = match self.head_fusion {
            HeadFusionName::Mean => HeadFusion::Mean,
            HeadFusionName::Max => HeadFusion::Max,
            HeadFusionName::Min => HeadFusion::Min,
        };
        let gradient_shap = name.0.name == "gradient-shap";
        let baselines = match (&self.baselines, name.0.name) {
            (None, "gradient-shap") => Some(Baselines::ZerosAndInput),
            (Some(arg), "gradient-shap" | "deeplift" | "deeplift-shap") => Some(self.baselines(arg)?),
            _ => None,
        };
        let settings = MethodSettings {
            samples: self.samples.or(gradient_shap.then_some(50)),
            stdevs: Some(self.stdevs),
            baselines,
            steps: Some(self.steps),
            seed: self.sampling_seed,
            internal_batch_size: self.internal_batch_size,
            batch_size: self.batch_size,
            window: Some(self.window),
            stride: Some(self.stride),
            grid: self.grid.or((name.0.name == "feature-ablation").then_some(16)),
            head_fusion,
            discard_ratio: self.discard_ratio,
        };
        name.0.build(&settings).with_context(|| format!("--method {}", name.cli_name()))
    }

    fn baselines(&self, arg: &BaselinesArg) -> Result<Baselines> {
        let seed = self.sampling_seed ^ 0xBA5E;
        Ok(match arg {
            BaselinesArg::Zeros => Baselines::Zeros,
            BaselinesArg::ZerosAndInput => Baselines::ZerosAndInput,
            BaselinesArg::Uniform => Baselines::Uniform { count: 8, low: 0.0, high: 1.0, seed },
            BaselinesArg::Gaussian => Baselines::Gaussian { count: 8, mean: 0.5, std: 0.25, seed },
            BaselinesArg::File(path) => {
                let tensors =
                    candle_core::safetensors::load(path, &candle_core::Device::Cpu).with_context(|| format!("reading baselines {}", path.display()))?;
                let t = tensors.get("baselines").with_context(|| format!("{} has no `baselines` tensor [N, 3, H, W]", path.display()))?;
                Baselines::Images(t.clone())
            }
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitName {
    Train,
    Test,
    All,
}

/// Which slices of a data folder to explain.
#[derive(Args, Debug, Clone)]
pub struct SelectionArgs {
    /// Side of the patient split: with --run, the run's own stored patients; otherwise the
    /// split drawn with --split-seed.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitName,
    /// Seed of the patient split when no --run gives it.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Slices per class (the first ones of the split, in patient and day order).
    #[arg(long, default_value_t = 3)]
    pub samples_per_class: usize,
}

impl SelectionArgs {
    /// The first `samples_per_class` images of each class on the chosen side.
    pub fn pick(&self, dataset: &Dataset, run: Option<&RunRecord>) -> Result<Vec<usize>> {
        let indices: Vec<usize> = match (self.split, run) {
            (SplitName::All, _) => (0..dataset.len()).collect(),
            (side, Some(run)) => {
                let set = if side == SplitName::Test { &run.test_patients } else { &run.train_patients };
                let picked: Vec<usize> = (0..dataset.len()).filter(|&i| set.contains(&dataset.records()[i].patient)).collect();
                if picked.is_empty() {
                    bail!(
                        "none of the {} patients of the run {} is in this data folder",
                        if side == SplitName::Test { "test" } else { "training" },
                        run.dir.display()
                    );
                }
                picked
            }
            (side, None) => {
                let s = train_test_split(&dataset.patients(), 0.2, self.split_seed)?;
                s.indices(dataset, if side == SplitName::Test { Side::Test } else { Side::Train })
            }
        };
        let mut picked = Vec::new();
        for label in [Label::Healthy, Label::Disease] {
            picked.extend(indices.iter().copied().filter(|&i| dataset.records()[i].label == label).take(self.samples_per_class));
        }
        // The run's split is of the images it was trained on; `all` may be any folder.
        if let (Some(run), false) = (run, self.split == SplitName::All) {
            run.check_images(dataset, &picked)?;
        }
        Ok(picked)
    }
}

/// Whether this process flushes denormal numbers to zero, for the outputs' metadata: with
/// random weights whose BatchNorm shifts are zero, guided maps depend on it (docs/BACKBONES.md).
pub fn denormals() -> &'static str {
    if tgc_kernels::denormals::denormals_flushed() {
        "flushed to zero"
    } else {
        "kept"
    }
}

/// How `--data` is read, the same for every command that takes it: the layout (OASIS_2D or
/// BIDS, detected), the slice 3-D scans are cut to, and a BIDS cohort's filters, days and
/// label tables (docs/DATA.md).
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// The data folder's layout; detected when left out (a `dataset_description.json` or
    /// `sub-*` folders make it BIDS).
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// The slice every 3-D scan is cut to, after bringing it to RAS+:
    /// axial|coronal|sagittal:<index|mid> (axial:N counts from inferior).
    #[arg(long)]
    pub slice: Option<tgc_data::SliceSpec>,
    /// BIDS labels: TABLE:COLUMN=POS,…/NEG,… or TABLE:COLUMN>X (>=, <, <=), TABLE being
    /// `sessions`, `participants` or a clinical .csv/.tsv of visits; repeat to combine tables
    /// (they must agree).
    #[arg(long = "labels")]
    pub labels: Vec<tgc_data::LabelSpec>,
    /// Keep BIDS images with this `space-` entity (e.g. MNI152NLin2009cSym).
    #[arg(long)]
    pub space: Option<String>,
    /// Keep BIDS images with this `desc-` entity (e.g. preproc).
    #[arg(long)]
    pub desc: Option<String>,
    /// Keep BIDS images carrying this entity, KEY-VALUE (e.g. acq-mprage); repeatable.
    #[arg(long = "bids-filter")]
    pub bids_filter: Vec<String>,
    /// The sessions.tsv column holding each session's day (else `ses-d<digits>` labels, else
    /// the session's rank).
    #[arg(long)]
    pub day_column: Option<String>,
    /// A visit table's subject column (default: participant_id, OASISID, subject_id, subject).
    #[arg(long)]
    pub label_subject_column: Option<String>,
    /// A visit table's day column (default: days_to_visit, day, days).
    #[arg(long)]
    pub label_day_column: Option<String>,
    /// The largest distance in days between a scan and the visit that labels it.
    #[arg(long, default_value_t = 180)]
    pub match_window: u32,
    /// Only these participants (BIDS-Apps' --participant-label: a subject label with or
    /// without `sub-`, or an OASIS id); space- or comma-separated.
    #[arg(long = "participant-label", num_args = 1.., value_delimiter = ',')]
    pub participant_label: Vec<String>,
}

/// Where the output of `method` for record `index` goes under `out`, with extension `ext`:
/// `out/<image stem>.<method>.<ext>` for OASIS_2D slices; for a BIDS session the derivative
/// path `out/sub-X/[ses-Y/]anat/sub-X[_ses-Y]_desc-<method>_attribution.<ext>` (the method's
/// name without `_`, as BIDS labels are alphanumeric; folders made, and `out` made a BIDS
/// derivative dataset).
pub fn output_path(out: &Path, dataset: &Dataset, index: usize, method: &str, ext: &str) -> Result<PathBuf> {
    let record = &dataset.records()[index];
    let Some(session) = &record.session else {
        let stem = record.path.file_name().map(|n| n.to_string_lossy().replace(".nii.gz", "").replace(".nii", "")).unwrap_or_default();
        return Ok(out.join(format!("{stem}.{method}.{ext}")));
    };
    tgc_data::write_derivative_description(out, dataset.root(), "attributions").with_context(|| format!("writing {}", out.display()))?;
    let dir = out.join(session.folder()).join("anat");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let desc: String = method.chars().filter(char::is_ascii_alphanumeric).collect();
    Ok(dir.join(format!("{}_desc-{desc}_attribution.{ext}", session.prefix())))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    Oasis2d,
    Bids,
}

impl SourceArgs {
    /// The data layer's options.
    pub fn options(&self) -> Result<tgc_data::SourceOptions> {
        let mut filters = Vec::new();
        if let Some(space) = &self.space {
            filters.push(("space".to_owned(), space.clone()));
        }
        if let Some(desc) = &self.desc {
            filters.push(("desc".to_owned(), desc.clone()));
        }
        for f in &self.bids_filter {
            match f.split_once('-') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => filters.push((k.to_owned(), v.to_owned())),
                _ => bail!("--bids-filter {f}: expected KEY-VALUE, e.g. acq-mprage"),
            }
        }
        Ok(tgc_data::SourceOptions {
            layout: self.layout.map(|l| match l {
                LayoutArg::Oasis2d => tgc_data::Layout::Oasis2d,
                LayoutArg::Bids => tgc_data::Layout::Bids,
            }),
            slice: self.slice,
            filters,
            day_column: self.day_column.clone(),
            labels: self.labels.clone(),
            visit_match: tgc_data::VisitMatch {
                subject_column: self.label_subject_column.clone(),
                day_column: self.label_day_column.clone(),
                window_days: self.match_window,
            },
        })
    }

    /// Opens a data folder, naming it on error.
    pub fn open(&self, path: &Path) -> Result<Dataset> {
        let mut dataset = Dataset::open_with(path, &self.options()?).with_context(|| format!("reading data folder {}", path.display()))?;
        if !self.participant_label.is_empty() {
            dataset.retain_participants(&self.participant_label)?;
        }
        if let Some(days) = &dataset.report().day_source {
            if *days == tgc_data::DaySource::Rank {
                println!("note: {days}");
            }
        }
        Ok(dataset)
    }
}

/// The backbone of `choice` with its trained head.
pub fn load_classifier(choice: &ModelChoice) -> Result<Classifier> {
    let backbone = choice.load_backbone()?;
    Classifier::load_head(backbone, &choice.checkpoint).with_context(|| format!("loading head {}", choice.checkpoint.display()))
}
