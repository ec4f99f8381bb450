//! # fdistill
//!
//! Distil a multi-step diffusion model into a one-step generator by f-divergence
//! distribution matching (Xu, Nie & Vahdat 2025), with VarDiU and the reverse-KL family
//! (DMD, DMD2, Diff-Instruct) as alternatives.
//!
//! This facade re-exports the workspace crates; the `fdistill` binary (package
//! `fdistill-cli`) is its command line.
//!
//! ```
//! fdistill::link_registrations();
//! // Every built-in divergence and every linked plugin resolves by name.
//! let js = fdistill::divergence::registry::resolve("jensen-shannon").unwrap();
//! assert!((js.h(1.0) - 0.5).abs() < 1e-12);
//! ```

pub use fdistill_backends as backends;
pub use fdistill_core as core;
pub use fdistill_data as data;
pub use fdistill_divergence as divergence;
pub use fdistill_divergences as divergences;
pub use fdistill_metrics as metrics;
pub use fdistill_nets as nets;
pub use fdistill_plot as plot;
pub use fdistill_studies as studies;
pub use fdistill_train as train;

pub use fdistill_divergence::{Divergence, ModeBehaviour, registry};

/// Makes sure the built-in divergences are linked into the final binary, so their
/// `inventory` registrations exist (see docs/plugins.md). A binary that uses a plugin
/// crate links it the same way (`my_plugin::link()` or `use my_plugin as _;`).
pub fn link_registrations() {
    fdistill_divergences::link();
}
