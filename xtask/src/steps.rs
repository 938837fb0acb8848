//! The reproduction's steps: each runs `tgc` unless its marker says that the same command
//! already finished on the same inputs.
//!
//! A marker records a step's command, the markers of the steps whose outputs it reads and the
//! content of the data folder it reads. So a step reruns when its own command changed, when a
//! step it reads from reran differently (new weights → new features → new models → new
//! explanations), or when the data changed — a reused output folder never mixes the results of
//! two configurations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::{remove_path, write_atomic};

/// What a step reads besides its command, and the folder it owns.
#[derive(Default)]
pub struct Inputs {
    /// Steps whose outputs this one reads.
    pub after: Vec<String>,
    /// Whether it reads the data folder.
    pub data: bool,
    /// A folder only this step writes: emptied before the step reruns, so that nothing of an
    /// earlier configuration (another split's slices, say) is left beside the new outputs.
    pub owns: Option<PathBuf>,
}

/// Runs steps, skipping those already complete, and records their timings.
pub struct Runner {
    pub tgc: PathBuf,
    pub out: PathBuf,
    /// The data folder's fingerprint ([`data_fingerprint`]), once known.
    pub data: Option<String>,
    pub timings: Vec<(String, f64, bool)>,
    /// Submit the steps to Slurm instead of running them here.
    pub slurm: Option<crate::slurm::Slurm>,
}

impl Runner {
    pub fn new(tgc: PathBuf, out: PathBuf) -> Self {
        Runner { tgc, out, data: None, timings: Vec::new(), slurm: None }
    }

    fn marker_path(&self, name: &str) -> PathBuf {
        self.out.join(".done").join(format!("{name}.cmd"))
    }

    /// The marker step `name` leaves when it completes `args` on today's inputs.
    fn marker(&self, name: &str, args: &[String], inputs: &Inputs) -> Result<String> {
        let mut marker = format!("tgc {}\n", args.join(" "));
        for dep in &inputs.after {
            let path = self.marker_path(dep);
            let text = std::fs::read(&path).with_context(|| format!("step {name} needs step {dep}, which has not completed ({})", path.display()))?;
            marker.push_str(&format!("after {dep} {:x}\n", Sha256::digest(&text)));
        }
        if inputs.data {
            let data = self.data.as_ref().with_context(|| format!("step {name} reads the data before its fingerprint was taken"))?;
            marker.push_str(&format!("data {data}\n"));
        }
        Ok(marker)
    }

    /// Runs `tgc args…` as step `name` unless its marker says the same command already
    /// finished on the same inputs.
    pub fn step(&mut self, name: &str, args: &[String], inputs: &Inputs) -> Result<()> {
        let marker_path = self.marker_path(name);
        let marker = self.marker(name, args, inputs)?;
        let command = args.join(" ");
        match std::fs::read_to_string(&marker_path) {
            Ok(done) if done == marker => {
                println!("[skip] {name}: already complete");
                self.timings.push((name.to_owned(), 0.0, true));
                return Ok(());
            }
            Ok(done) if done.lines().next() == marker.lines().next() => println!("[redo] {name}: its inputs changed since it ran"),
            _ => {}
        }
        // An earlier run's marker goes first: a step killed after emptying its folder must not
        // look complete.
        remove_path(&marker_path)?;
        if let Some(folder) = &inputs.owns {
            remove_path(folder)?;
        }
        println!("[run ] {name}: tgc {command}");
        let start = Instant::now();
        match &self.slurm {
            Some(slurm) => slurm.run(&self.tgc, name, args).with_context(|| format!("tgc {command}"))?,
            None => {
                let status = Command::new(&self.tgc).args(args).status().with_context(|| format!("starting {}", self.tgc.display()))?;
                if !status.success() {
                    bail!("step {name} failed ({status}): tgc {command}");
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!("[done] {name} in {secs:.1} s");
        write_atomic(&marker_path, marker.as_bytes())?;
        self.timings.push((name.to_owned(), secs, false));
        Ok(())
    }
}

/// A digest of every file under `dir` (hidden ones aside): relative paths and contents, in
/// path order. Contents rather than times, so that a copy of the same data reuses the steps.
pub fn data_fingerprint(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))? {
            let path = entry.with_context(|| format!("listing {}", folder.display()))?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hash.update(relative.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(format!("{:x}", hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `tgc` that appends its first argument to `log` and writes a file into
    /// the folder given as its second argument.
    fn fake_tgc(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("fake-tgc");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$1\" >> {}\nmkdir -p \"$2\" && echo x > \"$2/$1\"\n", dir.join("log").display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }

    /// Runs three chained steps (features ← train ← explain, the last also reading the data)
    /// with the given commands' last words, and returns the steps that ran.
    fn run(dir: &Path, weights: &str, seed: &str, method: &str) -> Vec<String> {
        let log = dir.join("log");
        let _ = std::fs::remove_file(&log);
        let out = dir.join("out");
        let mut runner = Runner::new(fake_tgc(dir), out.clone());
        runner.data = Some(data_fingerprint(&dir.join("data")).unwrap());
        let folder = |f: &str| out.join(f).display().to_string();
        runner.step("features", &[s("features"), folder("features"), s(weights)], &Inputs { data: true, ..Inputs::default() }).unwrap();
        runner.step("train", &[s("train"), folder("runs"), s(seed)], &Inputs { after: vec![s("features")], ..Inputs::default() }).unwrap();
        let owns = Some(out.join("explanations"));
        runner.step("explain", &[s("explain"), folder("explanations"), s(method)], &Inputs { after: vec![s("train")], data: true, owns }).unwrap();
        std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_step_reruns_when_its_command_its_inputs_or_the_data_change() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::create_dir_all(dir.join("data/healthy")).unwrap();
        std::fs::write(dir.join("data/healthy/a.nii"), b"slice a").unwrap();
        assert_eq!(run(dir, "random:1", "7", "gradcam"), ["features", "train", "explain"]);
        assert!(run(dir, "random:1", "7", "gradcam").is_empty(), "an unchanged run reuses every step");
        // Another seed: the models change, so do the explanations; the features do not.
        assert_eq!(run(dir, "random:1", "8", "gradcam"), ["train", "explain"]);
        // Other weights: everything downstream of the features.
        assert_eq!(run(dir, "random:2", "8", "gradcam"), ["features", "train", "explain"]);
        // Only the last step's own command.
        assert_eq!(run(dir, "random:2", "8", "saliency"), ["explain"]);
        // The data's content (not its times): the steps that read it, and what reads theirs.
        std::fs::write(dir.join("data/healthy/a.nii"), b"slice a").unwrap();
        assert!(run(dir, "random:2", "8", "saliency").is_empty());
        std::fs::write(dir.join("data/healthy/b.nii"), b"slice b").unwrap();
        assert_eq!(run(dir, "random:2", "8", "saliency"), ["features", "train", "explain"]);
    }

    #[test]
    fn a_rerun_step_starts_from_an_empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        run(dir, "random:1", "7", "gradcam");
        assert!(dir.join("out/explanations/explain").is_file());
        std::fs::write(dir.join("out/explanations/old_slice.safetensors"), b"of another split").unwrap();
        run(dir, "random:1", "8", "gradcam");
        assert!(!dir.join("out/explanations/old_slice.safetensors").exists(), "a stale output survived the rerun");
        assert!(dir.join("out/explanations/explain").is_file());
    }

    #[test]
    fn a_step_whose_input_step_never_ran_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut runner = Runner::new(PathBuf::from("/bin/true"), dir.path().to_path_buf());
        let err = runner.step("train", &[s("train")], &Inputs { after: vec![s("features")], ..Inputs::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("needs step features"), "{err:#}");
        let err = runner.step("stats", &[s("data")], &Inputs { data: true, ..Inputs::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("fingerprint"), "{err:#}");
    }
}
