//! Pearson χ² divergence.
//!
//! $$ f(r) = (r-1)^2,\quad f''(r) = 2,\quad h(r) = 2r^2,\quad \log h(\ell) = \log 2 + 2\ell. $$
//!
//! Quadratic weights: strongly covering, very high variance.
//! SPEC §1.1.

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence};

/// Pearson χ² divergence.
///
/// $$ f(r) = (r-1)^2,\quad f''(r) = 2,\quad h(r) = 2r^2,\quad \log h(\ell) = \log 2 + 2\ell. $$
///
/// Quadratic weights: strongly covering, very high variance.
/// SPEC §1.1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PearsonChi2;

impl Divergence for PearsonChi2 {
    fn name(&self) -> &'static str {
        "pearson-chi2"
    }
    fn summary(&self) -> String {
        "Pearson chi-squared, f = (r-1)^2; h = 2 r^2, covering, very high variance".into()
    }
    fn h_formula(&self) -> String {
        "2r^2".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Covering
    }
    fn f(&self, r: f64) -> f64 {
        (r - 1.0) * (r - 1.0)
    }
    fn f_prime(&self, r: f64) -> f64 {
        2.0 * (r - 1.0)
    }
    fn f_second(&self, _r: f64) -> f64 {
        2.0
    }
    fn h(&self, r: f64) -> f64 {
        2.0 * r * r
    }
    fn log_h(&self, log_r: f64) -> f64 {
        2f64.ln() + 2.0 * log_r
    }
}

register_divergence!(PearsonChi2);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, PearsonChi2);
