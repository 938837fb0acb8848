//! Test-split metrics: mean cross-entropy, accuracy, F1 (disease positive), ROC AUC.

use serde::Serialize;

/// Metrics of one evaluation. `auc` is `None` when the split holds a single class (the AUC is
/// undefined there; reports say so instead of printing NaN).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub loss: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub auc: Option<f64>,
    pub samples: usize,
}

/// Computes the metrics from logits `[n][2]` and labels in {0, 1}.
pub fn evaluate(logits: &[[f32; 2]], labels: &[u8]) -> Metrics {
    assert_eq!(logits.len(), labels.len(), "one label per row of logits");
    let n = labels.len();
    let mut loss = 0.0;
    let mut correct = 0;
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    let mut scores = Vec::with_capacity(n);
    for (l, &y) in logits.iter().zip(labels) {
        let (a, b) = (l[0] as f64, l[1] as f64);
        let m = a.max(b);
        let log_z = m + ((a - m).exp() + (b - m).exp()).ln();
        loss += log_z - if y == 1 { b } else { a };
        // Ties go to class 0, as torch.argmax returns the first maximum.
        let pred = u8::from(b > a);
        correct += usize::from(pred == y);
        match (pred, y) {
            (1, 1) => tp += 1,
            (1, 0) => fp += 1,
            (0, 1) => fn_ += 1,
            _ => {}
        }
        scores.push((b - log_z).exp());
    }
    Metrics {
        loss: if n > 0 { loss / n as f64 } else { f64::NAN },
        accuracy: if n > 0 { correct as f64 / n as f64 } else { f64::NAN },
        f1: f1(tp, fp, fn_),
        auc: roc_auc(&scores, labels),
        samples: n,
    }
}

/// F1 of the positive class; 0 when there are no true positives (sklearn's `zero_division=0`).
pub fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    if tp == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
    }
}

/// ROC AUC as the Mann–Whitney statistic: the probability that a random positive scores above
/// a random negative, ties counted half. `None` when either class is absent.
pub fn roc_auc(scores: &[f64], labels: &[u8]) -> Option<f64> {
    let pos: Vec<f64> = scores.iter().zip(labels).filter(|(_, &y)| y == 1).map(|(s, _)| *s).collect();
    let neg: Vec<f64> = scores.iter().zip(labels).filter(|(_, &y)| y != 1).map(|(s, _)| *s).collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &pos {
        for q in &neg {
            wins += if p > q {
                1.0
            } else if p == q {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_half() {
        // Positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4) 1, (0.8>0.1) 1, (0.4=0.4) ½, (0.4>0.1) 1.
        let auc = roc_auc(&[0.8, 0.4, 0.4, 0.1], &[1, 1, 0, 0]).unwrap();
        assert_eq!(auc, 3.5 / 4.0);
        assert_eq!(roc_auc(&[0.1, 0.9], &[1, 0]), Some(0.0));
        assert_eq!(roc_auc(&[0.3, 0.6], &[1, 1]), None);
    }

    #[test]
    fn f1_with_no_predicted_positives_is_zero() {
        assert_eq!(f1(0, 0, 3), 0.0);
        assert_eq!(f1(2, 1, 1), 4.0 / 6.0);
    }

    #[test]
    fn evaluate_by_hand() {
        // Row 1: logits (0, ln 3): p1 = 3/4, predicts 1, label 1: loss −ln(3/4).
        // Row 2: logits (0, 0): p1 = 1/2, tie predicts 0, label 1: loss ln 2.
        // Row 3: logits (ln 4, 0): p1 = 1/5, predicts 0, label 0: loss −ln(4/5).
        let logits = [[0.0, 3f32.ln()], [0.0, 0.0], [4f32.ln(), 0.0]];
        let m = evaluate(&logits, &[1, 1, 0]);
        let loss = (-(0.75f64).ln() + 2f64.ln() - (0.8f64).ln()) / 3.0;
        assert!((m.loss - loss).abs() < 1e-6, "{m:?}");
        assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12); // tp 1, fp 0, fn 1
        assert_eq!(m.auc, Some(1.0));
        assert_eq!(m.samples, 3);
    }
}
