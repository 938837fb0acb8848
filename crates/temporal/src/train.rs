//! One training run: Adam, shuffled mini-batches, ReduceLROnPlateau and early stopping on a
//! selection loss, best checkpoint restored.

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::metrics::{evaluate, Metrics};
use crate::model::{cross_entropy, Head};
use crate::schedule::{EarlyStopping, ReduceLrOnPlateau, Verdict};

/// Optimiser and schedule settings (the study's values by default).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainConfig {
    pub max_epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub plateau_patience: usize,
    pub plateau_factor: f64,
    pub min_lr: f64,
    pub early_stopping_patience: usize,
}

impl TrainConfig {
    /// The linear probe: at most 25 epochs.
    pub fn probe() -> Self {
        Self {
            max_epochs: 25,
            batch_size: 8,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            plateau_patience: 3,
            plateau_factor: 0.1,
            min_lr: 1e-6,
            early_stopping_patience: 5,
        }
    }

    /// The temporal DNN: at most 100 epochs, otherwise the same.
    pub fn dnn() -> Self {
        Self { max_epochs: 100, ..Self::probe() }
    }
}

/// Rows `[n, F]` and their labels.
#[derive(Debug, Clone)]
pub struct Samples {
    pub x: Tensor,
    pub y: Vec<u8>,
}

impl Samples {
    pub fn new(rows: Vec<f32>, width: usize, y: Vec<u8>) -> Result<Self> {
        if width == 0 || rows.len() != width * y.len() {
            return Err(TrainError::Invalid(format!("{} values do not make {} rows of width {width}", rows.len(), y.len())));
        }
        Ok(Self { x: Tensor::from_vec(rows, (y.len(), width), &Device::Cpu)?, y })
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// One epoch of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Epoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub selection_loss: f64,
    pub lr: f64,
}

/// The result of [`train`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    pub history: Vec<Epoch>,
    /// The epoch whose checkpoint was restored.
    pub best_epoch: usize,
    pub stopped_early: bool,
}

/// Evaluates a head in eval mode.
pub fn eval_metrics(head: &Head, samples: &Samples) -> Result<Metrics> {
    let logits: Vec<Vec<f32>> = head.forward_eval(&samples.x)?.to_vec2()?;
    let rows: Vec<[f32; 2]> = logits.iter().map(|r| [r[0], r[1]]).collect();
    Ok(evaluate(&rows, &samples.y))
}

/// What the epochs train and select on. Fixed rows ([`train`]) or rows a backbone recomputes
/// every batch in training mode (the study's BatchNorm, `tgc_temporal::train_bn_inputs`).
pub trait EpochInputs {
    /// Labels of the training rows.
    fn train_labels(&self) -> &[u8];
    /// The inputs of the training rows `batch`, as training sees them.
    fn train_batch(&mut self, batch: &[usize]) -> Result<Tensor>;
    /// The selection set as it is evaluated now.
    fn selection(&mut self) -> Result<Samples>;
    /// The head just improved: remember the state that goes with it.
    fn save_best(&mut self) -> Result<()> {
        Ok(())
    }
    /// Training ended: go back to the state saved with the best head.
    fn restore_best(&mut self) -> Result<()> {
        Ok(())
    }
}

struct FixedInputs<'a> {
    train: &'a Samples,
    selection: &'a Samples,
}

impl EpochInputs for FixedInputs<'_> {
    fn train_labels(&self) -> &[u8] {
        &self.train.y
    }

    fn train_batch(&mut self, batch: &[usize]) -> Result<Tensor> {
        let idx = Tensor::from_vec(batch.iter().map(|&i| i as u32).collect::<Vec<_>>(), batch.len(), &Device::Cpu)?;
        Ok(self.train.x.index_select(&idx, 0)?)
    }

    fn selection(&mut self) -> Result<Samples> {
        Ok(self.selection.clone())
    }
}

/// Trains `head` on `train`, selecting by the loss on `selection`; restores the best epoch.
pub fn train(head: &mut Head, train: &Samples, selection: &Samples, config: &TrainConfig, rng: &mut ChaCha8Rng) -> Result<TrainOutcome> {
    if train.is_empty() || selection.is_empty() {
        return Err(TrainError::Invalid("training and selection sets must not be empty".into()));
    }
    train_with(head, &mut FixedInputs { train, selection }, config, rng)
}

/// [`train`] over inputs that may change from batch to batch and epoch to epoch.
pub fn train_with(head: &mut Head, inputs: &mut dyn EpochInputs, config: &TrainConfig, rng: &mut ChaCha8Rng) -> Result<TrainOutcome> {
    let n_train = inputs.train_labels().len();
    if n_train == 0 {
        return Err(TrainError::Invalid("the training set must not be empty".into()));
    }
    let params = ParamsAdamW { lr: config.lr, beta1: config.beta1, beta2: config.beta2, eps: config.eps, weight_decay: 0.0 };
    let mut opt = AdamW::new(head.vars(), params)?;
    let mut plateau = ReduceLrOnPlateau::new(config.plateau_factor, config.plateau_patience, config.min_lr);
    let mut stopper = EarlyStopping::new(config.early_stopping_patience);
    let mut best_state = head.state_dict()?;
    let mut history = Vec::new();
    let mut stopped_early = false;
    let labels = Tensor::from_vec(inputs.train_labels().iter().map(|&v| v as u32).collect::<Vec<_>>(), n_train, &Device::Cpu)?;
    let mut order: Vec<usize> = (0..n_train).collect();
    let is_dnn = matches!(head, Head::Dnn(_));
    for epoch in 0..config.max_epochs {
        order.shuffle(rng);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for batch in order.chunks(config.batch_size) {
            // BatchNorm cannot train on a single sample (PyTorch raises); skip such a remainder.
            if is_dnn && batch.len() < 2 {
                continue;
            }
            let idx = Tensor::from_vec(batch.iter().map(|&i| i as u32).collect::<Vec<_>>(), batch.len(), &Device::Cpu)?;
            let x = inputs.train_batch(batch)?;
            let y = labels.index_select(&idx, 0)?;
            let logits = head.forward_train(&x, rng)?;
            let loss = cross_entropy(&logits, &y)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(TrainError::Invalid(format!("training diverged: the loss is {value} in epoch {epoch} (lower --lr?)")));
            }
            opt.backward_step(&loss)?;
            loss_sum += value * batch.len() as f64;
            seen += batch.len();
        }
        let selection = inputs.selection()?;
        if selection.is_empty() {
            return Err(TrainError::Invalid("the selection set must not be empty".into()));
        }
        let selection_loss = eval_metrics(head, &selection)?.loss;
        let lr = opt.learning_rate();
        history.push(Epoch { epoch, train_loss: loss_sum / seen.max(1) as f64, selection_loss, lr });
        tracing::debug!(epoch, train_loss = loss_sum / seen.max(1) as f64, selection_loss, lr, "epoch");
        opt.set_learning_rate(plateau.step(selection_loss, lr));
        match stopper.step(epoch, selection_loss) {
            Verdict::Improved => {
                best_state = head.state_dict()?;
                inputs.save_best()?;
            }
            Verdict::Continue => {}
            Verdict::Stop => {
                stopped_early = true;
                break;
            }
        }
    }
    head.load_state_dict(&best_state)?;
    inputs.restore_best()?;
    Ok(TrainOutcome { history, best_epoch: stopper.best_epoch().unwrap_or(0), stopped_early })
}
