//! # fdistill-core
//!
//! The tensor-level core of fdistill, generic over any burn backend:
//!
//! - the network-facing traits: [`Denoiser`], [`EdmDenoiser`], [`FeatureDenoiser`] and
//!   [`DensityRatioEstimator`];
//! - EDM's noise schedules ([`schedule`]) and samplers ([`sampler`]);
//! - the f-distill update pieces ([`update`]: logit clamping, ratio clipping, time-binned
//!   normalisation, the DMD normaliser) and the losses ([`losses`], [`vardiu_bound`]);
//! - the exact Gaussian-mixture testbed ([`gmm`], [`targets`], [`exact`], [`student`]), where
//!   every score and ratio has a closed form.
//!
//! The divergences themselves are scalar math in `fdistill-divergence`. See `SPEC.md` §1–§7.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Tensor, TensorData};
//! use fdistill_core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
//! use fdistill_core::{AnalyticTeacher, Denoiser, targets};
//!
//! // EDM's sampling grid: 18 levels from σ_max down to σ_min, then 0.
//! let sigmas = karras_sigmas(18, SIGMA_MIN, SIGMA_MAX, RHO).unwrap();
//! assert_eq!(sigmas.len(), 19);
//! assert!((sigmas[0] - 80.0).abs() < 1e-9 && sigmas[18] == 0.0);
//!
//! // The exact Tweedie denoiser of a built-in mixture: at small σ it returns the mode.
//! let teacher = AnalyticTeacher::new(targets::ring8_unbalanced());
//! let x = Tensor::<Flex, 2>::from_data(TensorData::new(vec![4.0f32, 0.1], [1, 2]), &Default::default());
//! let sigma = Tensor::<Flex, 1>::from_data(TensorData::new(vec![0.01f32], [1]), &Default::default());
//! let d: Vec<f32> = teacher.denoise(x, sigma, None).into_data().to_vec().unwrap();
//! assert!((d[0] - 4.0).abs() < 1e-3 && (d[1] - 0.1).abs() < 1e-2);
//! ```

#![warn(missing_docs)]

pub mod denoiser;
pub mod exact;
pub mod gmm;
pub mod host;
pub mod losses;
pub mod random;
pub mod ratio;
pub mod sampler;
pub mod schedule;
pub mod student;
pub mod targets;
pub mod update;
pub mod vardiu_bound;

pub use denoiser::{Denoiser, EdmDenoiser, FeatureDenoiser, guidance_combine, guided_denoise};
pub use exact::{AnalyticTeacher, ClassConditionalTeacher, ExactRatio};
pub use losses::inject_gradient;
pub use ratio::{DensityRatioEstimator, LearnedRatioEstimator};
