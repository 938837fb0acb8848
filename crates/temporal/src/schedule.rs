//! The learning-rate schedule and early stopping, as small state machines.

/// PyTorch's `ReduceLROnPlateau(mode="min", factor, patience, min_lr)` with its default
/// relative threshold 1e-4 and no cooldown.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    pub factor: f64,
    pub patience: usize,
    pub min_lr: f64,
    pub threshold: f64,
    best: f64,
    bad_epochs: usize,
}

impl ReduceLrOnPlateau {
    pub fn new(factor: f64, patience: usize, min_lr: f64) -> Self {
        Self { factor, patience, min_lr, threshold: 1e-4, best: f64::INFINITY, bad_epochs: 0 }
    }

    /// Records an epoch's loss and returns the learning rate to use next.
    pub fn step(&mut self, loss: f64, lr: f64) -> f64 {
        if loss < self.best * (1.0 - self.threshold) {
            self.best = loss;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            let new_lr = (lr * self.factor).max(self.min_lr);
            // PyTorch skips updates smaller than eps = 1e-8.
            if lr - new_lr > 1e-8 {
                return new_lr;
            }
        }
        lr
    }
}

/// Stops after `patience` epochs without a strictly lower loss; remembers the best epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    pub patience: usize,
    best: f64,
    best_epoch: Option<usize>,
    waited: usize,
}

/// What the training loop should do after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The loss improved: save this epoch as the best checkpoint.
    Improved,
    Continue,
    Stop,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> Self {
        Self { patience, best: f64::INFINITY, best_epoch: None, waited: 0 }
    }

    pub fn step(&mut self, epoch: usize, loss: f64) -> Verdict {
        if loss < self.best {
            self.best = loss;
            self.best_epoch = Some(epoch);
            self.waited = 0;
            Verdict::Improved
        } else {
            self.waited += 1;
            if self.waited >= self.patience {
                Verdict::Stop
            } else {
                Verdict::Continue
            }
        }
    }

    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }

    pub fn best_loss(&self) -> f64 {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_reduces_after_patience_bad_epochs() {
        let mut s = ReduceLrOnPlateau::new(0.1, 3, 1e-6);
        let mut lr = 1e-3;
        // 1.0 sets the best; three non-improving epochs are tolerated, the fourth reduces.
        for (loss, expected) in [(1.0, 1e-3), (1.0, 1e-3), (0.99995, 1e-3), (1.2, 1e-3), (1.1, 1e-4)] {
            lr = s.step(loss, lr);
            assert!((lr - expected).abs() < 1e-15, "loss {loss}: lr {lr}");
        }
        // The counter restarts after a reduction.
        for _ in 0..3 {
            lr = s.step(1.1, lr);
        }
        assert!((lr - 1e-4).abs() < 1e-15);
        lr = s.step(1.1, lr);
        assert!((lr - 1e-5).abs() < 1e-15);
    }

    #[test]
    fn plateau_never_goes_below_min_lr() {
        let mut s = ReduceLrOnPlateau::new(0.1, 0, 1e-6);
        let mut lr = 1e-5;
        s.step(1.0, lr);
        lr = s.step(2.0, lr);
        assert!((lr - 1e-6).abs() < 1e-18);
        lr = s.step(2.0, lr);
        assert!((lr - 1e-6).abs() < 1e-18);
    }

    #[test]
    fn early_stopping_waits_patience_epochs() {
        let mut e = EarlyStopping::new(2);
        assert_eq!(e.step(0, 1.0), Verdict::Improved);
        assert_eq!(e.step(1, 0.5), Verdict::Improved);
        assert_eq!(e.step(2, 0.5), Verdict::Continue);
        assert_eq!(e.step(3, 0.4), Verdict::Improved);
        assert_eq!(e.step(4, 0.6), Verdict::Continue);
        assert_eq!(e.step(5, 0.7), Verdict::Stop);
        assert_eq!(e.best_epoch(), Some(3));
        assert_eq!(e.best_loss(), 0.4);
    }
}
