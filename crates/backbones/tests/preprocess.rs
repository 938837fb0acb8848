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

/// `sin(0.37·i)` on a 6×8 grid.
fn grid() -> Vec<f32> {
    (0..48).map(|i| (i as f32 * 0.37).sin()).collect()
}

#[test]
fn antialiased_resize_matches_pytorch_reference_values() {
    // torch.nn.functional.interpolate(x, size=(4, 3), mode="bilinear", antialias=True,
    // align_corners=False) on the 6×8 grid, computed once with PyTorch 2.15 and written here.
    let expected = [0.1543403, 0.2438504, 0.1610747, -0.0330527, 0.065463, 0.1177276, -0.0220912, -0.1013378, -0.1089868, 0.1724201, -0.0312718, -0.2128695];
    let out = tgc_backbones::resize_bilinear_aa(&grid(), (6, 8), (4, 3));
    for (a, b) in out.iter().zip(expected) {
        assert!((a - b).abs() < 2e-6, "{out:?}");
    }
    // Upsampling (no antialiasing effect) of the top-left 3×2 block to 5×3.
    let block: Vec<f32> = (0..3).flat_map(|r| grid()[r * 8..r * 8 + 2].to_vec()).collect();
    let expected = [
        0.0, 0.1808077, 0.3616154, 0.0722385, 0.107145, 0.1420514, 0.1805962, -0.0033492, -0.1872946, -0.1409137, -0.1058714, -0.070829, -0.3552535,
        -0.1742194, 0.0068146,
    ];
    let out = tgc_backbones::resize_bilinear_aa(&block, (3, 2), (5, 3));
    for (a, b) in out.iter().zip(expected) {
        assert!((a - b).abs() < 2e-6, "{out:?}");
    }
}
