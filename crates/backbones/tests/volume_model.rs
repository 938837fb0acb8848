//! The 3-D model: shapes, loading from safetensors, and Grad-CAM on volumes checked against
//! finite differences.

use candle_core::{Device, Tensor};
use tgc_backbones::{ResNet3d, WeightSource};
use tgc_explain::{Attribute, GradCam, Hooks, LayerGradient, Model, Saliency};

fn volume(b: usize, seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..b * 8 * 8 * 8)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor::from_vec(v, (b, 1, 8, 8, 8), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn grad_cam_on_a_volume_matches_finite_differences() {
    let model = ResNet3d::load(&WeightSource::Random { seed: 3 }).unwrap();
    assert!(model.is_random());
    let x = volume(2, 1);
    assert_eq!(model.forward(&x, &Hooks::none()).unwrap().dims(), &[2, 2]);
    let cam = GradCam::default().attribute(&model, &x, &[1, 0]).unwrap();
    assert_eq!(cam.attribution.dims(), &[2, 1, 8, 8, 8]);
    assert_eq!(cam.layer_attribution.unwrap().dims(), &[2, 4, 4, 4], "block2 is after the stride-2 convolution");
    // At block1 the rest of the pass is non-linear. Grad-CAM's channel weight is the mean
    // gradient over positions, i.e. the derivative along "every position of channel k":
    // (y(A + ε·1_k) − y(A − ε·1_k)) / (2ε·S).
    let one = x.narrow(0, 0, 1).unwrap();
    let map = values(&GradCam::new("block1").layer_map(&model, &one, &[1]).unwrap().0);
    let hooks = Hooks::none().watch_layer("block1", LayerGradient::None);
    model.forward(&one, &hooks).unwrap();
    let a = hooks.layer_activation().unwrap();
    let (k, s) = (a.dim(1).unwrap(), 8 * 8 * 8);
    let eps = 1e-2;
    // The rest of the pass on a given activation: the layer replaced.
    let logit = |t: &Tensor| {
        let t = t.clone();
        values(&model.forward(&one, &Hooks::none().replace_layer("block1", move |_| Ok(t.clone()))).unwrap())[1] as f64
    };
    let mut weights = Vec::new();
    for c in 0..k {
        let mut bump = vec![0f32; k * s];
        bump[c * s..(c + 1) * s].fill(eps);
        let bump = Tensor::from_vec(bump, a.shape(), &Device::Cpu).unwrap();
        weights.push((logit(&(&a + &bump).unwrap()) - logit(&(&a - &bump).unwrap())) / (2.0 * eps as f64 * s as f64));
    }
    let av = values(&a);
    let fd: Vec<f64> = (0..s).map(|p| (0..k).map(|c| weights[c] * av[c * s + p] as f64).sum()).collect();
    let scale = fd.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for (p, (got, want)) in map.iter().zip(&fd).enumerate() {
        assert!((*got as f64 - want).abs() <= 2e-2 * scale, "position {p}: {got} vs {want}");
    }
    // The input gradient has the volume's shape.
    assert_eq!(Saliency.attribute(&model, &x, &[1, 1]).unwrap().attribution.dims(), &[2, 1, 8, 8, 8]);
    // Images are refused by name.
    let err = model.forward(&Tensor::zeros((1, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap(), &Hooks::none()).unwrap_err().to_string();
    assert!(err.contains("[B, 1, D, H, W]"), "{err}");
}

#[test]
fn the_3d_model_loads_from_safetensors_and_names_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let random = ResNet3d::load(&WeightSource::Random { seed: 9 }).unwrap();
    // Write random weights under the checkpoint's names, and load them back from the file.
    let vb = tgc_backbones::load_weights(&WeightSource::Random { seed: 9 }, &Device::Cpu).unwrap().vb;
    let mut tensors = std::collections::HashMap::new();
    for (name, shape) in [
        ("stem.weight", vec![8, 1, 3, 3, 3]),
        ("stem.bias", vec![8]),
        ("block1.conv1.weight", vec![8, 8, 3, 3, 3]),
        ("block1.conv1.bias", vec![8]),
        ("block1.conv2.weight", vec![8, 8, 3, 3, 3]),
        ("block1.conv2.bias", vec![8]),
        ("down.weight", vec![16, 8, 3, 3, 3]),
        ("down.bias", vec![16]),
        ("block2.conv1.weight", vec![16, 16, 3, 3, 3]),
        ("block2.conv1.bias", vec![16]),
        ("block2.conv2.weight", vec![16, 16, 3, 3, 3]),
        ("block2.conv2.bias", vec![16]),
        ("fc.weight", vec![2, 16]),
        ("fc.bias", vec![2]),
    ] {
        tensors.insert(name.to_owned(), vb.get(shape, name).unwrap());
    }
    let path = dir.path().join("model3d.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let loaded = ResNet3d::load(&WeightSource::File(path.clone())).unwrap();
    assert!(!loaded.is_random());
    let x = volume(1, 4);
    assert_eq!(values(&loaded.forward(&x, &Hooks::none()).unwrap()), values(&random.forward(&x, &Hooks::none()).unwrap()));
    tensors.remove("down.bias");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = ResNet3d::load(&WeightSource::File(path)).unwrap_err().to_string();
    assert!(err.contains("down.bias"), "{err}");
}
