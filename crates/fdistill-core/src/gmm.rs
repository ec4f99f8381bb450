//! Gaussian mixtures: the exact testbed (SPEC §6).
//!
//! For `p = Σ_k π_k N(μ_k, diag(s_k²))` the σ-noised marginal is again a mixture,
//! `p_σ = Σ_k π_k N(μ_k, diag(s_k² + σ²))`, so its log density, score, Tweedie denoiser and the
//! log ratio between two mixtures are all exact. Plain `f64` math; points are slices of length
//! `dim`, batches are row-major `Vec<f64>` of `n · dim` values.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

const LOG_2PI: f64 = 1.837_877_066_409_345_3;

/// A Gaussian mixture with diagonal (or isotropic) components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianMixture {
    weights: Vec<f64>,
    means: Vec<Vec<f64>>,
    stds: Vec<Vec<f64>>,
}

impl GaussianMixture {
    /// A mixture from weights (normalised here), means `[K][d]` and per-dimension standard
    /// deviations `[K][d]`. Errors name the offending component.
    pub fn new(
        weights: Vec<f64>,
        means: Vec<Vec<f64>>,
        stds: Vec<Vec<f64>>,
    ) -> Result<Self, String> {
        let k = weights.len();
        if k == 0 {
            return Err("a mixture needs at least one component".into());
        }
        if means.len() != k || stds.len() != k {
            return Err(format!(
                "{k} weights but {} means and {} std vectors",
                means.len(),
                stds.len()
            ));
        }
        let d = means[0].len();
        if d == 0 {
            return Err("components must have dimension ≥ 1".into());
        }
        for (i, (m, s)) in means.iter().zip(&stds).enumerate() {
            if m.len() != d || s.len() != d {
                return Err(format!(
                    "component {i} has dimension {} / {} instead of {d}",
                    m.len(),
                    s.len()
                ));
            }
            if m.iter().any(|x| !x.is_finite()) {
                return Err(format!("component {i} has a non-finite mean"));
            }
            if s.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(format!(
                    "component {i} has a std that is not finite and > 0"
                ));
            }
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err("weights must be finite and ≥ 0".into());
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err("weights sum to zero".into());
        }
        Ok(GaussianMixture {
            weights: weights.iter().map(|w| w / total).collect(),
            means,
            stds,
        })
    }

    /// Isotropic components: one standard deviation per component.
    pub fn isotropic(
        weights: Vec<f64>,
        means: Vec<Vec<f64>>,
        stds: Vec<f64>,
    ) -> Result<Self, String> {
        let d = means.first().map_or(0, Vec::len);
        let stds = stds.into_iter().map(|s| vec![s; d]).collect();
        Self::new(weights, means, stds)
    }

    /// Data dimension `d`.
    pub fn dim(&self) -> usize {
        self.means[0].len()
    }

    /// Number of components `K`.
    pub fn n_components(&self) -> usize {
        self.weights.len()
    }

    /// Normalised weights `π_k`.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Means `μ_k`.
    pub fn means(&self) -> &[Vec<f64>] {
        &self.means
    }

    /// Per-dimension standard deviations `s_k`.
    pub fn stds(&self) -> &[Vec<f64>] {
        &self.stds
    }

    /// Per-component log joint `log π_k + log N(x; μ_k, diag(s_k² + σ²))`.
    fn component_log_joint(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        debug_assert_eq!(x.len(), self.dim());
        let s2 = sigma * sigma;
        self.weights
            .iter()
            .zip(self.means.iter().zip(&self.stds))
            .map(|(w, (m, s))| {
                let mut lp = w.ln();
                for ((xi, mi), si) in x.iter().zip(m).zip(s) {
                    let var = si * si + s2;
                    let dx = xi - mi;
                    lp -= 0.5 * (dx * dx / var + var.ln() + LOG_2PI);
                }
                lp
            })
            .collect()
    }

    /// Responsibilities `γ_k(x)` under the σ-noised mixture (softmax of the log joints).
    pub fn responsibilities(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        let lj = self.component_log_joint(x, sigma);
        let m = lj.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = lj.iter().map(|l| (l - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|v| v / z).collect()
    }

    /// `log p_σ(x)` (log-sum-exp over components). `sigma = 0` gives the clean density.
    pub fn log_density(&self, x: &[f64], sigma: f64) -> f64 {
        let lj = self.component_log_joint(x, sigma);
        let m = lj.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + lj.iter().map(|l| (l - m).exp()).sum::<f64>().ln()
    }

    /// Score `∇_x log p_σ(x) = Σ_k γ_k(x) (μ_k − x) / (s_k² + σ²)`.
    pub fn score(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        let g = self.responsibilities(x, sigma);
        let s2 = sigma * sigma;
        let mut out = vec![0.0; self.dim()];
        for (gk, (m, s)) in g.iter().zip(self.means.iter().zip(&self.stds)) {
            for (j, o) in out.iter_mut().enumerate() {
                *o += gk * (m[j] - x[j]) / (s[j] * s[j] + s2);
            }
        }
        out
    }

    /// Tweedie denoiser `D(x, σ) = x + σ² ∇ log p_σ(x) = E[x_0 | x_t = x]`.
    pub fn denoise(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        let s = self.score(x, sigma);
        x.iter()
            .zip(s)
            .map(|(xi, si)| xi + sigma * sigma * si)
            .collect()
    }

    /// Draws `n` samples (row-major, `n · dim`) and the component of each.
    pub fn sample_with_components<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> (Vec<f64>, Vec<usize>) {
        let d = self.dim();
        let mut data = Vec::with_capacity(n * d);
        let mut comps = Vec::with_capacity(n);
        for _ in 0..n {
            let k = sample_component(&self.weights, rng);
            for j in 0..d {
                let z: f64 = StandardNormal.sample(rng);
                data.push(self.means[k][j] + self.stds[k][j] * z);
            }
            comps.push(k);
        }
        (data, comps)
    }

    /// Draws `n` samples, row-major `n · dim`.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        self.sample_with_components(n, rng).0
    }
}

/// Draws a component index `k` with probability `weights[k]` (weights summing to 1) by
/// inverting the cumulative sum at one uniform draw; rounding slack falls to the last index.
pub fn sample_component<R: Rng + ?Sized>(weights: &[f64], rng: &mut R) -> usize {
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return i;
        }
    }
    weights.len() - 1
}

/// Exact log ratio `log p_σ(x) − log q_σ(x)` between two mixtures at noise level σ.
pub fn log_ratio(p: &GaussianMixture, q: &GaussianMixture, x: &[f64], sigma: f64) -> f64 {
    p.log_density(x, sigma) - q.log_density(x, sigma)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn two_modes() -> GaussianMixture {
        GaussianMixture::new(
            vec![0.3, 0.7],
            vec![vec![-1.0, 0.5], vec![2.0, -1.0]],
            vec![vec![0.5, 0.8], vec![0.3, 0.4]],
        )
        .unwrap()
    }

    #[test]
    fn single_gaussian_log_density_closed_form() {
        let g = GaussianMixture::isotropic(vec![1.0], vec![vec![1.0]], vec![2.0]).unwrap();
        // N(x; 1, 4 + σ²) at x = 0, σ = 1: var 5.
        let expect = -0.5 * (1.0 / 5.0 + 5f64.ln() + LOG_2PI);
        assert!((g.log_density(&[0.0], 1.0) - expect).abs() < 1e-14);
    }

    #[test]
    fn score_matches_finite_differences_of_log_density() {
        let g = two_modes();
        let x = [0.3, -0.2];
        for sigma in [0.0, 0.1, 1.0] {
            let s = g.score(&x, sigma);
            for j in 0..2 {
                let e = 1e-5;
                let mut xp = x;
                let mut xm = x;
                xp[j] += e;
                xm[j] -= e;
                let fd = (g.log_density(&xp, sigma) - g.log_density(&xm, sigma)) / (2.0 * e);
                assert!(
                    (fd - s[j]).abs() < 1e-7,
                    "σ={sigma} j={j}: {fd} vs {}",
                    s[j]
                );
            }
        }
    }

    #[test]
    fn density_integrates_to_one_on_a_grid() {
        let g = two_modes();
        let (lo, hi, n) = (-6.0, 6.0, 601);
        let h = (hi - lo) / (n - 1) as f64;
        let mut total = 0.0;
        for i in 0..n {
            for j in 0..n {
                let x = [lo + i as f64 * h, lo + j as f64 * h];
                total += g.log_density(&x, 0.5).exp() * h * h;
            }
        }
        assert!((total - 1.0).abs() < 1e-6, "{total}");
    }

    #[test]
    fn sample_moments_match() {
        let g = two_modes();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 200_000;
        let xs = g.sample(n, &mut rng);
        let mean0: f64 = xs.chunks(2).map(|p| p[0]).sum::<f64>() / n as f64;
        let expect = -0.3 + 0.7 * 2.0;
        // std of the mixture's first coordinate ≈ 1.4; 5 standard errors.
        assert!(
            (mean0 - expect).abs() < 5.0 * 1.4 / (n as f64).sqrt(),
            "{mean0}"
        );
    }

    #[test]
    fn invalid_mixtures_are_rejected() {
        assert!(GaussianMixture::isotropic(vec![], vec![], vec![]).is_err());
        assert!(GaussianMixture::isotropic(vec![1.0], vec![vec![0.0]], vec![0.0]).is_err());
        assert!(
            GaussianMixture::isotropic(
                vec![1.0, 1.0],
                vec![vec![0.0], vec![0.0, 1.0]],
                vec![1.0, 1.0]
            )
            .is_err()
        );
    }
}
