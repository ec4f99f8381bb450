//! The generator update of SPEC §3–§4 as small pure functions, in the order the trainer
//! applies them:
//!
//! 1. [`clamp_logits`]: `ℓ ← clamp(ℓ, −10, 10)`;
//! 2. [`clip_ratio`]: `r ← clip(r, 0.1, 20)`, done on `ℓ = log r`;
//! 3. [`TimeBinnedNormaliser`] (optional, stage 1): `r ← r / (b_k + 1e−6)` per σ-bin;
//! 4. stage 2: [`fdistill_divergence::weights::normalise_log_weights`], `h_i ← h_i / (mean h + 1e−6)`;
//! 5. [`dmd_normaliser`]: `w_i = 1 / (mean |x0_i − D_T(x_t,i)| + 1e−6)`;
//! 6. [`crate::losses::inject_gradient()`] with `g = sg(w · h · (d_F − d_T))`.
//!
//! Per-sample quantities of length `batch` are host `f64` slices; [`dmd_normaliser`] works on
//! tensors. Non-finite inputs are propagated, never replaced: the trainer counts them.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// Logit clamp of the reference code: `ℓ ∈ [−10, 10]`.
pub const LOGIT_CLAMP: f64 = 10.0;
/// Ratio clip of the reference code: `r ∈ [0.1, 20]`.
pub const RATIO_CLIP: (f64, f64) = (0.1, 20.0);
/// Stabiliser of the stage-1 and DMD normalisers.
pub const NORMALISER_EPS: f64 = 1e-6;

/// `ℓ_i ← clamp(ℓ_i, −bound, bound)` (SPEC §2: discriminator logits clamped to ±10).
/// NaN stays NaN.
pub fn clamp_logits(log_r: &[f64], bound: f64) -> Vec<f64> {
    log_r.iter().map(|l| l.clamp(-bound, bound)).collect()
}

/// `r_i ← clip(r_i, lo, hi)` computed on log ratios: `ℓ_i ← clamp(ℓ_i, log lo, log hi)`
/// (exp is monotone, so this equals clipping `r = e^ℓ` and taking the log). NaN stays NaN.
pub fn clip_ratio(log_r: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    log_r.iter().map(|l| l.clamp(a, b)).collect()
}

/// Stage-1 time-binned ratio normalisation (SPEC §3). `[σ_min, σ_max]` is split into
/// `bins` equal-width bins; for every bin `k` that holds samples of the batch,
///
/// $$ b_k \leftarrow \beta\\, b_k + (1-\beta)\\, \mathrm{mean}(r \mid \text{bin } k),\qquad
///    r \leftarrow \frac{r}{b_k + 10^{-6}}, $$
///
/// since `E_q[r] = 1` at every σ. `b` starts at 1. The struct is the running state: it
/// (de)serialises with serde so the trainer's checkpoint saves and restores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeBinnedNormaliser {
    sigma_min: f64,
    sigma_max: f64,
    beta: f64,
    b: Vec<f64>,
}

impl TimeBinnedNormaliser {
    /// `bins` equal-width bins over `[sigma_min, sigma_max]`, EMA factor `beta ∈ [0, 1)`,
    /// every `b_k = 1`. Errors say which argument is wrong.
    pub fn new(sigma_min: f64, sigma_max: f64, bins: usize, beta: f64) -> Result<Self, String> {
        if !(sigma_min.is_finite() && sigma_max.is_finite() && sigma_min < sigma_max) {
            return Err(format!(
                "time bins need finite sigma_min < sigma_max, got [{sigma_min}, {sigma_max}]"
            ));
        }
        if bins == 0 {
            return Err("time bins: `bins` must be at least 1 (10 in the reference code)".into());
        }
        if !(0.0..1.0).contains(&beta) {
            return Err(format!(
                "time bins: EMA beta must be in [0, 1), got {beta} (0 default, 0.5 on ImageNet-64)"
            ));
        }
        Ok(TimeBinnedNormaliser {
            sigma_min,
            sigma_max,
            beta,
            b: vec![1.0; bins],
        })
    }

    /// The running bin means `b_k`.
    pub fn bin_means(&self) -> &[f64] {
        &self.b
    }

    /// Bin of σ: `⌊(σ − σ_min)/(σ_max − σ_min) · bins⌋`, clamped into `[0, bins − 1]`.
    pub fn bin_index(&self, sigma: f64) -> usize {
        let n = self.b.len();
        let t = (sigma - self.sigma_min) / (self.sigma_max - self.sigma_min);
        ((t * n as f64).floor().max(0.0) as usize).min(n - 1)
    }

    /// Updates `b` from a batch of log ratios `ℓ_i` at noise levels `σ_i` and returns the
    /// normalised log ratios `ℓ_i − log(b_{k(i)} + 10⁻⁶)`. Bin means are computed as
    /// `exp(log-mean-exp ℓ)`; call it after [`clip_ratio`] so `r` is bounded.
    pub fn update_and_normalise(&mut self, log_r: &[f64], sigma: &[f64]) -> Vec<f64> {
        assert_eq!(log_r.len(), sigma.len(), "one σ per log ratio");
        let bins: Vec<usize> = sigma.iter().map(|&s| self.bin_index(s)).collect();
        for k in 0..self.b.len() {
            let in_bin: Vec<f64> = bins
                .iter()
                .zip(log_r)
                .filter(|(b, _)| **b == k)
                .map(|(_, l)| *l)
                .collect();
            if !in_bin.is_empty() {
                let mean_r = fdistill_divergence::weights::log_mean_exp(&in_bin).exp();
                self.b[k] = self.beta * self.b[k] + (1.0 - self.beta) * mean_r;
            }
        }
        log_r
            .iter()
            .zip(&bins)
            .map(|(l, &k)| l - (self.b[k] + NORMALISER_EPS).ln())
            .collect()
    }
}

/// The per-sample DMD normaliser (SPEC §3), without gradient:
///
/// $$ w_i = \frac{1}{\tfrac1D \sum_j |x_{0,ij} - D_T(x_t)_{ij}| + 10^{-6}}. $$
///
/// # Shapes
/// - `x0`, `d_t`: `[batch, dim]`
/// - returns `[batch]` (detached)
pub fn dmd_normaliser<B: Backend>(x0: Tensor<B, 2>, d_t: Tensor<B, 2>) -> Tensor<B, 1> {
    let mad = (x0 - d_t).detach().abs().mean_dim(1); // [batch, 1]
    mad.add_scalar(NORMALISER_EPS).recip().squeeze_dim::<1>(1) // [batch]
}

/// Host version of [`dmd_normaliser`] for one sample: `1 / (mean_j |x0_j − d_j| + 10⁻⁶)`.
pub fn dmd_weight(x0: &[f64], d_t: &[f64]) -> f64 {
    let mad = x0.iter().zip(d_t).map(|(a, b)| (a - b).abs()).sum::<f64>() / x0.len() as f64;
    1.0 / (mad + NORMALISER_EPS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn clamp_and_clip_bound_log_ratios_and_keep_nan() {
        let l = [-50.0, -1.0, 0.5, 12.0, f64::NAN];
        let c = clamp_logits(&l, LOGIT_CLAMP);
        assert_eq!(&c[..4], &[-10.0, -1.0, 0.5, 10.0]);
        assert!(c[4].is_nan());
        let r = clip_ratio(&c, RATIO_CLIP.0, RATIO_CLIP.1);
        // Independent: clip r = e^ℓ directly, then compare in linear space.
        for (li, ri) in c.iter().zip(&r).take(4) {
            let direct = li.exp().clamp(0.1, 20.0);
            assert!((ri.exp() - direct).abs() < 1e-12 * direct.max(1.0));
        }
        assert!(r[4].is_nan());
    }

    #[test]
    fn bins_are_equal_width_and_clamped() {
        let n = TimeBinnedNormaliser::new(0.0, 10.0, 10, 0.0).unwrap();
        assert_eq!(n.bin_index(0.0), 0);
        assert_eq!(n.bin_index(0.99), 0);
        assert_eq!(n.bin_index(1.01), 1);
        assert_eq!(n.bin_index(9.99), 9);
        assert_eq!(n.bin_index(10.0), 9);
        assert_eq!(n.bin_index(-3.0), 0);
        assert_eq!(n.bin_index(80.0), 9);
        assert!(TimeBinnedNormaliser::new(1.0, 1.0, 10, 0.0).is_err());
        assert!(TimeBinnedNormaliser::new(0.0, 1.0, 0, 0.0).is_err());
        assert!(TimeBinnedNormaliser::new(0.0, 1.0, 2, 1.0).is_err());
    }

    /// β = 0: within each bin the normalised ratios average to 1 (up to the 1e−6).
    #[test]
    fn beta_zero_makes_each_bin_mean_one() {
        let mut n = TimeBinnedNormaliser::new(0.0, 2.0, 2, 0.0).unwrap();
        let r = [2.0f64, 4.0, 0.5, 1.5];
        let sigma = [0.5, 0.7, 1.5, 1.9];
        let l: Vec<f64> = r.iter().map(|x| x.ln()).collect();
        let out = n.update_and_normalise(&l, &sigma);
        assert!((n.bin_means()[0] - 3.0).abs() < 1e-12);
        assert!((n.bin_means()[1] - 1.0).abs() < 1e-12);
        let bin0 = (out[0].exp() + out[1].exp()) / 2.0;
        assert!((bin0 - 3.0 / (3.0 + 1e-6)).abs() < 1e-12);
        assert!((out[2].exp() - 0.5 / (1.0 + 1e-6)).abs() < 1e-12);
    }

    /// β = 0.5, hand-computed EMA; an empty bin keeps its value; state survives serde.
    #[test]
    fn ema_updates_only_non_empty_bins_and_roundtrips() {
        let mut n = TimeBinnedNormaliser::new(0.0, 2.0, 2, 0.5).unwrap();
        let out = n.update_and_normalise(&[3f64.ln()], &[0.1]);
        assert_eq!(n.bin_means(), &[0.5 + 0.5 * 3.0, 1.0]);
        assert!((out[0].exp() - 3.0 / (2.0 + 1e-6)).abs() < 1e-12);
        let json = serde_json::to_string(&n).unwrap();
        let back: TimeBinnedNormaliser = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn dmd_normaliser_matches_host_formula() {
        let device = Default::default();
        let x0 = [[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]];
        let dt = [[0.0, 1.0, 0.5], [0.1, -0.2, 0.3]];
        let to_t = |a: [[f64; 3]; 2]| {
            let flat: Vec<f64> = a.iter().flatten().copied().collect();
            Tensor::<Flex, 2>::from_data(TensorData::new(flat, [2, 3]), &device)
        };
        let w = dmd_normaliser(to_t(x0), to_t(dt));
        assert_eq!(w.dims(), [2]);
        let got: Vec<f64> = w.into_data().convert::<f64>().to_vec().unwrap();
        // Row 0: mean |.| = (1 + 3 + 0)/3 = 4/3; row 1: 0.6/3 = 0.2.
        let expect = [1.0 / (4.0 / 3.0 + 1e-6), 1.0 / (0.2 + 1e-6)];
        for i in 0..2 {
            assert!((got[i] - expect[i]).abs() < 1e-5 * expect[i]);
            assert!((dmd_weight(&x0[i], &dt[i]) - expect[i]).abs() < 1e-12 * expect[i]);
        }
    }
}
