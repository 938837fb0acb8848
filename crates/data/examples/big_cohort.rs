//! Writes a BIDS cohort of `SESSIONS` full-size scans for measuring memory (docs/DATA.md):
//! 176 × 240 × 256 int16 `.nii.gz` (sagittal-first, as many scanners store T1w), four distinct
//! scans hard-linked into every session, so that 1,000 sessions cost the disk of four. Two
//! sessions per subject, labelled in `sessions.tsv`.
//!
//! `cargo run --release -p tgc-data --example big_cohort -- OUT SESSIONS`

use std::path::{Path, PathBuf};

use ndarray::{Array3, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::NiftiHeader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, sessions] = args.as_slice() else {
        return Err("usage: big_cohort OUT SESSIONS".into());
    };
    let (out, sessions): (PathBuf, usize) = (PathBuf::from(out), sessions.parse()?);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("dataset_description.json"), r#"{"Name": "tgc memory cohort (synthetic)", "BIDSVersion": "1.9.0"}"#)?;
    let templates: Vec<PathBuf> = (0..4).map(|t| out.join(format!(".template{t}.nii.gz"))).collect();
    for (t, path) in templates.iter().enumerate() {
        write_scan(path, t as u64)?;
    }
    for s in 0..sessions {
        let (sub, day) = (format!("{:05}", s / 2), 400 * (s % 2));
        let anat = out.join(format!("sub-{sub}/ses-d{day:04}/anat"));
        std::fs::create_dir_all(&anat)?;
        let scan = anat.join(format!("sub-{sub}_ses-d{day:04}_T1w.nii.gz"));
        if !scan.exists() {
            std::fs::hard_link(&templates[s % 4], &scan)?;
        }
        let table = out.join(format!("sub-{sub}/sub-{sub}_sessions.tsv"));
        let row = format!("ses-d{day:04}\t{}\n", if (s / 2) % 2 == 0 { "AD" } else { "CN" });
        let text = if s % 2 == 0 { format!("session_id\tdiagnosis\n{row}") } else { std::fs::read_to_string(&table)? + &row };
        std::fs::write(table, text)?;
    }
    println!("{sessions} sessions of 176x240x256 int16 scans in {}", out.display());
    Ok(())
}

/// A head-like int16 scan: an ellipsoid of tissue with noise, stored PIR.
fn write_scan(path: &Path, seed: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (nx, ny, nz) = (176usize, 240usize, 256usize);
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % 64) as i16
    };
    // Voxel (i, j, k): i runs anterior → posterior, j superior → inferior, k left → right.
    let data = Array3::from_shape_fn((ny, nz, nx).f(), |(i, j, k)| {
        let (y, z, x) = (i as f32 / ny as f32 - 0.5, j as f32 / nz as f32 - 0.5, k as f32 / nx as f32 - 0.5);
        let r = (x * x / 0.16 + y * y / 0.2 + z * z / 0.18).sqrt();
        if r < 1.0 {
            600 + (200.0 * (1.0 - r)) as i16 + noise()
        } else {
            noise() / 8
        }
    });
    let header = NiftiHeader {
        sform_code: 1,
        srow_x: [0.0, 0.0, 1.0, -88.0],
        srow_y: [-1.0, 0.0, 0.0, 120.0],
        srow_z: [0.0, -1.0, 0.0, 128.0],
        pixdim: [1.0; 8],
        ..NiftiHeader::default()
    };
    WriterOptions::new(path).reference_header(&header).write_nifti(&data)?;
    Ok(())
}
