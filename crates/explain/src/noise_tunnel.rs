//! Captum's `NoiseTunnel` around any attribution method: the method runs on `nt_samples` noisy
//! copies `x + N(0, stdevs²)` of each input (seeded, drawn per image so that a map does not
//! depend on its batch) and the maps are combined: SmoothGrad (mean), SmoothGrad² (mean of
//! squares), VarGrad (variance: mean of squares − square of the mean).

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::attribute::{Attribute, Attribution, Method, Unchecked};
use crate::error::{ExplainError, Result};
use crate::gradient::auto_batch_rows;
use crate::model::Model;

/// How the noisy maps are combined (Captum's `nt_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseTunnelType {
    /// The mean of the noisy maps.
    SmoothGrad,
    /// The mean of their squares.
    SmoothGradSq,
    /// Their variance.
    VarGrad,
}

impl NoiseTunnelType {
    /// Captum's name: `smoothgrad`, `smoothgrad_sq`, `vargrad`.
    pub fn name(self) -> &'static str {
        match self {
            NoiseTunnelType::SmoothGrad => "smoothgrad",
            NoiseTunnelType::SmoothGradSq => "smoothgrad_sq",
            NoiseTunnelType::VarGrad => "vargrad",
        }
    }
}

/// `inner` under a noise tunnel.
#[derive(Debug, Clone)]
pub struct NoiseTunnel {
    /// The method run on the noisy inputs.
    pub inner: Method,
    /// How the maps are combined.
    pub kind: NoiseTunnelType,
    /// Noisy copies per input.
    pub samples: usize,
    /// The noise's standard deviation.
    pub stdevs: f32,
    /// Seed of the noise.
    pub seed: u64,
}

impl NoiseTunnel {
    /// Captum's defaults: SmoothGrad, 5 samples, standard deviation 1.
    pub fn new(inner: Method) -> Self {
        Self { inner, kind: NoiseTunnelType::SmoothGrad, samples: 5, stdevs: 1.0, seed: 0 }
    }
}

impl Attribute for NoiseTunnel {
    fn name(&self) -> String {
        format!("{}-{}", self.inner.name(), self.kind.name())
    }

    fn multiplies_by_inputs(&self) -> bool {
        self.inner.multiplies_by_inputs()
    }
    fn with_layer(&self, layer: &str) -> Option<Method> {
        let inner = self.inner.clone().at_layer(layer);
        Some(Method::new(NoiseTunnel { inner, ..self.clone() }))
    }

    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        let b = input.dim(0)?;
        if targets.len() != b {
            return Err(ExplainError::Invalid(format!("{} targets for a batch of {b}", targets.len())));
        }
        if self.samples == 0 || !(self.stdevs >= 0.0 && self.stdevs.is_finite()) {
            return Err(ExplainError::Invalid(format!("NoiseTunnel needs samples ≥ 1 and a finite stdevs ≥ 0, got {} and {}", self.samples, self.stdevs)));
        }
        let x: Vec<f32> = input.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let per_image = x.len() / b.max(1);
        let noise = Normal::new(0.0f32, self.stdevs).map_err(|e| ExplainError::Invalid(e.to_string()))?;
        let n = self.samples;
        // Rows: image-major, n noisy copies each, run in chunks sized to memory.
        let rows_per_chunk = auto_batch_rows(per_image);
        // Per image: the running sum and sum of squares of its maps (sized by the first map:
        // a method's map need not be shaped like the input, Grad-CAM's is [1, H, W]).
        let mut sums: Vec<Vec<f64>> = Vec::new();
        let mut squares: Vec<Vec<f64>> = Vec::new();
        let mut out_dims: Option<Vec<usize>> = None;
        let mut rngs: Vec<ChaCha8Rng> = (0..b).map(|_| ChaCha8Rng::seed_from_u64(self.seed)).collect();
        let all: Vec<(usize, usize)> = (0..b).flat_map(|i| (0..n).map(move |s| (i, s))).collect();
        for chunk in all.chunks(rows_per_chunk) {
            let mut noisy = Vec::with_capacity(chunk.len() * per_image);
            for &(i, _) in chunk {
                let rng = &mut rngs[i];
                noisy.extend(x[i * per_image..(i + 1) * per_image].iter().map(|v| v + noise.sample(rng)));
            }
            let mut dims = input.dims().to_vec();
            dims[0] = chunk.len();
            let batch = Tensor::from_vec(noisy, dims, input.device())?;
            let chunk_targets: Vec<usize> = chunk.iter().map(|&(i, _)| targets[i]).collect();
            let a = self.inner.compute(model, &batch, &chunk_targets)?.check(&self.inner.name())?.attribution;
            let per_row = a.elem_count() / chunk.len();
            if out_dims.is_none() {
                sums = vec![vec![0.0; per_row]; b];
                squares = vec![vec![0.0; per_row]; b];
            }
            let mut dims = a.dims().to_vec();
            dims[0] = b;
            out_dims = Some(dims);
            let values: Vec<f32> = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            for (row, &(i, _)) in values.chunks(per_row).zip(chunk) {
                for ((s, q), v) in sums[i].iter_mut().zip(squares[i].iter_mut()).zip(row) {
                    *s += *v as f64;
                    *q += (*v as f64) * (*v as f64);
                }
            }
        }
        let n = n as f64;
        let combined: Vec<f32> = sums
            .iter()
            .zip(&squares)
            .flat_map(|(s, q)| {
                s.iter().zip(q).map(move |(s, q)| {
                    let (mean, mean_sq) = (s / n, q / n);
                    (match self.kind {
                        NoiseTunnelType::SmoothGrad => mean,
                        NoiseTunnelType::SmoothGradSq => mean_sq,
                        NoiseTunnelType::VarGrad => mean_sq - mean * mean,
                    }) as f32
                })
            })
            .collect();
        let dims = out_dims.expect("at least one chunk ran");
        Ok(Unchecked::new(Attribution::map(Tensor::from_vec(combined, dims, input.device())?)))
    }
}
