//! # fdistill-core
//!
//! The math and the machinery of fdistill: the [`Divergence`] trait and its
//! [registry], log-space weight normalisation ([`weights`]), the
//! [`DensityRatioEstimator`](ratio::DensityRatioEstimator) trait, and (feature `testing`)
//! the conformance suite every divergence must pass.
//!
//! See `SPEC.md` §1–§3 for the formulas.

pub mod checkpoint;
pub mod data;
pub mod denoiser;
pub mod distill;
pub mod divergence;
pub mod error;
pub mod exact;
pub mod feature_metrics;
pub mod gmm;
pub mod idx;
pub mod images;
pub mod losses;
pub mod metrics;
pub mod ratio;
pub mod registry;
pub mod sampler;
pub mod schedule;
pub mod student;
pub mod targets;
pub mod teacher;
#[cfg(feature = "testing")]
pub mod testing;
pub mod update;
pub mod vardiu;
pub mod weights;

pub use denoiser::{Denoiser, FeatureDenoiser};
pub use divergence::{Divergence, ModeBehaviour, log_sigmoid, sigmoid, softplus};
pub use error::RegistryError;
pub use exact::{AnalyticTeacher, ExactRatio};
pub use losses::inject_gradient;
pub use registry::{DivergenceEntry, DivergenceSpec};

/// Re-exported so plugin crates can register without depending on `inventory` themselves.
pub use inventory;
