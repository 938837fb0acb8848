//! Loading (folder, file, random), parity with candle-transformers, the split forward,
//! gradients to the input, and every weight error.

mod common;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;
use common::*;
use tgc_backbones::{Backbone, BackboneKind, LoadOptions, Randomize, WeightSource};
use tgc_explain::{Attribute, Hooks, LayerGradient, ReluMode};

fn cpu() -> LoadOptions {
    LoadOptions::default()
}

fn resnet_folder(dir: &std::path::Path) -> std::collections::HashMap<String, Tensor> {
    let tensors = resnet18_tensors(10, 1);
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    tensors
}

#[test]
fn resnet_matches_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = resnet_folder(dir.path());
    let ours = tgc_backbones::resnet::ResNet18::new(VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu)).unwrap();
    let theirs = candle_transformers::models::resnet::resnet18(10, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap();
    let x = rand_tensor(&[2, 3, 64, 64], 1.0, 11).abs().unwrap();
    let a = ours.logits(&x).unwrap().unwrap();
    let b = theirs.forward(&x).unwrap();
    assert_eq!(a.dims(), &[2, 10]);
    let diff = max_rel_diff(&a, &b, 1e-3);
    assert!(diff < 1e-4, "relative difference {diff}");
}

#[test]
fn vit_matches_candle_transformers() {
    let tensors = tiny_vit_tensors(2, 5, 2);
    let cfg_json = tiny_vit_config_json(2);
    let cfg: tgc_backbones::vit::VitConfig = serde_json::from_str(&cfg_json).unwrap();
    let ours = tgc_backbones::vit::Vit::new(&cfg, VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu)).unwrap();
    let theirs_cfg: candle_transformers::models::vit::Config = serde_json::from_str(&cfg_json).unwrap();
    let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let theirs = candle_transformers::models::vit::Model::new(&theirs_cfg, 5, vb).unwrap();
    let x = rand_tensor(&[2, 3, 32, 32], 1.0, 12);
    let features = ours.features(&x).unwrap();
    assert_eq!(features.dims(), &[2, 32]);
    let head = candle_nn::Linear::new(tensors["classifier.weight"].clone(), Some(tensors["classifier.bias"].clone()));
    let a = head.forward(&features).unwrap();
    let b = theirs.forward(&x).unwrap();
    let diff = max_rel_diff(&a, &b, 1e-3);
    assert!(diff < 1e-4, "relative difference {diff}");
}

/// A pass watching `layer`: its activation and the features it continued to.
fn watched(backbone: &Backbone, layer: &str, x: &Tensor) -> (Tensor, Tensor) {
    let hooks = Hooks::none().watch_layer(layer, LayerGradient::None);
    let features = backbone.forward(x, &hooks).unwrap();
    (hooks.layer_activation().unwrap(), features)
}

#[test]
fn a_watched_layer_continues_to_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    resnet_folder(dir.path());
    let resnet = Backbone::load(BackboneKind::ResNet18, &WeightSource::Folder(dir.path().to_owned()), &cpu()).unwrap();
    let x = rand_tensor(&[1, 3, 256, 256], 1.0, 3).abs().unwrap();
    let plain = Hooks::none();
    let features = resnet.forward(&x, &plain).unwrap();
    assert_eq!(plain.marked_layers(), ["layer1", "layer2", "layer3", "layer4"]);
    assert_eq!(plain.relus_marked(), 17, "the stem's ReLU and two in each of the 8 blocks");
    for (layer, dims) in [("layer1", [1, 64, 64, 64]), ("layer2", [1, 128, 32, 32]), ("layer3", [1, 256, 16, 16]), ("layer4", [1, 512, 8, 8])] {
        let (a, f) = watched(&resnet, layer, &x);
        assert_eq!(a.dims(), &dims, "{layer}");
        assert_eq!(max_rel_diff(&f, &features, 1e-3), 0.0, "{layer}");
    }

    let vit_dir = tempfile::tempdir().unwrap();
    write_safetensors(&vit_dir.path().join("model.safetensors"), &tiny_vit_tensors(3, 2, 5));
    std::fs::write(vit_dir.path().join("config.json"), tiny_vit_config_json(3)).unwrap();
    let vit = Backbone::load(BackboneKind::Vit, &WeightSource::Folder(vit_dir.path().to_owned()), &cpu()).unwrap();
    assert_eq!(vit.feature_dim(), 32);
    let x = rand_tensor(&[2, 3, 32, 32], 1.0, 4);
    for layer in ["block0", "block1", "block2"] {
        let (a, f) = watched(&vit, layer, &x);
        assert_eq!(a.dims(), &[2, 32, 4, 4], "{layer}");
        assert!(max_rel_diff(&f, &vit.features(&x).unwrap(), 1e-3) < 1e-5, "{layer}");
    }
    // Layers a model does not have are refused by name.
    // One vocabulary: the checkpoint's names (a ViT block also as `block<N>`), nothing else.
    assert_eq!(resnet.layer("layer3").unwrap(), "layer3");
    assert_eq!(vit.layer("encoder.layer.1").unwrap(), "block1");
    assert_eq!(vit.layer("block2").unwrap(), "block2");
    assert_eq!((resnet.last_layer(), vit.last_layer()), ("layer4".to_owned(), "block2".to_owned()));
    for (model, bad) in [(&resnet, "layer5"), (&resnet, "3"), (&resnet, "block1"), (&vit, "block3"), (&vit, "encoder.layer.3"), (&vit, "2"), (&vit, "last")] {
        let err = model.layer(bad).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{bad}`")) && err.contains(if model.kind() == BackboneKind::Vit { "block0..block2" } else { "layer1..layer4" }),
            "{err}"
        );
    }
}

#[test]
fn vit_input_gradient_matches_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), &tiny_vit_tensors(2, 2, 8));
    std::fs::write(dir.path().join("config.json"), tiny_vit_config_json(2)).unwrap();
    let vit = Backbone::load(BackboneKind::Vit, &WeightSource::Folder(dir.path().to_owned()), &cpu()).unwrap();
    let w = rand_tensor(&[1, 32], 1.0, 9);
    let f = |x: &Tensor| vit.features(x).unwrap().mul(&w).unwrap().sum_all().unwrap();
    let x0 = rand_tensor(&[1, 3, 32, 32], 1.0, 10);
    let x = Var::from_tensor(&x0).unwrap();
    let g: Vec<f32> = f(x.as_tensor()).backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f32> = x0.flatten_all().unwrap().to_vec1().unwrap();
    let eps = 1e-2;
    for i in (0..base.len()).step_by(97) {
        let (mut p, mut m) = (base.clone(), base.clone());
        p[i] += eps;
        m[i] -= eps;
        let fp = f(&Tensor::from_vec(p, x0.dims(), &Device::Cpu).unwrap()).to_scalar::<f32>().unwrap();
        let fm = f(&Tensor::from_vec(m, x0.dims(), &Device::Cpu).unwrap()).to_scalar::<f32>().unwrap();
        let fd = (fp - fm) / (2.0 * eps);
        assert!((fd - g[i]).abs() < 1e-2 * (1.0 + fd.abs()), "pixel {i}: fd {fd} vs grad {}", g[i]);
    }
}

#[test]
fn resnet_backpropagates_to_the_input_and_to_layer4() {
    let resnet = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 3 }, &cpu()).unwrap();
    assert!(resnet.is_random());
    let x = Var::from_tensor(&rand_tensor(&[1, 3, 64, 64], 1.0, 1).abs().unwrap()).unwrap();
    let hooks = Hooks::none().watch_layer("layer4", LayerGradient::Cut);
    let y = resnet.forward(x.as_tensor(), &hooks).unwrap().sum_all().unwrap();
    let grads = y.backward().unwrap();
    // d(sum of pooled features)/dA = 1/(h·w) everywhere.
    let ga: Vec<f32> = hooks.layer_gradient(&grads).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(ga.iter().all(|&v| (v - 1.0 / 4.0).abs() < 1e-7), "{:?}", &ga[..4]);
    let gx = resnet.features(x.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = gx.get(x.as_tensor()).unwrap();
    assert_eq!(gx.dims(), &[1, 3, 64, 64]);
    assert!(gx.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
}

#[test]
fn guided_mode_changes_resnet_gradients_only() {
    let resnet = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 4 }, &cpu()).unwrap();
    let x0 = rand_tensor(&[1, 3, 64, 64], 1.0, 2).abs().unwrap();
    let w = rand_tensor(&[1, 512], 1.0, 3);
    let grad = |mode| {
        let x = Var::from_tensor(&x0).unwrap();
        let f = resnet.forward(x.as_tensor(), &Hooks::none().with_relu_mode(mode)).unwrap();
        let y = f.mul(&w).unwrap().sum_all().unwrap();
        let g = y.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        (f, g)
    };
    let (fs, gs) = grad(ReluMode::Standard);
    let (fg, gg) = grad(ReluMode::Guided);
    assert!(max_rel_diff(&fs, &fg, 1e-3) < 1e-7, "guided mode must not change the forward pass");
    assert!(max_rel_diff(&gs, &gg, 1e-6) > 1e-3, "guided gradients should differ");
}

#[test]
fn random_weights_are_deterministic_per_seed() {
    let x = rand_tensor(&[1, 3, 32, 32], 1.0, 5).abs().unwrap();
    let f = |seed| Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed }, &cpu()).unwrap().features(&x).unwrap();
    assert!(max_rel_diff(&f(1), &f(1), 1e-6) == 0.0);
    assert!(max_rel_diff(&f(1), &f(2), 1e-6) > 1e-3);
}

#[test]
fn single_safetensors_file_loads_resnet() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = resnet18_tensors(3, 7);
    let file = dir.path().join("resnet.safetensors");
    write_safetensors(&file, &tensors);
    let source: WeightSource = file.to_str().unwrap().parse().unwrap();
    assert_eq!(source, WeightSource::File(file.clone()));
    let resnet = Backbone::load(BackboneKind::ResNet18, &source, &cpu()).unwrap();
    assert!(!resnet.is_random());
    assert_eq!(resnet.identity().digest.len(), 64);
}

fn load_err(kind: BackboneKind, source: &WeightSource) -> String {
    Backbone::load(kind, source, &cpu()).unwrap_err().to_string()
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = resnet18_tensors(10, 1);
    tensors.remove("layer3.1.bn2.running_var");
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);
    let err = load_err(BackboneKind::ResNet18, &WeightSource::Folder(dir.path().to_owned()));
    assert!(err.contains("layer3.1.bn2.running_var"), "{err}");
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = resnet18_tensors(10, 1);
    tensors.insert("layer2.0.conv1.weight".into(), rand_tensor(&[128, 64, 5, 5], 0.1, 1));
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);
    let err = load_err(BackboneKind::ResNet18, &WeightSource::Folder(dir.path().to_owned()));
    assert!(err.contains("layer2.0.conv1.weight"), "{err}");
    assert!(err.contains("[128, 64, 3, 3]") && err.contains("[128, 64, 5, 5]"), "{err}");
}

#[test]
fn vit_config_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), &tiny_vit_tensors(1, 2, 1));
    let source = WeightSource::Folder(dir.path().to_owned());
    assert!(load_err(BackboneKind::Vit, &source).contains("config.json"));
    std::fs::write(dir.path().join("config.json"), tiny_vit_config_json(1).replace("\"gelu\"", "\"swish\"")).unwrap();
    let err = load_err(BackboneKind::Vit, &source);
    assert!(err.contains("config.json") && err.contains("swish"), "{err}");
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 32}").unwrap();
    let err = load_err(BackboneKind::Vit, &source);
    assert!(err.contains("config.json") && err.contains("num_hidden_layers"), "{err}");
    // A config with more layers than the weights hold: the first missing key is named.
    std::fs::write(dir.path().join("config.json"), tiny_vit_config_json(2)).unwrap();
    let err = load_err(BackboneKind::Vit, &source);
    assert!(err.contains("vit.encoder.layer.1."), "{err}");
}

#[test]
fn bad_sources_and_files() {
    for bad in ["random:abc", "random:", "org/name@", "not a repo", "a/b/c", "./missing.safetensors", "/no/such/dir"] {
        assert!(bad.parse::<WeightSource>().is_err(), "{bad}");
    }
    assert_eq!("random:42".parse::<WeightSource>().unwrap(), WeightSource::Random { seed: 42 });
    assert_eq!(
        "google/vit-base-patch16-224@abc".parse::<WeightSource>().unwrap(),
        WeightSource::Hub { repo: "google/vit-base-patch16-224".into(), revision: Some("abc".into()) }
    );
    assert!("resnet50".parse::<BackboneKind>().is_err());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, b"definitely not safetensors").unwrap();
    let err = load_err(BackboneKind::ResNet18, &WeightSource::File(file));
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = load_err(BackboneKind::ResNet18, &WeightSource::Folder(empty.path().to_owned()));
    assert!(err.contains("model.safetensors not found"), "{err}");
}

#[test]
fn features_refuse_wrong_input_shapes() {
    let resnet = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 1 }, &cpu()).unwrap();
    let x = Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = resnet.features(&x).unwrap_err().to_string();
    assert!(err.contains("[1, 1, 32, 32]"), "{err}");
}

#[test]
fn randomizing_a_prefix_changes_exactly_those_weights() {
    let dir = tempfile::tempdir().unwrap();
    resnet_folder(dir.path());
    let source = WeightSource::Folder(dir.path().to_owned());
    let load = |prefixes: &[&str]| {
        let randomize = Randomize { prefixes: prefixes.iter().map(|p| p.to_string()).collect(), seed: 5 };
        Backbone::load(BackboneKind::ResNet18, &source, &LoadOptions { randomize: Some(randomize), ..cpu() }).unwrap()
    };
    let original = Backbone::load(BackboneKind::ResNet18, &source, &cpu()).unwrap();
    let x = rand_tensor(&[1, 3, 64, 64], 1.0, 9).abs().unwrap();
    let features = |b: &Backbone| b.features(&x).unwrap();
    // `fc` does not feed the features, and `layer4x` is not the prefix `layer4`: unchanged.
    assert_eq!(max_rel_diff(&features(&load(&["fc", "layer4x"])), &features(&original), 1e-3), 0.0);
    // Re-drawing layer4 changes the features, but leaves layer3's output untouched.
    let r4 = load(&["layer4"]);
    assert!(max_rel_diff(&features(&r4), &features(&original), 1e-3) > 0.1);
    let at3 = |b: &Backbone| watched(b, "layer3", &x).0;
    assert_eq!(max_rel_diff(&at3(&r4), &at3(&original), 1e-3), 0.0);
    assert!(max_rel_diff(&at3(&load(&["layer4", "layer3"])), &at3(&original), 1e-3) > 0.1);
    // The cascade names its stages from the top down.
    let names: Vec<String> = original.randomization_cascade().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["layer4", "layer3", "layer2", "layer1", "stem"]);

    // A 3-block ViT: the last block with the final norm, then each block, then the embeddings;
    // randomising them all changes the features.
    let vit_dir = tempfile::tempdir().unwrap();
    write_safetensors(&vit_dir.path().join("model.safetensors"), &tiny_vit_tensors(3, 2, 5));
    std::fs::write(vit_dir.path().join("config.json"), tiny_vit_config_json(3)).unwrap();
    let vit_source = WeightSource::Folder(vit_dir.path().to_owned());
    let vit = Backbone::load(BackboneKind::Vit, &vit_source, &cpu()).unwrap();
    let cascade = vit.randomization_cascade();
    assert_eq!(cascade.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["block2", "block1", "block0", "embeddings"]);
    assert_eq!(cascade[0].1, ["encoder.layer.2", "layernorm"]);
    let all: Vec<String> = cascade.iter().flat_map(|(_, p)| p.clone()).collect();
    let randomized = Backbone::load(BackboneKind::Vit, &vit_source, &LoadOptions { randomize: Some(Randomize { prefixes: all, seed: 1 }), ..cpu() }).unwrap();
    let x = rand_tensor(&[1, 3, 32, 32], 1.0, 4);
    assert!(max_rel_diff(&randomized.features(&x).unwrap(), &vit.features(&x).unwrap(), 1e-3) > 0.1);
}

#[test]
fn train_mode_batch_norm_by_hand() {
    use tgc_backbones::resnet_train_bn::BatchNorm2d;
    let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
    // One channel, γ = 2, β = 1, running mean 0 and variance 1.
    let mut bn = BatchNorm2d::from_tensors(t(&[2.0]), t(&[1.0]), t(&[0.0]), t(&[1.0]));
    // Batch [2, 1, 1, 2] = 1, 2, 3, 4: mean 2.5, biased variance 1.25, unbiased 5/3.
    let x = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0], (2, 1, 1, 2), &Device::Cpu).unwrap();
    let y: Vec<f32> = bn.forward_train(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for (yi, xi) in y.iter().zip([1f32, 2.0, 3.0, 4.0]) {
        let expected = 2.0 * (xi - 2.5) / (1.25f32 + 1e-5).sqrt() + 1.0;
        assert!((yi - expected).abs() < 1e-5, "{y:?}");
    }
    // Running: 0.9·0 + 0.1·2.5 = 0.25; 0.9·1 + 0.1·5/3 = 1.0666…
    let rm: Vec<f32> = bn.running_mean.to_vec1().unwrap();
    let rv: Vec<f32> = bn.running_var.to_vec1().unwrap();
    assert!((rm[0] - 0.25).abs() < 1e-6 && (rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "{rm:?} {rv:?}");
    // Eval mode now normalises with the drifted statistics.
    let e: Vec<f32> = bn.forward_eval(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let expected = 2.0 * (1.0 - 0.25) / (rv[0] + 1e-5).sqrt() + 1.0;
    assert!((e[0] - expected).abs() < 1e-5, "{e:?}");
    // A second batch moves the statistics again: 0.9·0.25 + 0.1·mean.
    let x2 = Tensor::from_slice(&[10f32, 10.0, 12.0, 12.0], (2, 1, 1, 2), &Device::Cpu).unwrap();
    bn.forward_train(&x2).unwrap();
    let rm: Vec<f32> = bn.running_mean.to_vec1().unwrap();
    assert!((rm[0] - (0.9 * 0.25 + 0.1 * 11.0)).abs() < 1e-5, "{rm:?}");
    // One value per channel cannot be normalised (PyTorch raises too).
    let one = Tensor::from_slice(&[1f32], (1, 1, 1, 1), &Device::Cpu).unwrap();
    assert!(bn.forward_train(&one).is_err());
}

#[test]
fn study_bn_resnet_in_eval_mode_is_the_frozen_resnet() {
    use tgc_backbones::resnet_train_bn::StudyBnResNet18;
    let dir = tempfile::tempdir().unwrap();
    resnet_folder(dir.path());
    let source = WeightSource::Folder(dir.path().to_owned());
    let frozen = Backbone::load(BackboneKind::ResNet18, &source, &cpu()).unwrap();
    let mut study = StudyBnResNet18::load(&source).unwrap();
    let x = rand_tensor(&[2, 3, 64, 64], 1.0, 12).abs().unwrap();
    let before = study.running_stats();
    assert!(max_rel_diff(&study.features(&x, false).unwrap(), &frozen.features(&x).unwrap(), 1e-3) < 1e-5);
    assert_eq!(study.running_stats().len(), 2 * (1 + 16 + 3));
    // Training mode drifts the statistics, and eval features change with them; restoring the
    // saved statistics gives the frozen features back.
    study.features(&x, true).unwrap();
    assert!(max_rel_diff(&study.features(&x, false).unwrap(), &frozen.features(&x).unwrap(), 1e-3) > 1e-3);
    study.load_running_stats(&before).unwrap();
    assert!(max_rel_diff(&study.features(&x, false).unwrap(), &frozen.features(&x).unwrap(), 1e-3) < 1e-5);
}

#[test]
fn non_finite_weights_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = resnet18_tensors(10, 1);
    let w = tensors["layer2.0.conv1.weight"].clone();
    let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    v[7] = f32::INFINITY;
    tensors.insert("layer2.0.conv1.weight".into(), Tensor::from_vec(v, w.shape(), &Device::Cpu).unwrap());
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);
    let err = Backbone::load(BackboneKind::ResNet18, &WeightSource::Folder(dir.path().to_owned()), &cpu()).unwrap_err().to_string();
    assert!(err.contains("`layer2.0.conv1.weight`") && err.contains("first at flat index 7") && err.contains("model.safetensors"), "{err}");
}

#[test]
fn default_checkpoints_are_those_listed_in_models_backbones_json() {
    // models/backbones.json documents the defaults at the workspace root; the crate compiles
    // them in without reading outside its folder. The two must agree.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/backbones.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (key, kind) in [("resnet18", tgc_backbones::BackboneKind::ResNet18), ("vit", tgc_backbones::BackboneKind::Vit)] {
        assert_eq!(json[key]["hub_id"].as_str(), Some(kind.default_weights()), "{key}");
    }
}

#[test]
fn the_classifier_is_a_model_with_the_backbones_layers() {
    use tgc_explain::{Cam, CamKind, GradCam, Model};
    let vit_dir = tempfile::tempdir().unwrap();
    write_safetensors(&vit_dir.path().join("model.safetensors"), &tiny_vit_tensors(3, 2, 5));
    std::fs::write(vit_dir.path().join("config.json"), tiny_vit_config_json(3)).unwrap();
    let vit = Backbone::load(BackboneKind::Vit, &WeightSource::Folder(vit_dir.path().to_owned()), &cpu()).unwrap();
    let model = tgc_backbones::Classifier::new(vit, rand_tensor(&[2, 32], 0.5, 7), rand_tensor(&[2], 0.1, 8)).unwrap();
    assert_eq!(model.layers(), vec!["block0", "block1", "block2"]);
    assert_eq!(model.default_layer().as_deref(), Some("block2"));
    let x = rand_tensor(&[1, 3, 32, 32], 1.0, 9);
    // A layer named per call; an unknown one is refused with the layers there are.
    let at0 = GradCam::new("block0").attribute(&model, &x, &[1]).unwrap();
    let at2 = GradCam::default().attribute(&model, &x, &[1]).unwrap();
    assert_eq!(at0.layer_attribution.as_ref().unwrap().dims(), &[1, 4, 4]);
    assert_ne!(
        at0.layer_attribution.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        at2.layer_attribution.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let err = GradCam::new("block7").attribute(&model, &x, &[1]).unwrap_err().to_string();
    assert!(err.contains("block0, block1, block2"), "{err}");
    // Ablation-CAM's ablations of one image run as one batch (the ViT's class token and
    // residual stream repeated for each) and equal the ablations run one at a time.
    let batched = Cam { kind: CamKind::AblationCam, layer: Some("block1".into()), batch_size: 32 }.layer_map(&model, &x, &[0]).unwrap().0;
    let alone = Cam { kind: CamKind::AblationCam, layer: Some("block1".into()), batch_size: 1 }.layer_map(&model, &x, &[0]).unwrap().0;
    assert!(max_rel_diff(&batched, &alone, 1e-3) < 1e-5);
    // A replaced activation of three rows: the class token and residual stream are carried.
    let hooks = Hooks::none().replace_layer("block1", |a| Tensor::cat(&[a, &(a * 2.0)?, a], 0));
    let logits = model.forward(&x, &hooks).unwrap();
    assert_eq!(logits.dims(), &[3, 2]);
    assert!(max_rel_diff(&logits.narrow(0, 2, 1).unwrap(), &model.forward(&x, &Hooks::none()).unwrap(), 1e-3) < 1e-5);
}

#[test]
fn the_vit_exposes_its_attention_for_rollout_and_chefer() {
    use tgc_explain::{AttentionRollout, Chefer, HeadFusion, Model};
    let vit_dir = tempfile::tempdir().unwrap();
    write_safetensors(&vit_dir.path().join("model.safetensors"), &tiny_vit_tensors(3, 2, 5));
    std::fs::write(vit_dir.path().join("config.json"), tiny_vit_config_json(3)).unwrap();
    let vit = Backbone::load(BackboneKind::Vit, &WeightSource::Folder(vit_dir.path().to_owned()), &cpu()).unwrap();
    let x = rand_tensor(&[2, 3, 32, 32], 1.0, 11);
    // The composed attention of the watched pass gives the fused pass's features; every
    // probability row sums to one.
    let hooks = Hooks::none().watch_attention(false);
    let tapped = vit.forward(&x, &hooks).unwrap();
    let (seen, grids) = hooks.attention_maps();
    assert_eq!(grids, vec![(4, 4); 3]);
    assert!(max_rel_diff(&tapped, &vit.features(&x).unwrap(), 1e-3) < 1e-5);
    for probs in &seen {
        assert_eq!(probs.dims()[..2], [2, 4]);
        assert_eq!(probs.dims()[2..], [17, 17]);
        let sums: Vec<f32> = probs.sum(3).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    }
    let model = tgc_backbones::Classifier::new(vit, rand_tensor(&[2, 32], 0.5, 7), rand_tensor(&[2], 0.1, 8)).unwrap();
    for out in [
        AttentionRollout { head_fusion: HeadFusion::Max, discard_ratio: 0.1 }.attribute(&model, &x, &[0, 1]).unwrap(),
        Chefer.attribute(&model, &x, &[0, 1]).unwrap(),
    ] {
        assert_eq!(out.attribution.dims(), &[2, 1, 32, 32]);
        let map = out.layer_attribution.unwrap();
        assert_eq!(map.dims(), &[2, 4, 4]);
        let values: Vec<f32> = map.flatten_all().unwrap().to_vec1().unwrap();
        assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0) && values.iter().any(|v| *v > 0.0), "{values:?}");
        let logits = out.logits.unwrap();
        assert!(max_rel_diff(&logits, &model.forward(&x, &Hooks::none()).unwrap(), 1e-3) < 1e-5);
    }
    // Chefer's gradients are the target's: another target gives another map.
    let a = Chefer.attribute(&model, &x, &[0, 0]).unwrap().layer_attribution.unwrap();
    let b = Chefer.attribute(&model, &x, &[1, 1]).unwrap().layer_attribution.unwrap();
    assert!(max_rel_diff(&a, &b, 1e-3) > 1e-3);
    // ResNet has no attention.
    let dir = tempfile::tempdir().unwrap();
    resnet_folder(dir.path());
    let resnet = Backbone::load(BackboneKind::ResNet18, &WeightSource::Folder(dir.path().to_owned()), &cpu()).unwrap();
    let resnet = tgc_backbones::Classifier::new(resnet, rand_tensor(&[2, 512], 0.1, 3), rand_tensor(&[2], 0.1, 4)).unwrap();
    let err = Chefer.attribute(&resnet, &rand_tensor(&[1, 3, 64, 64], 1.0, 5), &[0]).unwrap_err().to_string();
    assert!(err.contains("attention"), "{err}");
}

#[test]
fn deeplift_on_resnet18_adds_up_and_on_the_vit_is_input_times_gradient() {
    use tgc_explain::{Attribute, DeepLift, InputXGradient, Model};
    let resnet = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 6 }, &cpu()).unwrap();
    let model = tgc_backbones::Classifier::new(resnet, rand_tensor(&[2, 512], 0.5, 7), rand_tensor(&[2], 0.1, 8)).unwrap();
    let x = rand_tensor(&[2, 3, 64, 64], 1.0, 9).abs().unwrap();
    let out = DeepLift::default().attribute(&model, &x, &[1, 0]).unwrap();
    let logits: Vec<Vec<f32>> = model.forward(&x, &Hooks::none()).unwrap().to_vec2().unwrap();
    let at_zero: Vec<Vec<f32>> = model.forward(&x.zeros_like().unwrap(), &Hooks::none()).unwrap().to_vec2().unwrap();
    let delta: Vec<f32> = out.convergence_delta.as_ref().unwrap().to_vec1().unwrap();
    for (b, t) in [1usize, 0].into_iter().enumerate() {
        // Completeness (the zero image's activations are constant over each max-pool window).
        let sum = out.attribution.get(b).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let gap = logits[b][t] - at_zero[b][t];
        assert!((sum - gap).abs() <= 1e-4 * gap.abs(), "image {b}: Σ {sum} vs f(x) − f(0) {gap}");
        assert!((delta[b] - (sum - gap)).abs() < 1e-5);
    }
    // The ViT marks no nonlinearity Captum's DeepLift rescales (GELU, softmax and LayerNorm get
    // their gradient): with a zero baseline, DeepLift is x ⊙ ∇f(x).
    let vit_dir = tempfile::tempdir().unwrap();
    write_safetensors(&vit_dir.path().join("model.safetensors"), &tiny_vit_tensors(2, 2, 5));
    std::fs::write(vit_dir.path().join("config.json"), tiny_vit_config_json(2)).unwrap();
    let vit = Backbone::load(BackboneKind::Vit, &WeightSource::Folder(vit_dir.path().to_owned()), &cpu()).unwrap();
    let vit = tgc_backbones::Classifier::new(vit, rand_tensor(&[2, 32], 0.5, 7), rand_tensor(&[2], 0.1, 8)).unwrap();
    let x = rand_tensor(&[1, 3, 32, 32], 1.0, 10);
    let dl = DeepLift::default().attribute(&vit, &x, &[1]).unwrap().attribution;
    let ixg = InputXGradient.attribute(&vit, &x, &[1]).unwrap().attribution;
    assert!(max_rel_diff(&dl, &ixg, 1e-6) < 1e-5);
}

/// An image's features and input gradient are bitwise the same alone as in a batch, for both
/// backbones: what lets a data set split into shards (`--shard K/N`, whole patients) give the
/// one-process run's features, maps and tables byte for byte. (The ViT's class-token rows were
/// once a one-row product at batch 1, which the `gemm` crate sums in another order.)
#[test]
fn an_image_gives_the_same_bits_alone_as_in_a_batch() {
    for kind in [BackboneKind::ResNet18, BackboneKind::Vit] {
        let backbone = Backbone::load(kind, &WeightSource::Random { seed: 3 }, &cpu()).unwrap();
        let x = rand_tensor(&[3, 3, 224, 224], 1.0, 5).abs().unwrap();
        let batch: Vec<f32> = backbone.features(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let dim = batch.len() / 3;
        for i in 0..3 {
            let alone: Vec<f32> = backbone.features(&x.narrow(0, i, 1).unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(alone, batch[i * dim..(i + 1) * dim], "{kind}: image {i}'s features alone differ from those in a batch of 3");
        }
        // The input gradient of one feature's sum, alone and in the batch.
        let gradient = |x: &Tensor| {
            let var = Var::from_tensor(x).unwrap();
            let f = backbone.features(var.as_tensor()).unwrap().narrow(1, 0, 1).unwrap().sum_all().unwrap();
            f.backward().unwrap().get(var.as_tensor()).unwrap().narrow(0, 0, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(gradient(&x.narrow(0, 0, 1).unwrap()), gradient(&x), "{kind}: image 0's input gradient alone differs from that in a batch");
    }
}

/// The features and input gradients of a batch are the same bits on every kernel path this CPU
/// runs (AVX-512, AVX2 + FMA, portable) and on one thread as on several: ResNet-18 whole, and a
/// small ViT (the ViT-B/16's own shapes are held in tgc-kernels' `paths` tests).
#[test]
fn features_are_the_same_bits_on_every_kernel_path_and_thread_count() {
    use tgc_kernels::vecmath::{available_paths, with_paths};
    let cfg: tgc_backbones::vit::VitConfig = serde_json::from_str(&tiny_vit_config_json(2)).unwrap();
    let vit = tgc_backbones::vit::Vit::new(&cfg, VarBuilder::from_tensors(tiny_vit_tensors(2, 2, 4), DType::F32, &Device::Cpu)).unwrap();
    let resnet = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 3 }, &cpu()).unwrap();
    let run = |x: &Tensor, features: &(dyn Fn(&Tensor) -> Tensor + Sync)| {
        let var = Var::from_tensor(x).unwrap();
        let f = features(var.as_tensor());
        let g = f.narrow(1, 0, 1).unwrap().sum_all().unwrap().backward().unwrap().get(var.as_tensor()).unwrap().clone();
        [f, g].map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>())
    };
    let cases: [(&str, Tensor, &(dyn Fn(&Tensor) -> Tensor + Sync)); 2] = [
        ("resnet18", rand_tensor(&[2, 3, 224, 224], 1.0, 5).abs().unwrap(), &|x| resnet.features(x).unwrap()),
        ("vit", rand_tensor(&[3, 3, 32, 32], 1.0, 6), &|x| vit.features(x).unwrap()),
    ];
    let paths = available_paths();
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for (name, x, features) in &cases {
        let (portable_simd, portable_gemm) = *paths.last().unwrap();
        let reference = with_paths(portable_simd, portable_gemm, || run(x, *features));
        for &(simd, gemm) in &paths[..paths.len() - 1] {
            assert!(with_paths(simd, gemm, || run(x, *features)) == reference, "{name}: the {} path differs from the portable one", simd.as_str());
            assert!(
                with_paths(simd, gemm, || one_thread.install(|| run(x, *features))) == reference,
                "{name}: one thread differs on the {} path",
                simd.as_str()
            );
        }
    }
}
