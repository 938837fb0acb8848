use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use candle_core::{Device, Tensor};
fn main() -> anyhow::Result<()> {
    let batch = 8;
    let mut total = 0.0;
    for (name, cin, cout, k, stride, pad, size, count) in [
        ("stem", 3, 64, 7, 2, 3, 256, 1),
        ("l1 3x3", 64, 64, 3, 1, 1, 64, 4),
        ("l2 3x3/2", 64, 128, 3, 2, 1, 64, 1),
        ("l2 3x3", 128, 128, 3, 1, 1, 32, 3),
        ("l2 ds", 64, 128, 1, 2, 0, 64, 1),
        ("l3 3x3/2", 128, 256, 3, 2, 1, 32, 1),
        ("l3 3x3", 256, 256, 3, 1, 1, 16, 3),
        ("l3 ds", 128, 256, 1, 2, 0, 32, 1),
        ("l4 3x3/2", 256, 512, 3, 2, 1, 16, 1),
        ("l4 3x3", 512, 512, 3, 1, 1, 8, 3),
        ("l4 ds", 256, 512, 1, 2, 0, 16, 1),
    ] {
        let x = Tensor::rand(0f32, 1f32, (batch, cin, size, size), &Device::Cpu)?;
        let w = Tensor::rand(-0.1f32, 0.1f32, (cout, cin, k, k), &Device::Cpu)?;
        let conv = tgc_backbones::ops::Conv2d::new(w, None, stride, pad)?;
        conv.forward(&x)?;
        let it = 3;
        let mut ms = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..it { conv.forward(&x)?; }
            ms = ms.min(t.elapsed().as_secs_f64() * 1e3 / (it * batch) as f64);
        }
        let o = (size + 2 * pad - k) / stride + 1;
        let gflop = 2.0 * (cin * cout * k * k * o * o) as f64 / 1e9;
        println!("{name:<10} {ms:8.2} ms/img x{count}  {:6.1} GFLOP/s", gflop / ms * 1e3);
        total += ms * count as f64;
    }
    println!("total conv {total:.1} ms/img");
    Ok(())
}
