//! The real OASIS_2D slices inside BIDS 3-D scans: every slice put at axial index 1 of a scan
//! written with the `nifti` crate (not tgc's writer) in one of three voxel orders — the slice's
//! own LPS, RAS, and sagittal-first PIR — gives the same sessions, days, labels and confound
//! statistics as the OASIS_2D folder, the same images to the last bit, and the same ResNet-18
//! and ViT (`random:1`) features to the last bit. Runs when `TGC_OASIS_DIR` is set.

use std::path::Path;

use ndarray::{Array3, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::NiftiHeader;
use tgc_backbones::extract::{extract_features, ExtractConfig};
use tgc_backbones::{Backbone, BackboneKind, LoadOptions};
use tgc_data::{Dataset, Image, SourceOptions, Stats};

/// Writes `slices` (each an OASIS_2D slice as read, row = j, column = i of its LPS file) as a
/// 3-slice scan — the slice at axial index 1, half of it below, zeros above — stored in the
/// voxel order `codes`, with an sform that says so.
fn write_scan(path: &Path, slice: &Image, codes: &str) {
    let (ny, nx) = (slice.height(), slice.width());
    let ext = [nx, ny, 3];
    // World (RAS) voxel (x, y, z): the LPS file's voxel (i, j) = (nx-1-x, ny-1-y).
    let world = |x: usize, y: usize, z: usize| {
        let v = slice.get(ny - 1 - y, nx - 1 - x);
        [v * 0.5, v, 0.0][z]
    };
    let axes: Vec<(usize, bool)> = codes
        .chars()
        .map(|c| match c {
            'R' => (0, false),
            'L' => (0, true),
            'A' => (1, false),
            'P' => (1, true),
            'S' => (2, false),
            'I' => (2, true),
            _ => unreachable!(),
        })
        .collect();
    let dims: Vec<usize> = axes.iter().map(|&(w, _)| ext[w]).collect();
    let data = Array3::from_shape_fn((dims[0], dims[1], dims[2]).f(), |(i, j, k)| {
        let mut at = [0usize; 3];
        for (v, &(w, flip)) in axes.iter().enumerate() {
            let idx = [i, j, k][v];
            at[w] = if flip { ext[w] - 1 - idx } else { idx };
        }
        world(at[0], at[1], at[2])
    });
    let mut rows = [[0f32; 4]; 3];
    for (v, &(w, flip)) in axes.iter().enumerate() {
        rows[w][v] = if flip { -1.0 } else { 1.0 };
    }
    let header = NiftiHeader { sform_code: 1, srow_x: rows[0], srow_y: rows[1], srow_z: rows[2], pixdim: [1.0; 8], ..NiftiHeader::default() };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    WriterOptions::new(path).reference_header(&header).write_nifti(&data).unwrap();
}

/// The BIDS copy of `dataset`'s records `which`, labels in each subject's sessions.tsv.
fn bids_copy(root: &Path, dataset: &Dataset, which: &[usize]) {
    std::fs::write(root.join("dataset_description.json"), r#"{"Name": "OASIS_2D as scans", "BIDSVersion": "1.9.0"}"#).unwrap();
    let mut tables: std::collections::BTreeMap<String, String> = Default::default();
    for (n, &i) in which.iter().enumerate() {
        let r = &dataset.records()[i];
        let (sub, ses) = (format!("OAS{}", r.patient.number()), format!("d{:04}", r.day));
        let path = root.join(format!("sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_T1w.nii.gz"));
        write_scan(&path, &dataset.load_image(i).unwrap(), ["LPS", "RAS", "PIR"][n % 3]);
        tables.entry(sub).or_insert_with(|| "session_id\tdiagnosis\n".into()).push_str(&format!("ses-{ses}\t{}\n", r.label));
    }
    for (sub, table) in tables {
        std::fs::write(root.join(format!("sub-{sub}/sub-{sub}_sessions.tsv")), table).unwrap();
    }
}

fn open_bids(root: &Path) -> Dataset {
    let options =
        SourceOptions { slice: Some("axial:1".parse().unwrap()), labels: vec!["sessions:diagnosis=disease/healthy".parse().unwrap()], ..Default::default() };
    Dataset::open_with(root, &options).unwrap()
}

#[test]
fn real_slices_inside_scans_of_any_voxel_order_give_the_same_data_and_features() {
    let Some(dir) = std::env::var_os("TGC_OASIS_DIR") else {
        eprintln!("skipped: TGC_OASIS_DIR is not set (point it at the OASIS_2D folder)");
        return;
    };
    let oasis = Dataset::open(Path::new(&dir)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let all: Vec<usize> = (0..oasis.len()).collect();
    bids_copy(tmp.path(), &oasis, &all);
    let bids = open_bids(tmp.path());
    let key = |d: &Dataset| d.records().iter().map(|r| (r.patient, r.day, r.label, r.history_len)).collect::<Vec<_>>();
    assert_eq!(key(&bids), key(&oasis));
    assert_eq!(Stats::of(&bids), Stats::of(&oasis));
    for i in 0..oasis.len() {
        assert!(bids.load_image(i).unwrap() == oasis.load_image(i).unwrap(), "{}", oasis.records()[i].path.display());
    }
    // Features of a subset (every voxel order among them), both backbones, to the last bit.
    let subset: Vec<usize> = (0..oasis.len()).step_by(7).collect();
    let few = tempfile::tempdir().unwrap();
    bids_copy(few.path(), &oasis, &subset);
    let bids = open_bids(few.path());
    let entries = subset.iter().map(|&i| oasis.records()[i].clone()).map(|r| (r.path, r.patient, r.day, r.label)).collect();
    let oasis = Dataset::from_entries(Path::new(&dir), entries).unwrap();
    let config = ExtractConfig { batch_size: 8, cache_dir: None };
    for kind in [BackboneKind::ResNet18, BackboneKind::Vit] {
        let backbone = Backbone::load(kind, &"random:1".parse().unwrap(), &LoadOptions::default()).unwrap();
        let (a, _) = extract_features(&backbone, &oasis, &config, |_| {}).unwrap();
        let (b, _) = extract_features(&backbone, &bids, &config, |_| {}).unwrap();
        assert_eq!((&a.patient_id, &a.day, &a.label), (&b.patient_id, &b.day, &b.label));
        assert!(a.features.iter().zip(&b.features).all(|(x, y)| x.to_bits() == y.to_bits()), "{kind:?} features differ");
        assert_eq!(b.metadata["slice"], "axial:1");
    }
}
