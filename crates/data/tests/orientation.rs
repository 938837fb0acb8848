//! Slices read as SimpleITK's `GetArrayFromImage` does (the study's loader): row = the second
//! NIfTI axis (j), column = the first (i). The files here are built byte by byte from the
//! NIfTI-1 header layout, so the expected arrays do not come from the code under test.

use std::io::Write;
use std::path::Path;

use tgc_data::{read_nifti, write_nifti, Image};

/// A NIfTI-1 single file (`n+1`) with float32 voxels in file order (i fastest).
fn nifti_bytes(dims: &[i16], voxels: &[f32]) -> Vec<u8> {
    let mut h = vec![0u8; 348];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    let mut dim = [1i16; 8];
    dim[0] = dims.len() as i16;
    dim[1..=dims.len()].copy_from_slice(dims);
    for (k, d) in dim.iter().enumerate() {
        h[40 + 2 * k..42 + 2 * k].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&16i16.to_le_bytes()); // datatype float32
    h[72..74].copy_from_slice(&32i16.to_le_bytes()); // bitpix
    for k in 0..8 {
        h[76 + 4 * k..80 + 4 * k].copy_from_slice(&1f32.to_le_bytes()); // pixdim
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes()); // vox_offset
    h[112..116].copy_from_slice(&1f32.to_le_bytes()); // scl_slope
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(&[0, 0, 0, 0]); // no extensions
    for v in voxels {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

fn write_file(path: &Path, bytes: &[u8]) {
    if path.to_string_lossy().ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// nx = 3, ny = 2. File order (i fastest): (0,0)=1 (1,0)=2 (2,0)=3 (0,1)=4 (1,1)=5 (2,1)=6.
/// SimpleITK's array is [ny][nx] = [[1, 2, 3], [4, 5, 6]]: 2 rows of 3.
const VOXELS: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];

#[test]
fn slices_read_as_simpleitk_arrays() {
    let dir = tempfile::tempdir().unwrap();
    for (name, dims) in [("flat.nii", &[3i16, 2][..]), ("flat.nii.gz", &[3, 2][..]), ("volume.nii", &[3, 2, 1][..]), ("volume.nii.gz", &[3, 2, 1][..])] {
        let path = dir.path().join(name);
        write_file(&path, &nifti_bytes(dims, &VOXELS));
        let image = read_nifti(&path).unwrap();
        assert_eq!((image.height(), image.width()), (2, 3), "{name}");
        assert_eq!(image.pixels(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "{name}");
        // image[r][c] = voxel (i = c, j = r): voxel (2, 0) is 3, voxel (0, 1) is 4.
        assert_eq!((image.get(0, 2), image.get(1, 0)), (3.0, 4.0), "{name}");
    }
}

#[test]
fn written_slices_have_width_as_the_first_axis() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.nii");
    // Two rows of three: the file must say nx = 3, ny = 2 and hold the rows one after another.
    write_nifti(&path, &Image::new(2, 3, VOXELS.to_vec()).unwrap()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let dim = |k: usize| i16::from_le_bytes([bytes[40 + 2 * k], bytes[41 + 2 * k]]);
    assert_eq!((dim(0), dim(1), dim(2)), (2, 3, 2));
    let offset = f32::from_le_bytes(bytes[108..112].try_into().unwrap()) as usize;
    let data: Vec<f32> = bytes[offset..offset + 24].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data, VOXELS);
    assert_eq!(read_nifti(&path).unwrap(), Image::new(2, 3, VOXELS.to_vec()).unwrap());
}
