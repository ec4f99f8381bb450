//! The conformance suite must be able to fail: each deliberately broken divergence below is
//! caught by the check meant for it (and a correct one passes).

use fdistill_divergence::testing;
use fdistill_divergence::{Divergence, ModeBehaviour, softplus};

/// Jensen–Shannon with switchable defects.
#[derive(Debug, Clone, Default)]
struct Js {
    f_offset: f64,
    f_prime_scale: f64,
    wrong_h: bool,
    log_h_offset: f64,
    name: &'static str,
}

impl Js {
    fn good() -> Self {
        Js {
            f_prime_scale: 1.0,
            name: "jensen-shannon",
            ..Default::default()
        }
    }
}

impl Divergence for Js {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> String {
        "test".into()
    }
    fn h_formula(&self) -> String {
        "r/(r+1)".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Balanced
    }
    fn f(&self, r: f64) -> f64 {
        r * r.ln() - (r + 1.0) * ((r + 1.0) / 2.0).ln() + self.f_offset
    }
    fn f_prime(&self, r: f64) -> f64 {
        self.f_prime_scale * (2.0 * r / (r + 1.0)).ln()
    }
    fn f_second(&self, r: f64) -> f64 {
        1.0 / (r * (r + 1.0))
    }
    fn h(&self, r: f64) -> f64 {
        if self.wrong_h { r } else { r / (r + 1.0) }
    }
    fn log_h(&self, l: f64) -> f64 {
        -softplus(-l) + self.log_h_offset
    }
}

/// α = 10 with a naive `log(exp(ℓ)^10)`: overflows to +∞ for large ℓ.
#[derive(Debug, Clone)]
struct NaiveAlpha10;

impl Divergence for NaiveAlpha10 {
    fn name(&self) -> &'static str {
        "naive-alpha"
    }
    fn summary(&self) -> String {
        "test".into()
    }
    fn h_formula(&self) -> String {
        "r^10".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Covering
    }
    fn f(&self, r: f64) -> f64 {
        (r.powi(10) - 10.0 * r + 9.0) / 90.0
    }
    fn f_prime(&self, r: f64) -> f64 {
        (r.powi(9) - 1.0) / 9.0
    }
    fn f_second(&self, r: f64) -> f64 {
        r.powi(8)
    }
    fn h(&self, r: f64) -> f64 {
        r.powi(10)
    }
    fn log_h(&self, l: f64) -> f64 {
        l.exp().powi(10).ln()
    }
}

/// Concave generator: `f(r) = −(r − 1)²`.
#[derive(Debug, Clone)]
struct Concave;

impl Divergence for Concave {
    fn name(&self) -> &'static str {
        "concave"
    }
    fn summary(&self) -> String {
        "test".into()
    }
    fn h_formula(&self) -> String {
        "-2r^2".into()
    }
    fn mode(&self) -> ModeBehaviour {
        ModeBehaviour::Covering
    }
    fn f(&self, r: f64) -> f64 {
        -(r - 1.0) * (r - 1.0)
    }
    fn f_prime(&self, r: f64) -> f64 {
        -2.0 * (r - 1.0)
    }
    fn f_second(&self, _r: f64) -> f64 {
        -2.0
    }
    fn h(&self, r: f64) -> f64 {
        -2.0 * r * r
    }
    fn log_h(&self, l: f64) -> f64 {
        2f64.ln() + 2.0 * l
    }
}

#[test]
fn a_correct_divergence_passes_every_math_check() {
    fdistill::link_registrations();
    let d = Js::good();
    testing::check_f_at_one(&d).unwrap();
    testing::check_convex(&d).unwrap();
    testing::check_derivatives(&d).unwrap();
    testing::check_h_definition(&d).unwrap();
    testing::check_log_h(&d).unwrap();
    testing::check_normalised_weights(&d).unwrap();
    testing::check_name(&d).unwrap();
}

#[test]
fn f_not_zero_at_one_is_caught() {
    let d = Js {
        f_offset: 1e-3,
        ..Js::good()
    };
    assert!(testing::check_f_at_one(&d).is_err());
}

#[test]
fn wrong_first_derivative_is_caught() {
    let d = Js {
        f_prime_scale: 1.001,
        ..Js::good()
    };
    let e = testing::check_derivatives(&d).unwrap_err();
    assert!(e.contains("f'("), "{e}");
}

#[test]
fn h_inconsistent_with_f_second_is_caught() {
    let d = Js {
        wrong_h: true,
        ..Js::good()
    };
    assert!(testing::check_h_definition(&d).is_err());
}

#[test]
fn log_h_off_by_a_constant_is_caught() {
    let d = Js {
        log_h_offset: 1e-6,
        ..Js::good()
    };
    assert!(testing::check_log_h(&d).is_err());
    assert!(testing::proptest_log_h(&d).is_err());
}

#[test]
fn overflowing_log_h_is_caught() {
    let e = testing::check_log_h(&NaiveAlpha10).unwrap_err();
    assert!(e.contains("expected finite"), "{e}");
    // The other checks of this (mathematically valid) divergence pass.
    testing::check_f_at_one(&NaiveAlpha10).unwrap();
    testing::check_h_definition(&NaiveAlpha10).unwrap();
}

#[test]
fn concave_generator_is_caught() {
    assert!(testing::check_convex(&Concave).is_err());
    assert!(
        testing::check_normalised_weights(&Concave).is_ok(),
        "log_h itself is fine"
    );
}

#[test]
fn bad_or_unregistered_names_are_caught() {
    fdistill::link_registrations();
    let upper = Js {
        name: "Jensen_Shannon",
        ..Js::good()
    };
    assert!(
        testing::check_name(&upper)
            .unwrap_err()
            .contains("kebab-case")
    );
    let unregistered = Js {
        name: "not-registered",
        ..Js::good()
    };
    assert!(
        testing::check_name(&unregistered)
            .unwrap_err()
            .contains("does not rebuild")
    );
}

/// The property checks draw the same cases on every run (a fixed seed per divergence label),
/// and different divergences draw different ones.
#[test]
fn proptest_runners_are_seeded_per_divergence() {
    let draw = |d: &dyn Divergence| {
        let seen = std::cell::RefCell::new(Vec::new());
        testing::seeded_runner(16, d)
            .run(&(-80.0f64..80.0), |l| {
                seen.borrow_mut().push(l);
                Ok(())
            })
            .unwrap();
        seen.into_inner()
    };
    let a = draw(&Js::good());
    assert_eq!(a.len(), 16);
    assert_eq!(a, draw(&Js::good()), "same divergence, same cases");
    let other = Js {
        name: "other-js",
        ..Js::good()
    };
    assert_ne!(a, draw(&other), "another label, other cases");
}
