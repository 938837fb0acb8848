//! A downstream user's view of `tgc-explain`: a small candle-nn CNN defined here (no other tgc
//! crate), trained for a few steps on generated images, then explained with Grad-CAM at a
//! chosen layer, Integrated Gradients and Occlusion, each saved as a PNG overlay.
//!
//!     cargo run --release -p tgc-explain --example own_cnn -- [OUT_DIR] [conv1|conv2]
//!
//! The data: 32×32 grey images of noise; class 1 has a bright 8×8 square in them (at a place
//! that varies), class 0 has none. A network that learnt the task should point at the square.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{conv2d, linear, loss, Conv2d, Conv2dConfig, Linear, Optimizer, VarBuilder, VarMap};
use tgc_explain::render::{blended_heat_map, normalize_attr, save_png, Sign};
use tgc_explain::{GradCam, Hooks, IntegratedGradients, Method, Model, Occlusion};

/// conv1 (1→8, 3×3) → ReLU → conv2 (8→16, 3×3) → ReLU → global average pool → fc (16→2).
struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
}

impl SmallCnn {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        Ok(Self { conv1: conv2d(1, 8, 3, same, vb.pp("conv1"))?, conv2: conv2d(8, 16, 3, same, vb.pp("conv2"))?, fc: linear(16, 2, vb.pp("fc"))? })
    }

    fn head(&self, a2: &Tensor) -> candle_core::Result<Tensor> {
        self.fc.forward(&a2.mean((2, 3))?)
    }
}

/// The pass, written once: its ReLUs and its two layers marked for the methods.
impl Model for SmallCnn {
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let a1 = hooks.layer("conv1", &hooks.relu(&self.conv1.forward(x)?)?)?;
        let a2 = hooks.layer("conv2", &hooks.relu(&self.conv2.forward(&a1)?)?)?;
        self.head(&a2)
    }

    /// Where the layer methods may look: after conv1's ReLU or after conv2's.
    fn layers(&self) -> Vec<String> {
        vec!["conv1".into(), "conv2".into()]
    }
}

/// `n` images `[n, 1, 32, 32]`, their labels, and where each square's corner is, from a small
/// deterministic generator.
fn data(n: usize, seed: u64, device: &Device) -> candle_core::Result<(Tensor, Tensor, Vec<(usize, usize)>)> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let (mut pixels, mut labels, mut corners) = (Vec::with_capacity(n * 1024), Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let label = (i % 2) as u32;
        let (y0, x0) = (2 + (next() * 20.0) as usize, 2 + (next() * 20.0) as usize);
        for y in 0..32 {
            for x in 0..32 {
                let square = label == 1 && (y0..y0 + 8).contains(&y) && (x0..x0 + 8).contains(&x);
                pixels.push(0.3 * next() + if square { 0.7 } else { 0.0 });
            }
        }
        labels.push(label);
        corners.push((y0, x0));
    }
    Ok((Tensor::from_vec(pixels, (n, 1, 32, 32), device)?, Tensor::from_vec(labels, n, device)?, corners))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().unwrap_or_else(|| "own_cnn_maps".into()));
    let layer = args.next().unwrap_or_else(|| "conv2".into());
    std::fs::create_dir_all(&out)?;
    let device = Device::Cpu;

    // Train for a few steps.
    let varmap = VarMap::new();
    let model = SmallCnn::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let (x, y, _) = data(64, 1, &device)?;
    let mut opt = candle_nn::AdamW::new_lr(varmap.all_vars(), 0.02)?;
    for step in 0..60 {
        let logits = model.forward(&x, &Hooks::none())?;
        let l = loss::cross_entropy(&logits, &y)?;
        opt.backward_step(&l)?;
        if step % 20 == 0 {
            println!("step {step:>2}: loss {:.4}", l.to_scalar::<f32>()?);
        }
    }
    let (test_x, test_y, corners) = data(8, 2, &device)?;
    let predicted = model.forward(&test_x, &Hooks::none())?.argmax(D::Minus1)?;
    let right = predicted.eq(&test_y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    println!("test accuracy: {right}/8");

    // Explain one class-1 image for class 1.
    let image = test_x.narrow(0, 1, 1)?;
    let methods = [
        Method::new(GradCam::new(layer)),
        Method::new(IntegratedGradients::default()),
        Method::new(Occlusion { window: (4, 4), stride: (2, 2), ..Default::default() }),
    ];
    let slice: Vec<f32> = image.flatten_all()?.to_vec1()?;
    for (method, result) in methods.iter().zip(Method::attribute_all(&methods, &model, &image, &[1])?) {
        let (values, h, w) = normalize_attr(&result.attribution.squeeze(0)?, Sign::AbsoluteValue, 2.0)?;
        let path = out.join(format!("{}.png", method.name()));
        save_png(&blended_heat_map(&slice, &values, h, w, Sign::AbsoluteValue.colormap(), 0.5), &path)?;
        // How much of the map lies on the square (1/16 of the image).
        let (y0, x0) = corners[1];
        let on_square: f32 = (y0..y0 + 8).flat_map(|y| (x0..x0 + 8).map(move |x| y * 32 + x)).map(|i| values[i]).sum();
        let total: f32 = values.iter().sum();
        println!("{:<22} {:>5.1} % of the map on the square → {}", method.name(), 100.0 * on_square / total.max(f32::MIN_POSITIVE), path.display());
    }
    Ok(())
}
