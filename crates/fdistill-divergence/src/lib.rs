//! # fdistill-divergence
//!
//! The interface a divergence plugin implements, and nothing heavier: the [`Divergence`]
//! trait (scalar `f64` math, object-safe), the [registry] that resolves divergences by name
//! (built-ins and plugins alike, through `inventory`), log-space weight normalisation
//! ([`weights`]), and (feature `testing`) the conformance suite every divergence must pass.
//!
//! See `SPEC.md` §1 for the formulas and `docs/plugins.md` for writing a plugin.

pub mod divergence;
pub mod error;
pub mod registry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod weights;

pub use divergence::{Divergence, ModeBehaviour, log_sigmoid, sigmoid, softplus};
pub use error::RegistryError;
pub use registry::{DivergenceEntry, DivergenceSpec};

/// Re-exported so plugin crates can register without depending on `inventory` themselves.
pub use inventory;
