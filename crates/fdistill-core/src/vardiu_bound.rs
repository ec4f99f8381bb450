//! The VarDiU objective (Wang, Zhang, Ou, Barber 2025; SPEC §7): a variational upper bound
//! on the diffusive KL, with no fake-score network and no inner loop.
//!
//! For `x_t = G_θ(z) + σε`, an amortised posterior `q_φ(z | x_t, σ)` and the noisy data
//! density `p_σ`,
//!
//! $$ U(\theta, \phi) = \mathbb E_{\sigma, z, \varepsilon}\\, w(\sigma)\big[-\log q_\phi(z \mid x_t,
//!    \sigma) - \log p_\sigma(x_t)\big] + \text{const} \\;\ge\\; \mathbb E_\sigma\\, w(\sigma)\\,
//!    \mathrm{KL}(q_\sigma \\,\\|\\, p_\sigma). $$
//!
//! (The constant is `E[log q(x_t | z) + log p(z)]`, independent of θ and φ.) One loss, one
//! backward: θ gets `(−∇_x log q_φ − s_p)ᵀ ∂x_t/∂θ`, φ gets `−∇_φ log q_φ` (maximising
//! `E log q_φ` tightens the bound). The teacher only provides a score `s_p`, so the
//! `−log p_σ` term enters through the gradient-injection surrogate ([`inject_gradient()`]).
//!
//! The pieces, each a named function: [`vardiu_sigma`] and [`PowSchedule`] (noise levels),
//! [`vardiu_weight`] (the weight w(σ)), [`antithetic_pairs`], [`vardiu_loss`].

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};
use serde::{Deserialize, Serialize};

use crate::denoiser::{Denoiser, score_from_denoised};
use crate::losses::inject_gradient;

/// An amortised posterior over the generator's latent, `q_φ(z | x_t, σ)`.
pub trait LatentPosterior<B: Backend> {
    /// `log q_φ(z | x_t, σ)`, differentiable in `x_t` and in φ.
    ///
    /// # Shapes
    /// - `z`: `[batch, dim_z]`, `x_t`: `[batch, dim_x]`, `sigma`: `[batch]`; returns `[batch]`
    fn log_prob(&self, z: Tensor<B, 2>, x_t: Tensor<B, 2>, sigma: Tensor<B, 1>) -> Tensor<B, 1>;
}

/// VarDiU's noise level from a uniform draw `u ∈ [0, 1)`:
///
/// $$ \sigma = \sigma_{\min} + u^{\\,\text{pow}}\\,(\sigma_{\max} - \sigma_{\min}). $$
///
/// `pow < 1` pushes σ towards σ_max (pow = 0.1 gives a median σ of `σ_min + 0.5^{0.1} Δ ≈
/// σ_min + 0.93 Δ`); pow = 1 is uniform.
pub fn vardiu_sigma(u: f64, pow: f64, sigma_min: f64, sigma_max: f64) -> f64 {
    sigma_min + u.powf(pow) * (sigma_max - sigma_min)
}

/// The annealing of `pow` in [`vardiu_sigma`]: linear from `start` (VarDiU: 0.1, mostly large
/// σ) to `end` over `steps` generator steps, then constant,
///
/// $$ \text{pow}(t) = \text{start} + \min(1, t/\text{steps})\\,(\text{end} - \text{start}). $$
///
/// The reference code anneals pow upward from 0.1; the shape (linear) and the end point are
/// our choice, exposed here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowSchedule {
    /// pow at step 0.
    pub start: f64,
    /// pow after `steps` steps.
    pub end: f64,
    /// Annealing length in steps (0: constant `end`).
    pub steps: usize,
}

impl Default for PowSchedule {
    /// From 0.1 to 1 (uniform σ) over 2000 steps.
    fn default() -> Self {
        PowSchedule {
            start: 0.1,
            end: 1.0,
            steps: 2000,
        }
    }
}

impl PowSchedule {
    /// pow at (0-based) step `t`.
    pub fn pow_at(&self, t: usize) -> f64 {
        if self.steps == 0 {
            return self.end;
        }
        let frac = (t as f64 / self.steps as f64).min(1.0);
        self.start + frac * (self.end - self.start)
    }

    /// Checks `0 < start`, `0 < end` (finite).
    pub fn check(&self) -> Result<(), String> {
        if !(self.start.is_finite() && self.end.is_finite() && self.start > 0.0 && self.end > 0.0) {
            return Err(format!(
                "the pow schedule needs positive finite start and end, got {} → {}; VarDiU uses 0.1 → 1",
                self.start, self.end
            ));
        }
        Ok(())
    }
}

/// The weight w(σ) of the time-integrated bound, normalised by σ_max so that it is 1 at the
/// largest noise level (the reference code's `(σ/σ_max)²`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VarDiuWeight {
    /// `(σ/σ_max)²`: VarDiU's default.
    SigmaSquared,
    /// `σ/σ_max`.
    Sigma,
    /// `1`.
    One,
}

/// The weight of [`VarDiuWeight`]:
///
/// $$ w(\sigma) = (\sigma/\sigma_{\max})^k, \quad k = 2, 1, 0 \text{ for }
///    \texttt{sigma-squared}, \texttt{sigma}, \texttt{one}. $$
pub fn vardiu_weight(sigma: f64, sigma_max: f64, kind: VarDiuWeight) -> f64 {
    let r = sigma / sigma_max;
    match kind {
        VarDiuWeight::SigmaSquared => r * r,
        VarDiuWeight::Sigma => r,
        VarDiuWeight::One => 1.0,
    }
}

/// Antithetic pairs (VarDiU's reference code): each latent and noise level is used twice,
/// once with `ε` and once with `−ε`. Inputs are row-major host vectors of `n` rows; returns
/// `(z, ε, σ)` of `2n` rows: `[z; z]`, `[ε; −ε]`, `[σ; σ]`.
pub fn antithetic_pairs(z: &[f64], eps: &[f64], sigma: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let z2 = [z, z].concat();
    let eps2: Vec<f64> = eps.iter().copied().chain(eps.iter().map(|e| -e)).collect();
    let sigma2 = [sigma, sigma].concat();
    (z2, eps2, sigma2)
}

/// The batch tensors of one VarDiU step.
#[derive(Debug, Clone)]
pub struct VarDiuBatch<B: Backend> {
    /// Latents `z` the generator was fed: `[batch, dim_z]`.
    pub z: Tensor<B, 2>,
    /// Generator outputs `x_0 = G_θ(z)`, differentiable in θ: `[batch, dim_x]`.
    pub x0: Tensor<B, 2>,
    /// Noise `ε`: `[batch, dim_x]`.
    pub eps: Tensor<B, 2>,
    /// Noise levels: `[batch]`.
    pub sigma: Tensor<B, 1>,
    /// Weights `w(σ)`: `[batch]`.
    pub weight: Tensor<B, 1>,
}

/// The VarDiU loss and what it reports.
#[derive(Debug, Clone)]
pub struct VarDiuLoss<B: Backend> {
    /// The scalar to back-propagate: `[1]`.
    pub loss: Tensor<B, 1>,
    /// `mean w(σ)·(−log q_φ(z | x_t, σ))`: the posterior part of the bound.
    pub neg_log_q: f64,
    /// `mean ‖w(σ) s_p(x_t)‖`, the size of the teacher's pull.
    pub teacher_pull: f64,
}

/// The VarDiU surrogate loss for one batch:
///
/// $$ L = \frac1B\sum_b w_b\big(-\log q_\phi(z_b \mid x_{t,b}, \sigma_b)\big) +
///    \texttt{inject\\_gradient}\big(x_t,\ -d\\, w \odot \mathrm{sg}(s_p(x_t))\big),
///    \qquad x_t = x_0 + \sigma\varepsilon, $$
///
/// with `s_p = (D_T(x_t, σ) − x_t)/σ²` from the (frozen) teacher and `d = dim_x`. Since
/// [`inject_gradient()`] has gradient `g / (B d)`, the gradient in `x_t` of row b is
/// `(w_b/B)(−∇_x log q_φ − s_p)`, so back-propagation gives θ the VarDiU gradient
/// `(1/B) Σ_b w_b (−∇_x log q_φ − s_p)ᵀ ∂x_t/∂θ` and φ the gradient of
/// `−(1/B) Σ_b w_b log q_φ`: one backward for both networks. The loss *value* is not U
/// (the surrogate's value is meaningless); [`VarDiuLoss::neg_log_q`] is the reportable part.
///
/// # Shapes
/// - see [`VarDiuBatch`]; returns a `[1]` loss.
pub fn vardiu_loss<B, P, T>(batch: VarDiuBatch<B>, posterior: &P, teacher: &T) -> VarDiuLoss<B>
where
    B: Backend,
    P: LatentPosterior<B>,
    T: Denoiser<B> + ?Sized,
{
    let VarDiuBatch {
        z,
        x0,
        eps,
        sigma,
        weight,
    } = batch;
    let [_, dim] = x0.dims();
    let col = |t: Tensor<B, 1>| t.unsqueeze_dim::<2>(1); // [batch, 1]
    let x_t = x0 + eps * col(sigma.clone()); // [batch, dim_x]

    // 1. posterior term: −w log q_φ(z | x_t, σ), differentiable in x_t (→ θ) and φ
    let log_q = posterior.log_prob(z, x_t.clone(), sigma.clone()); // [batch]
    let posterior_term = (log_q * weight.clone()).neg().mean(); // [1]

    // 2. teacher term: −w log p_σ(x_t) through its score, injected as a gradient
    let x_det = x_t.clone().detach();
    let denoised = teacher.denoise(x_det.clone(), sigma.clone(), None).detach(); // [batch, dim_x]
    let score = score_from_denoised(denoised, x_det, sigma); // [batch, dim_x]
    let pull = score * col(weight); // [batch, dim_x]
    let g = pull.clone().mul_scalar(-(dim as f64)); // [batch, dim_x]
    let teacher_term = inject_gradient(x_t, g); // [1]

    let neg_log_q = posterior_term.clone().into_scalar().elem::<f64>();
    let teacher_pull = pull
        .powi_scalar(2)
        .sum_dim(1)
        .sqrt()
        .mean()
        .into_scalar()
        .elem::<f64>();
    VarDiuLoss {
        loss: posterior_term + teacher_term,
        neg_log_q,
        teacher_pull,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_endpoints_and_power() {
        assert_eq!(vardiu_sigma(0.0, 0.1, 0.5, 10.0), 0.5);
        assert_eq!(vardiu_sigma(1.0, 0.1, 0.5, 10.0), 10.0);
        // u = 0.25, pow = 0.5: √0.25 = 0.5 of the way.
        assert!((vardiu_sigma(0.25, 0.5, 0.0, 8.0) - 4.0).abs() < 1e-12);
        // pow = 1 is uniform.
        assert!((vardiu_sigma(0.3, 1.0, 1.0, 2.0) - 1.3).abs() < 1e-12);
    }

    #[test]
    fn pow_anneals_linearly_then_holds() {
        let s = PowSchedule {
            start: 0.1,
            end: 1.0,
            steps: 100,
        };
        assert_eq!(s.pow_at(0), 0.1);
        assert!((s.pow_at(50) - 0.55).abs() < 1e-12);
        assert_eq!(s.pow_at(100), 1.0);
        assert_eq!(s.pow_at(10_000), 1.0);
        let flat = PowSchedule { steps: 0, ..s };
        assert_eq!(flat.pow_at(0), 1.0);
        assert!(PowSchedule { start: 0.0, ..s }.check().is_err());
        assert!(s.check().is_ok());
    }

    #[test]
    fn weights_by_hand() {
        assert_eq!(
            vardiu_weight(2.0, 8.0, VarDiuWeight::SigmaSquared),
            1.0 / 16.0
        );
        assert_eq!(vardiu_weight(2.0, 8.0, VarDiuWeight::Sigma), 0.25);
        assert_eq!(vardiu_weight(2.0, 8.0, VarDiuWeight::One), 1.0);
        assert_eq!(vardiu_weight(8.0, 8.0, VarDiuWeight::SigmaSquared), 1.0);
    }

    #[test]
    fn antithetic_pairs_duplicate_z_and_negate_eps() {
        let (z, e, s) =
            antithetic_pairs(&[1.0, 2.0, 3.0, 4.0], &[0.5, -1.0, 2.0, 0.0], &[0.1, 0.2]);
        assert_eq!(z, vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(e, vec![0.5, -1.0, 2.0, 0.0, -0.5, 1.0, -2.0, -0.0]);
        assert_eq!(s, vec![0.1, 0.2, 0.1, 0.2]);
    }
}
