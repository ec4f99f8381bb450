//! # fdistill
//!
//! Distil a multi-step diffusion model into a one-step generator by f-divergence
//! distribution matching (Xu, Nie & Vahdat 2025), with VarDiU and the reverse-KL family
//! (DMD, DMD2, Diff-Instruct) as alternatives.
//!
//! This facade re-exports the workspace crates; the `fdistill` binary is its command line.
//!
//! ```
//! // Every built-in divergence and every linked plugin resolves by name.
//! let js = fdistill::core::registry::resolve("jensen-shannon").unwrap();
//! assert!((js.h(1.0) - 0.5).abs() < 1e-12);
//! ```

pub use fdistill_backends as backends;
pub use fdistill_core as core;
pub use fdistill_divergences as divergences;
pub use fdistill_nets as nets;

pub use fdistill_core::{Divergence, ModeBehaviour, registry};

pub mod plot;
pub mod study;

/// Makes sure the built-in divergences and the bundled example plugin are linked into the
/// final binary, so their `inventory` registrations exist (see docs/plugins.md).
pub fn link_registrations() {
    fdistill_divergences::link();
    fdistill_plugin_example::link();
}
