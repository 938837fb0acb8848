//! Facts about the real OASIS_2D folder; runs when `TGC_OASIS_DIR` points at it.

use tgc_data::{train_test_split, Dataset, Label, Stats};

fn oasis() -> Option<Dataset> {
    match std::env::var_os("TGC_OASIS_DIR") {
        Some(dir) => Some(Dataset::open(std::path::Path::new(&dir)).expect("TGC_OASIS_DIR opens")),
        None => {
            eprintln!("skipped: TGC_OASIS_DIR is not set (point it at the OASIS_2D folder)");
            None
        }
    }
}

#[test]
fn real_data_statistics() {
    let Some(ds) = oasis() else { return };
    let stats = Stats::of(&ds);
    assert_eq!(stats.images, 100);
    assert_eq!((stats.disease.images, stats.disease.patients), (50, 43));
    assert_eq!((stats.healthy.images, stats.healthy.patients), (50, 10));
    assert_eq!(stats.patients, 53);
    assert_eq!(stats.patients_in_both, 0);
    assert_eq!(stats.single_visit_patients(), 37);
    assert_eq!(stats.max_visits(), 7);
    assert_eq!(ds.validate().unwrap(), vec![(256, 256)]);
}

#[test]
fn real_data_values_lie_in_the_unit_interval() {
    let Some(ds) = oasis() else { return };
    let image = ds.load_image(0).unwrap();
    assert!(image.pixels().iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(image.pixels().iter().any(|&v| v > 0.1));
}

#[test]
fn real_data_split_is_stratified() {
    let Some(ds) = oasis() else { return };
    let patients = ds.patients();
    let split = train_test_split(&patients, 0.2, 7).unwrap();
    let healthy = split.test.iter().filter(|p| patients[*p] == Label::Healthy).count();
    assert_eq!((split.test.len(), healthy), (11, 2));
}
