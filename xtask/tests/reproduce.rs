//! `cargo xtask reproduce --synthetic --quick` end to end: every expected file, numbers in the
//! table, a second run that reuses everything, and the report rendered in headless Chromium
//! when it is installed.

use std::path::Path;
use std::process::Command;

fn reproduce(out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "--synthetic", "--quick", "--out", out.to_str().unwrap()])
        .env("TGC_CACHE_DIR", out.join("cache"))
        .output()
        .expect("xtask runs");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    text
}

#[test]
fn synthetic_quick_reproduction() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = reproduce(&out);
    assert!(first.contains("RANDOM-INIT"));
    for file in ["results.md", "results.csv", "timings.json", "report.html", "manifest.csv", "figures/history_length.png", "figures/interpretation_resnet18.png", "figures/interpretation_vit.png"] {
        assert!(out.join(file).is_file(), "missing {file}\n{first}");
    }
    for model in ["ResNet", "ResNet_seq_3", "ViT", "ViT_seq_3"] {
        assert!(out.join(format!("figures/history_holdout_{model}.png")).is_file(), "missing history of {model}");
    }
    let figures: Vec<String> = std::fs::read_dir(out.join("figures")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for b in ["resnet18", "vit"] {
        assert!(figures.iter().any(|f| f.starts_with(&format!("temporal_{b}_"))), "no temporal strip for {b}: {figures:?}");
    }
    // The table holds numbers for the four models.
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let acc = header.iter().position(|h| *h == "accuracy_mean").unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["ResNet", "ResNet_seq_3", "ResNet_history_seq_3", "ViT", "ViT_seq_3", "ViT_history_seq_3", "Earlier_visit_rule"]
    );
    for r in &rows {
        let v: f64 = r[acc].parse().unwrap();
        assert!((0.0..=1.0).contains(&v), "{csv}");
        assert_eq!(r[2], "random");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| ResNet (Seq 3) |") && md.contains("0.8387") && md.contains("SYNTHETIC") && md.contains("RANDOM-INIT"), "{md}");
    // The visit-count confound is reported by default: baselines, reading, per patient, by history.
    for needle in ["| ResNet history only (Seq 3) |", "| Earlier-visit rule (no model) |", "**Visit-count confound**", "Per patient (each test patient once", "By visit history", "95% CI"] {
        assert!(md.contains(needle), "results.md lacks {needle}:\n{md}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<img src=\"figures/interpretation_vit.png\"") && html.contains("RANDOM-INIT"));
    let timings: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("timings.json")).unwrap()).unwrap();
    assert!(timings["steps"].as_array().unwrap().iter().any(|s| s["step"] == "features-vit" && s["skipped"] == false));

    // A second run reuses every step.
    let second = reproduce(&out);
    assert!(!second.contains("[run ]"), "{second}");
    assert!(second.matches("[skip]").count() >= 10, "{second}");

    match ["chromium", "chromium-browser", "google-chrome"].iter().find(|b| Command::new(b).arg("--version").output().is_ok()) {
        Some(browser) => {
            let shot = dir.path().join("report.png");
            let status = Command::new(browser)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"])
                .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
                .arg(format!("--screenshot={}", shot.display()))
                .arg("--window-size=1280,2000")
                .arg(format!("file://{}", out.join("report.html").display()))
                .status()
                .unwrap();
            assert!(status.success() && std::fs::metadata(&shot).unwrap().len() > 10_000, "report did not render");
        }
        None => eprintln!("skipped the rendering check: no Chromium installed (apt-get install chromium)"),
    }
}

#[test]
fn missing_data_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "--data", "/no/oasis", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/no/oasis") && err.contains("--synthetic") && err.contains("data/README.md"), "{err}");
}
