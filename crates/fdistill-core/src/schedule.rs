//! Noise schedules of the EDM teacher (SPEC §5): the Karras sampling grid and the log-normal
//! training noise distribution. Each is one named function; samplers and trainers call these
//! and never re-derive a grid inline.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use thiserror::Error;

/// EDM's defaults for the sampling grid: σ_min, σ_max, ρ (Karras et al. 2022, Table 1).
pub const SIGMA_MIN: f64 = 0.002;
/// See [`SIGMA_MIN`].
pub const SIGMA_MAX: f64 = 80.0;
/// See [`SIGMA_MIN`].
pub const RHO: f64 = 7.0;
/// EDM's training noise distribution: `ln σ ~ N(P_mean, P_std²)`.
pub const P_MEAN: f64 = -1.2;
/// See [`P_MEAN`].
pub const P_STD: f64 = 1.2;

/// Invalid schedule parameters.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ScheduleError {
    /// Fewer than two grid points.
    #[error(
        "the Karras grid needs N ≥ 2 noise levels, got N = {0}; use at least 2 steps (Heun NFE ≥ 3)"
    )]
    TooFewSteps(usize),
    /// A noise level that is not a positive finite number, or σ_min ≥ σ_max.
    #[error(
        "noise levels must satisfy 0 < σ_min < σ_max (finite), got σ_min = {sigma_min}, \
         σ_max = {sigma_max}; EDM uses σ_min = 0.002, σ_max = 80"
    )]
    BadSigmas {
        /// σ_min asked for.
        sigma_min: f64,
        /// σ_max asked for.
        sigma_max: f64,
    },
    /// ρ not positive.
    #[error("ρ must be a positive finite number, got {0}; EDM uses ρ = 7")]
    BadRho(f64),
}

/// The Karras et al. (2022, eq. 5) sampling grid, with `σ_N = 0` appended:
///
/// $$ \sigma_i = \Big(\sigma_{\max}^{1/\rho} + \tfrac{i}{N-1}\big(\sigma_{\min}^{1/\rho}
///    - \sigma_{\max}^{1/\rho}\big)\Big)^{\rho}, \quad i = 0, \dots, N-1, \qquad \sigma_N = 0. $$
///
/// Returns `N + 1` values, decreasing from σ_max to σ_min, then 0.
pub fn karras_sigmas(
    n: usize,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
) -> Result<Vec<f64>, ScheduleError> {
    if n < 2 {
        return Err(ScheduleError::TooFewSteps(n));
    }
    if !(sigma_min.is_finite() && sigma_max.is_finite() && sigma_min > 0.0 && sigma_min < sigma_max)
    {
        return Err(ScheduleError::BadSigmas {
            sigma_min,
            sigma_max,
        });
    }
    if !(rho.is_finite() && rho > 0.0) {
        return Err(ScheduleError::BadRho(rho));
    }
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    let mut sigmas: Vec<f64> = (0..n)
        .map(|i| (a + i as f64 / (n - 1) as f64 * (b - a)).powf(rho))
        .collect();
    // Pin the endpoints exactly (powf round trip is off by an ulp or two).
    sigmas[0] = sigma_max;
    sigmas[n - 1] = sigma_min;
    sigmas.push(0.0);
    Ok(sigmas)
}

/// The grid a sampler with `n` noise levels runs on: [`karras_sigmas`] for `n ≥ 2`, and for
/// `n = 1` the single level σ_max followed by 0,
///
/// $$ (\sigma_0, \sigma_1) = (\sigma_{\max}, 0), $$
///
/// on which one Euler step returns the denoiser's one-step prediction
/// `x_1 = σ_max z + (0 − σ_max)(σ_max z − D(σ_max z; σ_max))/σ_max = D(σ_max z; σ_max)`: the
/// teacher's own one-evaluation sample, the contrast a one-step student is measured against.
/// (Eq. 5 of Karras et al. has no `N = 1` case: its `i/(N − 1)` is undefined there.)
pub fn sampling_sigmas(
    n: usize,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
) -> Result<Vec<f64>, ScheduleError> {
    if n == 1 {
        // validate the levels as the general case does
        karras_sigmas(2, sigma_min, sigma_max, rho)?;
        return Ok(vec![sigma_max, 0.0]);
    }
    karras_sigmas(n, sigma_min, sigma_max, rho)
}

/// One draw from EDM's training noise distribution, `ln σ ~ N(P_mean, P_std²)`:
///
/// $$ \sigma = \exp(P_\text{mean} + P_\text{std}\\, \xi), \quad \xi \sim \mathcal N(0, 1). $$
pub fn sample_training_sigma<R: Rng + ?Sized>(p_mean: f64, p_std: f64, rng: &mut R) -> f64 {
    let xi: f64 = StandardNormal.sample(rng);
    (p_mean + p_std * xi).exp()
}

/// `n` independent draws of [`sample_training_sigma`].
pub fn sample_training_sigmas<R: Rng + ?Sized>(
    n: usize,
    p_mean: f64,
    p_std: f64,
    rng: &mut R,
) -> Vec<f64> {
    (0..n)
        .map(|_| sample_training_sigma(p_mean, p_std, rng))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn karras_grid_endpoints_monotone_and_middle_closed_form() {
        let s = karras_sigmas(18, SIGMA_MIN, SIGMA_MAX, RHO).unwrap();
        assert_eq!(s.len(), 19);
        assert_eq!(s[0], 80.0);
        assert_eq!(s[17], 0.002);
        assert_eq!(s[18], 0.0);
        assert!(s.windows(2).all(|w| w[0] > w[1]), "{s:?}");
        // i = 9 of N = 18, by hand: (80^{1/7} + 9/17 (0.002^{1/7} − 80^{1/7}))^7.
        let a = 80f64.powf(1.0 / 7.0);
        let b = 0.002f64.powf(1.0 / 7.0);
        let expect = (a + 9.0 / 17.0 * (b - a)).powi(7);
        assert!((s[9] - expect).abs() < 1e-12 * expect);
        // ρ = 1 is the linear grid.
        let lin = karras_sigmas(5, 1.0, 5.0, 1.0).unwrap();
        for (x, y) in lin.iter().zip([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]) {
            assert!((x - y).abs() < 1e-12, "{lin:?}");
        }
    }

    #[test]
    fn one_level_grid_is_sigma_max_then_zero() {
        assert_eq!(sampling_sigmas(1, 0.002, 80.0, 7.0), Ok(vec![80.0, 0.0]));
        assert_eq!(
            sampling_sigmas(18, 0.002, 80.0, 7.0),
            karras_sigmas(18, 0.002, 80.0, 7.0)
        );
        assert_eq!(
            sampling_sigmas(0, 0.002, 80.0, 7.0),
            Err(ScheduleError::TooFewSteps(0))
        );
        assert!(matches!(
            sampling_sigmas(1, 1.0, 0.5, 7.0),
            Err(ScheduleError::BadSigmas { .. })
        ));
    }

    #[test]
    fn bad_grids_are_errors() {
        assert_eq!(
            karras_sigmas(1, 0.002, 80.0, 7.0),
            Err(ScheduleError::TooFewSteps(1))
        );
        assert!(matches!(
            karras_sigmas(10, 0.0, 80.0, 7.0),
            Err(ScheduleError::BadSigmas { .. })
        ));
        assert!(matches!(
            karras_sigmas(10, -1.0, 80.0, 7.0),
            Err(ScheduleError::BadSigmas { .. })
        ));
        assert!(matches!(
            karras_sigmas(10, 1.0, 0.5, 7.0),
            Err(ScheduleError::BadSigmas { .. })
        ));
        assert!(matches!(
            karras_sigmas(10, 0.002, 80.0, 0.0),
            Err(ScheduleError::BadRho(_))
        ));
        let msg = karras_sigmas(10, 0.0, 80.0, 7.0).unwrap_err().to_string();
        assert!(msg.contains("0 < σ_min < σ_max"), "{msg}");
    }

    #[test]
    fn training_sigmas_are_log_normal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 100_000;
        let logs: Vec<f64> = sample_training_sigmas(n, P_MEAN, P_STD, &mut rng)
            .into_iter()
            .map(f64::ln)
            .collect();
        let mean = logs.iter().sum::<f64>() / n as f64;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n as f64;
        // 5 standard errors of the mean (P_std / √n) and of the variance (≈ √2 P_std² / √n).
        assert!(
            (mean - P_MEAN).abs() < 5.0 * P_STD / (n as f64).sqrt(),
            "{mean}"
        );
        assert!(
            (var - P_STD * P_STD).abs() < 5.0 * 2f64.sqrt() * P_STD * P_STD / (n as f64).sqrt(),
            "{var}"
        );
    }
}
