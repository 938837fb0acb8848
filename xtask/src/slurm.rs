//! `cargo xtask reproduce --slurm`: each step as Slurm jobs. The heavy steps that take shards
//! (`extract`, `explain` over a data set, `faithfulness`, `explain-temporal` over many
//! patients) become a job array of `--shards` tasks (`--array=0-(N-1)%M`, `--requeue`), then
//! the `tgc merge` of their parts as a job held with `--dependency=afterok` on the array; every
//! other step is one job. Each is awaited (`sbatch --wait`) before the next step's inputs are
//! read; a failure names the job, the task and its log.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::remove_path;

/// How the steps are submitted.
#[derive(Clone, Debug)]
pub struct Slurm {
    /// Array tasks per heavy step.
    pub shards: usize,
    /// At most this many of them at once.
    pub parallel: usize,
    /// Job logs go here.
    pub logs: PathBuf,
    /// More sbatch options for every job (partition, account, time…).
    pub extra: Vec<String>,
}

/// `word` quoted for the shell of a job's `--wrap`.
fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The `--out` of a step's arguments.
fn out_of(args: &[String]) -> Option<&str> {
    args.windows(2).find(|w| w[0] == "--out").map(|w| w[1].as_str())
}

/// Whether a step's command runs in shards: the four steps that take `--shard`, over a data set
/// (not one `--input` or `--volume`; explain-temporal over every patient, not one).
pub fn shardable(args: &[String]) -> bool {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    match args.first().map(String::as_str) {
        Some("extract" | "faithfulness") => true,
        Some("explain") => has("--data"),
        Some("explain-temporal") => !has("--patient"),
        _ => false,
    }
}

impl Slurm {
    /// Runs `tgc args…` as step `name` on the cluster and waits for it.
    pub fn run(&self, tgc: &Path, name: &str, args: &[String]) -> Result<()> {
        std::fs::create_dir_all(&self.logs).with_context(|| format!("creating {}", self.logs.display()))?;
        let command = |words: &[String]| format!("exec {} {}", quote(&tgc.display().to_string()), words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "));
        let gpu = args.windows(2).any(|w| w[0] == "--device" && w[1].starts_with("cuda"));
        if !shardable(args) {
            let id = self.submit(name, &command(args), &[], gpu, true)?;
            return self.check(name, &id);
        }
        let out = out_of(args).with_context(|| format!("step {name} has no --out"))?;
        let parts = PathBuf::from(format!("{out}.parts"));
        // Parts of an earlier configuration would be refused by name; this step reruns whole.
        remove_path(&parts)?;
        let mut sharded = args.to_vec();
        sharded.extend(["--shards".to_owned(), self.shards.to_string()]);
        let array = self.submit(name, &command(&sharded), &[format!("--array=0-{}%{}", self.shards - 1, self.parallel), "--requeue".into()], gpu, false)?;
        let merge = self.submit(
            &format!("{name}-merge"),
            &command(&["merge".to_owned(), out.to_owned()]),
            &[format!("--dependency=afterok:{array}"), "--kill-on-invalid-dep=yes".into()],
            false,
            true,
        );
        // The array's failures first: they are why a merge never ran.
        self.check(name, &array)?;
        let merge = merge?;
        self.check(&format!("{name}-merge"), &merge)?;
        remove_path(&parts)
    }

    /// Submits one job (`wait`: and waits for it); returns its id.
    fn submit(&self, name: &str, wrap: &str, options: &[String], gpu: bool, wait: bool) -> Result<String> {
        let array = options.iter().any(|o| o.starts_with("--array"));
        let log = self.logs.join(if array { format!("{name}-%A_%a.log") } else { format!("{name}-%j.log") });
        let mut c = Command::new("sbatch");
        c.args(["--parsable", "--job-name", &format!("tgc-{name}"), "--output"]).arg(&log).args(options).args(&self.extra);
        if gpu {
            c.arg("--gres=gpu:1");
        }
        if wait {
            c.arg("--wait");
        }
        let o = c.arg("--wrap").arg(wrap).output().context("running sbatch (is this a Slurm login node?)")?;
        let id = String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap_or_default().to_owned();
        if id.is_empty() {
            bail!("sbatch refused step {name}: {}", String::from_utf8_lossy(&o.stderr).trim());
        }
        println!("[slurm] {name}: job {id}{}", if wait { " done" } else { " submitted" });
        Ok(id)
    }

    /// Errors naming every task of job `id` that did not complete, with its log.
    fn check(&self, name: &str, id: &str) -> Result<()> {
        // An array's tasks may still be running when its merge was refused: wait for them.
        while Command::new("squeue").args(["-h", "-j", id, "-o", "%i"]).output().map(|o| !o.stdout.is_empty()).unwrap_or(false) {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        let o = Command::new("scontrol").args(["-o", "show", "job", id]).output().context("running scontrol")?;
        let text = String::from_utf8_lossy(&o.stdout);
        let field = |line: &str, key: &str| line.split(' ').find_map(|f| f.strip_prefix(key)).map(str::to_owned);
        let failed: Vec<String> = text
            .lines()
            .filter_map(|line| {
                let state = field(line, "JobState=")?;
                (state != "COMPLETED").then(|| {
                    let task = field(line, "ArrayTaskId=").map(|t| format!(" task {t}")).unwrap_or_default();
                    format!("job {id}{task} {state} (log: {})", field(line, "StdOut=").unwrap_or_default())
                })
            })
            .collect();
        if !failed.is_empty() {
            bail!("step {name} failed on Slurm: {}", failed.join("; "));
        }
        if text.trim().is_empty() {
            bail!("step {name}: Slurm has no record of job {id} (scontrol: {})", String::from_utf8_lossy(&o.stderr).trim());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_that_take_shards_and_their_quoting() {
        let v = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert!(shardable(&v("extract --data d --out f")));
        assert!(shardable(&v("explain --run r --data d --out o")));
        assert!(!shardable(&v("explain --run r --input x --out o")));
        assert!(shardable(&v("explain-temporal --run r --data d --out o")));
        assert!(!shardable(&v("explain-temporal --run r --data d --patient OAS30001 --out o")));
        assert!(!shardable(&v("train --features f --out o")));
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("sessions:diagnosis=AD/CN"), "sessions:diagnosis=AD/CN");
        assert_eq!(out_of(&v("explain --out o --data d")), Some("o"));
    }
}
