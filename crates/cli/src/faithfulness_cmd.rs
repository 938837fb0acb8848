//! `tgc faithfulness`: deletion/insertion AUCs, the model-randomization check and, on phantoms,
//! energy inside the changed region and the pointing game, per method over a split.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};

use polars::prelude::{Column, DataFrame};
use tgc_backbones::{resize_bilinear_aa, Classifier, Randomize, WeightSource};
use tgc_data::{phantom, write_atomic, write_table, Dataset};
use tgc_explain::faithfulness::{compare_maps, evaluate, Baseline, CurveConfig, InfidelityConfig, Measures, Protocol, RoadConfig, SensitivityConfig};
use tgc_explain::Method;

use crate::args::{load_classifier, MethodArgs, MethodName, ModelArgs, SelectionArgs, SourceArgs};
use crate::parts::{self, ShardArgs};
use crate::progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BaselineName {
    Zero,
    Blur,
}

#[derive(Args)]
pub struct FaithfulnessArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub methods: MethodArgs,
    /// Steps of the deletion and insertion curves.
    #[arg(long, default_value_t = 20)]
    pub curve_steps: usize,
    /// Seed of the re-randomized head of the randomization check.
    #[arg(long, default_value_t = 0)]
    pub randomization_seed: u64,
    #[arg(long, value_enum, default_value = "zero")]
    pub baseline: BaselineName,
    /// ROAD: percentages of the pixels removed (and imputed), most and least relevant first.
    #[arg(long, value_delimiter = ',', default_value = "10,20,30,40,50,60,70,80,90")]
    pub road_percentiles: Vec<f32>,
    /// Skip ROAD (its imputations and forward passes).
    #[arg(long)]
    pub no_road: bool,
    /// Captum's infidelity: Gaussian perturbations per slice (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub infidelity_samples: usize,
    /// Infidelity: standard deviation of the perturbations (Captum's example, 0.003).
    #[arg(long, default_value_t = 0.003)]
    pub infidelity_std: f32,
    /// Infidelity without Captum's `normalize` (the least-squares rescaling of each map that
    /// makes methods of different scales comparable, on by default here).
    #[arg(long)]
    pub infidelity_raw: bool,
    /// Captum's sensitivity_max: re-explanations of perturbed slices per slice (0 skips it;
    /// each costs one explanation).
    #[arg(long, default_value_t = 10)]
    pub sensitivity_samples: usize,
    /// Sensitivity: radius of the L∞ ball the perturbations are drawn from (Captum's 0.02).
    #[arg(long, default_value_t = 0.02)]
    pub sensitivity_radius: f32,
    /// Output folder for faithfulness.csv (per slice), summary.csv and faithfulness.md.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub shard: ShardArgs,
}

/// Slices explained together: one forward/backward batch per method and model.
const IMAGES_PER_BATCH: usize = 8;

/// A batch of slices with what the cascade compares against.
struct SliceBatch {
    input: Tensor,
    targets: Vec<usize>,
    images: Vec<String>,
    /// Per slice: its position among the picked slices of the whole run.
    positions: Vec<usize>,
    /// Per slice: the known region (phantoms).
    masks: Vec<Option<Vec<f32>>>,
    /// Per slice, per method: the trained model's normalized map.
    maps: Vec<Vec<Vec<f32>>>,
}

/// One map of the randomisation cascade compared with the trained model's.
struct CascadeRow {
    method: MethodName,
    image: String,
    /// The slice's position among the picked slices of the whole run.
    position: usize,
    /// `head`, then the backbone stages (`layer4`, …, `stem`; `block11`, …, `embeddings`).
    stage: String,
    spearman: Option<f64>,
    ssim: Option<f64>,
}

/// One slice under one method: the library's measures and the re-randomised head's ρ.
struct Row {
    method: MethodName,
    image: String,
    /// The slice's position among the picked slices of the whole run.
    position: usize,
    measures: Measures,
    /// The re-randomised head's ρ, filled in by the cascade's first stage.
    randomization: Option<f64>,
}

/// The protocol's settings from the command line.
fn protocol(args: &FaithfulnessArgs) -> Result<Protocol> {
    if !args.no_road && args.road_percentiles.iter().any(|p| !(*p > 0.0 && *p < 100.0)) {
        anyhow::bail!("--road-percentiles must lie strictly between 0 and 100, got {:?}", args.road_percentiles);
    }
    let curve = CurveConfig {
        steps: args.curve_steps,
        baseline: match args.baseline {
            BaselineName::Zero => Baseline::Zero,
            BaselineName::Blur => Baseline::Blur { sigma_px: 5 },
        },
        batch_size: 16,
    };
    let road = (!args.no_road).then(|| RoadConfig {
        percentiles: args.road_percentiles.iter().map(|p| p / 100.0).collect(),
        seed: args.randomization_seed,
        ..RoadConfig::default()
    });
    let infidelity = (args.infidelity_samples > 0).then(|| InfidelityConfig {
        n_perturb_samples: args.infidelity_samples,
        noise_std: args.infidelity_std,
        normalize: !args.infidelity_raw,
        seed: args.randomization_seed ^ 0x1AF1DE,
        ..InfidelityConfig::default()
    });
    let sensitivity = (args.sensitivity_samples > 0).then(|| SensitivityConfig {
        n_perturb_samples: args.sensitivity_samples,
        perturb_radius: args.sensitivity_radius,
        seed: args.randomization_seed ^ 0x5E45,
    });
    Ok(Protocol { curve, road, infidelity, sensitivity })
}

/// The picked slices, preprocessed, in batches of [`IMAGES_PER_BATCH`], with their phantom masks.
fn slice_batches(
    model: &Classifier,
    dataset: &Dataset,
    picked: &[usize],
    position: &std::collections::HashMap<usize, usize>,
    is_phantom: bool,
) -> Result<Vec<SliceBatch>> {
    let mut batches = Vec::new();
    for chunk in picked.chunks(IMAGES_PER_BATCH) {
        let (mut xs, mut targets, mut images, mut masks, mut positions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &i in chunk {
            let record = &dataset.records()[i];
            let x = model.backbone.preprocess(&dataset.load_image(i)?)?.unsqueeze(0)?;
            let (_, _, h, w) = x.dims4()?;
            masks.push(if is_phantom {
                let m = phantom::load_mask(dataset, i)?;
                let resized = resize_bilinear_aa(m.pixels(), (m.height(), m.width()), (h, w));
                Some(resized.iter().map(|&v| if v > 0.5 { 1.0 } else { 0.0 }).collect::<Vec<f32>>())
            } else {
                None
            });
            targets.push(record.label.index());
            images.push(record.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            positions.push(position[&i]);
            xs.push(x);
        }
        batches.push(SliceBatch { input: Tensor::cat(&xs, 0)?, targets, images, positions, masks, maps: Vec::new() });
    }
    Ok(batches)
}

pub fn run(args: FaithfulnessArgs) -> Result<()> {
    let shard = args.shard.resolve()?;
    let choice = args.model.resolve()?;
    args.methods.check_backbone(choice.kind)?;
    let model = load_classifier(&choice)?;
    let random = model.backbone.is_random();
    // The randomization check: the same backbone with a re-randomized head (seeded).
    let (w, b) = (model.head_weight(), model.head_bias());
    let vb = tgc_backbones::load_weights(&WeightSource::Random { seed: args.randomization_seed ^ 0x0DD5EED }, &Device::Cpu)?.vb;
    let random_head =
        Classifier::new(model.backbone.clone(), vb.get(w.shape(), "randomized_head.weight")?, Tensor::zeros(b.shape(), DType::F32, &Device::Cpu)?)?;
    let dataset = args.source.open(&args.data)?;
    let all = args.selection.pick(&dataset, choice.run.as_ref())?;
    let Some((picked, part)) = parts::take_images("faithfulness", &args.out, shard, &dataset, &all)? else { return Ok(()) };
    let position: std::collections::HashMap<usize, usize> = all.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let is_phantom = phantom::is_phantom(&args.data);
    let protocol = protocol(&args)?;
    let methods = args.methods.methods(&choice.layer(&model.backbone)?)?;
    let method_list: Vec<Method> = methods.iter().map(|(_, m)| m.clone()).collect();
    let cascade = model.backbone.randomization_cascade();
    // One tick per slice and model: the trained one, the re-randomised head, each stage.
    let bar = progress::bar((picked.len() * (2 + cascade.len())) as u64, "faithfulness");
    let mut rows = Vec::new();
    let mut batches = slice_batches(&model, &dataset, &picked, &position, is_phantom)?;
    for batch in &mut batches {
        let started = std::time::Instant::now();
        let evaluation = evaluate(&model, &method_list, &batch.input, &batch.targets, &batch.masks, &protocol)
            .with_context(|| format!("explaining and measuring {}", batch.images.join(", ")))?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), slices = batch.images.len(), "explained with the trained model and measured");
        bar.inc(batch.images.len() as u64);
        for ((image, &at), measures) in batch.images.iter().zip(&batch.positions).zip(evaluation.measures) {
            for ((name, _), measures) in methods.iter().zip(measures) {
                rows.push(Row { method: *name, image: image.clone(), position: at, measures, randomization: None });
            }
        }
        batch.maps = evaluation.maps;
    }
    // The cascade (Adebayo et al. 2018): the head and then the backbone re-randomised from the
    // top down, cumulatively; each stage's maps compared with the trained model's.
    let mut cascade_rows: Vec<CascadeRow> = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    for (index, stage) in std::iter::once("head").chain(cascade.iter().map(|(stage, _)| stage.as_str())).enumerate() {
        let stage_model = if index == 0 {
            random_head.clone()
        } else {
            prefixes.extend(cascade[index - 1].1.iter().cloned());
            let randomize = Randomize { prefixes: prefixes.clone(), seed: args.randomization_seed ^ 0xCA5CADE };
            let started = std::time::Instant::now();
            let backbone = choice.load_randomized_backbone(randomize)?;
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), %stage, "re-randomised backbone loaded");
            Classifier::new(backbone, random_head.head_weight().clone(), random_head.head_bias().clone())?
        };
        for batch in &batches {
            let started = std::time::Instant::now();
            let similarity = compare_maps(&stage_model, &method_list, &batch.input, &batch.targets, &batch.maps)
                .with_context(|| format!("explaining {} (re-randomised {stage})", batch.images.join(", ")))?;
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), %stage, slices = batch.images.len(), "explained with the re-randomised model");
            for ((image, &at), row) in batch.images.iter().zip(&batch.positions).zip(similarity) {
                for ((name, _), s) in methods.iter().zip(row) {
                    cascade_rows.push(CascadeRow {
                        method: *name,
                        image: image.clone(),
                        position: at,
                        stage: stage.to_owned(),
                        spearman: s.spearman,
                        ssim: s.ssim,
                    });
                }
            }
            bar.inc(batch.images.len() as u64);
        }
    }
    bar.finish_and_clear();
    for row in &mut rows {
        row.randomization = cascade_rows.iter().find(|c| c.stage == "head" && c.method == row.method && c.image == row.image).and_then(|c| c.spearman);
    }
    let md = format!(
        "Faithfulness of {} explanations ({} weights{}), {} slices of the {} split, {}-step curves on a {} baseline.\n\n",
        choice.kind.display_name(),
        if random { "RANDOM-INIT" } else { "pretrained" },
        if is_phantom { ", synthetic phantoms" } else { "" },
        all.len(),
        format!("{:?}", args.selection.split).to_lowercase(),
        args.curve_steps,
        format!("{:?}", args.baseline).to_lowercase()
    );
    let stages: Vec<String> = std::iter::once("head".to_owned()).chain(cascade.iter().map(|(s, _)| s.clone())).collect();
    let names: Vec<MethodName> = methods.iter().map(|(m, _)| *m).collect();
    match part {
        Some(part) => {
            let saved = SavedPart::of(&names, &rows, &cascade_rows, stages, md, is_phantom);
            let path = part.dir.join(SAVED_ROWS);
            let text = serde_json::to_string(&saved)?;
            write_atomic(&path, |w| std::io::Write::write_all(w, text.as_bytes()).map_err(|e| e.to_string()))
                .with_context(|| format!("writing {}", path.display()))?;
            part.finish(parts::image_items(&dataset, &all, &picked))
        }
        None => {
            write_results(&args, &args.out, md, &names, &rows, &cascade_rows, &stages, is_phantom)?;
            println!("written to {}", args.out.display());
            Ok(())
        }
    }
}

/// A part's rows, for the merge: every number as its bits, so the merged tables are those of
/// one process to the last digit (NaN included).
const SAVED_ROWS: &str = "part.rows.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPart {
    header: String,
    is_phantom: bool,
    stages: Vec<String>,
    /// (position, method index, deletion, insertion, the optional measures in `Measures`'
    /// order — road MoRF, road LeRF, sparseness, complexity, infidelity, sensitivity, energy —,
    /// the pointing hit, the randomisation ρ).
    rows: Vec<(usize, usize, u32, u32, [Option<u64>; 7], Option<bool>, Option<u64>)>,
    /// (position, method index, stage, Spearman ρ, SSIM).
    cascade: Vec<(usize, usize, String, Option<u64>, Option<u64>)>,
    /// The images' names by position.
    images: Vec<(usize, String)>,
}

impl SavedPart {
    fn of(names: &[MethodName], rows: &[Row], cascade: &[CascadeRow], stages: Vec<String>, header: String, is_phantom: bool) -> Self {
        let index = |m: MethodName| names.iter().position(|n| *n == m).unwrap_or(0);
        let bits = |v: Option<f64>| v.map(f64::to_bits);
        let mut images: Vec<(usize, String)> = rows.iter().map(|r| (r.position, r.image.clone())).collect();
        images.dedup();
        SavedPart {
            header,
            is_phantom,
            stages,
            rows: rows
                .iter()
                .map(|r| {
                    let m = &r.measures;
                    let optional = [m.road_morf, m.road_lerf, m.sparseness, m.complexity, m.infidelity, m.sensitivity, m.energy].map(bits);
                    (r.position, index(r.method), m.deletion.to_bits(), m.insertion.to_bits(), optional, m.hit, bits(r.randomization))
                })
                .collect(),
            cascade: cascade.iter().map(|c| (c.position, index(c.method), c.stage.clone(), bits(c.spearman), bits(c.ssim))).collect(),
            images,
        }
    }
}

/// `tgc merge` of faithfulness parts: every part's rows in the one-process order (by slice,
/// then method; the cascade by stage, slice, method), written by [`write_results`].
pub fn merge(args: FaithfulnessArgs, parts: &[(PathBuf, parts::PartRecord)]) -> Result<()> {
    let names = args.methods.method.clone();
    let (mut rows, mut cascade_rows) = (Vec::new(), Vec::new());
    let mut first: Option<SavedPart> = None;
    for (dir, _) in parts {
        let path = dir.join(SAVED_ROWS);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let saved: SavedPart = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        let method = |j: usize| names.get(j).copied().with_context(|| format!("{}: method {j} of {} methods", path.display(), names.len()));
        let names_of: std::collections::HashMap<usize, &String> = saved.images.iter().map(|(q, n)| (*q, n)).collect();
        let image = |p: usize| names_of.get(&p).map(|n| (*n).clone()).unwrap_or_default();
        let float = |v: Option<u64>| v.map(f64::from_bits);
        for (position, j, deletion, insertion, o, hit, randomization) in &saved.rows {
            let [road_morf, road_lerf, sparseness, complexity, infidelity, sensitivity, energy] = o.map(float);
            let measures = tgc_explain::faithfulness::Measures {
                deletion: f32::from_bits(*deletion),
                insertion: f32::from_bits(*insertion),
                road_morf,
                road_lerf,
                sparseness,
                complexity,
                infidelity,
                sensitivity,
                energy,
                hit: *hit,
            };
            rows.push(Row { method: method(*j)?, image: image(*position), position: *position, measures, randomization: float(*randomization) });
        }
        for (position, j, stage, spearman, ssim) in &saved.cascade {
            cascade_rows.push(CascadeRow {
                method: method(*j)?,
                image: image(*position),
                position: *position,
                stage: stage.clone(),
                spearman: float(*spearman),
                ssim: float(*ssim),
            });
        }
        if let Some(f) = &first {
            if f.header != saved.header || f.stages != saved.stages {
                anyhow::bail!("{} and the first part describe different runs", path.display());
            }
        } else {
            first = Some(saved);
        }
    }
    let first = first.context("no parts")?;
    let order = |m: MethodName| names.iter().position(|n| *n == m).unwrap_or(0);
    let stage = |s: &str| first.stages.iter().position(|t| t == s).unwrap_or(0);
    rows.sort_by_key(|r| (r.position, order(r.method)));
    cascade_rows.sort_by_key(|c| (stage(&c.stage), c.position, order(c.method)));
    parts::write_folder(&args.out, |tmp| write_results(&args, tmp, first.header.clone(), &names, &rows, &cascade_rows, &first.stages, first.is_phantom))?;
    println!("{} parts merged into {}", parts.len(), args.out.display());
    Ok(())
}

/// Writes faithfulness.csv (per slice), randomization.csv (per stage), summary.csv and
/// faithfulness.md (whose first lines are `md`), and prints the Markdown.
#[allow(clippy::too_many_arguments)]
fn write_results(
    args: &FaithfulnessArgs,
    out: &std::path::Path,
    mut md: String,
    methods: &[MethodName],
    rows: &[Row],
    cascade_rows: &[CascadeRow],
    stages: &[String],
    is_phantom: bool,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let title = |m| args.methods.title(m).to_owned();
    let write = |name: &str, columns: Vec<Column>| -> Result<()> {
        let path = out.join(name);
        let height = columns.first().map_or(0, |c| c.len());
        let frame = DataFrame::new(height, columns).with_context(|| format!("building {}", path.display()))?;
        write_table(&frame, &path).with_context(|| format!("writing {}", path.display()))
    };
    write("faithfulness.csv", slice_columns(args, rows))?;
    md.push_str(
        "| Method | Deletion AUC ↓ | Insertion AUC ↑ | ROAD MoRF ↓ | ROAD LeRF ↑ | Randomization ρ ↓ | Energy in region ↑ | Pointing game ↑ | Sparseness | Complexity | Infidelity ↓ | Sensitivity ↓ |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut summary: Vec<(String, [Option<f64>; 11], u64)> = Vec::new();
    for &m in methods {
        let of: Vec<&Row> = rows.iter().filter(|r| r.method == m).collect();
        let del = mean(of.iter().map(|r| r.measures.deletion as f64).collect());
        let ins = mean(of.iter().map(|r| r.measures.insertion as f64).collect());
        let rnd = mean(of.iter().filter_map(|r| r.randomization).collect());
        let en = mean(of.iter().filter_map(|r| r.measures.energy).collect());
        let hit = mean(of.iter().filter_map(|r| r.measures.hit.map(|h| f64::from(u8::from(h)))).collect());
        let morf = mean(of.iter().filter_map(|r| r.measures.road_morf).collect());
        let lerf = mean(of.iter().filter_map(|r| r.measures.road_lerf).collect());
        let sparse = mean(of.iter().filter_map(|r| r.measures.sparseness).collect());
        let complex = mean(of.iter().filter_map(|r| r.measures.complexity).collect());
        let infid = mean(of.iter().filter_map(|r| r.measures.infidelity).collect());
        let sens = mean(of.iter().filter_map(|r| r.measures.sensitivity).collect());
        let cell = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into());
        // Infidelity is in squared logits: small values keep their digits.
        let cell_e = |v: Option<f64>| v.map(|v| format!("{v:.3e}")).unwrap_or_else(|| "n/a".into());
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            args.methods.title(m),
            cell(del),
            cell(ins),
            cell(morf),
            cell(lerf),
            cell(rnd),
            cell(en),
            cell(hit),
            cell(sparse),
            cell(complex),
            cell_e(infid),
            cell(sens)
        ));
        summary.push((title(m), [del, ins, rnd, en, hit, morf, lerf, sparse, complex, infid, sens], of.len() as u64));
    }
    md.push_str(&format!(
        "\nROAD: mean target probability after removing {} % of the pixels, most (MoRF) or least (LeRF) relevant first, filled in by noisy linear imputation. \
         Sparseness: Gini index of the map (higher = more concentrated); Complexity: entropy of the normalised map (lower = simpler).\n",
        if args.no_road { "(skipped)".to_owned() } else { args.road_percentiles.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ") }
    ));
    md.push_str(&format!(
        "Infidelity (Captum's `infidelity`, {}): mean squared gap between Σ perturbation · map and the target logit's change, over {} Gaussian perturbations \
         of std {} (divided by the input for the methods that multiply by it); Sensitivity (Captum's `sensitivity_max`): the largest relative change of the map \
         over {} re-explanations of the slice perturbed uniformly within ±{}.\n",
        if args.infidelity_raw { "not normalised" } else { "normalised: each map rescaled by its least-squares β first" },
        args.infidelity_samples,
        args.infidelity_std,
        args.sensitivity_samples,
        args.sensitivity_radius
    ));
    if !is_phantom {
        md.push_str("\nEnergy in region and pointing game need ground-truth masks (synthetic phantoms only).\n");
    }
    md.push_str(&cascade_table(args, methods, cascade_rows, stages));
    write(
        "randomization.csv",
        vec![
            Column::new("method".into(), cascade_rows.iter().map(|r| title(r.method)).collect::<Vec<_>>()),
            Column::new("image".into(), cascade_rows.iter().map(|r| r.image.clone()).collect::<Vec<_>>()),
            Column::new("stage".into(), cascade_rows.iter().map(|r| r.stage.clone()).collect::<Vec<_>>()),
            Column::new("spearman".into(), cascade_rows.iter().map(|r| r.spearman).collect::<Vec<_>>()),
            Column::new("ssim".into(), cascade_rows.iter().map(|r| r.ssim).collect::<Vec<_>>()),
        ],
    )?;
    let measure = |i: usize| summary.iter().map(|(_, v, _)| v[i]).collect::<Vec<_>>();
    write(
        "summary.csv",
        vec![
            Column::new("method".into(), summary.iter().map(|(m, _, _)| m.clone()).collect::<Vec<_>>()),
            Column::new("deletion_auc".into(), measure(0)),
            Column::new("insertion_auc".into(), measure(1)),
            Column::new("randomization_spearman".into(), measure(2)),
            Column::new("energy_in_region".into(), measure(3)),
            Column::new("pointing_hit_rate".into(), measure(4)),
            Column::new("slices".into(), summary.iter().map(|(_, _, n)| *n).collect::<Vec<_>>()),
            Column::new("road_morf".into(), measure(5)),
            Column::new("road_lerf".into(), measure(6)),
            Column::new("sparseness".into(), measure(7)),
            Column::new("complexity".into(), measure(8)),
            Column::new("infidelity".into(), measure(9)),
            Column::new("sensitivity_max".into(), measure(10)),
        ],
    )?;
    let path = out.join("faithfulness.md");
    write_atomic(&path, |w| std::io::Write::write_all(w, md.as_bytes()).map_err(|e| e.to_string())).with_context(|| format!("writing {}", path.display()))?;
    print!("{md}");
    Ok(())
}

/// The cascade's Markdown table: one column per stage, mean Spearman ρ / SSIM with the trained
/// model's map.
fn cascade_table(args: &FaithfulnessArgs, methods: &[MethodName], cascade_rows: &[CascadeRow], stages: &[String]) -> String {
    let mut table = String::new();
    table.push_str(&format!(
        "\nModel-parameter randomisation, cascading from the top (Adebayo et al. 2018): each column re-randomises the head and every stage to its left as well; \
         cells are the mean Spearman ρ / SSIM of the map with the trained model's (lower = the method depends on those weights; a method that stays near 1 does not).\n\n\
         | Method | {} |\n|---|{}\n",
        stages.join(" | "),
        "---|".repeat(stages.len())
    ));
    for &m in methods {
        let cells: Vec<String> = stages
            .iter()
            .map(|stage| {
                let of: Vec<&CascadeRow> = cascade_rows.iter().filter(|r| r.method == m && &r.stage == stage).collect();
                let rho = mean(of.iter().filter_map(|r| r.spearman).collect());
                let ss = mean(of.iter().filter_map(|r| r.ssim).collect());
                let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
                format!("{} / {}", f(rho), f(ss))
            })
            .collect();
        table.push_str(&format!("| {} | {} |\n", args.methods.title(m), cells.join(" | ")));
    }
    table
}

/// The mean, `None` for no values.
fn mean(v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        None
    } else {
        Some(v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// The columns of faithfulness.csv: one row per slice and method.
fn slice_columns(args: &FaithfulnessArgs, rows: &[Row]) -> Vec<Column> {
    let title = |m| args.methods.title(m).to_owned();
    vec![
        Column::new("method".into(), rows.iter().map(|r| title(r.method)).collect::<Vec<_>>()),
        Column::new("image".into(), rows.iter().map(|r| r.image.clone()).collect::<Vec<_>>()),
        Column::new("deletion_auc".into(), rows.iter().map(|r| r.measures.deletion as f64).collect::<Vec<_>>()),
        Column::new("insertion_auc".into(), rows.iter().map(|r| r.measures.insertion as f64).collect::<Vec<_>>()),
        Column::new("randomization_spearman".into(), rows.iter().map(|r| r.randomization).collect::<Vec<_>>()),
        Column::new("energy_in_region".into(), rows.iter().map(|r| r.measures.energy).collect::<Vec<_>>()),
        Column::new("pointing_hit".into(), rows.iter().map(|r| r.measures.hit.map(u32::from)).collect::<Vec<_>>()),
        Column::new("road_morf".into(), rows.iter().map(|r| r.measures.road_morf).collect::<Vec<_>>()),
        Column::new("road_lerf".into(), rows.iter().map(|r| r.measures.road_lerf).collect::<Vec<_>>()),
        Column::new("sparseness".into(), rows.iter().map(|r| r.measures.sparseness).collect::<Vec<_>>()),
        Column::new("complexity".into(), rows.iter().map(|r| r.measures.complexity).collect::<Vec<_>>()),
        Column::new("infidelity".into(), rows.iter().map(|r| r.measures.infidelity).collect::<Vec<_>>()),
        Column::new("sensitivity_max".into(), rows.iter().map(|r| r.measures.sensitivity).collect::<Vec<_>>()),
    ]
}
