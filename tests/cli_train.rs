//! End-to-end: phantoms → random-weight features → `tgc train` / `tgc train-temporal`.
//! The phantom difference is learnable, so both heads must reach high test accuracy.

mod common;

use std::path::Path;

use common::{ok, s_, tgc, Fixture};

/// `results.csv` as (header, first row).
fn results(path: &Path) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    header.iter().zip(row).map(|(h, v)| (h.to_string(), v.to_string())).collect()
}

#[test]
fn phantom_features_are_learned_by_both_heads() {
    let fx = Fixture::new(30, 3, 4, "random:1");
    let out = fx.dir.path().join("out");
    let (f, o, cache) = (s_(&fx.features), s_(&out), &fx.cache);

    let text = ok(tgc(&["train", "--features", f, "--out", o, "--iterations", "3", "--lr", "0.1", "--epochs", "100"], cache));
    assert!(text.contains("RANDOM-INIT"), "{text}");
    assert!(text.contains("| ResNet |"), "{text}");
    let r = results(&out.join("ResNet/results.csv"));
    assert_eq!(r["model"], "ResNet");
    assert_eq!(r["protocol"], "holdout");
    assert_eq!(r["backbone_weights"], "random");
    let acc: f64 = r["accuracy_mean"].parse().unwrap();
    assert!(acc >= 0.9, "probe accuracy {acc}");
    for i in 0..3 {
        for file in ["config.json", "train.json", "test.json", "history.csv", "history.png", "model.safetensors"] {
            assert!(out.join(format!("ResNet/{i}/{file}")).is_file(), "missing ResNet/{i}/{file}");
        }
    }
    let head = candle_core::safetensors::load(out.join("ResNet/0/model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(head["weight"].dims(), &[2, 512]);
    assert_eq!(head["bias"].dims(), &[2]);
    let md = std::fs::read_to_string(out.join("ResNet/results.md")).unwrap();
    assert!(md.contains("RANDOM-INIT") && md.contains("holdout"), "{md}");

    let text = ok(tgc(&["train-temporal", "--features", f, "--seq-len", "3", "--out", o, "--iterations", "3", "--protocol", "original"], cache));
    assert!(text.contains("| ResNet (Seq 3) |"), "{text}");
    // The baselines come along by default, on the same splits, with the reading.
    assert!(text.contains("| ResNet history only (Seq 3) |") && text.contains("| Earlier-visit rule (no model) |"), "{text}");
    assert!(text.contains("**Visit-count confound**"), "{text}");
    assert!(out.join("ResNet_seq_3_confound.md").is_file());
    let rule = results(&out.join("Earlier_visit_rule/results.csv"));
    assert_eq!(rule["loss_mean"], "NaN");
    for model in ["ResNet_seq_3", "ResNet_history_seq_3", "Earlier_visit_rule"] {
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(format!("{model}/0/config.json"))).unwrap()).unwrap();
        let first: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("ResNet_seq_3/0/config.json")).unwrap()).unwrap();
        assert_eq!(config["test_patients"], first["test_patients"], "{model} must use the same splits");
    }
    let r = results(&out.join("ResNet_seq_3/results.csv"));
    assert_eq!(r["protocol"], "original");
    let acc: f64 = r["accuracy_mean"].parse().unwrap();
    assert!(acc >= 0.9, "temporal accuracy {acc}");
    let history = std::fs::read_to_string(out.join("ResNet_seq_3/0/history.csv")).unwrap();
    assert!(history.starts_with("epoch,train_loss,selection_loss,lr\n0,"), "{history}");

    // `tgc results`: the experiments' tables as one, rows in the order given, cells as written.
    let combined = out.join("combined.csv");
    let models = ["ResNet_seq_3", "ResNet", "Earlier_visit_rule"];
    let inputs: Vec<String> = models.iter().map(|m| s_(&out.join(m).join("results.csv")).to_owned()).collect();
    let mut args = vec!["results"];
    args.extend(inputs.iter().map(String::as_str));
    args.extend(["--out", s_(&combined)]);
    ok(tgc(&args, cache));
    let text = std::fs::read_to_string(&combined).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (i, input) in inputs.iter().enumerate() {
        let source = std::fs::read_to_string(input).unwrap();
        assert_eq!(lines[0], source.lines().next().unwrap());
        assert_eq!(lines[i + 1], source.lines().nth(1).unwrap(), "row {i}");
        assert!(lines[i + 1].starts_with(&format!("{},", models[i])));
    }
}

#[test]
fn the_study_batch_norm_mode_drifts_the_backbone_statistics() {
    let fx = Fixture::new(12, 2, 6, "random:4");
    let out = fx.dir.path().join("out");
    let (f, o) = (s_(&fx.features), s_(&out));
    // Refused outside the study's protocol.
    let e = fx.tgc(&["train", "--features", f, "--out", o, "--backbone-bn", "study"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("--protocol original"));

    let text = ok(fx.tgc(&["train", "--features", f, "--out", o, "--iterations", "2", "--epochs", "3", "--protocol", "original", "--backbone-bn", "study"]));
    assert!(text.contains("| ResNet (study BatchNorm) |"), "{text}");
    let dir = out.join("ResNet_study_bn/0");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["run"]["backbone_bn"], "study");
    // random:4 starts every BatchNorm at mean 0 and variance 1; training batches moved them.
    let stats = candle_core::safetensors::load(dir.join("backbone_bn.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(stats.len(), 40);
    let mean: Vec<f32> = stats["layer4.1.bn2.running_mean"].to_vec1().unwrap();
    assert!(mean.iter().any(|m| m.abs() > 1e-3), "running means did not move");
    let var: Vec<f32> = stats["bn1.running_var"].to_vec1().unwrap();
    assert!(var.iter().any(|v| (v - 1.0).abs() > 1e-3), "running variances did not move");
    assert!(dir.join("model.safetensors").is_file() && dir.join("history.csv").is_file());
}

#[test]
fn train_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let o = tgc(&["train-temporal", "--features", "nope.safetensors", "--out", "x", "--seq-len", "0"], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sequence length must be at least 1"));
    let o = tgc(&["train", "--features", "/no/such.safetensors", "--out", "x"], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such.safetensors"));
    let o = tgc(&["train", "--features", "f", "--out", "x", "--protocol", "cheating"], &cache);
    assert_eq!(o.status.code(), Some(2));
    let out = dir.path().join("combined.csv");
    let o = tgc(&["results", "/no/such/results.csv", "--out", s_(&out)], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/results.csv"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists(), "no half-written table");
}
