#![allow(dead_code)]
//! Tiny models in Hugging Face layout with random weights, written into folders and hub caches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};

pub fn rand_tensor(shape: &[usize], std: f32, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let d = Normal::new(0.0f32, std).unwrap();
    Tensor::from_vec((0..n).map(|_| d.sample(&mut rng)).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

fn positive(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let d = Uniform::new(0.5f32, 1.5).unwrap();
    Tensor::from_vec((0..n).map(|_| d.sample(&mut rng)).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

/// Every tensor of torchvision's ResNet-18 state dict (with `num_batches_tracked`), `classes` outputs.
pub fn resnet18_tensors(classes: usize, seed: u64) -> HashMap<String, Tensor> {
    let mut t = HashMap::new();
    let mut s = seed;
    let mut next = || {
        s += 1;
        s
    };
    let conv = |t: &mut HashMap<String, Tensor>, name: &str, cout: usize, cin: usize, k: usize, seed: u64| {
        let std = (2.0 / (cin * k * k) as f32).sqrt();
        t.insert(format!("{name}.weight"), rand_tensor(&[cout, cin, k, k], std, seed));
    };
    let bn = |t: &mut HashMap<String, Tensor>, name: &str, c: usize, seed: u64| {
        t.insert(format!("{name}.weight"), positive(&[c], seed));
        t.insert(format!("{name}.bias"), rand_tensor(&[c], 0.1, seed + 1000));
        t.insert(format!("{name}.running_mean"), rand_tensor(&[c], 0.1, seed + 2000));
        t.insert(format!("{name}.running_var"), positive(&[c], seed + 3000));
        t.insert(format!("{name}.num_batches_tracked"), Tensor::new(&[7i64], &Device::Cpu).unwrap().squeeze(0).unwrap());
    };
    conv(&mut t, "conv1", 64, 3, 7, next());
    bn(&mut t, "bn1", 64, next());
    let mut cin = 64;
    for (i, cout) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for b in 0..2 {
            let p = format!("layer{}.{b}", i + 1);
            let block_in = if b == 0 { cin } else { cout };
            conv(&mut t, &format!("{p}.conv1"), cout, block_in, 3, next());
            bn(&mut t, &format!("{p}.bn1"), cout, next());
            conv(&mut t, &format!("{p}.conv2"), cout, cout, 3, next());
            bn(&mut t, &format!("{p}.bn2"), cout, next());
            if b == 0 && i > 0 {
                conv(&mut t, &format!("{p}.downsample.0"), cout, cin, 1, next());
                bn(&mut t, &format!("{p}.downsample.1"), cout, next());
            }
        }
        cin = cout;
    }
    t.insert("fc.weight".into(), rand_tensor(&[classes, 512], 0.04, next()));
    t.insert("fc.bias".into(), rand_tensor(&[classes], 0.04, next()));
    t
}

/// A tiny ViT config in Hugging Face `config.json` form.
pub fn tiny_vit_config_json(layers: usize) -> String {
    format!(
        r#"{{"architectures": ["ViTForImageClassification"], "hidden_size": 32, "num_hidden_layers": {layers},
        "num_attention_heads": 4, "intermediate_size": 64, "image_size": 32, "patch_size": 8,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "num_channels": 3, "qkv_bias": true,
        "hidden_dropout_prob": 0.0, "model_type": "vit"}}"#
    )
}

/// Every tensor of a `ViTForImageClassification` with the tiny config and `classes` labels.
pub fn tiny_vit_tensors(layers: usize, classes: usize, seed: u64) -> HashMap<String, Tensor> {
    let (h, i, p, tokens) = (32, 64, 8, 17);
    let mut t = HashMap::new();
    let mut s = seed;
    let mut put = |t: &mut HashMap<String, Tensor>, name: String, shape: &[usize], std: f32| {
        s += 1;
        let v = if name.contains("layernorm") && name.ends_with("weight") { positive(shape, s) } else { rand_tensor(shape, std, s) };
        t.insert(name, v);
    };
    put(&mut t, "vit.embeddings.cls_token".into(), &[1, 1, h], 0.5);
    put(&mut t, "vit.embeddings.position_embeddings".into(), &[1, tokens, h], 0.5);
    put(&mut t, "vit.embeddings.patch_embeddings.projection.weight".into(), &[h, 3, p, p], 0.1);
    put(&mut t, "vit.embeddings.patch_embeddings.projection.bias".into(), &[h], 0.1);
    for l in 0..layers {
        let b = format!("vit.encoder.layer.{l}");
        for n in ["layernorm_before", "layernorm_after"] {
            put(&mut t, format!("{b}.{n}.weight"), &[h], 0.1);
            put(&mut t, format!("{b}.{n}.bias"), &[h], 0.1);
        }
        for n in ["query", "key", "value"] {
            put(&mut t, format!("{b}.attention.attention.{n}.weight"), &[h, h], 0.2);
            put(&mut t, format!("{b}.attention.attention.{n}.bias"), &[h], 0.1);
        }
        put(&mut t, format!("{b}.attention.output.dense.weight"), &[h, h], 0.2);
        put(&mut t, format!("{b}.attention.output.dense.bias"), &[h], 0.1);
        put(&mut t, format!("{b}.intermediate.dense.weight"), &[i, h], 0.2);
        put(&mut t, format!("{b}.intermediate.dense.bias"), &[i], 0.1);
        put(&mut t, format!("{b}.output.dense.weight"), &[h, i], 0.2);
        put(&mut t, format!("{b}.output.dense.bias"), &[h], 0.1);
    }
    put(&mut t, "vit.layernorm.weight".into(), &[h], 0.1);
    put(&mut t, "vit.layernorm.bias".into(), &[h], 0.1);
    put(&mut t, "classifier.weight".into(), &[classes, h], 0.2);
    put(&mut t, "classifier.bias".into(), &[classes], 0.1);
    t
}

pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

/// Lays files out as the hub cache does: `models--org--name/refs/<rev>` holding the commit,
/// `snapshots/<commit>/<file>`. Returns the cache root.
pub fn write_hub_cache(cache: &Path, repo: &str, revision: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs").join(revision), commit).unwrap();
    let snap = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for (name, bytes) in files {
        std::fs::write(snap.join(name), bytes).unwrap();
    }
    cache.to_owned()
}

/// Max |a − b| / max(|b|, floor).
pub fn max_rel_diff(a: &Tensor, b: &Tensor, floor: f32) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}
