//! The forward-only methods against what they must give: Shapley efficiency, exact Shapley
//! values by hand, Kernel SHAP over every coalition equal to them, LIME and feature permutation
//! on linear models, a user's own method under a noise tunnel, and the hooks' captured layer
//! gradient against finite differences.

mod common;

use candle_core::{Device, Tensor};
use common::{pseudo, v, Toy};
use tgc_explain::*;

/// A non-linear model of 2×2 images with one channel: logits [f, −f] with
/// f = x0·x1 + 2·x2 − x3² + x0·x2·x3 (interactions, so Shapley values are not trivial).
fn nonlinear() -> FnModel<impl Fn(&Tensor) -> candle_core::Result<Tensor>> {
    FnModel(|x: &Tensor| {
        let b = x.dim(0)?;
        let p = x.reshape((b, 4))?;
        let c = |i: usize| p.narrow(1, i, 1);
        let f = ((c(0)? * c(1)?)? + (c(2)? * 2.0)?)?.sub(&c(3)?.sqr()?)?.add(&(c(0)? * c(2)?)?.mul(&c(3)?)?)?;
        Tensor::cat(&[&f, &f.neg()?], 1)
    })
}

/// Exact Shapley values of `f` over four single-pixel players, baseline 0, by the permutation
/// definition (all 24 orders).
fn shapley_by_hand(x: [f32; 4]) -> [f64; 4] {
    let f = |z: [f32; 4]| (z[0] * z[1] + 2.0 * z[2] - z[3] * z[3] + z[0] * z[2] * z[3]) as f64;
    let mut phi = [0f64; 4];
    let mut orders = Vec::new();
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let o = [a, b, c, d];
                    if (0..4).all(|i| o.contains(&i)) {
                        orders.push(o);
                    }
                }
            }
        }
    }
    for o in &orders {
        let mut z = [0f32; 4];
        for &i in o {
            let before = f(z);
            z[i] = x[i];
            phi[i] += f(z) - before;
        }
    }
    phi.map(|p| p / orders.len() as f64)
}

#[test]
fn exact_shapley_values_are_the_permutation_definition_and_kernel_shap_over_every_coalition_equals_them() {
    let model = nonlinear();
    let xs = [0.7f32, -1.2, 0.4, 0.9];
    let x = Tensor::new(&xs, &Device::Cpu).unwrap().reshape((1, 1, 2, 2)).unwrap();
    let want = shapley_by_hand(xs);
    let exact = v(&ShapleyValues::default().attribute(&model, &x, &[0]).unwrap().attribution);
    let every = v(&KernelShap { n_samples: 16, ..Default::default() }.attribute(&model, &x, &[0]).unwrap().attribution);
    for i in 0..4 {
        assert!((exact[i] as f64 - want[i]).abs() < 1e-5, "exact, player {i}: {} vs {}", exact[i], want[i]);
        assert!((every[i] as f64 - want[i]).abs() < 1e-5, "Kernel SHAP, player {i}: {} vs {}", every[i], want[i]);
    }
    // Efficiency: the values add up to f(x) − f(baseline).
    let fx = 0.7 * -1.2 + 2.0 * 0.4 - 0.81 + 0.7 * 0.4 * 0.9;
    assert!((exact.iter().map(|&p| p as f64).sum::<f64>() - fx).abs() < 1e-5);
    // The other target's values are the negatives.
    let other = v(&ShapleyValues::default().attribute(&model, &x, &[1]).unwrap().attribution);
    assert!(other.iter().zip(&exact).all(|(o, e)| (o + e).abs() < 1e-6));
    // Too many features are refused, naming the limit.
    let big = Tensor::zeros((1, 1, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = ShapleyValues::default().attribute(&FnModel(|x: &Tensor| x.flatten_from(1)?.narrow(1, 0, 2)), &big, &[0]).unwrap_err().to_string();
    assert!(err.contains("25 features") || err.contains("at most 16"), "{err}");
}

#[test]
fn sampled_shapley_values_are_efficient_and_approach_the_exact_ones() {
    let model = nonlinear();
    let xs = [0.7f32, -1.2, 0.4, 0.9];
    let x = Tensor::new(&xs, &Device::Cpu).unwrap().reshape((1, 1, 2, 2)).unwrap();
    let want = shapley_by_hand(xs);
    let fx: f64 = want.iter().sum();
    // Every sampled order telescopes to f(x) − f(0): efficiency holds to rounding.
    let sampled = v(&ShapleyValueSampling { n_samples: 7, ..Default::default() }.attribute(&model, &x, &[0]).unwrap().attribution);
    assert!((sampled.iter().map(|&p| p as f64).sum::<f64>() - fx).abs() < 1e-5);
    // 4! = 24 orders: 400 random ones land near the mean of all of them.
    let many = v(&ShapleyValueSampling { n_samples: 400, seed: 3, ..Default::default() }.attribute(&model, &x, &[0]).unwrap().attribution);
    for i in 0..4 {
        assert!((many[i] as f64 - want[i]).abs() < 0.05, "player {i}: {} vs {}", many[i], want[i]);
    }
    // Sampled Kernel SHAP (Captum's: all, none, then kernel-drawn coalitions, least squares
    // with an intercept) is exact where the model is linear in the coalition: a linear model's
    // Shapley values w_e·x_e from 40 of its 2^16 coalitions.
    let w = pseudo(&[2, 16], 11);
    let linear = FnModel(|x: &Tensor| x.flatten_from(1)?.matmul(&w.t()?));
    let x16 = pseudo(&[1, 1, 4, 4], 12);
    let kernel = v(&KernelShap { n_samples: 40, seed: 5, ..Default::default() }.attribute(&linear, &x16, &[1]).unwrap().attribution);
    let (wv, xv) = (v(&w), v(&x16));
    for e in 0..16 {
        assert!((kernel[e] - wv[16 + e] * xv[e]).abs() < 1e-4, "element {e}: {} vs {}", kernel[e], wv[16 + e] * xv[e]);
    }
    // The same seed gives the same map alone or in a batch.
    let two = Tensor::cat(&[&x, &x.affine(0.5, 0.1).unwrap()], 0).unwrap();
    let batched = v(&ShapleyValueSampling { n_samples: 7, ..Default::default() }.attribute(&model, &two, &[0, 0]).unwrap().attribution);
    assert_eq!(&batched[..4], sampled.as_slice());
}

#[test]
fn lime_and_feature_permutation_recover_a_linear_model() {
    // f = Σ_e w_e x_e + 0.3: every surrogate coefficient is w_e (x_e − baseline_e).
    let w = pseudo(&[2, 16], 4);
    let model = FnModel(|x: &Tensor| x.flatten_from(1)?.matmul(&w.t()?)? + 0.3);
    let x = pseudo(&[2, 1, 4, 4], 6);
    let targets = [1, 0];
    let (wv, xv) = (v(&w), v(&x));
    let lime = Lime { mask: FeatureMask::Grid(2), n_samples: 60, alpha: 0.0, ..Default::default() };
    let got = v(&lime.attribute(&model, &x, &targets).unwrap().attribution);
    for i in 0..2 {
        for e in 0..16 {
            let (r, c) = (e / 4, e % 4);
            // The 2×2 block holding element e: its contribution Σ w x over the block.
            let block: f32 = (0..16).filter(|&k| k / 4 / 2 == r / 2 && k % 4 / 2 == c / 2).map(|k| wv[targets[i] * 16 + k] * xv[i * 16 + k]).sum();
            assert!((got[i * 16 + e] - block).abs() < 1e-4, "LIME, image {i}, element {e}: {} vs {block}", got[i * 16 + e]);
        }
    }
    // With the default Lasso (α = 0.01) the coefficients shrink toward zero, not past it.
    let lasso = v(&Lime { mask: FeatureMask::Grid(2), n_samples: 60, ..Default::default() }.attribute(&model, &x, &targets).unwrap().attribution);
    assert!(lasso.iter().zip(&got).all(|(l, g)| l.abs() <= g.abs() + 1e-5 && l * g >= 0.0));
    // Feature permutation over a batch of two swaps the rows: f(x_i) − f(x_i with e from the other).
    let perm = v(&FeaturePermutation::default().attribute(&model, &x, &targets).unwrap().attribution);
    for i in 0..2 {
        for e in 0..16 {
            let want = wv[targets[i] * 16 + e] * (xv[i * 16 + e] - xv[(1 - i) * 16 + e]);
            assert!((perm[i * 16 + e] - want).abs() < 1e-5, "permutation, image {i}, element {e}");
        }
    }
    assert!(FeaturePermutation::default().attribute(&model, &x.narrow(0, 0, 1).unwrap(), &[0]).unwrap_err().to_string().contains("two"));
}

/// A method of a user's own: the input times a constant.
#[derive(Debug)]
struct Scaled(f32);

impl Attribute for Scaled {
    fn name(&self) -> String {
        "scaled".into()
    }
    fn compute(&self, _model: &dyn Model, input: &Tensor, _targets: &[usize]) -> tgc_explain::Result<Unchecked> {
        Ok(Unchecked::new(Attribution::map((input * self.0 as f64)?)))
    }
}

#[test]
fn a_users_own_method_runs_under_a_noise_tunnel_and_with_the_others() {
    let toy = Toy::new(3, true);
    let x = pseudo(&[1, 1, 6, 6], 2);
    // SmoothGrad of a linear map of the input: the mean of the noisy inputs, scaled.
    let tunnel = NoiseTunnel { inner: Method::new(Scaled(2.0)), kind: NoiseTunnelType::SmoothGrad, samples: 4, stdevs: 0.0, seed: 1 };
    let out = v(&tunnel.attribute(&toy, &x, &[0]).unwrap().attribution);
    assert_eq!(out, v(&(&x * 2.0).unwrap()));
    assert_eq!(tunnel.name(), "scaled-smoothgrad");
    let all = Method::attribute_all(&[Method::new(Scaled(1.0)), Method::new(Saliency)], &toy, &x, &[0]).unwrap();
    assert_eq!(v(&all[0].attribution), v(&x));
    assert!(all[0].logits.is_some());
    // Its NaN is refused by name through every path.
    let nan = Method::new(Scaled(f32::NAN));
    assert!(nan.attribute(&toy, &x, &[0]).unwrap_err().to_string().contains("scaled"));
    assert!(NoiseTunnel::new(nan.clone()).attribute(&toy, &x, &[0]).is_err());
    assert!(Method::attribute_all(&[nan], &toy, &x, &[0]).is_err());
}

#[test]
fn the_hooks_layer_gradient_equals_finite_differences() {
    let toy = Toy::new(7, true);
    let x = pseudo(&[1, 1, 6, 6], 8);
    for gradient in [LayerGradient::Cut, LayerGradient::Through] {
        let input = candle_core::Var::from_tensor(&x).unwrap();
        let hooks = Hooks::none().watch_layer("conv", gradient);
        let logits = toy.forward(input.as_tensor(), &hooks).unwrap();
        let grads = logits.narrow(1, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
        let g = v(&hooks.layer_gradient(&grads).unwrap());
        let a = hooks.layer_activation().unwrap();
        let av = v(&a);
        let eps = 1e-2f32;
        for e in (0..av.len()).step_by(7) {
            let bumped = |d: f32| {
                let mut b = av.clone();
                b[e] += d;
                let t = Tensor::from_vec(b, a.dims(), &Device::Cpu).unwrap();
                v(&toy.forward(&x, &Hooks::none().replace_layer("conv", move |_| Ok(t.clone()))).unwrap())[1]
            };
            let fd = (bumped(eps) - bumped(-eps)) / (2.0 * eps);
            assert!((fd - g[e]).abs() < 1e-3, "{gradient:?}, element {e}: {fd} vs {}", g[e]);
        }
    }
}
