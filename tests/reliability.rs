//! Reliability of `tgc extract` and `tgc train` under the conditions researchers meet: two
//! processes sharing one feature cache, a corrupted cache entry, and different thread counts.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{ok, s_, text, tgc};

fn synth(dir: &Path, patients: &str) -> std::path::PathBuf {
    let data = dir.join("ph");
    ok(tgc(&["data", "synth", "--out", s_(&data), "--patients", patients, "--size", "64", "--seed", "5"], &dir.join("unused")));
    data
}

fn extract_cmd(data: &Path, out: &Path, cache: &Path, threads: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tgc"));
    c.args(["extract", "--backbone", "resnet18", "--weights", "random:6", "--data", s_(data), "--out", s_(out), "--batch-size", "2"])
        .env("TGC_CACHE_DIR", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = threads {
        c.env("RAYON_NUM_THREADS", t);
    }
    c
}

/// Every cache entry is a complete safetensors file with a verified checksum: no torn entries
/// and no temporary files left behind.
fn assert_cache_consistent(cache: &Path) -> usize {
    let mut entries = 0;
    for e in std::fs::read_dir(cache).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp-"), "temporary file left in the cache: {name}");
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap_or_else(|e| panic!("torn cache entry {name}: {e}"));
        assert!(meta.metadata().as_ref().is_some_and(|m| m.contains_key("sha256")), "{name} has no checksum");
        entries += 1;
    }
    entries
}

#[test]
fn two_processes_share_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "10");
    let cache = dir.path().join("cache");
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    let first = extract_cmd(&data, &a, &cache, None).spawn().unwrap();
    let second = extract_cmd(&data, &b, &cache, None).spawn().unwrap();
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    assert!(first.status.success() && second.status.success(), "{}\n{}", text(&first), text(&second));
    let (ab, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    if ab != bb {
        let n = u64::from_le_bytes(ab[..8].try_into().unwrap()) as usize;
        let m = u64::from_le_bytes(bb[..8].try_into().unwrap()) as usize;
        eprintln!("A: {}\nB: {}", String::from_utf8_lossy(&ab[8..8 + n]), String::from_utf8_lossy(&bb[8..8 + m]));
        let first = ab.iter().zip(&bb).position(|(x, y)| x != y);
        eprintln!("lengths {} {}, first difference at {first:?}", ab.len(), bb.len());
    }
    assert!(ab == bb, "the two processes wrote different features");
    let n = tgc_data::Dataset::open(&data).unwrap().len();
    assert_eq!(assert_cache_consistent(&cache), n);
    // A third run is served entirely from that cache and agrees byte for byte.
    let c = dir.path().join("c.safetensors");
    let third = extract_cmd(&data, &c, &cache, None).output().unwrap();
    assert!(text(&third).contains(&format!("{n} from cache")), "{}", text(&third));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
}

#[test]
fn a_corrupted_cache_entry_is_detected_recomputed_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "4");
    let cache = dir.path().join("cache");
    let clean = dir.path().join("clean.safetensors");
    assert!(extract_cmd(&data, &clean, &cache, None).output().unwrap().status.success());
    // Flip a byte inside one entry's values (the tail of the file), and truncate another.
    let mut entries: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&entries[0], &bytes).unwrap();
    let truncated = std::fs::read(&entries[1]).unwrap();
    std::fs::write(&entries[1], &truncated[..truncated.len() / 2]).unwrap();

    let again = dir.path().join("again.safetensors");
    let o = extract_cmd(&data, &again, &cache, None).output().unwrap();
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert_eq!(log.matches("corrupted feature-cache entry").count(), 2, "{log}");
    let n = tgc_data::Dataset::open(&data).unwrap().len();
    assert!(log.contains(&format!("{} from cache", n - 2)), "{log}");
    assert_eq!(std::fs::read(&clean).unwrap(), std::fs::read(&again).unwrap(), "recomputed features differ");
    // The entries were replaced: the next run is served from the cache without warnings.
    let o = extract_cmd(&data, &dir.path().join("third.safetensors"), &cache, None).output().unwrap();
    assert!(text(&o).contains(&format!("{n} from cache")) && !text(&o).contains("corrupted"), "{}", text(&o));
    assert_cache_consistent(&cache);
}

#[test]
fn features_and_results_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "8");
    let (one, two) = (dir.path().join("one.safetensors"), dir.path().join("two.safetensors"));
    for (out, threads, cache) in [(&one, "1", "c1"), (&two, "2", "c2")] {
        let o = extract_cmd(&data, out, &dir.path().join(cache), Some(threads)).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap(), "features differ between 1 and 2 threads");
    // Training on them twice, with 1 and 2 threads: byte-identical results.csv.
    let mut results = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("runs{threads}"));
        let o = Command::new(env!("CARGO_BIN_EXE_tgc"))
            .args(["train-temporal", "--features", s_(&one), "--out", s_(&out), "--iterations", "2", "--epochs", "4", "--bootstrap-draws", "50"])
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        results.push([std::fs::read(out.join("ResNet_seq_3/results.csv")).unwrap(), std::fs::read(out.join("ResNet_seq_3/0/model.safetensors")).unwrap()]);
    }
    assert_eq!(results[0], results[1], "training results differ between thread counts");
}

#[test]
fn attribution_maps_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "6");
    let features = dir.path().join("f.safetensors");
    assert!(extract_cmd(&data, &features, &dir.path().join("cache"), None).output().unwrap().status.success());
    let runs = dir.path().join("runs");
    ok(tgc(&["train", "--features", s_(&features), "--out", s_(&runs), "--iterations", "1", "--epochs", "2"], &dir.path().join("cache")));
    let mut maps = Vec::new();
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("maps{threads}"));
        let o = Command::new(env!("CARGO_BIN_EXE_tgc"))
            .args(["explain", "--run", s_(&runs.join("ResNet/0")), "--data", s_(&data), "--samples-per-class", "1", "--samples", "4"])
            .args(["--method", "gradient-shap,gradcam,guided-backprop", "--out", s_(&out)])
            .env("TGC_CACHE_DIR", dir.path().join("cache"))
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let mut files: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().unwrap() == "safetensors").collect();
        files.sort();
        maps.push(files.iter().map(|f| (f.file_name().unwrap().to_owned(), std::fs::read(f).unwrap())).collect::<Vec<_>>());
    }
    assert!(!maps[0].is_empty());
    assert_eq!(maps[0], maps[1], "attribution files differ between 1 and 2 threads");
}
