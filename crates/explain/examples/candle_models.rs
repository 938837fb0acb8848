//! A downstream crate's view: candle-transformers' own ResNet-18 and ViT (random weights, as
//! they come), explained with tgc-explain's forward-only methods, which need no gradient; and
//! what a gradient method says about them.
//!
//!     cargo run --release -p tgc-explain --example candle_models

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::{resnet, vit};
use tgc_explain::{Attribute, FeatureMask, FnModel, KernelShap, Lime, Model, Occlusion, Saliency, ShapleyValueSampling};

fn main() -> anyhow::Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let resnet = resnet::resnet18(2, vb.pp("resnet"))?;
    let config = vit::Config { image_size: 64, num_hidden_layers: 4, ..vit::Config::vit_base_patch16_224() };
    let vit = vit::Model::new(&config, 2, vb.pp("vit"))?;
    let image = Tensor::rand(0f32, 1.0, (1, 3, 64, 64), &device)?;

    let models: [(&str, Box<dyn Model + '_>); 2] =
        [("ResNet-18", Box::new(FnModel(|x: &Tensor| resnet.forward(x)))), ("ViT-B/16", Box::new(FnModel(|x: &Tensor| vit.forward(x))))];
    let grid = FeatureMask::Grid(16); // 4 × 4 features of 16 × 16 pixels
    let methods: [&dyn Attribute; 4] = [
        &Occlusion { window: (16, 16), stride: (16, 16), ..Default::default() },
        &ShapleyValueSampling { mask: grid.clone(), n_samples: 10, ..Default::default() },
        &KernelShap { mask: grid.clone(), n_samples: 200, ..Default::default() },
        &Lime { mask: grid, n_samples: 200, ..Default::default() },
    ];
    for (name, model) in &models {
        for method in methods {
            let started = std::time::Instant::now();
            let map = method.attribute(model.as_ref(), &image, &[1])?.attribution;
            let values: Vec<f32> = map.flatten_all()?.to_vec1()?;
            let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            println!("{name:9} {:24} map {:?} in [{lo:+.4}, {hi:+.4}]  {:.2} s", method.name(), map.dims(), started.elapsed().as_secs_f64());
        }
        match Saliency.attribute(model.as_ref(), &image, &[1]) {
            Ok(out) => println!("{name:9} saliency                 map {:?}", out.attribution.dims()),
            Err(e) => println!("{name:9} saliency                 refused: {e}"),
        }
    }
    Ok(())
}
