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

/// Every file under `dir`, relative path → bytes, sorted by path.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{}: {e}", folder.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Asserts that two folders hold the same files with the same bytes (and are not empty): a
/// one-process run's outputs and a merge's.
pub fn same_tree(one: &Path, merged: &Path) {
    let (a, b) = (tree(one), tree(merged));
    let names = |t: &[(PathBuf, Vec<u8>)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{} and {} hold different files", one.display(), merged.display());
    assert!(!a.is_empty(), "{} is empty", one.display());
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs between the one-process run and the merge", path.display());
    }
}
