//! `tgc extract`: penultimate backbone features of every image of a data folder.

use std::path::PathBuf;
use std::time::Instant;

use crate::args::{load_backbone, weights_or_default, DeviceArg, SourceArgs};
use crate::progress;
use anyhow::{Context, Result};
use clap::Args;
use tgc_backbones::extract::{default_cache_dir, extract_features, ExtractConfig};
use tgc_backbones::{BackboneKind, WeightSource};

#[derive(Args)]
pub struct ExtractArgs {
    /// resnet18 or vit.
    #[arg(long)]
    pub backbone: BackboneKind,
    /// Hub id (org/name[@revision]), folder, .safetensors file or random:<seed>.
    /// Default: the backbone's hub id in models/backbones.json.
    #[arg(long)]
    pub weights: Option<WeightSource>,
    /// Data folder: OASIS_2D (`disease/`, `healthy/`) or a BIDS dataset (with --slice, --labels).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output features file (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Recompute every image, neither reading nor writing the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Feature cache folder (default: $TGC_CACHE_DIR or ~/.cache/tgc/features).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Normalize inputs with the ImageNet mean and standard deviation (off in the study).
    #[arg(long)]
    pub imagenet_normalize: bool,
    /// Where the backbone runs: cpu, cuda or cuda:N (a CUDA build: scripts/build-cuda.sh).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
}

pub fn run(args: ExtractArgs) -> Result<()> {
    let source = weights_or_default(args.backbone, args.weights)?;
    let dataset = args.source.open(&args.data)?;
    let backbone = load_backbone(args.backbone, &source, args.imagenet_normalize, &args.device)?;
    let config =
        ExtractConfig { batch_size: args.batch_size, cache_dir: if args.no_cache { None } else { Some(args.cache_dir.unwrap_or_else(default_cache_dir)) } };
    let bar = progress::bar(dataset.len() as u64, &format!("{} features", args.backbone));
    let start = Instant::now();
    let (features, cached) = extract_features(&backbone, &dataset, &config, |done| bar.set_position(done as u64))
        .with_context(|| format!("extracting {} features", args.backbone))?;
    bar.finish_and_clear();
    features.save(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{} features [{} x {}] of {} written to {} ({} from cache, {:.1} s){}",
        args.backbone,
        features.len(),
        features.dim,
        args.data.display(),
        args.out.display(),
        cached,
        start.elapsed().as_secs_f64(),
        if backbone.is_random() { " [random-init weights]" } else { "" }
    );
    Ok(())
}
