//! candle-transformers' own models, as a downstream crate has them (random weights): the
//! forward-only methods explain both; Saliency either gives a map or says which candle op cut
//! the backward pass and names the forward-only methods.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::{resnet, vit};
use tgc_explain::{Attribute, FeatureMask, FnModel, KernelShap, Model, Occlusion, Saliency, ShapleyValueSampling};

fn tiny_vit_config() -> vit::Config {
    vit::Config {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        hidden_act: candle_nn::Activation::Gelu,
        layer_norm_eps: 1e-12,
        image_size: 32,
        patch_size: 8,
        num_channels: 3,
        qkv_bias: true,
    }
}

/// Finite, not all zero, shaped like the input.
fn check_map(model: &dyn Model, x: &Tensor, method: &dyn Attribute, what: &str) {
    let out = method.attribute(model, x, &[1]).unwrap_or_else(|e| panic!("{what}, {}: {e}", method.name()));
    assert_eq!(out.attribution.dims(), x.dims(), "{what}, {}", method.name());
    let values: Vec<f32> = out.attribution.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0), "{what}, {}", method.name());
}

#[test]
fn candle_transformers_models_are_explained_by_the_forward_only_methods() {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let resnet = resnet::resnet18(2, vb.pp("resnet")).unwrap();
    let vit = vit::Model::new(&tiny_vit_config(), 2, vb.pp("vit")).unwrap();
    let x = Tensor::rand(0f32, 1.0, (1, 3, 32, 32), &device).unwrap();
    let models: [(&str, Box<dyn Model>); 2] =
        [("resnet18", Box::new(FnModel(|x: &Tensor| resnet.forward(x)))), ("vit", Box::new(FnModel(|x: &Tensor| vit.forward(x))))];
    let grid = FeatureMask::Grid(8); // 16 features
    let methods: [&dyn Attribute; 3] = [
        &Occlusion { window: (8, 8), stride: (8, 8), ..Default::default() },
        &ShapleyValueSampling { mask: grid.clone(), n_samples: 3, ..Default::default() },
        &KernelShap { mask: grid, n_samples: 40, ..Default::default() },
    ];
    for (what, model) in &models {
        for method in methods {
            check_map(model.as_ref(), &x, method, what);
        }
    }
    // Saliency: candle's max_pool2d refuses its backward for ResNet's 3×3/2 pool, and its
    // fused layer_norm records none for the ViT: each an error that says so and names the way out.
    let resnet_err = Saliency.attribute(models[0].1.as_ref(), &x, &[1]).unwrap_err().to_string();
    assert!(resnet_err.contains("maxpool2d") && resnet_err.contains("ShapleyValueSampling"), "{resnet_err}");
    let vit_err = Saliency.attribute(models[1].1.as_ref(), &x, &[1]).unwrap_err().to_string();
    assert!(vit_err.contains("layer_norm") && vit_err.contains("ShapleyValueSampling") && vit_err.contains("#2168"), "{vit_err}");
}
