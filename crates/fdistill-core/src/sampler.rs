//! Deterministic samplers of the probability-flow ODE `dx/dσ = (x − D(x; σ)) / σ`
//! (Karras et al. 2022, Algorithm 1 with S_churn = 0, i.e. their Algorithm 2 without churn),
//! over any [`Denoiser`]: a trained network or the analytic teacher of a Gaussian mixture.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::Denoiser;

/// The ODE solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Heun's second-order method: `2N − 1` evaluations for `N` grid points.
    Heun,
    /// Euler's method: `N` evaluations for `N` grid points.
    Euler,
}

impl SamplerKind {
    /// Number of grid points `N` (before the appended σ_N = 0) that spends exactly `nfe`
    /// denoiser evaluations, or `None` if none does (Heun needs an odd NFE ≥ 3, so `N ≥ 2`;
    /// Euler takes any NFE ≥ 1). Build the grid with
    /// [`sampling_sigmas`](crate::schedule::sampling_sigmas): it also covers Euler's `N = 1`
    /// (the one-step prediction `D(σ_max z)`), which
    /// [`karras_sigmas`](crate::schedule::karras_sigmas) refuses.
    pub fn steps_for_nfe(self, nfe: usize) -> Option<usize> {
        match self {
            SamplerKind::Heun if nfe >= 3 && nfe % 2 == 1 => Some(nfe.div_ceil(2)),
            SamplerKind::Euler if nfe >= 1 => Some(nfe),
            _ => None,
        }
    }

    /// Denoiser evaluations for `n` grid points: Heun `2n − 1`, Euler `n`.
    pub fn nfe(self, n: usize) -> usize {
        match self {
            SamplerKind::Heun => 2 * n - 1,
            SamplerKind::Euler => n,
        }
    }
}

/// A batch of `σ` values, all equal.
fn sigma_batch<B: Backend>(sigma: f64, batch: usize, device: &B::Device) -> Tensor<B, 1> {
    Tensor::<B, 1>::full([batch], sigma, device)
}

/// The ODE slope `d_i = (x_i − D(x_i; t_i)) / t_i`.
fn slope<B: Backend, D: Denoiser<B> + ?Sized>(
    denoiser: &D,
    x: Tensor<B, 2>,
    t: f64,
    labels: Option<Tensor<B, 1, Int>>,
) -> Tensor<B, 2> {
    let [batch, _] = x.dims();
    let denoised = denoiser.denoise(x.clone(), sigma_batch(t, batch, &x.device()), labels);
    (x - denoised).div_scalar(t)
}

/// Heun sampler, EDM Algorithm 2 with S_churn = 0. `sigmas` is the grid
/// `t_0 > t_1 > … > t_{N−1} > t_N = 0` from [`karras_sigmas`](crate::schedule::karras_sigmas);
/// `latents` are standard normal. Uses `2N − 1` denoiser evaluations.
///
/// # Shapes
/// - `latents`: `[batch, dim]`, `labels`: `[batch]`; returns `[batch, dim]`
pub fn heun_sample<B: Backend, D: Denoiser<B> + ?Sized>(
    denoiser: &D,
    latents: Tensor<B, 2>,
    sigmas: &[f64],
    labels: Option<Tensor<B, 1, Int>>,
) -> Tensor<B, 2> {
    let n = sigmas.len() - 1;
    // 1: x_0 ~ N(0, t_0² I)
    let mut x_next = latents.mul_scalar(sigmas[0]);
    // 2: for i ∈ {0, …, N − 1}
    for i in 0..n {
        let (t_cur, t_next) = (sigmas[i], sigmas[i + 1]);
        let x_cur = x_next;
        // 3–5: evaluate dx/dt at t_i; take an Euler step from t_i to t_{i+1}
        let d_cur = slope(denoiser, x_cur.clone(), t_cur, labels.clone());
        x_next = x_cur.clone() + d_cur.clone().mul_scalar(t_next - t_cur);
        // 6–8: apply the 2nd-order correction unless t_{i+1} = 0
        if i < n - 1 {
            let d_prime = slope(denoiser, x_next, t_next, labels.clone());
            x_next = x_cur + (d_cur + d_prime).mul_scalar(0.5 * (t_next - t_cur));
        }
    }
    // 9: return x_N
    x_next
}

/// Euler sampler on the same grid: `x_{i+1} = x_i + (t_{i+1} − t_i) d_i`, `N` evaluations.
///
/// # Shapes
/// - `latents`: `[batch, dim]`, `labels`: `[batch]`; returns `[batch, dim]`
pub fn euler_sample<B: Backend, D: Denoiser<B> + ?Sized>(
    denoiser: &D,
    latents: Tensor<B, 2>,
    sigmas: &[f64],
    labels: Option<Tensor<B, 1, Int>>,
) -> Tensor<B, 2> {
    let mut x = latents.mul_scalar(sigmas[0]);
    for w in sigmas.windows(2) {
        let (t_cur, t_next) = (w[0], w[1]);
        let d_cur = slope(denoiser, x.clone(), t_cur, labels.clone());
        x = x + d_cur.mul_scalar(t_next - t_cur);
    }
    x
}

/// Runs the sampler `kind` on the grid `sigmas`.
///
/// # Shapes
/// - `latents`: `[batch, dim]`, `labels`: `[batch]`; returns `[batch, dim]`
pub fn sample<B: Backend, D: Denoiser<B> + ?Sized>(
    kind: SamplerKind,
    denoiser: &D,
    latents: Tensor<B, 2>,
    sigmas: &[f64],
    labels: Option<Tensor<B, 1, Int>>,
) -> Tensor<B, 2> {
    match kind {
        SamplerKind::Heun => heun_sample(denoiser, latents, sigmas, labels),
        SamplerKind::Euler => euler_sample(denoiser, latents, sigmas, labels),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfe_bookkeeping() {
        assert_eq!(SamplerKind::Heun.steps_for_nfe(35), Some(18));
        assert_eq!(SamplerKind::Heun.nfe(18), 35);
        assert_eq!(SamplerKind::Heun.steps_for_nfe(34), None);
        assert_eq!(SamplerKind::Heun.steps_for_nfe(1), None);
        assert_eq!(SamplerKind::Euler.steps_for_nfe(10), Some(10));
        assert_eq!(SamplerKind::Euler.steps_for_nfe(1), Some(1));
        assert_eq!(SamplerKind::Euler.steps_for_nfe(0), None);
    }

    /// One Euler step on the one-level grid is the denoiser's prediction `D(σ_max z; σ_max)`,
    /// computed here independently by calling the (exact, analytic) denoiser directly.
    #[test]
    fn one_euler_step_is_the_one_step_denoising() {
        use crate::exact::AnalyticTeacher;
        use crate::schedule::sampling_sigmas;
        use crate::targets::ring8_unbalanced;
        use burn::backend::Flex;
        use burn::tensor::{Distribution, TensorData};
        type B = Flex;
        let device = Default::default();
        let teacher = AnalyticTeacher::new(ring8_unbalanced());
        let sigma_max = 80.0;
        let z = Tensor::<B, 2>::random([64, 2], Distribution::Normal(0.0, 1.0), &device);
        let grid = sampling_sigmas(1, 0.002, sigma_max, 7.0).unwrap();
        let got = euler_sample(&teacher, z.clone(), &grid, None);
        let want = teacher.denoise(
            z.mul_scalar(sigma_max),
            Tensor::<B, 1>::full([64], sigma_max, &device),
            None,
        );
        let (got, want): (TensorData, TensorData) = (got.into_data(), want.into_data());
        got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-4));
        // and it is not the latent itself: the step moved the sample to the data's scale
        let max = got
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max < 10.0,
            "one-step sample should lie near the data, max |x| = {max}"
        );
    }
}
