//! Neyman χ² divergence.
//!
//! $$ f(r) = \frac{(1-r)^2}{r},\quad f''(r) = \frac{2}{r^3},\quad h(r) = \frac2r,\quad \log h(\ell) = \log 2 - \ell. $$
//!
//! The weight decays where the teacher is denser than the student: strongly mode seeking.
//! SPEC §1.1.

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence};

/// Neyman χ² divergence.
///
/// $$ f(r) = \frac{(1-r)^2}{r},\quad f''(r) = \frac{2}{r^3},\quad h(r) = \frac2r,\quad \log h(\ell) = \log 2 - \ell. $$
///
/// The weight decays where the teacher is denser than the student: strongly mode seeking.
/// SPEC §1.1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeymanChi2;

impl Divergence for NeymanChi2 {
    fn name(&self) -> &'static str {
        "neyman-chi2"
    }
    fn summary(&self) -> String {
        "Neyman chi-squared, f = (1-r)^2/r; h = 2/r, strongly mode seeking".into()
    }
    fn h_formula(&self) -> String {
        "2/r".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::StronglySeeking
    }
    fn f(&self, r: f64) -> f64 {
        (1.0 - r) * (1.0 - r) / r
    }
    fn f_prime(&self, r: f64) -> f64 {
        1.0 - 1.0 / (r * r)
    }
    fn f_second(&self, r: f64) -> f64 {
        2.0 / (r * r * r)
    }
    fn h(&self, r: f64) -> f64 {
        2.0 / r
    }
    fn log_h(&self, log_r: f64) -> f64 {
        2f64.ln() - log_r
    }
}

register_divergence!(NeymanChi2);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, NeymanChi2);
