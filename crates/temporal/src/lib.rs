//! Training on frozen-backbone features: the linear probe and the temporal DNN ([`model`]),
//! the training loop with Adam, ReduceLROnPlateau and early stopping ([`train`]), repeated
//! experiments under the study's or an honest protocol ([`run_experiment`]), metrics
//! ([`metrics`]), report files ([`report`]) and explanations of the temporal model
//! ([`explain_temporal`]).

mod error;
pub mod evaluation;
pub mod experiment;
pub mod explain_temporal;
pub mod metrics;
pub mod model;
pub mod report;
pub mod schedule;
pub mod train;
pub mod train_bn_inputs;

pub use error::{Result, TrainError};
pub use experiment::{model_name, run_experiment, run_experiment_with, ExperimentConfig, HeadKind, Iteration, Protocol};
pub use metrics::Metrics;
pub use train::{TrainConfig, TrainOutcome};
