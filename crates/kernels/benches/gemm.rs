//! GFLOP/s of the matrix products on the shapes the models run, per micro-kernel this CPU has
//! (`matmul_slices`), beside candle's `Tensor::matmul` (the `gemm` crate's own dispatch) and,
//! with `TGC_BENCH_PYTHON=/path/to/python` (torch installed outside the repository), PyTorch's
//! `a @ b` on the same shapes and threads (`docs/bench/gemm_reference.py`), with this CPU's
//! fp32 peak estimate so that the fraction of peak is visible. Best of `TGC_BENCH_ITERS`
//! (default 5) calls after one untimed call. Run: `cargo bench -p tgc-kernels --bench gemm`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use tgc_kernels::ops::matmul_slices;
use tgc_kernels::vecmath::{cpu_description, GemmKernel};

/// A product `[m×k]·[k×n]`, operands read transposed where marked, named for what runs it.
struct Shape {
    what: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    b_t: bool,
}

const fn shape(what: &'static str, m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> Shape {
    Shape { what, m, k, n, a_t, b_t }
}

/// ViT-B/16 at 224² (197 tokens an image) at batch 1 (explanations) and 8 (extraction): the
/// forward products `x · Wᵀ` (weights `[out, in]`) and the input gradients `g · W` of the
/// backward; ResNet-18 at 256², batch 1: each stage's 3×3 convolution as im2col's product
/// (output pixels × 9·Cin by 9·Cin × Cout); and a square reference.
const SHAPES: [Shape; 14] = [
    shape("ViT qkv x·Wᵀ, batch 1", 197, 768, 2304, false, true),
    shape("ViT MLP up x·Wᵀ, batch 1", 197, 768, 3072, false, true),
    shape("ViT MLP down x·Wᵀ, batch 1", 197, 3072, 768, false, true),
    shape("ViT qkv grad g·W, batch 1", 197, 2304, 768, false, false),
    shape("ViT MLP up grad g·W, batch 1", 197, 3072, 768, false, false),
    shape("ViT MLP down grad g·W, batch 1", 197, 768, 3072, false, false),
    shape("ViT qkv x·Wᵀ, batch 8", 1576, 768, 2304, false, true),
    shape("ViT MLP up x·Wᵀ, batch 8", 1576, 768, 3072, false, true),
    shape("ViT MLP down x·Wᵀ, batch 8", 1576, 3072, 768, false, true),
    shape("ResNet layer1 conv (im2col)", 4096, 576, 64, false, false),
    shape("ResNet layer2 conv (im2col)", 1024, 1152, 128, false, false),
    shape("ResNet layer3 conv (im2col)", 256, 2304, 256, false, false),
    shape("ResNet layer4 conv (im2col)", 64, 4608, 512, false, false),
    shape("square 2048", 2048, 2048, 2048, false, false),
];

fn best_seconds(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1u32 << 23) as f32 - 1.0).collect()
}

/// This CPU's fp32 peak in GFLOP/s, `threads × FMA units × lanes × 2 × GHz`, with what it
/// assumed: two FMA units a core (Intel's server cores with AVX-512, AMD's Zen cores at 256
/// bits; some Intel parts have one 512-bit unit), 16 lanes where the AVX-512 kernels are the
/// CPU's choice and 8 with AVX2 (Zen 4 runs 512-bit operations as two 256-bit halves), the
/// clock from cpufreq's maximum or /proc/cpuinfo.
fn peak(threads: usize) -> Option<(f64, String)> {
    let khz = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").ok().and_then(|t| t.trim().parse::<f64>().ok());
    let ghz = match khz {
        Some(k) => k / 1e6,
        None => {
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()?
                .lines()
                .filter(|l| l.starts_with("cpu MHz"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))?
                / 1e3
        }
    };
    let lanes = match tgc_kernels::vecmath::gemm_kernel() {
        GemmKernel::Avx512 => 16.0,
        GemmKernel::Avx2Fma => 8.0,
        GemmKernel::Portable => 1.0,
    };
    let gflops = threads as f64 * 2.0 * lanes * 2.0 * ghz;
    Some((gflops, format!("{threads} threads × 2 FMA units × {lanes} lanes × 2 × {ghz:.2} GHz")))
}

fn torch_figures(threads: usize, iters: usize) -> Option<Vec<f64>> {
    let python = std::env::var("TGC_BENCH_PYTHON").ok()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/bench/gemm_reference.py");
    let specs: Vec<String> = SHAPES.iter().map(|s| format!("{},{},{},{},{}", s.m, s.k, s.n, s.a_t as u8, s.b_t as u8)).collect();
    let out = std::process::Command::new(python).arg(script).arg(threads.to_string()).arg(iters.to_string()).args(&specs).output().ok()?;
    if !out.status.success() {
        eprintln!("PyTorch reference failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let figures: Vec<f64> = text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect();
    (figures.len() == SHAPES.len()).then_some(figures)
}

fn main() {
    tgc_kernels::vecmath::park_candle_pool_workers();
    tgc_kernels::denormals::flush_denormals();
    let iters: usize = std::env::var("TGC_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let threads = rayon::current_num_threads();
    println!("{}", cpu_description());
    let peak = peak(threads);
    match &peak {
        Some((g, how)) => println!("fp32 peak estimate: {g:.0} GFLOP/s ({how})"),
        None => println!("fp32 peak estimate: unknown (no clock found)"),
    }
    let kernels = GemmKernel::available();
    let torch = torch_figures(threads, iters);
    if torch.is_none() && std::env::var("TGC_BENCH_PYTHON").is_err() {
        println!("(set TGC_BENCH_PYTHON to a python with torch for PyTorch's figures in the same run)");
    }
    let mut header = String::from("| product | m × k × n |");
    for k in &kernels {
        header.push_str(&format!(" tgc {} |", k.as_str()));
    }
    header.push_str(" candle matmul |");
    if torch.is_some() {
        header.push_str(" PyTorch |");
    }
    println!("\nGFLOP/s (fraction of the peak estimate), best of {iters}:\n\n{header}");
    println!("|{}", "---|".repeat(header.matches('|').count() - 1));
    let cell = |g: f64| match &peak {
        Some((p, _)) => format!(" {g:.1} ({:.0} %) |", 100.0 * g / p),
        None => format!(" {g:.1} |"),
    };
    for (row, s) in SHAPES.iter().enumerate() {
        let (a, b) = (values(s.m * s.k, 1), values(s.k * s.n, 2));
        let mut dst = vec![0f32; s.m * s.n];
        let flop = 2.0 * (s.m * s.k * s.n) as f64;
        let mut line = format!("| {} | {} × {} × {} |", s.what, s.m, s.k, s.n);
        for &kernel in &kernels {
            let t = best_seconds(iters, || matmul_slices(kernel, &mut dst, &a, s.a_t, &b, s.b_t, (s.m, s.k, s.n)).expect("an available kernel"));
            line.push_str(&cell(flop / t / 1e9));
        }
        // candle's matmul on the same layouts (a transposed view where the bench reads one so).
        let ta = Tensor::from_slice(&a, if s.a_t { (s.k, s.m) } else { (s.m, s.k) }, &Device::Cpu).expect("a");
        let tb = Tensor::from_slice(&b, if s.b_t { (s.n, s.k) } else { (s.k, s.n) }, &Device::Cpu).expect("b");
        let ta = if s.a_t { ta.t().expect("aᵀ") } else { ta };
        let tb = if s.b_t { tb.t().expect("bᵀ") } else { tb };
        let t = best_seconds(iters, || {
            std::hint::black_box(ta.matmul(&tb).expect("candle matmul"));
        });
        line.push_str(&cell(flop / t / 1e9));
        if let Some(torch) = &torch {
            line.push_str(&cell(torch[row]));
        }
        println!("{line}");
    }
}
