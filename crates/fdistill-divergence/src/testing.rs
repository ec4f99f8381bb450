//! The conformance suite every divergence — built-in or plugin — must pass unchanged.
//!
//! Run it from your crate's tests with the macro, which expands to one named `#[test]` per
//! check:
//!
//! ```ignore
//! fdistill_divergence::divergence_conformance!(triangular, my_plugin::Triangular);
//! ```
//!
//! or call [`check_all`] for a boxed instance (parametric families: one call per member).

use crate::weights::normalise_log_weights;
use crate::{Divergence, registry};

/// Log grid of `n` points on `[lo, hi]` (both > 0).
fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// `f(1) = 0`.
pub fn check_f_at_one(d: &dyn Divergence) -> Result<(), String> {
    let v = d.f(1.0);
    if v.abs() <= 1e-12 {
        Ok(())
    } else {
        Err(format!("{}: f(1) = {v}, expected 0", d.label()))
    }
}

/// `f''(r) > 0` on a log grid of `r ∈ [1e−6, 1e6]`.
pub fn check_convex(d: &dyn Divergence) -> Result<(), String> {
    for r in log_grid(1e-6, 1e6, 241) {
        let v = d.f_second(r);
        if !(v > 0.0 && v.is_finite()) {
            return Err(format!("{}: f''({r:e}) = {v}, expected > 0", d.label()));
        }
    }
    Ok(())
}

/// `f'` and `f''` against central differences of `f` (and `f''` against those of `f'`)
/// on a log grid of `r ∈ [1e−3, 1e3]`.
pub fn check_derivatives(d: &dyn Divergence) -> Result<(), String> {
    for r in log_grid(1e-3, 1e3, 61) {
        let (f, f1, f2) = (d.f(r), d.f_prime(r), d.f_second(r));
        // f' against a 4th-order central difference of f (step ∝ r).
        let e = 1e-4 * r;
        let fd1 = (-d.f(r + 2.0 * e) + 8.0 * d.f(r + e) - 8.0 * d.f(r - e) + d.f(r - 2.0 * e))
            / (12.0 * e);
        if (fd1 - f1).abs() > 1e-7 * (f1.abs() + f.abs() / r + f2.abs() * r) + 1e-12 {
            return Err(format!(
                "{}: f'({r:e}) = {f1} but the central difference of f gives {fd1}",
                d.label()
            ));
        }
        // f'' against the central second difference of f.
        let e2 = 1e-3 * r;
        let fd2 = (d.f(r + e2) - 2.0 * f + d.f(r - e2)) / (e2 * e2);
        if (fd2 - f2).abs() > 1e-5 * f2.abs() + 1e-8 * f.abs() / (r * r) + 1e-12 {
            return Err(format!(
                "{}: f''({r:e}) = {f2} but the central second difference of f gives {fd2}",
                d.label()
            ));
        }
        // f'' against the central difference of f'.
        let fd2b = (d.f_prime(r + e) - d.f_prime(r - e)) / (2.0 * e);
        if (fd2b - f2).abs() > 1e-6 * (f2.abs() + f1.abs() / r) + 1e-12 {
            return Err(format!(
                "{}: f''({r:e}) = {f2} but the central difference of f' gives {fd2b}",
                d.label()
            ));
        }
    }
    Ok(())
}

/// `h(r) = r² f''(r)` on `r ∈ [1e−6, 1e6]`.
pub fn check_h_definition(d: &dyn Divergence) -> Result<(), String> {
    for r in log_grid(1e-6, 1e6, 121) {
        let expect = r * r * d.f_second(r);
        if !rel_close(d.h(r), expect, 1e-9) {
            return Err(format!(
                "{}: h({r:e}) = {} but r² f''(r) = {expect}",
                d.label(),
                d.h(r)
            ));
        }
    }
    Ok(())
}

/// `log_h(ℓ) = log h(e^ℓ)` to 1e−9 where `h` is representable, and finite on `[−80, 80]`.
pub fn check_log_h(d: &dyn Divergence) -> Result<(), String> {
    for i in 0..=320 {
        let l = -80.0 + 0.5 * i as f64;
        let lh = d.log_h(l);
        if !lh.is_finite() {
            return Err(format!("{}: log_h({l}) = {lh}, expected finite", d.label()));
        }
        let h = d.h(l.exp());
        if h.is_finite() && h > f64::MIN_POSITIVE {
            let direct = h.ln();
            if (direct - lh).abs() > 1e-9 * (1.0 + direct.abs()) {
                return Err(format!(
                    "{}: log_h({l}) = {lh} but log h(e^ℓ) = {direct}",
                    d.label()
                ));
            }
        }
    }
    Ok(())
}

/// Normalised weights of a batch with `ℓ` spread over `[−80, 80]` are finite and average to 1.
pub fn check_normalised_weights(d: &dyn Divergence) -> Result<(), String> {
    let ls: Vec<f64> = (0..=64).map(|i| -80.0 + 2.5 * i as f64).collect();
    let log_h: Vec<f64> = ls.iter().map(|&l| d.log_h(l)).collect();
    let w = normalise_log_weights(&log_h, 0.0);
    if let Some((i, x)) = w
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite() || **x < 0.0)
    {
        return Err(format!(
            "{}: normalised weight at ℓ = {} is {x}",
            d.label(),
            ls[i]
        ));
    }
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    if (mean - 1.0).abs() > 1e-9 {
        return Err(format!(
            "{}: normalised weights average to {mean}, expected 1",
            d.label()
        ));
    }
    Ok(())
}

/// The name is kebab-case, resolves in the registry to a divergence of the same name, and is
/// registered exactly once.
pub fn check_name(d: &dyn Divergence) -> Result<(), String> {
    let name = d.name();
    let kebab = !name.is_empty()
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !kebab {
        return Err(format!(
            "name `{name}` is not kebab-case (lowercase words joined by '-')"
        ));
    }
    let reg = registry::global();
    reg.check().map_err(|e| e.to_string())?;
    let rebuilt = reg
        .build(name, &d.params())
        .map_err(|e| format!("`{name}` does not rebuild from the registry: {e}"))?;
    if rebuilt.name() != name || rebuilt.params() != d.params() {
        return Err(format!(
            "`{}` rebuilt from the registry as `{}`",
            d.label(),
            rebuilt.label()
        ));
    }
    Ok(())
}

/// Every check, in order; the first failure is returned.
pub fn check_all(d: &dyn Divergence) -> Result<(), String> {
    check_f_at_one(d)?;
    check_convex(d)?;
    check_derivatives(d)?;
    check_h_definition(d)?;
    check_log_h(d)?;
    check_normalised_weights(d)?;
    check_name(d)?;
    Ok(())
}

/// A proptest runner of `cases` cases whose seed is fixed per divergence (FNV-1a of its
/// label): every run of the suite draws the same inputs, so a failure reproduces. Failure
/// persistence stays off (the seed already pins the cases; there is no source file here to
/// put a regressions file next to).
pub fn seeded_runner(cases: u32, d: &dyn Divergence) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngSeed, TestRunner};
    let seed = d.label().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    })
}

/// Property check: for random `ℓ ∈ [−80, 80]`, `log_h` is finite, agrees with `log h(e^ℓ)`
/// where representable, and `h` is non-negative.
pub fn proptest_log_h(d: &dyn Divergence) -> Result<(), String> {
    let mut runner = seeded_runner(256, d);
    runner
        .run(&(-80.0f64..80.0), |l| {
            let lh = d.log_h(l);
            proptest::prop_assert!(lh.is_finite(), "log_h({}) = {}", l, lh);
            let h = d.h(l.exp());
            proptest::prop_assert!(h >= 0.0, "h(e^{}) = {} is negative or NaN", l, h);
            if h.is_finite() && h > f64::MIN_POSITIVE {
                proptest::prop_assert!(
                    (h.ln() - lh).abs() <= 1e-9 * (1.0 + lh.abs()),
                    "log_h({}) = {} vs log h = {}",
                    l,
                    lh,
                    h.ln()
                );
            }
            Ok(())
        })
        .map_err(|e| format!("{}: {e}", d.label()))
}

/// Property check: a random batch of log-ratios in `[−80, 80]` gives finite normalised
/// weights that average to 1.
pub fn proptest_weights(d: &dyn Divergence) -> Result<(), String> {
    let mut runner = seeded_runner(128, d);
    runner
        .run(&proptest::collection::vec(-80.0f64..80.0, 1..128), |ls| {
            let log_h: Vec<f64> = ls.iter().map(|&l| d.log_h(l)).collect();
            let w = normalise_log_weights(&log_h, 0.0);
            proptest::prop_assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0));
            let mean = w.iter().sum::<f64>() / w.len() as f64;
            proptest::prop_assert!((mean - 1.0).abs() < 1e-9, "mean {}", mean);
            Ok(())
        })
        .map_err(|e| format!("{}: {e}", d.label()))
}

/// Expands to a module of named `#[test]`s running every conformance check on one
/// divergence instance.
///
/// ```ignore
/// fdistill_divergence::divergence_conformance!(jensen_shannon, JensenShannon);
/// fdistill_divergence::divergence_conformance!(alpha_half, Alpha::new(0.5).unwrap());
/// ```
#[macro_export]
macro_rules! divergence_conformance {
    ($modname:ident, $instance:expr) => {
        #[cfg(test)]
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            use $crate::testing;

            fn instance() -> ::std::boxed::Box<dyn $crate::Divergence> {
                ::std::boxed::Box::new($instance)
            }

            #[test]
            fn f_is_zero_at_one() {
                testing::check_f_at_one(&*instance()).unwrap();
            }
            #[test]
            fn f_is_strictly_convex() {
                testing::check_convex(&*instance()).unwrap();
            }
            #[test]
            fn derivatives_match_central_differences() {
                testing::check_derivatives(&*instance()).unwrap();
            }
            #[test]
            fn h_is_r_squared_f_second() {
                testing::check_h_definition(&*instance()).unwrap();
            }
            #[test]
            fn log_h_is_stable_and_exact() {
                testing::check_log_h(&*instance()).unwrap();
            }
            #[test]
            fn normalised_weights_are_finite_and_average_to_one() {
                testing::check_normalised_weights(&*instance()).unwrap();
            }
            #[test]
            fn name_is_kebab_case_and_registered_once() {
                testing::check_name(&*instance()).unwrap();
            }
            #[test]
            fn property_log_h() {
                testing::proptest_log_h(&*instance()).unwrap();
            }
            #[test]
            fn property_normalised_weights() {
                testing::proptest_weights(&*instance()).unwrap();
            }
        }
    };
}
