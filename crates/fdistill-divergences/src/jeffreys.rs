//! Jeffreys divergence `KL(p‖q) + KL(q‖p)`.
//!
//! $$ f(r) = (r-1)\log r,\quad f''(r) = \frac1r + \frac1{r^2},\quad h(r) = r + 1,\quad \log h(\ell) = \operatorname{softplus}(\ell). $$
//!
//! The sum of the forward- and reverse-KL weights: covering, high variance.
//! SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence, softplus};

/// Jeffreys divergence `KL(p‖q) + KL(q‖p)`.
///
/// $$ f(r) = (r-1)\log r,\quad f''(r) = \frac1r + \frac1{r^2},\quad h(r) = r + 1,\quad \log h(\ell) = \operatorname{softplus}(\ell). $$
///
/// The sum of the forward- and reverse-KL weights: covering, high variance.
/// SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jeffreys;

impl Divergence for Jeffreys {
    fn name(&self) -> &'static str {
        "jeffreys"
    }
    fn summary(&self) -> String {
        "Jeffreys (forward + reverse KL), f = (r-1) log r; h = r + 1, covering, high variance"
            .into()
    }
    fn h_formula(&self) -> String {
        "r+1".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Covering
    }
    fn f(&self, r: f64) -> f64 {
        (r - 1.0) * r.ln()
    }
    fn f_prime(&self, r: f64) -> f64 {
        r.ln() + 1.0 - 1.0 / r
    }
    fn f_second(&self, r: f64) -> f64 {
        1.0 / r + 1.0 / (r * r)
    }
    fn h(&self, r: f64) -> f64 {
        r + 1.0
    }
    fn log_h(&self, log_r: f64) -> f64 {
        softplus(log_r)
    }
}

register_divergence!(Jeffreys);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, Jeffreys);
