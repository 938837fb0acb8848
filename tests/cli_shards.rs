//! Shards and their merge: `extract`, `explain`, `faithfulness` and `explain-temporal` in shards
//! (from `--shard K/N` or a job array's environment), joined by `tgc merge`, equal one process's
//! outputs byte for byte — on OASIS_2D phantoms and on a BIDS cohort (derivative paths, NIfTI
//! maps). Bad shard requests and missing, overlapping or mismatched parts are named errors that
//! write nothing; a finished part is skipped when its task runs again.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, s_, same_tree, text, tgc, tree, Fixture};

/// Runs `args` once into `out/one`, then as `shards` shards into `out/sharded` (the shard from
/// `--shard`, or from Slurm's variables for the last one), merges, and compares.
fn one_and_sharded(fx: &Fixture, args: &[&str], out: &Path, shards: usize) -> PathBuf {
    let (one, sharded) = (out.join("one"), out.join("sharded"));
    let mut a = args.to_vec();
    a.extend(["--out", s_(&one)]);
    ok(fx.tgc(&a));
    for k in 0..shards {
        let mut a = args.to_vec();
        a.extend(["--out", s_(&sharded)]);
        let shard = format!("{k}/{shards}");
        if k + 1 < shards {
            a.extend(["--shard", &shard]);
            ok(fx.tgc(&a));
        } else {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_tgc"))
                .args(&a)
                .env("TGC_CACHE_DIR", &fx.cache)
                .env("SLURM_ARRAY_TASK_ID", k.to_string())
                .env("SLURM_ARRAY_TASK_COUNT", shards.to_string())
                .output()
                .unwrap();
            assert!(text(&o).contains(&format!("part {shard} of")), "{}", text(&o));
        }
    }
    ok(fx.tgc(&["merge", s_(&sharded)]));
    sharded
}

#[test]
fn shards_merge_to_what_one_process_writes() {
    let fx = Fixture::new(8, 3, 3, "random:2");
    let root = fx.dir.path();
    let train = root.join("train");
    let (d, fs, t) = (s_(&fx.data), s_(&fx.features), s_(&train));
    ok(fx.tgc(&["train", "--features", fs, "--out", t, "--iterations", "1", "--epochs", "3"]));
    ok(fx.tgc(&["train-temporal", "--features", fs, "--out", t, "--iterations", "1", "--epochs", "3"]));

    // Features: the fixture's file (one process, through the cache) against 3 shards computed
    // afresh, at another batch size.
    let sharded = root.join("features.safetensors");
    for k in 0..3 {
        let shard = format!("{k}/3");
        let args = ["extract", "--backbone", "resnet18", "--weights", "random:2", "--data", d, "--out", s_(&sharded), "--shard", &shard, "--no-cache"];
        ok(fx.tgc(&[&args[..], &["--batch-size", "3"]].concat()));
    }
    let o = fx.tgc(&["merge", s_(&sharded)]);
    assert!(text(&o).contains("merged from 3 parts"), "{}", text(&o));
    assert!(std::fs::read(&sharded).unwrap() == std::fs::read(&fx.features).unwrap(), "merged features differ from one process's");
    // A rerun of a finished task skips its part.
    let again = ok(fx.tgc(&["extract", "--backbone", "resnet18", "--weights", "random:2", "--data", d, "--out", s_(&sharded), "--shard", "1/3", "--no-cache"]));
    assert!(again.contains("already complete: skipped"), "{again}");

    let run = train.join("ResNet/0");
    let explain = root.join("explain");
    let merged = one_and_sharded(
        &fx,
        &["explain", "--run", s_(&run), "--data", d, "--split", "all", "--samples-per-class", "3", "--method", "gradcam,guided-backprop"],
        &explain,
        3,
    );
    same_tree(&explain.join("one"), &merged);
    assert!(merged.join("grid.png").is_file());

    let faith = root.join("faith");
    let args = ["faithfulness", "--run", s_(&run), "--data", d, "--samples-per-class", "5", "--split", "all", "--method", "gradcam,saliency"];
    let merged =
        one_and_sharded(&fx, &[&args[..], &["--curve-steps", "5", "--infidelity-samples", "2", "--sensitivity-samples", "2", "--no-road"]].concat(), &faith, 2);
    same_tree(&faith.join("one"), &merged);

    let temporal = root.join("temporal");
    let merged = one_and_sharded(&fx, &["explain-temporal", "--run", s_(&train.join("ResNet_seq_3/0")), "--data", d, "--steps", "4"], &temporal, 2);
    same_tree(&temporal.join("one"), &merged);
    // Every patient got its files.
    let patients = tgc_data::Dataset::open(&fx.data).unwrap().patients().len();
    assert_eq!(tree(&merged).iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "safetensors")).count(), patients);
}

#[test]
fn a_bids_cohort_in_shards_gives_the_same_derivative() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let data = dir.path().join("cohort");
    ok(tgc(&["data", "synth", "--layout", "bids", "--out", s_(&data), "--patients", "6", "--size", "32", "--max-visits", "3", "--seed", "4"], &cache));
    let source = ["--data", s_(&data), "--labels", "sessions:diagnosis=AD/CN", "--slice", "axial:mid"];
    let features = dir.path().join("f.safetensors");
    let extract = |out: &Path, shard: Option<&str>| {
        let mut a = vec!["extract", "--backbone", "resnet18", "--weights", "random:1", "--out", s_(out), "--no-cache"];
        a.extend(source);
        if let Some(s) = shard {
            a.extend(["--shard", s]);
        }
        ok(tgc(&a, &cache))
    };
    extract(&features, None);
    let sharded = dir.path().join("fs.safetensors");
    extract(&sharded, Some("0/2"));
    extract(&sharded, Some("1/2"));
    ok(tgc(&["merge", s_(&sharded)], &cache));
    assert!(std::fs::read(&sharded).unwrap() == std::fs::read(&features).unwrap(), "merged BIDS features differ");

    // --participant-label, with or without `sub-`, keeps those subjects only.
    let two = dir.path().join("two.safetensors");
    let mut a = vec!["extract", "--backbone", "resnet18", "--weights", "random:1", "--out", s_(&two), "--participant-label", "sub-OAS30001", "OAS30002"];
    a.extend(source);
    ok(tgc(&a, &cache));
    let set = tgc_data::FeatureSet::load(&two).unwrap();
    assert!(!set.is_empty() && set.patient_id.iter().all(|&p| p == 30001 || p == 30002), "{:?}", set.patient_id);
    assert!(set.patient_id.contains(&30001) && set.patient_id.contains(&30002));
    let mut a = vec!["extract", "--backbone", "resnet18", "--weights", "random:1", "--out", s_(&two), "--participant-label", "sub-nobody"];
    a.extend(source);
    let o = tgc(&a, &cache);
    assert!(!o.status.success() && text(&o).contains("--participant-label sub-nobody"), "{}", text(&o));

    // Explanations into a BIDS derivative, the maps in the scans' geometry.
    let runs = dir.path().join("runs");
    ok(tgc(&["train", "--features", s_(&features), "--out", s_(&runs), "--iterations", "1", "--epochs", "2"], &cache));
    let explain = |out: &Path, shard: Option<&str>| {
        let mut a = vec![
            "explain",
            "--run",
            s_(&runs.join("ResNet/0")).to_owned().leak(),
            "--split",
            "all",
            "--samples-per-class",
            "2",
            "--method",
            "gradcam",
            "--out",
            s_(out),
        ];
        a.extend(source);
        if let Some(s) = shard {
            a.extend(["--shard", s]);
        }
        ok(tgc(&a, &cache))
    };
    let (one, merged) = (dir.path().join("one"), dir.path().join("merged"));
    explain(&one, None);
    explain(&merged, Some("0/2"));
    explain(&merged, Some("1/2"));
    ok(tgc(&["merge", s_(&merged)], &cache));
    same_tree(&one, &merged);
    let files = tree(&merged);
    assert!(files.iter().any(|(p, _)| p == Path::new("dataset_description.json")));
    assert!(
        files.iter().any(|(p, _)| p.to_string_lossy().ends_with("_desc-gradcam_attribution.nii.gz")),
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

#[test]
fn bad_shards_and_parts_are_named_and_merge_writes_nothing() {
    let fx = Fixture::new(6, 2, 1, "random:1");
    let root = fx.dir.path();
    let d = s_(&fx.data);
    let out = root.join("g.safetensors");
    let extract = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tgc"));
        c.args(["extract", "--backbone", "resnet18", "--weights", "random:1", "--data", d, "--out", s_(&out)]).args(extra).env("TGC_CACHE_DIR", &fx.cache);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // Requests that cannot be met.
    for (extra, env, needle) in [
        (&["--shard", "2/2"][..], &[][..], "shard 2 does not exist among 2"),
        (&["--shard", "0/0"], &[], "0 shards"),
        (&["--shard", "one"], &[], "expected K/N"),
        (&["--shards", "3"], &[], "--shard K/3"),
        (&[], &[("SLURM_ARRAY_TASK_ID", "1")], "SLURM_ARRAY_TASK_COUNT"),
        (&[], &[("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4")], "shard 4 does not exist among 4"),
        (&[], &[("JOB_COMPLETION_INDEX", "0")], "--shards"),
        (&["--shard", "0/2", "--shards", "3"], &[], "disagree"),
    ] {
        let o = extract(extra, env);
        assert!(!o.status.success() && text(&o).contains(needle), "{extra:?} {env:?}: {}", text(&o));
    }
    assert!(!out.exists() && !root.join("g.safetensors.parts").exists());

    // An Indexed Job's index with --shards works.
    ok(extract(&["--shards", "2"], &[("JOB_COMPLETION_INDEX", "0")]));
    // A merge with shard 1 missing names it and writes nothing.
    let o = fx.tgc(&["merge", s_(&out)]);
    assert!(!o.status.success() && text(&o).contains("shard 1/2 of `tgc extract` is missing"), "{}", text(&o));
    assert!(!out.exists());
    // Another configuration, or another shard count, in the same parts folder is refused.
    let o = extract(&["--shard", "1/2", "--imagenet-normalize"], &[]);
    assert!(!o.status.success() && text(&o).contains("another command") && text(&o).contains("--imagenet-normalize"), "{}", text(&o));
    let o = extract(&["--shard", "1/3"], &[]);
    assert!(!o.status.success() && text(&o).contains("parts of two runs"), "{}", text(&o));
    ok(extract(&["--shard", "1/2"], &[]));
    // Two parts claiming the same image: the merge names both and writes nothing.
    let parts = root.join("g.safetensors.parts");
    let record = |k: usize| parts.join(format!("{k}-of-2/part.json"));
    let mut second: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record(1)).unwrap()).unwrap();
    let first: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record(0)).unwrap()).unwrap();
    let original = second.clone();
    second["items"].as_array_mut().unwrap().push(first["items"][0].clone());
    std::fs::write(record(1), second.to_string()).unwrap();
    let o = fx.tgc(&["merge", s_(&out)]);
    assert!(!o.status.success() && text(&o).contains("overlap") && text(&o).contains("0-of-2") && text(&o).contains("1-of-2"), "{}", text(&o));
    assert!(!out.exists());
    // A part made by another command (edited record): named.
    let mut other = original.clone();
    for a in other["arguments"].as_array_mut().unwrap() {
        if a == "random:1" {
            *a = serde_json::json!("random:5");
        }
    }
    std::fs::write(record(1), other.to_string()).unwrap();
    let o = fx.tgc(&["merge", s_(&out)]);
    assert!(!o.status.success() && text(&o).contains("another command") && text(&o).contains("random:5"), "{}", text(&o));
    assert!(!out.exists());
    std::fs::write(record(1), original.to_string()).unwrap();
    ok(fx.tgc(&["merge", s_(&parts)]));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&fx.features).unwrap());

    // A shard of one slice is refused.
    let o = fx.tgc(&["explain", "--backbone", "resnet18", "--weights", "random:1", "--head", "h", "--input", "x.nii.gz", "--out", "o", "--shard", "0/2"]);
    assert!(!o.status.success() && text(&o).contains("--shard splits a data set"), "{}", text(&o));
    // Nothing to merge.
    let o = fx.tgc(&["merge", s_(&root.join("nothing"))]);
    assert!(!o.status.success() && text(&o).contains("holds no complete part"), "{}", text(&o));

    // A part made on other data (the folder regenerated since) is refused by name.
    let other = root.join("other");
    let (h, d2) = (root.join("h.safetensors"), s_(&other).to_owned());
    let synth = |seed: &str, patients: &str| ok(fx.tgc(&["data", "synth", "--out", &d2, "--patients", patients, "--size", "64", "--seed", seed]));
    let shard = |k: &str| fx.tgc(&["extract", "--backbone", "resnet18", "--weights", "random:1", "--data", &d2, "--out", s_(&h), "--shard", k]);
    synth("1", "4");
    ok(shard("0/2"));
    std::fs::remove_dir_all(&other).unwrap();
    synth("2", "5");
    let o = shard("1/2");
    assert!(!o.status.success() && text(&o).contains("0-of-2 covered another set of"), "{}", text(&o));
}
