//! The per-session costs that docs/SCALING.md projects to whole cohorts, measured on one core
//! (`RAYON_NUM_THREADS=1`: the work of one array task per core) through the real `tgc` binary on
//! a synthetic cohort of 224-pixel phantoms with random-init backbones:
//! - extraction, sessions per second, per backbone;
//! - explanation, seconds per session, for each method of the reproduction's set;
//! - faithfulness with the reproduction's settings, seconds per session;
//! - the merge's cost as the parts grow (it must be linear in their size).
//!
//! `cargo bench -p tgc-cli --bench scaling` (`-- --quick` for fewer sessions). Prints a table;
//! names the CPU.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn tgc(args: &[&str], cache: &Path) -> f64 {
    let start = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_tgc")).args(args).env("TGC_CACHE_DIR", cache).env("RAYON_NUM_THREADS", "1").output().expect("tgc runs");
    assert!(o.status.success(), "tgc {args:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    start.elapsed().as_secs_f64()
}

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or_default();
    let simd = if flags.contains("avx512f") {
        "AVX-512"
    } else if flags.contains("avx2") {
        "AVX2 + FMA"
    } else {
        "no AVX2"
    };
    format!("{model} ({simd})")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cache = root.join("cache");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let data = root.join("cohort");
    let patients = if quick { "6" } else { "12" };
    tgc(&["data", "synth", "--out", &s(&data), "--patients", patients, "--size", "224", "--seed", "1"], &cache);
    let sessions = tgc_data::Dataset::open(&data).unwrap().len();
    println!("CPU: {}; one core (RAYON_NUM_THREADS=1); {sessions} synthetic sessions of 224×224, random-init weights", cpu());
    println!("| step | backbone | per session (s) | sessions/s/core |");
    println!("|---|---|---:|---:|");
    for (backbone, model) in [("resnet18", "ResNet"), ("vit", "ViT")] {
        let features = root.join(format!("{backbone}.safetensors"));
        let t = tgc(&["extract", "--backbone", backbone, "--weights", "random:1", "--data", &s(&data), "--out", &s(&features), "--no-cache"], &cache);
        println!("| extract | {backbone} | {:.3} | {:.2} |", t / sessions as f64, sessions as f64 / t);
        let runs = root.join(format!("runs-{backbone}"));
        tgc(&["train", "--features", &s(&features), "--out", &s(&runs), "--iterations", "1", "--epochs", "5"], &cache);
        let run = s(&runs.join(model).join("0"));
        let per_class = if quick { "1" } else { "2" };
        let slices = 2 * per_class.parse::<usize>().unwrap();
        // The reproduction's four methods (GradientSHAP with its 50 samples), one by one.
        for method in ["gradient-shap", "gradcam", "guided-gradcam", "guided-backprop"] {
            let out = root.join(format!("explain-{backbone}-{method}"));
            let t = tgc(
                &[
                    "explain",
                    "--run",
                    &run,
                    "--data",
                    &s(&data),
                    "--split",
                    "all",
                    "--samples-per-class",
                    per_class,
                    "--method",
                    method,
                    "--samples",
                    "50",
                    "--out",
                    &s(&out),
                ],
                &cache,
            );
            println!("| explain {method} | {backbone} | {:.3} | {:.2} |", t / slices as f64, slices as f64 / t);
        }
        // Faithfulness with the reproduction's settings (its four methods, 20 GradientSHAP
        // samples, 20-step curves, ROAD at 4 levels, 5 sensitivity samples, the cascade), on
        // one slice per class: the cascade alone re-explains each slice 13–14 times.
        let (per_class, slices) = ("1", 2);
        let out = root.join(format!("faithfulness-{backbone}"));
        let args = [
            "faithfulness",
            "--run",
            &run,
            "--data",
            &s(&data),
            "--split",
            "all",
            "--samples-per-class",
            per_class,
            "--samples",
            "20",
            "--curve-steps",
            "20",
            "--road-percentiles",
            "20,40,60,80",
            "--sensitivity-samples",
            "5",
            "--out",
            &s(&out),
        ];
        let t = tgc(&args, &cache);
        println!("| faithfulness (4 methods) | {backbone} | {:.3} | {:.3} |", t / slices as f64, slices as f64 / t);
    }
    // The merge of extraction parts as they grow: 8 parts, 2k to 16k rows of 768 features.
    println!("\n| merge of 8 feature parts | rows | seconds | µs per row |");
    println!("|---|---:|---:|---:|");
    for rows in [2_000usize, 4_000, 8_000, 16_000] {
        let part_rows = rows / 8;
        let parts: Vec<(tgc_data::FeatureSet, Vec<usize>)> = (0..8)
            .map(|p| {
                let set = tgc_data::FeatureSet {
                    features: (0..part_rows * 768).map(|i| i as f32).collect(),
                    dim: 768,
                    patient_id: vec![1; part_rows],
                    day: vec![0; part_rows],
                    label: vec![0; part_rows],
                    metadata: [("sessions".to_owned(), serde_json::to_string(&vec!["sub-1_ses-1"; part_rows]).unwrap())].into_iter().collect(),
                };
                (set, (0..part_rows).map(|r| r * 8 + p).collect())
            })
            .collect();
        let start = Instant::now();
        let merged = tgc_data::FeatureSet::assemble(&parts, rows).unwrap();
        merged.save(&root.join("merged.safetensors")).unwrap();
        let t = start.elapsed().as_secs_f64();
        println!("| | {rows} | {t:.3} | {:.1} |", t * 1e6 / rows as f64);
    }
}
