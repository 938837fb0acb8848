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

use ndarray::{Array2, Axis};
use nifti::{IntoNdArray, NiftiObject, NiftiType, NiftiVolume, ReaderOptions};

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
            return Err(DataError::InvalidArgument(format!(
                "image of {height}x{width} needs {} pixels, got {}",
                height * width,
                pixels.len()
            )));
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

/// Reads a 2-D NIfTI slice (`.nii` or `.nii.gz`) as float32, applying the header's scaling.
///
/// Accepts 2-D images and 3-D volumes whose third dimension is 1. Refuses complex and RGB data,
/// more than one slice, and NaN or infinite voxels.
pub fn read_nifti(path: &Path) -> Result<Image> {
    let read_err = |message: String| DataError::Read { path: path.to_owned(), message };
    let object = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| read_err(describe_nifti_error(&e)))?;
    let volume = object.into_volume();
    let datatype = volume.data_type();
    if !is_real_scalar(datatype) {
        return Err(DataError::UnsupportedDatatype {
            path: path.to_owned(),
            datatype: format!("{datatype:?}"),
        });
    }
    let dims: Vec<usize> = volume.dim().iter().map(|&d| d as usize).collect();
    // NIfTI dims are (nx, ny[, 1]); SimpleITK's array is [ny][nx].
    let (width, height) = match dims.as_slice() {
        [nx, ny] | [nx, ny, 1] => (*nx, *ny),
        _ => return Err(DataError::NotASlice { path: path.to_owned(), dims }),
    };
    let mut array = volume
        .into_ndarray::<f32>()
        .map_err(|e| read_err(describe_nifti_error(&e)))?;
    if array.ndim() == 3 {
        array = array.index_axis_move(Axis(2), 0);
    }
    // `array[[i, j]]` is voxel (i, j); reversing the axes and walking in logical order visits
    // row j = 0 first, i fastest within it.
    let pixels: Vec<f32> = array.reversed_axes().iter().copied().collect();
    check_finite(path, width, &pixels)?;
    Image::new(height, width, pixels).map_err(|e| read_err(e.to_string()))
}

/// Writes a 2-D image as float32 NIfTI (dims `nx = width`, `ny = height`, voxel `(i, j)` =
/// `image[j][i]`); gzip-compressed when the name ends in `.gz`.
/// The file appears complete or not at all (written beside it, then renamed).
pub fn write_nifti(path: &Path, image: &Image) -> Result<()> {
    let write_err = |message: String| DataError::Write { path: path.to_owned(), message };
    // The writer takes `array[[i, j]]` = voxel (i, j): the transpose of the row-major image.
    let array = Array2::from_shape_vec((image.height, image.width), image.pixels.clone())
        .map_err(|e| write_err(e.to_string()))?
        .reversed_axes()
        .as_standard_layout()
        .into_owned();
    let tmp = temp_path(path);
    let written = nifti::writer::WriterOptions::new(&tmp)
        .write_nifti(&array)
        .map_err(|e| write_err(describe_nifti_error(&e)))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| write_err(e.to_string())));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn is_real_scalar(t: NiftiType) -> bool {
    use NiftiType::*;
    matches!(
        t,
        Uint8 | Int8 | Uint16 | Int16 | Uint32 | Int32 | Uint64 | Int64 | Float32 | Float64
    )
}

fn check_finite(path: &Path, width: usize, pixels: &[f32]) -> Result<()> {
    let mut bad = pixels.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((first, _)) = bad.next() {
        return Err(DataError::NonFinite {
            path: path.to_owned(),
            count: 1 + bad.count(),
            row: first / width,
            col: first % width,
        });
    }
    Ok(())
}

fn describe_nifti_error(e: &nifti::NiftiError) -> String {
    match e {
        nifti::NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "file is truncated (unexpected end of data)".to_owned()
        }
        nifti::NiftiError::Io(io) => format!("{io} (corrupt gzip stream or unreadable file?)"),
        nifti::NiftiError::InvalidFormat => "not a NIfTI-1 file (bad magic code)".to_owned(),
        other => other.to_string(),
    }
}
