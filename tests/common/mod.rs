#![allow(dead_code)]
//! Shared helpers of the end-to-end tests: run the real `tgc` binary with a private feature
//! cache, and build the usual phantom → features → heads fixture.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `tgc args…` with `TGC_CACHE_DIR` pointing at `cache`.
pub fn tgc(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tgc")).args(args).env("TGC_CACHE_DIR", cache).output().expect("tgc runs")
}

/// Standard output and error together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts success and returns the output text.
pub fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    t
}

/// A temporary folder with phantoms (`ph/`) and their random-weight ResNet features
/// (`f.safetensors`).
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
    pub data: PathBuf,
    pub features: PathBuf,
}

impl Fixture {
    pub fn new(patients: usize, max_visits: usize, seed: u64, weights: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let data = dir.path().join("ph");
        let features = dir.path().join("f.safetensors");
        let (p, v, s) = (patients.to_string(), max_visits.to_string(), seed.to_string());
        ok(tgc(&["data", "synth", "--out", s_(&data), "--patients", &p, "--size", "64", "--seed", &s, "--max-visits", &v], &cache));
        ok(tgc(&["extract", "--backbone", "resnet18", "--weights", weights, "--data", s_(&data), "--out", s_(&features)], &cache));
        Self { dir, cache, data, features }
    }

    /// Runs `tgc <args…>` against this fixture's cache.
    pub fn tgc(&self, args: &[&str]) -> Output {
        tgc(args, &self.cache)
    }
}

pub fn s_(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}
