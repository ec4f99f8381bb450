//! The exact parametric student (SPEC §6): a Gaussian mixture with learnable means and
//! log-standard-deviations, sampled by reparametrisation, and the f-distill gradient estimator
//! of SPEC §1 with exact scores and exact ratio.
//!
//! With fixed weights `π_k`, a draw is `k ~ π`, `z ~ N(0, I)`,
//!
//! $$ x_0 = G_\theta(k, z) = \mu_k + e^{\lambda_k} \odot z,\qquad x_t = x_0 + \sigma\varepsilon, $$
//!
//! so the only θ-dependent path is `x_0`, with
//! `∂x_{0,j}/∂μ_{k,j} = 1` and `∂x_{0,j}/∂λ_{k,j} = e^{λ_{k,j}} z_j` (zero for other components).
//! Because `π` does not depend on θ, the reparametrisation gradient is exact and
//!
//! $$ \widehat{\nabla_\theta D_f} = -\frac1N \sum_i h(r(x_{t,i}))\\,
//!    \big(s_p - s_q\big)(x_{t,i})^\top \partial_\theta x_{t,i} $$
//!
//! is an unbiased estimate of `∇_θ D_f(p_σ‖q_σ)` when `r`, `s_p`, `s_q` are exact.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::gmm::GaussianMixture;

/// A Gaussian-mixture generator with fixed weights and learnable means `μ_k` and
/// per-dimension log-stds `λ_k` (diagonal components).
///
/// Parameter layout of [`MixtureStudent::params`]: all means (component-major, `K·d`), then
/// all log-stds (`K·d`).
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureStudent {
    weights: Vec<f64>,
    dim: usize,
    theta: Vec<f64>,
}

/// One reparametrised draw: the component, the latent `z`, the noise `ε` and `x_t`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyDraw {
    /// Component index `k`.
    pub component: usize,
    /// Latent `z ~ N(0, I)`, length `d`.
    pub z: Vec<f64>,
    /// Clean sample `x_0 = μ_k + e^{λ_k} z`.
    pub x0: Vec<f64>,
    /// Noisy sample `x_t = x_0 + σ ε`.
    pub x_t: Vec<f64>,
    /// Noise level σ of this draw.
    pub sigma: f64,
}

impl MixtureStudent {
    /// A student with the weights, means and standard deviations of `init`.
    pub fn from_mixture(init: &GaussianMixture) -> Self {
        let dim = init.dim();
        let mut theta: Vec<f64> = init.means().iter().flatten().copied().collect();
        theta.extend(init.stds().iter().flatten().map(|s| s.ln()));
        MixtureStudent {
            weights: init.weights().to_vec(),
            dim,
            theta,
        }
    }

    /// Data dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of components `K`.
    pub fn n_components(&self) -> usize {
        self.weights.len()
    }

    /// Fixed weights `π_k`.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// θ = (means, log-stds), length `2·K·d`.
    pub fn params(&self) -> &[f64] {
        &self.theta
    }

    /// Replaces θ. Panics if the length is not `2·K·d` (a programming error).
    pub fn set_params(&mut self, theta: &[f64]) {
        assert_eq!(theta.len(), self.theta.len(), "θ has length 2·K·d");
        self.theta.copy_from_slice(theta);
    }

    /// A copy with parameters θ.
    pub fn with_params(&self, theta: &[f64]) -> Self {
        let mut s = self.clone();
        s.set_params(theta);
        s
    }

    /// Index of `μ_{k,j}` in θ.
    pub fn mean_index(&self, k: usize, j: usize) -> usize {
        k * self.dim + j
    }

    /// Index of `λ_{k,j}` in θ.
    pub fn log_std_index(&self, k: usize, j: usize) -> usize {
        self.weights.len() * self.dim + k * self.dim + j
    }

    /// The clean student distribution `q_θ` as a [`GaussianMixture`] (its `q_σ` is then
    /// `log_density(x, σ)` etc.). Errors if a log-std has overflowed to a non-finite std.
    pub fn mixture(&self) -> Result<GaussianMixture, String> {
        let (k, d) = (self.n_components(), self.dim);
        let means = (0..k)
            .map(|c| self.theta[c * d..(c + 1) * d].to_vec())
            .collect();
        let stds = (0..k)
            .map(|c| {
                (0..d)
                    .map(|j| self.theta[self.log_std_index(c, j)].exp())
                    .collect()
            })
            .collect();
        GaussianMixture::new(self.weights.clone(), means, stds)
    }

    /// Draws `n` reparametrised noisy samples at noise levels `sigma(i)`.
    pub fn draw<R: Rng + ?Sized>(
        &self,
        n: usize,
        mut sigma: impl FnMut(&mut R) -> f64,
        rng: &mut R,
    ) -> Vec<NoisyDraw> {
        (0..n)
            .map(|_| {
                let s = sigma(rng);
                self.draw_one(s, rng)
            })
            .collect()
    }

    fn draw_one<R: Rng + ?Sized>(&self, sigma: f64, rng: &mut R) -> NoisyDraw {
        let k = crate::gmm::sample_component(&self.weights, rng);
        let z: Vec<f64> = (0..self.dim).map(|_| StandardNormal.sample(rng)).collect();
        let x0: Vec<f64> = (0..self.dim)
            .map(|j| {
                self.theta[self.mean_index(k, j)]
                    + self.theta[self.log_std_index(k, j)].exp() * z[j]
            })
            .collect();
        let x_t = x0
            .iter()
            .map(|x| {
                let e: f64 = StandardNormal.sample(rng);
                x + sigma * e
            })
            .collect();
        NoisyDraw {
            component: k,
            z,
            x0,
            x_t,
            sigma,
        }
    }

    /// Pull-back `vᵀ ∂x_t/∂θ` of a vector `v` (length `d`) through the sampling path of
    /// `draw`, added into `grad` (length `2·K·d`):
    /// `grad[μ_{k,j}] += v_j`, `grad[λ_{k,j}] += v_j e^{λ_{k,j}} z_j`.
    pub fn add_pullback(&self, draw: &NoisyDraw, v: &[f64], grad: &mut [f64]) {
        let k = draw.component;
        for (j, vj) in v.iter().enumerate() {
            grad[self.mean_index(k, j)] += vj;
            let li = self.log_std_index(k, j);
            grad[li] += vj * self.theta[li].exp() * draw.z[j];
        }
    }
}

/// Per-draw ingredients of the f-distill gradient, independent of the divergence.
#[derive(Debug, Clone, PartialEq)]
pub struct PathTerms {
    /// Exact `ℓ = log p_σ(x_t) − log q_σ(x_t)`.
    pub log_ratio: f64,
    /// `−(s_p − s_q)(x_t)ᵀ ∂x_t/∂θ`, length `2·K·d`: the per-draw gradient for `h ≡ 1`.
    pub score_pullback: Vec<f64>,
}

/// Exact [`PathTerms`] for each draw: `p` is the teacher (clean), `q` the student's
/// [`MixtureStudent::mixture`].
pub fn path_terms(
    student: &MixtureStudent,
    q: &GaussianMixture,
    p: &GaussianMixture,
    draws: &[NoisyDraw],
) -> Vec<PathTerms> {
    draws
        .iter()
        .map(|d| {
            let sp = p.score(&d.x_t, d.sigma);
            let sq = q.score(&d.x_t, d.sigma);
            let minus_diff: Vec<f64> = sp.iter().zip(&sq).map(|(a, b)| b - a).collect();
            let mut g = vec![0.0; student.params().len()];
            student.add_pullback(d, &minus_diff, &mut g);
            PathTerms {
                log_ratio: crate::gmm::log_ratio(p, q, &d.x_t, d.sigma),
                score_pullback: g,
            }
        })
        .collect()
}

/// The Monte-Carlo f-distill gradient (SPEC §1) with per-draw weights `w_i`
/// (`h(r_i)` unnormalised, or the normalised weights of SPEC §3):
///
/// $$ \hat g = \frac1N \sum_i w_i \cdot \big(-(s_p - s_q)^\top \partial_\theta x_t\big)_i. $$
pub fn f_distill_gradient(weights: &[f64], terms: &[PathTerms]) -> Vec<f64> {
    assert_eq!(weights.len(), terms.len(), "one weight per draw");
    let n = terms.len().max(1) as f64;
    let mut g = vec![0.0; terms.first().map_or(0, |t| t.score_pullback.len())];
    for (w, t) in weights.iter().zip(terms) {
        for (gi, ti) in g.iter_mut().zip(&t.score_pullback) {
            *gi += w * ti / n;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn student() -> MixtureStudent {
        let m = GaussianMixture::new(
            vec![0.25, 0.75],
            vec![vec![-1.0, 2.0], vec![0.5, 0.0]],
            vec![vec![0.5, 1.5], vec![2.0, 0.25]],
        )
        .unwrap();
        MixtureStudent::from_mixture(&m)
    }

    #[test]
    fn params_roundtrip_to_the_mixture() {
        let s = student();
        assert_eq!(s.params().len(), 8);
        let m = s.mixture().unwrap();
        assert!((m.stds()[1][0] - 2.0).abs() < 1e-15);
        assert_eq!(m.means()[0], vec![-1.0, 2.0]);
        assert_eq!(MixtureStudent::from_mixture(&m), s);
    }

    /// The analytic pull-back equals a central difference of the sampling path in θ with
    /// the same (k, z, ε).
    #[test]
    fn pullback_matches_finite_differences_of_the_path() {
        let s = student();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let draws = s.draw(5, |_| 0.7, &mut rng);
        let v = [0.3, -1.1];
        for d in &draws {
            let mut g = vec![0.0; 8];
            s.add_pullback(d, &v, &mut g);
            for (i, gi) in g.iter().enumerate() {
                let e = 1e-6;
                let path = |delta: f64| {
                    let mut th = s.params().to_vec();
                    th[i] += delta;
                    let t = s.with_params(&th);
                    let k = d.component;
                    let eps: Vec<f64> = (0..2).map(|j| (d.x_t[j] - d.x0[j]) / d.sigma).collect();
                    (0..2)
                        .map(|j| {
                            let x0 = t.params()[t.mean_index(k, j)]
                                + t.params()[t.log_std_index(k, j)].exp() * d.z[j];
                            v[j] * (x0 + d.sigma * eps[j])
                        })
                        .sum::<f64>()
                };
                let fd = (path(e) - path(-e)) / (2.0 * e);
                assert!((fd - gi).abs() < 1e-7, "θ_{i}: {fd} vs {gi}");
            }
        }
    }

    #[test]
    fn draws_follow_the_component_weights() {
        let s = student();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 40_000;
        let draws = s.draw(n, |_| 0.0, &mut rng);
        let frac = draws.iter().filter(|d| d.component == 0).count() as f64 / n as f64;
        // Binomial standard error √(0.25·0.75/n) ≈ 0.0022; 5 of them.
        assert!((frac - 0.25).abs() < 0.011, "{frac}");
        assert!(draws.iter().all(|d| d.x0 == d.x_t));
    }

    #[test]
    fn gradient_is_the_weighted_mean_of_the_terms() {
        let terms = vec![
            PathTerms {
                log_ratio: 0.0,
                score_pullback: vec![1.0, 2.0],
            },
            PathTerms {
                log_ratio: 0.0,
                score_pullback: vec![3.0, -4.0],
            },
        ];
        let g = f_distill_gradient(&[2.0, 0.5], &terms);
        assert_eq!(g, vec![(2.0 + 1.5) / 2.0, (4.0 - 2.0) / 2.0]);
    }
}
