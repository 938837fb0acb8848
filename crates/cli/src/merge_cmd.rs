//! `tgc merge OUT`: the group-level step of a sharded run. It checks the parts under
//! `OUT.parts/` ([`crate::parts::load_complete`]) and joins them into `OUT` with the step's own
//! writer, so the result is what one process running the step would have written.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};

use crate::parts;

#[derive(Args)]
pub struct MergeArgs {
    /// The `--out` the sharded step was given (its parts are in OUT.parts/), or that folder.
    pub out: PathBuf,
}

/// A step's arguments parsed again from a part's record.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct Reparse<T: Args> {
    #[command(flatten)]
    args: T,
}

fn reparse<T: Args>(record: &parts::PartRecord) -> Result<T> {
    Reparse::<T>::try_parse_from(&record.arguments)
        .map(|r| r.args)
        .map_err(|e| anyhow::anyhow!("the parts' command `tgc {} {}` no longer parses: {e}", record.step, record.arguments.join(" ")))
}

pub fn run(args: MergeArgs) -> Result<()> {
    let given = std::path::absolute(&args.out).with_context(|| format!("resolving {}", args.out.display()))?;
    let out = match given.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".parts")) {
        Some(stem) => given.with_file_name(stem),
        None => given,
    };
    let parts = parts::load_complete(&out)?;
    let record = parts[0].1.clone();
    // The command's relative paths (data, model) are relative to where it ran.
    std::env::set_current_dir(&record.cwd).with_context(|| format!("entering {}, where the parts' command ran", record.cwd.display()))?;
    tracing::info!(step = %record.step, parts = parts.len(), out = %out.display(), "merging");
    match record.step.as_str() {
        "extract" => {
            let mut step: crate::extract_cmd::ExtractArgs = reparse(&record)?;
            step.out = out;
            crate::extract_cmd::merge(step, &parts)
        }
        "explain" => {
            let mut step: crate::explain_cmd::ExplainArgs = reparse(&record)?;
            step.out = out;
            crate::explain_cmd::merge(step, &parts)
        }
        "faithfulness" => {
            let mut step: crate::faithfulness_cmd::FaithfulnessArgs = reparse(&record)?;
            step.out = out;
            crate::faithfulness_cmd::merge(step, &parts)
        }
        "explain-temporal" => {
            let mut step: crate::explain_temporal_cmd::ExplainTemporalArgs = reparse(&record)?;
            step.out = out;
            crate::explain_temporal_cmd::merge(step, &parts)
        }
        other => bail!("parts of `tgc {other}` cannot be merged"),
    }
}
