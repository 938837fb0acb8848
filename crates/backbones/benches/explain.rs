//! Per-image time of each attribution method on the real backbones with random weights:
//! ResNet-18 at 256², ViT-B/16 at 224². Run: `cargo bench -p tgc-backbones --bench explain`.
//! `TGC_BENCH_ITERS` (default 2) sets the timed repetitions. Compare ratios within one run.

use std::time::Instant;

// The same allocator as the `tgc` binary: freed activation buffers are reused instead of
// being returned to the kernel and faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, WeightSource};
use tgc_explain::*;

fn main() -> anyhow::Result<()> {
    let iters: usize = std::env::var("TGC_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    println!("{:<10} {:<22} {:>12}", "backbone", "method", "ms/image");
    for (kind, size) in [(BackboneKind::ResNet18, 256), (BackboneKind::Vit, 224)] {
        let backbone = Backbone::load(kind, &WeightSource::Random { seed: 0 }, &LoadOptions::default())?;
        let d = backbone.feature_dim();
        let head_w = Tensor::randn(0f32, 0.05, (2, d), &Device::Cpu)?;
        let model = Classifier::new(backbone, head_w, Tensor::zeros(2, DType::F32, &Device::Cpu)?)?;
        let x = Tensor::rand(0f32, 1f32, (1, 3, size, size), &Device::Cpu)?;
        let methods: Vec<Method> = match kind {
            BackboneKind::ResNet18 => vec![
                Method::GradCam(GradCam),
                Method::GuidedBackprop(GuidedBackprop),
                Method::GuidedGradCam(GuidedGradCam),
                Method::Saliency(Saliency),
                Method::GradientShap(GradientShap::default()),
                Method::IntegratedGradients(IntegratedGradients::default()),
            ],
            BackboneKind::Vit => vec![Method::GuidedBackprop(GuidedBackprop), Method::GradientShap(GradientShap::default())],
        };
        for m in methods {
            m.attribute(&model, &x, &[1])?; // warm-up
            let start = Instant::now();
            for _ in 0..iters {
                m.attribute(&model, &x, &[1])?;
            }
            println!("{:<10} {:<22} {:>12.0}", kind.as_str(), m.name(), start.elapsed().as_secs_f64() * 1e3 / iters as f64);
        }
    }
    Ok(())
}
