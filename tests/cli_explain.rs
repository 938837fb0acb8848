//! End-to-end: `tgc explain` on phantoms with random weights and a head from `tgc train`.

mod common;

use common::{ok, s_, tgc, Fixture};

#[test]
fn explain_one_slice_and_a_split() {
    let fx = Fixture::new(10, 2, 1, "random:2");
    let (dir, cache, data) = (&fx.dir, &fx.cache, &fx.data);
    let train = dir.path().join("train");
    let (d, fs, t) = (s_(data), s_(&fx.features), s_(&train));
    ok(fx.tgc(&["train", "--features", fs, "--out", t, "--iterations", "1", "--epochs", "3"]));
    let head = train.join("ResNet/0/model.safetensors");
    let h = head.to_str().unwrap();

    let slice = std::fs::read_dir(data.join("disease")).unwrap().next().unwrap().unwrap().path();
    // `tgc explain` of that slice with the random ResNet-18 and the trained head, then `more`.
    let explain_one = |more: &[&str]| {
        let mut args = vec!["explain", "--backbone", "resnet18", "--weights", "random:2", "--head", h, "--input", slice.to_str().unwrap()];
        args.extend(more);
        tgc(&args, cache)
    };
    let out = dir.path().join("one.safetensors");
    let png = dir.path().join("one.png");
    let text = ok(explain_one(&["--method", "gradcam", "--target", "1", "--out", out.to_str().unwrap(), "--png", png.to_str().unwrap()]));
    assert!(text.contains("RANDOM-INIT"), "{text}");
    let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["attribution"].dims(), &[1, 64, 64]);
    assert_eq!(t["logits"].dims(), &[2]);
    assert_eq!(t["layer_attribution"].dims(), &[2, 2]);
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");

    // Another Grad-CAM layer: layer3 of a 64² input is 4×4.
    let out3 = dir.path().join("layer3.safetensors");
    ok(explain_one(&["--method", "gradcam", "--layer", "layer3", "--out", out3.to_str().unwrap()]));
    let (t3, meta) = load_with_metadata(&out3);
    assert_eq!(t3["layer_attribution"].dims(), &[4, 4]);
    assert_eq!(meta["layer"], "layer3");
    let kept = std::env::var("TGC_DENORMALS").is_ok_and(|v| v == "keep");
    assert_eq!(meta["denormals"], if kept { "kept" } else { "flushed to zero" }, "tgc flushes denormals and says so");

    // DeepLift (zero baseline) adds up on the ResNet: its convergence delta is stored and
    // printed; Layer Integrated Gradients keeps the layer's shape; DeepLiftShap needs baselines.
    let rules = dir.path().join("rules.safetensors");
    let explain = |method: &str, more: &[&str]| {
        let mut args = vec!["--method", method, "--layer", "layer3", "--target", "1", "--out", rules.to_str().unwrap()];
        args.extend(more);
        explain_one(&args)
    };
    let text = ok(explain("deeplift,deconvolution,layer-integrated-gradients", &["--steps", "8"]));
    assert!(text.contains("convergence delta"), "{text}");
    let load = |m: &str| candle_core::safetensors::load(dir.path().join(format!("rules.{m}.safetensors")), &candle_core::Device::Cpu).unwrap();
    let (dl, lig) = (load("deeplift"), load("layer-integrated-gradients"));
    let sum = dl["attribution"].sum_all().unwrap().to_scalar::<f32>().unwrap();
    let delta = dl["convergence_delta"].to_vec1::<f32>().unwrap()[0];
    assert!(delta.abs() <= 1e-4 * sum.abs().max(1e-3), "Σ {sum}, delta {delta}");
    assert_eq!(lig["layer_attribution"].dims(), &[256, 4, 4]);
    assert_eq!(load("deconvolution")["attribution"].dims(), &[3, 64, 64]);
    let o = explain("deeplift-shap", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("baseline distribution"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = explain("deeplift", &["--baselines", "zeros-and-input"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("DeepLiftShap"), "{}", String::from_utf8_lossy(&o.stderr));
    // One layer vocabulary: the checkpoint's names; a bare number is refused, naming the layers.
    for bad in ["layer9", "3"] {
        let o = explain_one(&["--method", "gradcam", "--layer", bad, "--out", "o"]);
        assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("resnet18 has layer1..layer4"), "{}", String::from_utf8_lossy(&o.stderr));
    }

    // --run: the head, backbone, weights and test patients come from the training iteration.
    let run = train.join("ResNet/0");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let test: Vec<u64> = config["test_patients"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    let run_dir = dir.path().join("run-maps");
    ok(tgc(&["explain", "--run", s_(&run), "--data", d, "--samples-per-class", "5", "--method", "gradcam", "--out", s_(&run_dir)], cache));
    let explained: Vec<_> = std::fs::read_dir(&run_dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().unwrap() == "safetensors").collect();
    assert!(!explained.is_empty());
    for file in &explained {
        let (_, meta) = load_with_metadata(file);
        let name = std::path::Path::new(&meta["input"]).file_name().unwrap().to_string_lossy().into_owned();
        let (patient, _) = tgc_data::parse_file_name(&name).unwrap();
        assert!(test.contains(&patient.number()), "{name} is not a test patient of the run: {test:?}");
        assert_eq!(meta["run"], run.display().to_string());
        assert_eq!(meta["weights"], "random:2");
    }
    // --run excludes naming the checkpoint or weights again.
    let o = tgc(&["explain", "--run", s_(&run), "--head", h, "--data", d, "--method", "gradcam", "--out", "o"], cache);
    assert_eq!(o.status.code(), Some(2));
    // The run's test split of another data set with the same patient numbers (other phantoms)
    // is refused, naming the slice; `--split all` of that folder is any folder's slices.
    let other = dir.path().join("other-phantoms");
    ok(tgc(&["data", "synth", "--out", s_(&other), "--patients", "10", "--size", "64", "--seed", "99", "--max-visits", "2"], cache));
    let o = tgc(&["explain", "--run", s_(&run), "--data", s_(&other), "--split", "test", "--method", "gradcam", "--out", s_(&dir.path().join("o"))], cache);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("other-phantoms") && err.contains("another data set than the run's") && err.contains("f.safetensors"), "{err}");
    let all = dir.path().join("all-maps");
    ok(tgc(
        &["explain", "--run", s_(&run), "--data", s_(&other), "--split", "all", "--samples-per-class", "1", "--method", "gradcam", "--out", s_(&all)],
        cache,
    ));

    let out_dir = dir.path().join("maps");
    let text = ok(tgc(
        &[
            "explain",
            "--backbone",
            "resnet18",
            "--weights",
            "random:2",
            "--head",
            h,
            "--data",
            d,
            "--split",
            "test",
            "--split-seed",
            "0",
            "--samples-per-class",
            "1",
            "--method",
            "gradient-shap,gradcam,guided-gradcam,guided-backprop,saliency,input-x-gradient,integrated-gradients",
            "--steps",
            "4",
            "--samples",
            "3",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        cache,
    ));
    assert!(text.contains("2 slices × 7 methods"), "{text}");
    let files: Vec<String> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(files.iter().filter(|f| f.ends_with(".safetensors")).count(), 14, "{files:?}");
    assert_eq!(files.iter().filter(|f| f.ends_with(".png")).count(), 15, "{files:?}");
    let gb = files.iter().find(|f| f.ends_with(".guided-backprop.safetensors")).unwrap();
    let t = candle_core::safetensors::load(out_dir.join(gb), &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["attribution"].dims(), &[3, 64, 64]);
    assert!(!t.contains_key("layer_attribution"));
    // GradientSHAP and IG do not run the input itself; the files still carry its logits.
    let shap = files.iter().find(|f| f.ends_with(".gradient-shap.safetensors")).unwrap();
    assert_eq!(candle_core::safetensors::load(out_dir.join(shap), &candle_core::Device::Cpu).unwrap()["logits"].dims(), &[2]);

    // The CAM family and the perturbation methods, by pytorch-grad-cam's and Captum's names.
    let extra = dir.path().join("extra.safetensors");
    let cams = "hirescam,gradcam++,xgradcam,layercam,eigencam,eigengradcam,scorecam,ablationcam";
    let text = ok(explain_one(&[
        "--method",
        &format!("{cams},occlusion,feature-ablation"),
        "--window",
        "16",
        "--stride",
        "16",
        "--grid",
        "32",
        "--batch-size",
        "64",
        "--target",
        "1",
        "--out",
        extra.to_str().unwrap(),
    ]));
    assert!(text.contains("Grad-CAM++ of"), "{text}");
    for name in cams.split(',') {
        let (t, meta) = load_with_metadata(&dir.path().join(format!("extra.{name}.safetensors")));
        assert_eq!(t["attribution"].dims(), &[1, 64, 64], "{name}");
        assert_eq!(t["layer_attribution"].dims(), &[2, 2], "{name}");
        assert_eq!(meta["method"], name);
    }
    for name in ["occlusion", "feature-ablation"] {
        let t = candle_core::safetensors::load(dir.path().join(format!("extra.{name}.safetensors")), &candle_core::Device::Cpu).unwrap();
        assert_eq!(t["attribution"].dims(), &[3, 64, 64], "{name}");
        // 16-pixel windows moved by 16 and 32-pixel blocks: the maps are constant on those tiles.
        let a: Vec<f32> = t["attribution"].flatten_all().unwrap().to_vec1().unwrap();
        let tile = if name == "occlusion" { 16 } else { 32 };
        assert!((0..64 * 64).all(|p| a[p] == a[(p / 64 / tile * tile) * 64 + p % 64 / tile * tile]), "{name}");
    }
    // The forward-only Shapley/LIME methods on 32-pixel blocks (4 features): KernelSHAP with
    // every coalition (16 samples ≥ 2⁴) equals the exact Shapley values.
    let shap = dir.path().join("shap.safetensors");
    let text = ok(explain_one(&[
        "--method",
        "shapley-values,shapley-value-sampling,kernel-shap,lime,feature-ablation",
        "--grid",
        "32",
        "--samples",
        "16",
        "--sampling-seed",
        "3",
        "--target",
        "1",
        "--out",
        shap.to_str().unwrap(),
    ]));
    assert!(text.contains("Kernel SHAP of"), "{text}");
    let map = |name: &str| -> Vec<f32> {
        let t = candle_core::safetensors::load(dir.path().join(format!("shap.{name}.safetensors")), &candle_core::Device::Cpu).unwrap();
        assert_eq!(t["attribution"].dims(), &[3, 64, 64], "{name}");
        t["attribution"].flatten_all().unwrap().to_vec1().unwrap()
    };
    let (exact, kernel) = (map("shapley-values"), map("kernel-shap"));
    assert!(exact.iter().any(|v| *v != 0.0));
    assert!(exact.iter().zip(&kernel).all(|(e, k)| (e - k).abs() <= 1e-4 * (1.0 + e.abs())), "KernelSHAP over every coalition");
    for name in ["shapley-value-sampling", "lime"] {
        let a = map(name);
        assert!((0..64 * 64).all(|p| a[p] == a[(p / 64 / 32 * 32) * 64 + p % 64 / 32 * 32]), "{name}");
    }
    // NoiseTunnel around a method: the file and the method name say so.
    let tunnel = dir.path().join("tunnel.safetensors");
    let text = ok(explain_one(&[
        "--method",
        "saliency,input-x-gradient",
        "--noise-tunnel",
        "vargrad",
        "--nt-samples",
        "3",
        "--nt-stdevs",
        "0.2",
        "--target",
        "1",
        "--out",
        tunnel.to_str().unwrap(),
    ]));
    assert!(text.contains("Saliency (vargrad)"), "{text}");
    let (t, meta) = load_with_metadata(&dir.path().join("tunnel.saliency-vargrad.safetensors"));
    assert_eq!(meta["method"], "saliency-vargrad");
    assert!(t["attribution"].flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| *v >= 0.0), "a variance is never negative");
    let o = explain_one(&["--method", "occlusion", "--window", "0", "--out", "o"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--window"));
}

fn load_with_metadata(path: &std::path::Path) -> (std::collections::HashMap<String, candle_core::Tensor>, std::collections::HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    (candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu).unwrap(), meta.metadata().clone().unwrap_or_default())
}

#[test]
fn explain_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = &dir.path().join("cache");
    let bad_head = dir.path().join("head.safetensors");
    let w = candle_core::Tensor::zeros((2, 7), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let b = candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("weight", w), ("bias", b)].into_iter().collect(), &bad_head).unwrap();
    // Grad-CAM of a slice (that is never reached) with the random ResNet-18 and `head`.
    let explain_with_head = |head: &std::path::Path| {
        tgc(
            &["explain", "--backbone", "resnet18", "--weights", "random:1", "--head", s_(head), "--input", "x.nii.gz", "--method", "gradcam", "--out", "o"],
            cache,
        )
    };
    let o = explain_with_head(&bad_head);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("head.safetensors") && err.contains("[2, 7]"), "{err}");
    let o = tgc(&["explain", "--backbone", "resnet18", "--head", "h", "--input", "x", "--method", "nope", "--out", "o"], cache);
    assert_eq!(o.status.code(), Some(2));
    // A head full of NaN is refused, naming the file and the tensor.
    let nan_head = dir.path().join("nan_head.safetensors");
    let w = candle_core::Tensor::from_vec(vec![f32::NAN; 2 * 512], (2, 512), &candle_core::Device::Cpu).unwrap();
    let b = candle_core::Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("weight", w), ("bias", b)].into_iter().collect(), &nan_head).unwrap();
    let o = explain_with_head(&nan_head);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nan_head.safetensors") && err.contains("`weight`") && err.contains("1024 NaN"), "{err}");
    // A flag that contradicts the run is refused, not ignored.
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let config = r#"{"run": {"backbone": "resnet18", "weights": "random:1", "imagenet_normalize": false}, "train_patients": [], "validation_patients": [], "test_patients": []}"#;
    std::fs::write(run.join("config.json"), config).unwrap();
    let o = tgc(&["explain", "--run", run.to_str().unwrap(), "--imagenet-normalize", "--input", "x.nii.gz", "--method", "gradcam", "--out", "o"], cache);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--imagenet-normalize") && err.contains(run.to_str().unwrap()), "{err}");
}

#[test]
fn temporal_explanations_and_faithfulness_on_phantoms() {
    let fx = Fixture::new(8, 3, 3, "random:2");
    let (dir, cache, data) = (&fx.dir, &fx.cache, &fx.data);
    let train = dir.path().join("train");
    let (d, fs, t) = (s_(data), s_(&fx.features), s_(&train));
    ok(fx.tgc(&["train-temporal", "--features", fs, "--out", t, "--iterations", "1", "--epochs", "3"]));
    ok(fx.tgc(&["train", "--features", fs, "--out", t, "--iterations", "1", "--epochs", "3"]));

    // The patient with the most visits.
    let ds = tgc_data::Dataset::open(&data).unwrap();
    let stats = tgc_data::Stats::of(&ds);
    let patient = ds.patients().keys().max_by_key(|p| ds.visits_of(p).len()).unwrap().clone();
    let visits = ds.visits_of(&patient).len();
    assert_eq!(visits, stats.max_visits());
    let out = dir.path().join("temporal");
    let text = ok(tgc(
        &[
            "explain-temporal",
            "--run",
            s_(&train.join("ResNet_seq_3/0")),
            "--data",
            d,
            "--patient",
            &patient.to_string(),
            "--steps",
            "8",
            "--out",
            out.to_str().unwrap(),
        ],
        cache,
    ));
    assert!(text.contains("RANDOM-INIT"), "{text}");
    let file = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().unwrap() == "safetensors").unwrap();
    assert!(file.with_extension("png").is_file());
    let t = candle_core::safetensors::load(&file, &candle_core::Device::Cpu).unwrap();
    let real = visits.min(3);
    assert_eq!(t["gradcam"].dims(), &[real, 1, 64, 64]);
    assert_eq!(t["guided_gradcam"].dims(), &[real, 3, 64, 64]);
    let ig: Vec<f32> = t["step_importance_ig"].to_vec1().unwrap();
    assert_eq!(ig.len(), 3);
    assert!(ig[..3 - real].iter().all(|&v| v == 0.0), "padded steps must be exactly 0: {ig:?}");
    // A probe checkpoint is refused as a temporal model.
    let o = tgc(
        &[
            "explain-temporal",
            "--backbone",
            "resnet18",
            "--weights",
            "random:2",
            "--model",
            train.join("ResNet/0/model.safetensors").to_str().unwrap(),
            "--data",
            d,
            "--patient",
            &patient.to_string(),
            "--out",
            out.to_str().unwrap(),
        ],
        cache,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("linear probe"));

    let fout = dir.path().join("faith");
    let text = ok(tgc(
        &[
            "faithfulness",
            "--run",
            s_(&train.join("ResNet/0")),
            "--data",
            d,
            "--samples-per-class",
            "1",
            "--curve-steps",
            "5",
            "--baseline",
            "blur",
            "--sensitivity-samples",
            "2",
            "--method",
            "gradcam,saliency",
            "--out",
            fout.to_str().unwrap(),
        ],
        cache,
    ));
    assert!(text.contains("synthetic phantoms"), "{text}");
    let summary = std::fs::read_to_string(fout.join("summary.csv")).unwrap();
    let rows: Vec<Vec<&str>> = summary.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for v in &r[1..5] {
            let x: f64 = v.parse().unwrap_or_else(|_| panic!("{summary}"));
            assert!((-1.0..=1.0).contains(&x), "{summary}");
        }
        assert_eq!(r[6], "2");
    }
    // Captum's infidelity and max-sensitivity, per method: non-negative numbers.
    let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    for column in ["infidelity", "sensitivity_max"] {
        let k = header.iter().position(|h| *h == column).unwrap_or_else(|| panic!("{summary}"));
        for r in &rows {
            let x: f64 = r[k].parse().unwrap_or_else(|_| panic!("{column}: {summary}"));
            assert!(x >= 0.0 && x.is_finite(), "{summary}");
        }
    }
    assert!(fout.join("faithfulness.md").is_file() && fout.join("faithfulness.csv").is_file());
    // The randomisation cascade: every stage from the head down to the stem, per slice and method.
    let cascade = std::fs::read_to_string(fout.join("randomization.csv")).unwrap();
    let stages: Vec<&str> = cascade.lines().skip(1).filter(|l| l.starts_with("Saliency,")).map(|l| l.split(',').nth(2).unwrap()).collect();
    assert_eq!(stages.len(), 2 * 6, "{cascade}");
    for stage in ["head", "layer4", "layer3", "layer2", "layer1", "stem"] {
        assert_eq!(stages.iter().filter(|s| **s == stage).count(), 2, "{cascade}");
    }
    // With every weight re-drawn, Saliency's map is no longer the trained model's.
    let stem_rho: Vec<f64> = cascade
        .lines()
        .filter(|l| l.starts_with("Saliency,") && l.split(',').nth(2) == Some("stem"))
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert!(stem_rho.iter().all(|r| *r < 0.95), "{cascade}");
    let md = std::fs::read_to_string(fout.join("faithfulness.md")).unwrap();
    assert!(md.contains("| Method | head | layer4 | layer3 | layer2 | layer1 | stem |"), "{md}");
}

#[test]
fn explain_a_volume_with_the_3d_model() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // A 12 × 16 × 16 volume with a bright block.
    let (d, h, w) = (12, 16, 16);
    let voxels: Vec<f32> = (0..d * h * w)
        .map(|i| if (4..8).contains(&(i / (h * w))) && (5..9).contains(&(i / w % h)) && (6..12).contains(&(i % w)) { 100.0 } else { 10.0 })
        .collect();
    let vol = dir.path().join("vol.nii.gz");
    tgc_data::write_nifti_volume(&vol, &tgc_data::Volume::new((d, h, w), voxels).unwrap()).unwrap();
    let out = dir.path().join("maps");
    let text =
        ok(tgc(&["explain", "--volume", s_(&vol), "--volume-weights", "random:3", "--method", "gradcam,saliency,guided-gradcam", "--out", s_(&out)], &cache));
    assert!(text.contains("RANDOM-INIT"), "{text}");
    for method in ["gradcam", "saliency", "guided-gradcam"] {
        let map = tgc_data::read_nifti_volume(&out.join(format!("vol.{method}.nii.gz"))).unwrap();
        assert_eq!(map.dims(), (d, h, w), "{method}");
        assert!(map.voxels.iter().all(|v| v.is_finite()) && map.voxels.iter().any(|v| *v != 0.0), "{method}");
        assert!(out.join(format!("vol.{method}.png")).is_file());
        let (tensors, meta) = load_with_metadata(&out.join(format!("vol.{method}.safetensors")));
        assert_eq!(tensors["attribution"].dims(), &[1, d, h, w]);
        assert_eq!(meta["random_weights"], "true");
        assert_eq!(meta["layer"], "block2");
    }
    let (tensors, _) = load_with_metadata(&out.join("vol.gradcam.safetensors"));
    assert_eq!(tensors["layer_attribution"].dims(), &[6, 8, 8], "block2 is at half resolution");
    // What the volume path refuses, by name.
    let o = tgc(&["explain", "--volume", s_(&vol), "--method", "gradcam", "--out", s_(&out)], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--volume-weights"));
    let o = tgc(&["explain", "--volume", s_(&vol), "--volume-weights", "random:3", "--method", "occlusion", "--out", s_(&out)], &cache);
    assert!(String::from_utf8_lossy(&o.stderr).contains("[B, C, H, W]"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tgc(&["explain", "--volume", s_(&vol), "--volume-weights", "random:3", "--layer", "block9", "--method", "gradcam", "--out", s_(&out)], &cache);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stem, block1, down, block2"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tgc(&["explain", "--volume", s_(&vol), "--volume-weights", "random:3", "--backbone", "vit", "--out", s_(&out)], &cache);
    assert_eq!(o.status.code(), Some(2), "--volume excludes the 2-D model's flags");
}
