//! Temporal sequences: each image with the patient's earlier visits.
//!
//! For the image of patient p on day d the sequence is p's images with day ≤ d in ascending day
//! order, the last `seq_len` of them kept (oldest dropped), left-padded to `seq_len`.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroUsize;

use crate::error::{DataError, Result};

/// A sequence length, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqLen(NonZeroUsize);

impl SeqLen {
    pub fn new(len: usize) -> Result<Self> {
        NonZeroUsize::new(len).map(Self).ok_or_else(|| DataError::InvalidArgument("sequence length must be at least 1".into()))
    }

    pub fn get(self) -> usize {
        self.0.get()
    }
}

/// The steps of one sequence: `None` is a padded step, `Some(i)` the item at index `i`.
/// Padding comes first; the last step is always the item the sequence is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub steps: Vec<Option<usize>>,
}

impl Sequence {
    /// 1.0 for real steps, 0.0 for padding.
    pub fn mask(&self) -> Vec<f32> {
        self.steps.iter().map(|s| if s.is_some() { 1.0 } else { 0.0 }).collect()
    }

    /// Number of real (not padded) steps.
    pub fn real_steps(&self) -> usize {
        self.steps.iter().filter(|s| s.is_some()).count()
    }

    /// The step vectors laid end to end (`steps · dim` values), zeros for padded steps.
    /// `features` holds one row of `dim` values per item.
    pub fn gather(&self, features: &[f32], dim: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.steps.len() * dim];
        for (slot, step) in out.chunks_mut(dim).zip(&self.steps) {
            if let Some(i) = step {
                slot.copy_from_slice(&features[i * dim..(i + 1) * dim]);
            }
        }
        out
    }
}

/// Builds the sequence of every item from its (patient, day) key.
///
/// Items may come in any order; two items of one patient on the same day are an error.
pub fn build_sequences<P: Eq + Hash + Clone + std::fmt::Debug>(keys: &[(P, u32)], seq_len: SeqLen) -> Result<Vec<Sequence>> {
    let mut by_patient: HashMap<&P, Vec<usize>> = HashMap::new();
    for (i, (patient, _)) in keys.iter().enumerate() {
        by_patient.entry(patient).or_default().push(i);
    }
    for visits in by_patient.values_mut() {
        visits.sort_by_key(|&i| keys[i].1);
        if let Some(w) = visits.windows(2).find(|w| keys[w[0]].1 == keys[w[1]].1) {
            return Err(DataError::InvalidArgument(format!("patient {:?} has two items on day {} (items {} and {})", keys[w[0]].0, keys[w[0]].1, w[0], w[1])));
        }
    }
    let len = seq_len.get();
    Ok(keys
        .iter()
        .enumerate()
        .map(|(i, (patient, _))| {
            let visits = &by_patient[patient];
            let pos = visits.iter().position(|&v| v == i).expect("item is among its patient's visits");
            let history = &visits[(pos + 1).saturating_sub(len)..=pos];
            let mut steps = vec![None; len - history.len()];
            steps.extend(history.iter().map(|&v| Some(v)));
            Sequence { steps }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(keys: &[(&str, u32)], len: usize) -> Vec<Vec<Option<usize>>> {
        build_sequences(keys, SeqLen::new(len).unwrap()).unwrap().into_iter().map(|s| s.steps).collect()
    }

    #[test]
    fn pads_on_the_left_and_orders_by_day() {
        // Items out of day order: a@30 (0), b@5 (1), a@10 (2).
        let got = seqs(&[("a", 30), ("b", 5), ("a", 10)], 3);
        assert_eq!(got[0], vec![None, Some(2), Some(0)]);
        assert_eq!(got[1], vec![None, None, Some(1)]);
        assert_eq!(got[2], vec![None, None, Some(2)]);
    }

    #[test]
    fn keeps_the_last_steps_and_drops_the_oldest() {
        let keys = [("p", 1), ("p", 2), ("p", 3), ("p", 4), ("p", 5)];
        let got = seqs(&keys, 3);
        assert_eq!(got[4], vec![Some(2), Some(3), Some(4)]);
        assert_eq!(got[1], vec![None, Some(0), Some(1)]);
        assert_eq!(seqs(&keys, 1)[3], vec![Some(3)]);
    }

    #[test]
    fn mask_and_gather() {
        let s = Sequence { steps: vec![None, Some(1), Some(0)] };
        assert_eq!(s.mask(), vec![0.0, 1.0, 1.0]);
        assert_eq!(s.real_steps(), 2);
        let features = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(s.gather(&features, 2), vec![0.0, 0.0, 3.0, 4.0, 1.0, 2.0]);
    }

    #[test]
    fn refuses_zero_length_and_same_day_twice() {
        assert!(SeqLen::new(0).is_err());
        let err = build_sequences(&[("p", 4), ("p", 4)], SeqLen::new(2).unwrap()).unwrap_err();
        assert!(err.to_string().contains("day 4"), "{err}");
    }
}
