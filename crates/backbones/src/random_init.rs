//! Seeded random weights for offline runs: a `VarBuilder` backend that makes up each tensor
//! from its name and shape. The same seed gives the same weights on every machine.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// Draws every requested tensor from a generator seeded by (seed, tensor name).
///
/// Initialisation by role, close to PyTorch's defaults: convolution kernels Kaiming-normal
/// (fan in), linear weights U(±1/√fan_in), 1-D weights (BatchNorm/LayerNorm scales) U(0.5, 1.5),
/// 1-D biases and running means N(0, 0.1), running variances U(0.5, 1.5), everything else
/// (class token, position embeddings) N(0, 0.02).
pub struct RandomInit {
    pub seed: u64,
}

impl RandomInit {
    fn values(&self, name: &str, shape: &Shape) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ fnv1a(name));
        let dims = shape.dims();
        let n = shape.elem_count();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let normal = |std: f32, rng: &mut ChaCha8Rng| {
            let d = Normal::new(0.0, std).expect("positive std");
            (0..n).map(|_| d.sample(rng)).collect::<Vec<f32>>()
        };
        let uniform = |lo: f32, hi: f32, rng: &mut ChaCha8Rng| {
            let d = Uniform::new(lo, hi).expect("lo < hi");
            (0..n).map(|_| d.sample(rng)).collect::<Vec<f32>>()
        };
        match (leaf, dims.len()) {
            ("running_var", _) => uniform(0.5, 1.5, &mut rng),
            ("running_mean", _) | ("bias", 1) => normal(0.1, &mut rng),
            ("weight", 1) => uniform(0.5, 1.5, &mut rng),
            ("weight", 4) => {
                let fan_in: usize = dims[1..].iter().product();
                normal((2.0 / fan_in as f32).sqrt(), &mut rng)
            }
            ("weight", 2) => {
                let bound = 1.0 / (dims[1] as f32).sqrt();
                uniform(-bound, bound, &mut rng)
            }
            _ => normal(0.02, &mut rng),
        }
    }
}

impl SimpleBackend for RandomInit {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        Tensor::from_vec(self.values(name, &s), s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights: the shape of `{name}` must be given")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        // Optional tensors (an ImageNet `fc`, a `vit.` prefix probe) are absent: random
        // backbones get the layout the code picks by default.
        false
    }
}

/// FNV-1a, a stable string hash (std's hasher may change between Rust releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
