//! The study's preprocessing against hand-computed values.

use candle_core::Device;
use tgc_backbones::Preprocess;
use tgc_data::Image;

#[test]
fn resnet_repeats_the_slice_without_changes() {
    let image = Image::new(2, 2, vec![0.1, 0.2, 0.3, 0.4]).unwrap();
    let p = Preprocess { resize_shorter_to: None, imagenet_normalize: false };
    let x = p.apply(&image, &Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[3, 2, 2]);
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v, [0.1, 0.2, 0.3, 0.4].repeat(3));
}

#[test]
fn vit_quantizes_to_8_bits_then_resizes() {
    // Same size: only the 8-bit round trip acts. 0.50390625·255 = 128.496 -> 128;
    // 0.999·255 = 254.745 -> 254; 1.7 clips to 255; −0.2 truncates to 0.
    let image = Image::new(2, 2, vec![0.503_906_25, 0.999, 1.7, -0.2]).unwrap();
    let p = Preprocess { resize_shorter_to: Some(2), imagenet_normalize: false };
    let v: Vec<f32> = p.apply(&image, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let expected = [128.0 / 255.0, 254.0 / 255.0, 1.0, 0.0];
    for (a, b) in v.iter().zip(expected.iter().cycle()) {
        assert!((a - b).abs() < 1e-7, "{v:?}");
    }
}

#[test]
fn vit_resize_of_a_256_slice_is_224_and_preserves_constants() {
    let image = Image::new(256, 256, vec![100.0 / 255.0; 256 * 256]).unwrap();
    let p = Preprocess { resize_shorter_to: Some(224), imagenet_normalize: false };
    let x = p.apply(&image, &Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[3, 224, 224]);
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|a| (a - 100.0 / 255.0).abs() < 1e-6));
}

#[test]
fn vit_resize_of_a_ramp_matches_hand_weights() {
    // 1×4 ramp to 1×2 along columns (rows stay 1): see the crate's unit test for the weights.
    let out = tgc_backbones::resize_bilinear_aa(&[0.0, 4.0, 8.0, 12.0], (1, 4), (1, 2));
    assert!((out[0] - (3.0 + 2.0) / 1.75).abs() < 1e-6, "{out:?}");
    assert!((out[1] - (1.0 + 6.0 + 9.0) / 1.75).abs() < 1e-6, "{out:?}");
}

#[test]
fn imagenet_normalization_is_per_channel() {
    let image = Image::new(1, 1, vec![0.485]).unwrap();
    let p = Preprocess { resize_shorter_to: None, imagenet_normalize: true };
    let v: Vec<f32> = p.apply(&image, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert!(v[0].abs() < 1e-6);
    assert!((v[1] - (0.485 - 0.456) / 0.224).abs() < 1e-6);
    assert!((v[2] - (0.485 - 0.406) / 0.225).abs() < 1e-6);
}
