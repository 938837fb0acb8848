//! One 3-D volume in memory, and its NIfTI reading and writing, in the orientation of the
//! slices ([`crate::ORIENTATION`]): SimpleITK's `GetArrayFromImage` array `[k][j][i]`, so that
//! depth is the third NIfTI axis, rows the second and columns the first. The header read with
//! a volume is kept, so that a map written with it overlays the volume in any viewer.

use std::path::Path;

use nifti::{NiftiHeader, NiftiObject, NiftiVolume};

use crate::error::{DataError, Result};
use crate::image::{is_real_scalar, parse_nifti, voxels_in_array_order, write_in_array_order};

/// A single-channel volume, row-major `[depth, height, width]`, with the header it came with.
#[derive(Debug, Clone)]
pub struct Volume {
    pub depth: usize,
    pub height: usize,
    pub width: usize,
    pub voxels: Vec<f32>,
    header: Option<NiftiHeader>,
}

impl Volume {
    /// Wraps row-major voxels; the length must be `depth · height · width`.
    pub fn new((depth, height, width): (usize, usize, usize), voxels: Vec<f32>) -> Result<Self> {
        if depth == 0 || height == 0 || width == 0 || voxels.len() != depth * height * width {
            return Err(DataError::InvalidArgument(format!("a {depth}×{height}×{width} volume needs {} voxels, got {}", depth * height * width, voxels.len())));
        }
        Ok(Self { depth, height, width, voxels, header: None })
    }

    /// The same geometry (and header) holding other values: a map of this volume.
    pub fn with_voxels(&self, voxels: Vec<f32>) -> Result<Self> {
        let mut v = Self::new((self.depth, self.height, self.width), voxels)?;
        v.header = self.header.clone();
        Ok(v)
    }

    pub fn dims(&self) -> (usize, usize, usize) {
        (self.depth, self.height, self.width)
    }
}

/// Reads a 3-D NIfTI volume (`.nii` or `.nii.gz`) as float32, applying the header's scaling.
/// Refuses other ranks (a 2-D slice is read by [`crate::read_nifti`]), complex and RGB data,
/// more than [`crate::MAX_VOXELS`] voxels, and NaN or infinite voxels.
pub fn read_nifti_volume(path: &Path) -> Result<Volume> {
    let read_err = |message: String| DataError::Read { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|e| read_err(format!("cannot read: {e}")))?;
    let object = parse_nifti(path, &bytes)?;
    let mut header = object.header().clone();
    let volume = object.into_volume();
    let datatype = volume.data_type();
    if !is_real_scalar(datatype) {
        return Err(DataError::UnsupportedDatatype { path: path.to_owned(), datatype: format!("{datatype:?}") });
    }
    let dims: Vec<usize> = volume.dim().iter().map(|&d| d as usize).collect();
    let (nx, ny, nz) = match dims.as_slice() {
        [nx, ny, nz] | [nx, ny, nz, 1] => (*nx, *ny, *nz),
        _ => return Err(read_err(format!("expected a 3-D volume, found dimensions {dims:?}"))),
    };
    let voxels = voxels_in_array_order(path, volume, 3)?;
    if let Some(first) = voxels.iter().position(|v| !v.is_finite()) {
        let count = voxels.iter().filter(|v| !v.is_finite()).count();
        return Err(read_err(format!(
            "{count} voxel(s) are NaN or infinite, first at (slice {}, row {}, column {})",
            first / (nx * ny),
            first / nx % ny,
            first % nx
        )));
    }
    // The values are already scaled: a map written with this header must not be scaled again.
    header.scl_slope = 1.0;
    header.scl_inter = 0.0;
    Ok(Volume { depth: nz, height: ny, width: nx, voxels, header: Some(header) })
}

/// Writes a volume as float32 NIfTI with the header it was read with (its geometry, so that it
/// overlays the original), or a plain one; gzip-compressed when the name ends in `.gz`. The
/// file appears complete or not at all.
pub fn write_nifti_volume(path: &Path, volume: &Volume) -> Result<()> {
    write_in_array_order(path, &[volume.depth, volume.height, volume.width], &volume.voxels, volume.header.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_written_and_read_back_is_unchanged_in_the_slices_orientation() {
        let dir = tempfile::tempdir().unwrap();
        let (d, h, w) = (3, 4, 5);
        let voxels: Vec<f32> = (0..d * h * w).map(|v| v as f32 * 0.5).collect();
        let path = dir.path().join("v.nii.gz");
        write_nifti_volume(&path, &Volume::new((d, h, w), voxels.clone()).unwrap()).unwrap();
        let back = read_nifti_volume(&path).unwrap();
        assert_eq!(back.dims(), (d, h, w));
        assert_eq!(back.voxels, voxels);
        // Voxel (i, j, k) of the file is [k][j][i]: the header's dims are (w, h, d).
        let object = nifti::ReaderOptions::new().read_file(&path).unwrap();
        assert_eq!(&object.header().dim[..4], &[3, w as u16, h as u16, d as u16]);
        let map = back.with_voxels(vec![1.0; d * h * w]).unwrap();
        let again = dir.path().join("map.nii");
        write_nifti_volume(&again, &map).unwrap();
        assert_eq!(read_nifti_volume(&again).unwrap().voxels, vec![1.0; d * h * w]);
        // A 2-D slice is not a volume.
        let slice = dir.path().join("s.nii");
        crate::write_nifti(&slice, &crate::Image::new(2, 2, vec![0.0; 4]).unwrap()).unwrap();
        assert!(read_nifti_volume(&slice).unwrap_err().to_string().contains("3-D volume"));
    }
}
