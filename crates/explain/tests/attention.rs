//! Attention rollout and Chefer et al.'s relevance on models whose attention is known, so that
//! the maps follow by hand.

use candle_core::{DType, Device, Tensor};
use tgc_explain::*;

const T: usize = 5; // the class token and a 2×2 patch grid

fn v(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Two blocks whose two heads attend as given (`[heads, T, T]` per block, the same for every
/// image); the logits are any function of the input.
struct Fixed {
    blocks: Vec<Tensor>,
}

impl Model for Fixed {
    fn forward(&self, input: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        let b = input.dim(0)?;
        for block in &self.blocks {
            hooks.attention(&block.unsqueeze(0)?.broadcast_as((b, 2, T, T))?.contiguous()?, (2, 2))?;
        }
        let total = input.flatten_from(1)?.sum_keepdim(1)?;
        Tensor::cat(&[&total, &total.neg()?], 1)
    }
}

fn identity() -> Tensor {
    Tensor::eye(T, DType::F32, &Device::Cpu).unwrap()
}

fn uniform() -> Tensor {
    Tensor::full(1.0 / T as f32, (T, T), &Device::Cpu).unwrap()
}

fn rollout(model: &Fixed, head_fusion: HeadFusion, discard_ratio: f32) -> Vec<f32> {
    let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let out = AttentionRollout { head_fusion, discard_ratio }.attribute(model, &x, &[0]);
    let out = match out {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    };
    let map = out.layer_attribution.unwrap();
    assert_eq!(map.dims(), &[1, 2, 2]);
    v(&map)
}

#[test]
fn rollout_of_identity_and_uniform_heads_by_hand() {
    // Each block: head 0 attends to itself, head 1 uniformly (U = 1/T everywhere).
    let block = Tensor::stack(&[identity(), uniform()], 0).unwrap();
    let model = Fixed { blocks: vec![block.clone(), block] };
    // mean: F = (I + U)/2, Â = (3I + U)/4, R = Â² = (9I + 7U)/16: R[CLS, patch] = 7/(16T).
    for m in rollout(&model, HeadFusion::Mean, 0.0) {
        assert!((m - 7.0 / 80.0).abs() < 1e-6, "{m}");
    }
    // max: F = U + (1 − 1/T)I, Â = (U + (2 − 1/T)I)/(3 − 1/T) = (U + 1.8I)/2.8;
    // Â² = (4.6U + 3.24I)/7.84: R[CLS, patch] = 0.92/7.84.
    for m in rollout(&model, HeadFusion::Max, 0.0) {
        assert!((m - 0.92 / 7.84).abs() < 1e-6, "{m}");
    }
    // min: F = I/T, Â = I after renormalising: nothing flows from the patches.
    assert!(rollout(&model, HeadFusion::Min, 0.0).iter().all(|m| m.abs() < 1e-7));
    // Discarding the lowest 80 % of the mean-fused entries removes every off-diagonal one.
    assert!(rollout(&model, HeadFusion::Mean, 0.8).iter().all(|m| m.abs() < 1e-7));
    let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(AttentionRollout { head_fusion: HeadFusion::Mean, discard_ratio: 1.0 }.attribute(&model, &x, &[0]).is_err());
}

#[test]
fn rollout_discards_the_lowest_entries_but_never_the_class_tokens_own() {
    // One block, one distinct value per entry: entry e holds (e + 1)/100 (rows need not sum to
    // one for the definition). The class token's self-attention, entry 0, is the lowest.
    let a = Tensor::from_vec((0..T * T).map(|e| (e + 1) as f32 / 100.0).collect::<Vec<_>>(), (T, T), &Device::Cpu).unwrap();
    let model = Fixed { blocks: vec![Tensor::stack(&[&a, &a], 0).unwrap()] };
    // Discard 3 of 25 (0.12 · 25 = 3): entries 0, 1, 2 are the lowest; 0 is kept, 1 and 2 zeroed.
    let map = rollout(&model, HeadFusion::Mean, 0.12);
    let row: Vec<f64> = (0..T).map(|j| if j == 1 || j == 2 { 0.0 } else { (j + 1) as f64 / 100.0 } + if j == 0 { 1.0 } else { 0.0 }).collect();
    let sum: f64 = row.iter().sum();
    for (j, m) in map.iter().enumerate() {
        assert!((*m as f64 - row[j + 1] / sum).abs() < 1e-6, "patch {j}: {m}");
    }
}

/// One block whose two heads' probabilities come from the input `[B, 1, 1, T]` (scores
/// `k_h · x_i · x_j`), and
/// logits that read the class token's attention row: `y_c = Σ_h Σ_j A[h, 0, j] · u[c, h, j]`.
/// So `∂y_t/∂A[h, 0, j] = u[t, h, j]` and zero elsewhere.
struct Readout {
    u: Tensor,
}

impl Readout {
    fn probs(x: &Tensor) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let x = x.reshape((b, T))?;
        let outer = x.unsqueeze(2)?.broadcast_mul(&x.unsqueeze(1)?)?;
        let k = Tensor::new(&[1f32, -0.5], x.device())?.reshape((1, 2, 1, 1))?;
        let scores = outer.unsqueeze(1)?.broadcast_mul(&k)?;
        let e = scores.exp()?;
        e.broadcast_div(&e.sum_keepdim(3)?)?.reshape((b, 2, T, T))
    }

    fn logits(&self, probs: &Tensor) -> candle_core::Result<Tensor> {
        let b = probs.dim(0)?;
        probs.narrow(2, 0, 1)?.reshape((b, 2 * T))?.matmul(&self.u.t()?)
    }
}

impl Model for Readout {
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> candle_core::Result<Tensor> {
        self.logits(&hooks.attention(&Self::probs(x)?, (2, 2))?)
    }
}

#[test]
fn chefer_by_hand() {
    let u = Tensor::from_vec((0..2 * 2 * T).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect::<Vec<_>>(), (2, 2 * T), &Device::Cpu).unwrap();
    let model = Readout { u: u.clone() };
    let x = Tensor::new(&[[0.3f32, -0.8, 0.5, 1.1, -0.2], [0.9, 0.1, -0.6, 0.4, 0.7]], &Device::Cpu).unwrap().reshape((2, 1, 1, T)).unwrap();
    let targets = [1, 0];
    let out = Chefer.attribute(&model, &x, &targets).unwrap();
    assert_eq!(out.attribution.dims(), &[2, 1, 1, T]);
    let map = v(&out.layer_attribution.unwrap());
    let (a, uv) = (v(&Readout::probs(&x).unwrap()), v(&u));
    // R = I + Ā with Ā[0, j] = mean_h relu(A[h, 0, j] · u[t, h, j]); the map is R[0, 1..].
    for b in 0..2 {
        for j in 1..T {
            let want: f32 = (0..2).map(|h| (a[((b * 2 + h) * T) * T + j] * uv[targets[b] * 2 * T + h * T + j]).max(0.0)).sum::<f32>() / 2.0;
            let got = map[b * (T - 1) + j - 1];
            assert!((got - want).abs() < 1e-6, "image {b}, patch {j}: {got} vs {want}");
        }
    }
    assert!(map.iter().any(|m| *m > 0.0), "the test needs some positive relevance: {map:?}");
    // Logits as the model's own.
    let logits = v(&out.logits.unwrap());
    let direct = v(&model.forward(&x, &Hooks::none()).unwrap());
    assert_eq!(logits, direct);
}

#[test]
fn a_model_without_attention_is_refused_by_name() {
    let model = FnModel(|x: &Tensor| x.flatten_from(1)?.sum_keepdim(1));
    let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    for method in [Method::new(AttentionRollout::default()), Method::new(Chefer)] {
        let err = method.attribute(&model, &x, &[0]).unwrap_err().to_string();
        assert!(err.contains("Hooks::attention"), "{err}");
    }
}
