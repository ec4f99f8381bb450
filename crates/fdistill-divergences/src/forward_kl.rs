//! Forward Kullback–Leibler divergence `KL(p‖q)`.
//!
//! $$ f(r) = r\log r,\quad f''(r) = \frac1r,\quad h(r) = r,\quad \log h(\ell) = \ell. $$
//!
//! Weights grow linearly with the ratio: mode covering, with high variance where the ratio is large.
//! SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence};

/// Forward Kullback–Leibler divergence `KL(p‖q)`.
///
/// $$ f(r) = r\log r,\quad f''(r) = \frac1r,\quad h(r) = r,\quad \log h(\ell) = \ell. $$
///
/// Weights grow linearly with the ratio: mode covering, with high variance where the ratio is large.
/// SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardKl;

impl Divergence for ForwardKl {
    fn name(&self) -> &'static str {
        "forward-kl"
    }
    fn summary(&self) -> String {
        "forward KL, f = r log r; h = r, mode covering with high variance".into()
    }
    fn h_formula(&self) -> String {
        "r".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Covering
    }
    fn f(&self, r: f64) -> f64 {
        r * r.ln()
    }
    fn f_prime(&self, r: f64) -> f64 {
        r.ln() + 1.0
    }
    fn f_second(&self, r: f64) -> f64 {
        1.0 / r
    }
    fn h(&self, r: f64) -> f64 {
        r
    }
    fn log_h(&self, log_r: f64) -> f64 {
        log_r
    }
}

register_divergence!(ForwardKl);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, ForwardKl);
