//! One 2-D slice in memory, and its NIfTI reading and writing.
//!
//! Orientation ([`ORIENTATION`]): the array equals SimpleITK's `GetArrayFromImage`, which is
//! how the study's `OASIS_2D/dataset.py` reads every slice. SimpleITK indexes the array
//! `[j][i]`: the row is the **second** NIfTI axis (j), the column the first (i), so
//! `image[r][c]` = voxel `(i = c, j = r)`. That is the file's voxel order (i varies fastest)
//! read as a row-major `[ny, nx]` array. `nibabel`'s `get_fdata()` gives the transpose
//! (row = i); an earlier version of tgc read slices that way. Writing is the inverse, so a
//! slice written and read back is unchanged and SimpleITK reads our phantoms as we do.

use std::path::Path;

use ndarray::Axis;
use nifti::{IntoNdArray, NiftiObject, NiftiType, NiftiVolume};

use crate::atomic::temp_path;
use crate::error::{DataError, Result};

/// The orientation convention of [`read_nifti`] and [`write_nifti`], recorded in every file
/// whose contents depend on it (features files, the feature cache key).
pub const ORIENTATION: &str = "sitk-ji";

/// A 2-D single-channel image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    height: usize,
    width: usize,
    pixels: Vec<f32>,
}

impl Image {
    /// Wraps row-major pixels; the length must be `height * width`.
    pub fn new(height: usize, width: usize, pixels: Vec<f32>) -> Result<Self> {
        if height == 0 || width == 0 || pixels.len() != height * width {
            return Err(DataError::InvalidArgument(format!("image of {height}x{width} needs {} pixels, got {}", height * width, pixels.len())));
        }
        Ok(Self { height, width, pixels })
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    pub fn into_pixels(self) -> Vec<f32> {
        self.pixels
    }

    pub fn get(&self, row: usize, col: usize) -> f32 {
        self.pixels[row * self.width + col]
    }
}

/// The most voxels a slice may claim (a 4096 × 4096 slice): headers that claim more are refused
/// before anything is allocated for them.
pub const MAX_VOXELS: usize = 4096 * 4096;

/// The most bytes a `.nii.gz` may decompress to (a 4096² slice of float64 and a large
/// extension fit well inside).
const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Reads a 2-D NIfTI slice (`.nii` or `.nii.gz`) as float32, applying the header's scaling.
///
/// Accepts 2-D images and 3-D volumes whose third dimension is 1. Refuses complex and RGB data,
/// more than one slice, more than [`MAX_VOXELS`], and NaN or infinite voxels.
pub fn read_nifti(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Read { path: path.to_owned(), message: format!("cannot read: {e}") })?;
    decode_nifti(path, &bytes)
}

/// [`read_nifti`] of a file's bytes already in memory (`path` names it in errors and decides,
/// by its `.gz` ending, whether the bytes are gzip-compressed).
pub fn decode_nifti(path: &Path, bytes: &[u8]) -> Result<Image> {
    let read_err = |message: String| DataError::Read { path: path.to_owned(), message };
    let volume = parse_nifti(path, bytes)?.into_volume();
    let datatype = volume.data_type();
    if !is_real_scalar(datatype) {
        return Err(DataError::UnsupportedDatatype { path: path.to_owned(), datatype: format!("{datatype:?}") });
    }
    let dims: Vec<usize> = volume.dim().iter().map(|&d| d as usize).collect();
    // NIfTI dims are (nx, ny[, 1]); SimpleITK's array is [ny][nx].
    let (width, height) = match dims.as_slice() {
        [nx, ny] | [nx, ny, 1] => (*nx, *ny),
        _ => return Err(DataError::NotASlice { path: path.to_owned(), dims }),
    };
    let pixels = voxels_in_array_order(path, volume, 2)?;
    check_finite(path, width, &pixels)?;
    Image::new(height, width, pixels).map_err(|e| read_err(e.to_string()))
}

/// The voxels of a volume whose first `rank` axes are its extent (trailing axes of length 1
/// dropped), as float32 in SimpleITK's array order: the axes reversed, so the last NIfTI axis
/// varies slowest and the first (i) fastest.
pub(crate) fn voxels_in_array_order(path: &Path, volume: nifti::InMemNiftiVolume, rank: usize) -> Result<Vec<f32>> {
    let read_err = |message: String| DataError::Read { path: path.to_owned(), message };
    let mut array = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| volume.into_ndarray::<f32>()))
        .map_err(|_| read_err("the NIfTI reader failed on this file's data".to_owned()))?
        .map_err(|e| read_err(describe_nifti_error(&e)))?;
    while array.ndim() > rank {
        let last = array.ndim() - 1;
        array = array.index_axis_move(Axis(last), 0);
    }
    Ok(array.reversed_axes().iter().copied().collect())
}

/// A NIfTI file's bytes (gzip-compressed when `path` ends in `.gz`), bounded and header-checked
/// before the third-party reader sees them.
pub(crate) fn parse_nifti(path: &Path, bytes: &[u8]) -> Result<nifti::InMemNiftiObject> {
    let read_err = |message: String| DataError::Read { path: path.to_owned(), message };
    let decompressed;
    let data: &[u8] = if path.to_string_lossy().ends_with(".gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(flate2::read::GzDecoder::new(bytes), MAX_DECOMPRESSED + 1), &mut out)
            .map_err(|e| read_err(describe_nifti_error(&nifti::NiftiError::Io(e))))?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(read_err(format!("decompresses to more than {} MiB, too large for a slice", MAX_DECOMPRESSED >> 20)));
        }
        decompressed = out;
        &decompressed
    } else {
        bytes
    };
    check_header(data).map_err(read_err)?;
    // The header was checked above; the crate is still third-party code reading outside bytes,
    // so a panic inside it becomes this file's error rather than the program's end.
    let parsed = std::panic::catch_unwind(|| nifti::InMemNiftiObject::from_reader(std::io::Cursor::new(data)))
        .map_err(|_| read_err("the NIfTI reader failed on this file's header or data".to_owned()))?;
    let object = parsed.map_err(|e| read_err(describe_nifti_error(&e)))?;
    Ok(object)
}

/// Writes a 2-D image as float32 NIfTI (dims `nx = width`, `ny = height`, voxel `(i, j)` =
/// `image[j][i]`); gzip-compressed when the name ends in `.gz`.
/// The file appears complete or not at all (written beside it, then renamed).
pub fn write_nifti(path: &Path, image: &Image) -> Result<()> {
    write_in_array_order(path, &[image.height, image.width], &image.pixels, None)
}

/// Writes row-major values in SimpleITK's array order (`shape` slowest axis first) as float32
/// NIfTI — the writer takes `array[[i, j, …]]` = voxel (i, j, …), the axes reversed — with
/// `header`'s geometry when given; through a temporary file renamed into place.
pub(crate) fn write_in_array_order(path: &Path, shape: &[usize], values: &[f32], header: Option<&nifti::NiftiHeader>) -> Result<()> {
    let write_err = |message: String| DataError::Write { path: path.to_owned(), message };
    let array =
        ndarray::ArrayD::from_shape_vec(shape, values.to_vec()).map_err(|e| write_err(e.to_string()))?.reversed_axes().as_standard_layout().into_owned();
    let tmp = temp_path(path);
    let options = nifti::writer::WriterOptions::new(&tmp);
    let options = match header {
        Some(h) => options.reference_header(h),
        None => options,
    };
    let written = options
        .write_nifti(&array)
        .map_err(|e| write_err(describe_nifti_error(&e)))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| write_err(e.to_string())));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The header checks that keep the NIfTI reader within bounds: NIfTI-1 single file (`n+1`),
/// 1–7 dimensions of at least 1, at most [`MAX_VOXELS`] voxels, data inside the file.
fn check_header(data: &[u8]) -> std::result::Result<(), String> {
    if data.len() < 348 {
        return Err("file is truncated (unexpected end of data)".to_owned());
    }
    let little = i32::from_le_bytes([data[0], data[1], data[2], data[3]]) == 348;
    if !little && i32::from_be_bytes([data[0], data[1], data[2], data[3]]) != 348 {
        return Err("not a NIfTI-1 file (sizeof_hdr is not 348)".to_owned());
    }
    if &data[344..348] != b"n+1\0" {
        return Err("not a single-file NIfTI-1 image (magic is not n+1)".to_owned());
    }
    let i16_at = |o: usize| {
        if little {
            i16::from_le_bytes([data[o], data[o + 1]])
        } else {
            i16::from_be_bytes([data[o], data[o + 1]])
        }
    };
    let rank = i16_at(40);
    if !(1..=7).contains(&rank) {
        return Err(format!("header claims {rank} dimensions (NIfTI allows 1 to 7)"));
    }
    let dims: Vec<i16> = (1..=rank as usize).map(|k| i16_at(40 + 2 * k)).collect();
    if dims.iter().any(|&d| d < 1) {
        return Err(format!("header claims dimensions {dims:?}"));
    }
    let voxels = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize)).unwrap_or(usize::MAX);
    if voxels > MAX_VOXELS {
        return Err(format!("header claims {dims:?} = {voxels} voxels, more than the {MAX_VOXELS} a slice may have"));
    }
    let datatype = i16_at(70);
    // Bytes per voxel of each NIfTI-1 datatype code.
    let size = match datatype {
        2 | 256 => 1,
        4 | 512 => 2,
        128 => 3,
        8 | 16 | 768 | 2304 => 4,
        32 | 64 | 1024 | 1280 => 8,
        1536 | 1792 => 16,
        2048 => 32,
        other => return Err(format!("header claims datatype code {other}, which NIfTI-1 does not define")),
    };
    let bitpix = i16_at(72);
    if bitpix as i32 != 8 * size as i32 {
        return Err(format!("header claims {bitpix} bits per voxel for datatype code {datatype} ({} expected)", 8 * size));
    }
    let f32_at = |o: usize| {
        let b = [data[o], data[o + 1], data[o + 2], data[o + 3]];
        if little {
            f32::from_le_bytes(b)
        } else {
            f32::from_be_bytes(b)
        }
    };
    let offset = f32_at(108);
    if !(offset.is_finite() && offset >= 348.0 && offset <= data.len() as f32) {
        return Err(format!("header's vox_offset {offset} lies outside the file"));
    }
    let needed = offset as usize + voxels * size;
    if needed > data.len() {
        return Err(format!("file is truncated (unexpected end of data): {} bytes, the header needs {needed}", data.len()));
    }
    Ok(())
}

pub(crate) fn is_real_scalar(t: NiftiType) -> bool {
    use NiftiType::*;
    matches!(t, Uint8 | Int8 | Uint16 | Int16 | Uint32 | Int32 | Uint64 | Int64 | Float32 | Float64)
}

fn check_finite(path: &Path, width: usize, pixels: &[f32]) -> Result<()> {
    let mut bad = pixels.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((first, _)) = bad.next() {
        return Err(DataError::NonFinite { path: path.to_owned(), count: 1 + bad.count(), row: first / width, col: first % width });
    }
    Ok(())
}

pub(crate) fn describe_nifti_error(e: &nifti::NiftiError) -> String {
    match e {
        nifti::NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => "file is truncated (unexpected end of data)".to_owned(),
        nifti::NiftiError::Io(io) => format!("{io} (corrupt gzip stream or unreadable file?)"),
        nifti::NiftiError::InvalidFormat => "not a NIfTI-1 file (bad magic code)".to_owned(),
        other => other.to_string(),
    }
}
