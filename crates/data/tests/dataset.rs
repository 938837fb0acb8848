mod common;

use common::{put, small_dataset};
use tgc_data::{manifest, write_table, Dataset, Label, Stats};

#[test]
fn scans_records_sorted_with_history_lengths() {
    let dir = small_dataset();
    let ds = Dataset::open(dir.path()).unwrap();
    let got: Vec<(String, u32, Label, usize)> = ds.records().iter().map(|r| (r.patient.to_string(), r.day, r.label, r.history_len)).collect();
    assert_eq!(
        got,
        vec![
            ("OAS30001".into(), 10, Label::Disease, 1),
            ("OAS30001".into(), 400, Label::Disease, 2),
            ("OAS30002".into(), 5, Label::Disease, 1),
            ("OAS30003".into(), 0, Label::Healthy, 1),
            ("OAS30004".into(), 50, Label::Healthy, 1),
            ("OAS30004".into(), 100, Label::Healthy, 2),
            ("OAS30004".into(), 900, Label::Healthy, 3),
        ]
    );
}

#[test]
fn stats_of_a_hand_made_set() {
    let dir = small_dataset();
    let stats = Stats::of(&Dataset::open(dir.path()).unwrap());
    assert_eq!(stats.images, 7);
    assert_eq!(stats.patients, 4);
    assert_eq!((stats.disease.images, stats.disease.patients), (3, 2));
    assert_eq!((stats.healthy.images, stats.healthy.patients), (4, 2));
    assert_eq!(stats.single_visit_patients(), 2);
    assert_eq!(stats.max_visits(), 3);
    assert_eq!(stats.history_len.clone().into_iter().collect::<Vec<_>>(), vec![(1, 4), (2, 2), (3, 1)]);
    assert_eq!(stats.patients_in_both, 0);
    use Label::{Disease, Healthy};
    assert_eq!(
        stats.history_len_by_label.clone().into_iter().collect::<Vec<_>>(),
        vec![((Healthy, 1), 2), ((Healthy, 2), 1), ((Healthy, 3), 1), ((Disease, 1), 2), ((Disease, 2), 1)]
    );
    // Healthy iff an earlier visit: right for 0001 d10, 0002, 0004 d100 and d900; wrong for
    // 0001 d400 (disease with history), 0003 and 0004 d50 (healthy without).
    assert_eq!(stats.earlier_visit_rule_correct, 4);
    assert!((stats.earlier_visit_rule_accuracy() - 4.0 / 7.0).abs() < 1e-12);
}

#[test]
fn skips_files_that_are_not_nifti() {
    let dir = small_dataset();
    std::fs::write(dir.path().join("disease/README.txt"), "notes").unwrap();
    std::fs::create_dir(dir.path().join("healthy/extra")).unwrap();
    assert_eq!(Dataset::open(dir.path()).unwrap().len(), 7);
}

#[test]
fn manifest_has_the_documented_columns_and_exports() {
    let dir = small_dataset();
    let ds = Dataset::open(dir.path()).unwrap();
    let split = tgc_data::train_test_split(&ds.patients(), 0.5, 3).unwrap();
    let frame = manifest(&ds, Some(&split)).unwrap();
    let names: Vec<&str> = frame.get_column_names().iter().map(|n| n.as_str()).collect();
    assert_eq!(names, ["path", "patient_id", "day", "label", "history_len", "split"]);
    assert_eq!(frame.height(), 7);

    let csv = dir.path().join("manifest.csv");
    write_table(&frame, &csv).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("path,patient_id,day,label,history_len,split"));
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    // The study's integer patient id.
    assert_eq!(&first[1..5], ["30001", "10", "1", "1"]);
    let side = split.side_of(&ds.records()[0].patient).unwrap().as_str();
    assert_eq!(first[5], side);
    assert_eq!(text.lines().count(), 8);

    let parquet = dir.path().join("manifest.parquet");
    write_table(&frame, &parquet).unwrap();
    assert_eq!(&std::fs::read(&parquet).unwrap()[..4], b"PAR1");

    let err = write_table(&frame, &dir.path().join("manifest.xlsx")).unwrap_err();
    assert!(err.to_string().contains("manifest.xlsx"), "{err}");
}

#[test]
fn a_patient_in_both_folders_is_counted_and_labelled_by_the_latest_visit() {
    let dir = small_dataset();
    put(dir.path(), "healthy", "0001", 800);
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(Stats::of(&ds).patients_in_both, 1);
    assert_eq!(ds.patients()[&tgc_data::PatientId::new(30001)], Label::Healthy);
}
