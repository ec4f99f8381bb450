//! # fdistill-metrics
//!
//! Offline metrics (SPEC §8), no network needed:
//!
//! - [`samples`]: sample-set distances (MMD², energy distance, sliced Wasserstein) and mode
//!   statistics against a known Gaussian mixture (coverage, per-mode mass, mean log-density);
//! - [`features`]: image-quality metrics in a classifier's feature space (Fréchet distance,
//!   KID, precision/recall, density/coverage, class histogram).
//!
//! Report every number next to its real-vs-real floor.

pub mod features;
pub mod samples;
