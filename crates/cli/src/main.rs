//! `tgc`: the command-line tool of the TemporalGradCam reproduction. Each subcommand is a thin
//! layer over a library crate; this file parses arguments and sets up logging.

mod args;
mod data_cmd;
mod explain_cmd;
mod explain_temporal_cmd;
mod extract_cmd;
mod faithfulness_cmd;
mod merge_cmd;
mod parts;
mod plot;
mod progress;
mod train_cmd;

use clap::{Parser, Subcommand};

// Models allocate a fresh buffer per operation; mimalloc reuses freed ones instead of
// returning them to the kernel and faulting them in again (measured by the benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed instead of purging it after 10 ms: a forward/backward pass
/// frees and re-allocates activation buffers of tens of MiB each time, and faulting them in
/// again cost 15–30 % of the time of batched attributions (`MIMALLOC_PURGE_DELAY=-1` measured
/// on Integrated Gradients). The resident peak is unchanged; memory is returned at exit.
fn keep_freed_memory() {
    // SAFETY: setting an option is allowed at any time; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "tgc", version, about = "Temporal Grad-CAM on OASIS_2D brain MRI slices")]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect, split and generate data sets.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Extract penultimate backbone features of every image (cached per image).
    Extract(extract_cmd::ExtractArgs),
    /// Explain predictions of a backbone with its trained head (attribution maps).
    Explain(explain_cmd::ExplainArgs),
    /// Explain the temporal model's prediction for one patient: visit importance and per-visit maps.
    ExplainTemporal(explain_temporal_cmd::ExplainTemporalArgs),
    /// Faithfulness of explanations: deletion/insertion, randomization check, region energy.
    Faithfulness(faithfulness_cmd::FaithfulnessArgs),
    /// Train the linear probe on features, over several iterations.
    Train(train_cmd::TrainProbeArgs),
    /// Train the temporal DNN on sequences of each patient's visits.
    TrainTemporal(train_cmd::TrainTemporalArgs),
    /// Combine experiments' results.csv files (from train, train-temporal) into one table.
    Results(train_cmd::ResultsArgs),
    /// Join the parts of a sharded step (`--shard K/N`, in OUT.parts/) into OUT, as one process
    /// would have written it; names a missing, overlapping or mismatched part and writes nothing.
    Merge(merge_cmd::MergeArgs),
}

fn main() -> std::process::ExitCode {
    tgc_kernels::vecmath::park_candle_pool_workers();
    tgc_kernels::denormals::flush_denormals();
    keep_freed_memory();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // With -v: the CPU and the kernels chosen for it, for anyone comparing timings.
    tracing::debug!("{}", tgc_kernels::vecmath::cpu_description());
    let result = match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Extract(args) => extract_cmd::run(args),
        Command::Explain(args) => explain_cmd::run(args),
        Command::ExplainTemporal(args) => explain_temporal_cmd::run(args),
        Command::Faithfulness(args) => faithfulness_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::TrainTemporal(args) => train_cmd::run_temporal(args),
        Command::Results(args) => train_cmd::run_results(args),
        Command::Merge(args) => merge_cmd::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
