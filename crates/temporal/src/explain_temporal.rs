//! Explaining the temporal model with `tgc-explain`'s methods: how much each visit mattered for
//! the prediction at the last one (any method on the sequence `[B, T, F]` of visit features,
//! summed over the features), and maps of every visit's image with gradients flowing from the
//! temporal model's output through that visit's features into the backbone.

use candle_core::{DType, Tensor};
use tgc_backbones::Backbone;
use tgc_explain::{Attribution, Hooks, Method, Model};

use crate::error::{Result, TrainError};
use crate::model::Head;

fn to_candle(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::msg(e.to_string())
}

/// The temporal head as a model of visit sequences `[B, T, F]` (`T·F` its input width; steps
/// left-padded with zeros): logits `[B, 2]`. It has no layers and no ReLU.
pub struct SequenceModel<'a> {
    pub head: &'a Head,
}

impl Model for SequenceModel<'_> {
    fn forward(&self, input: &Tensor, _hooks: &Hooks) -> candle_core::Result<Tensor> {
        let (b, t, f) = input.dims3().map_err(|_| to_candle(format!("a visit sequence is [B, T, F], got {:?}", input.dims())))?;
        self.head.forward_eval(&input.reshape((b, t * f))?).map_err(to_candle)
    }
}

/// Importance of each of the `seq_len` steps of one sequence for class `target`: `method`'s
/// attribution of the step's feature vector, summed (Integrated Gradients from the all-zero
/// sequence, Input×Gradient, …). `sequence` is `[seq_len · dim]` with zeros for padded steps,
/// whose importance under IG and Input×Gradient is then exactly zero (their input equals the
/// baseline).
pub fn step_importance(head: &Head, sequence: &[f32], dim: usize, target: usize, method: &Method) -> Result<Vec<f32>> {
    if dim == 0 || sequence.len() % dim != 0 || target > 1 {
        return Err(TrainError::Invalid(format!("a sequence of {} values is not steps of {dim} (target {target})", sequence.len())));
    }
    let steps = sequence.len() / dim;
    let x = Tensor::from_slice(sequence, (1, steps, dim), head.device())?;
    let attribution = method
        .attribute(&SequenceModel { head }, &x, &[target])
        .map_err(|e| TrainError::Invalid(format!("{} on the visit sequence: {e}", method.name())))?
        .attribution;
    Ok(attribution.sum(2)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

/// A patient's real visits (time order, k ≤ seq_len) with their backbone features, for
/// explaining the temporal model visit by visit.
pub struct Visits<'a> {
    backbone: &'a Backbone,
    head: &'a Head,
    seq_len: usize,
    /// `[k, D]`: the features of the recorded visit images.
    features: Tensor,
}

impl<'a> Visits<'a> {
    /// `images` `[k, 3, H, W]`, preprocessed for `backbone`; the sequence length is the head's
    /// input width over the feature dimension.
    pub fn new(backbone: &'a Backbone, head: &'a Head, images: &Tensor) -> Result<Self> {
        let dim = backbone.feature_dim();
        let width = head.input_width()?;
        let k = images.dim(0)?;
        if width % dim != 0 || k == 0 || k > width / dim {
            return Err(TrainError::Invalid(format!("{k} visits of {dim} features for a temporal model of {width} inputs")));
        }
        let features = backbone.features(images).map_err(|e| TrainError::Invalid(e.to_string()))?.detach();
        Ok(Self { backbone, head, seq_len: width / dim, features })
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The left-padded sequence `[seq_len · D]` of the recorded visits.
    pub fn sequence(&self) -> Result<Vec<f32>> {
        let (k, d) = self.features.dims2()?;
        let mut sequence = vec![0f32; (self.seq_len - k) * d];
        sequence.extend(self.features.flatten_all()?.to_vec1::<f32>()?);
        Ok(sequence)
    }

    /// The temporal model as a function of visit `visit`'s image alone (0 = the oldest real
    /// visit), the other visits held at their recorded features.
    pub fn visit(&self, visit: usize) -> Result<VisitModel<'_>> {
        if visit >= self.features.dim(0)? {
            return Err(TrainError::Invalid(format!("visit {visit} of {}", self.features.dim(0)?)));
        }
        Ok(VisitModel { visits: self, visit })
    }

    /// `method` for every visit, each with its own model ([`Visits::visit`]), joined along the
    /// batch axis: row `j` is visit `j`'s map.
    pub fn attribute(&self, method: &Method, images: &Tensor, target: usize) -> Result<Attribution> {
        let k = self.features.dim(0)?;
        if images.dim(0)? != k {
            return Err(TrainError::Invalid(format!("{} images for {k} visits", images.dim(0)?)));
        }
        let mut rows = Vec::with_capacity(k);
        for j in 0..k {
            let model = self.visit(j)?;
            let out = method
                .attribute(&model, &images.narrow(0, j, 1)?, &[target])
                .map_err(|e| TrainError::Invalid(format!("{} of visit {j}: {e}", method.name())))?;
            rows.push(out);
        }
        let join = |f: fn(&Attribution) -> Option<&Tensor>| -> Result<Option<Tensor>> {
            let parts: Option<Vec<&Tensor>> = rows.iter().map(f).collect();
            Ok(parts.map(|p| Tensor::cat(&p, 0)).transpose()?)
        };
        Ok(Attribution {
            attribution: join(|a| Some(&a.attribution))?.expect("every row has an attribution"),
            layer_attribution: join(|a| a.layer_attribution.as_ref())?,
            logits: join(|a| a.logits.as_ref())?,
            convergence_delta: join(|a| a.convergence_delta.as_ref())?,
        })
    }
}

/// The temporal model's logits `[B, 2]` as a function of one visit's image: row `b` of the
/// input `[B, 3, H, W]` stands in for the visit, the other visits keep their recorded
/// features. Its gradient is the partial derivative of the sequence's prediction with respect
/// to that visit; samples of a batch do not interact.
pub struct VisitModel<'a> {
    visits: &'a Visits<'a>,
    visit: usize,
}

impl VisitModel<'_> {
    /// Logits of the sequences whose step `visit` is `features` `[B, D]`.
    fn logits(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        let v = self.visits;
        let (k, d) = v.features.dims2()?;
        let b = features.dim(0)?;
        let mut parts = Vec::new();
        if v.seq_len > k {
            parts.push(Tensor::zeros((b, v.seq_len - k, d), features.dtype(), features.device())?);
        }
        let held = |start: usize, len: usize| -> candle_core::Result<Tensor> {
            v.features.narrow(0, start, len)?.unsqueeze(0)?.broadcast_as((b, len, d))?.contiguous()
        };
        if self.visit > 0 {
            parts.push(held(0, self.visit)?);
        }
        parts.push(features.unsqueeze(1)?);
        if self.visit + 1 < k {
            parts.push(held(self.visit + 1, k - self.visit - 1)?);
        }
        let sequence = Tensor::cat(&parts, 1)?.reshape((b, v.seq_len * d))?;
        v.head.forward_eval(&sequence).map_err(to_candle)
    }
}

/// The backbone's marks (layers, ReLUs, attention); the temporal head has none.
impl Model for VisitModel<'_> {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        self.logits(&self.visits.backbone.forward(input, hooks).map_err(to_candle)?)
    }

    fn layers(&self) -> Vec<String> {
        self.visits.backbone.layer_names()
    }

    fn default_layer(&self) -> Option<String> {
        Some(self.visits.backbone.last_layer())
    }
}
