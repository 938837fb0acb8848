//! Throughput of the backbones, random weights: forward (batch 8) and forward + backward to the
//! input, ResNet-18 at 256² and ViT-B/16 at 224². Run: `cargo bench -p tgc-backbones`.
//! Set `TGC_BENCH_ITERS` to change the number of timed batches (default 3).
//! Compare ratios within one run: these machines are noisy.

use std::time::Instant;

// The same allocator as the `tgc` binary: freed activation buffers are reused instead of
// being returned to the kernel and faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor, Var};
use tgc_backbones::{Backbone, BackboneKind, LoadOptions, WeightSource};

fn time_per_image(iters: usize, batch: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() / (iters * batch) as f64
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    // As the `tgc` binary: candle's elementwise workers sleep between ops.
    tgc_kernels::vecmath::park_candle_pool_workers();
    tgc_kernels::denormals::flush_denormals();
    // As the `tgc` binary: keep freed memory committed (mimalloc's purge delay, option 15, -1).
    // SAFETY: setting an option is allowed at any time.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let iters: usize = std::env::var("TGC_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let batch = 8;
    println!("{}", tgc_kernels::vecmath::cpu_description());
    println!("{:<10} {:>6} {:>14} {:>12} {:>20} {:>12}", "backbone", "input", "fwd ms/img", "fwd img/s", "fwd+bwd ms/img", "fwd+bwd img/s");
    for (kind, size) in [(BackboneKind::ResNet18, 256), (BackboneKind::Vit, 224)] {
        let model = Backbone::load(kind, &WeightSource::Random { seed: 0 }, &LoadOptions::default())?;
        let x = Tensor::rand(0f32, 1f32, (batch, 3, size, size), &Device::Cpu)?;
        let fwd = time_per_image(iters, batch, || {
            model.features(&x).expect("forward");
        });
        let bwd = time_per_image(iters, batch, || {
            let v = Var::from_tensor(&x).expect("var");
            let y = model.features(v.as_tensor()).and_then(|f| Ok(f.sum_all()?)).expect("forward");
            y.backward().expect("backward");
        });
        println!("{:<10} {:>6} {:>14.1} {:>12.2} {:>20.1} {:>12.2}", kind.as_str(), format!("{size}²"), fwd * 1e3, 1.0 / fwd, bwd * 1e3, 1.0 / bwd);
    }
    // The convolution kernel alone, candle's direct/tiled implementation against ours
    // (im2col + matrix product), on ResNet-18's stem and a layer1 convolution, batch 8.
    println!("\n{:<28} {:>14} {:>14} {:>16} {:>16}", "convolution", "candle fwd ms", "im2col fwd ms", "candle f+b ms", "im2col f+b ms");
    for (name, cin, cout, k, stride, pad, size) in [("stem 7x7/2, 3->64, 256²", 3, 64, 7, 2, 3, 256), ("layer1 3x3/1, 64->64, 64²", 64, 64, 3, 1, 1, 64)] {
        let x = Tensor::rand(0f32, 1f32, (batch, cin, size, size), &Device::Cpu)?;
        let w = Tensor::rand(-0.1f32, 0.1f32, (cout, cin, k, k), &Device::Cpu)?;
        let candle = |x: &Tensor| x.conv2d(&w, pad, stride, 1, 1).expect("conv");
        let ours = |x: &Tensor| tgc_kernels::ops::conv2d(x, &w, stride, pad).expect("conv");
        let fwd = |f: &dyn Fn(&Tensor) -> Tensor| {
            time_per_image(iters, 1, || {
                f(&x);
            })
        };
        let both = |f: &dyn Fn(&Tensor) -> Tensor| {
            time_per_image(iters, 1, || {
                let v = Var::from_tensor(&x).expect("var");
                f(v.as_tensor()).sum_all().expect("sum").backward().expect("backward");
            })
        };
        println!("{:<28} {:>14.1} {:>14.1} {:>16.1} {:>16.1}", name, fwd(&candle) * 1e3, fwd(&ours) * 1e3, both(&candle) * 1e3, both(&ours) * 1e3);
    }
    if let Some(mib) = peak_rss_mib() {
        println!("peak resident memory: {mib:.0} MiB");
    }
    Ok(())
}
