//! Every method on a toy CNN whose answers can be computed by hand.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{v, Toy};
use tgc_explain::*;

fn input(seed: u64, b: usize) -> Tensor {
    let toy = Toy::new(seed, false);
    // Reuse the toy's generator for an input [b, 1, 6, 6].
    let w = v(&toy.conv_w);
    let vals: Vec<f32> = (0..b * 36).map(|i| w[i % w.len()] * 3.0 + (i as f32 * 0.37).sin()).collect();
    Tensor::from_vec(vals, (b, 1, 6, 6), &Device::Cpu).unwrap()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
    }
}

#[test]
fn grad_cam_by_hand() {
    let toy = Toy::new(1, true);
    let x = input(2, 1);
    for target in [0, 1] {
        let out = GradCam::default().attribute(&toy, &x, &[target]).unwrap();
        // ∂y/∂A_k(i, j) = fc_w[target, k] / 36, so α_k = fc_w[target, k] / 36.
        let a = toy.forward_to_layer(&x, &Hooks::none()).unwrap();
        let fc = v(&toy.fc_w);
        let av = v(&a);
        let mut expected = vec![0f32; 36];
        for k in 0..4 {
            for p in 0..36 {
                expected[p] += fc[target * 4 + k] / 36.0 * av[k * 36 + p];
            }
        }
        let layer = out.layer_attribution.unwrap();
        assert_eq!(layer.dims(), &[1, 6, 6]);
        close(&v(&layer), &expected, 1e-5);
        // Same resolution: the upsampled map is ReLU(map).
        assert_eq!(out.attribution.dims(), &[1, 1, 6, 6]);
        close(&v(&out.attribution), &expected.iter().map(|e| e.max(0.0)).collect::<Vec<_>>(), 1e-5);
        assert_eq!(out.logits.unwrap().dims(), &[1, 2]);
    }
}

#[test]
fn saliency_and_input_x_gradient_match_finite_differences() {
    let toy = Toy::new(3, true);
    let x = input(4, 1);
    let sal = v(&Saliency.attribute(&toy, &x, &[1]).unwrap().attribution);
    let ixg = v(&InputXGradient.attribute(&toy, &x, &[1]).unwrap().attribution);
    let base = v(&x);
    let f = |vals: Vec<f32>| -> f32 {
        let t = Tensor::from_vec(vals, (1, 1, 6, 6), &Device::Cpu).unwrap();
        v(&toy.forward(&t, &Hooks::none()).unwrap())[1]
    };
    let eps = 1e-3;
    for i in 0..36 {
        let (mut p, mut m) = (base.clone(), base.clone());
        p[i] += eps;
        m[i] -= eps;
        let fd = (f(p) - f(m)) / (2.0 * eps);
        assert!((sal[i] - fd.abs()).abs() < 2e-3, "pixel {i}: saliency {} vs |fd| {}", sal[i], fd.abs());
        assert!((ixg[i] - base[i] * fd).abs() < 2e-3 * (1.0 + base[i].abs()), "pixel {i}");
    }
}

#[test]
fn integrated_gradients_are_complete() {
    let toy = Toy::new(5, true);
    let x = input(6, 2);
    let ig = IntegratedGradients::new(IntegratedGradientsConfig { steps: 50, internal_batch_size: Some(7), baseline: None });
    let out = ig.attribute(&toy, &x, &[0, 1]).unwrap();
    let f = v(&toy.forward(&x, &Hooks::none()).unwrap());
    let f0 = v(&toy.forward(&x.zeros_like().unwrap(), &Hooks::none()).unwrap());
    let sums: Vec<f32> = v(&out.attribution.sum((1, 2, 3)).unwrap());
    for (b, t) in [(0usize, 0usize), (1, 1)] {
        let delta = f[b * 2 + t] - f0[b * 2 + t];
        assert!((sums[b] - delta).abs() < 1e-2 * (1.0 + delta.abs()), "image {b}: Σ attribution {} vs f(x) − f(0) {delta}", sums[b]);
    }
    // Without ReLU the model is affine, so the rule is exact.
    let linear = Toy::new(5, false);
    let out = IntegratedGradients::default().attribute(&linear, &x, &[1, 0]).unwrap();
    let f = v(&linear.forward(&x, &Hooks::none()).unwrap());
    let f0 = v(&linear.forward(&x.zeros_like().unwrap(), &Hooks::none()).unwrap());
    let sums: Vec<f32> = v(&out.attribution.sum((1, 2, 3)).unwrap());
    assert!((sums[0] - (f[1] - f0[1])).abs() < 1e-4);
    assert!((sums[1] - (f[2] - f0[2])).abs() < 1e-4);
}

#[test]
fn gradient_shap_on_an_affine_model_is_input_times_gradient() {
    // For f(x) = a·x + c and a zero baseline, (x − 0)·∇f = x·a whatever α is.
    let linear = Toy::new(7, false);
    let x = input(8, 2);
    let shap = GradientShap::new(GradientShapConfig { n_samples: 5, seed: 3, ..Default::default() });
    let a = shap.attribute(&linear, &x, &[0, 1]).unwrap();
    let ixg = InputXGradient.attribute(&linear, &x, &[0, 1]).unwrap();
    close(&v(&a.attribution), &v(&ixg.attribution), 1e-5);
}

#[test]
fn gradient_shap_is_seeded_and_batch_independent() {
    let toy = Toy::new(9, true);
    let x = input(10, 2);
    let cfg = GradientShapConfig { n_samples: 4, stdevs: 0.1, seed: 11, ..Default::default() };
    let a = GradientShap::new(cfg.clone()).attribute(&toy, &x, &[1, 1]).unwrap();
    let b = GradientShap::new(cfg.clone()).attribute(&toy, &x, &[1, 1]).unwrap();
    assert_eq!(v(&a.attribution), v(&b.attribution));
    let chunked = GradientShap::new(GradientShapConfig { batch_size: Some(3), ..cfg.clone() }).attribute(&toy, &x, &[1, 1]).unwrap();
    close(&v(&a.attribution), &v(&chunked.attribution), 1e-6);
    // Each image's map is the same explained alone as in the batch.
    let second = GradientShap::new(cfg.clone()).attribute(&toy, &x.narrow(0, 1, 1).unwrap(), &[1]).unwrap();
    close(&v(&a.attribution.narrow(0, 1, 1).unwrap()), &v(&second.attribution), 1e-6);
    let other = GradientShap::new(GradientShapConfig { seed: 12, ..cfg }).attribute(&toy, &x, &[1, 1]).unwrap();
    assert_ne!(v(&a.attribution), v(&other.attribution));
    // Baselines from a set: a single baseline equal to the input gives zero attribution.
    let same = GradientShap::new(GradientShapConfig { baselines: Baselines::Images(x.narrow(0, 0, 1).unwrap()), ..Default::default() })
        .attribute(&toy, &x.narrow(0, 0, 1).unwrap(), &[0])
        .unwrap();
    assert!(v(&same.attribution).iter().all(|&a| a == 0.0));
}

/// Relative L2 distance.
fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

#[test]
fn gradient_shap_with_a_zero_baseline_converges_to_integrated_gradients() {
    // E_α[(x − 0)·∇f(αx)] with α ~ U(0, 1) is the path integral of Integrated Gradients. The
    // ReLU toy with biases is not linear along the path, so Input×Gradient is far from both.
    let toy = Toy::new(21, true);
    let x = input(22, 1);
    let ig = IntegratedGradients::new(IntegratedGradientsConfig { steps: 64, ..Default::default() }).attribute(&toy, &x, &[1]).unwrap();
    let ig = v(&ig.attribution);
    let ixg = v(&InputXGradient.attribute(&toy, &x, &[1]).unwrap().attribution);
    assert!(rel_l2(&ixg, &ig) > 0.2, "the toy is too linear for this test: {}", rel_l2(&ixg, &ig));
    let config = GradientShapConfig { n_samples: 4000, stdevs: 0.0, baselines: Baselines::Zeros, seed: 5, batch_size: Some(500) };
    let shap = v(&GradientShap::new(config.clone()).attribute(&toy, &x, &[1]).unwrap().attribution);
    assert!(rel_l2(&shap, &ig) < 0.03, "GradientSHAP vs IG: {}", rel_l2(&shap, &ig));
    // With {0, x} as baselines, half the draws take b = x and contribute (x − x)·∇ = 0: IG / 2.
    let half = v(&GradientShap::new(GradientShapConfig { baselines: Baselines::ZerosAndInput, ..config }).attribute(&toy, &x, &[1]).unwrap().attribution);
    let ig_half: Vec<f32> = ig.iter().map(|a| a / 2.0).collect();
    assert!(rel_l2(&half, &ig_half) < 0.06, "{}", rel_l2(&half, &ig_half));
}

#[test]
fn noise_baselines_are_seeded_and_checked() {
    let toy = Toy::new(9, true);
    let x = input(10, 1);
    let run = |b: Baselines| {
        GradientShap::new(GradientShapConfig { n_samples: 6, baselines: b, seed: 1, ..Default::default() }).attribute(&toy, &x, &[0]).map(|a| v(&a.attribution))
    };
    let u = |seed| Baselines::Uniform { count: 3, low: 0.0, high: 1.0, seed };
    assert_eq!(run(u(4)).unwrap(), run(u(4)).unwrap());
    assert_ne!(run(u(4)).unwrap(), run(u(5)).unwrap());
    let g = Baselines::Gaussian { count: 2, mean: 0.5, std: 0.1, seed: 4 };
    assert_ne!(run(g).unwrap(), run(u(4)).unwrap());
    assert!(run(Baselines::Uniform { count: 3, low: 1.0, high: 1.0, seed: 0 }).is_err());
    assert!(run(Baselines::Uniform { count: 0, low: 0.0, high: 1.0, seed: 0 }).is_err());
    assert!(run(Baselines::Gaussian { count: 1, mean: 0.0, std: -1.0, seed: 0 }).is_err());
}

#[test]
fn batched_equals_one_at_a_time() {
    let toy = Toy::new(13, true);
    let x = input(14, 3);
    let targets = [0, 1, 1];
    let methods = [
        Method::new(GradCam::default()),
        Method::new(GuidedGradCam::default()),
        Method::new(Saliency),
        Method::new(IntegratedGradients::new(IntegratedGradientsConfig { steps: 8, ..Default::default() })),
    ];
    for m in methods {
        let all = m.attribute(&toy, &x, &targets).unwrap();
        for i in 0..3 {
            let one = m.attribute(&toy, &x.narrow(0, i, 1).unwrap(), &targets[i..i + 1]).unwrap();
            close(&v(&all.attribution.narrow(0, i, 1).unwrap()), &v(&one.attribution), 1e-5);
        }
    }
}

#[test]
fn guided_backprop_by_hand() {
    // The gradient reaching the ReLU output is fc_w[t, k]/36, the same at every position; the
    // guided rule clamps it at zero. So guided backprop equals the plain input gradient of the
    // same toy with the target row of fc_w clamped at zero.
    let toy = Toy::new(19, true);
    let x = input(20, 1);
    let gb = v(&GuidedBackprop.attribute(&toy, &x, &[1]).unwrap().attribution);
    let mut clamped = Toy::new(19, true);
    clamped.fc_w = toy.fc_w.relu().unwrap();
    let var = candle_core::Var::from_tensor(&x).unwrap();
    let y = clamped.forward(var.as_tensor(), &Hooks::none()).unwrap().narrow(1, 1, 1).unwrap().sum_all().unwrap();
    let expected = v(y.backward().unwrap().get(var.as_tensor()).unwrap());
    close(&gb, &expected, 1e-6);
    let plain = v(&Saliency.attribute(&toy, &x, &[1]).unwrap().attribution);
    assert!(gb.iter().zip(&plain).any(|(g, p)| (g.abs() - p).abs() > 1e-4), "guided must differ from the plain gradient");
}

#[test]
fn guided_grad_cam_is_guided_backprop_times_nearest_cam() {
    let toy = Toy::new(15, true);
    let x = input(16, 1);
    let gb = v(&GuidedBackprop.attribute(&toy, &x, &[0]).unwrap().attribution);
    let cam = v(&GradCam::default().attribute(&toy, &x, &[0]).unwrap().attribution);
    let ggc = v(&GuidedGradCam::default().attribute(&toy, &x, &[0]).unwrap().attribution);
    let expected: Vec<f32> = gb.iter().zip(&cam).map(|(g, c)| g * c).collect();
    close(&ggc, &expected, 1e-6);
}

/// The toy with a 2×2 average pool before the target layer: the layer is 3×3 for a 6×6 input,
/// so the up-sampling mode shows in the result.
struct Pooled(Toy);

impl Model for Pooled {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let pre = input.conv2d(&self.0.conv_w, 1, 1, 1, 1)?.broadcast_add(&self.0.conv_b)?;
        let a = if self.0.relu { hooks.relu(&pre)? } else { pre };
        self.0.from_layer(&hooks.layer("pool", &a.avg_pool2d(2)?)?)
    }

    fn layers(&self) -> Vec<String> {
        vec!["pool".into()]
    }
}

/// PyTorch's `interpolate(mode="bilinear", align_corners=False)` of one `n×n` map to `m×m`,
/// written out independently of the library.
fn bilinear_by_hand(map: &[f32], n: usize, m: usize) -> Vec<f32> {
    let scale = n as f32 / m as f32;
    let src = |d: usize| {
        let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, s - i0 as f32)
    };
    let mut out = vec![0f32; m * m];
    for y in 0..m {
        let (y0, y1, fy) = src(y);
        for x in 0..m {
            let (x0, x1, fx) = src(x);
            let at = |r: usize, c: usize| map[r * n + c];
            out[y * m + x] = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1.0 - fx) * at(y1, x0) + fx * at(y1, x1));
        }
    }
    out
}

/// PyTorch's `interpolate(mode="nearest")`: source index ⌊d·n/m⌋.
fn nearest_by_hand(map: &[f32], n: usize, m: usize) -> Vec<f32> {
    (0..m * m).map(|i| map[(i / m) * n / m * n + (i % m) * n / m]).collect()
}

#[test]
fn grad_cam_at_a_downsampled_layer_upsamples_bilinearly_and_guided_grad_cam_by_nearest() {
    let model = Pooled(Toy::new(31, true));
    let x = input(32, 1);
    let target = 0;
    let out = GradCam::default().attribute(&model, &x, &[target]).unwrap();
    // ∂y/∂A_k(i, j) = fc_w[target, k] / 9 on the 3×3 layer.
    let hooks = Hooks::none().watch_layer("pool", LayerGradient::None);
    model.forward(&x, &hooks).unwrap();
    let a = hooks.layer_activation().unwrap();
    let (fc, av) = (v(&model.0.fc_w), v(&a));
    let mut map = vec![0f32; 9];
    for k in 0..4 {
        for p in 0..9 {
            map[p] += fc[target * 4 + k] / 9.0 * av[k * 9 + p];
        }
    }
    close(&v(&out.layer_attribution.unwrap()), &map, 1e-5);
    let relu_map: Vec<f32> = map.iter().map(|m| m.max(0.0)).collect();
    assert!(relu_map.iter().any(|&m| m > 0.0) && relu_map.iter().any(|&m| m == 0.0), "the test needs a map with both signs: {map:?}");
    let bilinear = bilinear_by_hand(&relu_map, 3, 6);
    let nearest = nearest_by_hand(&relu_map, 3, 6);
    assert!(rel_l2(&nearest, &bilinear) > 0.05, "bilinear and nearest must differ for this test to mean anything");
    assert_eq!(out.attribution.dims(), &[1, 1, 6, 6]);
    close(&v(&out.attribution), &bilinear, 1e-5);

    let gb = v(&GuidedBackprop.attribute(&model, &x, &[target]).unwrap().attribution);
    let ggc = v(&GuidedGradCam::default().attribute(&model, &x, &[target]).unwrap().attribution);
    let expected: Vec<f32> = gb.iter().zip(&nearest).map(|(g, c)| g * c).collect();
    close(&ggc, &expected, 1e-5);
}

#[test]
fn re_randomizing_the_head_changes_grad_cam() {
    let x = input(18, 1);
    let trained = Toy::new(17, true);
    let mut other = Toy::new(17, true);
    other.fc_w = Toy::new(99, true).fc_w;
    let a = v(&GradCam::default().attribute(&trained, &x, &[1]).unwrap().layer_attribution.unwrap());
    let b = v(&GradCam::default().attribute(&other, &x, &[1]).unwrap().layer_attribution.unwrap());
    let diff: f32 = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum();
    assert!(diff > 1e-2, "maps should change when the head is re-randomized");
}

#[test]
fn non_finite_results_are_errors_naming_the_method() {
    let mut toy = Toy::new(1, true);
    toy.fc_b = Tensor::from_vec(vec![f32::NAN, 0.0], 2, &Device::Cpu).unwrap();
    let x = input(1, 1);
    for method in [Method::new(GradCam::default()), Method::new(Saliency)] {
        let err = method.attribute(&toy, &x, &[1]).unwrap_err();
        assert!(matches!(&err, ExplainError::NonFinite { what: "logits", count: 1, first: 0, .. }), "{err}");
        assert!(err.to_string().starts_with(&method.name()), "{err}");
    }
}

#[test]
fn bad_arguments() {
    let toy = Toy::new(1, true);
    let x = input(1, 2);
    assert!(GradCam::default().attribute(&toy, &x, &[0]).unwrap_err().to_string().contains("1 targets for a batch of 2"));
    assert!(Saliency.attribute(&toy, &x, &[0, 2]).unwrap_err().to_string().contains("target class 2"));
    let flat = Tensor::zeros((2, 36), DType::F32, &Device::Cpu).unwrap();
    assert!(Saliency.attribute(&toy, &flat, &[0, 0]).is_err());
    let bad_base = GradientShap::new(GradientShapConfig {
        baselines: Baselines::Images(Tensor::zeros((1, 1, 5, 5), DType::F32, &Device::Cpu).unwrap()),
        ..Default::default()
    });
    assert!(bad_base.attribute(&toy, &x, &[0, 0]).unwrap_err().to_string().contains("baselines"));
}

#[test]
fn deletion_and_insertion_on_a_model_with_a_known_answer() {
    use tgc_explain::faithfulness::{deletion_insertion, Baseline, CurveConfig};
    // A toy without ReLU whose class-1 logit is the mean of the image times a positive factor:
    // conv of ones (K = 4) then fc rows (0, 0, 0, 0) and (1, 1, 1, 1) · 3.
    let mut toy = Toy::new(1, false);
    toy.conv_w = Tensor::ones((4, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
    toy.conv_b = Tensor::zeros((1, 4, 1, 1), DType::F32, &Device::Cpu).unwrap();
    toy.fc_w = Tensor::new(&[[0f32, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]], &Device::Cpu).unwrap();
    toy.fc_b = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    // An image with one bright quarter; a map that ranks that quarter first.
    let mut px = vec![0f32; 36];
    let mut map = vec![0f32; 36];
    for y in 0..3 {
        for x in 0..3 {
            px[y * 6 + x] = 1.0;
            map[y * 6 + x] = 1.0;
        }
    }
    let x = Tensor::from_vec(px, (1, 1, 6, 6), &Device::Cpu).unwrap();
    let cfg = CurveConfig { steps: 4, baseline: Baseline::Zero, batch_size: 2 };
    let good = deletion_insertion(&toy, &x, &map, 1, &cfg).unwrap();
    // Deleting the bright quarter first (9 of 36 pixels = step 1) drops to the all-zero image.
    let p0 = good.deletion[0];
    assert!(p0 > 0.5);
    assert!(good.deletion[1..].iter().all(|&p| (p - 0.5).abs() < 1e-6), "{good:?}");
    assert!(good.insertion[1..].iter().all(|&p| (p - p0).abs() < 1e-6), "{good:?}");
    let reversed: Vec<f32> = map.iter().map(|m| 1.0 - m).collect();
    let bad = deletion_insertion(&toy, &x, &reversed, 1, &cfg).unwrap();
    assert!(good.deletion_auc() < bad.deletion_auc());
    assert!(good.insertion_auc() > bad.insertion_auc());
    // AUC by hand: deletion points (p0, ½, ½, ½, ½) over 4 intervals of ¼.
    assert!((good.deletion_auc() - (0.25 * 0.5 * (p0 + 0.5) + 0.75 * 0.5)).abs() < 1e-6);
}

#[test]
fn grad_cam_energy_lies_in_the_region_that_carries_the_evidence() {
    use tgc_explain::faithfulness::{energy_in_mask, pointing_hit};
    // Positive conv and fc weights: only the bright 2×2 patch activates the layer, so every bit
    // of the (ReLU'd) Grad-CAM energy sits on the patch and its 3×3 neighbourhood.
    let mut toy = Toy::new(1, true);
    toy.conv_w = Tensor::ones((4, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
    toy.conv_b = Tensor::full(-0.5f32, (1, 4, 1, 1), &Device::Cpu).unwrap();
    toy.fc_w = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    let mut px = vec![0f32; 36];
    let mut mask = vec![0f32; 36];
    for (y, x) in [(2, 2), (2, 3), (3, 2), (3, 3)] {
        px[y * 6 + x] = 1.0;
    }
    for y in 1..5 {
        for x in 1..5 {
            mask[y * 6 + x] = 1.0;
        }
    }
    let x = Tensor::from_vec(px, (1, 1, 6, 6), &Device::Cpu).unwrap();
    let cam = v(&GradCam::default().attribute(&toy, &x, &[1]).unwrap().attribution);
    assert_eq!(energy_in_mask(&cam, &mask), Some(1.0));
    assert!(pointing_hit(&cam, &mask));
}

/// A toy with an optional ReLU after the target layer, counting its forward passes.
struct Counting {
    toy: Toy,
    relu_after_layer: bool,
    passes: std::cell::Cell<usize>,
}

impl Model for Counting {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        self.passes.set(self.passes.get() + 1);
        let a = self.toy.forward_to_layer(input, hooks)?;
        if self.relu_after_layer {
            self.toy.from_layer(&hooks.relu(&(a - 0.1)?)?)
        } else {
            self.toy.from_layer(&a)
        }
    }

    fn layers(&self) -> Vec<String> {
        vec!["conv".into()]
    }
}

fn all_methods() -> Vec<Method> {
    vec![
        Method::new(GradCam::default()),
        Method::new(GuidedBackprop),
        Method::new(GuidedGradCam::default()),
        Method::new(Saliency),
        Method::new(InputXGradient),
        Method::new(GradientShap::default()),
        Method::new(IntegratedGradients::new(IntegratedGradientsConfig { steps: 8, ..Default::default() })),
    ]
}

#[test]
fn methods_asked_together_share_passes_and_equal_the_methods_run_alone() {
    for relu_after_layer in [false, true] {
        let model = Counting { toy: Toy::new(5, !relu_after_layer), relu_after_layer, passes: 0.into() };
        let x = input(2, 2);
        let targets = [1, 0];
        let methods = all_methods();
        let alone: Vec<Attribution> = methods.iter().map(|m| m.attribute(&model, &x, &targets).unwrap()).collect();
        model.passes.set(0);
        let together = Method::attribute_all(&methods, &model, &x, &targets).unwrap();
        let logits = alone[0].logits.clone().unwrap();
        for ((m, a), t) in methods.iter().zip(&alone).zip(&together) {
            assert_eq!(v(&a.attribution), v(&t.attribution), "{} (ReLU after the layer: {relu_after_layer})", m.name());
            assert_eq!(v(t.logits.as_ref().unwrap()), v(&logits), "{} logits", m.name());
            assert_eq!(a.layer_attribution.as_ref().map(v), t.layer_attribution.as_ref().map(v));
        }
        // Passes: Grad-CAM/Guided Backprop/Guided Grad-CAM one (two when the pass marks a ReLU
        // after the layer, which makes the Grad-CAM pass separate), Saliency + Input×Gradient
        // one, GradientSHAP one, Integrated Gradients two (8 steps in one batch; the input with
        // its baseline for the convergence delta).
        let expected = if relu_after_layer { 6 } else { 5 };
        assert_eq!(model.passes.get(), expected, "ReLU after the layer: {relu_after_layer}");
    }
}

#[test]
fn a_relu_after_the_layer_keeps_grad_cam_on_its_own_standard_pass() {
    // With a ReLU after the layer the guided gradient at the layer differs from Grad-CAM's; the
    // hooks see the ReLU, so Grad-CAM asked with Guided Backprop still equals Grad-CAM alone,
    // and differs from the map the guided layer gradient would give.
    let model = Counting { toy: Toy::new(7, false), relu_after_layer: true, passes: 0.into() };
    let x = input(3, 1);
    let methods = [Method::new(GradCam::default()), Method::new(GuidedBackprop)];
    let together = Method::attribute_all(&methods, &model, &x, &[0]).unwrap();
    let alone = GradCam::default().attribute(&model, &x, &[0]).unwrap();
    assert_eq!(v(together[0].layer_attribution.as_ref().unwrap()), v(alone.layer_attribution.as_ref().unwrap()));
    let var = candle_core::Var::from_tensor(&x).unwrap();
    let hooks = Hooks::none().with_relu_mode(ReluMode::Guided).watch_layer("conv", LayerGradient::Through);
    let logits = model.forward(var.as_tensor(), &hooks).unwrap();
    assert_eq!(hooks.relus_after_layer(), Some(1));
    let grads = logits.narrow(1, 0, 1).unwrap().sum_all().unwrap().backward().unwrap();
    let guided_g = v(&hooks.layer_gradient(&grads).unwrap());
    let plain = Hooks::none().watch_layer("conv", LayerGradient::Cut);
    let logits = model.forward(&x, &plain).unwrap();
    let grads = logits.narrow(1, 0, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert_ne!(guided_g, v(&plain.layer_gradient(&grads).unwrap()), "the test needs the guided layer gradient to differ");
}

#[test]
fn curves_of_several_maps_equal_each_curve_evaluated_image_by_image() {
    use tgc_explain::faithfulness::{deletion_insertion_many, Baseline, CurveConfig};
    let toy = Toy::new(9, true);
    let x = input(4, 1);
    let xs = v(&x);
    let maps: Vec<Vec<f32>> = (0..3).map(|m| (0..36).map(|p| ((p * (m + 3)) % 11) as f32).collect()).collect();
    let steps = 5;
    let cfg = CurveConfig { steps, baseline: Baseline::Blur { sigma_px: 1 }, batch_size: 4 };
    let refs: Vec<&[f32]> = maps.iter().map(|m| m.as_slice()).collect();
    let curves = deletion_insertion_many(&toy, &x, &refs, 1, &cfg).unwrap();
    let base = tgc_explain::faithfulness::gaussian_blur(&xs, 1, 6, 6, 1.0);
    let prob = |img: &[f32]| -> f32 {
        let logits = toy.forward(&Tensor::from_vec(img.to_vec(), (1, 1, 6, 6), &Device::Cpu).unwrap(), &Hooks::none()).unwrap();
        let l = v(&logits);
        1.0 / (1.0 + (l[0] - l[1]).exp())
    };
    for (map, got) in maps.iter().zip(&curves) {
        let mut order: Vec<usize> = (0..36).collect();
        order.sort_by(|&a, &b| map[b].total_cmp(&map[a]));
        for s in 0..=steps {
            let k = (s * 36 + steps / 2) / steps;
            let (mut del, mut ins) = (xs.clone(), base.clone());
            for &p in &order[..k] {
                del[p] = base[p];
                ins[p] = xs[p];
            }
            assert!((got.deletion[s] - prob(&del)).abs() < 1e-6, "deletion step {s}");
            assert!((got.insertion[s] - prob(&ins)).abs() < 1e-6, "insertion step {s}");
        }
    }
    assert_ne!(curves[0].deletion, curves[1].deletion, "different maps must give different curves");
}
