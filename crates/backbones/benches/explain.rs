//! The table of issue #14: per-image time of ResNet-18 (256²) and ViT-B/16 (224²) forward
//! passes (batch 8) and of every attribution method (batch 1, 2-class head), random weights,
//! with the peak resident memory of each. Run: `cargo bench -p tgc-backbones --bench explain`.
//!
//! With `TGC_BENCH_PYTHON=/path/to/python` (an environment with torch, torchvision, captum and
//! transformers, installed outside the repository) the same work runs through PyTorch/Captum
//! in the same run (`docs/bench/pytorch_reference.py`) and the table gains their figures and
//! the ratio tgc / PyTorch. `TGC_BENCH_ITERS` (default 3) sets the timed repetitions; each
//! figure is the best of them. Compare ratios within one run: these machines are noisy.

use std::collections::BTreeMap;
use std::time::Instant;

// The same allocator as the `tgc` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, WeightSource};
use tgc_explain::*;

/// Best per-image milliseconds over `iters` timed runs after one warm-up.
fn best_ms(iters: usize, per_call: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3 / per_call as f64);
    }
    Ok(best)
}

/// Peak resident memory since the last reset, in MiB, then resets the mark (Linux).
fn take_peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    // "5" resets the peak to the current resident size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    Some(kib / 1024.0)
}

fn pytorch_figures(iters: usize) -> BTreeMap<String, (f64, Option<f64>)> {
    let Ok(python) = std::env::var("TGC_BENCH_PYTHON") else {
        println!("(set TGC_BENCH_PYTHON to a python with torch, torchvision, captum and transformers for PyTorch's figures in the same run)");
        return BTreeMap::new();
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/bench/pytorch_reference.py");
    let out = std::process::Command::new(&python).arg(script).env("TGC_BENCH_ITERS", iters.to_string()).output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let mut map = BTreeMap::new();
            for line in text.lines() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                match parts.as_slice() {
                    [name, ms, mib] => {
                        if let (Ok(ms), Ok(mib)) = (ms.parse(), mib.parse()) {
                            map.insert(name.to_string(), (ms, Some(mib)));
                        }
                    }
                    _ => println!("pytorch: {line}"),
                }
            }
            map
        }
        Ok(o) => {
            println!("PyTorch reference failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
            BTreeMap::new()
        }
        Err(e) => {
            println!("cannot run {python}: {e}");
            BTreeMap::new()
        }
    }
}

fn main() -> anyhow::Result<()> {
    let iters: usize = std::env::var("TGC_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    println!("{}", tgc_backbones::vecmath::cpu_description());
    let mut ours: Vec<(String, f64, Option<f64>)> = Vec::new();
    take_peak_rss_mib();
    for (kind, size) in [(BackboneKind::ResNet18, 256), (BackboneKind::Vit, 224)] {
        let backbone = Backbone::load(kind, &WeightSource::Random { seed: 0 }, &LoadOptions::default())?;
        let d = backbone.feature_dim();
        let name = kind.as_str();
        let x8 = Tensor::rand(0f32, 1f32, (8, 3, size, size), &Device::Cpu)?;
        let ms = best_ms(iters, 8, || Ok(backbone.features(&x8).map(drop)?))?;
        ours.push((format!("{name}.forward"), ms, take_peak_rss_mib()));
        let head_w = Tensor::randn(0f32, 0.05, (2, d), &Device::Cpu)?;
        let model = Classifier::new(backbone, head_w, Tensor::zeros(2, DType::F32, &Device::Cpu)?)?;
        let x = Tensor::rand(0f32, 1f32, (1, 3, size, size), &Device::Cpu)?;
        let ig = IntegratedGradients::new(IntegratedGradientsConfig { internal_batch_size: Some(25), ..Default::default() });
        let methods: Vec<Method> = match kind {
            BackboneKind::ResNet18 => vec![
                Method::GradCam(GradCam),
                Method::GuidedBackprop(GuidedBackprop),
                Method::GuidedGradCam(GuidedGradCam),
                Method::Saliency(Saliency),
                Method::GradientShap(GradientShap::default()),
                Method::IntegratedGradients(ig),
            ],
            BackboneKind::Vit => vec![Method::GuidedBackprop(GuidedBackprop), Method::GradientShap(GradientShap::default())],
        };
        for m in methods {
            let runs = if matches!(m, Method::IntegratedGradients(_)) { iters.div_ceil(2) } else { iters };
            let ms = best_ms(runs, 1, || Ok(m.attribute(&model, &x, &[1]).map(drop)?))?;
            let label = match m.name() {
                "gradcam" => "grad-cam",
                "guided-gradcam" => "guided-grad-cam",
                other => other,
            };
            ours.push((format!("{name}.{label}"), ms, take_peak_rss_mib()));
        }
    }
    let torch = pytorch_figures(iters);
    println!("\n{:<32} {:>12} {:>12} {:>10} {:>14} {:>14}", "work (ms per image)", "PyTorch", "tgc", "tgc/torch", "torch peak MiB", "tgc peak MiB");
    for (name, ms, mib) in &ours {
        let fmt = |v: Option<f64>, digits: usize| v.map_or("—".to_owned(), |v| format!("{v:.digits$}"));
        let (t_ms, t_mib) = torch.get(name).map_or((None, None), |(a, b)| (Some(*a), *b));
        println!(
            "{:<32} {:>12} {:>12.1} {:>10} {:>14} {:>14}",
            name,
            fmt(t_ms, 1),
            ms,
            fmt(t_ms.map(|t| ms / t), 2),
            fmt(t_mib, 0),
            fmt(*mib, 0)
        );
    }
    Ok(())
}
