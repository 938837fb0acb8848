//! Denormal (subnormal) numbers flushed to zero in every thread that computes.
//!
//! Random-initialised weights (offline runs, each stage of the randomisation cascade) produce
//! intermediates below `f32::MIN_POSITIVE` (~1.2e-38), and on Intel cores every such operand of
//! a multiply costs a microcode assist: a matrix-product micro-kernel then runs 3–10× slower.
//! [`flush_denormals`] sets the CPU's flush-to-zero and denormals-are-zero modes (x86-64: the
//! MXCSR bits FTZ and DAZ; aarch64: FPCR.FZ) in the calling thread, in rayon's global pool and in
//! candle's CPU worker pool; threads started later inherit the mode from the thread that starts
//! them. What changes: a result or an operand below ~1.2e-38 counts as 0; everything above is
//! bit-identical. PyTorch offers the same as `torch.set_flush_denormal(True)`.
//!
//! The `tgc` binary and the benchmarks call it first; `TGC_DENORMALS=keep` leaves the CPU's
//! default (IEEE gradual underflow), for measuring what flushing saves.

use std::sync::Once;

/// The environment variable that keeps denormal numbers (`TGC_DENORMALS=keep`).
pub const TGC_DENORMALS: &str = "TGC_DENORMALS";

/// Flushes denormal numbers to zero in this thread, in rayon's global pool and in candle's
/// CPU worker pool, unless `TGC_DENORMALS=keep`. Returns whether they are flushed now. The pools
/// are set once per process; call it from any thread of your own that computes, too.
pub fn flush_denormals() -> bool {
    if std::env::var(TGC_DENORMALS).is_ok_and(|v| v == "keep") {
        return denormals_flushed();
    }
    mode::set();
    static POOLS: Once = Once::new();
    POOLS.call_once(|| {
        rayon::broadcast(|_| mode::set());
        candle_core::utils::barrier_pool().execute(|_| mode::set());
    });
    denormals_flushed()
}

/// Whether this thread flushes denormal numbers to zero (both modes set).
pub fn denormals_flushed() -> bool {
    mode::get()
}

#[cfg(target_arch = "x86_64")]
mod mode {
    /// MXCSR: flush-to-zero (bit 15) and denormals-are-zero (bit 6).
    const FTZ_DAZ: u32 = 0x8040;

    fn read() -> u32 {
        let mut csr = 0u32;
        // SAFETY: stmxcsr stores the 32-bit MXCSR register to a valid, aligned u32.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
        csr
    }

    pub fn set() {
        let csr = read() | FTZ_DAZ;
        // SAFETY: ldmxcsr loads a value read from MXCSR with two defined mode bits added.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags)) };
    }

    pub fn get() -> bool {
        read() & FTZ_DAZ == FTZ_DAZ
    }
}

#[cfg(target_arch = "aarch64")]
mod mode {
    /// FPCR.FZ: flush-to-zero for single and double precision (inputs and results).
    const FZ: u64 = 1 << 24;

    fn read() -> u64 {
        let fpcr: u64;
        // SAFETY: reading FPCR has no side effects.
        unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags)) };
        fpcr
    }

    pub fn set() {
        let fpcr = read() | FZ;
        // SAFETY: writes back FPCR with the defined FZ mode bit added.
        unsafe { std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags)) };
    }

    pub fn get() -> bool {
        read() & FZ == FZ
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod mode {
    pub fn set() {}

    pub fn get() -> bool {
        false
    }
}
