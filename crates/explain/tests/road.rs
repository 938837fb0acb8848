//! ROAD on a model whose answer follows by hand.

use candle_core::{Device, Tensor};
use tgc_explain::faithfulness::{road, RoadConfig};
use tgc_explain::FnModel;

#[test]
fn road_removes_the_evidence_most_relevant_first_and_keeps_it_least_relevant_first() {
    // A 12×12 image, 1 on the square S = rows 4..8 × columns 4..8, 0 elsewhere; the model's
    // class-1 logit is the sum over S, class 0's is 0.
    let (h, w) = (12, 12);
    let in_s = |p: usize| (4..8).contains(&(p / w)) && (4..8).contains(&(p % w));
    let pixels: Vec<f32> = (0..h * w).map(|p| if in_s(p) { 1.0 } else { 0.0 }).collect();
    let x = Tensor::from_vec(pixels.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(pixels.clone(), (1, h * w), &Device::Cpu).unwrap();
    let model = FnModel(|x: &Tensor| {
        let s = x.flatten_from(1)?.broadcast_mul(&mask)?.sum_keepdim(1)?;
        Tensor::cat(&[&s.zeros_like()?, &s], 1)
    });
    let config = RoadConfig { percentiles: vec![0.2, 0.5], noise: 0.0, seed: 1, batch_size: 3 };
    let out = road(&model, &x, &pixels, 1, &config).unwrap();
    // MoRF: S goes first and is imputed from its all-zero surroundings: logit 0, p = ½.
    for p in &out.morf {
        assert!((p - 0.5).abs() < 1e-5, "{out:?}");
    }
    // LeRF at 20 %: the last 29 zero-importance pixels (rows 9–11) are imputed from zeros and S
    // is untouched: logit 16.
    let sigmoid16 = 1.0 / (1.0 + (-16f32).exp());
    assert!((out.lerf[0] - sigmoid16).abs() < 1e-6, "{out:?}");
    assert!(out.morf_mean() < out.lerf_mean());
    let bad = RoadConfig { percentiles: vec![1.0], ..config };
    assert!(road(&model, &x, &pixels, 1, &bad).is_err());
}
