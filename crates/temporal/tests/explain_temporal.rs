use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use tgc_backbones::{Backbone, BackboneKind, LoadOptions, WeightSource};
use tgc_explain::{GradCam, Saliency};
use tgc_temporal::explain_temporal::{step_importance, StepMethod, VisitSequence};
use tgc_temporal::model::Head;

/// A DNN whose output depends only on the last of 3 steps of dimension 2: fc1 reads the last
/// step only, BatchNorm at identity.
fn last_step_only_dnn() -> Head {
    let cpu = Device::Cpu;
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &cpu).unwrap();
    let mut fc1 = vec![0f32; 2 * 6];
    fc1[4] = 1.0; // hidden 0 ← step 2, feature 0
    fc1[6 + 5] = -2.0; // hidden 1 ← step 2, feature 1
    let state = HashMap::from([
        ("fc1.weight".to_string(), t(fc1, &[2, 6])),
        ("fc1.bias".to_string(), t(vec![0.0, 0.0], &[2])),
        ("bn.weight".to_string(), t(vec![1.0, 1.0], &[2])),
        ("bn.bias".to_string(), t(vec![0.0, 0.0], &[2])),
        ("bn.running_mean".to_string(), t(vec![0.0, 0.0], &[2])),
        ("bn.running_var".to_string(), t(vec![1.0, 1.0], &[2])),
        ("fc2.weight".to_string(), t(vec![0.5, 0.0, 1.0, 1.5], &[2, 2])),
        ("fc2.bias".to_string(), t(vec![0.0, 0.0], &[2])),
    ]);
    Head::from_state_dict(&state).unwrap()
}

#[test]
fn only_the_last_visit_matters_for_a_last_visit_model() {
    let head = last_step_only_dnn();
    assert_eq!(head.input_width().unwrap(), 6);
    let sequence = [0.3, -1.0, 2.0, 0.5, 1.0, 0.25];
    for method in [StepMethod::IntegratedGradients { steps: 20 }, StepMethod::InputXGradient] {
        let imp = step_importance(&head, &sequence, 2, 1, method).unwrap();
        assert_eq!(imp[0], 0.0);
        assert_eq!(imp[1], 0.0);
        // The model is linear (BN at identity): importance = logit₁(x) − logit₁(0)
        // = 1.0·(1·x₀) + 1.5·(−2·x₁) at the last step = 1.0 − 0.75.
        assert!((imp[2] - 0.25).abs() < 1e-5, "{method:?}: {imp:?}");
    }
}

#[test]
fn padded_steps_get_exactly_zero() {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let head = Head::Dnn(tgc_temporal::model::TemporalDnn::new(3 * 4, 5, 0.1, &mut rng).unwrap());
    let sequence = [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.2, 0.1];
    for method in [StepMethod::IntegratedGradients { steps: 10 }, StepMethod::InputXGradient] {
        let imp = step_importance(&head, &sequence, 4, 0, method).unwrap();
        assert_eq!(imp[0], 0.0, "{method:?}");
        assert!(imp[1] != 0.0 && imp[2] != 0.0, "{imp:?}");
    }
    assert!(step_importance(&head, &sequence, 5, 0, StepMethod::InputXGradient).is_err());
}

#[test]
fn visit_grad_cam_flows_through_the_temporal_model() {
    let backbone = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 1 }, &LoadOptions::default()).unwrap();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2);
    let head = Head::Dnn(tgc_temporal::model::TemporalDnn::new(3 * 512, 8, 0.1, &mut rng).unwrap());
    let model = VisitSequence { backbone: &backbone, head: &head, seq_len: 3 };
    let visits = Tensor::rand(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu).unwrap();
    // The model's rows sum to the sequence's logits.
    let logits = tgc_explain::Explainable::forward(&model, &visits, tgc_explain::ReluMode::Standard).unwrap();
    let features = backbone.features(&visits).unwrap();
    let seq = Tensor::cat(&[&Tensor::zeros((1, 512), DType::F32, &Device::Cpu).unwrap(), &features], 0).unwrap().reshape((1, 3 * 512)).unwrap();
    let direct: Vec<f32> = head.forward_eval(&seq).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let summed: Vec<f32> = logits.sum(0).unwrap().to_vec1().unwrap();
    for (a, b) in summed.iter().zip(&direct) {
        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{summed:?} vs {direct:?}");
    }
    let cam = GradCam.attribute(&model, &visits, &[1, 1]).unwrap();
    assert_eq!(cam.attribution.dims(), &[2, 1, 64, 64]);
    assert_eq!(cam.layer_attribution.unwrap().dims(), &[2, 2, 2]);
    // Each visit's gradient is its own: the input gradient of visit 0 is nonzero.
    let g = Saliency.attribute(&model, &visits, &[1, 1]).unwrap().attribution;
    let per_visit: Vec<f32> = g.sum((1, 2, 3)).unwrap().to_vec1().unwrap();
    assert!(per_visit.iter().all(|&s| s > 0.0), "{per_visit:?}");
}
