//! Flushing denormals: its own test binary, since the mode it sets is the process's.

use std::hint::black_box;

use candle_core::{Device, Tensor};
use tgc_kernels::denormals::{denormals_flushed, flush_denormals};

/// The smallest positive denormal f32 times one: itself with gradual underflow, 0 flushed.
fn tiny_product() -> f32 {
    black_box(f32::from_bits(1)) * black_box(1.0f32)
}

#[test]
fn flushing_sets_every_computing_thread_and_leaves_normal_numbers_alone() {
    let normal = black_box(1.5e-38f32) * black_box(3.0f32);
    if std::env::var("TGC_DENORMALS").is_ok_and(|v| v == "keep") {
        assert!(!flush_denormals());
        return;
    }
    assert_eq!(tiny_product(), f32::from_bits(1), "the default keeps denormals");
    assert!(flush_denormals() && denormals_flushed());
    assert_eq!(tiny_product(), 0.0);
    // Rayon's pool and a thread started afterwards flush too.
    assert!(rayon::broadcast(|_| denormals_flushed() && tiny_product() == 0.0).into_iter().all(|f| f));
    assert!(std::thread::spawn(|| denormals_flushed() && tiny_product() == 0.0).join().unwrap());
    // A candle op (its worker pool included) and a matrix product of the kernels: denormal
    // inputs read as 0, normal results unchanged bit for bit.
    let n = 4096;
    let x = Tensor::from_vec(vec![f32::from_bits(3); n], n, &Device::Cpu).unwrap();
    let y = x.affine(2.0, 0.0).unwrap().to_vec1::<f32>().unwrap();
    assert!(y.iter().all(|&v| v == 0.0), "denormals are zero in candle's ops");
    assert_eq!(black_box(1.5e-38f32) * black_box(3.0f32), normal);
    let a = Tensor::from_vec(vec![f32::from_bits(7); 64 * 64], (64, 64), &Device::Cpu).unwrap();
    let b = Tensor::ones((64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let p = tgc_kernels::ops::Linear::new(b, None).unwrap().forward(&a).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(p.iter().all(|&v| v == 0.0), "a product of denormals is 0");
}
