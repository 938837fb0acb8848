//! End-to-end: `tgc extract` on phantoms with random weights, its cache, and its errors.

mod common;

use common::{text, tgc};
use tgc_data::FeatureSet;

#[test]
fn extract_writes_features_and_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let data = dir.path().join("ph");
    let d = data.to_str().unwrap();
    assert!(tgc(&["data", "synth", "--out", d, "--patients", "4", "--size", "32", "--seed", "2"], &cache).status.success());
    let out_file = dir.path().join("f.safetensors");
    let f = out_file.to_str().unwrap();
    let args = ["extract", "--backbone", "resnet18", "--weights", "random:3", "--data", d, "--out", f];
    let first = tgc(&args, &cache);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("RANDOM-INIT"), "{}", text(&first));
    assert!(text(&first).contains("0 from cache"), "{}", text(&first));

    let set = FeatureSet::load(&out_file).unwrap();
    let n = tgc_data::Dataset::open(&data).unwrap().len();
    assert_eq!((set.len(), set.dim), (n, 512));
    assert!(set.random_weights());
    assert_eq!(set.metadata["backbone"], "resnet18");
    assert_eq!(set.metadata["weights"], "random:3");
    assert_eq!(set.metadata["ops"], "cpu kernels");
    assert!(set.label.iter().all(|&l| l == 0 || l == 1));
    assert!(set.features.iter().any(|&v| v != 0.0));

    let second = tgc(&args, &cache);
    assert!(text(&second).contains(&format!("{n} from cache")), "{}", text(&second));
    assert_eq!(FeatureSet::load(&out_file).unwrap(), set);

    let mut no_cache = args.to_vec();
    no_cache.push("--no-cache");
    let third = tgc(&no_cache, &cache);
    assert!(text(&third).contains("0 from cache"), "{}", text(&third));
    assert_eq!(FeatureSet::load(&out_file).unwrap().features, set.features);
}

#[test]
fn extract_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = tgc(&["extract", "--backbone", "resnet50", "--data", ".", "--out", "x"], &cache);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("resnet50"));
    let out = tgc(&["extract", "--backbone", "vit", "--weights", "random:x", "--data", ".", "--out", "x"], &cache);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("random:x"));
    let out = tgc(&["extract", "--backbone", "vit", "--weights", "random:1", "--data", "/no/data", "--out", "x"], &cache);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("/no/data"));
    // --device: a device this build cannot open is refused before anything runs.
    let out = tgc(&["extract", "--backbone", "vit", "--weights", "random:1", "--data", ".", "--out", "x", "--device", "tpu"], &cache);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cpu, cuda or cuda:N"), "{}", text(&out));
    let out = tgc(&["explain", "--backbone", "vit", "--model", "m", "--input", "x.nii", "--out", "x", "--device", "cuda:0"], &cache);
    assert_ne!(out.status.code(), Some(0));
    let expected = if cfg!(feature = "cuda") { "no CUDA device 0" } else { "built without CUDA" };
    assert!(text(&out).contains(expected), "{}", text(&out));
}

#[test]
fn features_file_errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let cpu = candle_core::Device::Cpu;
    let features = candle_core::Tensor::zeros((3, 4), candle_core::DType::F32, &cpu).unwrap();
    let label = candle_core::Tensor::zeros(2, candle_core::DType::I64, &cpu).unwrap();
    candle_core::safetensors::save(&[("features", features.clone()), ("label", label.clone())].into_iter().collect(), &path).unwrap();
    let err = FeatureSet::load(&path).unwrap_err().to_string();
    assert!(err.contains("patient_id"), "{err}");
    candle_core::safetensors::save(
        &[("features", features), ("label", label.clone()), ("patient_id", label.clone()), ("day", label)].into_iter().collect(),
        &path,
    )
    .unwrap();
    let err = FeatureSet::load(&path).unwrap_err().to_string();
    assert!(err.contains("[2]") && err.contains("[3]"), "{err}");
}

/// `tgc extract` writes the same bytes on the portable path (`TGC_SIMD=baseline`), the AVX2
/// path (`TGC_SIMD=avx2 TGC_GEMM=avx2`), the CPU's default and on one thread: the kernels'
/// one summation order, end to end (a CPU without AVX2 runs the first of these).
#[test]
fn extract_writes_the_same_bytes_on_every_kernel_path() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let data = dir.path().join("ph");
    let d = data.to_str().unwrap();
    assert!(tgc(&["data", "synth", "--out", d, "--patients", "4", "--size", "32", "--seed", "4"], &cache).status.success());
    let settings: [&[(&str, &str)]; 4] = [&[("TGC_SIMD", "baseline")], &[("TGC_SIMD", "avx2"), ("TGC_GEMM", "avx2")], &[], &[("RAYON_NUM_THREADS", "1")]];
    let mut files = Vec::new();
    for (i, env) in settings.iter().enumerate() {
        let out = dir.path().join(format!("f{i}.safetensors"));
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tgc"));
        command.args(["extract", "--backbone", "resnet18", "--weights", "random:3", "--data", d, "--out", out.to_str().unwrap(), "--no-cache"]);
        command.env("TGC_CACHE_DIR", &cache).env_remove("TGC_SIMD").env_remove("TGC_GEMM").envs(env.iter().copied());
        let run = command.output().unwrap();
        assert!(run.status.success(), "{env:?}: {}", text(&run));
        files.push(std::fs::read(&out).unwrap());
    }
    for (i, file) in files.iter().enumerate().skip(1) {
        assert!(*file == files[0], "the features under {:?} differ from those under {:?}", settings[i], settings[0]);
    }
}
