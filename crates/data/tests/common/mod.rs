#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tgc_data::{write_nifti, Image};

/// Writes a small valid slice named after (patient, day) into `root/<class>/`.
pub fn put(root: &Path, class: &str, patient: &str, day: u32) -> PathBuf {
    let dir = root.join(class);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("affined_OAS3{patient}_MR_d{day:04}.nii.gz"));
    let pixels = (0..16).map(|i| i as f32 / 16.0).collect();
    write_nifti(&path, &Image::new(4, 4, pixels).unwrap()).unwrap();
    path
}

/// A data folder with two patients per class; returns its temporary directory.
pub fn small_dataset() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "disease", "0001", 10);
    put(dir.path(), "disease", "0001", 400);
    put(dir.path(), "disease", "0002", 5);
    put(dir.path(), "healthy", "0003", 0);
    put(dir.path(), "healthy", "0004", 100);
    put(dir.path(), "healthy", "0004", 50);
    put(dir.path(), "healthy", "0004", 900);
    dir
}
