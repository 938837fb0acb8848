#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use candle_core::{DType, Device, Tensor};
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, WeightSource};
use tgc_explain::*;
fn minflt() -> i64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(7).unwrap().parse().unwrap()
}
fn main() -> anyhow::Result<()> {
    tgc_backbones::vecmath::park_candle_pool_workers();
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let kind = if std::env::args().nth(1).as_deref() == Some("resnet") { BackboneKind::ResNet18 } else { BackboneKind::Vit };
    let size = if kind == BackboneKind::Vit { 224 } else { 256 };
    let backbone = Backbone::load(kind, &WeightSource::Random { seed: 0 }, &LoadOptions::default())?;
    let d = backbone.feature_dim();
    let x8 = Tensor::rand(0f32, 1f32, (8, 3, size, size), &Device::Cpu)?;
    let model = Classifier::new(backbone.clone(), Tensor::randn(0f32, 0.05, (2, d), &Device::Cpu)?, Tensor::zeros(2, DType::F32, &Device::Cpu)?)?;
    let x = Tensor::rand(0f32, 1f32, (1, 3, size, size), &Device::Cpu)?;
    let gb = Method::GuidedBackprop(GuidedBackprop);
    for round in 0..4 {
        let f0 = minflt();
        let t = std::time::Instant::now();
        backbone.features(&x8)?;
        let f1 = minflt();
        let t1 = t.elapsed();
        let t = std::time::Instant::now();
        gb.attribute(&model, &x, &[1])?;
        let f2 = minflt();
        println!(
            "round {round}: forward8 {:.1} ms {} faults ({:.0} MiB at 4K); GB {:.1} ms {} faults",
            t1.as_secs_f64() * 1e3,
            f1 - f0,
            (f1 - f0) as f64 * 4.0 / 1024.0,
            t.elapsed().as_secs_f64() * 1e3,
            f2 - f1
        );
    }
    Ok(())
}
