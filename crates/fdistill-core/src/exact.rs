//! Exact teacher and exact ratio on Gaussian mixtures (SPEC §6), behind the same traits as
//! the neural networks: [`AnalyticTeacher`] is a [`Denoiser`] and [`ExactRatio`] a
//! [`DensityRatioEstimator`].
//!
//! Both move the batch to the host as `f64`, evaluate the closed forms of [`crate::gmm`] and
//! move the result back: they are **exact, not fast**, meant for tests and toy studies.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::denoiser::{Denoiser, FeatureDenoiser};
use crate::gmm::{self, GaussianMixture};
use crate::ratio::{DensityRatioEstimator, RatioInput};

/// Rows of a `[batch, dim]` tensor and a `[batch]` σ on the host, as `f64`.
fn to_host<B: Backend>(x: Tensor<B, 2>, sigma: Tensor<B, 1>) -> (Vec<f64>, Vec<f64>, usize) {
    let [_, dim] = x.dims();
    let x = x
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("f64 data");
    let s = sigma
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("f64 data");
    (x, s, dim)
}

/// The Tweedie denoiser of a known mixture `p`:
///
/// $$ D(x, \sigma) = x + \sigma^2 \nabla_x \log p_\sigma(x) = \mathbb{E}[x_0 \mid x_t = x], $$
///
/// the exact teacher of the Gaussian-mixture testbed. Labels are ignored (the mixture is
/// unconditional). Exact, not fast: every call copies the batch to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticTeacher {
    mixture: GaussianMixture,
}

impl AnalyticTeacher {
    /// The teacher whose data distribution is `mixture`.
    pub fn new(mixture: GaussianMixture) -> Self {
        AnalyticTeacher { mixture }
    }

    /// The data distribution `p`.
    pub fn mixture(&self) -> &GaussianMixture {
        &self.mixture
    }
}

impl<B: Backend> Denoiser<B> for AnalyticTeacher {
    fn dim(&self) -> usize {
        self.mixture.dim()
    }

    /// # Shapes
    /// - `x`: `[batch, dim]`, `sigma`: `[batch]`; returns `[batch, dim]`
    fn denoise(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        _labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        let device = x.device();
        let (xs, sig, dim) = to_host(x, sigma);
        let out: Vec<f64> = xs
            .chunks(dim)
            .zip(&sig)
            .flat_map(|(row, &s)| self.mixture.denoise(row, s))
            .collect();
        Tensor::from_data(TensorData::new(out, [sig.len(), dim]), &device)
    }
}

/// The analytic teacher has no feature taps: it serves configurations whose ratio is exact
/// or unused (DMD2 without GAN), never a learned discriminator.
impl<B: Backend> FeatureDenoiser<B> for AnalyticTeacher {
    fn denoise_with_features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Vec<crate::ratio::FeatureMap<B>>) {
        (Denoiser::<B>::denoise(self, x, sigma, labels), Vec::new())
    }
}

/// The exact log ratio between two known mixtures,
/// `ℓ(x) = log p_σ(x) − log q_σ(x)` ([`gmm::log_ratio`]), σ per sample from `input.sigma`.
/// Exact, not fast: every call copies the batch to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactRatio {
    /// The teacher's data distribution.
    pub p: GaussianMixture,
    /// The student's distribution.
    pub q: GaussianMixture,
}

impl<B: Backend> DensityRatioEstimator<B> for ExactRatio {
    fn name(&self) -> &str {
        "exact"
    }

    /// # Shapes
    /// - `input.x_noisy`: `[batch, dim]`, `input.sigma`: `[batch]`; returns `[batch]`
    fn log_ratio(&self, input: &RatioInput<B>) -> Tensor<B, 1> {
        let device = input.x_noisy.device();
        let (xs, sig, dim) = to_host(input.x_noisy.clone(), input.sigma.clone());
        let out: Vec<f64> = xs
            .chunks(dim)
            .zip(&sig)
            .map(|(row, &s)| gmm::log_ratio(&self.p, &self.q, row, s))
            .collect();
        Tensor::from_data(TensorData::new(out, [sig.len()]), &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn p() -> GaussianMixture {
        GaussianMixture::new(
            vec![0.3, 0.7],
            vec![vec![-1.0, 0.5], vec![2.0, -1.0]],
            vec![vec![0.5, 0.8], vec![0.3, 0.4]],
        )
        .unwrap()
    }

    fn q() -> GaussianMixture {
        GaussianMixture::isotropic(vec![1.0], vec![vec![0.2, 0.1]], vec![1.3]).unwrap()
    }

    const XS: [[f64; 2]; 3] = [[0.3, -0.2], [-1.5, 1.0], [2.5, -0.5]];
    const SIGMAS: [f64; 3] = [0.1, 0.5, 2.0];

    fn batch() -> (Tensor<B, 2>, Tensor<B, 1>) {
        let device = Default::default();
        let flat: Vec<f64> = XS.iter().flatten().copied().collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(flat, [3, 2]), &device);
        let s = Tensor::<B, 1>::from_data(TensorData::new(SIGMAS.to_vec(), [3]), &device);
        (x, s)
    }

    #[test]
    fn analytic_teacher_matches_the_f64_tweedie_denoiser() {
        let teacher = AnalyticTeacher::new(p());
        let (x, s) = batch();
        let out = Denoiser::<B>::denoise(&teacher, x, s, None);
        assert_eq!(out.dims(), [3, 2]);
        let got: Vec<f64> = out.into_data().convert::<f64>().to_vec().unwrap();
        for (i, (row, sigma)) in XS.iter().zip(SIGMAS).enumerate() {
            let expect = p().denoise(row, sigma);
            for j in 0..2 {
                // f32 round trip on the tensor side.
                assert!((got[2 * i + j] - expect[j]).abs() < 1e-5 * (1.0 + expect[j].abs()));
            }
        }
    }

    /// Independent check: the Tweedie identity `D = x + σ² ∇log p_σ` with the score from a
    /// central difference of `log p_σ`.
    #[test]
    fn denoiser_is_tweedie_with_finite_difference_score() {
        let (x, s) = batch();
        let got: Vec<f64> = Denoiser::<B>::denoise(&AnalyticTeacher::new(p()), x, s, None)
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap();
        for (i, (row, sigma)) in XS.iter().zip(SIGMAS).enumerate() {
            for j in 0..2 {
                let e = 1e-5;
                let (mut a, mut b) = (*row, *row);
                a[j] += e;
                b[j] -= e;
                let fd = (p().log_density(&a, sigma) - p().log_density(&b, sigma)) / (2.0 * e);
                let expect = row[j] + sigma * sigma * fd;
                assert!((got[2 * i + j] - expect).abs() < 1e-4, "{i},{j}");
            }
        }
    }

    #[test]
    fn exact_ratio_is_the_difference_of_log_densities() {
        let est = ExactRatio { p: p(), q: q() };
        let (x, s) = batch();
        let out = est.log_ratio(&RatioInput::new(x, s));
        assert_eq!(out.dims(), [3]);
        let got: Vec<f64> = out.into_data().convert::<f64>().to_vec().unwrap();
        for (i, (row, sigma)) in XS.iter().zip(SIGMAS).enumerate() {
            let expect = p().log_density(row, sigma) - q().log_density(row, sigma);
            assert!((got[i] - expect).abs() < 1e-5 * (1.0 + expect.abs()), "{i}");
        }
        assert_eq!(DensityRatioEstimator::<B>::name(&est), "exact");
    }
}
