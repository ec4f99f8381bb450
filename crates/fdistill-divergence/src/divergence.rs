//! The [`Divergence`] trait: the scalar math of one f-divergence.
//!
//! An f-divergence between the teacher's noisy marginal `p_σ` and the student's `q_σ` is
//!
//! $$ D_f(p\\,\\|\\,q) = \int q(x)\\, f\\!\left(\frac{p(x)}{q(x)}\right) \mathrm{d}x,
//!    \qquad f \text{ convex},\ f(1) = 0. $$
//!
//! Its gradient with respect to the generator's parameters is a weighted score difference
//! (SPEC §1):
//!
//! $$ \nabla_\theta D_f = -\\,\mathbb{E}\big[\\, h(r)\\,(s_p - s_q)^\top \partial_\theta x_t \big],
//!    \qquad h(r) = r^2 f''(r),\quad r = p_\sigma / q_\sigma . $$
//!
//! The trait is plain `f64` math so it is object-safe, backend-free and easy to implement:
//! a plugin author never touches tensors. The trainer turns a batch of log-ratios
//! `ℓ = log r` into normalised weights with [`crate::weights::normalise_log_weights`], which
//! only calls [`Divergence::log_h`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a divergence treats modes of the teacher that the student misses.
///
/// With `r = p/q` large where the student lacks mass, a weight `h` that grows with `r`
/// pushes mass into missing modes (mode covering); a weight that shrinks with `r` ignores
/// them (mode seeking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeBehaviour {
    /// `h` decays like a negative power of `r` (Neyman χ², α < 0): drops missing modes hardest.
    StronglySeeking,
    /// `h` constant or decaying (reverse KL, softened reverse KL, 0 < α < ½).
    Seeking,
    /// `h` grows but saturates or grows slowly (Jensen–Shannon, squared Hellinger, α = ½).
    Balanced,
    /// `h` grows at least linearly in `r` (forward KL, Jeffreys, Pearson χ², α > ½).
    Covering,
}

impl ModeBehaviour {
    /// The kebab-case label used in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            ModeBehaviour::StronglySeeking => "strongly-seeking",
            ModeBehaviour::Seeking => "seeking",
            ModeBehaviour::Balanced => "balanced",
            ModeBehaviour::Covering => "covering",
        }
    }
}

impl fmt::Display for ModeBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One f-divergence, as scalar `f64` math.
///
/// Implementors give `f`, its first two derivatives, the weight `h(r) = r² f''(r)` and its
/// logarithm as a function of `ℓ = log r` in a closed form that stays finite for every finite
/// `ℓ` (compute in log space: never `exp` then divide). Every implementation — built-in or
/// plugin — must pass the conformance suite in `fdistill_divergence::testing` (feature `testing`).
///
/// # Example
///
/// A complete divergence (triangular discrimination, `f(r) = (r−1)²/(r+1)`), registered the
/// way the built-ins are:
///
/// ```
/// use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence, softplus};
///
/// #[derive(Debug, Clone, Copy, Default)]
/// pub struct Triangular;
///
/// impl Divergence for Triangular {
///     fn name(&self) -> &'static str { "doc-triangular" }
///     fn summary(&self) -> String { "triangular discrimination (r-1)^2/(r+1)".into() }
///     fn h_formula(&self) -> String { "8r^2/(r+1)^3".into() }
///     fn mode(&self) -> ModeBehaviour { ModeBehaviour::Balanced }
///     fn f(&self, r: f64) -> f64 { (r - 1.0).powi(2) / (r + 1.0) }
///     fn f_prime(&self, r: f64) -> f64 { (r - 1.0) * (r + 3.0) / (r + 1.0).powi(2) }
///     fn f_second(&self, r: f64) -> f64 { 8.0 / (r + 1.0).powi(3) }
///     fn h(&self, r: f64) -> f64 { 8.0 * r * r / (r + 1.0).powi(3) }
///     // log h = log 8 + 2ℓ − 3 log(1 + e^ℓ) = log 8 + 2ℓ − 3 softplus(ℓ)
///     fn log_h(&self, l: f64) -> f64 { 8f64.ln() + 2.0 * l - 3.0 * softplus(l) }
/// }
/// register_divergence!(Triangular);
///
/// let d = fdistill_divergence::registry::resolve("doc-triangular").unwrap();
/// assert_eq!(d.f(1.0), 0.0);
/// assert!((d.h(3.0) - 8.0 * 9.0 / 64.0).abs() < 1e-12);
/// ```
pub trait Divergence: dyn_clone::DynClone + fmt::Debug + Send + Sync {
    /// Registry name, kebab-case (`"jensen-shannon"`). For a parametric family the family
    /// name (`"alpha"`); the parameters are in [`Divergence::params`].
    fn name(&self) -> &'static str;

    /// One line: what the divergence is and how it behaves.
    fn summary(&self) -> String;

    /// `h(r)` as a short human-readable formula, for tables (`"r/(r+1)"`).
    fn h_formula(&self) -> String;

    /// Mode-seeking / covering behaviour.
    fn mode(&self) -> ModeBehaviour;

    /// The generator `f(r)`: convex on `(0, ∞)` with `f(1) = 0`.
    fn f(&self, r: f64) -> f64;

    /// `f'(r)`.
    fn f_prime(&self, r: f64) -> f64;

    /// `f''(r)`, strictly positive on `(0, ∞)`.
    fn f_second(&self, r: f64) -> f64;

    /// The gradient weight `h(r) = r² f''(r)`, exactly as in SPEC §1.1 (no constant dropped).
    fn h(&self, r: f64) -> f64;

    /// `log h(e^ℓ)` written in closed form in `ℓ = log r`, finite for every finite `ℓ`.
    fn log_h(&self, log_r: f64) -> f64;

    /// Parameters of a parametric family (`{"alpha": 0.5}`); empty for a fixed divergence.
    /// Together with [`Divergence::name`] they rebuild the divergence through the registry.
    fn params(&self) -> Map<String, Value> {
        Map::new()
    }

    /// `name` for a fixed divergence, `name:v1,v2` (the CLI spelling) for a parametric one.
    fn label(&self) -> String {
        let params = self.params();
        if params.is_empty() {
            self.name().to_string()
        } else {
            let values: Vec<String> = params.values().map(|v| v.to_string()).collect();
            format!("{}:{}", self.name(), values.join(","))
        }
    }
}

dyn_clone::clone_trait_object!(Divergence);

/// `log(1 + e^x)`, computed without overflow for any finite `x`.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// `log σ(x) = −softplus(−x)`, the log of the logistic sigmoid, finite for any finite `x`.
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// The logistic sigmoid `1 / (1 + e^{−x})`, without overflow.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_matches_naive_formula_where_representable() {
        for &x in &[-30.0, -3.0, -0.5, 0.0, 0.5, 3.0, 30.0] {
            let naive = (1.0 + f64::exp(x)).ln();
            assert!((softplus(x) - naive).abs() < 1e-12, "x = {x}");
        }
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0 && softplus(-1000.0) < 1e-300);
    }

    #[test]
    fn sigmoid_and_log_sigmoid_agree() {
        for &x in &[-700.0, -20.0, -1.0, 0.0, 1.0, 20.0, 700.0] {
            let s = sigmoid(x);
            assert!(s.is_finite() && (0.0..=1.0).contains(&s));
            if s > 0.0 {
                assert!((s.ln() - log_sigmoid(x)).abs() < 1e-12, "x = {x}");
            }
        }
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
    }
}
