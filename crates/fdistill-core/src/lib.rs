//! # fdistill-core
//!
//! The tensor-level core of fdistill, generic over any burn backend:
//!
//! - the network-facing traits: [`Denoiser`], [`EdmDenoiser`], [`FeatureDenoiser`] and
//!   [`DensityRatioEstimator`](ratio::DensityRatioEstimator);
//! - EDM's noise schedules ([`schedule`]) and samplers ([`sampler`]);
//! - the f-distill update pieces ([`update`]: logit clamping, ratio clipping, time-binned
//!   normalisation, the DMD normaliser) and the losses ([`losses`], [`vardiu_bound`]);
//! - the exact Gaussian-mixture testbed ([`gmm`], [`targets`], [`exact`], [`student`]), where
//!   every score and ratio has a closed form.
//!
//! The divergences themselves are scalar math in `fdistill-divergence`. See `SPEC.md` §1–§7.

pub mod denoiser;
pub mod exact;
pub mod gmm;
pub mod losses;
pub mod random;
pub mod ratio;
pub mod sampler;
pub mod schedule;
pub mod student;
pub mod targets;
pub mod update;
pub mod vardiu_bound;

pub use denoiser::{Denoiser, EdmDenoiser, FeatureDenoiser};
pub use exact::{AnalyticTeacher, ExactRatio};
pub use losses::inject_gradient;
pub use ratio::{DensityRatioEstimator, LearnedRatioEstimator};
