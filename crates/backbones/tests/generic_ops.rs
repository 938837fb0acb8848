//! The device-generic path (what a GPU runs) equals the CPU kernels, on the CPU: features and
//! every gradient, layer and attention method's map, ResNet-18 and a tiny ViT, 1e-4 relative.
//! The forward-only methods call nothing but the forward pass, which the features check.

mod common;

use candle_core::Tensor;
use common::*;
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, Ops, WeightSource};
use tgc_explain::{Baselines, MethodSettings, Model, Needs, METHODS};

/// The same checkpoint under both implementations, each with the same random head.
fn both(kind: BackboneKind, dir: &std::path::Path) -> (Classifier, Classifier) {
    let source = WeightSource::Folder(dir.to_owned());
    let load = |ops| {
        let backbone = Backbone::load(kind, &source, &LoadOptions { ops, ..LoadOptions::default() }).unwrap();
        let d = backbone.feature_dim();
        Classifier::new(backbone, rand_tensor(&[2, d], 0.3, 77), rand_tensor(&[2], 0.1, 78)).unwrap()
    };
    (load(Ops::Auto), load(Ops::Generic))
}

/// Max |a − b| over max |b|, or 0 for two zero maps.
fn relative(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

fn check_methods(kernels: &Classifier, generic: &Classifier, x: &Tensor, layer: &str, attention: bool) {
    let fk = kernels.backbone.features(x).unwrap();
    let fg = generic.backbone.features(x).unwrap();
    assert!(relative(&fg, &fk) < 1e-5, "features differ by {}", relative(&fg, &fk));
    let settings = MethodSettings { samples: Some(2), steps: Some(4), seed: 5, ..MethodSettings::default() };
    let mut checked = Vec::new();
    for info in METHODS {
        match info.needs {
            Needs::ForwardOnly => continue,
            Needs::Attention if !attention => continue,
            Needs::Nonlinearities if attention => continue, // DeepLift needs ReLU models: the ViT's GELU is refused by both
            // One forward pass per channel of the layer (512 for ResNet-18's layer4, 40 s of
            // generic convolutions on 2 cores): forward passes, which the features check.
            _ if info.name == "scorecam" && !attention => continue,
            _ => {}
        }
        let mut settings = settings.clone();
        if info.name == "deeplift-shap" {
            settings.baselines = Some(Baselines::Uniform { count: 2, low: 0.0, high: 1.0, seed: 3 });
        }
        let method = info.build(&settings).unwrap().at_layer(layer);
        let targets = vec![1usize; x.dim(0).unwrap()];
        let a = method.attribute(kernels as &dyn Model, x, &targets).unwrap();
        let b = method.attribute(generic as &dyn Model, x, &targets).unwrap();
        let r = relative(&b.attribution, &a.attribution);
        assert!(r < 1e-4, "{}: the generic path's map differs by {r}", info.name);
        if let (Some(la), Some(lb)) = (&a.layer_attribution, &b.layer_attribution) {
            let r = relative(lb, la);
            assert!(r < 1e-4, "{}: the layer attribution differs by {r}", info.name);
        }
        checked.push(info.name);
    }
    assert!(checked.contains(&"guided-backprop") && checked.contains(&"gradcam") && checked.contains(&"integrated-gradients"), "{checked:?}");
}

#[test]
fn resnet18_generic_ops_equal_the_cpu_kernels() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), &resnet18_tensors(10, 4));
    let (kernels, generic) = both(BackboneKind::ResNet18, dir.path());
    let x = rand_tensor(&[1, 3, 64, 64], 1.0, 9).abs().unwrap();
    check_methods(&kernels, &generic, &x, "layer4", false);
    // Another stage, where the ReLUs after the layer shape its gradient.
    let cam = METHODS.iter().find(|m| m.name == "gradcam").unwrap().build(&MethodSettings::default()).unwrap().at_layer("layer2");
    let (a, b) = (cam.attribute(&kernels as &dyn Model, &x, &[0]).unwrap(), cam.attribute(&generic as &dyn Model, &x, &[0]).unwrap());
    assert!(relative(&b.attribution, &a.attribution) < 1e-4);
}

#[test]
fn vit_generic_ops_equal_the_cpu_kernels() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), &tiny_vit_tensors(2, 2, 6));
    std::fs::write(dir.path().join("config.json"), tiny_vit_config_json(2)).unwrap();
    let (kernels, generic) = both(BackboneKind::Vit, dir.path());
    let x = rand_tensor(&[2, 3, 32, 32], 1.0, 10);
    check_methods(&kernels, &generic, &x, "block1", true);
}

#[test]
fn the_study_bn_resnet_generic_ops_equal_the_cpu_kernels_in_both_modes() {
    use candle_core::{DType, Device};
    use tgc_backbones::resnet_train_bn::StudyBnResNet18;
    let tensors = resnet18_tensors(10, 8);
    let vb = || candle_nn::VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let mut kernels = StudyBnResNet18::with_ops(vb(), Ops::Auto).unwrap();
    let mut generic = StudyBnResNet18::with_ops(vb(), Ops::Generic).unwrap();
    let x = rand_tensor(&[2, 3, 48, 48], 1.0, 12).abs().unwrap();
    for train in [true, false, true] {
        let (a, b) = (kernels.features(&x, train).unwrap(), generic.features(&x, train).unwrap());
        assert!(relative(&b, &a) < 1e-5, "train {train}: {}", relative(&b, &a));
    }
    let (a, b) = (kernels.running_stats(), generic.running_stats());
    for (name, t) in &a {
        assert!(relative(&b[name], t) < 1e-5, "{name}");
    }
}
