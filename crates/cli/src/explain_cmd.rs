//! `tgc explain`: attributions of one slice, or of a few slices per class of a data split,
//! as safetensors files, overlay PNGs and the study's grid figure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use tgc_backbones::{ResNet3d, WeightSource};
use tgc_data::{read_nifti, read_nifti_volume, write_nifti_volume, write_slice_map};
use tgc_explain::render::save_png;

use crate::args::{denormals, load_classifier, output_path, MethodArgs, ModelArgs, SelectionArgs, SourceArgs};
use crate::parts::{self, ShardArgs};
use crate::plot::{self, overlay_of, Explained};
use crate::progress;

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// One slice to explain (`--out` is then a .safetensors file); a 3-D scan with --slice
    /// (the map is then also written into the scan's geometry, `--out` with `.nii.gz`).
    #[arg(long, conflicts_with = "data")]
    pub input: Option<PathBuf>,
    /// A data folder: explain `--samples-per-class` slices per class of `--split` (`--out` is
    /// then a folder; a BIDS derivative dataset for a BIDS input). With --volume-weights and a
    /// BIDS data set without --slice: the 3-D model over its scans.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub methods: MethodArgs,
    /// Target class (0 healthy, 1 disease). Default: the predicted class for --input, the
    /// image's label for --data.
    #[arg(long)]
    pub target: Option<usize>,
    #[arg(long)]
    pub out: PathBuf,
    /// Overlay PNG for --input.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// A 3-D NIfTI volume, explained with the 3-D model of `--volume-weights` (`--out` is then
    /// a folder: a NIfTI map, a safetensors file and a PNG of three orthogonal slices per method).
    #[arg(long, conflicts_with_all = ["input", "data", "run", "backbone", "model", "weights"])]
    pub volume: Option<PathBuf>,
    /// Weights of the 3-D model (tgc_backbones::ResNet3d): a .safetensors file, or random:<seed>.
    #[arg(long, conflicts_with_all = ["input", "run", "backbone", "model", "weights"])]
    pub volume_weights: Option<WeightSource>,
    #[command(flatten)]
    pub shard: ShardArgs,
}

/// `tgc explain`: one slice, a split's slices, or a volume.
pub fn run(args: ExplainArgs) -> Result<()> {
    if let Some(t) = args.target {
        if t > 1 {
            bail!("--target must be 0 (healthy) or 1 (disease), got {t}");
        }
    }
    let shard = args.shard.resolve()?;
    if shard.is_some() && args.data.is_none() {
        bail!("--shard splits a data set: give --data DIR (one --input or --volume is one item)");
    }
    if let Some(volume) = &args.volume {
        return explain_volume(&args, volume);
    }
    if let (Some(data), Some(_)) = (&args.data, &args.volume_weights) {
        return explain_volumes(&args, data, shard);
    }
    let choice = args.model.resolve()?;
    args.methods.check_backbone(choice.kind)?;
    let model = load_classifier(&choice)?;
    let random = model.backbone.is_random();
    let ops = model.backbone.ops_description();
    let kind = choice.kind;
    let layer = choice.layer(&model.backbone)?;
    let methods = args.methods.methods(&layer)?;
    let meta = |m: &tgc_explain::Method, target: usize, input: &Path| {
        let mut meta = HashMap::from([
            ("method".to_owned(), m.name().to_owned()),
            ("backbone".to_owned(), kind.as_str().to_owned()),
            ("weights".to_owned(), choice.source.to_string()),
            ("random_weights".to_owned(), random.to_string()),
            ("head".to_owned(), choice.checkpoint.display().to_string()),
            ("layer".to_owned(), layer.clone()),
            ("target".to_owned(), target.to_string()),
            ("input".to_owned(), input.display().to_string()),
            ("orientation".to_owned(), tgc_data::ORIENTATION.to_owned()),
            ("denormals".to_owned(), denormals().to_owned()),
            ("ops".to_owned(), ops.clone()),
        ]);
        if let Some(run) = &choice.run {
            meta.insert("run".to_owned(), run.dir.display().to_string());
        }
        meta
    };
    match (&args.input, &args.data) {
        (Some(input), None) => {
            // A 3-D scan is cut to --slice, as a BIDS data set's scans are.
            let image = match args.source.slice {
                Some(spec) => tgc_data::read_slice(input, spec),
                None => read_nifti(input),
            }
            .with_context(|| format!("reading {}", input.display()))?;
            let x = model.backbone.preprocess(&image)?.unsqueeze(0)?;
            let target = match args.target {
                Some(t) => t,
                None => model.logits(&x)?.argmax(1)?.to_vec1::<u32>()?[0] as usize,
            };
            let all: Vec<tgc_explain::Method> = methods.iter().map(|(_, m)| m.clone()).collect();
            let results = tgc_explain::Method::attribute_all(&all, &model, &x, &[target]).with_context(|| format!("explaining {}", input.display()))?;
            for ((m, method), a) in methods.iter().zip(results) {
                let out = if methods.len() == 1 { args.out.clone() } else { with_method_suffix(&args.out, &method.name()) };
                save_attribution(&out, &a, meta(method, target, input))?;
                if let Some(spec) = args.source.slice {
                    let nifti = out.with_extension("nii.gz");
                    let map = map_at_image_size(&a, image.height(), image.width())?;
                    write_slice_map(&nifti, input, spec, &map).with_context(|| format!("writing {}", nifti.display()))?;
                }
                if let Some(png) = &args.png {
                    let png = if methods.len() == 1 { png.clone() } else { with_method_suffix(png, &method.name()) };
                    save_png(&overlay_of(&x, &a)?, &png)?;
                }
                println!("{} of {} (target {target}) written to {}{}", args.methods.title(*m), input.display(), out.display(), delta_note(&a)?);
            }
        }
        (None, Some(data)) => {
            let dataset = args.source.open(data)?;
            let all = args.selection.pick(&dataset, choice.run.as_ref())?;
            let Some((picked, part)) = parts::take_images("explain", &args.out, shard, &dataset, &all)? else { return Ok(()) };
            let base = part.as_ref().map_or(args.out.clone(), |p| p.dir.clone());
            std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
            let bar = progress::bar((picked.len() * methods.len()) as u64, "explaining");
            let mut rows = Vec::new();
            for &i in &picked {
                rows.push(explain_record(&args, &model, &methods, &meta, &dataset, i, &base, &bar)?);
            }
            bar.finish_and_clear();
            let title = format!("{}{}", kind.display_name(), if random { " (RANDOM-INIT weights)" } else { "" });
            match part {
                Some(part) => {
                    let items = parts::image_items(&dataset, &all, &picked);
                    save_grid_rows(&part.dir.join(GRID_ROWS), &rows, &items, &title)?;
                    part.finish(items)?;
                }
                None => {
                    let grid = args.out.join("grid.png");
                    plot::attribution_grid(&rows, &grid, &title)?;
                    println!("{} slices × {} methods explained into {} (grid: {})", picked.len(), methods.len(), args.out.display(), grid.display());
                }
            }
        }
        _ => bail!("give either --input FILE or --data DIR"),
    }
    if random {
        println!("NOTE: explanations of a RANDOM-INIT backbone");
    }
    Ok(())
}

/// Every method on record `i` of `dataset`, its files written under `base` (the map, its
/// overlay and, for a cut scan, the map in the scan's geometry); returns the grid's row.
#[allow(clippy::too_many_arguments)]
fn explain_record(
    args: &ExplainArgs,
    model: &tgc_backbones::Classifier,
    methods: &[(crate::args::MethodName, tgc_explain::Method)],
    meta: &dyn Fn(&tgc_explain::Method, usize, &Path) -> HashMap<String, String>,
    dataset: &tgc_data::Dataset,
    i: usize,
    base: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<Explained> {
    let record = &dataset.records()[i];
    let x = model.backbone.preprocess(&dataset.load_image(i)?)?.unsqueeze(0)?;
    let target = args.target.unwrap_or(record.label.index());
    let mut maps = Vec::new();
    let all: Vec<tgc_explain::Method> = methods.iter().map(|(_, m)| m.clone()).collect();
    let results = tgc_explain::Method::attribute_all(&all, model, &x, &[target]).with_context(|| format!("explaining {}", record.path.display()))?;
    for ((m, method), a) in methods.iter().zip(results) {
        let name = method.name();
        if a.convergence_delta.is_some() {
            tracing::info!("{} of {}: {}", args.methods.title(*m), record.path.display(), delta_note(&a)?.trim_start_matches([';', ' ']));
        }
        let mut metadata = meta(method, target, &record.path);
        if let Some(slice) = dataset.slice() {
            metadata.insert("slice".to_owned(), slice.to_string());
            metadata.insert("slice_layout".to_owned(), tgc_data::SLICE_LAYOUT.to_owned());
            // The map in the scan's own geometry, at its slice.
            let image = dataset.load_image(i)?;
            let map = map_at_image_size(&a, image.height(), image.width())?;
            let nifti = output_path(base, dataset, i, &name, "nii.gz")?;
            write_slice_map(&nifti, &record.path, slice, &map).with_context(|| format!("writing {}", nifti.display()))?;
        }
        save_attribution(&output_path(base, dataset, i, &name, "safetensors")?, &a, metadata)?;
        save_png(&overlay_of(&x, &a)?, &output_path(base, dataset, i, &name, "png")?)?;
        maps.push((args.methods.title(*m), a));
        bar.inc(1);
    }
    Ok(Explained { label: Some(record.label), input: x, maps })
}

/// The map of one image as a 2-D image of the image's size: the channel sum, resized
/// (bilinear, align_corners false) where the backbone resized the image.
fn map_at_image_size(a: &tgc_explain::Attribution, height: usize, width: usize) -> Result<tgc_data::Image> {
    let map = a.attribution.to_device(&Device::Cpu)?.squeeze(0)?.sum_keepdim(0)?.unsqueeze(0)?;
    let (_, _, h, w) = map.dims4()?;
    let map = if (h, w) == (height, width) { map } else { tgc_explain::upsample_bilinear(&map, (height, width))? };
    Ok(tgc_data::Image::new(height, width, map.flatten_all()?.to_vec1()?)?)
}

/// The 3-D model of `--volume-weights`, announced when random.
fn load_volume_model(args: &ExplainArgs) -> Result<(ResNet3d, WeightSource)> {
    let source = args.volume_weights.clone().context("--volume needs --volume-weights FILE.safetensors or random:<seed>")?;
    let model = ResNet3d::load_on(&source, &args.model.device.0).with_context(|| format!("loading the 3-D model from {source}"))?;
    if model.is_random() {
        tracing::warn!(source = %source, "RANDOM-INIT 3-D model weights: outputs are not those of a trained model");
        println!("NOTE: the 3-D model uses RANDOM-INIT weights ({source}); its explanations say nothing about a trained model");
    }
    Ok((model, source))
}

/// `tgc explain --data BIDS --volume-weights …` (no --slice): the 3-D model over the chosen
/// sessions' scans, each map in its scan's geometry, written as a BIDS derivative.
fn explain_volumes(args: &ExplainArgs, data: &Path, shard: Option<tgc_data::Shard>) -> Result<()> {
    if args.source.slice.is_some() {
        bail!("--volume-weights explains whole scans: leave out --slice (the 2-D models take --slice)");
    }
    let dataset = args.source.open(data)?;
    if dataset.layout() != tgc_data::Layout::Bids {
        bail!("--volume-weights with --data needs a BIDS data set of 3-D scans; {} is OASIS_2D (2-D slices)", data.display());
    }
    let all = args.selection.pick(&dataset, None)?;
    let Some((picked, part)) = parts::take_images("explain", &args.out, shard, &dataset, &all)? else { return Ok(()) };
    let base = part.as_ref().map_or(args.out.clone(), |p| p.dir.clone());
    let (model, source) = load_volume_model(args)?;
    let bar = progress::bar(picked.len() as u64, "explaining scans");
    for &i in &picked {
        let out = |method: &str, ext: &str| output_path(&base, &dataset, i, method, ext);
        explain_one_volume(args, &model, &source, &dataset.records()[i].path, &out, Some(dataset.records()[i].label.index()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{} scans explained with the 3-D model into {}", picked.len(), base.display());
    if let Some(part) = part {
        part.finish(parts::image_items(&dataset, &all, &picked))?;
    }
    Ok(())
}

/// `tgc explain --volume`: every method on one volume with the 3-D model.
fn explain_volume(args: &ExplainArgs, path: &Path) -> Result<()> {
    let (model, source) = load_volume_model(args)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let stem = path.file_name().map(|n| n.to_string_lossy().replace(".nii.gz", "").replace(".nii", "")).unwrap_or_default();
    let out = |method: &str, ext: &str| Ok(args.out.join(format!("{stem}.{method}.{ext}")));
    explain_one_volume(args, &model, &source, path, &out, args.target)
}

/// Every method on one volume with the 3-D model, into the files `out(method, ext)` names. The
/// volume is scaled to [0, 1] (min–max) as the model's input `[1, 1, D, H, W]`.
fn explain_one_volume(
    args: &ExplainArgs,
    model: &ResNet3d,
    source: &WeightSource,
    path: &Path,
    out: &dyn Fn(&str, &str) -> Result<PathBuf>,
    target: Option<usize>,
) -> Result<()> {
    let volume = read_nifti_volume(path).with_context(|| format!("reading {}", path.display()))?;
    let (d, h, w) = volume.dims();
    let (lo, hi) = volume.voxels.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let scaled: Vec<f32> = volume.voxels.iter().map(|v| (v - lo) / (hi - lo).max(f32::MIN_POSITIVE)).collect();
    let x = candle_core::Tensor::from_vec(scaled.clone(), (1, 1, d, h, w), &args.model.device.0)?;
    let scaled = volume.with_voxels(scaled)?;
    let layers = tgc_explain::Model::layers(&model);
    let layer = args.model.layer.clone().unwrap_or_else(|| layers[layers.len() - 1].clone());
    if !layers.contains(&layer) {
        bail!("--layer `{layer}`: the 3-D model has {}", layers.join(", "));
    }
    let methods = args.methods.methods(&layer)?;
    let all: Vec<tgc_explain::Method> = methods.iter().map(|(_, m)| m.clone()).collect();
    let logits = tgc_explain::Model::forward(model, &x, &tgc_explain::Hooks::none())?;
    let target = match args.target.or(target) {
        Some(t) => t,
        None => logits.argmax(1)?.to_vec1::<u32>()?[0] as usize,
    };
    let results = tgc_explain::Method::attribute_all(&all, model, &x, &[target]).with_context(|| format!("explaining {}", path.display()))?;
    let stem = path.file_name().map(|n| n.to_string_lossy().replace(".nii.gz", "").replace(".nii", "")).unwrap_or_default();
    for ((m, method), a) in methods.iter().zip(&results) {
        let name = method.name();
        // One channel in, so every map is [1, 1, D, H, W] (the layer methods' too).
        let map: Vec<f32> = a.attribution.flatten_all()?.to_vec1()?;
        let nifti = out(&name, "nii.gz")?;
        write_nifti_volume(&nifti, &volume.with_voxels(map.clone())?)?;
        let meta = HashMap::from([
            ("method".to_owned(), name.to_owned()),
            ("model".to_owned(), "resnet3d".to_owned()),
            ("weights".to_owned(), source.to_string()),
            ("random_weights".to_owned(), model.is_random().to_string()),
            ("layer".to_owned(), layer.clone()),
            ("target".to_owned(), target.to_string()),
            ("input".to_owned(), path.display().to_string()),
            ("orientation".to_owned(), tgc_data::ORIENTATION.to_owned()),
            ("denormals".to_owned(), denormals().to_owned()),
            ("device".to_owned(), args.model.device.to_string()),
        ]);
        save_attribution(&out(&name, "safetensors")?, a, meta)?;
        // The slices through the map's largest |value|.
        let peak = map.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map(|(i, _)| i).unwrap_or(0);
        let at = (peak / (h * w), peak / w % h, peak % w);
        let png = out(&name, "png")?;
        let title = format!("{} of {stem}, target {target}{}", args.methods.title(*m), if model.is_random() { " — RANDOM-INIT 3-D model" } else { "" });
        plot::orthogonal_slices(&scaled, &map, at, &png, &title)?;
        println!("{} of {} (target {target}) written to {} and {}{}", args.methods.title(*m), path.display(), nifti.display(), png.display(), delta_note(a)?);
    }
    Ok(())
}

/// `; convergence delta …` for a result with one (Σ attribution − (f(x) − f(baseline)) of the
/// first image), empty otherwise.
fn delta_note(a: &tgc_explain::Attribution) -> Result<String> {
    let Some(delta) = &a.convergence_delta else {
        return Ok(String::new());
    };
    let delta = delta.to_device(&Device::Cpu)?.to_vec1::<f32>()?.first().copied().unwrap_or(f32::NAN);
    Ok(format!("; convergence delta {delta:.3e}"))
}

/// `OUT.safetensors` → `OUT.<method>.safetensors` when several methods share one name.
fn with_method_suffix(path: &Path, method: &str) -> PathBuf {
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_extension(format!("{method}.{ext}"))
}

/// Writes `attribution` (without the batch dimension), `logits` (when computed; always, for
/// results of `attribute_all`), for the layer methods `layer_attribution` (Grad-CAM's [h, w],
/// Layer Integrated Gradients' [K, h, w]) and, for the methods with one, Captum's
/// `convergence_delta` [1].
fn save_attribution(path: &Path, a: &tgc_explain::Attribution, metadata: HashMap<String, String>) -> Result<()> {
    let mut tensors = vec![("attribution", a.attribution.squeeze(0)?.to_device(&Device::Cpu)?)];
    if let Some(logits) = &a.logits {
        tensors.push(("logits", logits.squeeze(0)?.to_device(&Device::Cpu)?));
    }
    if let Some(layer) = &a.layer_attribution {
        tensors.push(("layer_attribution", layer.squeeze(0)?.to_device(&Device::Cpu)?));
    }
    if let Some(delta) = &a.convergence_delta {
        tensors.push(("convergence_delta", delta.to_device(&Device::Cpu)?));
    }
    let bytes = tgc_data::safetensors_bytes(tensors.iter().map(|(k, v)| (*k, v)), metadata).map_err(|e| anyhow::anyhow!("{e}"))?;
    tgc_data::write_atomic(path, |w| std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())).with_context(|| format!("writing {}", path.display()))
}

/// A part's grid rows: each explained slice's input and maps, for the merge to draw the grid.
const GRID_ROWS: &str = "part.grid.safetensors";

/// Writes the rows of the grid figure (`input.P`, `map.P.J`, `label.P` for the slice at
/// position P, the titles and the figure's title in the metadata).
fn save_grid_rows(path: &Path, rows: &[Explained], items: &[parts::Item], title: &str) -> Result<()> {
    let cpu = Device::Cpu;
    let mut tensors: Vec<(String, candle_core::Tensor)> = Vec::new();
    for (row, item) in rows.iter().zip(items) {
        let p = item.position;
        tensors.push((format!("input.{p}"), row.input.to_device(&cpu)?));
        for (j, (_, a)) in row.maps.iter().enumerate() {
            tensors.push((format!("map.{p}.{j}"), a.attribution.to_device(&cpu)?));
        }
        let label = row.label.map_or(-1.0, |l| l.index() as f32);
        tensors.push((format!("label.{p}"), candle_core::Tensor::from_slice(&[label], 1, &cpu)?));
    }
    let titles: Vec<&str> = rows.first().map(|r| r.maps.iter().map(|(t, _)| t.as_str()).collect()).unwrap_or_default();
    let metadata = HashMap::from([("titles".to_owned(), serde_json::to_string(&titles)?), ("title".to_owned(), title.to_owned())]);
    let bytes = tgc_data::safetensors_bytes(tensors.iter().map(|(k, v)| (k.as_str(), v)), metadata).map_err(|e| anyhow::anyhow!("{e}"))?;
    tgc_data::write_atomic(path, |w| std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string())).with_context(|| format!("writing {}", path.display()))
}

/// `tgc merge` of explanation parts: every part's files, and the grid of all slices drawn in
/// the one-process order.
pub fn merge(args: ExplainArgs, parts: &[(PathBuf, parts::PartRecord)]) -> Result<()> {
    let mut rows: Vec<(usize, Explained)> = Vec::new();
    let mut title = None;
    for (dir, record) in parts {
        let path = dir.join(GRID_ROWS);
        if !path.is_file() {
            continue; // the 3-D model's parts draw no grid
        }
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).with_context(|| format!("reading {}", path.display()))?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let titles: Vec<String> = serde_json::from_str(meta.get("titles").map_or("[]", String::as_str))?;
        title = meta.get("title").cloned();
        for item in &record.items {
            let p = item.position;
            let get = |key: String| tensors.get(&key).cloned().with_context(|| format!("{} lacks {key}", path.display()));
            let maps = titles
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    let attribution = get(format!("map.{p}.{j}"))?;
                    Ok((t.clone(), tgc_explain::Attribution { attribution, layer_attribution: None, logits: None, convergence_delta: None }))
                })
                .collect::<Result<Vec<_>>>()?;
            let label = get(format!("label.{p}"))?.to_vec1::<f32>()?[0];
            let label = if label < 0.0 { None } else { tgc_data::Label::from_index(label as usize) };
            rows.push((p, Explained { label, input: get(format!("input.{p}"))?, maps }));
        }
    }
    rows.sort_by_key(|(p, _)| *p);
    let rows: Vec<Explained> = rows.into_iter().map(|(_, r)| r).collect();
    parts::write_folder(&args.out, |tmp| {
        let files = parts::copy_outputs(parts, tmp)?;
        if let Some(title) = &title {
            plot::attribution_grid(&rows, &tmp.join("grid.png"), title)?;
        }
        println!("{files} files of {} parts merged into {}{}", parts.len(), args.out.display(), if title.is_some() { " (grid: grid.png)" } else { "" });
        Ok(())
    })
}
