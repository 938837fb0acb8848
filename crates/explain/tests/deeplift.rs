//! DeepLift, DeepLiftShap, Deconvolution, Layer Integrated Gradients, the convergence delta,
//! infidelity and max-sensitivity, against values worked out by hand.

mod common;

use candle_core::{Device, Tensor};
use common::{pseudo, v, Toy};
use tgc_explain::faithfulness::{infidelity, sensitivity_max, InfidelityConfig, SensitivityConfig};
use tgc_explain::{
    Attribute, Baselines, Deconvolution, DeepLift, DeepLiftShap, FnModel, GuidedBackprop, Hooks, InputXGradient, IntegratedGradients, LayerIntegratedGradients,
    MaxPool2d, Model, Saliency,
};

/// x (4) → W1 (3×4) + b1 → ReLU → w2 (2×3) + b2.
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Mlp {
    fn new() -> Self {
        Self { w1: pseudo(&[3, 4], 1), b1: pseudo(&[3], 2), w2: pseudo(&[2, 3], 3), b2: pseudo(&[2], 4) }
    }

    fn hidden(&self, x: &[f32]) -> Vec<f32> {
        let (w1, b1) = (self.w1.to_vec2::<f32>().unwrap(), self.b1.to_vec1::<f32>().unwrap());
        (0..3).map(|j| (0..4).map(|i| w1[j][i] * x[i]).sum::<f32>() + b1[j]).collect()
    }
}

impl Model for Mlp {
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let h = hooks.relu(&x.matmul(&self.w1.t()?)?.broadcast_add(&self.b1)?)?;
        h.matmul(&self.w2.t()?)?.broadcast_add(&self.b2)
    }
}

#[test]
fn deeplift_rescales_each_relu_by_its_secant_and_adds_up() {
    let model = Mlp::new();
    let xs = [[0.9f32, -0.4, 0.3, 0.7], [-0.2, 0.5, -0.8, 0.1]];
    let x = Tensor::new(&xs, &Device::Cpu).unwrap();
    let out = DeepLift::default().attribute(&model, &x, &[1, 0]).unwrap();
    let (w1, w2) = (model.w1.to_vec2::<f32>().unwrap(), model.w2.to_vec2::<f32>().unwrap());
    let logits = v(&model.forward(&x, &Hooks::none()).unwrap());
    let at_zero = v(&model.forward(&x.zeros_like().unwrap(), &Hooks::none()).unwrap());
    for (b, (row, target)) in xs.iter().zip([1usize, 0]).enumerate() {
        let (z, z0) = (model.hidden(row), model.hidden(&[0.0; 4]));
        // m_j = w2[t][j] · (relu(z) − relu(z0)) / (z − z0); attribution_i = x_i Σ_j m_j W1[j][i].
        let m: Vec<f32> = (0..3).map(|j| w2[target][j] * (z[j].max(0.0) - z0[j].max(0.0)) / (z[j] - z0[j])).collect();
        let expected: Vec<f32> = (0..4).map(|i| row[i] * (0..3).map(|j| m[j] * w1[j][i]).sum::<f32>()).collect();
        let got = v(&out.attribution.get(b).unwrap());
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-6, "image {b}: {got:?} vs {expected:?}");
        }
        // Completeness: Σ attribution = f(x) − f(0) at the target, the delta ~0.
        let gap = logits[b * 2 + target] - at_zero[b * 2 + target];
        assert!((got.iter().sum::<f32>() - gap).abs() < 1e-5);
        assert!(v(out.convergence_delta.as_ref().unwrap())[b].abs() < 1e-5);
    }
}

/// [pool 3×3/2 pad 1 of an optionally ReLU'd 5×5 image] · (1, 2, …, 9).
struct Pooled {
    relu: bool,
}

impl Model for Pooled {
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let x = if self.relu { hooks.relu(x)? } else { x.clone() };
        let pool = MaxPool2d { kernel: 3, stride: 2, padding: 1 };
        let p = hooks.max_pool2d(&x, pool, |x| x.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?.max_pool2d_with_stride(3, 2))?;
        let w = Tensor::arange(1f32, 10.0, x.device())?.reshape((9, 1))?;
        p.flatten_from(1)?.matmul(&w)
    }
}

#[test]
fn captums_max_pool_rule_and_its_relu_to_pool_order() {
    // 5 at (1, 1), the argmax of windows (0,0), (0,1), (1,0), (1,1), weights 1, 2, 4, 5.
    let mut pixels = vec![0f32; 25];
    pixels[6] = 5.0;
    pixels[18] = -2.0;
    let x = Tensor::from_vec(pixels, (1, 1, 5, 5), &Device::Cpu).unwrap();
    // Pool alone: max_unpool2d keeps one write per position, the last window's (weight 5):
    // 5 · 5 = 25, not 5 · (1 + 2 + 4 + 5) = 60; Captum's delta is then 25 − 60.
    let alone = DeepLift::default().attribute(&Pooled { relu: false }, &x, &[0]).unwrap();
    let a = v(&alone.attribution);
    assert!((a[6] - 25.0).abs() < 1e-5 && a.iter().enumerate().all(|(i, &v)| i == 6 || v == 0.0), "{a:?}");
    assert!((v(alone.convergence_delta.as_ref().unwrap())[0] + 35.0).abs() < 1e-4);
    // ReLU → pool: the ReLU's rule reads the gradient before the pool's rule replaces it (the
    // ordinary max-pool gradient, 1 + 2 + 4 + 5 = 12): 5 · 12 = 60, complete.
    let chained = DeepLift::default().attribute(&Pooled { relu: true }, &x, &[0]).unwrap();
    let a = v(&chained.attribution);
    assert!((a[6] - 60.0).abs() < 1e-4, "{a:?}");
    assert!(v(chained.convergence_delta.as_ref().unwrap())[0].abs() < 1e-4);
    // Outside a DeepLift pass the marks are the model's own pool and ReLU.
    let logits = v(&Pooled { relu: true }.forward(&x, &Hooks::none()).unwrap());
    assert_eq!(logits, vec![60.0]);
}

#[test]
fn deeplift_refuses_a_single_baseline_distribution_and_a_model_without_marks() {
    let x = Tensor::new(&[[0.5f32, -0.5, 0.2, 0.1]], &Device::Cpu).unwrap();
    let err = DeepLift { baselines: Baselines::ZerosAndInput, ..DeepLift::default() }.attribute(&Mlp::new(), &x, &[0]).unwrap_err().to_string();
    assert!(err.contains("DeepLiftShap"), "{err}");
    let err = DeepLiftShap::new(Baselines::Zeros).attribute(&Mlp::new(), &x, &[0]).unwrap_err().to_string();
    assert!(err.contains("at least two"), "{err}");
    let w = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &Device::Cpu).unwrap();
    let unmarked = FnModel(|x: &Tensor| x.matmul(&w.t()?)?.relu());
    let err = DeepLift::default().attribute(&unmarked, &x, &[0]).unwrap_err().to_string();
    assert!(err.contains("Hooks::relu"), "{err}");
}

#[test]
fn deeplift_shap_is_the_mean_of_deeplift_over_the_baselines() {
    let model = Mlp::new();
    let x = pseudo(&[2, 4], 9);
    let baselines = pseudo(&[3, 4], 10);
    let shap = DeepLiftShap::new(Baselines::Images(baselines.clone())).attribute(&model, &x, &[0, 1]).unwrap();
    let mut sum = vec![0f32; 8];
    let mut delta = [0f32; 2];
    for k in 0..3 {
        let one = DeepLift { baselines: Baselines::Images(baselines.narrow(0, k, 1).unwrap()), ..DeepLift::default() }.attribute(&model, &x, &[0, 1]).unwrap();
        sum.iter_mut().zip(v(&one.attribution)).for_each(|(s, a)| *s += a / 3.0);
        delta.iter_mut().zip(v(one.convergence_delta.as_ref().unwrap())).for_each(|(s, d)| *s += d / 3.0);
    }
    for (a, e) in v(&shap.attribution).iter().zip(&sum) {
        assert!((a - e).abs() < 1e-6);
    }
    for (a, e) in v(shap.convergence_delta.as_ref().unwrap()).iter().zip(&delta) {
        assert!((a - e).abs() < 1e-6);
    }
}

#[test]
fn deconvolution_passes_relu_of_the_gradient_whatever_the_input() {
    let model = Mlp::new();
    let (w1, w2) = (model.w1.to_vec2::<f32>().unwrap(), model.w2.to_vec2::<f32>().unwrap());
    for row in [[-3f32, -3.0, -3.0, -3.0], [0.9, -0.4, 0.3, 0.7], [3.0, 3.0, 3.0, 3.0]] {
        let x = Tensor::new(&[row], &Device::Cpu).unwrap();
        // W1ᵀ relu(w2[t]) at every point; guided backprop masks the units that are off.
        let z = model.hidden(&row);
        let d = v(&Deconvolution.attribute(&model, &x, &[1]).unwrap().attribution);
        let g = v(&GuidedBackprop.attribute(&model, &x, &[1]).unwrap().attribution);
        for i in 0..4 {
            let deconv: f32 = (0..3).map(|j| w2[1][j].max(0.0) * w1[j][i]).sum();
            let guided: f32 = (0..3).map(|j| if z[j] > 0.0 { w2[1][j].max(0.0) * w1[j][i] } else { 0.0 }).sum();
            assert!((d[i] - deconv).abs() < 1e-6 && (g[i] - guided).abs() < 1e-6, "{row:?}: {d:?}, {g:?}");
        }
    }
}

#[test]
fn layer_integrated_gradients_is_exact_where_the_rest_is_linear() {
    // Toy: conv → ReLU → [conv] → mean → fc. After the layer the model is linear, so Layer IG
    // is (a(x) − a(0)) · ∂f/∂a = (a(x) − a(0)) · fc[t][k] / (h·w), complete.
    let model = Toy::new(5, true);
    let x = pseudo(&[1, 1, 6, 6], 11);
    let out = LayerIntegratedGradients::new("conv").attribute(&model, &x, &[1]).unwrap();
    let layer = out.layer_attribution.as_ref().unwrap();
    assert_eq!(layer.dims(), &[1, 4, 6, 6]);
    let (a, a0) = (model.activation(&x), model.activation(&x.zeros_like().unwrap()));
    let fc = model.fc_w.to_vec2::<f32>().unwrap();
    let got = v(layer);
    for (i, g) in got.iter().enumerate() {
        let e = (a[i] - a0[i]) * fc[1][i / 36] / 36.0;
        assert!((g - e).abs() < 1e-6, "element {i}: {g} vs {e}");
    }
    assert!(v(out.convergence_delta.as_ref().unwrap())[0].abs() < 1e-5);
    assert_eq!(out.attribution.dims(), &[1, 1, 6, 6]);
}

#[test]
fn integrated_gradients_reports_the_completeness_gap() {
    let model = Toy::new(3, true);
    let x = pseudo(&[2, 1, 5, 5], 12);
    let out = IntegratedGradients::default().attribute(&model, &x, &[0, 1]).unwrap();
    let logits = v(&model.forward(&x, &Hooks::none()).unwrap());
    let at_zero = v(&model.forward(&x.zeros_like().unwrap(), &Hooks::none()).unwrap());
    let delta = v(out.convergence_delta.as_ref().unwrap());
    for (b, t) in [0usize, 1].into_iter().enumerate() {
        let sum: f32 = v(&out.attribution.get(b).unwrap()).iter().sum();
        let expected = sum - (logits[b * 2 + t] - at_zero[b * 2 + t]);
        assert!((delta[b] - expected).abs() < 1e-6, "{} vs {expected}", delta[b]);
    }
}

/// f(x) = w · x + 0.25 over 16 features.
fn linear() -> (Tensor, impl Model) {
    let w = pseudo(&[1, 16], 13);
    let weights = w.clone();
    (w, FnModel(move |x: &Tensor| x.flatten_from(1)?.matmul(&weights.t()?)? + 0.25))
}

#[test]
fn infidelity_on_a_linear_model() {
    let (w, model) = linear();
    let x = (pseudo(&[1, 16], 14) + 1.0).unwrap();
    // Input×Gradient with perturbations divided by the input (zero baseline): Σ (I/x)(x w) =
    // Σ I w = f(x) − f(x − I) exactly, infidelity 0.
    let ixg = InputXGradient.attribute(&model, &x, &[0]).unwrap().attribution;
    let config = InfidelityConfig { multiply_by_inputs: true, ..InfidelityConfig::default() };
    assert!(infidelity(&model, &x, &ixg, &[0], &config).unwrap()[0] < 1e-10);
    // 2w without the division: E[(Σ I (2w − w))²] = σ² ‖w‖², over many perturbations.
    let twice = (&w * 2.0).unwrap();
    let config = InfidelityConfig { n_perturb_samples: 4000, noise_std: 0.01, batch_size: 4000, ..InfidelityConfig::default() };
    let expected = 1e-4 * v(&w).iter().map(|w| (w * w) as f64).sum::<f64>();
    let got = infidelity(&model, &x, &twice, &[0], &config).unwrap()[0];
    assert!((got / expected - 1.0).abs() < 0.1, "{got} vs {expected}");
    // Normalised, any multiple of w is exact (β rescales it).
    let normalized = InfidelityConfig { normalize: true, ..config };
    assert!(infidelity(&model, &x, &twice, &[0], &normalized).unwrap()[0] < 1e-6 * expected);
    // Denormal inputs (the OASIS slices hold 1e-45s) do not overflow the division by the input.
    let mut values = v(&x);
    values[3] = 1e-45;
    let x = Tensor::from_vec(values, (1, 16), &Device::Cpu).unwrap();
    let ixg = InputXGradient.attribute(&model, &x, &[0]).unwrap().attribution;
    let config = InfidelityConfig { multiply_by_inputs: true, ..InfidelityConfig::default() };
    assert!(infidelity(&model, &x, &ixg, &[0], &config).unwrap()[0].is_finite());
}

#[test]
fn max_sensitivity_on_a_linear_model() {
    let w = Tensor::new(&[[3f32]], &Device::Cpu).unwrap();
    let model = FnModel(move |x: &Tensor| x.matmul(&w.t()?));
    let x = Tensor::new(&[[2f32]], &Device::Cpu).unwrap();
    let config = SensitivityConfig { n_perturb_samples: 400, ..SensitivityConfig::default() };
    // Saliency is |w| everywhere: it never moves.
    assert_eq!(sensitivity_max(&Saliency, &model, &x, &[0], None, &config).unwrap(), vec![0.0]);
    // Input×Gradient 3x: |3δ| / |3·2| = |δ| / 2, its max over U[−r, r] draws close to r / 2.
    let s = sensitivity_max(&InputXGradient, &model, &x, &[0], None, &config).unwrap()[0];
    let r = config.perturb_radius as f64;
    assert!(s <= r / 2.0 * (1.0 + 1e-4) && s > 0.98 * r / 2.0, "{s}");
}
