use std::time::Instant;
fn main() {
    println!("{:?}", tgc_backbones::vecmath::SimdLevel::detect());
    let mut x: Vec<f32> = (0..1_000_000).map(|i| (i as f32 * 0.001).sin() * 4.0).collect();
    for _ in 0..3 {
        let t = Instant::now();
        tgc_backbones::vecmath::gelu_in_place(&mut x, true);
        println!("gelu 1M: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        for row in x.chunks_mut(197) { tgc_backbones::vecmath::softmax_in_place(row, 8.0); }
        println!("softmax 1M: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    }
}
