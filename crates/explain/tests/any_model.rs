//! Models of any kind and rank: a closure, a sequence model `[B, T, F]`, a volume model
//! `[B, C, D, H, W]`; layers chosen per call; capabilities a model does not declare refused.

mod common;

use candle_core::{Device, Tensor};
use common::{pseudo, v, Toy};
use tgc_explain::*;

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}, element {i}: {x} vs {y}");
    }
}

#[test]
fn a_closure_over_sequences_is_explained_without_any_trait_impl() {
    // logits[b, c] = Σ_{t,f} x[b,t,f]·W[c,t,f] + tanh(Σ x[b]) — linear plus a smooth term.
    let w = pseudo(&[2, 3, 4], 5);
    let model = FnModel(|x: &Tensor| {
        let (b, t, f) = x.dims3()?;
        let flat = x.reshape((b, t * f))?;
        flat.matmul(&w.reshape((2, t * f))?.t()?)?.broadcast_add(&flat.sum_keepdim(1)?.tanh()?)
    });
    let x = pseudo(&[2, 3, 4], 9);
    let targets = [1, 0];
    // Integrated Gradients is complete: the attributions of a sample sum to f(x) − f(0).
    let ig = IntegratedGradients::new(IntegratedGradientsConfig { steps: 64, ..Default::default() }).attribute(&model, &x, &targets).unwrap();
    assert_eq!(ig.attribution.dims(), &[2, 3, 4]);
    let fx = v(&model.forward(&x, &Hooks::none()).unwrap());
    let f0 = v(&model.forward(&x.zeros_like().unwrap(), &Hooks::none()).unwrap());
    let sums = v(&ig.attribution.sum((1, 2)).unwrap());
    for (i, &t) in targets.iter().enumerate() {
        let want = fx[i * 2 + t] - f0[i * 2 + t];
        assert!((sums[i] - want).abs() < 1e-4, "sample {i}: {} vs {want}", sums[i]);
    }
    // Saliency is |W[t] + sech²(Σx)|, per element.
    let sal = v(&Saliency.attribute(&model, &x, &targets).unwrap().attribution);
    let (xv, wv) = (v(&x), v(&w));
    for i in 0..2 {
        let s: f32 = xv[i * 12..(i + 1) * 12].iter().sum();
        let sech2 = 1.0 - s.tanh().powi(2);
        let want: Vec<f32> = (0..12).map(|e| (wv[targets[i] * 12 + e] + sech2).abs()).collect();
        close(&sal[i * 12..(i + 1) * 12], &want, 1e-5, "saliency");
    }
    // Occlusion is 2-D; Feature Ablation takes any rank (one feature per element by default,
    // or ids shared across the steps: each feature index over all steps).
    let fa = FeatureAblation::default().attribute(&model, &x, &targets).unwrap();
    assert_eq!(fa.attribution.dims(), &[2, 3, 4]);
    let ids = Tensor::new(&[[0f32, 1.0, 2.0, 3.0]], &Device::Cpu).unwrap(); // [1, F] broadcast over T
    let by_feature = FeatureAblation { mask: FeatureMask::Ids(ids), ..Default::default() }.attribute(&model, &x, &targets).unwrap();
    let bf = v(&by_feature.attribution);
    for i in 0..2 {
        for f in 0..4 {
            // The three steps of feature f were ablated together: one value, their drop.
            let column: Vec<f32> = (0..3).map(|t| bf[i * 12 + t * 4 + f]).collect();
            assert!(column.iter().all(|c| *c == column[0]), "{column:?}");
        }
    }
    assert!(Occlusion::default().attribute(&model, &x, &targets).unwrap_err().to_string().contains("[B, C, H, W]"));
}

#[test]
fn capabilities_a_model_does_not_declare_are_refused_by_name() {
    let w = pseudo(&[2, 36], 3);
    let model = FnModel(|x: &Tensor| x.flatten_from(1)?.matmul(&w.t()?));
    let x = pseudo(&[1, 1, 6, 6], 4);
    let guided = GuidedBackprop.attribute(&model, &x, &[0]).unwrap_err().to_string();
    assert!(guided.contains("marks none") && guided.contains("Hooks::relu"), "{guided}");
    let cam = GradCam::default().attribute(&model, &x, &[0]).unwrap_err().to_string();
    assert!(cam.contains("layers"), "{cam}");
    let named = GradCam::new("conv").attribute(&model, &x, &[0]).unwrap_err().to_string();
    assert!(named.contains("`conv`") && named.contains("marks: none"), "{named}");
    // A model whose logits are not [B, classes] is refused, not misread.
    let flat = FnModel(|x: &Tensor| x.sum_all());
    assert!(Saliency.attribute(&flat, &x, &[0]).unwrap_err().to_string().contains("[B, classes]"));
}

/// conv(1→4) → ReLU → ["conv"] → 2×2 average pool → ["pool"] → mean → fc: two layers.
struct TwoLayers(Toy);

impl Model for TwoLayers {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let pre = input.conv2d(&self.0.conv_w, 1, 1, 1, 1)?.broadcast_add(&self.0.conv_b)?;
        let a = hooks.layer("conv", &hooks.relu(&pre)?)?;
        self.0.from_layer(&hooks.layer("pool", &a.avg_pool2d(2)?)?)
    }

    fn layers(&self) -> Vec<String> {
        vec!["conv".into(), "pool".into()]
    }
}

#[test]
fn the_layer_is_chosen_per_call() {
    let model = TwoLayers(Toy::new(3, true));
    let x = pseudo(&[2, 1, 6, 6], 8);
    let targets = [0, 1];
    let at_conv = GradCam::new("conv").attribute(&model, &x, &targets).unwrap();
    let at_pool = GradCam::new("pool").attribute(&model, &x, &targets).unwrap();
    let default = GradCam::default().attribute(&model, &x, &targets).unwrap();
    assert_eq!(at_conv.layer_attribution.as_ref().unwrap().dims(), &[2, 6, 6]);
    assert_eq!(at_pool.layer_attribution.as_ref().unwrap().dims(), &[2, 3, 3]);
    assert_eq!(v(default.layer_attribution.as_ref().unwrap()), v(at_pool.layer_attribution.as_ref().unwrap()), "the default is the last layer");
    // At "conv" every position's gradient is fc_w[t, k] / 36 (pool then mean = mean), so the
    // map is Σ_k fc_w[t,k]/36 · A_k, as at the toy's own layer.
    let a = v(&model.0.forward_to_layer(&x, &Hooks::none()).unwrap());
    let fc = v(&model.0.fc_w);
    let map = v(at_conv.layer_attribution.as_ref().unwrap());
    for i in 0..2 {
        for p in 0..36 {
            let want: f32 = (0..4).map(|k| fc[targets[i] * 4 + k] / 36.0 * a[(i * 4 + k) * 36 + p]).sum();
            assert!((map[i * 36 + p] - want).abs() < 1e-5);
        }
    }
    let unknown = Cam::new(CamKind::HiResCam).at("fc").attribute(&model, &x, &targets).unwrap_err().to_string();
    assert!(unknown.contains("`fc`") && unknown.contains("conv, pool"), "{unknown}");
    // Methods asked together at different layers each get their own layer, as alone.
    let methods = [Method::new(GradCam::new("conv")), Method::new(GuidedGradCam::new("pool")), Method::new(GradCam::new("pool"))];
    let together = Method::attribute_all(&methods, &model, &x, &targets).unwrap();
    for (m, t) in methods.iter().zip(&together) {
        close(&v(&t.attribution), &v(&m.attribute(&model, &x, &targets).unwrap().attribution), 1e-6, &m.name());
    }
}

/// A volume model: 1×1×1 conv (1→K) → ReLU → 2×2×2 average pool → ["pool"] → mean → fc.
struct Volume {
    w: Tensor,
    b: Tensor,
    fc: Tensor,
}

impl Volume {
    fn pool(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let (n, _, d, h, w) = x.dims5()?;
        let k = self.w.dim(0)?;
        let a = hooks.relu(&x.broadcast_mul(&self.w.reshape((1, k, 1, 1, 1))?)?.broadcast_add(&self.b.reshape((1, k, 1, 1, 1))?)?)?;
        a.reshape(vec![n, k, d / 2, 2, h / 2, 2, w / 2, 2])?.mean(7)?.mean(5)?.mean(3)
    }

    fn head(&self, p: &Tensor) -> candle_core::Result<Tensor> {
        p.flatten_from(2)?.mean(2)?.matmul(&self.fc.t()?)
    }
}

impl Model for Volume {
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        self.head(&hooks.layer("pool", &self.pool(x, hooks)?)?)
    }

    fn layers(&self) -> Vec<String> {
        vec!["pool".into()]
    }
}

#[test]
fn grad_cam_on_volumes_is_trilinear_and_gradients_match_finite_differences() {
    let k = 3;
    let model = Volume { w: pseudo(&[k], 1), b: pseudo(&[k], 2), fc: pseudo(&[2, k], 3) };
    let x = pseudo(&[1, 1, 4, 6, 6], 4);
    let out = GradCam::default().attribute(&model, &x, &[1]).unwrap();
    assert_eq!(out.attribution.dims(), &[1, 1, 4, 6, 6]);
    let layer = out.layer_attribution.unwrap();
    assert_eq!(layer.dims(), &[1, 2, 3, 3]);
    // ∂y/∂P_k = fc[1, k] / 18 at every position of the 2×3×3 pooled layer.
    let p = v(&model.pool(&x, &Hooks::none()).unwrap());
    let fc = v(&model.fc);
    let want: Vec<f32> = (0..18).map(|s| (0..k).map(|c| fc[k + c] / 18.0 * p[c * 18 + s]).sum()).collect();
    close(&v(&layer), &want, 1e-5, "layer map");
    let up = resize(&layer.relu().unwrap(), &[4, 6, 6], Interpolation::Linear { align_corners: false }).unwrap();
    close(&v(&out.attribution), &v(&up), 1e-6, "trilinear up-sampling");
    // The CAM family works on volumes too.
    for kind in CamKind::ALL {
        let cam = Cam::new(kind).attribute(&model, &x, &[1]).unwrap();
        assert_eq!(cam.attribution.dims(), &[1, 1, 4, 6, 6], "{}", kind.name());
    }
    // Input gradients of a 5-D input against central differences of the model.
    let grad = v(&Saliency.attribute(&model, &x, &[1]).unwrap().attribution);
    let xv = v(&x);
    let logit = |values: &[f32]| -> f64 {
        let t = Tensor::from_vec(values.to_vec(), (1, 1, 4, 6, 6), &Device::Cpu).unwrap();
        v(&model.forward(&t, &Hooks::none()).unwrap())[1] as f64
    };
    let eps = 1e-2f32;
    for e in (0..xv.len()).step_by(7) {
        let (mut up, mut down) = (xv.clone(), xv.clone());
        up[e] += eps;
        down[e] -= eps;
        let fd = ((logit(&up) - logit(&down)) / (2.0 * eps as f64)).abs() as f32;
        assert!((grad[e] - fd).abs() < 2e-3 * (1.0 + fd), "element {e}: {} vs {fd}", grad[e]);
    }
}
