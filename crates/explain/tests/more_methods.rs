//! The CAM family, Occlusion, Feature Ablation and NoiseTunnel on toy models whose answers
//! follow by hand.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{pseudo, v, Toy};
use tgc_explain::*;

fn image(seed: u64, b: usize) -> Tensor {
    (pseudo(&[b, 1, 6, 6], seed) * 4.0).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn gradient_cams_follow_their_formulas() {
    // ∂y_t/∂A_k = fc[t, k] / 36 everywhere: every weight can be written by hand.
    let (k, t) = (4, 1);
    let toy = Toy::with_channels(k, 3, true);
    let x = image(7, 1);
    let a = toy.activation(&x);
    let fc = v(&toy.fc_w);
    let g: Vec<f32> = (0..k).map(|c| fc[t * k + c] / 36.0).collect();
    let weighted = |w: &[f32]| -> Vec<f32> { (0..36).map(|p| (0..k).map(|c| w[c] * a[c * 36 + p]).sum()).collect() };
    let sum_a: Vec<f32> = (0..k).map(|c| a[c * 36..(c + 1) * 36].iter().sum()).collect();
    let map = |kind: CamKind| v(&Cam::new(kind).layer_map(&toy, &x, &[t]).unwrap().0);
    // HiResCAM with a constant gradient per channel is Grad-CAM's map.
    close(&map(CamKind::HiResCam), &weighted(&g), 1e-5, "HiResCAM");
    close(&map(CamKind::LayerCam), &weighted(&g.iter().map(|g| g.max(0.0)).collect::<Vec<_>>()), 1e-5, "LayerCAM");
    // XGrad-CAM: Σ_ij G·A / (Σ_ij A + 1e-7) = g_k · ΣA_k / (ΣA_k + 1e-7).
    let xgrad: Vec<f32> = (0..k).map(|c| g[c] * sum_a[c] / (sum_a[c] + 1e-7)).collect();
    close(&map(CamKind::XGradCam), &weighted(&xgrad), 1e-5, "XGrad-CAM");
    let plus: Vec<f32> = (0..k)
        .map(|c| {
            let gc = g[c];
            let alpha = if gc != 0.0 { gc * gc / (2.0 * gc * gc + sum_a[c] * gc * gc * gc + 1e-6) } else { 0.0 };
            36.0 * gc.max(0.0) * alpha
        })
        .collect();
    close(&map(CamKind::GradCamPlusPlus), &weighted(&plus), 1e-4, "Grad-CAM++");
    // The four differ from each other on this toy (the test would not notice a mix-up otherwise).
    assert_ne!(map(CamKind::HiResCam), map(CamKind::LayerCam));
    assert_ne!(map(CamKind::XGradCam), map(CamKind::GradCamPlusPlus));
    // attribution = ReLU(map) up-sampled (same size here).
    let out = Cam::new(CamKind::LayerCam).attribute(&toy, &x, &[t]).unwrap();
    close(&v(&out.attribution), &map(CamKind::LayerCam).iter().map(|m| m.max(0.0)).collect::<Vec<_>>(), 1e-6, "attribution");
    assert_eq!(out.attribution.dims(), &[1, 1, 6, 6]);
}

#[test]
fn ablation_cam_weights_are_the_relative_drop_of_the_score() {
    let (k, t) = (3, 0);
    let toy = Toy::with_channels(k, 11, true);
    let x = image(12, 1);
    let a = toy.activation(&x);
    let fc = v(&toy.fc_w);
    let logits = v(&toy.forward(&x, &Hooks::none()).unwrap());
    let orig = logits[t];
    // Post-ReLU activations have min 0, so a channel is ablated to 0: the score drops by
    // fc[t, k]·mean(A_k).
    assert_eq!(a.iter().copied().fold(f32::INFINITY, f32::min), 0.0);
    let w: Vec<f32> = (0..k).map(|c| fc[t * k + c] * a[c * 36..(c + 1) * 36].iter().sum::<f32>() / 36.0 / orig).collect();
    let want: Vec<f32> = (0..36).map(|p| (0..k).map(|c| w[c] * a[c * 36 + p]).sum()).collect();
    for batch_size in [1, 2, 32] {
        let got = v(&Cam { kind: CamKind::AblationCam, layer: None, batch_size }.layer_map(&toy, &x, &[t]).unwrap().0);
        close(&got, &want, 1e-4, "Ablation-CAM");
    }
    // In a batch of two, each image's map is its own.
    let two = Tensor::cat(&[&x, &image(13, 1)], 0).unwrap();
    let both = v(&Cam::new(CamKind::AblationCam).layer_map(&toy, &two, &[t, 1]).unwrap().0);
    close(&both[..36], &want, 1e-4, "Ablation-CAM in a batch");
}

#[test]
fn score_cam_with_one_channel_is_that_channel_and_eigen_cams_project() {
    let toy = Toy::with_channels(1, 21, true);
    let x = image(22, 1);
    let a = toy.activation(&x);
    // One channel: softmax of one score is 1.
    close(&v(&Cam::new(CamKind::ScoreCam).layer_map(&toy, &x, &[1]).unwrap().0), &a, 1e-6, "Score-CAM");
    // Several channels: the weights are a softmax (positive, summing to 1), so the map is a
    // convex combination of the channels.
    let toy = Toy::with_channels(3, 23, true);
    let a = toy.activation(&x);
    let map = v(&Cam::new(CamKind::ScoreCam).layer_map(&toy, &x, &[1]).unwrap().0);
    // The layer has the input's size, so the up-sampling is the identity: each channel,
    // min-max scaled, masks the input; the weights are the softmax of the masked scores.
    let xs = v(&x);
    let scores: Vec<f32> = (0..3)
        .map(|c| {
            let ch = &a[c * 36..(c + 1) * 36];
            let (lo, hi) = ch.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let masked: Vec<f32> = xs.iter().zip(ch).map(|(x, m)| x * (m - lo) / (hi - lo + 1e-8)).collect();
            v(&toy.forward(&Tensor::from_vec(masked, (1, 1, 6, 6), &Device::Cpu).unwrap(), &Hooks::none()).unwrap())[1]
        })
        .collect();
    let z: f32 = scores.iter().map(|s| s.exp()).sum();
    let want: Vec<f32> = (0..36).map(|p| (0..3).map(|c| scores[c].exp() / z * a[c * 36 + p]).sum()).collect();
    close(&map, &want, 1e-5, "Score-CAM");
    for p in 0..36 {
        let lo = (0..3).map(|c| a[c * 36 + p]).fold(f32::INFINITY, f32::min);
        let hi = (0..3).map(|c| a[c * 36 + p]).fold(f32::NEG_INFINITY, f32::max);
        assert!(map[p] >= lo - 1e-5 && map[p] <= hi + 1e-5);
    }
    // EigenCAM of a rank-one activation (every channel a multiple of one plane) is that plane,
    // centred, times the norm of the multiples.
    let multiples = Tensor::new(&[1f32, 2.0, -2.0], &Device::Cpu).unwrap().reshape((3, 1, 1, 1)).unwrap();
    let toy = Toy {
        conv_w: Tensor::ones((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap().broadcast_mul(&multiples).unwrap(),
        conv_b: Tensor::zeros((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap(),
        ..Toy::with_channels(3, 24, false)
    };
    let a = toy.activation(&x);
    let plane: Vec<f32> = a[..36].to_vec();
    let mean = plane.iter().sum::<f32>() / 36.0;
    let eigen = v(&Cam::new(CamKind::EigenCam).layer_map(&toy, &x, &[0]).unwrap().0);
    let sign = if eigen.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m }) > 0.0 { 1.0 } else { -1.0 };
    let want: Vec<f32> = plane.iter().map(|p| (p - mean) * 3.0).collect();
    let want_sign = if want.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m }) > 0.0 { 1.0 } else { -1.0 };
    close(&eigen.iter().map(|e| e * sign).collect::<Vec<_>>(), &want.iter().map(|w| w * want_sign).collect::<Vec<_>>(), 1e-4, "EigenCAM");
}

#[test]
fn occlusion_and_feature_ablation_of_a_linear_model_are_input_times_gradient() {
    // Without ReLU the toy is linear in x: removing a set of pixels drops the logit by exactly
    // their Input×Gradient.
    let toy = Toy::with_channels(3, 31, false);
    let x = image(32, 2);
    let ixg = v(&InputXGradient.attribute(&toy, &x, &[1, 0]).unwrap().attribution);
    let one = Occlusion { window: (1, 1), stride: (1, 1), baseline: 0.0, batch_size: 7 };
    close(&v(&one.attribute(&toy, &x, &[1, 0]).unwrap().attribution), &ixg, 1e-4, "occlusion 1×1");
    let pixels = FeatureAblation { mask: FeatureMask::Grid(1), baseline: 0.0, batch_size: 5 };
    close(&v(&pixels.attribute(&toy, &x, &[1, 0]).unwrap().attribution), &ixg, 1e-4, "feature ablation 1×1");
    // A 2×2 window moved by 2 (no overlap): each element gets its window's summed IxG; moved by
    // 1, the average of the windows that cover it.
    let sum_over = |i: usize, y0: usize, x0: usize, s: usize| -> f32 {
        (y0..y0 + s).flat_map(|y| (x0..x0 + s).map(move |xx| (y, xx))).map(|(y, xx)| ixg[i * 36 + y * 6 + xx]).sum()
    };
    let tiles = Occlusion { window: (2, 2), stride: (2, 2), baseline: 0.0, batch_size: 4 }.attribute(&toy, &x, &[1, 0]).unwrap();
    let blocks = FeatureAblation { mask: FeatureMask::Grid(2), baseline: 0.0, batch_size: 4 }.attribute(&toy, &x, &[1, 0]).unwrap();
    let sliding = v(&Occlusion { window: (2, 2), stride: (1, 1), baseline: 0.0, batch_size: 16 }.attribute(&toy, &x, &[1, 0]).unwrap().attribution);
    for i in 0..2 {
        for y in 0..6 {
            for xx in 0..6 {
                let want = sum_over(i, y / 2 * 2, xx / 2 * 2, 2);
                let at = i * 36 + y * 6 + xx;
                assert!((v(&tiles.attribution)[at] - want).abs() < 1e-4);
                assert!((v(&blocks.attribution)[at] - want).abs() < 1e-4);
                let covering: Vec<(usize, usize)> =
                    (y.saturating_sub(1)..=y.min(4)).flat_map(|y0| (xx.saturating_sub(1)..=xx.min(4)).map(move |x0| (y0, x0))).collect();
                let avg = covering.iter().map(|&(y0, x0)| sum_over(i, y0, x0, 2)).sum::<f32>() / covering.len() as f32;
                assert!((sliding[at] - avg).abs() < 1e-4, "sliding [{i}, {y}, {xx}]");
            }
        }
    }
}

#[test]
fn noise_tunnel_combines_noisy_maps() {
    let toy = Toy::with_channels(3, 41, false);
    let x = image(42, 2);
    let targets = [1, 0];
    let saliency = v(&Saliency.attribute(&toy, &x, &targets).unwrap().attribution);
    let tunnel = |kind, stdevs, inner: Method| NoiseTunnel { inner, kind, samples: 6, stdevs, seed: 3 }.attribute(&toy, &x, &targets).unwrap().attribution;
    // A linear model's gradient does not depend on the point: every noisy saliency map is the
    // same, so SmoothGrad is the map, SmoothGrad² its square and VarGrad 0.
    close(&v(&tunnel(NoiseTunnelType::SmoothGrad, 0.5, Method::new(Saliency))), &saliency, 1e-5, "SmoothGrad");
    close(&v(&tunnel(NoiseTunnelType::SmoothGradSq, 0.5, Method::new(Saliency))), &saliency.iter().map(|s| s * s).collect::<Vec<_>>(), 1e-5, "SmoothGrad²");
    assert!(v(&tunnel(NoiseTunnelType::VarGrad, 0.5, Method::new(Saliency))).iter().all(|v| v.abs() < 1e-9));
    // Input×Gradient does change with the noise: VarGrad is positive and equals E[(ε·g)²] − (E[ε·g])².
    let var = v(&tunnel(NoiseTunnelType::VarGrad, 0.5, Method::new(InputXGradient)));
    assert!(var.iter().any(|v| *v > 1e-6));
    // Seeded, and each image's map is the same alone as in the batch.
    let again = v(&tunnel(NoiseTunnelType::VarGrad, 0.5, Method::new(InputXGradient)));
    assert_eq!(var, again);
    let alone = NoiseTunnel { inner: Method::new(InputXGradient), kind: NoiseTunnelType::VarGrad, samples: 6, stdevs: 0.5, seed: 3 }
        .attribute(&toy, &x.narrow(0, 1, 1).unwrap(), &[0])
        .unwrap();
    close(&v(&alone.attribution), &var[36..], 1e-5, "batch independence");
    let name = Method::new(NoiseTunnel::new(Method::new(Saliency))).name();
    assert_eq!(name, "saliency-smoothgrad");
}

/// The toy, with a per-image context made before the layer and used after it (as the ViT's
/// residual stream is); `carry` says whether it goes through `Hooks::carry`.
struct BatchBound {
    toy: Toy,
    carry: bool,
}

impl Model for BatchBound {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let context = input.mean((1, 2, 3))?.unsqueeze(1)?;
        let pre = input.conv2d(&self.toy.conv_w, 1, 1, 1, 1)?.broadcast_add(&self.toy.conv_b)?;
        let a = hooks.layer("conv", &hooks.relu(&pre)?)?;
        let context = if self.carry { hooks.carry(&context)? } else { context };
        // Without the carry, a replaced activation of another batch size cannot use it.
        self.toy.from_layer(&a)?.broadcast_add(&context)
    }

    fn layers(&self) -> Vec<String> {
        vec!["conv".into()]
    }
}

#[test]
fn ablation_cam_runs_with_a_context_bound_to_the_batch() {
    let toy = Toy::with_channels(3, 51, true);
    let x = image(52, 1);
    let plain = v(&Cam::new(CamKind::AblationCam).layer_map(&toy, &x, &[1]).unwrap().0);
    // The context's term shifts every score by the same amount: the drops are the same, the
    // original score differs, so the map is the plain one scaled by y_plain / y_bound.
    for carry in [false, true] {
        let bound = BatchBound { toy: Toy::with_channels(3, 51, true), carry };
        let got = v(&Cam::new(CamKind::AblationCam).layer_map(&bound, &x, &[1]).unwrap().0);
        let y_plain = v(&toy.forward(&x, &Hooks::none()).unwrap())[1];
        let y_bound = v(&bound.forward(&x, &Hooks::none()).unwrap())[1];
        close(&got, &plain.iter().map(|p| p * y_plain / y_bound).collect::<Vec<_>>(), 1e-4, &format!("Ablation-CAM, batch-bound context (carried: {carry})"));
    }
}
