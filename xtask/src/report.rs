//! The report: `results.md`, `results.csv`, `figures/`, `timings.json` and a self-contained
//! `report.html` (tables inline, images relative to it).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::{remove_entries, write_atomic, BACKBONES};

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    serde_json::from_str(&read(&path)?).with_context(|| format!("parsing {}", path.display()))
}

/// Test patients of an iteration ordered by number of visits, most first; those with at least
/// two visits when there are any, else the single test patient with the most (a one-visit
/// sequence is still a valid, padded, input of the temporal model).
pub fn test_patients_with_history(dir: &Path, manifest: &Path) -> Result<Vec<String>> {
    let test: Vec<String> = config(dir)?["test_patients"]
        .as_array()
        .ok_or_else(|| anyhow!("{}/config.json has no test_patients", dir.display()))?
        .iter()
        .filter_map(|p| p.as_u64().map(|n| n.to_string()))
        .collect();
    let mut visits: HashMap<String, usize> = HashMap::new();
    for row in table(manifest)?.1 {
        let patient = row.get("patient_id").ok_or_else(|| anyhow!("{} has no patient_id column", manifest.display()))?;
        *visits.entry(patient.clone()).or_default() += 1;
    }
    let mut ranked: Vec<(usize, String)> = test.into_iter().filter_map(|p| visits.get(&p).map(|&n| (n, p))).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    if ranked.iter().any(|(n, _)| *n >= 2) {
        ranked.retain(|(n, _)| *n >= 2);
    } else {
        println!("[note] no test patient of iteration 0 has several visits; explaining the first one's single visit");
        ranked.truncate(1);
    }
    Ok(ranked.into_iter().map(|(_, p)| p).collect())
}

/// One CSV file as its column names and rows of named text cells.
fn table(path: &Path) -> Result<(Vec<String>, Vec<HashMap<String, String>>)> {
    Ok(tgc_data::read_table(path)?)
}

fn num(row: &HashMap<String, String>, key: &str) -> Option<f64> {
    row.get(key).and_then(|v| v.parse().ok())
}

/// `mean ± std` of a metric; "—" where the metric is undefined (NaN: the earlier-visit rule's
/// loss, which has no probabilities), "n/a" where the table lacks it.
fn cell(row: &HashMap<String, String>, metric: &str) -> String {
    match (num(row, &format!("{metric}_mean")), num(row, &format!("{metric}_std"))) {
        (Some(m), _) if !m.is_finite() => "—".into(),
        (Some(m), Some(s)) if s.is_finite() => format!("{m:.4} ± {s:.4}"),
        (Some(m), _) => format!("{m:.4}"),
        _ => "n/a".into(),
    }
}

const MODELS: [&str; 4] = ["ResNet", "ResNet_seq_3", "ViT", "ViT_seq_3"];
/// The study's four rows with the visit-count baselines beside them.
const TABLE_MODELS: [&str; 7] = ["ResNet", "ResNet_seq_3", "ResNet_history_seq_3", "ViT", "ViT_seq_3", "ViT_history_seq_3", "Earlier_visit_rule"];
const METRICS: [(&str, &str); 4] = [("loss", "Loss"), ("accuracy", "Accuracy"), ("f1", "F1-score"), ("auc", "AUC")];

fn study_label(model: &str) -> String {
    match model {
        "Earlier_visit_rule" => "Earlier-visit rule (no model)".to_owned(),
        m if m.contains("_history_seq_3") => m.replace("_history_seq_3", " history only (Seq 3)"),
        m => m.replace("_seq_3", " (Seq 3)"),
    }
}

fn interval(row: &HashMap<String, String>, metric: &str) -> String {
    match (num(row, &format!("{metric}_ci_lo")), num(row, &format!("{metric}_ci_hi"))) {
        (Some(lo), Some(hi)) => format!("[{lo:.2}, {hi:.2}]"),
        _ => "n/a".into(),
    }
}

/// The weights the probes of iteration 0 under `runs` (a protocol's folder) were trained on,
/// per backbone, as a sentence, and whether any is random-init.
fn weights_of_runs(runs: &Path) -> Result<(String, bool)> {
    let mut random = false;
    let mut weights = Vec::new();
    for (_, model) in BACKBONES {
        let dir = runs.join(model).join("0");
        let run = &config(&dir)?["run"];
        let source = run["weights"].as_str().ok_or_else(|| anyhow!("{}/config.json names no weights", dir.display()))?;
        let is_random = run["random_weights"].as_bool().ok_or_else(|| anyhow!("{}/config.json does not say whether its weights are random", dir.display()))?;
        random |= is_random;
        weights.push(format!("{model} {} ({source})", if is_random { "RANDOM-INIT" } else { "pretrained" }));
    }
    let warning = if random { " RANDOM-INIT backbones are not pretrained: their numbers say nothing about the pretrained models." } else { "" };
    Ok((format!("{}.{warning}", weights.join(", ")), random))
}

/// Writes `results.md`, the figures' copies under `figures/` and `report.html`, and has `tgc
/// results` combine the runs' `results.csv` into one;
/// `temporal` names the patients whose strips each backbone's temporal steps wrote.
///
/// The weights each backbone's models were trained on are read from the runs themselves, so
/// the provenance line is true per backbone whatever the command line said.
/// `cohort` describes a BIDS input (its slice and labels); `None` for OASIS_2D.
pub fn write(
    tgc: &Path,
    out: &Path,
    protocols: &[&str],
    temporal: &[(&str, Vec<String>)],
    synthetic: bool,
    cohort: Option<&str>,
    study_csv: &Path,
) -> Result<()> {
    let (_, study_rows) = table(study_csv)?;
    let study: HashMap<String, HashMap<String, String>> = study_rows.into_iter().map(|r| (r["model"].clone(), r)).collect();
    let (weights, random) = weights_of_runs(&out.join("runs").join(protocols.first().copied().unwrap_or("holdout")))?;
    let data = match (synthetic, cohort) {
        (true, None) => "SYNTHETIC phantoms (not patient data)".to_owned(),
        (true, Some(c)) => format!("SYNTHETIC phantoms (not patient data), {c}"),
        (false, None) => "OASIS_2D".to_owned(),
        (false, Some(c)) => c.to_owned(),
    };
    let provenance = format!("Data: {data}. Backbone weights: {weights}");
    let mut md = format!("# TemporalGradCam reproduction\n\n{provenance}\n\n");
    let mut html_tables = String::new();
    for p in protocols {
        protocol_tables(out, p, &study, &mut md, &mut html_tables)?;
    }
    md.push_str("Study: Loss is mean cross-entropy; Accuracy, F1-score and AUC are fractions (the study printed percentages).\n\n## Faithfulness of the explanations\n\n");
    let mut html_faith = String::from("<h2>Faithfulness of the explanations</h2>");
    for (b, _) in BACKBONES {
        let path = out.join("faithfulness").join(b).join("faithfulness.md");
        let text = read(&path)?;
        md.push_str(&text);
        md.push('\n');
        let (_, rows) = table(&out.join("faithfulness").join(b).join("summary.csv"))?;
        let _ = write!(html_faith, "<p>{}</p><table><tr><th>Method</th><th>Deletion AUC ↓</th><th>Insertion AUC ↑</th><th>ROAD MoRF ↓</th><th>ROAD LeRF ↑</th><th>Randomization ρ ↓</th><th>Energy in region ↑</th><th>Pointing game ↑</th><th>Sparseness</th><th>Complexity</th><th>Infidelity ↓</th><th>Sensitivity ↓</th></tr>", escape(text.lines().next().unwrap_or("")));
        for r in rows {
            let _ = write!(html_faith, "<tr><td>{}</td>", escape(&r["method"]));
            for k in [
                "deletion_auc",
                "insertion_auc",
                "road_morf",
                "road_lerf",
                "randomization_spearman",
                "energy_in_region",
                "pointing_hit_rate",
                "sparseness",
                "complexity",
                "infidelity",
                "sensitivity_max",
            ] {
                let v = num(&r, k).map(|v| if k == "infidelity" { format!("{v:.3e}") } else { format!("{v:.4}") }).unwrap_or_else(|| "n/a".into());
                let _ = write!(html_faith, "<td>{v}</td>");
            }
            html_faith.push_str("</tr>");
        }
        html_faith.push_str("</table>");
    }
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    let runs: Vec<PathBuf> = protocols.iter().flat_map(|p| TABLE_MODELS.map(|model| out.join("runs").join(p).join(model).join("results.csv"))).collect();
    let status =
        Command::new(tgc).arg("results").args(&runs).arg("--out").arg(out.join("results.csv")).stdout(Stdio::null()).status().context("running tgc results")?;
    if !status.success() {
        bail!("tgc results failed");
    }

    let gallery = figure_copies(out, protocols, temporal)?;
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>TemporalGradCam reproduction</title><style>\
         body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         .warn{{background:#fff3cd;border:1px solid #e0c36c;padding:.6em}}figure{{margin:1.5em 0}}img{{max-width:100%}}</style></head><body>\
         <h1>TemporalGradCam reproduction</h1><p class=\"{}\">{}</p>",
        if random || synthetic { "warn" } else { "" },
        escape(&provenance)
    );
    html.push_str(&html_tables);
    html.push_str(&html_faith);
    html.push_str("<h2>Figures</h2>");
    for (file, caption) in &gallery {
        let _ = write!(html, "<figure><img src=\"figures/{file}\" alt=\"{0}\"><figcaption>{0}</figcaption></figure>", escape(caption));
    }
    html.push_str("<p>Timings per step: <a href=\"timings.json\">timings.json</a>. Tables: <a href=\"results.md\">results.md</a>, <a href=\"results.csv\">results.csv</a>.</p></body></html>\n");
    write_atomic(&out.join("report.html"), html.as_bytes())
}

/// One protocol's tables: the study's table with ours beside it, the visit-count confound, per
/// patient and by visit history (into `md` and `html`).
fn protocol_tables(out: &Path, p: &str, study: &HashMap<String, HashMap<String, String>>, md: &mut String, html_tables: &mut String) -> Result<()> {
    let what = if p == "holdout" {
        "holdout: selection on a patient-level validation split, test evaluated once"
    } else {
        "original: the study's protocol, selection on the test split (optimistic)"
    };
    let _ = write!(
        md,
        "## Protocol {what}\n\nMean ± standard deviation over iterations, every test image counted; the study's published means beside ours. \
         The history-only rows are the same temporal DNN trained on sequences whose visits all carry one constant vector (padding kept): \
         what the visit pattern alone gives. The earlier-visit rule predicts healthy iff the patient has an earlier visit. \
         95 % intervals: patient-level bootstrap (test patients resampled, 1000 draws), averaged over iterations.\n\n\
         | Model | Loss | Accuracy | F1-score | AUC | Accuracy 95% CI | AUC 95% CI | Study Loss | Study Accuracy | Study F1-score | Study AUC |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut by_patient = String::from("| Model | Test patients | Accuracy | F1-score | AUC |\n|---|---|---|---|---|\n");
    let mut by_history =
        String::from("| Model | No earlier visit: images | Accuracy | AUC | ≥ 1 earlier visit: images | Accuracy | AUC |\n|---|---|---|---|---|---|---|\n");
    let _ = write!(html_tables, "<h2>Protocol {what}</h2><table><tr><th>Model</th>");
    for (_, title) in METRICS {
        let _ = write!(html_tables, "<th>{title}</th>");
    }
    for (_, title) in METRICS {
        let _ = write!(html_tables, "<th>Study {title}</th>");
    }
    html_tables.push_str("</tr>");
    for model in TABLE_MODELS {
        let path = out.join("runs").join(p).join(model).join("results.csv");
        let (_, rows) = table(&path)?;
        let row = rows.first().cloned().ok_or_else(|| anyhow!("{} has no row", path.display()))?;
        let ours: Vec<String> = METRICS.iter().map(|(m, _)| cell(&row, m)).collect();
        let theirs: Vec<String> =
            METRICS.iter().map(|(m, _)| study.get(model).and_then(|r| num(r, m)).map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into())).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            study_label(model),
            ours.join(" | "),
            interval(&row, "accuracy"),
            interval(&row, "auc"),
            theirs.join(" | ")
        );
        let iterations = num(&row, "iterations").unwrap_or(1.0).max(1.0);
        let per_iteration = |k: &str| num(&row, k).map(|v| format!("{:.1}", v / iterations)).unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            by_patient,
            "| {} | {} | {} | {} | {} |",
            study_label(model),
            per_iteration("test_patients"),
            cell(&row, "patient_accuracy"),
            cell(&row, "patient_f1"),
            cell(&row, "patient_auc")
        );
        let auc_or = |k: &str| num(&row, k).map(|v| format!("{v:.4}")).unwrap_or_else(|| "one class only".into());
        let _ = writeln!(
            by_history,
            "| {} | {} | {} | {} | {} | {} | {} |",
            study_label(model),
            per_iteration("no_history_images"),
            cell(&row, "no_history_accuracy"),
            auc_or("no_history_auc_mean"),
            per_iteration("with_history_images"),
            cell(&row, "with_history_accuracy"),
            auc_or("with_history_auc_mean")
        );
        let _ = write!(html_tables, "<tr><td>{}</td>", study_label(model));
        for v in ours.iter().chain(&theirs) {
            let _ = write!(html_tables, "<td>{v}</td>");
        }
        html_tables.push_str("</tr>");
    }
    md.push('\n');
    for model in ["ResNet_seq_3", "ViT_seq_3"] {
        if let Ok(reading) = std::fs::read_to_string(out.join("runs").join(p).join(format!("{model}_confound.md"))) {
            md.push_str(reading.trim_end());
            md.push_str("\n\n");
            let _ = write!(html_tables, "<p>{}</p>", escape(reading.trim()).replace("**", ""));
        }
    }
    let _ = write!(md, "Per patient (each test patient once, at the last visit; mean per iteration):\n\n{by_patient}\n");
    let _ = write!(md, "By visit history (test images per iteration; AUC only where a stratum holds both classes):\n\n{by_history}\n");
    html_tables.push_str("</table>");
    Ok(())
}

/// Copies the figures under `figures/` (so that the report's links stay inside OUT) and returns
/// them with their captions, in the report's order.
fn figure_copies(out: &Path, protocols: &[&str], temporal: &[(&str, Vec<String>)]) -> Result<Vec<(String, String)>> {
    let figures = out.join("figures");
    remove_copies(&figures)?;
    let mut gallery: Vec<(String, String)> = vec![("history_length.png".into(), "Images by history length".into())];
    for p in protocols {
        for model in MODELS {
            let name = format!("history_{p}_{model}.png");
            copy(&out.join("runs").join(p).join(model).join("0/history.png"), &figures.join(&name))?;
            gallery.push((name, format!("Training history, {} (iteration 0, {p})", study_label(model))));
        }
    }
    for (b, model) in BACKBONES {
        let name = format!("interpretation_{b}.png");
        copy(&out.join("explanations").join(b).join("grid.png"), &figures.join(&name))?;
        gallery.push((name, format!("Interpreting test samples, {model}")));
        let name = format!("interpretation_more_{b}.png");
        copy(&out.join("explanations-more").join(b).join("grid.png"), &figures.join(&name))?;
        let what = if b == "vit" {
            "Attention rollout, Chefer et al., the gradient CAMs, EigenCAM and Feature Ablation"
        } else {
            "The CAM family and Feature Ablation"
        };
        gallery.push((name, format!("{what} on the same samples, {model}")));
        for patient in temporal.iter().filter(|(of, _)| *of == b).flat_map(|(_, patients)| patients) {
            let strips = out.join("temporal").join(b).join(patient);
            let entries = std::fs::read_dir(&strips).with_context(|| format!("listing {}", strips.display()))?;
            let mut pngs: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "png")).collect();
            pngs.sort();
            for png in pngs {
                let name = format!("temporal_{b}_{}", png.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                copy(&png, &figures.join(&name))?;
                gallery.push((name, format!("Temporal explanation, {model}")));
            }
        }
    }
    Ok(gallery)
}

/// Removes the copies of strips and training histories under `figures` (an earlier
/// configuration's may name other patients or another protocol); the report writes this
/// configuration's anew. `history_length.png` is the stats step's own figure, not a copy.
fn remove_copies(figures: &Path) -> Result<()> {
    remove_entries(figures, |name| name.starts_with("temporal_") || (name.starts_with("history_") && name != "history_length.png"))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_atomic(to, &bytes)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `timings.json`: seconds per step (0 for steps skipped as complete) and the total.
pub fn write_timings(out: &Path, timings: &[(String, f64, bool)], total: f64) -> Result<()> {
    let steps: Vec<serde_json::Value> =
        timings.iter().map(|(name, secs, skipped)| serde_json::json!({ "step": name, "seconds": secs, "skipped": skipped })).collect();
    let json = serde_json::json!({ "steps": steps, "total_seconds": total });
    write_atomic(&out.join("timings.json"), serde_json::to_string_pretty(&json)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_config(runs: &Path, model: &str, weights: &str, random: bool) {
        let dir = runs.join(model).join("0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::json!({ "run": { "weights": weights, "random_weights": random } }).to_string()).unwrap();
    }

    #[test]
    fn an_undefined_metric_reads_as_a_dash_not_nan() {
        let row = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        assert_eq!(cell(&row(&[("loss_mean", "NaN"), ("loss_std", "NaN")]), "loss"), "—");
        assert_eq!(cell(&row(&[("loss_mean", "0.5"), ("loss_std", "0.25")]), "loss"), "0.5000 ± 0.2500");
        assert_eq!(cell(&row(&[("loss_mean", "0.5"), ("loss_std", "NaN")]), "loss"), "0.5000");
        assert_eq!(cell(&row(&[]), "loss"), "n/a");
    }

    #[test]
    fn copies_of_strips_and_histories_are_removed_but_the_stats_figure_stays() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["history_length.png", "history_original_ViT.png", "temporal_vit_OAS30004_d0015.png", "interpretation_vit.png"] {
            std::fs::write(dir.path().join(name), b"png").unwrap();
        }
        remove_copies(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["history_length.png", "interpretation_vit.png"]);
    }

    #[test]
    fn provenance_names_each_backbones_weights_from_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path();
        run_config(runs, "ResNet", "random:1", true);
        run_config(runs, "ViT", "google/vit-base-patch16-224", false);
        let (text, random) = weights_of_runs(runs).unwrap();
        assert!(random);
        assert!(text.starts_with("ResNet RANDOM-INIT (random:1), ViT pretrained (google/vit-base-patch16-224). RANDOM-INIT backbones"), "{text}");
        run_config(runs, "ResNet", "timm/resnet18.tv_in1k", false);
        assert_eq!(
            weights_of_runs(runs).unwrap(),
            ("ResNet pretrained (timm/resnet18.tv_in1k), ViT pretrained (google/vit-base-patch16-224).".to_owned(), false)
        );
        std::fs::remove_file(runs.join("ViT/0/config.json")).unwrap();
        let err = weights_of_runs(runs).unwrap_err();
        assert!(format!("{err:#}").contains("ViT/0/config.json"), "{err:#}");
    }
}
