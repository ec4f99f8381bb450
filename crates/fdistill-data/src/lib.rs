//! # fdistill-data
//!
//! Training and evaluation data for fdistill: built-in targets (the Gaussian mixtures of
//! `fdistill_core::targets` and `two-moons`), user files (CSV, NPY) and their writers, and
//! image sets (Fashion-MNIST, IDX pairs, PNG folders).
//!
//! Loaders never panic on bad input: every [`DataError`] names the file and, where it
//! applies, the line and field.

mod data;
pub mod idx;
pub mod images;

pub use data::*;
