//! The study's BatchNorm behaviour while training the probe (`run.py` calls `model.train()`
//! every batch on a frozen ResNet-18): each training batch runs through the backbone in
//! training mode, so BatchNorm uses that batch's statistics and drifts its running statistics;
//! every evaluation recomputes the features in eval mode with the statistics as they are then;
//! the statistics saved with the best epoch's head come back with it (the study's early
//! stopping saves the whole model's state dict).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use tgc_backbones::resnet_train_bn::StudyBnResNet18;

use crate::error::{Result, TrainError};
use crate::train::{EpochInputs, Samples};

/// The images the backbone sees (preprocessed, `[N, 3, H, W]`, one per features row) and the
/// pretrained backbone every iteration starts from.
pub struct StudyBackbone {
    pub net: StudyBnResNet18,
    pub images: Tensor,
}

/// Training and selection rows recomputed by a ResNet-18 with BatchNorm in training mode.
pub struct StudyBnInputs<'a> {
    pub net: StudyBnResNet18,
    images: &'a Tensor,
    train_rows: Vec<usize>,
    train_labels: Vec<u8>,
    selection_rows: Vec<usize>,
    selection_labels: Vec<u8>,
    best: HashMap<String, Tensor>,
}

/// Rows per eval-mode forward pass.
const EVAL_BATCH: usize = 8;

impl<'a> StudyBnInputs<'a> {
    pub fn new(backbone: &'a StudyBackbone, train: (Vec<usize>, Vec<u8>), selection: (Vec<usize>, Vec<u8>)) -> Self {
        let net = backbone.net.clone();
        let best = net.running_stats();
        Self { net, images: &backbone.images, train_rows: train.0, train_labels: train.1, selection_rows: selection.0, selection_labels: selection.1, best }
    }

    fn rows(&self, rows: &[usize]) -> Result<Tensor> {
        let idx = Tensor::from_vec(rows.iter().map(|&i| i as u32).collect::<Vec<_>>(), rows.len(), self.images.device())?;
        Ok(self.images.index_select(&idx, 0)?)
    }

    /// Features of `rows` in eval mode (the current running statistics), with their labels.
    pub fn eval_samples(&mut self, rows: &[usize], labels: &[u8]) -> Result<Samples> {
        let mut values = Vec::new();
        let mut width = 0;
        for chunk in rows.chunks(EVAL_BATCH) {
            let x = self.rows(chunk)?;
            let f = self.net.features(&x, false)?.to_dtype(DType::F32)?;
            width = f.dim(1)?;
            values.extend(f.flatten_all()?.to_vec1::<f32>()?);
        }
        Samples::new(values, width, labels.to_vec())
    }
}

impl EpochInputs for StudyBnInputs<'_> {
    fn train_labels(&self) -> &[u8] {
        &self.train_labels
    }

    fn train_batch(&mut self, batch: &[usize]) -> Result<Tensor> {
        let rows: Vec<usize> = batch.iter().map(|&i| self.train_rows[i]).collect();
        let x = self.rows(&rows)?;
        // The head trains on the CPU, wherever the backbone runs.
        let features = self.net.features(&x, true).map_err(|e| TrainError::Invalid(format!("backbone in training mode: {e}")))?;
        Ok(features.to_device(&Device::Cpu)?)
    }

    fn selection(&mut self) -> Result<Samples> {
        let (rows, labels) = (self.selection_rows.clone(), self.selection_labels.clone());
        self.eval_samples(&rows, &labels)
    }

    fn save_best(&mut self) -> Result<()> {
        self.best = self.net.running_stats();
        Ok(())
    }

    fn restore_best(&mut self) -> Result<()> {
        let best = self.best.clone();
        Ok(self.net.load_running_stats(&best)?)
    }
}
