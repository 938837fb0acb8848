//! 3-D scans in anatomical terms: which way each voxel axis points (from the header's sform,
//! else its qform, else NIfTI's base affine, as nibabel's `get_best_affine` chooses), the scan
//! brought to the closest canonical orientation (RAS+, as `nibabel.as_closest_canonical` does),
//! and 2-D slices cut from it in an anatomical plane — read as an [`Image`] and written back
//! into the scan's own geometry.
//!
//! **Slice layout.** A cut slice is laid out as the study's OASIS_2D slices are: those are
//! LPS files read in SimpleITK's array order ([`crate::ORIENTATION`]), so an axial slice has
//! the subject's anterior at row 0 and the subject's right at column 0 (the radiological
//! view). Every plane follows the same radiological convention:
//!
//! | plane | index N along | rows (top → bottom) | columns (left → right) |
//! | --- | --- | --- | --- |
//! | axial | inferior → superior | anterior → posterior | right → left |
//! | coronal | posterior → anterior | superior → inferior | right → left |
//! | sagittal | left → right | superior → inferior | anterior → posterior |
//!
//! so a volume whose axial slice N *is* an OASIS_2D slice gives that slice's array exactly,
//! whatever voxel order the volume was stored in.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use nifti::{NiftiHeader, NiftiObject, NiftiVolume};

use crate::error::{DataError, Result};
use crate::image::{is_real_scalar, parse_nifti, voxels_in_array_order, write_in_array_order, Image};

/// The layout convention of cut slices, recorded in features files and the feature-cache key.
pub const SLICE_LAYOUT: &str = "ras-canonical-radiological";

/// An anatomical plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    /// The RAS+ world axis the slice index runs along (0 = x, 1 = y, 2 = z).
    fn normal_axis(self) -> usize {
        match self {
            Plane::Sagittal => 0,
            Plane::Coronal => 1,
            Plane::Axial => 2,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Plane::Axial => "axial",
            Plane::Coronal => "coronal",
            Plane::Sagittal => "sagittal",
        }
    }
}

/// Which slice of a plane: an index along the plane's normal (see the module's table), or the
/// middle one (`extent / 2`, rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SliceIndex {
    At(usize),
    Mid,
}

/// `--slice axial|coronal|sagittal:<index|mid>`: the slice every 3-D scan is cut to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SliceSpec {
    pub plane: Plane,
    pub index: SliceIndex,
}

impl FromStr for SliceSpec {
    type Err = DataError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || DataError::InvalidArgument(format!("slice `{text}`: expected axial|coronal|sagittal:<index|mid>, e.g. axial:80 or coronal:mid"));
        let (plane, index) = text.split_once(':').ok_or_else(bad)?;
        let plane = match plane {
            "axial" => Plane::Axial,
            "coronal" => Plane::Coronal,
            "sagittal" => Plane::Sagittal,
            _ => return Err(bad()),
        };
        let index = match index {
            "mid" => SliceIndex::Mid,
            digits if !digits.is_empty() && digits.len() <= 6 && digits.bytes().all(|b| b.is_ascii_digit()) => {
                SliceIndex::At(digits.parse().map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
        Ok(Self { plane, index })
    }
}

impl fmt::Display for SliceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            SliceIndex::At(n) => write!(f, "{}:{n}", self.plane.as_str()),
            SliceIndex::Mid => write!(f, "{}:mid", self.plane.as_str()),
        }
    }
}

/// Where a scan's voxel-to-world matrix came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    Sform,
    Qform,
    /// Neither form is set: NIfTI's base affine `diag(-dx, dy, dz)` (nibabel's fallback).
    Base,
}

/// For each voxel axis (i, j, k): the RAS+ world axis it runs along most closely, and whether
/// it runs against it. Which voxel axis runs along which world axis is a permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orientation {
    axes: [(usize, bool); 3],
}

impl Orientation {
    pub const RAS: Orientation = Orientation { axes: [(0, false), (1, false), (2, false)] };

    /// nibabel's `aff2axcodes`: `"RAS"`, `"LPS"`, `"ASL"`, …
    pub fn codes(&self) -> String {
        const POSITIVE: [char; 3] = ['R', 'A', 'S'];
        const NEGATIVE: [char; 3] = ['L', 'P', 'I'];
        self.axes.iter().map(|&(w, flip)| if flip { NEGATIVE[w] } else { POSITIVE[w] }).collect()
    }

    /// nibabel's `io_orientation` of a voxel-to-world matrix's 3×3 part (columns = voxel
    /// axes): the columns normalised, the closest orthogonal matrix taken (the polar factor),
    /// then each voxel axis given the world axis it changes most, axes with the least ambiguous
    /// direction first, a world axis used once.
    pub fn from_matrix(rzs: [[f64; 3]; 3]) -> std::result::Result<Self, String> {
        let mut rs = rzs;
        for col in 0..3 {
            let norm = (0..3).map(|r| rzs[r][col] * rzs[r][col]).sum::<f64>().sqrt();
            let norm = if norm == 0.0 { 1.0 } else { norm };
            for row in &mut rs {
                row[col] /= norm;
            }
        }
        if !rs.iter().flatten().all(|v| v.is_finite()) {
            return Err("its orientation matrix holds NaN or infinite values".into());
        }
        let mut r = polar_factor(rs).ok_or_else(|| format!("its orientation matrix {rzs:?} is degenerate (its voxel axes do not span 3-D space)"))?;
        let mut order = [0usize, 1, 2];
        let min_abs = |c: usize, m: &[[f64; 3]; 3]| (0..3).map(|row| m[row][c].abs()).fold(f64::INFINITY, f64::min);
        let snapshot = r;
        order.sort_by(|&a, &b| min_abs(a, &snapshot).total_cmp(&min_abs(b, &snapshot)));
        let mut axes = [(0, false); 3];
        for in_ax in order {
            let col: Vec<f64> = (0..3).map(|row| r[row][in_ax]).collect();
            if col.iter().all(|v| v.abs() <= 1e-8) {
                return Err(format!("voxel axis {in_ax} of its orientation matrix {rzs:?} points along no free world axis"));
            }
            let out_ax = (0..3).fold(0, |best, i| if col[i].abs() > col[best].abs() { i } else { best });
            axes[in_ax] = (out_ax, col[out_ax] < 0.0);
            r[out_ax] = [0.0; 3];
        }
        Ok(Self { axes })
    }
}

/// The orthogonal polar factor of a nonsingular 3×3 matrix (Newton's iteration
/// `X ← (X + X⁻ᵀ) / 2`), the closest rotation-or-reflection to it: what nibabel forms by SVD.
fn polar_factor(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut x = m;
    for _ in 0..100 {
        let inv = invert(x)?;
        let mut next = [[0.0; 3]; 3];
        let mut change = 0f64;
        for r in 0..3 {
            for c in 0..3 {
                next[r][c] = 0.5 * (x[r][c] + inv[c][r]);
                change = change.max((next[r][c] - x[r][c]).abs());
            }
        }
        x = next;
        if change < 1e-14 {
            break;
        }
    }
    Some(x)
}

fn invert(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let cof = |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let det = m[0][0] * cof(1, 2, 1, 2) - m[0][1] * cof(1, 2, 0, 2) + m[0][2] * cof(1, 2, 0, 1);
    let scale = m.iter().flatten().fold(0f64, |a, v| a.max(v.abs()));
    if !det.is_finite() || det.abs() <= 1e-12 * scale.powi(3) {
        return None;
    }
    // Inverse = adjugate / det; adj[c][r] is the cofactor of (r, c).
    let mut inv = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            let rows: Vec<usize> = (0..3).filter(|&i| i != r).collect();
            let cols: Vec<usize> = (0..3).filter(|&i| i != c).collect();
            let minor = cof(rows[0], rows[1], cols[0], cols[1]);
            let sign = if (r + c) % 2 == 0 { 1.0 } else { -1.0 };
            inv[c][r] = sign * minor / det;
        }
    }
    Some(inv)
}

/// The 3×3 voxel-to-world part of a header's best affine, and where it came from.
pub fn header_matrix(header: &NiftiHeader) -> ([[f64; 3]; 3], AffineSource) {
    if header.sform_code != 0 {
        let rows = [header.srow_x, header.srow_y, header.srow_z];
        return (rows.map(|row| [row[0] as f64, row[1] as f64, row[2] as f64]), AffineSource::Sform);
    }
    let zooms = [header.pixdim[1] as f64, header.pixdim[2] as f64, header.pixdim[3] as f64];
    if header.qform_code != 0 {
        let (b, c, d) = (header.quatern_b as f64, header.quatern_c as f64, header.quatern_d as f64);
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let rot = [
            [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
            [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
            [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ];
        let qfac = if header.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let z = [zooms[0], zooms[1], zooms[2] * qfac];
        return (rot.map(|row| [row[0] * z[0], row[1] * z[1], row[2] * z[2]]), AffineSource::Qform);
    }
    ([[-zooms[0], 0.0, 0.0], [0.0, zooms[1], 0.0], [0.0, 0.0, zooms[2]]], AffineSource::Base)
}

/// A scan's voxel grid in anatomical terms: its extent `(nx, ny, nz)` along its voxel axes
/// (i, j, k) and their orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanGeometry {
    pub dims: [usize; 3],
    pub orientation: Orientation,
    pub affine_source: AffineSource,
}

impl ScanGeometry {
    /// The extent along the RAS+ world axes (of the canonical volume).
    pub fn canonical_dims(&self) -> [usize; 3] {
        let mut out = [0; 3];
        for (v, &(w, _)) in self.orientation.axes.iter().enumerate() {
            out[w] = self.dims[v];
        }
        out
    }

    /// The stored voxel `(i, j, k)` at index `a` of the canonical (RAS+) volume.
    fn voxel_of(&self, a: [usize; 3]) -> [usize; 3] {
        let mut v = [0; 3];
        for (axis, &(w, flip)) in self.orientation.axes.iter().enumerate() {
            v[axis] = if flip { self.dims[axis] - 1 - a[w] } else { a[w] };
        }
        v
    }

    /// The index `spec` names along its plane's normal, checked against the extent there.
    pub fn slice_index(&self, spec: SliceSpec) -> std::result::Result<usize, String> {
        let extent = self.canonical_dims()[spec.plane.normal_axis()];
        match spec.index {
            SliceIndex::Mid => Ok(extent / 2),
            SliceIndex::At(n) if n < extent => Ok(n),
            SliceIndex::At(_) => Err(format!("slice {spec} is outside the scan: it has {extent} {} slices (0..{})", spec.plane.as_str(), extent - 1)),
        }
    }

    /// The cut slice's `(height, width)` and, row-major, the flat index into the stored voxels
    /// (i fastest) of each of its pixels, laid out as the module's table says.
    pub fn slice_voxels(&self, spec: SliceSpec) -> std::result::Result<(usize, usize, Vec<usize>), String> {
        let n = self.slice_index(spec)?;
        let [ex, ey, ez] = self.canonical_dims();
        // (height, width, canonical index of pixel (r, c)).
        let (height, width): (usize, usize) = match spec.plane {
            Plane::Axial => (ey, ex),
            Plane::Coronal => (ez, ex),
            Plane::Sagittal => (ez, ey),
        };
        let canonical = |r: usize, c: usize| match spec.plane {
            Plane::Axial => [ex - 1 - c, ey - 1 - r, n],
            Plane::Coronal => [ex - 1 - c, n, ez - 1 - r],
            Plane::Sagittal => [n, ey - 1 - c, ez - 1 - r],
        };
        let [nx, ny, _] = self.dims;
        let mut index = Vec::with_capacity(height * width);
        for r in 0..height {
            for c in 0..width {
                let [i, j, k] = self.voxel_of(canonical(r, c));
                index.push(i + nx * (j + ny * k));
            }
        }
        Ok((height, width, index))
    }
}

/// A 3-D scan as stored: its voxels (float32, scaled, i fastest), geometry and header.
pub struct Scan {
    pub geometry: ScanGeometry,
    pub voxels: Vec<f32>,
    header: NiftiHeader,
}

/// Reads a 3-D NIfTI scan (`.nii`/`.nii.gz`, a 4-D one with one volume too) with its
/// orientation. Refuses complex and RGB data, degenerate orientation matrices, and NaN or
/// infinite voxels, naming the file.
pub fn read_scan(path: &Path) -> Result<Scan> {
    let read_err = |message: String| DataError::Read { path: path.to_owned(), message };
    let bytes = std::fs::read(path).map_err(|e| read_err(format!("cannot read: {e}")))?;
    let object = parse_nifti(path, &bytes)?;
    drop(bytes);
    let mut header = object.header().clone();
    let volume = object.into_volume();
    let datatype = volume.data_type();
    if !is_real_scalar(datatype) {
        return Err(DataError::UnsupportedDatatype { path: path.to_owned(), datatype: format!("{datatype:?}") });
    }
    let dims: Vec<usize> = volume.dim().iter().map(|&d| d as usize).collect();
    let dims = match dims.as_slice() {
        [nx, ny, nz] | [nx, ny, nz, 1] => [*nx, *ny, *nz],
        _ => return Err(read_err(format!("expected a 3-D scan, found dimensions {dims:?}"))),
    };
    let (matrix, affine_source) = header_matrix(&header);
    let orientation = Orientation::from_matrix(matrix).map_err(|why| read_err(format!("cannot orient the scan: {why}")))?;
    let voxels = voxels_in_array_order(path, volume, 3)?;
    if let Some(first) = voxels.iter().position(|v| !v.is_finite()) {
        let count = voxels.iter().filter(|v| !v.is_finite()).count();
        let [nx, ny, _] = dims;
        return Err(read_err(format!("{count} voxel(s) are NaN or infinite, first at voxel ({}, {}, {})", first % nx, first / nx % ny, first / (nx * ny))));
    }
    header.scl_slope = 1.0;
    header.scl_inter = 0.0;
    Ok(Scan { geometry: ScanGeometry { dims, orientation, affine_source }, voxels, header })
}

/// Reads a scan and cuts the slice `spec` names (see the module's layout table).
pub fn read_slice(path: &Path, spec: SliceSpec) -> Result<Image> {
    let scan = read_scan(path)?;
    let (height, width, index) = scan.geometry.slice_voxels(spec).map_err(|message| DataError::Read { path: path.to_owned(), message })?;
    let pixels = index.iter().map(|&i| scan.voxels[i]).collect();
    Image::new(height, width, pixels)
}

/// Writes a map of the slice `spec` cut from `scan_path` back into that scan's geometry: a
/// float32 NIfTI of the scan's size and header, the map at the slice's voxels and zero
/// elsewhere, so that it overlays the scan in any viewer. Atomic.
pub fn write_slice_map(path: &Path, scan_path: &Path, spec: SliceSpec, map: &Image) -> Result<()> {
    let scan = read_scan(scan_path)?;
    let (height, width, index) = scan.geometry.slice_voxels(spec).map_err(|message| DataError::Read { path: scan_path.to_owned(), message })?;
    if (height, width) != (map.height(), map.width()) {
        return Err(DataError::InvalidArgument(format!(
            "a map of {}x{} cannot go back into slice {spec} of {}, which is {height}x{width}",
            map.height(),
            map.width(),
            scan_path.display()
        )));
    }
    let mut values = vec![0f32; scan.voxels.len()];
    for (&i, &v) in index.iter().zip(map.pixels()) {
        values[i] = v;
    }
    let [nx, ny, nz] = scan.geometry.dims;
    write_in_array_order(path, &[nz, ny, nx], &values, Some(&scan.header))
}

/// Writes a volume given in canonical RAS+ order (`ras[x + ex·(y + ey·z)]`, extents
/// `[ex, ey, ez]`) stored in another voxel order: voxel axis `v` runs along world axis
/// `orientation`'s `v`-th entry. The sform (code 1, scanner) says so, with isotropic voxels of
/// `voxel_mm` and the volume's centre at the origin. Used for phantoms and tests of orientation.
pub fn write_oriented_volume(path: &Path, ext: [usize; 3], ras: &[f32], orientation: Orientation, voxel_mm: f32) -> Result<()> {
    if ras.len() != ext.iter().product::<usize>() {
        return Err(DataError::InvalidArgument(format!("a {ext:?} volume needs {} voxels, got {}", ext.iter().product::<usize>(), ras.len())));
    }
    let dims: [usize; 3] = orientation.axes.map(|(w, _)| ext[w]);
    let geometry = ScanGeometry { dims, orientation, affine_source: AffineSource::Sform };
    let mut stored = vec![0f32; ras.len()];
    for z in 0..ext[2] {
        for y in 0..ext[1] {
            for x in 0..ext[0] {
                let [i, j, k] = geometry.voxel_of([x, y, z]);
                stored[i + dims[0] * (j + dims[1] * k)] = ras[x + ext[0] * (y + ext[1] * z)];
            }
        }
    }
    let mut rows = [[0f32; 4]; 3];
    for (v, &(w, flip)) in orientation.axes.iter().enumerate() {
        let origin = -((ext[w] as f32 - 1.0) / 2.0) * voxel_mm;
        rows[w][v] = if flip { -voxel_mm } else { voxel_mm };
        rows[w][3] = if flip { (ext[w] as f32 - 1.0) * voxel_mm + origin } else { origin };
    }
    let header = NiftiHeader {
        sform_code: 1,
        qform_code: 0,
        srow_x: rows[0],
        srow_y: rows[1],
        srow_z: rows[2],
        pixdim: [1.0, voxel_mm, voxel_mm, voxel_mm, 1.0, 1.0, 1.0, 1.0],
        xyzt_units: 2,
        ..NiftiHeader::default()
    };
    write_in_array_order(path, &[dims[2], dims[1], dims[0]], &stored, Some(&header))
}

impl Orientation {
    /// The orientation of nibabel axis codes (`"RAS"`, `"LPS"`, `"PIR"`…); `None` unless each
    /// world axis appears once.
    pub fn from_codes(codes: &str) -> Option<Self> {
        let mut axes = [(0, false); 3];
        let mut seen = [false; 3];
        let chars: Vec<char> = codes.chars().collect();
        if chars.len() != 3 {
            return None;
        }
        for (v, c) in chars.iter().enumerate() {
            let (w, flip) = match c {
                'R' => (0, false),
                'L' => (0, true),
                'A' => (1, false),
                'P' => (1, true),
                'S' => (2, false),
                'I' => (2, true),
                _ => return None,
            };
            if std::mem::replace(&mut seen[w], true) {
                return None;
            }
            axes[v] = (w, flip);
        }
        Some(Self { axes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_specs_parse_and_print() {
        let s: SliceSpec = "axial:80".parse().unwrap();
        assert_eq!(s, SliceSpec { plane: Plane::Axial, index: SliceIndex::At(80) });
        assert_eq!(s.to_string(), "axial:80");
        assert_eq!("sagittal:mid".parse::<SliceSpec>().unwrap().to_string(), "sagittal:mid");
        for bad in ["axial", "axial:", "oblique:3", "axial:-1", "axial:1.5", "coronal:middle"] {
            assert!(bad.parse::<SliceSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn orientation_codes_follow_nibabel() {
        let diag = |x: f64, y: f64, z: f64| [[x, 0.0, 0.0], [0.0, y, 0.0], [0.0, 0.0, z]];
        assert_eq!(Orientation::from_matrix(diag(1.0, 1.0, 1.0)).unwrap().codes(), "RAS");
        assert_eq!(Orientation::from_matrix(diag(-1.0, -1.0, 1.0)).unwrap().codes(), "LPS");
        // Sagittal-first storage: i runs A→P, j runs S→I, k runs L→R... as columns of the matrix.
        let psr = [[0.0, 0.0, 1.2], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
        assert_eq!(Orientation::from_matrix(psr).unwrap().codes(), "PIR");
        // A 20° oblique axial tilt still reads as RAS.
        let (c, s) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
        assert_eq!(Orientation::from_matrix([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]).unwrap().codes(), "RAS");
        assert!(Orientation::from_matrix([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).is_err());
        assert!(Orientation::from_matrix([[f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).is_err());
    }

    #[test]
    fn an_lps_volume_cut_axially_gives_its_stored_plane_in_sitk_order() {
        // The OASIS_2D case: a slice stored LPS, read row = j, column = i.
        let geometry = ScanGeometry {
            dims: [4, 3, 2],
            orientation: Orientation::from_matrix([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]).unwrap(),
            affine_source: AffineSource::Sform,
        };
        let (h, w, index) = geometry.slice_voxels("axial:1".parse().unwrap()).unwrap();
        assert_eq!((h, w), (3, 4));
        let expected: Vec<usize> = (0..3).flat_map(|j| (0..4).map(move |i| i + 4 * (j + 3))).collect();
        assert_eq!(index, expected);
        assert!(geometry.slice_voxels("axial:2".parse().unwrap()).unwrap_err().contains("2 axial slices"));
    }

    #[test]
    fn the_same_anatomy_in_any_voxel_order_cuts_to_the_same_slices() {
        let ext = [5, 4, 3];
        let ras: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut cuts: Vec<Vec<Image>> = Vec::new();
        for codes in ["RAS", "LPS", "PIR", "ASL", "IRP"] {
            let path = dir.path().join(format!("{codes}.nii.gz"));
            write_oriented_volume(&path, ext, &ras, Orientation::from_codes(codes).unwrap(), 1.0).unwrap();
            let scan = read_scan(&path).unwrap();
            assert_eq!(scan.geometry.orientation.codes(), codes);
            let specs = ["axial:0", "axial:2", "coronal:1", "sagittal:mid"];
            cuts.push(specs.iter().map(|s| read_slice(&path, s.parse().unwrap()).unwrap()).collect());
        }
        for other in &cuts[1..] {
            assert_eq!(other, &cuts[0]);
        }
        // Axial 2 (z = 2), radiological: row 0 is the most anterior y, column 0 the rightmost x.
        let axial = &cuts[0][1];
        assert_eq!((axial.height(), axial.width()), (4, 5));
        assert_eq!(axial.get(0, 0), ras[4 + 5 * (3 + 4 * 2)]);
        assert_eq!(axial.get(3, 4), ras[5 * 4 * 2]);
        // Sagittal mid (x = 2): rows superior → inferior, columns anterior → posterior.
        let sagittal = &cuts[0][3];
        assert_eq!((sagittal.height(), sagittal.width()), (3, 4));
        assert_eq!(sagittal.get(0, 0), ras[2 + 5 * (3 + 4 * 2)]);
        // A map written back lands at its slice in the scan's own voxel order.
        let lps = dir.path().join("LPS.nii.gz");
        let map = Image::new(4, 5, (0..20).map(|v| v as f32 + 100.0).collect()).unwrap();
        let back = dir.path().join("map.nii.gz");
        write_slice_map(&back, &lps, "axial:2".parse().unwrap(), &map).unwrap();
        assert_eq!(read_slice(&back, "axial:2".parse().unwrap()).unwrap(), map);
        assert_eq!(read_slice(&back, "axial:1".parse().unwrap()).unwrap().pixels().iter().sum::<f32>(), 0.0);
        assert_eq!(read_scan(&back).unwrap().geometry, read_scan(&lps).unwrap().geometry);
    }
}
