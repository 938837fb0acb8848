//! `tgc explain-temporal`: which visits, and which regions of each visit's image, drove the
//! temporal model's prediction for one patient.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use tgc_data::PatientId;
use tgc_explain::{GradCam, GuidedGradCam, InputXGradient, IntegratedGradients, IntegratedGradientsConfig, Method};
use tgc_temporal::explain_temporal::{step_importance, Visits};
use tgc_temporal::model::Head;

use crate::args::{denormals, MethodName, ModelArgs, SourceArgs};
use crate::parts::{self, ShardArgs};
use crate::plot;

#[derive(Args)]
pub struct ExplainTemporalArgs {
    /// The temporal model: `--run` a `tgc train-temporal` iteration folder, or `--backbone`,
    /// `--weights` and `--model` (its checkpoint).
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Patient, as `OAS30001`, `30001` or (BIDS) `sub-<label>`. Left out: every patient (of
    /// --participant-label, if given; in shards with --shard), each into its own files.
    #[arg(long)]
    pub patient: Option<String>,
    /// The visit to explain (default: the patient's last).
    #[arg(long)]
    pub day: Option<u32>,
    /// Target class (default: the predicted one).
    #[arg(long)]
    pub target: Option<usize>,
    /// Per-visit maps through the temporal model, comma-separated: gradcam, guided-gradcam.
    #[arg(long, alias = "methods", value_enum, value_delimiter = ',', default_value = "gradcam,guided-gradcam")]
    pub method: Vec<MethodName>,
    /// Integrated Gradients steps for the time-step importance.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub shard: ShardArgs,
}

pub fn run(args: ExplainTemporalArgs) -> Result<()> {
    if let Some(m) = args.method.iter().find(|m| !matches!(m.cli_name().as_str(), "gradcam" | "guided-gradcam")) {
        bail!("--method {}: explain-temporal draws per-visit maps with gradcam and guided-gradcam", m.cli_name());
    }
    if !args.method.contains(&MethodName::named("gradcam")) {
        bail!("--method must include gradcam (the strip figure shows it)");
    }
    let shard = args.shard.resolve()?;
    let choice = args.model.resolve()?;
    let dataset = args.source.open(&args.data)?;
    let patients: Vec<PatientId> = match &args.patient {
        Some(text) => {
            if shard.is_some() {
                bail!("--shard splits the data set's patients: leave out --patient");
            }
            vec![dataset
                .find_patient(text)
                .with_context(|| format!("--patient {text}: no such patient in {} (give OAS30001, 30001 or sub-<label>)", args.data.display()))?]
        }
        None if args.day.is_some() => bail!("--day picks one patient's visit: give --patient too"),
        None => dataset.patients().keys().copied().collect(),
    };
    // The shard's patients: whole participants, balanced by their visits.
    let (mine, part) = match shard {
        Some(shard) => {
            let Some(part) = parts::begin("explain-temporal", &args.out, shard, &patients.iter().map(|p| p.to_string()).collect::<Vec<_>>())? else {
                return Ok(());
            };
            let images: Vec<usize> = patients.iter().flat_map(|p| dataset.visits_of(p)).collect();
            let assigned = tgc_data::assign_shards(&dataset, &images, shard.count);
            (patients.iter().copied().filter(|p| assigned.get(p) == Some(&shard.index)).collect(), Some(part))
        }
        None => (patients.clone(), None),
    };
    let base = part.as_ref().map_or(args.out.clone(), |p| p.dir.clone());
    let checkpoint = &choice.checkpoint;
    let state = candle_core::safetensors::load(checkpoint, &Device::Cpu).with_context(|| format!("reading {}", checkpoint.display()))?;
    let head = Head::from_state_dict(&state).with_context(|| format!("reading the temporal model {}", checkpoint.display()))?;
    if !matches!(head, Head::Dnn(_)) {
        bail!("{} is a linear probe, not a temporal DNN checkpoint", checkpoint.display());
    }
    let backbone = choice.load_backbone()?;
    let head = head.to_device(backbone.device())?;
    let layer = choice.layer(&backbone)?;
    let bar = crate::progress::bar(mine.len() as u64, "explaining patients");
    for patient in &mine {
        explain_patient(&args, &choice, &dataset, *patient, &backbone, &head, &layer, &base)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if backbone.is_random() {
        println!("NOTE: explanations of a RANDOM-INIT backbone");
    }
    if let Some(part) = part {
        let items = mine.iter().map(|p| parts::Item { position: patients.iter().position(|q| q == p).unwrap_or(0), name: p.to_string() }).collect();
        part.finish(items)?;
    }
    Ok(())
}

/// `tgc merge` of explain-temporal parts: every patient's files, in one folder.
pub fn merge(args: ExplainTemporalArgs, parts: &[(PathBuf, parts::PartRecord)]) -> Result<()> {
    parts::write_folder(&args.out, |tmp| {
        let files = parts::copy_outputs(parts, tmp)?;
        println!("{files} files of {} parts merged into {}", parts.len(), args.out.display());
        Ok(())
    })
}

/// One patient's temporal explanation into `out`: `<patient>_d<day>.safetensors` and `.png`.
#[allow(clippy::too_many_arguments)]
fn explain_patient(
    args: &ExplainTemporalArgs,
    choice: &crate::args::ModelChoice,
    dataset: &tgc_data::Dataset,
    patient: PatientId,
    backbone: &tgc_backbones::Backbone,
    head: &Head,
    layer: &str,
    out: &std::path::Path,
) -> Result<()> {
    let visits = dataset.visits_of(&patient);
    if visits.is_empty() {
        bail!("patient {patient} has no images in {}", args.data.display());
    }
    let upto: Vec<usize> = match args.day {
        Some(d) => visits.iter().copied().filter(|&i| dataset.records()[i].day <= d).collect(),
        None => visits.clone(),
    };
    let Some(&current) = upto.last() else { bail!("patient {patient} has no visit on or before day {}", args.day.unwrap_or(0)) };
    if let Some(d) = args.day {
        if dataset.records()[current].day != d {
            bail!("patient {patient} has no visit on day {d} (visits: {:?})", visits.iter().map(|&i| dataset.records()[i].day).collect::<Vec<_>>());
        }
    }
    let checkpoint = &choice.checkpoint;
    let dim = backbone.feature_dim();
    let width = head.input_width()?;
    if width % dim != 0 {
        bail!("{} takes {width} inputs, not a multiple of the {dim} features of {}", checkpoint.display(), choice.kind);
    }
    let used = &upto[upto.len().saturating_sub(width / dim)..];
    let images = used.iter().map(|&i| dataset.load_image(i)).collect::<tgc_data::Result<Vec<_>>>()?;
    let input = backbone.preprocess_batch(&images)?;
    let visits = Visits::new(&backbone, &head, &input)?;
    let seq_len = visits.seq_len();
    let sequence = visits.sequence()?;
    let logits: Vec<f32> = head.forward_eval(&Tensor::from_slice(&sequence, (1, width), backbone.device())?)?.flatten_all()?.to_vec1()?;
    let target = args.target.unwrap_or(usize::from(logits[1] > logits[0]));
    if target > 1 {
        bail!("--target must be 0 or 1");
    }
    let ig_method = Method::new(IntegratedGradients::new(IntegratedGradientsConfig { steps: args.steps, ..Default::default() }));
    let ig = step_importance(&head, &sequence, dim, target, &ig_method)?;
    let ixg = step_importance(&head, &sequence, dim, target, &Method::new(InputXGradient))?;
    let k = used.len();
    let cam = visits.attribute(&Method::new(GradCam::default()).at_layer(&layer), &input, target)?;
    let guided = if args.method.contains(&MethodName::named("guided-gradcam")) {
        Some(visits.attribute(&Method::new(GuidedGradCam::default()).at_layer(&layer), &input, target)?)
    } else {
        None
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let days: Vec<i64> = used.iter().map(|&i| dataset.records()[i].day as i64).collect();
    let cpu = Device::Cpu;
    let mut tensors = vec![
        ("gradcam", cam.attribution.to_device(&cpu)?),
        ("layer_attribution", cam.layer_attribution.clone().context("Grad-CAM layer map")?.to_device(&cpu)?),
        ("step_importance_ig", Tensor::from_slice(&ig, seq_len, &cpu)?),
        ("step_importance_ixg", Tensor::from_slice(&ixg, seq_len, &cpu)?),
        ("logits", Tensor::from_slice(&logits, 2, &cpu)?),
        ("days", Tensor::from_slice(&days, k, &cpu)?),
    ];
    if let Some(g) = &guided {
        tensors.push(("guided_gradcam", g.attribution.to_device(&cpu)?));
    }
    let mut metadata = HashMap::from([
        ("patient".to_owned(), patient.to_string()),
        ("patient_id".to_owned(), patient.number().to_string()),
        ("target".to_owned(), target.to_string()),
        ("backbone".to_owned(), choice.kind.as_str().to_owned()),
        ("weights".to_owned(), choice.source.to_string()),
        ("random_weights".to_owned(), backbone.is_random().to_string()),
        ("model".to_owned(), checkpoint.display().to_string()),
        ("layer".to_owned(), layer.to_owned()),
        ("orientation".to_owned(), tgc_data::ORIENTATION.to_owned()),
        ("denormals".to_owned(), denormals().to_owned()),
        ("ops".to_owned(), backbone.ops_description()),
        ("seq_len".to_owned(), seq_len.to_string()),
        ("note".to_owned(), "steps are left-padded; step_importance[i] is for step i of seq_len, the last step is the explained visit".to_owned()),
    ]);
    if let Some(run) = &choice.run {
        metadata.insert("run".to_owned(), run.dir.display().to_string());
    }
    let file = out.join(format!("{patient}_d{:04}.safetensors", dataset.records()[current].day));
    let bytes = tgc_data::safetensors_bytes(tensors.iter().map(|(k, v)| (*k, v)), metadata).map_err(|e| anyhow::anyhow!("{e}"))?;
    tgc_data::write_atomic(&file, |w| std::io::Write::write_all(w, &bytes).map_err(|e| e.to_string()))?;
    let strip = file.with_extension("png");
    let title = format!(
        "{patient}: temporal {} prediction {} (p = {:.2}){}",
        choice.kind.display_name(),
        if target == 1 { "disease" } else { "healthy" },
        softmax(&logits)[target],
        if backbone.is_random() { " — RANDOM-INIT backbone" } else { "" }
    );
    plot::temporal_strip(&input, &cam, &days, &ig, &strip, &title)?;
    println!("temporal explanation of {patient} ({k} of {seq_len} steps real) written to {} and {}", file.display(), strip.display());
    println!("time-step importance (IG, oldest first): {}", ig.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", "));
    Ok(())
}

fn softmax(l: &[f32]) -> Vec<f32> {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = l.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}
