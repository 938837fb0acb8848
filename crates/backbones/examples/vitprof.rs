use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use candle_core::{Device, Tensor, DType};
use tgc_backbones::ops::*;
fn time(name: &str, n: usize, f: impl Fn()) {
    f();
    let mut best = f64::MAX;
    for _ in 0..3 { let t = Instant::now(); for _ in 0..n { f(); } best = best.min(t.elapsed().as_secs_f64() * 1e3 / n as f64); }
    println!("{name:<20} {best:8.2} ms (x12 layers: {:.1} ms per image at batch 8)", best * 12.0 / 8.0);
}
fn main() -> anyhow::Result<()> {
    let (b, t, h, heads, inter) = (8, 197, 768, 12, 3072);
    let dev = Device::Cpu;
    let x = Tensor::rand(-1f32, 1f32, (b, t, h), &dev)?;
    let w = Tensor::rand(-0.05f32, 0.05f32, (h, h), &dev)?;
    let bias = Tensor::zeros(h, DType::F32, &dev)?;
    let lin = Linear::new(w.clone(), Some(bias.clone()))?;
    let w1 = Tensor::rand(-0.05f32, 0.05f32, (inter, h), &dev)?;
    let lin1 = Linear::new(w1, Some(Tensor::zeros(inter, DType::F32, &dev)?))?;
    let w2 = Tensor::rand(-0.05f32, 0.05f32, (h, inter), &dev)?;
    let lin2 = Linear::new(w2, Some(bias.clone()))?;
    let mid = Tensor::rand(-1f32, 1f32, (b, t, inter), &dev)?;
    time("linear 768x768", 5, || { lin.forward(&x).unwrap(); });
    time("linear 768->3072", 3, || { lin1.forward(&x).unwrap(); });
    time("linear 3072->768", 3, || { lin2.forward(&mid).unwrap(); });
    time("gelu 3072", 3, || { gelu(&mid, true).unwrap(); });
    let vb = candle_nn::VarBuilder::from_tensors([("weight".to_string(), Tensor::ones(h, DType::F32, &dev)?), ("bias".to_string(), bias.clone())].into(), DType::F32, &dev);
    let ln = LayerNorm::new(h, 1e-12, vb)?;
    time("layernorm", 5, || { ln.forward(&x).unwrap(); });
    let dh = h / heads;
    let split = |y: &Tensor| y.reshape((b, t, heads, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
    time("split heads", 5, || { split(&x); });
    let q = split(&x);
    let kt = q.t()?;
    time("q k^T", 5, || { q.matmul(&kt).unwrap(); });
    let scores = q.matmul(&kt)?;
    time("softmax", 5, || { scaled_softmax_last_dim(&scores, 8.0).unwrap(); });
    let probs = scaled_softmax_last_dim(&scores, 8.0)?;
    time("probs v", 5, || { probs.matmul(&q).unwrap(); });
    let ctx = probs.matmul(&q)?;
    time("merge heads", 5, || { ctx.transpose(1, 2).unwrap().reshape((b, t, h)).unwrap(); });
    let (xq, xk, xv) = (x.clone(), x.clone(), x.clone());
    time("fused attention", 5, || { multi_head_attention(&xq, &xk, &xv, heads).unwrap(); });
    time("residual add", 5, || { (&x + &x).unwrap(); });
    Ok(())
}
