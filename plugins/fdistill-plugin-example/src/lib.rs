//! # fdistill-plugin-example
//!
//! A third-party divergence for fdistill, written exactly as an outside author would: a
//! type implementing [`fdistill_divergence::Divergence`], one `register_divergence!` line, and the
//! conformance suite run unchanged. See `docs/plugins.md` for the whole path.
//!
//! **Triangular discrimination** (Le Cam's / Vincze–Le Cam distance):
//!
//! $$ f(r) = \frac{(r-1)^2}{r+1},\quad f'(r) = \frac{(r-1)(r+3)}{(r+1)^2},\quad
//!    f''(r) = \frac{8}{(r+1)^3},\quad h(r) = \frac{8r^2}{(r+1)^3}, $$
//!
//! $$ \log h(\ell) = \log 8 + 2\ell - 3\operatorname{softplus}(\ell). $$
//!
//! `h` rises like `8r²` for small `r`, peaks at `r = 2`, and decays like `8/r` for large `r`:
//! it ignores both regions the student has not found and regions it over-covers.

#![warn(missing_docs)]

use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence, softplus};

/// Triangular discrimination, `f(r) = (r−1)²/(r+1)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Triangular;

impl Divergence for Triangular {
    fn name(&self) -> &'static str {
        "triangular"
    }
    fn summary(&self) -> String {
        "triangular discrimination (plugin), f = (r-1)^2/(r+1); h = 8r^2/(r+1)^3, bounded".into()
    }
    fn h_formula(&self) -> String {
        "8r^2/(r+1)^3".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Seeking
    }
    fn f(&self, r: f64) -> f64 {
        (r - 1.0) * (r - 1.0) / (r + 1.0)
    }
    fn f_prime(&self, r: f64) -> f64 {
        (r - 1.0) * (r + 3.0) / ((r + 1.0) * (r + 1.0))
    }
    fn f_second(&self, r: f64) -> f64 {
        8.0 / (r + 1.0).powi(3)
    }
    fn h(&self, r: f64) -> f64 {
        8.0 * r * r / (r + 1.0).powi(3)
    }
    fn log_h(&self, log_r: f64) -> f64 {
        8f64.ln() + 2.0 * log_r - 3.0 * softplus(log_r)
    }
}

register_divergence!(Triangular);

/// Call from a binary to make sure this crate is linked (its registration then exists).
pub fn link() {}

// The conformance suite, unchanged, as for every built-in.
#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance, Triangular);

#[cfg(test)]
mod tests {

    #[test]
    fn resolves_by_name_and_peaks_at_two() {
        let d = fdistill_divergence::registry::resolve("triangular").unwrap();
        assert_eq!(d.name(), "triangular");
        // h'(r) ∝ r(2 − r)/(r+1)^4: maximum at r = 2, h(2) = 32/27.
        assert!((d.h(2.0) - 32.0 / 27.0).abs() < 1e-12);
        assert!(d.h(1.9) < d.h(2.0) && d.h(2.1) < d.h(2.0));
    }
}
