//! `tgc data …`: statistics, patient splits and synthetic phantoms.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tgc_data::{manifest, phantom, read_scan, train_test_split, write_table, Dataset, Label, Layout, Side, Stats};

use crate::args::{LayoutArg, SourceArgs};
use crate::{plot, progress};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Count images, patients and visits; validate every image.
    Stats {
        /// Data folder: OASIS_2D (`disease/`, `healthy/`) or a BIDS dataset.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
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
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fraction of each class's patients on the test side.
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
        /// Write the manifest with its `split` column to this .csv or .parquet file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate a synthetic phantom data set (with ground-truth masks): OASIS_2D slices, or a
    /// BIDS cohort of 3-D scans with its tables and awkward cases (`--layout bids`).
    Synth {
        /// oasis2d (2-D slices in disease/ and healthy/) or bids (3-D scans, size × size × size/2).
        #[arg(long, value_enum, default_value = "oasis2d")]
        layout: LayoutArg,
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
        DataCommand::Stats { data, source, plot: plot_path, manifest: manifest_path } => {
            let dataset = source.open(&data)?;
            let bar = progress::bar(dataset.len() as u64, "validating images");
            let sizes = validate(&dataset, |done| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            let stats = Stats::of(&dataset);
            if phantom::is_phantom(&data) {
                println!("synthetic phantom data set (not patient data): {}", data.display());
            } else {
                println!("data set: {}", data.display());
            }
            println!("layout: {}{}", dataset.layout().as_str(), dataset.slice().map(|s| format!(", slice {s}")).unwrap_or_default());
            println!("image sizes: {}\n", sizes.join(", "));
            if dataset.layout() == Layout::Bids {
                println!("{}", dataset.report());
            }
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
        DataCommand::Split { data, source, seed, test_fraction, out } => {
            let dataset = source.open(&data)?;
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
        DataCommand::Synth { layout, out, patients, seed, size, max_visits } => {
            let config = phantom::PhantomConfig { patients, seed, size, max_visits, ..Default::default() };
            match layout {
                LayoutArg::Oasis2d => {
                    let images = phantom::generate(&out, &config).with_context(|| format!("generating phantoms in {}", out.display()))?;
                    println!("wrote {} synthetic phantom images of {patients} patients ({size}x{size}) and their masks to {}", images.len(), out.display());
                }
                LayoutArg::Bids => {
                    let images = phantom::generate_bids(&out, &config).with_context(|| format!("generating a BIDS phantom cohort in {}", out.display()))?;
                    println!(
                        "wrote a synthetic BIDS cohort of {patients} subjects, {} sessions ({size}x{size}x{} scans), its tables and masks to {}",
                        images.len(),
                        (size / 2).max(2),
                        out.display()
                    );
                }
            }
        }
    }
    Ok(())
}

/// Reads every image once (a BIDS cohort without --slice: every scan) and returns the distinct
/// sizes found, as `HxW` or `NXxNYxNZ (ORIENTATION)`.
fn validate(dataset: &Dataset, mut progress: impl FnMut(usize)) -> Result<Vec<String>> {
    let mut sizes = Vec::new();
    for index in 0..dataset.len() {
        let size = if dataset.layout() == Layout::Bids && dataset.slice().is_none() {
            let path = &dataset.records()[index].path;
            let scan = read_scan(path).with_context(|| format!("reading {}", path.display()))?;
            let [x, y, z] = scan.geometry.dims;
            format!("{x}x{y}x{z} ({})", scan.geometry.orientation.codes())
        } else {
            let image = dataset.load_image(index)?;
            format!("{}x{}", image.height(), image.width())
        };
        if !sizes.contains(&size) {
            sizes.push(size);
        }
        progress(index + 1);
    }
    Ok(sizes)
}
