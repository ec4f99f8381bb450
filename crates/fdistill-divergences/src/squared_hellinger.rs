//! Squared Hellinger distance.
//!
//! $$ f(r) = 1 - \sqrt r,\quad f''(r) = \tfrac14 r^{-3/2},\quad h(r) = \tfrac14\sqrt r,\quad \log h(\ell) = \log\tfrac14 + \tfrac{\ell}{2}. $$
//!
//! The α-divergence at α = ½ up to a constant factor. Balanced.
//! SPEC §1.1.

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence};

/// Squared Hellinger distance.
///
/// $$ f(r) = 1 - \sqrt r,\quad f''(r) = \tfrac14 r^{-3/2},\quad h(r) = \tfrac14\sqrt r,\quad \log h(\ell) = \log\tfrac14 + \tfrac{\ell}{2}. $$
///
/// The α-divergence at α = ½ up to a constant factor. Balanced.
/// SPEC §1.1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SquaredHellinger;

impl Divergence for SquaredHellinger {
    fn name(&self) -> &'static str {
        "squared-hellinger"
    }
    fn summary(&self) -> String {
        "squared Hellinger, f = 1 - sqrt(r); h = sqrt(r)/4, balanced".into()
    }
    fn h_formula(&self) -> String {
        "sqrt(r)/4".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Balanced
    }
    fn f(&self, r: f64) -> f64 {
        1.0 - r.sqrt()
    }
    fn f_prime(&self, r: f64) -> f64 {
        -0.5 / r.sqrt()
    }
    fn f_second(&self, r: f64) -> f64 {
        0.25 / (r * r.sqrt())
    }
    fn h(&self, r: f64) -> f64 {
        0.25 * r.sqrt()
    }
    fn log_h(&self, log_r: f64) -> f64 {
        0.25f64.ln() + 0.5 * log_r
    }
}

register_divergence!(SquaredHellinger);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, SquaredHellinger);
