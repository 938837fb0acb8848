use std::collections::{BTreeMap, BTreeSet};

use tgc_data::{stratified_k_fold, train_test_split, DataError, Label, PatientId};

/// 43 disease and 10 healthy patients, like OASIS_2D.
fn oasis_like() -> BTreeMap<PatientId, Label> {
    (0..53)
        .map(|i| {
            let label = if i < 43 { Label::Disease } else { Label::Healthy };
            (PatientId::new(30_001 + i as u64 * 3), label)
        })
        .collect()
}

fn count(set: &BTreeSet<PatientId>, patients: &BTreeMap<PatientId, Label>, label: Label) -> usize {
    set.iter().filter(|p| patients[*p] == label).count()
}

#[test]
fn split_is_disjoint_complete_stratified_and_sized() {
    let patients = oasis_like();
    let split = train_test_split(&patients, 0.2, 7).unwrap();
    assert!(split.train.is_disjoint(&split.test));
    assert_eq!(split.train.len() + split.test.len(), 53);
    // round(0.2 * 43) = 9 disease, round(0.2 * 10) = 2 healthy.
    assert_eq!(count(&split.test, &patients, Label::Disease), 9);
    assert_eq!(count(&split.test, &patients, Label::Healthy), 2);
    assert_eq!(count(&split.train, &patients, Label::Disease), 34);
    assert_eq!(count(&split.train, &patients, Label::Healthy), 8);
}

#[test]
fn split_is_deterministic_per_seed() {
    let patients = oasis_like();
    let a = train_test_split(&patients, 0.2, 11).unwrap();
    assert_eq!(a, train_test_split(&patients, 0.2, 11).unwrap());
    let others: Vec<_> = (12..16).map(|s| train_test_split(&patients, 0.2, s).unwrap()).collect();
    assert!(others.iter().any(|b| b.test != a.test), "different seeds should give different splits");
}

#[test]
fn tiny_classes_keep_one_patient_on_each_side() {
    let patients: BTreeMap<_, _> = [("0001", Label::Disease), ("0002", Label::Disease), ("0003", Label::Healthy), ("0004", Label::Healthy)]
        .into_iter()
        .map(|(p, l)| (PatientId::parse(p).unwrap(), l))
        .collect();
    let split = train_test_split(&patients, 0.05, 0).unwrap();
    assert_eq!(split.test.len(), 2);
    assert_eq!(count(&split.test, &patients, Label::Healthy), 1);
}

#[test]
fn split_errors() {
    let patients = oasis_like();
    for bad in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(matches!(train_test_split(&patients, bad, 0), Err(DataError::InvalidArgument(_))));
    }
    let one_healthy: BTreeMap<_, _> = oasis_like().into_iter().filter(|(p, l)| *l == Label::Disease || p.number() == 30130).collect();
    let err = train_test_split(&one_healthy, 0.2, 0).unwrap_err();
    assert!(err.to_string().contains("class healthy has 1 patient"), "{err}");
}

#[test]
fn k_fold_partitions_patients_with_both_classes_in_every_fold() {
    let patients = oasis_like();
    let folds = stratified_k_fold(&patients, 5, 3).unwrap();
    assert_eq!(folds.len(), 5);
    let mut seen = BTreeSet::new();
    for fold in &folds {
        assert!(fold.train.is_disjoint(&fold.test));
        assert_eq!(fold.train.len() + fold.test.len(), 53);
        assert_eq!(count(&fold.test, &patients, Label::Healthy), 2);
        let disease = count(&fold.test, &patients, Label::Disease);
        assert!((8..=9).contains(&disease), "{disease}");
        assert!((10..=11).contains(&fold.test.len()));
        for p in &fold.test {
            assert!(seen.insert(p.clone()), "{p} tested twice");
        }
    }
    assert_eq!(seen.len(), 53);
    assert_eq!(folds, stratified_k_fold(&patients, 5, 3).unwrap());
}

#[test]
fn k_fold_errors() {
    let patients = oasis_like();
    assert!(stratified_k_fold(&patients, 1, 0).is_err());
    let err = stratified_k_fold(&patients, 11, 0).unwrap_err();
    assert!(err.to_string().contains("class healthy has 10"), "{err}");
}
