//! Every kind of bad input gets its own error naming the file at fault.

mod common;

use std::io::Write;
use std::path::Path;

use common::{put, small_dataset};
use tgc_data::{read_nifti, write_nifti, DataError, Dataset, Image};

fn open_err(root: &Path) -> DataError {
    Dataset::open(root).unwrap_err()
}

#[test]
fn missing_data_folder() {
    let err = open_err(Path::new("/no/such/oasis"));
    assert!(matches!(err, DataError::MissingFolder(_)));
    assert!(err.to_string().contains("/no/such/oasis"));
}

#[test]
fn missing_class_folder() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "disease", "0001", 1);
    let err = open_err(dir.path());
    assert!(matches!(&err, DataError::MissingClassFolder { path } if path.ends_with("healthy")), "{err}");
}

#[test]
fn empty_class_folder() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "disease", "0001", 1);
    std::fs::create_dir(dir.path().join("healthy")).unwrap();
    std::fs::write(dir.path().join("healthy/notes.txt"), "x").unwrap();
    let err = open_err(dir.path());
    assert!(matches!(&err, DataError::EmptyClassFolder { path } if path.ends_with("healthy")), "{err}");
}

#[test]
fn file_name_that_does_not_parse() {
    let dir = small_dataset();
    std::fs::write(dir.path().join("disease/scan_17.nii.gz"), b"").unwrap();
    let err = open_err(dir.path());
    assert!(matches!(&err, DataError::BadFileName { path } if path.ends_with("scan_17.nii.gz")), "{err}");
}

#[test]
fn same_patient_and_day_in_both_folders() {
    let dir = small_dataset();
    put(dir.path(), "healthy", "0001", 10);
    let err = open_err(dir.path());
    assert!(matches!(err, DataError::Duplicate { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("OAS30001 day 10") && text.contains("healthy") && text.contains("disease"), "{text}");
}

fn read_err(path: &Path) -> DataError {
    read_nifti(path).unwrap_err()
}

fn valid_nii_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("affined_OAS30009_MR_d0001.nii");
    write_nifti(&path, &Image::new(4, 4, vec![0.5; 16]).unwrap()).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn corrupt_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("affined_OAS30001_MR_d0001.nii.gz");
    std::fs::write(&path, b"\x1f\x8b\x08\x00garbage that is not deflate data at all").unwrap();
    let err = read_err(&path);
    assert!(matches!(&err, DataError::Read { path: p, .. } if p == &path), "{err}");
    assert!(err.to_string().contains("affined_OAS30001_MR_d0001.nii.gz"));
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = valid_nii_bytes(dir.path());
    let path = dir.path().join("truncated.nii");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = read_err(&path);
    assert!(err.to_string().contains("truncated.nii") && err.to_string().contains("truncated"), "{err}");
}

#[test]
fn truncated_gzip_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("affined_OAS30001_MR_d0001.nii.gz");
    write_nifti(&path, &Image::new(8, 8, vec![0.25; 64]).unwrap()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(read_err(&path), DataError::Read { .. }));
}

#[test]
fn not_nifti_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.nii");
    std::fs::write(&path, vec![7u8; 600]).unwrap();
    let err = read_err(&path);
    assert!(matches!(err, DataError::Read { .. }), "{err}");
    assert!(err.to_string().contains("fake.nii"));
}

#[test]
fn unsupported_datatype() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = valid_nii_bytes(dir.path());
    // NIfTI-1 header: datatype at byte 70, bitpix at 72 (little endian). 128 = RGB24.
    bytes[70..72].copy_from_slice(&128i16.to_le_bytes());
    bytes[72..74].copy_from_slice(&24i16.to_le_bytes());
    let path = dir.path().join("rgb.nii");
    std::fs::write(&path, &bytes).unwrap();
    let err = read_err(&path);
    assert!(matches!(&err, DataError::UnsupportedDatatype { datatype, .. } if datatype.contains("Rgb24")), "{err}");
}

#[test]
fn more_than_one_slice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("volume.nii");
    let volume = ndarray::Array3::<f32>::zeros((4, 4, 3));
    nifti::writer::WriterOptions::new(&path).write_nifti(&volume).unwrap();
    let err = read_err(&path);
    assert!(matches!(&err, DataError::NotASlice { dims, .. } if dims == &vec![4, 4, 3]), "{err}");
}

#[test]
fn a_single_slice_volume_is_accepted_with_integer_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slice.nii.gz");
    let volume = ndarray::Array3::<i16>::from_shape_fn((2, 3, 1), |(x, y, _)| (10 * x + y) as i16);
    nifti::writer::WriterOptions::new(&path).write_nifti(&volume).unwrap();
    // nx = 2, ny = 3: three rows (j) of two columns (i), image[r][c] = 10c + r.
    let image = read_nifti(&path).unwrap();
    assert_eq!((image.height(), image.width()), (3, 2));
    assert_eq!(image.pixels(), &[0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
}

#[test]
fn nan_and_infinite_voxels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.nii.gz");
    let mut pixels = vec![0.0; 12];
    pixels[5] = f32::NAN;
    pixels[7] = f32::INFINITY;
    write_nifti(&path, &Image::new(3, 4, pixels).unwrap()).unwrap();
    let err = read_err(&path);
    assert!(matches!(err, DataError::NonFinite { count: 2, row: 1, col: 1, .. }), "{err}");
}

#[test]
fn validate_names_the_bad_file_in_a_data_set() {
    let dir = small_dataset();
    let bad = dir.path().join("healthy/affined_OAS30004_MR_d0050.nii.gz");
    std::fs::File::create(&bad).unwrap().write_all(b"not gzip").unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    let err = ds.validate().unwrap_err();
    assert!(err.to_string().contains("affined_OAS30004_MR_d0050.nii.gz"), "{err}");
}

#[test]
fn round_trip_keeps_pixels_and_orientation() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.nii", "b.nii.gz"] {
        let path = dir.path().join(name);
        let pixels: Vec<f32> = (0..15).map(|i| i as f32 * 0.1).collect();
        let image = Image::new(3, 5, pixels).unwrap();
        write_nifti(&path, &image).unwrap();
        assert_eq!(read_nifti(&path).unwrap(), image);
        // SimpleITK's orientation: the first NIfTI axis is the column (nx = width = 5).
        let object = nifti::ReaderOptions::new().read_file(&path).unwrap();
        use nifti::{NiftiObject, NiftiVolume};
        assert_eq!(object.volume().dim(), &[5, 3]);
    }
}
