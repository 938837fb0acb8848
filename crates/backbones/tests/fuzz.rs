//! Property tests of the parsers of outside bytes in `tgc-backbones`: features files, head
//! checkpoints and ViT `config.json`. An error naming the file, or a valid value — never a
//! panic or an unbounded allocation. Cases per property: `PROPTEST_CASES` (256 by default).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use tgc_backbones::vit::VitConfig;
use tgc_backbones::{Backbone, BackboneKind, Classifier, LoadOptions, WeightSource};
use tgc_data::FeatureSet;

fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

fn valid_features() -> Vec<u8> {
    let set = FeatureSet {
        features: (0..12).map(|i| i as f32 * 0.5).collect(),
        dim: 4,
        patient_id: vec![30001, 30001, 30002],
        day: vec![0, 100, 5],
        label: vec![0, 0, 1],
        metadata: HashMap::from([("backbone".to_owned(), "resnet18".to_owned())]),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.safetensors");
    set.save(&path).unwrap();
    std::fs::read(path).unwrap()
}

fn mutate(base: &[u8], edits: &[(f64, u8)], truncate: Option<f64>) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(at, value) in edits {
        let i = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
        bytes[i] = value;
    }
    if let Some(t) = truncate {
        bytes.truncate((t * bytes.len() as f64) as usize);
    }
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn features_files_load_or_name_the_file(edits in prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..10), truncate in prop::option::of(0.0f64..1.0), garbage in prop::collection::vec(any::<u8>(), 0..300)) {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("mutated.safetensors", mutate(&valid_features(), &edits, truncate)), ("garbage.safetensors", garbage.clone())] {
            let path = write(dir.path(), name, &bytes);
            match FeatureSet::load(&path) {
                Ok(set) => {
                    prop_assert_eq!(set.features.len(), set.len() * set.dim);
                    prop_assert!(set.patient_id.len() == set.len() && set.day.len() == set.len());
                    prop_assert!(set.features.iter().all(|v| v.is_finite()));
                }
                Err(e) => prop_assert!(e.to_string().contains(name), "{}", e),
            }
        }
    }

    #[test]
    fn vit_configs_parse_or_name_the_file(edits in prop::collection::vec((0.0f64..1.0, 32u8..127), 0..8), numbers in prop::collection::vec(any::<u64>(), 4)) {
        let dir = tempfile::tempdir().unwrap();
        let valid = format!(
            r#"{{"hidden_size": {}, "num_hidden_layers": {}, "num_attention_heads": 4, "intermediate_size": {}, "image_size": {}, "patch_size": 8, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}}"#,
            numbers[0] % 40_000, numbers[1] % 600, numbers[2] % 200_000, numbers[3] % 9_000
        );
        let path = write(dir.path(), "config.json", &mutate(valid.as_bytes(), &edits, None));
        match VitConfig::from_file(&path) {
            Ok(c) => {
                // Whatever parses is small enough to build.
                prop_assert!(c.hidden_size <= 16_384 && c.num_hidden_layers <= 256 && c.image_size <= 4_096 && c.intermediate_size <= 65_536);
                prop_assert!(c.hidden_size % c.num_attention_heads == 0 && c.image_size % c.patch_size == 0);
            }
            Err(e) => prop_assert!(e.to_string().contains("config.json"), "{}", e),
        }
    }
}

#[test]
fn head_checkpoints_load_or_name_the_file() {
    // One backbone for every case (loading it is the slow part).
    let backbone = Backbone::load(BackboneKind::ResNet18, &WeightSource::Random { seed: 1 }, &LoadOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let valid = {
        let path = dir.path().join("valid.safetensors");
        let w = Tensor::zeros((2, 512), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&[("weight", w), ("bias", b)].into_iter().collect(), &path).unwrap();
        std::fs::read(path).unwrap()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let strategy = (prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..10), prop::option::of(0.0f64..1.0));
    runner
        .run(&strategy, |(edits, truncate)| {
            let path = write(dir.path(), "head.safetensors", &mutate(&valid, &edits, truncate));
            match Classifier::load_head(backbone.clone(), &path) {
                Ok(c) => prop_assert!(tgc_explain::non_finite(c.head_weight()).unwrap().is_none()),
                Err(e) => prop_assert!(e.to_string().contains("head.safetensors"), "{}", e),
            }
            Ok(())
        })
        .unwrap();
}
