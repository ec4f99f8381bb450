//! Normalised weights from log-ratios, in log space (SPEC §3, stage 2).
//!
//! The trainer never computes `h(r)` by exponentiating a discriminator logit: it evaluates
//! `log h(ℓ)` and normalises with a log-mean-exp, so no weight overflows however extreme
//! the logits.

use crate::Divergence;

/// The stabiliser of SPEC §3: `h_i / (mean h + ε)`, `ε = 1e−6` in the reference code.
pub const WEIGHT_EPS: f64 = 1e-6;

/// `log( (1/n) Σ exp(a_i) )`, stable for any finite inputs. Returns `−∞` for an empty slice.
pub fn log_mean_exp(a: &[f64]) -> f64 {
    if a.is_empty() {
        return f64::NEG_INFINITY;
    }
    let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY || !m.is_finite() {
        return m;
    }
    let s: f64 = a.iter().map(|&x| (x - m).exp()).sum();
    m + (s / a.len() as f64).ln()
}

/// `log(e^a + e^b)`, stable.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Batch-normalised weights from per-sample log-weights `log h_i`:
///
/// $$ w_i = \frac{h_i}{\tfrac1B \sum_j h_j + \varepsilon}
///        = \exp\\!\Big(\log h_i - \log\big(\mathrm{LME}(\log h) \oplus \log\varepsilon\big)\Big) $$
///
/// where LME is the log-mean-exp and ⊕ the log-add-exp. With `eps = 0` the weights average
/// exactly to 1; each weight is at most `B`, so the result is finite whenever the inputs are.
/// Non-finite inputs propagate (they are the caller's error to report, not to scrub).
pub fn normalise_log_weights(log_h: &[f64], eps: f64) -> Vec<f64> {
    let lme = log_mean_exp(log_h);
    let log_denominator = if eps > 0.0 {
        log_add_exp(lme, eps.ln())
    } else {
        lme
    };
    log_h.iter().map(|&l| (l - log_denominator).exp()).collect()
}

/// Normalised f-distill weights `h(r_i) / mean_j h(r_j)` for a batch of log-ratios
/// `ℓ_i = log p_σ/q_σ`: [`Divergence::log_h`] then [`normalise_log_weights`].
pub fn normalised_weights(divergence: &dyn Divergence, log_ratios: &[f64], eps: f64) -> Vec<f64> {
    let log_h: Vec<f64> = log_ratios.iter().map(|&l| divergence.log_h(l)).collect();
    normalise_log_weights(&log_h, eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn log_mean_exp_matches_direct_sum() {
        let a = [0.1, -2.0, 3.0, 0.5];
        let direct = (a.iter().map(|x: &f64| x.exp()).sum::<f64>() / 4.0).ln();
        assert!((log_mean_exp(&a) - direct).abs() < 1e-14);
        assert_eq!(log_mean_exp(&[]), f64::NEG_INFINITY);
    }

    #[test]
    fn weights_equal_direct_division_when_representable() {
        let h = [0.5, 1.0, 2.0, 4.0];
        let mean = h.iter().sum::<f64>() / 4.0;
        let log_h: Vec<f64> = h.iter().map(|x| x.ln()).collect();
        let w = normalise_log_weights(&log_h, 1e-6);
        for (wi, hi) in w.iter().zip(h) {
            assert!((wi - hi / (mean + 1e-6)).abs() < 1e-13);
        }
    }

    #[test]
    fn extreme_log_weights_stay_finite() {
        // e^{±160} overflows nothing here; e^{1000} would overflow a direct computation.
        let log_h = [-1000.0, 0.0, 1000.0, 999.0];
        let w = normalise_log_weights(&log_h, 0.0);
        assert!(w.iter().all(|x| x.is_finite()));
        let mean = w.iter().sum::<f64>() / 4.0;
        assert!((mean - 1.0).abs() < 1e-12);
        // The largest dominates: e^{1000} / ((e^{1000} + e^{999}) / 4).
        let expect = 4.0 / (1.0 + (-1.0f64).exp());
        assert!((w[2] - expect).abs() < 1e-12);
    }

    #[test]
    fn non_finite_inputs_propagate_instead_of_being_scrubbed() {
        let w = normalise_log_weights(&[0.0, f64::NAN], 0.0);
        assert!(w.iter().any(|x| x.is_nan()));
    }

    proptest! {
        // A fixed seed: the same cases every run (failures are also persisted under
        // proptest-regressions/).
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(19),
            ..ProptestConfig::default()
        })]
        #[test]
        fn normalised_weights_average_to_one(log_h in proptest::collection::vec(-300.0f64..300.0, 1..64)) {
            let w = normalise_log_weights(&log_h, 0.0);
            prop_assert!(w.iter().all(|x| x.is_finite() && *x >= 0.0));
            let mean = w.iter().sum::<f64>() / w.len() as f64;
            prop_assert!((mean - 1.0).abs() < 1e-9);
        }
    }
}
