//! `tgc data …`: statistics, patient splits and synthetic phantoms.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tgc_data::{manifest, phantom, train_test_split, write_table, Dataset, Label, Side, Stats};

use crate::plot;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Count images, patients and visits; validate every image.
    Stats {
        /// Data folder holding `disease/` and `healthy/`.
        #[arg(long)]
        data: PathBuf,
        /// Write the history-length histogram to this PNG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Write the manifest (one row per image) to this .csv or .parquet file.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Split patients into train and test, stratified by label.
    Split {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fraction of each class's patients on the test side.
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
        /// Write the manifest with its `split` column to this .csv or .parquet file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate a synthetic phantom data set (with ground-truth masks) in the OASIS_2D layout.
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        patients: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Side of the square images.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Each patient gets 1..=N visits.
        #[arg(long, default_value_t = 4)]
        max_visits: usize,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Stats { data, plot: plot_path, manifest: manifest_path } => {
            let dataset = open(&data)?;
            let sizes = dataset.validate()?;
            let stats = Stats::of(&dataset);
            if phantom::is_phantom(&data) {
                println!("synthetic phantom data set (not patient data): {}", data.display());
            } else {
                println!("data set: {}", data.display());
            }
            let sizes: Vec<String> = sizes.iter().map(|(h, w)| format!("{h}x{w}")).collect();
            println!("image sizes: {}\n", sizes.join(", "));
            print!("{stats}");
            if let Some(path) = plot_path {
                plot::history_histogram(&stats, &path)?;
                println!("\nhistogram written to {}", path.display());
            }
            if let Some(path) = manifest_path {
                write_table(&manifest(&dataset, None)?, &path)?;
                println!("manifest written to {}", path.display());
            }
        }
        DataCommand::Split { data, seed, test_fraction, out } => {
            let dataset = open(&data)?;
            let split = train_test_split(&dataset.patients(), test_fraction, seed)?;
            for side in [Side::Train, Side::Test] {
                let indices = split.indices(&dataset, side);
                let count = |label: Label| indices.iter().filter(|&&i| dataset.records()[i].label == label).count();
                let patients = match side {
                    Side::Train => &split.train,
                    Side::Test => &split.test,
                };
                println!(
                    "{}: {} patients, {} images ({} disease, {} healthy)",
                    side.as_str(),
                    patients.len(),
                    indices.len(),
                    count(Label::Disease),
                    count(Label::Healthy)
                );
                let names: Vec<String> = patients.iter().map(|p| p.to_string()).collect();
                println!("  {}", names.join(" "));
            }
            if let Some(path) = out {
                write_table(&manifest(&dataset, Some(&split))?, &path)?;
                println!("manifest written to {}", path.display());
            }
        }
        DataCommand::Synth { out, patients, seed, size, max_visits } => {
            let config = phantom::PhantomConfig { patients, seed, size, max_visits, ..Default::default() };
            let images = phantom::generate(&out, &config).with_context(|| format!("generating phantoms in {}", out.display()))?;
            println!("wrote {} synthetic phantom images of {patients} patients ({size}x{size}) and their masks to {}", images.len(), out.display());
        }
    }
    Ok(())
}

fn open(data: &std::path::Path) -> Result<Dataset> {
    Dataset::open(data).with_context(|| format!("reading data folder {}", data.display()))
}
