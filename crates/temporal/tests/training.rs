use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tgc_data::FeatureSet;
use tgc_data::SeqLen;
use tgc_temporal::model::{Head, LinearProbe, TemporalDnn};
use tgc_temporal::train::{train, Samples, TrainConfig};
use tgc_temporal::{run_experiment, ExperimentConfig, HeadKind, Protocol};

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

#[test]
fn one_adam_step_matches_a_hand_calculation() {
    // Two samples, D = 2, full batch, one epoch. Initial W = 0, b = 0: logits 0, softmax ½.
    // dL/dlogits = (p − onehot)/n; x1 = (1, 2) label 1, x2 = (3, −1) label 0.
    // grad W[0] = ((½)(1,2) + (−½)(3,−1))/2 ... written out below; Adam's first step moves each
    // parameter by −lr·g/(|g| + eps).
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut head = Head::Probe(LinearProbe::new(2, &mut rng).unwrap());
    if let Head::Probe(p) = &head {
        p.weight.set(&Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
        p.bias.set(&Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    }
    let samples = Samples::new(vec![1.0, 2.0, 3.0, -1.0], 2, vec![1, 0]).unwrap();
    let config = TrainConfig { max_epochs: 1, batch_size: 2, ..TrainConfig::probe() };
    train(&mut head, &samples, &samples, &config, &mut rng).unwrap();
    // Class 0 row: sample 1 (label 1) contributes +½·x1, sample 2 (label 0) −½·x2; mean over 2.
    let g_w0 = [(0.5 * 1.0 - 0.5 * 3.0) / 2.0, (0.5 * 2.0 + 0.5 * -1.0) / 2.0];
    let g_b0 = (0.5 - 0.5) / 2.0;
    let step = |g: f64| {
        if g == 0.0 {
            0.0
        } else {
            -1e-3 * g / (g.abs() + 1e-8)
        }
    };
    let Head::Probe(p) = &head else { unreachable!() };
    let w = vec2(p.weight.as_tensor());
    let b: Vec<f32> = p.bias.as_tensor().to_vec1().unwrap();
    for (j, g) in g_w0.iter().enumerate() {
        assert!((w[0][j] as f64 - step(*g)).abs() < 1e-7, "{w:?}");
        assert!((w[1][j] as f64 + step(*g)).abs() < 1e-7, "{w:?}");
    }
    assert!((b[0] as f64 - step(g_b0)).abs() < 1e-9 && b[0].abs() < 1e-9, "{b:?}");
}

#[test]
fn dnn_shapes_and_train_eval_modes() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut head = Head::Dnn(TemporalDnn::new(6, 4, 0.5, &mut rng).unwrap());
    let x = Tensor::from_vec((0..24).map(|v| v as f32 / 10.0).collect::<Vec<_>>(), (4, 6), &Device::Cpu).unwrap();
    let eval1 = vec2(&head.forward_eval(&x).unwrap());
    assert_eq!((eval1.len(), eval1[0].len()), (4, 2));
    assert_eq!(eval1, vec2(&head.forward_eval(&x).unwrap()), "eval mode is deterministic");
    // A single sample works in eval mode (running statistics) ...
    assert_eq!(head.forward_eval(&x.narrow(0, 0, 1).unwrap()).unwrap().dims(), &[1, 2]);
    // ... but not in train mode (batch statistics need two samples).
    assert!(head.forward_train(&x.narrow(0, 0, 1).unwrap(), &mut rng).is_err());
    let t1 = vec2(&head.forward_train(&x, &mut rng).unwrap());
    let t2 = vec2(&head.forward_train(&x, &mut rng).unwrap());
    assert_ne!(t1, t2, "dropout draws a new mask each call");
    // Train mode updated the running statistics, so eval output changed.
    assert_ne!(eval1, vec2(&head.forward_eval(&x).unwrap()));
    let Head::Dnn(m) = &head else { unreachable!() };
    let mean: Vec<f32> = m.running_mean.to_vec1().unwrap();
    assert!(mean.iter().any(|v| *v != 0.0));
    let state = head.state_dict().unwrap();
    let mut names: Vec<&str> = state.keys().map(|s| s.as_str()).collect();
    names.sort();
    assert_eq!(names, ["bn.bias", "bn.running_mean", "bn.running_var", "bn.weight", "fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
}

/// Features where class 1 shifts the first coordinate: 12 patients, 1–3 visits each.
fn toy_features() -> FeatureSet {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (mut features, mut pid, mut day, mut label) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in 0..12i64 {
        let y = p % 2;
        for v in 0..(1 + p % 3) {
            let noise: f32 = rand::Rng::random_range(&mut rng, -0.5..0.5);
            features.extend([y as f32 * 2.0 - 1.0 + noise, noise, 1.0, -noise]);
            pid.push(p + 1);
            day.push(v * 100);
            label.push(y);
        }
    }
    FeatureSet { features, dim: 4, patient_id: pid, day, label, metadata: HashMap::from([("backbone".into(), "resnet18".into())]) }
}

#[test]
fn experiments_learn_and_are_deterministic() {
    let features = toy_features();
    for head in [HeadKind::Probe, HeadKind::Dnn { seq_len: SeqLen::new(3).unwrap() }] {
        for protocol in [Protocol::Holdout, Protocol::Original] {
            let mut config = ExperimentConfig::new(head);
            config.iterations = 2;
            config.protocol = protocol;
            config.test_fraction = 0.34;
            config.validation_fraction = 0.34;
            config.train.lr = 0.05;
            let a = run_experiment(&features, &config, |_| Ok(())).unwrap();
            let b = run_experiment(&features, &config, |_| Ok(())).unwrap();
            assert_eq!(a.len(), 2);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.test_metrics, y.test_metrics, "{head:?} {protocol:?} not deterministic");
                assert!(x.test_metrics.accuracy >= 0.99, "{head:?} {protocol:?}: {:?}", x.test_metrics);
                if protocol == Protocol::Holdout {
                    assert!(!x.validation_patients.is_empty());
                    assert!(x.validation_patients.iter().all(|p| !x.test_patients.contains(p) && !x.train_patients.contains(p)));
                } else {
                    assert!(x.validation_patients.is_empty());
                }
                assert!(x.train_patients.iter().all(|p| !x.test_patients.contains(p)));
            }
        }
    }
}

#[test]
fn a_class_too_small_to_split_is_a_clear_error() {
    let mut features = toy_features();
    // Make every patient but one healthy-labelled patient disease.
    for (l, p) in features.label.iter_mut().zip(&features.patient_id) {
        *l = if *p == 2 { 0 } else { 1 };
    }
    let err = run_experiment(&features, &ExperimentConfig::new(HeadKind::Probe), |_| Ok(())).unwrap_err().to_string();
    assert!(err.contains("class healthy has 1 patient"), "{err}");
    features.label[0] = 3;
    let err = run_experiment(&features, &ExperimentConfig::new(HeadKind::Probe), |_| Ok(())).unwrap_err().to_string();
    assert!(err.contains("label 3"), "{err}");
    assert!(SeqLen::new(0).is_err());
}
