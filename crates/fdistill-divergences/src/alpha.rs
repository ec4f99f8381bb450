//! The α-divergence family (Amari).
//!
//! $$ f_\alpha(r) = \frac{r^\alpha - \alpha r - (1-\alpha)}{\alpha(\alpha-1)},\quad
//!    f_\alpha''(r) = r^{\alpha-2},\quad h(r) = r^\alpha,\quad \log h(\ell) = \alpha\ell,
//!    \qquad \alpha \notin \\{0, 1\\}. $$
//!
//! α → 0 recovers reverse KL and α → 1 forward KL (use `reverse-kl` / `forward-kl` for those
//! limits: the formula above is 0/0 there). α = ½ is four times the squared Hellinger distance,
//! α = 2 half the Pearson χ², α = −1 half the Neyman χ². SPEC §1.1.
//!
//! Config: `{"type": "alpha", "alpha": 0.5}`; CLI: `alpha:0.5`.

use fdistill_divergence::registry::Params;
use fdistill_divergence::{Divergence, ModeBehaviour, register_divergence};
use serde_json::{Map, Value};

/// A member of the α-divergence family; build it with [`Alpha::new`].
///
/// $$ f_\alpha(r) = \frac{r^\alpha - \alpha r - (1-\alpha)}{\alpha(\alpha-1)},\quad h(r) = r^\alpha. $$
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alpha {
    alpha: f64,
}

impl Alpha {
    /// The member with parameter `alpha`: finite, and neither 0 nor 1 (those are the
    /// `reverse-kl` and `forward-kl` limits).
    pub fn new(alpha: f64) -> Result<Self, String> {
        if !alpha.is_finite() {
            return Err(format!("alpha must be a finite number, got {alpha}"));
        }
        if alpha == 0.0 {
            return Err("alpha = 0 is the limit of the family: use `reverse-kl` instead".into());
        }
        if alpha == 1.0 {
            return Err("alpha = 1 is the limit of the family: use `forward-kl` instead".into());
        }
        Ok(Alpha { alpha })
    }

    /// The parameter α.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Builds from `{"alpha": value}`.
    pub fn from_params(params: &Params) -> Result<Self, String> {
        for key in params.keys() {
            if key != "alpha" {
                return Err(format!(
                    "unknown parameter `{key}`; the only parameter is `alpha`"
                ));
            }
        }
        let value = params
            .get("alpha")
            .ok_or("missing parameter `alpha` (write `alpha:0.5` or {\"type\": \"alpha\", \"alpha\": 0.5})")?;
        let alpha = value
            .as_f64()
            .ok_or_else(|| format!("`alpha` must be a number, got {value}"))?;
        Alpha::new(alpha)
    }
}

impl Divergence for Alpha {
    fn name(&self) -> &'static str {
        "alpha"
    }
    fn summary(&self) -> String {
        "alpha-divergence family, f = (r^a - a r - (1-a))/(a(a-1)); h = r^a: a<1/2 seeking, a>1/2 covering"
            .into()
    }
    fn h_formula(&self) -> String {
        format!("r^{}", self.alpha)
    }
    fn mode(&self) -> ModeBehaviour {
        let a = self.alpha;
        if a < 0.0 {
            ModeBehaviour::StronglySeeking
        } else if a < 0.5 {
            ModeBehaviour::Seeking
        } else if a <= 0.5 {
            ModeBehaviour::Balanced
        } else {
            ModeBehaviour::Covering
        }
    }
    fn f(&self, r: f64) -> f64 {
        let a = self.alpha;
        (r.powf(a) - a * r - (1.0 - a)) / (a * (a - 1.0))
    }
    fn f_prime(&self, r: f64) -> f64 {
        let a = self.alpha;
        (r.powf(a - 1.0) - 1.0) / (a - 1.0)
    }
    fn f_second(&self, r: f64) -> f64 {
        r.powf(self.alpha - 2.0)
    }
    fn h(&self, r: f64) -> f64 {
        r.powf(self.alpha)
    }
    fn log_h(&self, log_r: f64) -> f64 {
        self.alpha * log_r
    }
    fn params(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("alpha".into(), Value::from(self.alpha));
        m
    }
}

register_divergence!(
    Alpha,
    example = Alpha { alpha: 0.5 },
    from_params = Alpha::from_params
);

#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance_half, Alpha::new(0.5).unwrap());
#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance_negative, Alpha::new(-1.0).unwrap());
#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance_two, Alpha::new(2.0).unwrap());
#[cfg(test)]
fdistill_divergence::divergence_conformance!(conformance_near_zero, Alpha::new(0.1).unwrap());

#[cfg(test)]
mod tests {
    use super::*;
    use fdistill_divergence::registry::resolve;

    #[test]
    fn limits_are_rejected_with_a_pointer_to_the_named_divergence() {
        let e0 = resolve("alpha:0").unwrap_err().to_string();
        assert!(e0.contains("reverse-kl"), "{e0}");
        let e1 = resolve("alpha:1").unwrap_err().to_string();
        assert!(e1.contains("forward-kl"), "{e1}");
        let e = resolve("alpha").unwrap_err().to_string();
        assert!(e.contains("missing parameter"), "{e}");
        let e = resolve("alpha:x").unwrap_err().to_string();
        assert!(e.contains("must be a number"), "{e}");
    }

    #[test]
    fn cli_and_config_spellings_agree() {
        let a = resolve("alpha:0.25").unwrap();
        let b = resolve("alpha:alpha=0.25").unwrap();
        assert_eq!(a.label(), "alpha:0.25");
        assert_eq!(b.label(), "alpha:0.25");
        let c: Box<dyn Divergence> =
            serde_json::from_str(r#"{"type": "alpha", "alpha": 0.25}"#).unwrap();
        assert_eq!(c.h(4.0), 4f64.powf(0.25));
    }

    #[test]
    fn named_members_match_their_special_cases() {
        // α = 2: f = (r² − 2r + 1)/2 = Pearson χ² / 2.
        let two = Alpha::new(2.0).unwrap();
        for r in [0.1, 1.0, 3.0] {
            assert!((two.f(r) - 0.5 * (r - 1.0f64).powi(2)).abs() < 1e-12);
        }
        // α = ½: f = 4 (1 − √r) + 2(r − 1), i.e. 4× squared Hellinger plus a linear term.
        let half = Alpha::new(0.5).unwrap();
        for r in [0.1, 1.0, 3.0] {
            let expect = 4.0 * (1.0 - f64::sqrt(r)) + 2.0 * (r - 1.0);
            assert!((half.f(r) - expect).abs() < 1e-12);
        }
        // α → 0 approaches reverse KL's f'' = 1/r² (up to O(α)).
        let small = Alpha::new(1e-6).unwrap();
        assert!((small.f_second(2.0) - 0.25).abs() < 1e-6);
    }
}
