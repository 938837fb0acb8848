//! Per-image time of ResNet-18 (256²) and ViT-B/16 (224²) forward passes (batch 8) and of
//! every attribution method (batch 1, 2-class head), random weights, with the peak resident
//! memory of each. Run: `cargo bench -p tgc-backbones --bench explain`.
//!
//! With `TGC_BENCH_PYTHON=/path/to/python` (an environment with torch, torchvision, captum and
//! transformers, installed outside the repository) the same work runs through PyTorch/Captum in
//! the same run: `docs/bench/pytorch_reference.py` serves requests, and every repetition times
//! ours and then theirs, so both see the same machine (the noise of these machines drifts
//! within minutes). The table shows the best of `TGC_BENCH_ITERS` (default 3) repetitions of
//! each, the ratio of the two bests, and the median of the per-repetition ratios (each pair
//! timed back to back, so a slow spell of the machine slows both sides of a pair).
//!
//! Each timed call of either side follows an untimed call of the same work on that side
//! (for work under a second): the first call after the other side's run pays for that run
//! (its worker threads still spinning, caches filled with its data) — a 25 ms explanation
//! timed right after PyTorch's ran 35 ms, 26 ms alone. A user runs one or the other.
//!
//! `TGC_BENCH_DEVICE` chooses where both sides run: `cpu` (default: our CPU kernels),
//! `cpu-generic` (our device-generic ops on the CPU, PyTorch on the CPU), `cuda` / `cuda:N`
//! (our device-generic ops and PyTorch on that GPU; a build with `--features cuda`, see
//! scripts/build-cuda.sh `--bench`). Each timed call ends with the device synchronised.

use std::time::Instant;

// The same allocator as the `tgc` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, Ops, WeightSource};
use tgc_explain::*;

/// Peak resident memory since the last reset, in MiB, then resets the mark (Linux).
fn take_peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    // "5" resets the peak to the current resident size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    Some(kib / 1024.0)
}

/// The PyTorch/Captum server of `docs/bench/pytorch_reference.py`, when `TGC_BENCH_PYTHON`
/// names a Python that can run it.
struct Torch {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Torch {
    fn start() -> Option<Self> {
        let Ok(python) = std::env::var("TGC_BENCH_PYTHON") else {
            println!("(set TGC_BENCH_PYTHON to a python with torch, torchvision, captum and transformers for PyTorch's figures in the same run)");
            return None;
        };
        // `TGC_BENCH_SCRIPT` names the script where the bench runs outside this checkout (a
        // binary copied to another machine; `docs/bench/other_cpu.sh`).
        let script =
            std::env::var("TGC_BENCH_SCRIPT").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/bench/pytorch_reference.py").to_owned());
        let mut command = std::process::Command::new(&python);
        command.arg(script).arg("--serve").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        // `TGC_SIMD=avx2` caps our kernels at AVX2 + FMA; PyTorch's ATen, oneDNN and MKL get
        // the same cap, so an AVX-512 machine measures both sides' AVX2 code paths.
        if tgc_kernels::vecmath::SimdLevel::cap() == Some(tgc_kernels::vecmath::SimdLevel::Avx2Fma) {
            command.env("ATEN_CPU_CAPABILITY", "avx2").env("ONEDNN_MAX_CPU_ISA", "AVX2").env("MKL_ENABLE_INSTRUCTIONS", "AVX2");
        }
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                println!("cannot run {python}: {e}");
                return None;
            }
        };
        let (input, output) = (child.stdin.take()?, std::io::BufReader::new(child.stdout.take()?));
        let mut torch = Self { child, input, output };
        match torch.read_line() {
            Some(line) if line.starts_with("ready") => {
                println!("PyTorch: {}", line.trim_start_matches("ready ").trim());
                Some(torch)
            }
            other => {
                println!("the PyTorch reference did not start ({other:?})");
                None
            }
        }
    }

    fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.output, &mut line).ok()?;
        (!line.is_empty()).then(|| line.trim().to_owned())
    }

    fn ask(&mut self, request: &str) -> Option<f64> {
        use std::io::Write;
        writeln!(self.input, "{request}").ok()?;
        self.input.flush().ok()?;
        self.read_line()?.parse().ok()
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = writeln!(self.input, "quit");
        let _ = self.child.wait();
    }
}

/// One figure: ours and theirs (if any) alternately, best of `iters` each, and both peaks.
struct Figure {
    name: String,
    ours_ms: f64,
    ours_mib: Option<f64>,
    torch_ms: Option<f64>,
    torch_mib: Option<f64>,
    /// The median over repetitions of ours / theirs, each pair measured back to back: robust
    /// to the machine's noise drifting between repetitions, which the two bests are not.
    paired_ratio: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

fn measure(name: String, iters: usize, per_call: usize, torch: &mut Option<Torch>, mut ours: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Figure> {
    // Warm-up; work under a second is then timed on its second call in a row (module docs).
    let start = Instant::now();
    ours()?;
    let rerun = start.elapsed().as_secs_f64() < 1.0;
    let mut theirs = torch.as_mut().and_then(|t| t.ask(&name).map(|_| t));
    if let Some(t) = theirs.as_mut() {
        t.ask("peak");
    }
    take_peak_rss_mib();
    let (mut ours_ms, mut torch_ms, mut ratios) = (f64::MAX, None::<f64>, Vec::new());
    for _ in 0..iters {
        if rerun {
            ours()?;
        }
        let start = Instant::now();
        ours()?;
        let ms = start.elapsed().as_secs_f64() * 1e3 / per_call as f64;
        ours_ms = ours_ms.min(ms);
        if rerun {
            theirs.as_mut().and_then(|t| t.ask(&name));
        }
        if let Some(theirs_ms) = theirs.as_mut().and_then(|t| t.ask(&name)) {
            torch_ms = Some(torch_ms.map_or(theirs_ms, |m| m.min(theirs_ms)));
            ratios.push(ms / theirs_ms);
        }
    }
    let torch_mib = theirs.as_mut().and_then(|t| t.ask("peak"));
    Ok(Figure { name, ours_ms, ours_mib: take_peak_rss_mib(), torch_ms, torch_mib, paired_ratio: median(ratios) })
}

/// `TGC_BENCH_DEVICE`: the device and which ops run there.
fn bench_device() -> anyhow::Result<(Device, Ops)> {
    let requested = std::env::var("TGC_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    Ok(match requested.as_str() {
        "cpu" => (Device::Cpu, Ops::Auto),
        "cpu-generic" => (Device::Cpu, Ops::Generic),
        other => {
            let ordinal = match other.strip_prefix("cuda") {
                Some("") => 0,
                Some(n) => n.trim_start_matches(':').parse()?,
                None => anyhow::bail!("TGC_BENCH_DEVICE `{other}`: cpu, cpu-generic, cuda or cuda:N"),
            };
            (Device::new_cuda(ordinal)?, Ops::Auto)
        }
    })
}

fn main() -> anyhow::Result<()> {
    // As the `tgc` binary: candle's elementwise workers sleep between ops.
    tgc_kernels::vecmath::park_candle_pool_workers();
    tgc_kernels::denormals::flush_denormals();
    // As the `tgc` binary: keep freed memory committed (mimalloc's purge delay, option 15, -1).
    // SAFETY: setting an option is allowed at any time.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let iters: usize = std::env::var("TGC_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    // `TGC_BENCH_ONLY=vit.chefer` runs the methods whose figure name contains it, and
    // `TGC_BENCH_ONLY=resnet18.saliency,vit.guided` those whose name contains any of the
    // comma-separated parts (forward passes always run).
    let only = std::env::var("TGC_BENCH_ONLY").ok();
    println!("{}", tgc_kernels::vecmath::cpu_description());
    let (device, ops) = bench_device()?;
    let mut torch = Torch::start();
    let mut figures: Vec<Figure> = Vec::new();
    for (kind, size) in [(BackboneKind::ResNet18, 256), (BackboneKind::Vit, 224)] {
        let options = LoadOptions { device: device.clone(), ops, ..LoadOptions::default() };
        let backbone = Backbone::load(kind, &WeightSource::Random { seed: 0 }, &options)?;
        if kind == BackboneKind::ResNet18 {
            println!("tgc: {}", backbone.ops_description());
        }
        let d = backbone.feature_dim();
        let name = kind.as_str();
        let x8 = Tensor::rand(0f32, 1f32, (8, 3, size, size), &device)?;
        figures.push(measure(format!("{name}.forward"), iters, 8, &mut torch, || {
            backbone.features(&x8)?;
            Ok(device.synchronize()?)
        })?);
        let head_w = Tensor::randn(0f32, 0.05, (2, d), &device)?;
        let model = Classifier::new(backbone, head_w, Tensor::zeros(2, DType::F32, &device)?)?;
        let x = Tensor::rand(0f32, 1f32, (1, 3, size, size), &device)?;
        let ig = IntegratedGradients::new(IntegratedGradientsConfig { internal_batch_size: Some(25), ..Default::default() });
        let methods: Vec<Method> = match kind {
            BackboneKind::ResNet18 => vec![
                Method::new(GradCam::default()),
                Method::new(GuidedBackprop),
                Method::new(GuidedGradCam::default()),
                Method::new(Saliency),
                Method::new(DeepLift::default()),
                Method::new(Deconvolution),
                Method::new(GradientShap::default()),
                Method::new(ig),
                Method::new(Occlusion::default()),
                Method::new(FeatureAblation::grid(16)),
                Method::new(NoiseTunnel { inner: Method::new(Saliency), kind: NoiseTunnelType::SmoothGrad, samples: 10, stdevs: 0.1, seed: 0 }),
            ]
            .into_iter()
            .chain(CamKind::ALL.map(|k| Method::new(Cam::new(k))))
            .collect(),
            BackboneKind::Vit => {
                vec![Method::new(GuidedBackprop), Method::new(GradientShap::default()), Method::new(AttentionRollout::default()), Method::new(Chefer)]
            }
        };
        for m in methods {
            let name_of = m.name();
            let label = match name_of.as_str() {
                "gradcam" => "grad-cam",
                "guided-gradcam" => "guided-grad-cam",
                other => other,
            };
            let figure = format!("{name}.{label}");
            if only.as_deref().is_some_and(|o| !o.split(',').any(|part| figure.contains(part))) {
                continue;
            }
            // The methods of hundreds of forward passes run twice after the warm-up: one call
            // of tens of seconds is a single sample of a machine whose speed drifts.
            let slow = matches!(name_of.as_str(), "occlusion" | "feature-ablation" | "scorecam");
            let runs = if slow {
                iters.min(2)
            } else if name_of == "integrated-gradients" {
                iters.div_ceil(2)
            } else {
                iters
            };
            figures.push(measure(figure, runs, 1, &mut torch, || {
                m.attribute(&model, &x, &[1])?;
                Ok(device.synchronize()?)
            })?);
        }
    }
    println!(
        "\n{:<32} {:>12} {:>12} {:>10} {:>13} {:>14} {:>14}",
        "work (ms per image)", "PyTorch", "tgc", "tgc/torch", "paired median", "torch peak MiB", "tgc peak MiB"
    );
    let fmt = |v: Option<f64>, digits: usize| v.map_or("—".to_owned(), |v| format!("{v:.digits$}"));
    for f in &figures {
        println!(
            "{:<32} {:>12} {:>12.1} {:>10} {:>13} {:>14} {:>14}",
            f.name,
            fmt(f.torch_ms, 1),
            f.ours_ms,
            fmt(f.torch_ms.map(|t| f.ours_ms / t), 2),
            fmt(f.paired_ratio, 2),
            fmt(f.torch_mib, 0),
            fmt(f.ours_mib, 0)
        );
    }
    Ok(())
}
