//! `cargo xtask reproduce --synthetic --quick` end to end: every expected file, numbers in the
//! table, a second run that reuses everything, and the report rendered in headless Chromium
//! when it is installed.

use std::path::Path;
use std::process::Command;

/// `xtask reproduce --synthetic --quick` into `out`, with `more` arguments, its feature cache
/// inside `out`.
fn reproduce_command(out: &Path, more: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.args(["reproduce", "--synthetic", "--quick", "--out", out.to_str().unwrap()]).args(more).env("TGC_CACHE_DIR", out.join("cache"));
    command
}

/// The reproduction in its own process group (so that [`kill_group`] reaches the `tgc` step it
/// runs too), its standard error discarded.
fn reproduce_in_group(out: &Path, more: &[&str], stdout: std::process::Stdio) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    reproduce_command(out, more).stdout(stdout).stderr(std::process::Stdio::null()).process_group(0).spawn().unwrap()
}

/// SIGKILLs the process group of `child` (started by [`reproduce_in_group`]) and reaps it.
fn kill_group(child: &mut std::process::Child) {
    Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status().unwrap();
    child.wait().unwrap();
}

fn reproduce(out: &Path) -> String {
    let o = reproduce_command(out, &[]).output().expect("xtask runs");
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
    for file in [
        "results.md",
        "results.csv",
        "timings.json",
        "report.html",
        "manifest.csv",
        "figures/history_length.png",
        "figures/interpretation_resnet18.png",
        "figures/interpretation_vit.png",
        "figures/interpretation_more_resnet18.png",
        "figures/interpretation_more_vit.png",
    ] {
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
    for needle in [
        "| ResNet history only (Seq 3) |",
        "| Earlier-visit rule (no model) |",
        "**Visit-count confound**",
        "Per patient (each test patient once",
        "By visit history",
        "95% CI",
    ] {
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

    // Kill and resume, with this run as the reference (one full run fewer on a 2-core CI).
    killed_runs_resume_to_the_same_results(dir.path(), &out);

    // The same OUT with another setting reruns what reads its results, and nothing else. The
    // ViT's steps are the same code as ResNet-18's, so the run stops at the first backbone's
    // faithfulness step (its redo and run lines are printed before it starts).
    let lines = reproduce_until(&out, &["--iterations", "3"], "[run ] faithfulness-resnet18:");
    let third = lines.join("\n");
    let says = |what: &str, step: &str| lines.iter().any(|l| l.starts_with(&format!("[{what}] {step}:")));
    for step in ["synth", "stats", "features-resnet18", "features-vit"] {
        assert!(says("skip", step), "{step} was not reused:\n{third}");
    }
    for step in ["train-holdout-resnet18", "train-temporal-holdout-resnet18", "train-holdout-vit", "train-temporal-holdout-vit"] {
        assert!(says("run ", step) && !says("redo", step), "{step} did not rerun for its own command:\n{third}");
    }
    for step in ["explain-resnet18", "explain-more-resnet18", "faithfulness-resnet18"] {
        assert!(says("redo", step) && says("run ", step), "{step} kept results of the earlier models:\n{third}");
    }
    assert!(lines.iter().any(|l| l.starts_with("[redo] explain-temporal-resnet18-")), "{third}");
}

/// Runs a reproduction of `out` with `more` arguments, reading what it prints, and SIGKILLs
/// its whole process group once a line starts with `until` (or lets it finish); the lines read.
fn reproduce_until(out: &Path, more: &[&str], until: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut child = reproduce_in_group(out, more, std::process::Stdio::piped());
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.starts_with(until);
        lines.push(line);
        if done {
            kill_group(&mut child);
            return lines;
        }
    }
    child.wait().unwrap();
    lines
}

#[test]
fn missing_data_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["reproduce", "--data", "/no/oasis", "--out", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/no/oasis") && err.contains("--synthetic") && err.contains("data/README.md"), "{err}");
}

/// Every file under `dir` (relative path → bytes), but the run's timings and the step markers.
fn outputs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if rel != ".done" && rel != "cache" {
                    stack.push(p);
                }
            } else if !(rel == "timings.json" || rel == "report.html" || p.file_name().unwrap().to_string_lossy().starts_with(".tmp")) {
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// Nothing under a final name is partial: every safetensors file parses whole, every JSON
/// file parses, every CSV ends with a complete line.
fn assert_no_partial_files(dir: &Path) {
    for (name, bytes) in outputs(dir) {
        if name.ends_with(".safetensors") {
            candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("partial {name}: {e}"));
        } else if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| panic!("partial {name}: {e}"));
        } else if name.ends_with(".csv") {
            assert!(bytes.ends_with(b"\n"), "partial {name}");
        } else if name.ends_with(".png") {
            assert!(bytes.starts_with(b"\x89PNG") && bytes.ends_with(b"IEND\xaeB`\x82"), "partial {name}");
        }
    }
}

/// Starts a reproduction in its own process group and SIGKILLs the whole group (xtask and the
/// `tgc` step it runs) as soon as `ready` holds, or lets it finish.
fn reproduce_killed_when(out: &Path, ready: impl Fn() -> bool) -> bool {
    let mut child = reproduce_in_group(out, &[], std::process::Stdio::null());
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ready() {
            kill_group(&mut child);
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// SIGKILLs reproductions during extraction, training and explanation, checks that no partial
/// file is visible under its final name after each kill, resumes, and compares every output
/// byte for byte with the uninterrupted run in `out` (moved aside first, so that the killed
/// runs use the same paths, which the outputs record).
fn killed_runs_resume_to_the_same_results(dir: &Path, out: &Path) {
    let reference = outputs(out);
    std::fs::rename(out, dir.join("reference")).unwrap();
    let out = out.to_path_buf();

    let has = |p: &str| out.join(p).exists();
    let count = |p: &str| std::fs::read_dir(out.join(p)).map(|d| d.count()).unwrap_or(0);
    let kill_points: [(&str, Box<dyn Fn() -> bool>); 3] = [
        ("extraction", Box::new(|| count("cache") >= 2 && !has("features/vit.safetensors"))),
        ("training", Box::new(|| has("runs/holdout/ResNet/0/config.json") && !has("runs/holdout/ViT_seq_3/results.csv"))),
        ("explanation", Box::new(|| count("explanations/resnet18") >= 1 && !has("faithfulness/vit/summary.csv"))),
    ];
    let mut killed = Vec::new();
    for (point, ready) in kill_points {
        if reproduce_killed_when(&out, ready) {
            killed.push(point);
        }
        assert_no_partial_files(&out);
    }
    assert!(killed.len() >= 2, "the kills came too late to test anything: {killed:?}");
    reproduce(&out);
    let resumed = outputs(&out);
    assert_eq!(resumed.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
    for (name, bytes) in &reference {
        assert!(&resumed[name] == bytes, "{name} differs after kills at {killed:?}");
    }
}

/// The command a researcher types for a BIDS cohort — `--data BIDS --slice … --labels …` — on
/// a small synthetic BIDS cohort (written by `tgc data synth --layout bids`) runs to its report,
/// and its explanations are a BIDS derivative with maps in each scan's geometry.
#[test]
fn a_bids_cohort_reproduces_to_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(env!("CARGO")).args(["build", "--release", "-p", "tgc-cli"]).current_dir(root).status().unwrap();
    assert!(status.success());
    let tgc = Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("tgc");
    let data = dir.path().join("cohort");
    let o = Command::new(&tgc)
        .args(["data", "synth", "--layout", "bids", "--patients", "6", "--size", "32", "--max-visits", "3", "--seed", "2", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "--quick", "--weights-resnet", "random:1", "--weights-vit", "random:1", "--slice", "axial:mid"])
        .args(["--labels", "phenotype/clinical.csv:CDRTOT>0", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .env("TGC_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    assert!(text.contains("--slice axial:mid --labels phenotype/clinical.csv:CDRTOT>0"), "the steps did not get the source flags:\n{text}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| ResNet (Seq 3) |") && md.contains("RANDOM-INIT"), "{md}");
    assert!(md.contains("a BIDS cohort") && md.contains("slice axial:mid, labels phenotype/clinical.csv:CDRTOT>0"), "{md}");
    let manifest = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    assert!(manifest.lines().next().unwrap().contains("participant_id,session_id"), "{manifest}");
    assert!(manifest.contains("sub-OAS30001,ses-d"), "{manifest}");
    // The features record the slice they were cut to (safetensors' JSON header).
    let bytes = std::fs::read(out.join("features/resnet18.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["slice"], "axial:mid");
    assert_eq!(header["__metadata__"]["layout"], "bids");
    let explained = out.join("explanations/resnet18");
    let description: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(explained.join("dataset_description.json")).unwrap()).unwrap();
    assert_eq!(description["DatasetType"], "derivative");
    assert_eq!(description["GeneratedBy"][0]["Name"], "tgc");
    let maps: Vec<_> = std::fs::read_dir(&explained)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sub-"))
        .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
        .flat_map(|ses| std::fs::read_dir(ses.path().join("anat")).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("_desc-gradcam_attribution.nii.gz"))
        .collect();
    assert!(!maps.is_empty(), "no NIfTI maps under {}", explained.display());
    assert!(out.join("figures/interpretation_vit.png").is_file() && out.join("report.html").is_file());
}
