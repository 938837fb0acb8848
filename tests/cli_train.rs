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
}
