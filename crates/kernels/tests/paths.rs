//! Every kernel path this CPU can run (AVX-512, AVX2 + FMA, portable) and one thread against
//! several give the same bits on the models' shapes: the matrix products of ViT-B/16 at batch
//! 1 and 8 and of ResNet-18's convolutions, each ResNet-18 convolution forward and backward,
//! attention, LayerNorm, softmax and GELU. The portable path is the reference (the documented
//! order in plain Rust with `f32::mul_add`); on an AVX2-only CPU two paths are compared, on an
//! AVX-512 one three, with no change here.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use tgc_kernels::ops::{gelu, matmul_slices, multi_head_attention, scaled_softmax_last_dim, Conv2d, LayerNorm, ReluRule};
use tgc_kernels::vecmath::{available_paths, with_paths, GemmKernel, SimdLevel};

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, 1.0).unwrap();
    (0..len).map(|_| d.sample(&mut rng)).collect()
}

fn tensor(shape: &[usize], std: f32, seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed).into_iter().map(|v| v * std).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// `f`'s outputs on every path and, on the widest, on one thread, each equal bit for bit to
/// the portable path's.
fn same_on_every_path(what: &str, f: impl Fn() -> Vec<Vec<u32>> + Sync) {
    let paths = available_paths();
    let reference = with_paths(SimdLevel::Baseline, GemmKernel::Portable, &f);
    for &(simd, gemm) in &paths[..paths.len() - 1] {
        let got = with_paths(simd, gemm, &f);
        assert!(got == reference, "{what}: the {} path differs from the portable one", simd.as_str());
    }
    let (simd, gemm) = paths[0];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let got = with_paths(simd, gemm, || one.install(&f));
    assert!(got == reference, "{what}: one thread differs from {}", rayon::current_num_threads());
    if !paths.iter().any(|&(s, _)| s == SimdLevel::Avx512) {
        println!("{what}: this CPU has no AVX-512; compared the AVX2 + FMA and portable paths");
    }
}

/// The products `[m×k]·[k×n]` (B read transposed where `b_t`: a weight `[out, in]`).
fn product(kernel: GemmKernel, a: &[f32], b: &[f32], b_t: bool, (m, k, n): (usize, usize, usize)) -> Vec<u32> {
    let mut dst = vec![0f32; m * n];
    matmul_slices(kernel, &mut dst, a, false, b, b_t, (m, k, n)).unwrap();
    dst.into_iter().map(f32::to_bits).collect()
}

#[test]
fn the_models_matrix_products_are_the_same_on_every_path() {
    // ViT-B/16 (197 tokens an image): forward x·Wᵀ and input gradients g·W; ResNet-18 at 256²:
    // each stage's 3×3 convolution as im2col's product; attention's scores and their use.
    let shapes: [(usize, usize, usize, bool); 12] = [
        (197, 768, 2304, true),
        (197, 768, 3072, true),
        (197, 3072, 768, true),
        (197, 2304, 768, false),
        (197, 3072, 768, false),
        (197, 768, 3072, false),
        (4096, 576, 64, false),
        (1024, 1152, 128, false),
        (256, 2304, 256, false),
        (64, 4608, 512, false),
        (197, 64, 197, true),
        (197, 197, 64, false),
    ];
    for (i, &(m, k, n, b_t)) in shapes.iter().enumerate() {
        let (a, b) = (values(m * k, i as u64), values(k * n, 100 + i as u64));
        same_on_every_path(&format!("{m}×{k}×{n}"), || vec![product(tgc_kernels::vecmath::gemm_kernel(), &a, &b, b_t, (m, k, n))]);
    }
}

#[test]
fn batch_eight_products_are_the_same_on_every_path() {
    // ViT at batch 8 (1576 rows): the fast paths in full against each other; the portable one
    // on the first and the last image's rows (a row's value does not depend on the others).
    for (i, &(k, n)) in [(768, 2304), (768, 3072), (3072, 768)].iter().enumerate() {
        let m = 1576;
        let (a, b) = (values(m * k, 10 + i as u64), values(k * n, 20 + i as u64));
        let paths = available_paths();
        let full: Vec<Vec<u32>> = paths[..paths.len() - 1].iter().map(|&(_, kernel)| product(kernel, &a, &b, true, (m, k, n))).collect();
        for other in &full[1..] {
            assert!(*other == full[0], "batch 8 {k}×{n}: the fast paths differ");
        }
        for rows in [0..197, m - 197..m] {
            let window = product(GemmKernel::Portable, &a[rows.start * k..rows.end * k], &b, true, (197, k, n));
            for got in &full {
                assert!(got[rows.start * n..rows.end * n] == window[..], "batch 8 {k}×{n}: rows {rows:?} differ from the portable path");
            }
        }
    }
}

#[test]
fn every_resnet18_convolution_is_the_same_on_every_path() {
    // (in, out, kernel, stride, padding, input size) of ResNet-18 at 256² (the stem and each
    // stage's distinct convolutions, the strided 1×1 downsamples included), forward with a
    // fused ReLU and the input gradient.
    let convs = [
        (3, 64, 7, 2, 3, 256),
        (64, 64, 3, 1, 1, 64),
        (64, 128, 3, 2, 1, 64),
        (64, 128, 1, 2, 0, 64),
        (128, 128, 3, 1, 1, 32),
        (128, 256, 3, 2, 1, 32),
        (128, 256, 1, 2, 0, 32),
        (256, 256, 3, 1, 1, 16),
        (256, 512, 3, 2, 1, 16),
        (256, 512, 1, 2, 0, 16),
        (512, 512, 3, 1, 1, 8),
    ];
    for (i, &(cin, cout, k, stride, pad, size)) in convs.iter().enumerate() {
        let conv =
            Conv2d::new(tensor(&[cout, cin, k, k], (2.0 / (cin * k * k) as f32).sqrt(), i as u64), Some(tensor(&[cout], 0.1, 50 + i as u64)), stride, pad)
                .unwrap();
        let x = tensor(&[1, cin, size, size], 1.0, 100 + i as u64);
        same_on_every_path(&format!("conv {cin}→{cout} {k}×{k}/{stride} at {size}²"), || {
            let x = Var::from_tensor(&x).unwrap();
            let y = conv.forward_fused(x.as_tensor(), None, Some(ReluRule::Standard)).unwrap();
            let weights = tensor(y.dims(), 1.0, 7);
            let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            vec![bits(&y), bits(grads.get(x.as_tensor()).unwrap())]
        });
    }
}

#[test]
fn attention_and_norms_are_the_same_on_every_path() {
    for batch in [1, 8] {
        let qkv = tensor(&[batch, 197, 2304], 1.0, 1);
        same_on_every_path(&format!("attention, batch {batch}"), || {
            let x = Var::from_tensor(&qkv).unwrap();
            let y = multi_head_attention(x.as_tensor(), 12).unwrap();
            let grads = (&y * &tensor(y.dims(), 1.0, 2)).unwrap().sum_all().unwrap().backward().unwrap();
            vec![bits(&y), bits(grads.get(x.as_tensor()).unwrap())]
        });
        let x = tensor(&[batch, 197, 768], 2.0, 3);
        let vb = {
            let mut map = std::collections::HashMap::new();
            map.insert("weight".to_owned(), tensor(&[768], 1.0, 4));
            map.insert("bias".to_owned(), tensor(&[768], 1.0, 5));
            candle_nn::VarBuilder::from_tensors(map, candle_core::DType::F32, &Device::Cpu)
        };
        let norm = LayerNorm::new(768, 1e-12, vb).unwrap();
        same_on_every_path(&format!("LayerNorm, softmax and GELU, batch {batch}"), || {
            let v = Var::from_tensor(&x).unwrap();
            let normed = norm.forward(v.as_tensor()).unwrap();
            let soft = scaled_softmax_last_dim(&normed, 8.0).unwrap();
            let act = gelu(&normed, true).unwrap();
            let loss = ((&soft * &tensor(soft.dims(), 1.0, 6)).unwrap().sum_all().unwrap() + act.sum_all().unwrap()).unwrap();
            let grads = loss.backward().unwrap();
            vec![bits(&normed), bits(&soft), bits(&act), bits(grads.get(v.as_tensor()).unwrap())]
        });
    }
}
