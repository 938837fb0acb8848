//! `tgc explain`: attributions of one slice, or of a few slices per class of a data split,
//! as safetensors files, overlay PNGs and the study's grid figure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Args, ValueEnum};
use tgc_backbones::{BackboneKind, Classifier, WeightSource};
use tgc_data::{read_nifti, train_test_split, Dataset, Label, Side};
use tgc_explain::render::{normalized_magnitude, overlay, save_png};
use tgc_explain::{
    GradCam, GradientShap, GradientShapConfig, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
    IntegratedGradientsConfig, Method, Saliency,
};

use crate::extract_cmd::{load_backbone, weights_or_default};
use crate::{plot, progress};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodName {
    Gradcam,
    GuidedBackprop,
    GuidedGradcam,
    GradientShap,
    Saliency,
    InputXGradient,
    IntegratedGradients,
}

impl MethodName {
    /// The column title used in the study's figures.
    pub fn title(self) -> &'static str {
        match self {
            Self::Gradcam => "GradCam",
            Self::GuidedBackprop => "Guided Backprop",
            Self::GuidedGradcam => "Guided GradCam",
            Self::GradientShap => "Gradient SHAP",
            Self::Saliency => "Saliency",
            Self::InputXGradient => "Input x Gradient",
            Self::IntegratedGradients => "Integrated Gradients",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitName {
    Train,
    Test,
    All,
}

/// A backbone and its trained linear head: what the explanation commands explain.
#[derive(Args)]
pub struct ModelArgs {
    #[arg(long)]
    pub backbone: BackboneKind,
    /// Backbone weights (default: the backbone's hub id).
    #[arg(long)]
    pub weights: Option<WeightSource>,
    /// Linear head checkpoint (`weight` [2, D], `bias` [2]) written by `tgc train`.
    #[arg(long)]
    pub head: PathBuf,
    /// Normalize inputs with the ImageNet mean and standard deviation (off in the study).
    #[arg(long)]
    pub imagenet_normalize: bool,
}

impl ModelArgs {
    /// Loads the backbone (saying so on screen when its weights are random) and the head.
    pub fn load(&self) -> Result<(Classifier, WeightSource)> {
        let source = weights_or_default(self.backbone, self.weights.clone())?;
        let backbone = load_backbone(self.backbone, &source, self.imagenet_normalize)?;
        let model = Classifier::load_head(backbone, &self.head).with_context(|| format!("loading head {}", self.head.display()))?;
        Ok((model, source))
    }
}

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// One slice to explain (`--out` is then a .safetensors file).
    #[arg(long, conflicts_with = "data")]
    pub input: Option<PathBuf>,
    /// A data folder: explain `--samples-per-class` slices per class of `--split` (`--out` is
    /// then a folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitName,
    #[arg(long, default_value_t = 3)]
    pub samples_per_class: usize,
    /// Methods, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    pub method: Vec<MethodName>,
    /// Target class (0 healthy, 1 disease). Default: the predicted class for --input, the
    /// image's label for --data.
    #[arg(long)]
    pub target: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Overlay PNG for --input.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// GradientSHAP samples.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// GradientSHAP noise standard deviation.
    #[arg(long, default_value_t = 0.0)]
    pub stdevs: f32,
    /// Integrated Gradients steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Seed of the split (with --data) and of GradientSHAP.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn method(name: MethodName, args: &ExplainArgs) -> Method {
    method_with(name, args.samples, args.stdevs, args.seed, args.steps)
}

/// A method with its settings.
pub fn method_with(name: MethodName, samples: usize, stdevs: f32, seed: u64, steps: usize) -> Method {
    match name {
        MethodName::Gradcam => Method::GradCam(GradCam),
        MethodName::GuidedBackprop => Method::GuidedBackprop(GuidedBackprop),
        MethodName::GuidedGradcam => Method::GuidedGradCam(GuidedGradCam),
        MethodName::GradientShap => Method::GradientShap(GradientShap::new(GradientShapConfig { n_samples: samples, stdevs, seed, ..Default::default() })),
        MethodName::Saliency => Method::Saliency(Saliency),
        MethodName::InputXGradient => Method::InputXGradient(InputXGradient),
        MethodName::IntegratedGradients => {
            Method::IntegratedGradients(IntegratedGradients::new(IntegratedGradientsConfig { steps, ..Default::default() }))
        }
    }
}

/// One explained slice: its model input and, per method, the attribution.
pub struct Explained {
    pub label: Option<Label>,
    pub input: Tensor,
    pub maps: Vec<(MethodName, tgc_explain::Attribution)>,
}

pub fn run(args: ExplainArgs) -> Result<()> {
    if let Some(t) = args.target {
        if t > 1 {
            bail!("--target must be 0 (healthy) or 1 (disease), got {t}");
        }
    }
    let (model, source) = args.model.load()?;
    let random = model.backbone.is_random();
    let kind = args.model.backbone;
    let meta = |m: MethodName, target: usize, input: &Path| {
        HashMap::from([
            ("method".to_owned(), method(m, &args).name().to_owned()),
            ("backbone".to_owned(), kind.as_str().to_owned()),
            ("weights".to_owned(), source.to_string()),
            ("random_weights".to_owned(), random.to_string()),
            ("head".to_owned(), args.model.head.display().to_string()),
            ("target".to_owned(), target.to_string()),
            ("input".to_owned(), input.display().to_string()),
        ])
    };
    match (&args.input, &args.data) {
        (Some(input), None) => {
            let image = read_nifti(input).with_context(|| format!("reading {}", input.display()))?;
            let x = model.backbone.preprocess(&image)?.unsqueeze(0)?;
            let target = match args.target {
                Some(t) => t,
                None => model.logits(&x)?.argmax(1)?.to_vec1::<u32>()?[0] as usize,
            };
            for &m in &args.method {
                let a = method(m, &args).attribute(&model, &x, &[target])?;
                let out = if args.method.len() == 1 { args.out.clone() } else { with_method_suffix(&args.out, m) };
                save_attribution(&out, &a, meta(m, target, input))?;
                if let Some(png) = &args.png {
                    let png = if args.method.len() == 1 { png.clone() } else { with_method_suffix(png, m) };
                    save_png(&overlay_of(&x, &a)?, &png)?;
                }
                println!("{} of {} (target {target}) written to {}", m.title(), input.display(), out.display());
            }
        }
        (None, Some(data)) => {
            let dataset = Dataset::open(data).with_context(|| format!("reading data folder {}", data.display()))?;
            let picked = pick(&dataset, args.split, args.seed, args.samples_per_class)?;
            std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
            let bar = progress::bar((picked.len() * args.method.len()) as u64, "explaining");
            let mut rows = Vec::new();
            for &i in &picked {
                let record = &dataset.records()[i];
                let x = model.backbone.preprocess(&dataset.load_image(i)?)?.unsqueeze(0)?;
                let target = args.target.unwrap_or(record.label.index());
                let stem = record.path.file_name().map(|n| n.to_string_lossy().replace(".nii.gz", "").replace(".nii", "")).unwrap_or_default();
                let mut maps = Vec::new();
                for &m in &args.method {
                    let a = method(m, &args).attribute(&model, &x, &[target])?;
                    let name = method(m, &args).name();
                    save_attribution(&args.out.join(format!("{stem}.{name}.safetensors")), &a, meta(m, target, &record.path))?;
                    save_png(&overlay_of(&x, &a)?, &args.out.join(format!("{stem}.{name}.png")))?;
                    maps.push((m, a));
                    bar.inc(1);
                }
                rows.push(Explained { label: Some(record.label), input: x, maps });
            }
            bar.finish_and_clear();
            let grid = args.out.join("grid.png");
            plot::attribution_grid(&rows, &grid, &format!("{}{}", kind.display_name(), if random { " (RANDOM-INIT weights)" } else { "" }))?;
            println!("{} slices × {} methods explained into {} (grid: {})", picked.len(), args.method.len(), args.out.display(), grid.display());
        }
        _ => bail!("give either --input FILE or --data DIR"),
    }
    if random {
        println!("NOTE: explanations of a RANDOM-INIT backbone");
    }
    Ok(())
}

/// `OUT.safetensors` → `OUT.<method>.safetensors` when several methods share one name.
fn with_method_suffix(path: &Path, m: MethodName) -> PathBuf {
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_extension(format!("{}.{ext}", m.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()))
}

/// The first `per_class` images of each class on one side of the seeded patient split.
pub fn pick(dataset: &Dataset, split: SplitName, seed: u64, per_class: usize) -> Result<Vec<usize>> {
    let indices: Vec<usize> = match split {
        SplitName::All => (0..dataset.len()).collect(),
        side => {
            let s = train_test_split(&dataset.patients(), 0.2, seed)?;
            s.indices(dataset, if side == SplitName::Test { Side::Test } else { Side::Train })
        }
    };
    let mut picked = Vec::new();
    for label in [Label::Healthy, Label::Disease] {
        picked.extend(indices.iter().copied().filter(|&i| dataset.records()[i].label == label).take(per_class));
    }
    Ok(picked)
}

/// Writes `attribution` (without the batch dimension), `logits` and, for Grad-CAM methods,
/// `layer_attribution` [h, w].
fn save_attribution(path: &Path, a: &tgc_explain::Attribution, metadata: HashMap<String, String>) -> Result<()> {
    let mut tensors = vec![("attribution", a.attribution.squeeze(0)?.to_device(&Device::Cpu)?), ("logits", a.logits.squeeze(0)?.to_device(&Device::Cpu)?)];
    if let Some(layer) = &a.layer_attribution {
        tensors.push(("layer_attribution", layer.squeeze(0)?.to_device(&Device::Cpu)?));
    }
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (*k, v)), Some(metadata)).map_err(|e| anyhow::anyhow!("{e}"))?;
    tgc_data::write_atomic(path, |w| std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())).with_context(|| format!("writing {}", path.display()))
}

/// The model input's first channel with the attribution overlaid.
pub fn overlay_of(x: &Tensor, a: &tgc_explain::Attribution) -> Result<image::RgbImage> {
    let slice: Vec<f32> = x.squeeze(0)?.get(0)?.flatten_all()?.to_vec1()?;
    let (values, h, w) = normalized_magnitude(&a.attribution.squeeze(0)?)?;
    Ok(overlay(&slice, &values, h, w, 0.7))
}
