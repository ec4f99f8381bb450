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
//! The pieces, each a named function: [`vardiu_sigma`], [`draw_vardiu_sigmas`] and
//! [`PowSchedule`] (noise levels; [`vardiu_sigma_cdf`] is their law), [`vardiu_weight`] (the
//! weight w(σ); [`vardiu_weight_share_above`] says where it sits), [`antithetic_pairs`],
//! [`vardiu_loss`].
//!
//! **The noise range follows the data's scale.** The reference runs MoG-40 (modes ≈ 12
//! apart, data std ≈ 23) with σ ∈ [0.1, 20]; EDM's image range [0.002, 80] is for data of
//! std 0.5. With σ_max = 80 and w = (σ/σ_max)², over 98 % of the weight sits at σ > 20,
//! where the mixture is one blob and the bound carries no information about its modes.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rand::{Rng, RngExt};
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

/// VarDiU's noise level from a uniform draw `u ∈ [0, 1)` (the reference's
/// `sample_power_sigma`):
///
/// $$ \sigma = \sigma_{\min} + u^{\\,\text{pow}}\\,(\sigma_{\max} - \sigma_{\min}). $$
///
/// `pow < 1` pushes σ towards σ_max (pow = 0.1 gives a median σ of `σ_min + 0.5^{0.1} Δ ≈
/// σ_min + 0.93 Δ`); pow = 1 is uniform; pow > 1 pushes σ towards σ_min.
pub fn vardiu_sigma(u: f64, pow: f64, sigma_min: f64, sigma_max: f64) -> f64 {
    sigma_min + u.powf(pow) * (sigma_max - sigma_min)
}

/// `n` draws of [`vardiu_sigma`] with `u ~ U[0, 1)` from `rng`.
pub fn draw_vardiu_sigmas<R: Rng + ?Sized>(
    n: usize,
    pow: f64,
    sigma_min: f64,
    sigma_max: f64,
    rng: &mut R,
) -> Vec<f64> {
    (0..n)
        .map(|_| vardiu_sigma(rng.random::<f64>(), pow, sigma_min, sigma_max))
        .collect()
}

/// The distribution function of [`vardiu_sigma`] under `u ~ U[0, 1)`:
///
/// $$ P(\sigma \le s) = \Big(\frac{s - \sigma_{\min}}{\sigma_{\max} - \sigma_{\min}}\Big)^{1/\text{pow}},
///    \qquad \sigma_{\min} \le s \le \sigma_{\max}, $$
///
/// 0 below σ_min and 1 above σ_max.
pub fn vardiu_sigma_cdf(s: f64, pow: f64, sigma_min: f64, sigma_max: f64) -> f64 {
    let x = ((s - sigma_min) / (sigma_max - sigma_min)).clamp(0.0, 1.0);
    x.powf(1.0 / pow)
}

/// The share of the bound's total weight `E[w(σ)]` that noise levels above `threshold`
/// carry, for σ drawn by [`vardiu_sigma`] at a fixed `pow`. With `σ = a + Δ u^p`,
/// `w = (σ/σ_max)^k` and `u_s = ((s − a)/Δ)^{1/p}`, the binomial expansion integrates term
/// by term:
///
/// $$ E[w\\,\mathbb 1\\{\sigma > s\\}] \propto \sum_{j=0}^{k} \binom kj a^{k-j} \Delta^j
///    \frac{1 - u_s^{\\,jp+1}}{jp + 1}, $$
///
/// divided by the same sum at `u_s = 0`. Example: σ ∈ [0.002, 80], pow = 1, w = (σ/80)²:
/// σ > 20 carries `1 − (20/80)³ ≈ 98.4 %` of the weight.
pub fn vardiu_weight_share_above(
    threshold: f64,
    pow: f64,
    sigma_min: f64,
    sigma_max: f64,
    weight: VarDiuWeight,
) -> f64 {
    let (a, delta, k) = (sigma_min, sigma_max - sigma_min, weight.exponent());
    let u_s = vardiu_sigma_cdf(threshold, pow, sigma_min, sigma_max);
    let mass = |u0: f64| -> f64 {
        let mut binom = 1.0;
        let mut total = 0.0;
        for j in 0..=k {
            let e = j as f64 * pow + 1.0;
            total += binom * a.powi((k - j) as i32) * delta.powi(j as i32) * (1.0 - u0.powf(e)) / e;
            binom = binom * (k - j) as f64 / (j + 1) as f64;
        }
        total
    };
    mass(u_s) / mass(0.0)
}

/// The schedule of `pow` in [`vardiu_sigma`], as the reference code runs it: pow starts at
/// `start` and is raised by `increment` after every `period` generator updates while it is
/// below `end`. After `t` completed updates (`t = it − 1` for the reference's 1-based `it`)
///
/// $$ \text{pow}(t) = \text{start} + \text{increment}\cdot\min\big(\lfloor t/\text{period}\rfloor,\ K\big),
///    \qquad K = \Big\lceil \frac{\text{end} - \text{start}}{\text{increment}} \Big\rceil, $$
///
/// (`K = 0` when `increment = 0` or `end ≤ start`: pow stays at `start`). The reference
/// (`train_upper_diffusion.py`) uses start 0.1, increment 0.01, period 1000 (its
/// `show_iter`) and end = `--power` (2.0 in its README and `run_seeds.sh`), so pow reaches
/// 2.0 only after 190 000 updates: in the first 15 000 it stays in [0.1, 0.24], i.e. σ is
/// drawn mostly near σ_max. Its Diff-Instruct baseline (`train_dikl.py`) holds pow at
/// `--power` ([`PowSchedule::constant`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowSchedule {
    /// pow at update 0.
    pub start: f64,
    /// The value at which raising stops (reached exactly up to round-off, see the type's doc).
    pub end: f64,
    /// Step of each raise (≥ 0).
    pub increment: f64,
    /// Generator updates between two raises (≥ 1).
    pub period: usize,
}

impl Default for PowSchedule {
    /// The reference's schedule to pow 2.0 ([`PowSchedule::reference`]).
    fn default() -> Self {
        PowSchedule::reference(2.0)
    }
}

impl PowSchedule {
    /// The reference code's schedule up to `end` (its `--power`): 0.1, +0.01 every 1000 updates.
    pub fn reference(end: f64) -> Self {
        PowSchedule {
            start: 0.1,
            end,
            increment: 0.01,
            period: 1000,
        }
    }

    /// The reference's steps (0.1 → `end` by 0.01) with the period shortened so that `end`
    /// is reached after `within` updates: `period = max(1, ⌊within / K⌋)`. For budgets far
    /// below the reference's 10⁵–10⁶ updates.
    pub fn reference_within(end: f64, within: usize) -> Self {
        let mut s = PowSchedule::reference(end);
        s.period = (within / s.raises().max(1)).max(1);
        s
    }

    /// pow held at `pow` (the reference's Diff-Instruct baseline).
    pub fn constant(pow: f64) -> Self {
        PowSchedule {
            start: pow,
            end: pow,
            increment: 0.0,
            period: 1,
        }
    }

    /// K: the number of raises, `⌈(end − start)/increment⌉` (0 without a raise). The quotient
    /// is rounded down first when it is within 1e−9 of an integer, so that (2.0 − 0.1)/0.01
    /// counts 190 raises, as the reference's loop `while pow < end: pow += 0.01` does in
    /// double precision.
    pub fn raises(&self) -> usize {
        if !(self.increment > 0.0 && self.end > self.start) {
            return 0;
        }
        let q = (self.end - self.start) / self.increment;
        if (q - q.round()).abs() < 1e-9 {
            q.round() as usize
        } else {
            q.ceil() as usize
        }
    }

    /// pow after `t` completed generator updates.
    pub fn pow_at(&self, t: usize) -> f64 {
        let k = (t / self.period.max(1)).min(self.raises());
        self.start + self.increment * k as f64
    }

    /// Updates after which pow no longer changes: `K · period`.
    pub fn settled_after(&self) -> usize {
        self.raises() * self.period.max(1)
    }

    /// Checks `0 < start`, `0 < end`, `increment ≥ 0` (all finite) and `period ≥ 1`.
    pub fn check(&self) -> Result<(), String> {
        if !(self.start.is_finite() && self.end.is_finite() && self.start > 0.0 && self.end > 0.0) {
            return Err(format!(
                "the pow schedule needs positive finite start and end, got {} → {}; the VarDiU \
                 reference uses 0.1 → 2.0",
                self.start, self.end
            ));
        }
        if !(self.increment.is_finite() && self.increment >= 0.0) || self.period == 0 {
            return Err(format!(
                "the pow schedule needs increment ≥ 0 and period ≥ 1, got increment {} and \
                 period {}; the VarDiU reference raises pow by 0.01 every 1000 updates",
                self.increment, self.period
            ));
        }
        Ok(())
    }
}

/// The weight w(σ) of the time-integrated bound, normalised by σ_max so that it is 1 at the
/// largest noise level (the reference code's `--weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VarDiuWeight {
    /// `(σ/σ_max)²`: the reference's default (`sigma2`).
    #[serde(rename = "sigma2", alias = "sigma-squared")]
    SigmaSquared,
    /// `σ/σ_max` (`sigma`).
    #[serde(rename = "sigma")]
    Sigma,
    /// `(σ/σ_max)⁴` (`sigma4`).
    #[serde(rename = "sigma4")]
    SigmaFourth,
    /// `1` (`one`; the reference's fallback).
    #[serde(rename = "one")]
    One,
}

impl VarDiuWeight {
    /// The exponent k of `(σ/σ_max)^k`.
    pub fn exponent(self) -> usize {
        match self {
            VarDiuWeight::SigmaSquared => 2,
            VarDiuWeight::Sigma => 1,
            VarDiuWeight::SigmaFourth => 4,
            VarDiuWeight::One => 0,
        }
    }

    /// The name the reference's `--weight` and our configs use.
    pub fn label(self) -> &'static str {
        match self {
            VarDiuWeight::SigmaSquared => "sigma2",
            VarDiuWeight::Sigma => "sigma",
            VarDiuWeight::SigmaFourth => "sigma4",
            VarDiuWeight::One => "one",
        }
    }
}

/// The weight of [`VarDiuWeight`]:
///
/// $$ w(\sigma) = (\sigma/\sigma_{\max})^k, \quad k = 2, 1, 4, 0 \text{ for }
///    \texttt{sigma2}, \texttt{sigma}, \texttt{sigma4}, \texttt{one}. $$
pub fn vardiu_weight(sigma: f64, sigma_max: f64, kind: VarDiuWeight) -> f64 {
    (sigma / sigma_max).powi(kind.exponent() as i32)
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

    // both reported values in one host read
    let pull_norm = pull.powi_scalar(2).sum_dim(1).sqrt().mean(); // [1]
    let values = crate::host::read_values(Tensor::cat(
        vec![posterior_term.clone().detach(), pull_norm.detach()],
        0,
    ));
    let (neg_log_q, teacher_pull) = (values[0], values[1]);
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

    /// The closed form against the reference's own loop, replayed in f64: pow is used at
    /// iteration `it` (1-based), then raised by 0.01 after every 1000th iteration while below
    /// `--power`.
    #[test]
    fn pow_schedule_matches_the_reference_loop() {
        for power in [2.0, 1.5, 0.1, 0.05] {
            let s = PowSchedule::reference(power);
            let mut pow = 0.1f64;
            for it in 1..=250_000usize {
                assert!(
                    (s.pow_at(it - 1) - pow).abs() < 1e-9,
                    "power {power}, it {it}: {} vs loop {pow}",
                    s.pow_at(it - 1)
                );
                if it % 1000 == 0 && pow < power {
                    pow += 0.01;
                }
            }
        }
        let s = PowSchedule::reference(2.0);
        assert_eq!(s.raises(), 190);
        assert_eq!(s.settled_after(), 190_000);
        assert_eq!(s.pow_at(999), 0.1);
        assert!((s.pow_at(1000) - 0.11).abs() < 1e-12);
        assert!((s.pow_at(14_999) - 0.24).abs() < 1e-12);
        assert!((s.pow_at(10_000_000) - 2.0).abs() < 1e-12);
        // Not a multiple: (1.0 − 0.1)/0.25 = 3.6 → 4 raises, ending at 1.1 as the loop does.
        let odd = PowSchedule {
            start: 0.1,
            end: 1.0,
            increment: 0.25,
            period: 10,
        };
        assert_eq!(odd.raises(), 4);
        assert!((odd.pow_at(39) - 0.85).abs() < 1e-12);
        assert!((odd.pow_at(40) - 1.1).abs() < 1e-12);
        // Constant: Diff-Instruct's; shortened: 190 raises within 1500 updates.
        let c = PowSchedule::constant(1.5);
        assert_eq!((c.pow_at(0), c.pow_at(1 << 20), c.raises()), (1.5, 1.5, 0));
        let short = PowSchedule::reference_within(2.0, 1500);
        assert_eq!(short.period, 7);
        assert!((short.pow_at(7 * 190) - 2.0).abs() < 1e-12);
        assert!(short.settled_after() <= 1500);
        assert!(PowSchedule { start: 0.0, ..s }.check().is_err());
        assert!(PowSchedule { period: 0, ..s }.check().is_err());
        assert!(
            PowSchedule {
                increment: -0.1,
                ..s
            }
            .check()
            .is_err()
        );
        assert!(s.check().is_ok() && c.check().is_ok());
    }

    /// Draws of σ against the closed-form law: Kolmogorov–Smirnov distance to
    /// [`vardiu_sigma_cdf`] below the 1 % critical value, and the mean
    /// `σ_min + Δ/(1 + pow)` within 4 standard errors.
    #[test]
    fn sigma_draws_follow_the_closed_form_law() {
        use rand::SeedableRng;
        for (pow, lo, hi) in [(0.1, 0.1, 20.0), (0.7, 0.002, 80.0), (2.0, 0.1, 20.0)] {
            let n = 20_000;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
            let mut d = draw_vardiu_sigmas(n, pow, lo, hi, &mut rng);
            d.sort_by(f64::total_cmp);
            assert!(d[0] >= lo && d[n - 1] <= hi);
            let ks = d
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    let f = vardiu_sigma_cdf(s, pow, lo, hi);
                    (f - i as f64 / n as f64)
                        .abs()
                        .max((f - (i + 1) as f64 / n as f64).abs())
                })
                .fold(0.0, f64::max);
            assert!(ks < 1.63 / (n as f64).sqrt(), "pow {pow}: KS {ks}");
            let mean = d.iter().sum::<f64>() / n as f64;
            let expect = lo + (hi - lo) / (1.0 + pow);
            // Var σ = Δ² (1/(2p+1) − 1/(p+1)²).
            let sd = (hi - lo) * (1.0 / (2.0 * pow + 1.0) - 1.0 / (1.0 + pow).powi(2)).sqrt();
            assert!(
                (mean - expect).abs() < 4.0 * sd / (n as f64).sqrt(),
                "pow {pow}: mean {mean} vs {expect}"
            );
        }
        assert_eq!(vardiu_sigma_cdf(0.05, 0.3, 0.1, 20.0), 0.0);
        assert_eq!(vardiu_sigma_cdf(25.0, 0.3, 0.1, 20.0), 1.0);
    }

    /// The weight share above a threshold against a midpoint rule over u, and the 98 % of
    /// SPEC §7 (σ ∈ [0.002, 80], pow 1, w = (σ/80)²: `(80³ − 20³)/(80³ − 0.002³)` above 20).
    #[test]
    fn weight_share_matches_quadrature() {
        let quad = |s: f64, pow: f64, lo: f64, hi: f64, w: VarDiuWeight| {
            let m = 200_000;
            let (mut above, mut all) = (0.0, 0.0);
            for i in 0..m {
                let sigma = vardiu_sigma((i as f64 + 0.5) / m as f64, pow, lo, hi);
                let v = vardiu_weight(sigma, hi, w);
                all += v;
                if sigma > s {
                    above += v;
                }
            }
            above / all
        };
        for (s, pow, lo, hi, w) in [
            (20.0, 1.0, 0.002, 80.0, VarDiuWeight::SigmaSquared),
            (20.0, 0.1, 0.002, 80.0, VarDiuWeight::SigmaSquared),
            (5.0, 0.3, 0.1, 20.0, VarDiuWeight::Sigma),
            (5.0, 2.0, 0.1, 20.0, VarDiuWeight::SigmaFourth),
            (1.0, 1.3, 0.1, 20.0, VarDiuWeight::One),
        ] {
            let closed = vardiu_weight_share_above(s, pow, lo, hi, w);
            let q = quad(s, pow, lo, hi, w);
            assert!(
                (closed - q).abs() < 1e-4,
                "{s} {pow} {w:?}: {closed} vs {q}"
            );
        }
        let share = vardiu_weight_share_above(20.0, 1.0, 0.002, 80.0, VarDiuWeight::SigmaSquared);
        let exact = (80f64.powi(3) - 20f64.powi(3)) / (80f64.powi(3) - 0.002f64.powi(3));
        assert!((share - exact).abs() < 1e-12 && share > 0.98, "{share}");
    }

    #[test]
    fn weights_by_hand() {
        assert_eq!(
            vardiu_weight(2.0, 8.0, VarDiuWeight::SigmaSquared),
            1.0 / 16.0
        );
        assert_eq!(vardiu_weight(2.0, 8.0, VarDiuWeight::Sigma), 0.25);
        assert_eq!(
            vardiu_weight(2.0, 8.0, VarDiuWeight::SigmaFourth),
            1.0 / 256.0
        );
        assert_eq!(vardiu_weight(2.0, 8.0, VarDiuWeight::One), 1.0);
        assert_eq!(vardiu_weight(8.0, 8.0, VarDiuWeight::SigmaSquared), 1.0);
        // The reference's `--weight` names, and the old spelling still reads.
        for w in [
            VarDiuWeight::SigmaSquared,
            VarDiuWeight::Sigma,
            VarDiuWeight::SigmaFourth,
            VarDiuWeight::One,
        ] {
            assert_eq!(serde_json::to_value(w).unwrap(), w.label());
        }
        let old: VarDiuWeight = serde_json::from_str("\"sigma-squared\"").unwrap();
        assert_eq!(old, VarDiuWeight::SigmaSquared);
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
