//! The visit-count baselines on hand-made sequences whose answers are known.

use std::collections::HashMap;

use tgc_data::FeatureSet;
use tgc_data::SeqLen;
use tgc_temporal::{run_experiment, ExperimentConfig, HeadKind};

/// 10 healthy patients with two visits (days 0 and 100), 10 disease patients with one (day 0).
/// Features are `scale · (i + 1)` for image i, so two sets differ only in their values.
fn features(scale: f32) -> FeatureSet {
    let (mut patient_id, mut day, mut label) = (Vec::new(), Vec::new(), Vec::new());
    for p in 0..20i64 {
        let healthy = p < 10;
        for d in if healthy { &[0i64, 100][..] } else { &[0][..] } {
            patient_id.push(30_001 + p);
            day.push(*d);
            label.push(i64::from(!healthy));
        }
    }
    let dim = 4;
    let features = (0..label.len() * dim).map(|i| scale * (i as f32 + 1.0).sin()).collect();
    FeatureSet { features, dim, patient_id, day, label, metadata: HashMap::from([("backbone".to_owned(), "resnet18".to_owned())]) }
}

#[test]
fn the_earlier_visit_rule_scores_what_counting_says() {
    let set = features(1.0);
    let mut config = ExperimentConfig::new(HeadKind::EarlierVisitRule);
    config.iterations = 3;
    let results = run_experiment(&set, &config, |_| Ok(())).unwrap();
    for it in &results {
        // A healthy test patient brings a wrong first visit and a right second one; a disease
        // patient one right visit. Counted from the stored test patients alone:
        let healthy = it.test_patients.iter().filter(|&&p| p < 30_011).count() as f64;
        let disease = it.test_patients.len() as f64 - healthy;
        assert!(healthy > 0.0 && disease > 0.0);
        assert_eq!(it.test_metrics.accuracy, (healthy + disease) / (2.0 * healthy + disease));
        // Scores fall with the number of earlier visits: a disease image beats a healthy second
        // visit and ties a healthy first visit, so the AUC is (1 + ½) / 2.
        assert_eq!(it.test_metrics.auc, Some(0.75));
        assert!(it.test_metrics.loss.is_nan(), "the rule has no loss");
        // At each patient's last visit the rule is always right.
        assert_eq!(it.test_evaluation.patient.accuracy, 1.0);
        // Without an earlier visit: healthy first visits (wrong) and disease (right).
        let none = &it.test_evaluation.no_history;
        assert_eq!((none.healthy, none.disease), (healthy as usize, disease as usize));
        assert_eq!(none.metrics.accuracy, disease / (healthy + disease));
        // With one: only healthy images, all right, and no AUC.
        let some = &it.test_evaluation.with_history;
        assert_eq!((some.healthy, some.disease, some.metrics.accuracy), (healthy as usize, 0, 1.0));
        assert_eq!(some.metrics.auc, None);
        assert!(it.state.is_empty());
    }
}

#[test]
fn the_history_only_baseline_ignores_the_features() {
    let seq_len = SeqLen::new(3).unwrap();
    let mut config = ExperimentConfig::new(HeadKind::HistoryOnly { seq_len });
    config.iterations = 2;
    config.train.max_epochs = 15;
    let a = run_experiment(&features(1.0), &config, |_| Ok(())).unwrap();
    let b = run_experiment(&features(-7.0), &config, |_| Ok(())).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.test_metrics, y.test_metrics, "history-only results must not depend on feature values");
        assert_eq!(x.test_evaluation, y.test_evaluation);
    }
    // The pattern separates the classes except healthy first visits (which look like disease):
    // the DNN learns the rule, so on second visits it is right.
    for it in &a {
        assert_eq!(it.test_evaluation.with_history.metrics.accuracy, 1.0, "{:?}", it.test_evaluation);
    }
    // The real DNN does see the values.
    let dnn = ExperimentConfig { head: HeadKind::Dnn { seq_len }, ..config };
    let c = run_experiment(&features(1.0), &dnn, |_| Ok(())).unwrap();
    let d = run_experiment(&features(-7.0), &dnn, |_| Ok(())).unwrap();
    assert!(c.iter().zip(&d).any(|(x, y)| x.test_metrics != y.test_metrics));
}
