//! # fdistill-data
//!
//! Training and evaluation data for fdistill: built-in targets (the Gaussian mixtures of
//! `fdistill_core::targets` and `two-moons`), user files (CSV, NPY) and their writers, and
//! image sets (Fashion-MNIST, IDX pairs, PNG folders).
//!
//! Loaders never panic on bad input: every [`DataError`] names the file and, where it
//! applies, the line and field.
//!
//! ```
//! use fdistill_data::DataSource;
//! use rand::SeedableRng;
//!
//! // A name, a path (`points.csv`, `x.npy`) or an image set, resolved the same way.
//! let data = DataSource::parse("ring8-unbalanced").resolve().unwrap();
//! assert_eq!(data.dim(), 2);
//! let batch = data.sample(16, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)); // [16, 2], row-major
//! assert_eq!(batch.len(), 32);
//! ```

#![warn(missing_docs)]

mod data;
pub mod idx;
pub mod images;

pub use data::*;
