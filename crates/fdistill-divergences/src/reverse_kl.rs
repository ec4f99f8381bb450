//! Reverse Kullback–Leibler divergence `KL(q‖p)`.
//!
//! $$ f(r) = -\log r,\quad f''(r) = r^{-2},\quad h(r) = 1,\quad \log h(\ell) = 0. $$
//!
//! With `h ≡ 1` the f-distill gradient is exactly variational score distillation (DMD, DMD2, Diff-Instruct). Mode seeking.
//! SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence};

/// Reverse Kullback–Leibler divergence `KL(q‖p)`.
///
/// $$ f(r) = -\log r,\quad f''(r) = r^{-2},\quad h(r) = 1,\quad \log h(\ell) = 0. $$
///
/// With `h ≡ 1` the f-distill gradient is exactly variational score distillation (DMD, DMD2, Diff-Instruct). Mode seeking.
/// SPEC §1.1; Xu, Nie & Vahdat (2025), Table 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReverseKl;

impl Divergence for ReverseKl {
    fn name(&self) -> &'static str {
        "reverse-kl"
    }
    fn summary(&self) -> String {
        "reverse KL, f = -log r: DMD / VSD / Diff-Instruct; h = 1, mode seeking".into()
    }
    fn h_formula(&self) -> String {
        "1".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Seeking
    }
    fn f(&self, r: f64) -> f64 {
        -r.ln()
    }
    fn f_prime(&self, r: f64) -> f64 {
        -1.0 / r
    }
    fn f_second(&self, r: f64) -> f64 {
        1.0 / (r * r)
    }
    fn h(&self, _r: f64) -> f64 {
        1.0
    }
    fn log_h(&self, _log_r: f64) -> f64 {
        0.0
    }
}

register_divergence!(ReverseKl);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, ReverseKl);
