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
//!
//! ```
//! use fdistill_core::targets::ring8_unbalanced;
//! use fdistill_metrics::samples::{mmd2, mode_report};
//! use rand::SeedableRng;
//!
//! let target = ring8_unbalanced();
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let (a, b) = (target.sample(500, &mut rng), target.sample(500, &mut rng));
//! assert_eq!(mmd2(&a, &a, 2), 0.0);          // identical sets
//! // two exact sets differ by the floor only; a set shifted by one unit is far off
//! let shifted: Vec<f64> = b.iter().enumerate().map(|(i, v)| v + (i % 2 == 0) as u8 as f64).collect();
//! assert!(mmd2(&a, &b, 2) < 0.2 * mmd2(&a, &shifted, 2));
//! assert_eq!(mode_report(&target, &a).modes_covered, 8);
//! ```

#![warn(missing_docs)]

pub mod features;
pub mod samples;
