//! Seeded random weights for offline runs: a `VarBuilder` backend that makes up each tensor
//! from its name and shape. The same seed gives the same weights on every machine.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Draws every requested tensor from a generator seeded by (seed, tensor name).
///
/// Initialisation by role, as a freshly constructed torchvision/transformers model: convolution
/// kernels Kaiming-normal (fan out, ReLU gain) as torchvision's ResNet does; norm scales 1,
/// biases and shifts 0, running means 0 and variances 1; everything else (linear weights, the
/// patch projection, class token, position embeddings) N(0, 0.02) as transformers' ViT does.
/// Changes whenever the initialisation changes, so that digests (and feature caches keyed by
/// them) of `random:<seed>` weights never mix two schemes.
pub const RANDOM_INIT_VERSION: &str = "tgc-random-init-v2";

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
        match (leaf, dims.len()) {
            ("running_var", _) | ("weight", 1) => vec![1.0; n],
            ("running_mean", _) => vec![0.0; n],
            ("bias", _) => vec![0.0; n],
            ("weight", 4) if !name.contains("patch_embeddings") => {
                let fan_out = dims[0] * dims[2] * dims[3];
                normal((2.0 / fan_out as f32).sqrt(), &mut rng)
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

/// Another backend's weights with every tensor under one of `prefixes` re-drawn as
/// [`RandomInit`] would draw it: the model-parameter randomisation test (Adebayo et al. 2018)
/// re-randomises a trained network cascading from the top. A prefix matches a tensor name
/// equal to it or starting with it and a dot, with or without a leading `vit.`.
pub struct PartialRandom {
    pub inner: candle_nn::VarBuilder<'static>,
    pub random: RandomInit,
    pub prefixes: Vec<String>,
}

impl PartialRandom {
    fn randomized(&self, name: &str) -> bool {
        let name = name.strip_prefix("vit.").unwrap_or(name);
        self.prefixes.iter().any(|p| name == p || name.starts_with(&format!("{p}.")))
    }
}

impl SimpleBackend for PartialRandom {
    fn get(&self, s: Shape, name: &str, init: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if self.randomized(name) {
            return self.random.get(s, name, init, dtype, dev);
        }
        self.inner.get_with_hints_dtype(s, name, init, dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> Result<Tensor> {
        self.inner.get_unchecked_dtype(name, dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// FNV-1a, a stable string hash (std's hasher may change between Rust releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
