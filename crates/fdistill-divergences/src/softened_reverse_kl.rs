//! Softened reverse KL.
//!
//! $$ f(r) = (r+1)\log\frac{r+1}{2r},\quad f''(r) = \frac{1}{r^2(r+1)},\quad h(r) = \frac{1}{r+1},\quad \log h(\ell) = -\operatorname{softplus}(\ell) = \log\sigma(-\ell). $$
//!
//! Down-weights samples where the teacher is denser than the student. Mode seeking.
//! SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence, softplus};

/// Softened reverse KL.
///
/// $$ f(r) = (r+1)\log\frac{r+1}{2r},\quad f''(r) = \frac{1}{r^2(r+1)},\quad h(r) = \frac{1}{r+1},\quad \log h(\ell) = -\operatorname{softplus}(\ell) = \log\sigma(-\ell). $$
///
/// Down-weights samples where the teacher is denser than the student. Mode seeking.
/// SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftenedReverseKl;

impl Divergence for SoftenedReverseKl {
    fn name(&self) -> &'static str {
        "softened-reverse-kl"
    }
    fn summary(&self) -> String {
        "softened reverse KL, f = (r+1) log((r+1)/(2r)); h = 1/(r+1), mode seeking".into()
    }
    fn h_formula(&self) -> String {
        "1/(r+1)".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Seeking
    }
    fn f(&self, r: f64) -> f64 {
        (r + 1.0) * ((r + 1.0) / (2.0 * r)).ln()
    }
    fn f_prime(&self, r: f64) -> f64 {
        ((r + 1.0) / (2.0 * r)).ln() - 1.0 / r
    }
    fn f_second(&self, r: f64) -> f64 {
        1.0 / (r * r * (r + 1.0))
    }
    fn h(&self, r: f64) -> f64 {
        1.0 / (r + 1.0)
    }
    fn log_h(&self, log_r: f64) -> f64 {
        -softplus(log_r)
    }
}

register_divergence!(SoftenedReverseKl);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, SoftenedReverseKl);
