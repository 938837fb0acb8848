//! Property test of the temporal DNN checkpoint reader: a mutated or truncated checkpoint is
//! refused with an error or loads into a head that runs — never a panic.

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tgc_temporal::model::{Head, TemporalDnn};

fn valid_checkpoint() -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let head = Head::Dnn(TemporalDnn::new(6, 4, 0.1, &mut rng).unwrap());
    let state = head.state_dict().unwrap();
    safetensors::serialize(state.iter().map(|(k, v)| (k.as_str(), v)), None).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dnn_checkpoints_load_or_are_refused(edits in prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..10), truncate in prop::option::of(0.0f64..1.0)) {
        let mut bytes = valid_checkpoint();
        for &(at, value) in &edits {
            let i = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
            bytes[i] = value;
        }
        if let Some(t) = truncate {
            bytes.truncate((t * bytes.len() as f64) as usize);
        }
        let Ok(state) = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu) else { return Ok(()) };
        if let Ok(head) = Head::from_state_dict(&state) {
            // A head that loads has finite weights and non-negative running variances, and runs
            // on an input of its width (values may still overflow; outputs are checked where
            // they are used).
            for (name, t) in head.state_dict().unwrap() {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                prop_assert!(v.iter().all(|x| x.is_finite()), "{}", name);
                if name.ends_with("running_var") {
                    prop_assert!(v.iter().all(|x| *x >= 0.0), "{} {:?}", name, v);
                }
            }
            let width = head.input_width().unwrap();
            let x = Tensor::ones((2, width), candle_core::DType::F32, &Device::Cpu).unwrap();
            prop_assert!(head.forward_eval(&x).is_ok());
        }
    }
}

#[test]
fn regression_negative_running_variance_is_refused() {
    // Found by `dnn_checkpoints_load_or_are_refused`: one flipped sign bit made a running
    // variance negative, and the head loaded and answered NaN.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let head = Head::Dnn(TemporalDnn::new(6, 4, 0.1, &mut rng).unwrap());
    let mut state = head.state_dict().unwrap();
    state.insert("bn.running_var".into(), Tensor::from_vec(vec![1.0f32, -0.5, 1.0, 1.0], 4, &Device::Cpu).unwrap());
    let err = Head::from_state_dict(&state).unwrap_err().to_string();
    assert!(err.contains("bn.running_var") && err.contains("negative"), "{err}");
}
