//! The custom differentiable ops against hand values and finite differences.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use tgc_kernels::ops::{gelu, max_pool2d, multi_head_attention, relu, scaled_softmax_last_dim, softmax_last_dim, LayerNorm, ReluRule};

fn rand_tensor(shape: &[usize], std: f32, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let d = Normal::new(0.0f32, std).unwrap();
    Tensor::from_vec((0..n).map(|_| d.sample(&mut rng)).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

/// max |a − b| over max |b| (at least `floor`).
fn max_rel_diff(a: &Tensor, b: &Tensor, floor: f32) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(floor, |m, v| m.max(v.abs()));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
}

fn vec(x: &Tensor) -> Vec<f32> {
    x.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn max_pool_pads_with_minus_infinity() {
    // All negative: zero padding would give 0 at the borders; −∞ padding keeps the true max.
    let x = t(&[-1., -2., -3., -4., -5., -6., -7., -8., -9.], &[1, 1, 3, 3]);
    let y = max_pool2d(&x, 3, 2, 1).unwrap();
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    // Window (0,0) covers rows 0..2, cols 0..2 of the input; (0,1) cols 1..3; and so on.
    assert_eq!(vec(&y), vec![-1., -2., -4., -5.]);
}

#[test]
fn max_pool_output_size_matches_pytorch() {
    let x = Tensor::zeros((2, 3, 128, 128), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(max_pool2d(&x, 3, 2, 1).unwrap().dims(), &[2, 3, 64, 64]);
    let x = Tensor::zeros((1, 1, 7, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(max_pool2d(&x, 3, 2, 1).unwrap().dims(), &[1, 1, 4, 3]);
    assert!(max_pool2d(&x, 3, 2, 2).is_err());
}

#[test]
fn max_pool_gradient_goes_to_the_first_maximum() {
    // Ties everywhere (zeros after a ReLU): PyTorch routes each window's gradient to the first
    // maximal element in row-major order, not split among ties.
    let x = Var::from_tensor(&Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    let y = max_pool2d(x.as_tensor(), 3, 2, 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let g = vec(grads.get(x.as_tensor()).unwrap());
    // Windows start at (−1,−1), (−1,1), (1,−1), (1,1): first in-bounds elements (0,0), (0,1), (1,0), (1,1).
    let mut expected = vec![0.0; 16];
    for i in [0, 1, 4, 5] {
        expected[i] = 1.0;
    }
    assert_eq!(g, expected);
}

#[test]
fn max_pool_gradient_matches_finite_differences() {
    let x0 = rand_tensor(&[2, 3, 7, 6], 1.0, 3);
    let w = rand_tensor(&[2, 3, 4, 3], 1.0, 4);
    let loss = |x: &Tensor| max_pool2d(x, 3, 2, 1).unwrap().mul(&w).unwrap().sum_all().unwrap();
    let x = Var::from_tensor(&x0).unwrap();
    let g = vec(loss(x.as_tensor()).backward().unwrap().get(x.as_tensor()).unwrap());
    let base = vec(&x0);
    let eps = 1e-3;
    for i in (0..base.len()).step_by(7) {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        let f = |v: Vec<f32>| loss(&t(&v, x0.dims())).to_scalar::<f32>().unwrap();
        let fd = (f(plus) - f(minus)) / (2.0 * eps);
        assert!((fd - g[i]).abs() < 1e-2, "element {i}: fd {fd} vs grad {}", g[i]);
    }
}

#[test]
fn guided_relu_clamps_negative_gradients() {
    let x = Var::from_tensor(&t(&[-1.0, 2.0, 3.0, 0.5], &[4])).unwrap();
    let upstream = t(&[5.0, -4.0, 6.0, 0.25], &[4]);
    for (mode, expected) in [(ReluRule::Standard, vec![0.0, -4.0, 6.0, 0.25]), (ReluRule::Guided, vec![0.0, 0.0, 6.0, 0.25])] {
        let y = relu(x.as_tensor(), mode).unwrap();
        assert_eq!(vec(&y), vec![0.0, 2.0, 3.0, 0.5]);
        let grads = y.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(vec(grads.get(x.as_tensor()).unwrap()), expected, "{mode:?}");
    }
}

#[test]
fn deconvolution_relu_ignores_the_forward_mask_fused_or_not() {
    let x = Var::from_tensor(&t(&[-1.0, 2.0, 3.0, 0.5], &[4])).unwrap();
    let upstream = t(&[5.0, -4.0, 6.0, 0.25], &[4]);
    let y = relu(x.as_tensor(), ReluRule::Deconvolution).unwrap();
    assert_eq!(vec(&y), vec![0.0, 2.0, 3.0, 0.5]);
    let grads = y.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(vec(grads.get(x.as_tensor()).unwrap()), vec![5.0, 0.0, 6.0, 0.25]);
    // The convolution's fused ReLU follows every rule as the separate ReLU does.
    let conv = tgc_kernels::ops::Conv2d::new(rand_tensor(&[4, 3, 3, 3], 0.3, 21), Some(rand_tensor(&[4], 0.1, 22)), 1, 1).unwrap();
    let x0 = rand_tensor(&[2, 3, 6, 6], 1.0, 23);
    let residual = rand_tensor(&[2, 4, 6, 6], 1.0, 24);
    let upstream = rand_tensor(&[2, 4, 6, 6], 1.0, 25);
    for mode in [ReluRule::Standard, ReluRule::Guided, ReluRule::Deconvolution] {
        let grad = |fused: bool| {
            let x = Var::from_tensor(&x0).unwrap();
            let y = if fused {
                conv.forward_fused(x.as_tensor(), Some(&residual), Some(mode)).unwrap()
            } else {
                relu(&(conv.forward_fused(x.as_tensor(), None, None).unwrap() + &residual).unwrap(), mode).unwrap()
            };
            let grads = y.mul(&upstream).unwrap().sum_all().unwrap().backward().unwrap();
            (y, grads.get(x.as_tensor()).unwrap().clone())
        };
        let ((yf, gf), (ys, gs)) = (grad(true), grad(false));
        assert!(max_rel_diff(&yf, &ys, 1e-3) < 1e-6 && max_rel_diff(&gf, &gs, 1e-3) < 1e-5, "{mode:?}");
    }
}

fn check_fd(f: &dyn Fn(&Tensor) -> Tensor, x0: &Tensor, tol: f32) {
    let x = Var::from_tensor(x0).unwrap();
    let g = vec(f(x.as_tensor()).backward().unwrap().get(x.as_tensor()).unwrap());
    let base = vec(x0);
    let eps = 1e-2;
    for i in 0..base.len() {
        let (mut p, mut m) = (base.clone(), base.clone());
        p[i] += eps;
        m[i] -= eps;
        let fp = f(&t(&p, x0.dims())).to_scalar::<f32>().unwrap();
        let fm = f(&t(&m, x0.dims())).to_scalar::<f32>().unwrap();
        let fd = (fp - fm) / (2.0 * eps);
        assert!((fd - g[i]).abs() <= tol * (1.0 + fd.abs()), "element {i}: fd {fd} vs grad {}", g[i]);
    }
}

#[test]
fn softmax_values_and_gradient() {
    let x = t(&[1.0, 2.0, 3.0], &[1, 3]);
    let s = vec(&softmax_last_dim(&x).unwrap());
    let z = 1f32.exp() + 2f32.exp() + 3f32.exp();
    for (a, b) in s.iter().zip([1f32.exp() / z, 2f32.exp() / z, 3f32.exp() / z]) {
        assert!((a - b).abs() < 1e-6);
    }
    let w = rand_tensor(&[3, 5], 1.0, 9);
    check_fd(&|x| softmax_last_dim(x).unwrap().mul(&w).unwrap().sum_all().unwrap(), &rand_tensor(&[3, 5], 1.0, 8), 2e-3);
}

#[test]
fn layer_norm_values_and_gradient() {
    let vb = candle_nn::VarBuilder::from_tensors(
        [("weight".to_string(), t(&[1.0, 2.0, 0.5, 1.0], &[4])), ("bias".to_string(), t(&[0.0, 0.1, 0.0, -1.0], &[4]))].into(),
        candle_core::DType::F32,
        &Device::Cpu,
    );
    let ln = LayerNorm::new(4, 1e-5, vb).unwrap();
    // x = [1, 2, 3, 4]: mean 2.5, biased variance 1.25.
    let y = vec(&ln.forward(&t(&[1.0, 2.0, 3.0, 4.0], &[1, 4])).unwrap());
    let sd = (1.25f32 + 1e-5).sqrt();
    let expected = [-1.5 / sd, 2.0 * -0.5 / sd + 0.1, 0.5 * 0.5 / sd, 1.5 / sd - 1.0];
    for (a, b) in y.iter().zip(expected) {
        assert!((a - b).abs() < 1e-5, "{y:?}");
    }
    let w = rand_tensor(&[2, 4], 1.0, 5);
    check_fd(&|x| ln.forward(x).unwrap().mul(&w).unwrap().sum_all().unwrap(), &rand_tensor(&[2, 4], 1.0, 6), 5e-3);
}

#[test]
fn gelu_is_the_exact_erf_form_and_differentiable() {
    // GELU(1) = 0.5·(1 + erf(1/√2)) = 0.8413447; the tanh form gives 0.8411920.
    let y = gelu(&t(&[1.0, -2.0], &[2]), true).unwrap();
    assert!((vec(&y)[0] - 0.841_344_7).abs() < 1e-6);
    // GELU(−2) = −2·Φ(−2) = −0.0455003.
    assert!((vec(&y)[1] + 0.045_500_26).abs() < 1e-6, "{y}");
    let tanh = gelu(&t(&[1.0], &[1]), false).unwrap();
    assert!((vec(&tanh)[0] - 0.841_192_0).abs() < 1e-6);
    let w = rand_tensor(&[3, 4], 1.0, 3);
    for exact in [true, false] {
        check_fd(&|x| gelu(x, exact).unwrap().mul(&w).unwrap().sum_all().unwrap(), &rand_tensor(&[3, 4], 2.0, 2), 2e-3);
    }
}

#[test]
fn scaled_softmax_divides_before_normalising_and_scales_its_gradient() {
    let x = rand_tensor(&[2, 3, 5], 3.0, 11);
    let plain = vec(&softmax_last_dim(&(&x / 8.0).unwrap()).unwrap());
    let scaled = vec(&scaled_softmax_last_dim(&x, 8.0).unwrap());
    for (a, b) in plain.iter().zip(&scaled) {
        assert!((a - b).abs() < 1e-7);
    }
    let w = rand_tensor(&[2, 3, 5], 1.0, 12);
    check_fd(&|x| scaled_softmax_last_dim(x, 3.0).unwrap().mul(&w).unwrap().sum_all().unwrap(), &x, 2e-3);
}

#[test]
fn im2col_conv_equals_candle_conv_and_its_gradient_matches_finite_differences() {
    use tgc_kernels::ops::conv2d;
    // Small kernels run in bands of output rows (the stem's 7×7/2 over 13 rows: three bands of
    // at least three rows); a kernel matrix over 512 KiB (128 × 128 × 3 × 3) runs whole.
    let cases = [(3, 1, 1, 7), (7, 2, 3, 9), (7, 2, 3, 25), (1, 2, 0, 6), (4, 4, 0, 8), (3, 2, 1, 8), (3, 1, 0, 6), (2, 3, 1, 7), (3, 1, 2, 5)];
    for ((k, stride, padding, size), (c_in, c_out)) in cases.into_iter().map(|c| (c, (3, 4))).chain([((3, 2, 1, 6), (128, 128))]) {
        let x0 = rand_tensor(&[2, c_in, size, size + 1], 1.0, k as u64);
        let w = rand_tensor(&[c_out, c_in, k, k], 0.5 / (c_in as f32).sqrt(), 100 + k as u64);
        let ours = conv2d(&x0, &w, stride, padding).unwrap();
        let theirs = x0.conv2d(&w, padding, stride, 1, 1).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        let diff = max_rel_diff(&ours, &theirs, 1e-3);
        assert!(diff < 1e-5, "k {k} s {stride} p {padding}: {diff}");
        // (candle's own conv backward returns a wrongly sized gradient when
        // (size + 2p − k) is not a multiple of the stride, so the reference is finite differences.)
        let u = rand_tensor(theirs.dims(), 1.0, 7);
        let loss = |x: &Tensor| conv2d(x, &w, stride, padding).unwrap().mul(&u).unwrap().sum_all().unwrap();
        let x = Var::from_tensor(&x0).unwrap();
        let g = vec(loss(x.as_tensor()).backward().unwrap().get(x.as_tensor()).unwrap());
        assert_eq!(g.len(), x0.elem_count());
        let base = vec(&x0);
        let eps = 1e-2;
        for i in (0..base.len()).step_by(5) {
            let (mut p, mut m) = (base.clone(), base.clone());
            p[i] += eps;
            m[i] -= eps;
            let fd = (loss(&t(&p, x0.dims())).to_scalar::<f32>().unwrap() - loss(&t(&m, x0.dims())).to_scalar::<f32>().unwrap()) / (2.0 * eps);
            assert!((fd - g[i]).abs() < 2e-3 * (1.0 + fd.abs()), "k {k} s {stride} p {padding} element {i}: fd {fd} vs grad {}", g[i]);
        }
    }
}

#[test]
fn linear_matches_a_matrix_product_and_its_input_gradient() {
    use tgc_kernels::ops::Linear;
    let w = rand_tensor(&[5, 4], 1.0, 1);
    let b = rand_tensor(&[5], 1.0, 2);
    let x0 = rand_tensor(&[2, 3, 4], 1.0, 3);
    let lin = Linear::new(w.clone(), Some(b.clone())).unwrap();
    let expected = x0.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
    let y = lin.forward(&x0).unwrap();
    assert_eq!(y.dims(), &[2, 3, 5]);
    assert!(max_rel_diff(&y, &expected, 1e-3) < 1e-6);
    let u = rand_tensor(&[2, 3, 5], 1.0, 4);
    let x = Var::from_tensor(&x0).unwrap();
    let g = lin.forward(x.as_tensor()).unwrap().mul(&u).unwrap().sum_all().unwrap().backward().unwrap();
    // d/dx Σ u·(x Wᵀ + b) = u · W.
    let expected_grad = u.broadcast_matmul(&w).unwrap();
    assert!(max_rel_diff(g.get(x.as_tensor()).unwrap(), &expected_grad, 1e-3) < 1e-6);
    assert!(Linear::new(w, Some(rand_tensor(&[4], 1.0, 5))).is_err());
}

#[test]
fn max_pool_propagates_nan_like_pytorch() {
    // One 2×2 window holding two NaNs: the output is NaN and the gradient goes to the later one.
    let x = Var::from_tensor(&t(&[1.0, f32::NAN, f32::NAN, 5.0], &[1, 1, 2, 2])).unwrap();
    let y = max_pool2d(x.as_tensor(), 2, 2, 0).unwrap();
    assert!(vec(&y)[0].is_nan());
    let g = vec(y.sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap());
    assert_eq!(g, vec![0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn fused_attention_equals_the_composed_ops_forward_and_backward() {
    let (b, t, heads, dh) = (2, 5, 3, 4);
    let h = heads * dh;
    let (q0, k0, v0) = (rand_tensor(&[b, t, h], 1.0, 21), rand_tensor(&[b, t, h], 1.0, 22), rand_tensor(&[b, t, h], 1.0, 23));
    let w = rand_tensor(&[b, t, h], 1.0, 24);
    let composed = |q: &Tensor, k: &Tensor, v: &Tensor| -> Tensor {
        let split = |x: &Tensor| x.reshape((b, t, heads, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let (q, k, v) = (split(q), split(k), split(v));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
        let max = scores.max_keepdim(candle_core::D::Minus1).unwrap().detach();
        let e = scores.broadcast_sub(&max).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(candle_core::D::Minus1).unwrap()).unwrap();
        p.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b, t, h)).unwrap()
    };
    let grads = |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor| {
        let (q, k, v) = (Var::from_tensor(&q0).unwrap(), Var::from_tensor(&k0).unwrap(), Var::from_tensor(&v0).unwrap());
        let out = f(q.as_tensor(), k.as_tensor(), v.as_tensor());
        let g = out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        (vec(&out), [q, k, v].map(|x| vec(g.get(x.as_tensor()).unwrap())))
    };
    let (fused_out, fused_grads) = grads(&|q, k, v| multi_head_attention(&Tensor::cat(&[q, k, v], 2).unwrap(), heads).unwrap());
    let (want_out, want_grads) = grads(&composed);
    let close = |a: &[f32], b: &[f32], what: &str| {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    };
    close(&fused_out, &want_out, "output");
    for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(fused_grads.iter().zip(&want_grads)) {
        assert!(b.iter().any(|v| v.abs() > 1e-3), "{name} must not vanish");
        close(a, b, name);
    }
}

#[test]
fn matmul_matches_candle_with_both_gradients_in_any_layout() {
    use tgc_kernels::ops::matmul;
    // 2-D, a transposed view on the right (a linear layer's x·Wᵀ), and 4-D batches of heads.
    let cases = [(vec![5, 7], vec![3, 7], true), (vec![2, 3, 9, 4], vec![2, 3, 4, 6], false), (vec![1, 33], vec![33, 2], false)];
    for (i, (ad, bd, b_t)) in cases.into_iter().enumerate() {
        let a = Var::from_tensor(&rand_tensor(&ad, 1.0, 10 + i as u64)).unwrap();
        let b = Var::from_tensor(&rand_tensor(&bd, 1.0, 20 + i as u64)).unwrap();
        let rhs = |b: &Tensor| if b_t { b.t().unwrap() } else { b.clone() };
        let ours = matmul(a.as_tensor(), &rhs(b.as_tensor())).unwrap();
        let theirs = a.as_tensor().matmul(&rhs(b.as_tensor()).contiguous().unwrap()).unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        assert!(max_rel_diff(&ours, &theirs, 1e-3) < 1e-6);
        let weights = rand_tensor(ours.dims(), 1.0, 30 + i as u64);
        let g_ours = (&ours * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g_theirs = (&theirs * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            assert!(max_rel_diff(g_ours.get(v.as_tensor()).unwrap(), g_theirs.get(v.as_tensor()).unwrap(), 1e-3) < 1e-6, "case {i}");
        }
    }
    let err = matmul(&rand_tensor(&[2, 3], 1.0, 1), &rand_tensor(&[4, 2], 1.0, 2)).unwrap_err().to_string();
    assert!(err.contains("[2, 3]") && err.contains("[4, 2]"), "{err}");
}

#[test]
fn spatial_mean_sums_each_plane_in_order_and_spreads_its_gradient() {
    use tgc_kernels::ops::spatial_mean;
    let x = Var::from_tensor(&rand_tensor(&[2, 3, 5, 7], 1.0, 40)).unwrap();
    let y = spatial_mean(x.as_tensor()).unwrap();
    assert_eq!(y.dims(), &[2, 3]);
    // Bit for bit the documented order: a plane's values added from the first, then / (H·W).
    let values = vec(x.as_tensor());
    let want: Vec<f32> = values.chunks(35).map(|p| p.iter().fold(0f32, |s, &v| s + v) / 35.0).collect();
    assert_eq!(vec(&y), want);
    assert!(max_rel_diff(&y, &x.as_tensor().mean((2, 3)).unwrap(), 1e-3) < 1e-6);
    let weights = rand_tensor(&[2, 3], 1.0, 41);
    let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let g = vec(grads.get(x.as_tensor()).unwrap());
    for (i, w) in vec(&weights).iter().enumerate() {
        assert!(g[i * 35..(i + 1) * 35].iter().all(|&v| (v - w / 35.0).abs() <= 1e-7 * w.abs().max(1.0)), "plane {i}");
    }
}
