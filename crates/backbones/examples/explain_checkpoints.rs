//! The same checkpoints two ways: candle-transformers' ResNet-18 and ViT (random weights) are
//! saved in their Hugging Face layout and loaded by tgc-backbones, whose models write their
//! pass once with tgc-explain's hooks, so the gradient methods run on them: Grad-CAM,
//! Integrated Gradients, and for the ViT Chefer et al. The logits of both agree.
//!
//!     cargo run --release -p tgc-backbones --example explain_checkpoints

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::{resnet, vit};
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, WeightSource};
use tgc_explain::{Chefer, GradCam, Hooks, IntegratedGradients, IntegratedGradientsConfig, Method, Model};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()?)
}

/// Loads `dir`'s checkpoint with tgc-backbones, the checkpoint's own head (`weight`, `bias`
/// keys) on top.
fn classifier(kind: BackboneKind, dir: &std::path::Path, head: &str) -> anyhow::Result<Classifier> {
    let backbone = Backbone::load(kind, &WeightSource::Folder(dir.to_owned()), &LoadOptions::default())?;
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    Ok(Classifier::new(backbone, tensors[&format!("{head}.weight")].clone(), tensors[&format!("{head}.bias")].clone())?)
}

fn explain(name: &str, model: &Classifier, methods: &[Method], image: &Tensor) -> anyhow::Result<()> {
    for method in methods {
        let out = method.attribute(model, image, &[1])?;
        let largest = |t: &Tensor| -> anyhow::Result<f32> { Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar()?) };
        let layer = match &out.layer_attribution {
            Some(map) => format!(", layer map {:?} (before ReLU) largest |value| {:.3e}", map.dims(), largest(map)?),
            None => String::new(),
        };
        println!("{name:9} {:22} map {:?} largest |value| {:.3e}{layer}", method.name(), out.attribution.dims(), largest(&out.attribution)?);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let dir = tempfile::tempdir()?;
    let image = Tensor::rand(0f32, 1.0, (1, 3, 64, 64), &device)?;
    let ig = Method::new(IntegratedGradients::new(IntegratedGradientsConfig { steps: 16, ..Default::default() }));

    // ResNet-18 (torchvision layout): its `fc` of two classes is the head.
    let varmap = VarMap::new();
    let theirs = resnet::resnet18(2, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let resnet_dir = dir.path().join("resnet18");
    std::fs::create_dir_all(&resnet_dir)?;
    varmap.save(resnet_dir.join("model.safetensors"))?;
    let ours = classifier(BackboneKind::ResNet18, &resnet_dir, "fc")?;
    println!("ResNet-18 logits differ by {:.2e}", max_abs_diff(&ours.forward(&image, &Hooks::none())?, &theirs.forward(&image)?)?);
    explain("ResNet-18", &ours, &[Method::new(GradCam::new("layer4")), Method::new(GradCam::new("layer3")), ig.clone()], &image)?;

    // ViT (Hugging Face layout: `vit.` prefix, `classifier` head), four blocks at 64 × 64.
    let config = vit::Config { image_size: 64, num_hidden_layers: 4, ..vit::Config::vit_base_patch16_224() };
    let varmap = VarMap::new();
    let theirs = vit::Model::new(&config, 2, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let vit_dir = dir.path().join("vit");
    std::fs::create_dir_all(&vit_dir)?;
    varmap.save(vit_dir.join("model.safetensors"))?;
    std::fs::write(
        vit_dir.join("config.json"),
        r#"{"hidden_size": 768, "num_hidden_layers": 4, "num_attention_heads": 12, "intermediate_size": 3072,
            "image_size": 64, "patch_size": 16, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "num_channels": 3, "qkv_bias": true}"#,
    )?;
    let ours = classifier(BackboneKind::Vit, &vit_dir, "classifier")?;
    println!("ViT logits differ by {:.2e}", max_abs_diff(&ours.forward(&image, &Hooks::none())?, &theirs.forward(&image)?)?);
    explain("ViT", &ours, &[Method::new(GradCam::new("block3")), Method::new(Chefer), ig], &image)?;
    Ok(())
}
