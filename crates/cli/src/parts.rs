//! Shards and their parts: `--shard K/N` (or a job array's environment) makes `extract`,
//! `explain`, `faithfulness` and `explain-temporal` do one shard of the work — whole
//! participants — and write it as a part, `OUT.parts/K-of-N/`, whose `part.json` (written last,
//! atomically) records the command, the shard and the items it covered. `tgc merge OUT` checks
//! that every part is there, made by the same command, with no overlap, and joins them into
//! what one process would have written to `OUT`.
//!
//! A part's own files: `part.json` and the step's working files named `part.*`; every other file
//! in a part is an output, copied to the same relative path under `OUT` by the merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use tgc_data::{Dataset, Shard};

/// `--shard K/N` and `--shards N`, flattened into every step that can run in shards.
#[derive(Args, Clone, Debug, Default)]
pub struct ShardArgs {
    /// Do shard K of N (0-based): whole participants, balanced by image count, written as a
    /// part under OUT.parts/K-of-N (`tgc merge OUT` joins the parts). Default: a Slurm array
    /// task's (SLURM_ARRAY_TASK_ID with _COUNT or _MIN/_MAX), or an Indexed Job's
    /// (JOB_COMPLETION_INDEX with --shards); without either, everything in one process.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// The number of shards: with a Kubernetes Indexed Job's JOB_COMPLETION_INDEX, or in a
    /// Slurm array, whose task id is then the shard (a task resubmitted alone keeps its number).
    #[arg(long)]
    pub shards: Option<usize>,
}

impl ShardArgs {
    /// The shard this process does, if any.
    pub fn resolve(&self) -> Result<Option<Shard>> {
        Ok(Shard::resolve(self.shard, self.shards, &|k| std::env::var(k).ok())?)
    }
}

/// One item a part covered: its position in the one-process order and its name (an image's
/// path, a patient).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Item {
    pub position: usize,
    pub name: String,
}

/// `part.json`: what a part is and what it covered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartRecord {
    pub format: String,
    pub step: String,
    pub shard: usize,
    pub shards: usize,
    pub tgc_version: String,
    /// The step's arguments, without the shard flags and `-v`: the part's configuration.
    pub arguments: Vec<String>,
    /// The folder the command ran in (its relative paths are relative to it).
    pub cwd: PathBuf,
    /// Items of the whole run (all shards).
    pub total: usize,
    /// SHA-256 of the whole run's item names in order: parts that saw different data differ.
    pub whole: String,
    pub items: Vec<Item>,
}

const FORMAT: &str = "tgc-part/1";

/// The folder of `out`'s parts: `OUT.parts` beside it.
pub fn parts_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{name}.parts"))
}

/// This process's arguments after the subcommand `step`, without the shard flags and `-v`.
pub fn step_arguments(step: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = args.iter().position(|a| a == step).map_or(0, |p| p + 1);
    let mut kept = Vec::new();
    let mut skip_value = false;
    for a in &args[start..] {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match a.as_str() {
            "--shard" | "--shards" => skip_value = true,
            s if s.starts_with("--shard=") || s.starts_with("--shards=") => {}
            s if s == "--verbose" || (s.starts_with('-') && !s.starts_with("--") && s.len() > 1 && s[1..].chars().all(|c| c == 'v')) => {}
            _ => kept.push(a.clone()),
        }
    }
    kept
}

/// A part being written: its folder, and what its `part.json` will say.
pub struct Part {
    pub dir: PathBuf,
    record: PartRecord,
}

/// The complete parts (those with a `part.json`) in `out`'s parts folder, by folder name.
fn complete_parts(out: &Path) -> Result<Vec<(PathBuf, PartRecord)>> {
    let dir = parts_dir(out);
    let mut parts = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(parts) };
    for entry in entries {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        let json = path.join("part.json");
        if !json.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
        let record: PartRecord = serde_json::from_str(&text).with_context(|| format!("{} is not a tgc part record", json.display()))?;
        if record.format != FORMAT {
            bail!("{}: part format {:?}, this tgc reads {FORMAT:?}", json.display(), record.format);
        }
        parts.push((path, record));
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(parts)
}

/// A command's configuration: its arguments without those that change no result (where the
/// feature cache is, whether it is used, how many images go through the model at once — an
/// image's numbers do not depend on its batch).
fn configuration(arguments: &[String]) -> Vec<String> {
    const NEUTRAL_WITH_VALUE: [&str; 2] = ["--cache-dir", "--batch-size"];
    let mut kept = Vec::new();
    let mut skip_value = false;
    for a in arguments {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if NEUTRAL_WITH_VALUE.contains(&a.as_str()) {
            skip_value = true;
        } else if a != "--no-cache" && !NEUTRAL_WITH_VALUE.iter().any(|f| a.starts_with(&format!("{f}="))) {
            kept.push(a.clone());
        }
    }
    kept
}

/// How two commands' configurations differ, argument by argument, for an error message.
fn difference(ours: &[String], theirs: &[String]) -> String {
    let (ours, theirs) = (configuration(ours), configuration(theirs));
    let only = |a: &[String], b: &[String]| {
        let words: Vec<String> = a.iter().filter(|x| !b.contains(x)).cloned().collect();
        if words.is_empty() {
            "nothing".to_owned()
        } else {
            format!("`{}`", words.join(" "))
        }
    };
    format!("{} here against {} there", only(&ours, &theirs), only(&theirs, &ours))
}

/// Starts shard `shard` of `step` writing to `out`: `None` when its part is already complete
/// with the same command (a rerun or a requeued task resumes by skipping it); an error when
/// another part in the folder was made for another shard count or by another command; else a
/// fresh part folder (what a killed run left of this part is removed first).
pub fn begin(step: &str, out: &Path, shard: Shard, whole: &[String]) -> Result<Option<Part>> {
    let arguments = step_arguments(step);
    let digest = whole_digest(whole);
    let dir = parts_dir(out).join(shard.part_name());
    for (path, record) in complete_parts(out)? {
        if record.step != step || record.shards != shard.count {
            bail!(
                "{} is part {}/{} of `tgc {}`; this task is shard {shard} of `tgc {step}`: parts of two runs cannot share {} (remove it, or give another --out)",
                path.display(),
                record.shard,
                record.shards,
                record.step,
                parts_dir(out).display()
            );
        }
        if configuration(&record.arguments) != configuration(&arguments) {
            bail!("{} was made by another command: {} (remove it, or give another --out)", path.display(), difference(&arguments, &record.arguments));
        }
        if record.whole != digest {
            bail!(
                "{} covered another set of {} items than this task's {} (did the data or the selection change?): remove it, or give another --out",
                path.display(),
                record.total,
                whole.len()
            );
        }
        if path == dir {
            println!("part {shard} of {step} into {} is already complete: skipped", out.display());
            return Ok(None);
        }
    }
    if dir.exists() {
        tracing::info!(part = %dir.display(), "removing an incomplete part left by an interrupted run");
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cwd = std::env::current_dir().context("reading the current folder")?;
    let record = PartRecord {
        format: FORMAT.to_owned(),
        step: step.to_owned(),
        shard: shard.index,
        shards: shard.count,
        tgc_version: env!("CARGO_PKG_VERSION").to_owned(),
        arguments,
        cwd,
        total: whole.len(),
        whole: digest,
        items: Vec::new(),
    };
    Ok(Some(Part { dir, record }))
}

impl Part {
    /// Marks the part complete: writes its `part.json` with the items it covered.
    pub fn finish(mut self, items: Vec<Item>) -> Result<()> {
        self.record.items = items;
        let path = self.dir.join("part.json");
        let text = serde_json::to_string_pretty(&self.record)?;
        tgc_data::write_atomic(&path, |w| std::io::Write::write_all(w, text.as_bytes()).map_err(|e| e.to_string()))
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "part {}/{} of {} complete: {} of {} items in {}",
            self.record.shard,
            self.record.shards,
            self.record.step,
            self.record.items.len(),
            self.record.total,
            self.dir.display()
        );
        Ok(())
    }
}

/// What this process does of the images `all` of `dataset` (the whole run's, in order): all of
/// them when there is no shard; else the shard's images and the part they are written to —
/// `None` when that part is already complete (the task has nothing to do).
pub fn take_images(step: &str, out: &Path, shard: Option<Shard>, dataset: &Dataset, all: &[usize]) -> Result<Option<(Vec<usize>, Option<Part>)>> {
    let Some(shard) = shard else { return Ok(Some((all.to_vec(), None))) };
    Ok(begin(step, out, shard, &image_names(dataset, all))?.map(|part| (tgc_data::shard_images(dataset, all, shard), Some(part))))
}

/// The digest of a run's item names, in order.
fn whole_digest(names: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for name in names {
        hash.update(name.as_bytes());
        hash.update([0]);
    }
    format!("{:x}", hash.finalize())
}

/// The names of the images `all` of `dataset` (the whole run's items), by path.
fn image_names(dataset: &Dataset, all: &[usize]) -> Vec<String> {
    all.iter().map(|&i| dataset.records()[i].path.display().to_string()).collect()
}

/// The items `indices` of `dataset` (positions in `all`, the one-process order), named by path.
pub fn image_items(dataset: &Dataset, all: &[usize], indices: &[usize]) -> Vec<Item> {
    let position: BTreeMap<usize, usize> = all.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    indices.iter().map(|&i| Item { position: position[&i], name: dataset.records()[i].path.display().to_string() }).collect()
}

/// The parts of `out`, checked: one step, one command, one shard count, every shard present,
/// no item twice, every item covered. Errors name the missing shard, the overlapping parts or
/// the differing command; nothing is written.
pub fn load_complete(out: &Path) -> Result<Vec<(PathBuf, PartRecord)>> {
    let dir = parts_dir(out);
    let parts = complete_parts(out)?;
    let Some((first_path, first)) = parts.first().cloned() else {
        bail!("{} holds no complete part (run the steps with --shard K/N and --out {} first)", dir.display(), out.display());
    };
    for (path, record) in &parts {
        if record.step != first.step || record.shards != first.shards {
            bail!(
                "{} is part {}/{} of `tgc {}` but {} is part {}/{} of `tgc {}`: parts of two runs in one folder",
                path.display(),
                record.shard,
                record.shards,
                record.step,
                first_path.display(),
                first.shard,
                first.shards,
                first.step
            );
        }
        if configuration(&record.arguments) != configuration(&first.arguments) {
            bail!("{} was made by another command than {}: {}", path.display(), first_path.display(), difference(&record.arguments, &first.arguments));
        }
        if record.total != first.total || record.whole != first.whole {
            bail!(
                "{} covers a run of {} items, {} one of {} other items: they did not see the same data",
                path.display(),
                record.total,
                first_path.display(),
                first.total
            );
        }
    }
    for k in 0..first.shards {
        if !parts.iter().any(|(_, r)| r.shard == k) {
            let shard = Shard { index: k, count: first.shards };
            bail!(
                "shard {shard} of `tgc {}` is missing: {} is not complete (rerun that task, e.g. `tgc {} --shard {shard} …`); nothing was merged",
                first.step,
                dir.join(shard.part_name()).display(),
                first.step
            );
        }
    }
    let mut owner: Vec<Option<&Path>> = vec![None; first.total];
    for (path, record) in &parts {
        for item in &record.items {
            let Some(slot) = owner.get_mut(item.position) else {
                bail!("{}: item {} at position {} lies beyond the run's {} items", path.display(), item.name, item.position, first.total);
            };
            if let Some(other) = slot {
                bail!("{} and {} both cover {}: the parts overlap; nothing was merged", other.display(), path.display(), item.name);
            }
            *slot = Some(path);
        }
    }
    if let Some(p) = owner.iter().position(Option::is_none) {
        bail!("no part covers item {p} of {}: the parts do not add up to the whole run; nothing was merged", first.total);
    }
    Ok(parts)
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))? {
            let path = entry.with_context(|| format!("listing {}", folder.display()))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap_or(&path).to_path_buf());
            }
        }
    }
    Ok(files)
}

/// Creates the folder `path` goes in.
fn make_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display())),
        None => Ok(()),
    }
}

/// Copies every output file of the parts (all but `part.json` and `part.*`) to the same
/// relative path under `dest`. A file two parts both hold must be the same bytes.
pub fn copy_outputs(parts: &[(PathBuf, PartRecord)], dest: &Path) -> Result<usize> {
    let mut copied: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for (dir, _) in parts {
        for relative in files_under(dir)? {
            if relative.to_string_lossy().starts_with("part.") {
                continue;
            }
            let path = dir.join(&relative);
            if let Some(from) = copied.get(&relative) {
                if std::fs::read(from)? != std::fs::read(&path)? {
                    bail!("{} and {} differ: two parts wrote {} differently", from.display(), path.display(), relative.display());
                }
                continue;
            }
            let target = dest.join(&relative);
            make_parent(&target)?;
            std::fs::copy(&path, &target).with_context(|| format!("copying {} to {}", path.display(), target.display()))?;
            copied.insert(relative, path);
        }
    }
    Ok(copied.len())
}

/// Builds a folder output in a temporary sibling of `out` with `build`, then moves its files
/// into `out` (each by a rename, replacing a file of the same name; other files in `out` are
/// left alone): a merge that fails writes nothing into `out`.
pub fn write_folder(out: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = out.with_file_name(format!(".{name}.merging"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = build(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    for relative in files_under(&tmp)? {
        let (from, target) = (tmp.join(&relative), out.join(&relative));
        make_parent(&target)?;
        std::fs::rename(&from, &target).with_context(|| format!("moving {} to {}", from.display(), target.display()))?;
    }
    std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))
}
