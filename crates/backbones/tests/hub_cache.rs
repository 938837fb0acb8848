//! Loading through hf-hub from a hub cache laid out on disk: the path users take online,
//! here with no network. One test per binary because it sets process-wide variables.

mod common;

use common::*;
use tgc_backbones::{Backbone, BackboneKind, LoadOptions, WeightSource};

#[test]
fn hub_ids_load_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let mut vit = Vec::new();
    let tmp = cache.path().join("vit.safetensors");
    write_safetensors(&tmp, &tiny_vit_tensors(1, 2, 3));
    vit.extend(std::fs::read(&tmp).unwrap());
    write_hub_cache(cache.path(), "tiny/vit", "main", &[("model.safetensors", vit), ("config.json", tiny_vit_config_json(1).into_bytes())]);
    let resnet_file = cache.path().join("r.safetensors");
    write_safetensors(&resnet_file, &resnet18_tensors(4, 1));
    write_hub_cache(cache.path(), "tiny/resnet", "v1", &[("model.safetensors", std::fs::read(&resnet_file).unwrap())]);

    std::env::set_var("HF_HUB_CACHE", cache.path());
    // Any download attempt goes to a closed local port and fails at once.
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");

    let source: WeightSource = "tiny/vit".parse().unwrap();
    let vit = Backbone::load(BackboneKind::Vit, &source, &LoadOptions::default()).unwrap();
    assert_eq!(vit.feature_dim(), 32);
    assert_eq!(vit.preprocess_settings().resize_shorter_to, Some(32));
    assert_eq!(vit.identity().source, "tiny/vit");
    assert!(!vit.is_random());

    let source: WeightSource = "tiny/resnet@v1".parse().unwrap();
    let resnet = Backbone::load(BackboneKind::ResNet18, &source, &LoadOptions::default()).unwrap();
    assert_eq!(resnet.feature_dim(), 512);

    // A revision that is not cached cannot be fetched here: the error names the file and cache.
    let source: WeightSource = "tiny/resnet@v2".parse().unwrap();
    let err = Backbone::load(BackboneKind::ResNet18, &source, &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("tiny/resnet@v2") && err.contains("model.safetensors") && err.contains("hub cache"), "{err}");
}
