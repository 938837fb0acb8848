//! The trainable heads: a linear probe on one image's features and the temporal DNN over a
//! patient's last visits. Parameters are candle `Var`s; checkpoints are PyTorch-style state
//! dicts (the probe's holds `weight` [2, D] and `bias` [2], like `nn.Linear`).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use crate::error::{Result, TrainError};

/// PyTorch's default `nn.Linear` initialisation: U(±1/√fan_in) for weight and bias.
fn linear_init(out: usize, inp: usize, rng: &mut ChaCha8Rng) -> Result<(Var, Var)> {
    let bound = 1.0 / (inp as f32).sqrt();
    let d = Uniform::new_inclusive(-bound, bound).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let w: Vec<f32> = (0..out * inp).map(|_| d.sample(rng)).collect();
    let b: Vec<f32> = (0..out).map(|_| d.sample(rng)).collect();
    Ok((Var::from_vec(w, (out, inp), &Device::Cpu)?, Var::from_vec(b, out, &Device::Cpu)?))
}

/// `x · Wᵀ + b` with tgc-kernels' product, whose one summation order gives the same bits on
/// every CPU (candle's would follow the CPU's cache sizes and vector width).
fn linear(x: &Tensor, w: &Var, b: &Var) -> Result<Tensor> {
    Ok(tgc_kernels::ops::matmul(x, &w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?)
}

/// `Linear(D → 2)` on frozen-backbone features.
#[derive(Debug)]
pub struct LinearProbe {
    pub weight: Var,
    pub bias: Var,
}

impl LinearProbe {
    pub fn new(dim: usize, rng: &mut ChaCha8Rng) -> Result<Self> {
        let (weight, bias) = linear_init(2, dim, rng)?;
        Ok(Self { weight, bias })
    }
}

/// `Linear(L·D → hidden) → BatchNorm1d → Dropout → Linear(hidden → 2)` over flattened
/// sequences `[B, L·D]`.
#[derive(Debug)]
pub struct TemporalDnn {
    pub fc1: (Var, Var),
    pub bn: (Var, Var),
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub fc2: (Var, Var),
    pub dropout: f32,
    pub momentum: f64,
    pub eps: f64,
}

impl TemporalDnn {
    pub fn new(input: usize, hidden: usize, dropout: f32, rng: &mut ChaCha8Rng) -> Result<Self> {
        let fc1 = linear_init(hidden, input, rng)?;
        let fc2 = linear_init(2, hidden, rng)?;
        let cpu = Device::Cpu;
        Ok(Self {
            fc1,
            bn: (Var::ones(hidden, DType::F32, &cpu)?, Var::zeros(hidden, DType::F32, &cpu)?),
            running_mean: Tensor::zeros(hidden, DType::F32, &cpu)?,
            running_var: Tensor::ones(hidden, DType::F32, &cpu)?,
            fc2,
            dropout,
            momentum: 0.1,
            eps: 1e-5,
        })
    }
}

impl Head {
    /// Rebuilds a head from a checkpoint: a probe (`weight`, `bias`) or a temporal DNN
    /// (`fc1.*`, `bn.*`, `fc2.*`).
    pub fn from_state_dict(state: &HashMap<String, Tensor>) -> Result<Self> {
        Self::from_state_dict_on(state, &Device::Cpu)
    }

    /// The same head with its parameters and statistics on `device` (a GPU's, to explain it
    /// beside a backbone there).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Self::from_state_dict_on(&self.state_dict()?, device)
    }

    /// The device its parameters are on.
    pub fn device(&self) -> &Device {
        match self {
            Head::Probe(p) => p.weight.as_tensor().device(),
            Head::Dnn(m) => m.fc1.0.as_tensor().device(),
        }
    }

    /// [`Head::from_state_dict`] with the parameters placed on `device`.
    pub fn from_state_dict_on(state: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let cpu = device.clone();
        let mut names: Vec<&String> = state.keys().collect();
        names.sort();
        for name in names {
            if let Some((count, first)) = tgc_explain::non_finite(&state[name])? {
                return Err(TrainError::Invalid(format!("checkpoint tensor `{name}` holds {count} NaN or infinite value(s), first at flat index {first}")));
            }
        }
        let var = |k: &str| -> Result<Var> {
            let t = state.get(k).ok_or_else(|| TrainError::Invalid(format!("checkpoint lacks `{k}`")))?;
            Ok(Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(&cpu)?)?)
        };
        if state.contains_key("fc1.weight") {
            let fc1 = (var("fc1.weight")?, var("fc1.bias")?);
            let hidden = fc1.0.as_tensor().dim(0)?;
            let mut dnn = TemporalDnn {
                fc1,
                bn: (var("bn.weight")?, var("bn.bias")?),
                running_mean: var("bn.running_mean")?.as_tensor().clone(),
                running_var: var("bn.running_var")?.as_tensor().clone(),
                fc2: (var("fc2.weight")?, var("fc2.bias")?),
                dropout: 0.1,
                momentum: 0.1,
                eps: 1e-5,
            };
            for (name, t) in [("fc1.bias", dnn.fc1.1.as_tensor()), ("bn.weight", dnn.bn.0.as_tensor()), ("bn.running_mean", &dnn.running_mean)] {
                if t.dims() != [hidden] {
                    return Err(TrainError::Invalid(format!("checkpoint `{name}` has shape {:?}, expected [{hidden}]", t.dims())));
                }
            }
            dnn.running_var = dnn.running_var.contiguous()?;
            let var: Vec<f32> = dnn.running_var.flatten_all()?.to_vec1()?;
            if let Some(i) = var.iter().position(|&v| v < 0.0) {
                return Err(TrainError::Invalid(format!("checkpoint `bn.running_var` is negative at {i} ({}); a variance cannot be", var[i])));
            }
            Ok(Head::Dnn(dnn))
        } else {
            Ok(Head::Probe(LinearProbe { weight: var("weight")?, bias: var("bias")? }))
        }
    }

    /// Input width: D for a probe, seq_len·D for the DNN.
    pub fn input_width(&self) -> Result<usize> {
        Ok(match self {
            Head::Probe(p) => p.weight.as_tensor().dim(1)?,
            Head::Dnn(m) => m.fc1.0.as_tensor().dim(1)?,
        })
    }
}

/// A head of either kind.
#[derive(Debug)]
pub enum Head {
    Probe(LinearProbe),
    Dnn(TemporalDnn),
}

impl Head {
    /// Logits `[B, 2]` in eval mode (running BatchNorm statistics, no dropout).
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Head::Probe(p) => linear(x, &p.weight, &p.bias),
            Head::Dnn(m) => {
                let h = linear(x, &m.fc1.0, &m.fc1.1)?;
                let h = h
                    .broadcast_sub(&m.running_mean)?
                    .broadcast_div(&(&m.running_var + m.eps)?.sqrt()?)?
                    .broadcast_mul(m.bn.0.as_tensor())?
                    .broadcast_add(m.bn.1.as_tensor())?;
                linear(&h, &m.fc2.0, &m.fc2.1)
            }
        }
    }

    /// Logits in train mode: batch statistics (and a running-statistics update) and dropout.
    pub fn forward_train(&mut self, x: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        match self {
            Head::Probe(_) => self.forward_eval(x),
            Head::Dnn(m) => {
                let h = linear(x, &m.fc1.0, &m.fc1.1)?;
                let n = h.dim(0)?;
                if n < 2 {
                    return Err(TrainError::Invalid("BatchNorm1d needs at least 2 samples per training batch".into()));
                }
                let mean = h.mean_keepdim(0)?;
                let centered = h.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim(0)?;
                let normed = centered.broadcast_div(&(&var + m.eps)?.sqrt()?)?;
                let h = normed.broadcast_mul(m.bn.0.as_tensor())?.broadcast_add(m.bn.1.as_tensor())?;
                // Running statistics use the unbiased variance, as PyTorch does.
                let unbiased = (var.squeeze(0)?.detach() * (n as f64 / (n as f64 - 1.0)))?;
                m.running_mean = ((&m.running_mean * (1.0 - m.momentum))? + (mean.squeeze(0)?.detach() * m.momentum)?)?;
                m.running_var = ((&m.running_var * (1.0 - m.momentum))? + (unbiased * m.momentum)?)?;
                let h = if m.dropout > 0.0 {
                    let keep = 1.0 - m.dropout;
                    let mask: Vec<f32> = (0..h.elem_count()).map(|_| if rng.random::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
                    let mask = Tensor::from_vec(mask, h.shape(), &Device::Cpu)?;
                    (h * mask)?
                } else {
                    h
                };
                linear(&h, &m.fc2.0, &m.fc2.1)
            }
        }
    }

    pub fn vars(&self) -> Vec<Var> {
        match self {
            Head::Probe(p) => vec![p.weight.clone(), p.bias.clone()],
            Head::Dnn(m) => vec![m.fc1.0.clone(), m.fc1.1.clone(), m.bn.0.clone(), m.bn.1.clone(), m.fc2.0.clone(), m.fc2.1.clone()],
        }
    }

    /// A copy of every parameter and buffer, by PyTorch-style name.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let copy = |t: &Tensor| t.copy();
        let mut s = HashMap::new();
        match self {
            Head::Probe(p) => {
                s.insert("weight".into(), copy(p.weight.as_tensor())?);
                s.insert("bias".into(), copy(p.bias.as_tensor())?);
            }
            Head::Dnn(m) => {
                for (name, t) in [
                    ("fc1.weight", m.fc1.0.as_tensor()),
                    ("fc1.bias", m.fc1.1.as_tensor()),
                    ("bn.weight", m.bn.0.as_tensor()),
                    ("bn.bias", m.bn.1.as_tensor()),
                    ("bn.running_mean", &m.running_mean),
                    ("bn.running_var", &m.running_var),
                    ("fc2.weight", m.fc2.0.as_tensor()),
                    ("fc2.bias", m.fc2.1.as_tensor()),
                ] {
                    s.insert(name.into(), copy(t)?);
                }
            }
        }
        Ok(s)
    }

    /// Restores a state saved by [`Head::state_dict`].
    pub fn load_state_dict(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let get = |k: &str| state.get(k).ok_or_else(|| TrainError::Invalid(format!("checkpoint lacks `{k}`")));
        match self {
            Head::Probe(p) => {
                p.weight.set(get("weight")?)?;
                p.bias.set(get("bias")?)?;
            }
            Head::Dnn(m) => {
                m.fc1.0.set(get("fc1.weight")?)?;
                m.fc1.1.set(get("fc1.bias")?)?;
                m.bn.0.set(get("bn.weight")?)?;
                m.bn.1.set(get("bn.bias")?)?;
                m.running_mean = get("bn.running_mean")?.copy()?;
                m.running_var = get("bn.running_var")?.copy()?;
                m.fc2.0.set(get("fc2.weight")?)?;
                m.fc2.1.set(get("fc2.bias")?)?;
            }
        }
        Ok(())
    }
}

/// Mean cross-entropy of logits `[B, 2]` against class indices.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(candle_nn::loss::nll(&log_probs, labels)?)
}
