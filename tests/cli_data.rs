//! End-to-end: the real `tgc` binary on generated phantoms (and on OASIS_2D when
//! `TGC_OASIS_DIR` is set).

use std::path::Path;
use std::process::{Command, Output};

fn tgc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tgc")).args(args).output().expect("tgc runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn synth_then_stats_split_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantoms");
    let d = data.to_str().unwrap();
    let out = tgc(&["data", "synth", "--out", d, "--patients", "6", "--seed", "3", "--size", "32"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let png = dir.path().join("hist.png");
    let csv = dir.path().join("manifest.csv");
    let out = tgc(&["data", "stats", "--data", d, "--plot", png.to_str().unwrap(), "--manifest", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("synthetic phantom data set"), "{text}");
    assert!(text.contains("image sizes: 32x32"), "{text}");
    let patients_line = text.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(patients_line.trim_end().ends_with(" 6"), "{patients_line}");
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with("path,patient_id,day,label,history_len,split\n"));

    let split_csv = dir.path().join("split.csv");
    let out = tgc(&["data", "split", "--data", d, "--seed", "1", "--test-fraction", "0.34", "--out", split_csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // 3 patients per class, round(0.34·3) = 1 of each on the test side.
    assert!(text.contains("train: 4 patients"), "{text}");
    assert!(text.contains("test: 2 patients"), "{text}");
    let rows = std::fs::read_to_string(&split_csv).unwrap();
    assert!(rows.lines().skip(1).all(|l| l.ends_with(",train") || l.ends_with(",test")), "{rows}");
}

#[test]
fn errors_exit_non_zero_with_a_message() {
    let out = tgc(&["data", "stats", "--data", "/no/such/folder"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/folder"), "{}", stderr(&out));

    let out = tgc(&["data", "stats", "--data", ".", "--unknown-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--unknown-flag"));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(tgc(&["data", "synth", "--out", d, "--patients", "4", "--size", "16"]).status.success());
    let bad = std::fs::read_dir(dir.path().join("disease")).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&bad, b"\x1f\x8b\x08\x00 broken").unwrap();
    let out = tgc(&["data", "stats", "--data", d]);
    assert_eq!(out.status.code(), Some(1));
    let name = bad.file_name().unwrap().to_str().unwrap();
    assert!(stderr(&out).contains(name), "{}", stderr(&out));

    let out = tgc(&["data", "split", "--data", d, "--test-fraction", "1.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("test fraction"), "{}", stderr(&out));
}

#[test]
fn real_oasis_stats() {
    let Some(dir) = std::env::var_os("TGC_OASIS_DIR") else {
        eprintln!("skipped: TGC_OASIS_DIR is not set");
        return;
    };
    let out = tgc(&["data", "stats", "--data", Path::new(&dir).to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let squash = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let lines: Vec<String> = text.lines().map(squash).collect();
    assert!(lines.contains(&"disease 50 43".to_string()), "{text}");
    assert!(lines.contains(&"healthy 50 10".to_string()), "{text}");
    assert!(lines.contains(&"total 100 53".to_string()), "{text}");
    assert!(text.contains("patients with a single visit: 37; most visits of one patient: 7"), "{text}");
    // The visit-count confound, counted on the data alone.
    assert!(text.contains("is right for 83 of 100 images (accuracy 0.83)"), "{text}");
}
