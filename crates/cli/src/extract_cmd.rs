//! `tgc extract`: penultimate backbone features of every image of a data folder.

use std::path::PathBuf;
use std::time::Instant;

use crate::args::{load_backbone, weights_or_default, DeviceArg, SourceArgs};
use crate::parts::{self, ShardArgs};
use crate::progress;
use anyhow::{Context, Result};
use clap::Args;
use tgc_backbones::extract::{default_cache_dir, extract_features_of, ExtractConfig};
use tgc_backbones::{BackboneKind, WeightSource};
use tgc_data::FeatureSet;

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
    #[command(flatten)]
    pub shard: ShardArgs,
}

pub fn run(args: ExtractArgs) -> Result<()> {
    let shard = args.shard.resolve()?;
    let source = weights_or_default(args.backbone, args.weights.clone())?;
    let dataset = args.source.open(&args.data)?;
    let all: Vec<usize> = (0..dataset.len()).collect();
    let Some((indices, part)) = parts::take_images("extract", &args.out, shard, &dataset, &all)? else { return Ok(()) };
    let backbone = load_backbone(args.backbone, &source, args.imagenet_normalize, &args.device)?;
    let config = ExtractConfig {
        batch_size: args.batch_size,
        cache_dir: if args.no_cache { None } else { Some(args.cache_dir.clone().unwrap_or_else(default_cache_dir)) },
    };
    let bar = progress::bar(indices.len() as u64, &format!("{} features", args.backbone));
    let start = Instant::now();
    let (features, cached) = extract_features_of(&backbone, &dataset, &indices, &config, |done| bar.set_position(done as u64))
        .with_context(|| format!("extracting {} features", args.backbone))?;
    bar.finish_and_clear();
    let out = match &part {
        Some(part) => part.dir.join("part.features.safetensors"),
        None => args.out.clone(),
    };
    features.save(&out).with_context(|| format!("writing {}", out.display()))?;
    announce(&args, &features, &out, &format!("{cached} from cache, {:.1} s", start.elapsed().as_secs_f64()));
    if let Some(part) = part {
        part.finish(parts::image_items(&dataset, &all, &indices))?;
    }
    Ok(())
}

fn announce(args: &ExtractArgs, features: &FeatureSet, out: &std::path::Path, how: &str) {
    println!(
        "{} features [{} x {}] of {} written to {} ({how}){}",
        args.backbone,
        features.len(),
        features.dim,
        args.data.display(),
        out.display(),
        if features.random_weights() { " [random-init weights]" } else { "" }
    );
}

/// `tgc merge` of extraction parts: their rows in the one-process order, into `--out`.
pub fn merge(args: ExtractArgs, parts: &[(PathBuf, parts::PartRecord)]) -> Result<()> {
    let mut sets = Vec::new();
    for (dir, record) in parts {
        let path = dir.join("part.features.safetensors");
        let set = FeatureSet::load(&path).with_context(|| format!("reading {}", path.display()))?;
        sets.push((set, record.items.iter().map(|i| i.position).collect::<Vec<_>>()));
    }
    let total = parts[0].1.total;
    let features = FeatureSet::assemble(&sets, total).with_context(|| format!("joining the parts of {}", args.out.display()))?;
    features.save(&args.out).with_context(|| format!("writing {}", args.out.display()))?;
    announce(&args, &features, &args.out, &format!("merged from {} parts", parts.len()));
    Ok(())
}
