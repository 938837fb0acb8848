use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use tgc_backbones::{Backbone, BackboneKind, LoadOptions, WeightSource};
use tgc_explain::{GradCam, Hooks, InputXGradient, IntegratedGradients, IntegratedGradientsConfig, Method, Model, Saliency};
use tgc_temporal::explain_temporal::{step_importance, Visits};
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
    for method in [ig(20), Method::new(InputXGradient)] {
        let imp = step_importance(&head, &sequence, 2, 1, &method).unwrap();
        assert_eq!(imp[0], 0.0);
        assert_eq!(imp[1], 0.0);
        // The model is linear (BN at identity): importance = logit₁(x) − logit₁(0)
        // = 1.0·(1·x₀) + 1.5·(−2·x₁) at the last step = 1.0 − 0.75.
        assert!((imp[2] - 0.25).abs() < 1e-5, "{}: {imp:?}", method.name());
    }
}

#[test]
fn padded_steps_get_exactly_zero() {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let head = Head::Dnn(tgc_temporal::model::TemporalDnn::new(3 * 4, 5, 0.1, &mut rng).unwrap());
    let sequence = [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.2, 0.1];
    for method in [ig(10), Method::new(InputXGradient)] {
        let imp = step_importance(&head, &sequence, 4, 0, &method).unwrap();
        assert_eq!(imp[0], 0.0, "{}", method.name());
        assert!(imp[1] != 0.0 && imp[2] != 0.0, "{imp:?}");
    }
    assert!(step_importance(&head, &sequence, 5, 0, &Method::new(InputXGradient)).is_err());
    // A layer method has nothing to work on in a sequence model: an error that names it.
    let err = step_importance(&head, &sequence, 4, 0, &Method::new(GradCam::default())).unwrap_err().to_string();
    assert!(err.contains("gradcam") && err.contains("layer"), "{err}");
}

fn ig(steps: usize) -> Method {
    Method::new(IntegratedGradients::new(IntegratedGradientsConfig { steps, ..Default::default() }))
}

#[test]
fn visit_maps_flow_through_the_temporal_model() {
    let backbone = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 1 }, &LoadOptions::default()).unwrap();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(2);
    let head = Head::Dnn(tgc_temporal::model::TemporalDnn::new(3 * 512, 8, 0.1, &mut rng).unwrap());
    let images = Tensor::rand(0f32, 1f32, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let visits = Visits::new(&backbone, &head, &images).unwrap();
    assert_eq!(visits.seq_len(), 3);
    // Every visit's model, at its own image, gives the sequence's logits.
    let features = backbone.features(&images).unwrap();
    let seq = Tensor::cat(&[&Tensor::zeros((1, 512), DType::F32, &Device::Cpu).unwrap(), &features], 0).unwrap().reshape((1, 3 * 512)).unwrap();
    let direct: Vec<f32> = head.forward_eval(&seq).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(visits.sequence().unwrap().len(), 3 * 512);
    for j in 0..2 {
        let logits: Vec<f32> =
            visits.visit(j).unwrap().forward(&images.narrow(0, j, 1).unwrap(), &Hooks::none()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in logits.iter().zip(&direct) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "visit {j}: {logits:?} vs {direct:?}");
        }
    }
    assert!(visits.visit(2).is_err());
    let cam = visits.attribute(&Method::new(GradCam::default()), &images, 1).unwrap();
    assert_eq!(cam.attribution.dims(), &[2, 1, 64, 64]);
    assert_eq!(cam.layer_attribution.unwrap().dims(), &[2, 2, 2]);
    let at_layer3 = visits.attribute(&Method::new(GradCam::new("layer3")), &images, 1).unwrap();
    assert_eq!(at_layer3.layer_attribution.unwrap().dims(), &[2, 4, 4]);
    // Each visit's gradient is the partial derivative of the sequence's logit with respect to
    // that visit: the same as one backward pass through the whole sequence.
    let var = candle_core::Var::from_tensor(&images).unwrap();
    let f = backbone.features(var.as_tensor()).unwrap();
    let seq = Tensor::cat(&[&Tensor::zeros((1, 512), DType::F32, &Device::Cpu).unwrap(), &f], 0).unwrap().reshape((1, 3 * 512)).unwrap();
    let grads = head.forward_eval(&seq).unwrap().narrow(1, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
    let joint: Vec<f32> = grads.get(var.as_tensor()).unwrap().abs().unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let per_visit: Vec<f32> = visits.attribute(&Method::new(Saliency), &images, 1).unwrap().attribution.flatten_all().unwrap().to_vec1().unwrap();
    let scale = joint.iter().fold(0f32, |m, v| m.max(*v));
    assert!(scale > 0.0);
    for (i, (a, b)) in per_visit.iter().zip(&joint).enumerate() {
        assert!((a - b).abs() <= 1e-4 * scale, "element {i}: {a} vs {b}");
    }
}
