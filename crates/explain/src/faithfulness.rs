//! Is a map evidence? Deletion and insertion curves, ROAD (removal with noisy linear
//! imputation), the model-randomization check as a rank correlation, the map's sparseness
//! (Gini index) and complexity (entropy), and — where the truth is known — energy inside a
//! region and the pointing game; Captum's infidelity and max-sensitivity.

mod curves;
mod filter;
mod infidelity;
mod maps;
mod protocol;
mod road;
mod sensitivity;

pub use curves::{deletion_insertion, deletion_insertion_many, Baseline, CurveConfig, Curves};
pub use filter::gaussian_blur;
pub use infidelity::{infidelity, InfidelityConfig};
pub use maps::{above_noise, complexity, energy_in_mask, pointing_hit, sparseness, spearman, ssim, NOISE_ABSOLUTE, NOISE_RELATIVE};
pub use protocol::{compare_maps, evaluate, Evaluation, Measures, Protocol, Similarity};
pub use road::{noisy_linear_imputation, road, Road, RoadConfig};
pub use sensitivity::{sensitivity_max, SensitivityConfig};
