//! # fdistill-divergence
//!
//! The interface a divergence plugin implements, and nothing heavier: the [`Divergence`]
//! trait (scalar `f64` math, object-safe), the [registry] that resolves divergences by name
//! (built-ins and plugins alike, through `inventory`), log-space weight normalisation
//! ([`weights`]), and (feature `testing`) the conformance suite every divergence must pass.
//!
//! See `SPEC.md` §1 for the formulas and `docs/plugins.md` for writing a plugin.
//!
//! ```
//! use fdistill_divergence::weights::normalised_weights;
//! use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence, softplus};
//!
//! /// Jensen–Shannon written as a plugin would: h(r) = r/(r+1), log h(ℓ) = −softplus(−ℓ).
//! #[derive(Debug, Clone, Copy, Default)]
//! struct MyJs;
//! impl Divergence for MyJs {
//!     fn name(&self) -> &'static str { "my-js" }
//!     fn summary(&self) -> String { "Jensen-Shannon, as a plugin".into() }
//!     fn h_formula(&self) -> String { "r/(r+1)".into() }
//!     fn mode(&self) -> ModeBehaviour { ModeBehaviour::Balanced }
//!     fn f(&self, r: f64) -> f64 { r * r.ln() - (r + 1.0) * ((r + 1.0) / 2.0).ln() }
//!     fn f_prime(&self, r: f64) -> f64 { r.ln() - ((r + 1.0) / 2.0).ln() }
//!     fn f_second(&self, r: f64) -> f64 { 1.0 / (r * (r + 1.0)) }
//!     fn h(&self, r: f64) -> f64 { r / (r + 1.0) }
//!     fn log_h(&self, l: f64) -> f64 { -softplus(-l) }
//! }
//! register_divergence!(MyJs);
//!
//! let d = fdistill_divergence::registry::resolve("my-js").unwrap();
//! // Weights of a batch of log-ratios: h(r_i) / mean h, finite even for ℓ = ±80.
//! let w = normalised_weights(d.as_ref(), &[-80.0, 0.0, 80.0], 0.0);
//! assert!((w.iter().sum::<f64>() / 3.0 - 1.0).abs() < 1e-12);
//! assert!(w[0] < 1e-30 && (w[2] - 2.0 * w[1]).abs() < 1e-12);
//! ```

#![warn(missing_docs)]

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
