//! Elementwise kernels written so that the compiler vectorises them, compiled three times
//! (AVX-512, AVX2 + FMA, and the baseline) and picked at run time from the CPU's features:
//! one binary for every x86-64 machine. The three builds do the same operations in the same
//! order, with fused multiply-adds in each (the baseline's are the C library's `fmaf`, exact
//! like the instruction), and a row's partial maxima and sums run over 16 fixed lanes whatever
//! the vector width, so they give identical results.
//!
//! `exp` is Cephes' `expf` (range reduction by ln 2, degree-6 polynomial, ≈ 1 ulp); `erf` is
//! Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), the formula PyTorch's vectorised CPU
//! kernels use for `erf` and hence for the exact GELU.

/// The instruction set the kernels run with on this CPU, ordered from the least to the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Baseline,
    Avx2Fma,
    Avx512,
}

impl SimdLevel {
    /// The best level this CPU has, lowered (never raised) by `TGC_SIMD=avx2|baseline`: an
    /// AVX-512 machine then runs the AVX2 kernels an AVX2-only machine would (for benchmarks).
    pub fn detect() -> Self {
        match Self::cap() {
            Some(cap) => Self::of_cpu().min(cap),
            None => Self::of_cpu(),
        }
    }

    /// The level `TGC_SIMD` names, if it names one.
    pub fn cap() -> Option<Self> {
        std::env::var("TGC_SIMD").ok().and_then(|v| Self::parse(&v))
    }

    /// The best level this CPU supports.
    pub fn of_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") && std::arch::is_x86_feature_detected!("fma") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Self::Avx2Fma;
            }
        }
        Self::Baseline
    }

    /// `avx512`, `avx2` or `baseline` (any case); other names are not levels.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" => Some(Self::Avx512),
            "avx2" | "avx2+fma" => Some(Self::Avx2Fma),
            "baseline" | "none" => Some(Self::Baseline),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avx512 => "AVX-512",
            Self::Avx2Fma => "AVX2+FMA",
            Self::Baseline => "baseline",
        }
    }
}

/// The micro-kernels of the matrix products (`gemm.rs`): 16-wide AVX-512 ones, 8-wide AVX2 +
/// FMA ones, or the portable ones. All three compute every output in the same order, so the
/// choice changes the speed, never a bit of the result.
///
/// Which kind is faster depends on how the CPU executes 512-bit instructions: Intel's server
/// cores have two 512-bit FMA units; AMD's Zen 4 splits each 512-bit operation into two
/// 256-bit halves, and there the AVX2 kernels ran faster. So AVX-512 products run on Intel CPUs
/// with AVX-512 and AVX2 ones elsewhere, unless `TGC_GEMM=avx512|avx2|baseline` says
/// otherwise; `TGC_SIMD=avx2|baseline` caps them like the other kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKernel {
    Avx512,
    Avx2Fma,
    /// Plain Rust built for the baseline instruction set (`f32::mul_add`, the C library's
    /// `fmaf`): what a CPU without AVX2 + FMA runs, or any CPU under `TGC_SIMD=baseline`.
    Portable,
}

impl GemmKernel {
    /// The kernels for this CPU, after `TGC_SIMD` and `TGC_GEMM` (the latter never raises the
    /// kernels above what the CPU has). An unknown `TGC_GEMM` value is ignored with a warning.
    pub fn detect() -> Self {
        let simd = SimdLevel::detect();
        let requested = std::env::var("TGC_GEMM").ok().and_then(|v| match SimdLevel::parse(&v) {
            Some(level) => Some(level),
            None => {
                tracing::warn!(value = %v, "TGC_GEMM is not avx512, avx2 or baseline; ignored");
                None
            }
        });
        let level = match requested {
            Some(level) => level.min(simd),
            None if simd == SimdLevel::Avx512 && !Self::splits_512_bit_ops() => SimdLevel::Avx512,
            None => simd.min(SimdLevel::Avx2Fma),
        };
        match level {
            SimdLevel::Avx512 => Self::Avx512,
            SimdLevel::Avx2Fma => Self::Avx2Fma,
            SimdLevel::Baseline => Self::Portable,
        }
    }

    /// Whether the CPU is one whose AVX-512 runs on 256-bit halves, where the AVX2 products
    /// are faster: every AVX-512 CPU not made by Intel (AMD's Zen 4, the one measured).
    fn splits_512_bit_ops() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            // Leaf 0: the vendor string in EBX, EDX, ECX.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
            let id = unsafe { std::arch::x86_64::__cpuid(0) };
            let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
            vendor != b"GenuineIntel"
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The kernels this CPU can run, widest first (the portable ones everywhere).
    pub fn available() -> Vec<Self> {
        let cpu = SimdLevel::of_cpu();
        [(Self::Avx512, SimdLevel::Avx512), (Self::Avx2Fma, SimdLevel::Avx2Fma), (Self::Portable, SimdLevel::Baseline)]
            .into_iter()
            .filter(|&(_, needs)| needs <= cpu)
            .map(|(kernel, _)| kernel)
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avx512 => "AVX-512",
            Self::Avx2Fma => "AVX2+FMA",
            Self::Portable => "portable",
        }
    }
}

/// The matrix products' kernels, chosen once per process (or forced by [`with_paths`]).
pub fn gemm_kernel() -> GemmKernel {
    static KERNEL: std::sync::OnceLock<GemmKernel> = std::sync::OnceLock::new();
    match forced() {
        Some((_, kernel)) => kernel,
        None => *KERNEL.get_or_init(GemmKernel::detect),
    }
}

/// The paths [`with_paths`] forces: 0 when none, else `1 + 3·level + kernel`.
static FORCED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn forced() -> Option<(SimdLevel, GemmKernel)> {
    let code = FORCED.load(std::sync::atomic::Ordering::Relaxed);
    let level = [SimdLevel::Baseline, SimdLevel::Avx2Fma, SimdLevel::Avx512];
    let kernel = [GemmKernel::Portable, GemmKernel::Avx2Fma, GemmKernel::Avx512];
    (code > 0).then(|| (level[usize::from(code - 1) / 3], kernel[usize::from(code - 1) % 3]))
}

/// Runs `f` with every kernel of this process on the elementwise level `simd` and the matrix
/// products `gemm` (in all threads), then restores the CPU's choice: for tests and benchmarks
/// that compare the paths in one process. Calls are serialised. Since every path computes in
/// the same order, work running beside `f` gives the same results either way. Panics if the
/// CPU lacks either path.
pub fn with_paths<R>(simd: SimdLevel, gemm: GemmKernel, f: impl FnOnce() -> R) -> R {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    assert!(simd <= SimdLevel::of_cpu() && GemmKernel::available().contains(&gemm), "this CPU cannot run {} with {} products", simd.as_str(), gemm.as_str());
    let _lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _restore = Restore;
    let (l, k) = (
        simd as u8,
        match gemm {
            GemmKernel::Portable => 0u8,
            GemmKernel::Avx2Fma => 1,
            GemmKernel::Avx512 => 2,
        },
    );
    FORCED.store(1 + 3 * l + k, std::sync::atomic::Ordering::Relaxed);
    f()
}

/// Every path this CPU runs, as (elementwise level, matrix products), widest first and the
/// portable one last: what [`with_paths`] takes.
pub fn available_paths() -> Vec<(SimdLevel, GemmKernel)> {
    let cpu = SimdLevel::of_cpu();
    [(SimdLevel::Avx512, GemmKernel::Avx512), (SimdLevel::Avx2Fma, GemmKernel::Avx2Fma), (SimdLevel::Baseline, GemmKernel::Portable)]
        .into_iter()
        .filter(|&(level, _)| level <= cpu)
        .collect()
}

/// The environment variable of candle's elementwise worker pool's spin limit.
const CANDLE_SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// candle runs its large elementwise ops (the gradient sums of every backward pass among
/// them) on a pool of its own beside rayon's, whose worker spins 25 000 rounds after each op
/// waiting for the next. Between our rayon-parallel kernels that spinning holds a core they
/// need: ResNet-18 Guided Backprop and Saliency at batch 1 took about 10 % longer with it on
/// 2 cores. This sets the limit to 0 (the worker sleeps at once) unless the variable is set.
/// For binaries: call first thing in `main`, before any other thread or candle op exists.
pub fn park_candle_pool_workers() {
    if std::env::var_os(CANDLE_SPIN_LIMIT).is_none() {
        std::env::set_var(CANDLE_SPIN_LIMIT, "0");
    }
}

/// One line naming this machine's CPU, its vector features, the kernels chosen for it and the
/// worker threads, for benchmark output: figures are only comparable on the same CPU kind.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| text.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_owned()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    #[allow(unused_mut)]
    let mut features: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    for (name, present) in [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
    ] {
        if present {
            features.push(name);
        }
    }
    let spin = std::env::var(CANDLE_SPIN_LIMIT).unwrap_or_else(|_| "default".to_owned());
    format!(
        "CPU: {model} [{}], kernels: {}, matrix products: {}, threads: {}, candle pool spin: {spin}, denormals: {}",
        features.join(" "),
        level().as_str(),
        gemm_kernel().as_str(),
        rayon::current_num_threads(),
        if crate::denormals::denormals_flushed() { "flushed to zero" } else { "kept" }
    )
}

fn level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    match forced() {
        Some((level, _)) => level,
        None => *LEVEL.get_or_init(SimdLevel::detect),
    }
}

/// `a·b + c` with one rounding, in every build: the FMA instruction where the build has it,
/// the C library's exact `fmaf` in the baseline build, so that every level gives the same bits.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest with the 1.5·2²³ trick (plain arithmetic, vectorises everywhere).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.376_26);
    let n = fma(x, LOG2E, ROUND) - ROUND;
    let r = fma(n, -LN2_LO, fma(n, -LN2_HI, x));
    let mut p = 1.987_569_2e-4;
    p = fma(p, r, 1.398_199_9e-3);
    p = fma(p, r, 8.333_452e-3);
    p = fma(p, r, 4.166_579_6e-2);
    p = fma(p, r, 1.666_666_5e-1);
    p = fma(p, r, 5.000_000_1e-1);
    let y = fma(p, r * r, r) + 1.0;
    let scale = f32::from_bits((((n as i32) + 127) as u32) << 23);
    if x.is_nan() {
        x
    } else {
        y * scale
    }
}

#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / fma(0.327_591_1, a, 1.0);
    let mut r = 1.061_405_4;
    r = fma(r, t, -1.453_152);
    r = fma(r, t, 1.421_413_8);
    r = fma(r, t, -0.284_496_74);
    r = fma(r, t, 0.254_829_6);
    let y = fma(-exp(-(x * x)) * t, r, 1.0);
    y.copysign(x)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu(x: f32, exact: bool) -> f32 {
    if exact {
        0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
    } else {
        let inner = SQRT_2_OVER_PI * fma(0.044_715 * x * x, x, x);
        0.5 * x * (1.0 + tanh(inner))
    }
}

#[inline(always)]
fn gelu_derivative(x: f32, exact: bool) -> f32 {
    if exact {
        let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
        fma(x, pdf, cdf)
    } else {
        let inner = SQRT_2_OVER_PI * fma(0.044_715 * x * x, x, x);
        let t = tanh(inner);
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * fma(3.0 * 0.044_715 * x, x, 1.0)
    }
}

/// `tanh(x) = 1 − 2 / (exp(2x) + 1)`.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Defines `pub fn $name(args)` that runs `$body` compiled for the best level.
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) => $kernel:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $kernel($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $kernel($($arg),*)
                }
                match level() {
                    // SAFETY: the CPU has the features these builds were compiled for.
                    SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    SimdLevel::Avx2Fma => return unsafe { avx2($($arg),*) },
                    SimdLevel::Baseline => {}
                }
            }
            $kernel($($arg),*)
        }
    };
}

#[inline(always)]
fn gelu_kernel(values: &mut [f32], exact: bool) {
    for v in values.iter_mut() {
        *v = gelu(*v, exact);
    }
}

#[inline(always)]
fn gelu_backward_kernel(x: &[f32], grad: &mut [f32], exact: bool) {
    for (g, &x) in grad.iter_mut().zip(x) {
        *g *= gelu_derivative(x, exact);
    }
}

/// Lanes of the partial maxima and sums of a row (so that the reductions vectorise).
const LANES: usize = 16;

#[inline(always)]
fn softmax_kernel(row: &mut [f32], divisor: f32) {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (m, v) in max.iter_mut().zip(chunk.iter_mut()) {
            *v /= divisor;
            *m = m.max(*v);
        }
    }
    for (m, v) in max.iter_mut().zip(chunks.into_remainder()) {
        *v /= divisor;
        *m = m.max(*v);
    }
    let max = max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sum.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    for (s, v) in sum.iter_mut().zip(chunks.into_remainder()) {
        *v = exp(*v - max);
        *s += *v;
    }
    let sum: f32 = sum.iter().sum();
    for v in row.iter_mut() {
        *v /= sum;
    }
}

dispatched! {
    /// GELU in place (`exact`: `x·Φ(x)` with [`erf`]; otherwise the tanh form).
    fn gelu_in_place(values: &mut [f32], exact: bool) => gelu_kernel
}

dispatched! {
    /// `grad ⊙ GELU'(x)` in place.
    fn gelu_backward_in_place(x: &[f32], grad: &mut [f32], exact: bool) => gelu_backward_kernel
}

dispatched! {
    /// `softmax(row / divisor)` in place.
    fn softmax_in_place(row: &mut [f32], divisor: f32) => softmax_kernel
}

/// The kernels' `exp` (for tests and callers that need the same values).
pub fn exp_f32(x: f32) -> f32 {
    exp(x)
}

/// The kernels' `erf`.
pub fn erf_f32(x: f32) -> f32 {
    erf(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simd_cap_only_lowers_the_level() {
        assert_eq!(SimdLevel::parse("AVX2"), Some(SimdLevel::Avx2Fma));
        assert_eq!(SimdLevel::parse("avx-512"), Some(SimdLevel::Avx512));
        assert_eq!(SimdLevel::parse("sse9"), None);
        assert_eq!(SimdLevel::Avx512.min(SimdLevel::Avx2Fma), SimdLevel::Avx2Fma);
        assert_eq!(SimdLevel::Avx2Fma.min(SimdLevel::Avx512), SimdLevel::Avx2Fma);
        assert_eq!(SimdLevel::Baseline.min(SimdLevel::Avx512), SimdLevel::Baseline);
    }

    #[test]
    fn exp_is_within_two_ulp_and_keeps_the_edges() {
        let mut worst = 0f64;
        for i in -8000..8000 {
            let x = i as f32 * 0.0109;
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_abramowitz_stegun_7_1_26() {
        // Reference values of erf; the formula's absolute error is below 1.5e-7.
        for (x, want) in [(0.0f32, 0.0f64), (0.5, 0.520_499_877_8), (1.0, 0.842_700_792_9), (-1.5, -0.966_105_146_5), (3.0, 0.999_977_909_5)] {
            assert!((erf_f32(x) as f64 - want).abs() < 2e-7, "erf({x}) = {} vs {want}", erf_f32(x));
        }
    }

    #[test]
    fn every_level_gives_the_same_values() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let mut dispatched = x.clone();
        gelu_in_place(&mut dispatched, true);
        // The kernel built for the baseline instruction set (fused multiply-adds in software).
        let mut plain = x.clone();
        gelu_kernel(&mut plain, true);
        assert_eq!(dispatched.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        for (a, x) in plain.iter().zip(&x) {
            let exact = 0.5 * *x as f64 * (1.0 + candle_core::cpu::erf::erf_f64(*x as f64 / std::f64::consts::SQRT_2));
            assert!((*a as f64 - exact).abs() < 2e-7 * (1.0 + x.abs() as f64), "{x}: {a} vs {exact}");
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_definition() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        let want: Vec<f64> = {
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 / 3.0).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax_in_place(&mut row, 3.0);
        for (a, b) in row.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-6 * b.max(1e-3));
        }
    }
}
