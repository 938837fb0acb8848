//! Data for tgc: read a data set — an OASIS_2D folder of labelled NIfTI slices or a BIDS cohort
//! of 3-D scans labelled by its tables, cut to a slice in anatomical terms
//! ([`Dataset::open_with`]) — count it
//! ([`Stats`]), split patients ([`train_test_split`], [`stratified_k_fold`]), build temporal
//! sequences ([`build_sequences`]), export a manifest ([`manifest`]), and generate synthetic
//! phantoms with ground-truth masks ([`phantom::generate`]). Knows nothing of models.

mod atomic;
mod bids;
mod dataset;
mod delimited;
mod error;
mod features;
mod image;
mod labels;
mod manifest;
mod name;
mod orient;
pub mod phantom;
mod safetensors_file;
mod sequence;
mod shard;
mod split;
mod stats;
mod table;
mod volume;

pub use atomic::write_atomic;
pub use bids::{write_derivative_description, DaySource};
pub use dataset::{BidsSession, Dataset, Layout, Record, SourceOptions, SourceReport};
pub use error::{DataError, Result};
pub use features::FeatureSet;
pub use image::{decode_nifti, read_nifti, write_nifti, Image, MAX_VOXELS, ORIENTATION};
pub use labels::{ClassRule, Cmp, LabelSpec, LabelTable, VisitMatch};
pub use manifest::manifest;
pub use name::{file_name, parse_file_name, Label, PatientId};
pub use orient::{read_scan, read_slice, write_slice_map, AffineSource, Orientation, Plane, Scan, ScanGeometry, SliceIndex, SliceSpec, SLICE_LAYOUT};
pub use safetensors_file::safetensors_bytes;
pub use sequence::{build_sequences, SeqLen, Sequence};
pub use shard::{assign as assign_shards, select as shard_images, Shard};
pub use split::{stratified_k_fold, train_test_split, Side, Split};
pub use stats::{ClassCounts, Stats};
pub use table::{read_table, write_table};
pub use volume::{read_nifti_volume, write_nifti_volume, Volume};
