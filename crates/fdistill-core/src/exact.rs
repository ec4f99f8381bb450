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
    (
        crate::host::read_values(x),
        crate::host::read_values(sigma),
        dim,
    )
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

/// The exact teacher of a class-conditional mixture: component `k` belongs to class
/// `classes[k]`, and `p(x | y)` is the mixture of class `y`'s components (weights
/// renormalised). With labels, row `i` is denoised under `p(· | y_i)`; without (the null
/// label of classifier-free guidance) under the whole mixture `p = Σ_y p(y) p(· | y)`:
///
/// $$ D(x; \sigma, y) = x + \sigma^2 \nabla_x \log p_\sigma(x \mid y), \qquad
///    D(x; \sigma, \varnothing) = x + \sigma^2 \nabla_x \log p_\sigma(x). $$
///
/// The testbed of [`guidance_combine`](crate::denoiser::guidance_combine): the guided score
/// has the closed form $s_\varnothing + w (s_y - s_\varnothing)$. Exact, not fast.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassConditionalTeacher {
    mixture: GaussianMixture,
    per_class: Vec<GaussianMixture>,
}

impl ClassConditionalTeacher {
    /// `classes[k]` is the class of component `k`; classes are `0..K` and each has a
    /// component.
    pub fn new(mixture: GaussianMixture, classes: &[usize]) -> Result<Self, String> {
        if classes.len() != mixture.n_components() {
            return Err(format!(
                "{} classes for {} components",
                classes.len(),
                mixture.n_components()
            ));
        }
        let k = classes.iter().max().map_or(0, |m| m + 1);
        let per_class = (0..k)
            .map(|y| {
                let members: Vec<usize> = (0..classes.len()).filter(|&i| classes[i] == y).collect();
                if members.is_empty() {
                    return Err(format!("class {y} has no component"));
                }
                GaussianMixture::new(
                    members.iter().map(|&i| mixture.weights()[i]).collect(),
                    members
                        .iter()
                        .map(|&i| mixture.means()[i].clone())
                        .collect(),
                    members.iter().map(|&i| mixture.stds()[i].clone()).collect(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClassConditionalTeacher { mixture, per_class })
    }

    /// `p(· | y)`.
    pub fn class_mixture(&self, y: usize) -> &GaussianMixture {
        &self.per_class[y]
    }

    /// The whole mixture `p`.
    pub fn mixture(&self) -> &GaussianMixture {
        &self.mixture
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.per_class.len()
    }
}

impl<B: Backend> Denoiser<B> for ClassConditionalTeacher {
    fn dim(&self) -> usize {
        self.mixture.dim()
    }

    /// # Shapes
    /// - `x`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`; returns `[batch, dim]`
    ///
    /// # Panics
    /// On a label `≥` [`n_classes`](Self::n_classes).
    fn denoise(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        let device = x.device();
        let (xs, sig, dim) = to_host(x, sigma);
        let labels: Option<Vec<i64>> = labels.map(|l| {
            l.into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .expect("i64 data")
        });
        let out: Vec<f64> = xs
            .chunks(dim)
            .zip(&sig)
            .enumerate()
            .flat_map(|(i, (row, &s))| match &labels {
                Some(l) => self.per_class[l[i] as usize].denoise(row, s),
                None => self.mixture.denoise(row, s),
            })
            .collect();
        Tensor::from_data(TensorData::new(out, [sig.len(), dim]), &device)
    }
}

/// No feature taps (as [`AnalyticTeacher`]).
impl<B: Backend> FeatureDenoiser<B> for ClassConditionalTeacher {
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

    /// The guided denoiser of a class-conditional mixture against the guided score computed
    /// independently: central finite differences of $\log p_\sigma(x)$ and
    /// $\log p_\sigma(x \mid y)$ (Gaussian convolution: variances $s_k^2 + \sigma^2$),
    /// $D_w = x + \sigma^2 (s_\varnothing + w (s_y - s_\varnothing))$.
    #[test]
    fn guided_denoiser_is_the_guided_score_of_the_class_conditional_mixture() {
        use crate::denoiser::guided_denoise;
        // Three components, two classes: class 0 = components 0 and 2, class 1 = component 1.
        let mix = GaussianMixture::new(
            vec![0.3, 0.5, 0.2],
            vec![vec![-1.0, 0.5], vec![2.0, -1.0], vec![0.5, 2.0]],
            vec![vec![0.5, 0.8], vec![0.3, 0.4], vec![0.6, 0.6]],
        )
        .unwrap();
        let teacher = ClassConditionalTeacher::new(mix.clone(), &[0, 1, 0]).unwrap();
        assert_eq!(teacher.n_classes(), 2);
        let class_of = |y: usize| {
            let keep: Vec<usize> = [0usize, 1, 2]
                .into_iter()
                .filter(|&k| [0, 1, 0][k] == y)
                .collect();
            GaussianMixture::new(
                keep.iter().map(|&k| mix.weights()[k]).collect(),
                keep.iter().map(|&k| mix.means()[k].clone()).collect(),
                keep.iter().map(|&k| mix.stds()[k].clone()).collect(),
            )
            .unwrap()
        };
        let fd_score = |m: &GaussianMixture, x: &[f64], sigma: f64| -> Vec<f64> {
            let h = 1e-5;
            (0..x.len())
                .map(|j| {
                    let (mut a, mut b) = (x.to_vec(), x.to_vec());
                    a[j] += h;
                    b[j] -= h;
                    (m.log_density(&a, sigma) - m.log_density(&b, sigma)) / (2.0 * h)
                })
                .collect()
        };
        let labels = [1i64, 0, 1];
        let device = Default::default();
        for w in [0.0, 1.0, 2.5] {
            let (x, s) = batch();
            let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [3]), &device);
            let got: Vec<f64> = guided_denoise::<B, _>(&teacher, x, s, y, w)
                .into_data()
                .convert::<f64>()
                .to_vec()
                .unwrap();
            for (i, (row, sigma)) in XS.iter().zip(SIGMAS).enumerate() {
                let s_null = fd_score(&mix, row, sigma);
                let s_y = fd_score(&class_of(labels[i] as usize), row, sigma);
                for j in 0..2 {
                    let expect = row[j] + sigma * sigma * (s_null[j] + w * (s_y[j] - s_null[j]));
                    let g = got[i * 2 + j];
                    assert!(
                        (g - expect).abs() < 1e-4 * expect.abs().max(1.0),
                        "w {w}, row {i}, dim {j}: {g} vs {expect}"
                    );
                }
            }
        }
        // The classes differ, so guidance changed the output in this test.
        let (x, s) = batch();
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [3]), &device);
        let d1: Vec<f64> = guided_denoise::<B, _>(&teacher, x.clone(), s.clone(), y.clone(), 1.0)
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap();
        let d3: Vec<f64> = guided_denoise::<B, _>(&teacher, x, s, y, 3.0)
            .into_data()
            .convert::<f64>()
            .to_vec()
            .unwrap();
        assert!(
            d1.iter().zip(&d3).any(|(a, b)| (a - b).abs() > 0.05),
            "{d1:?} {d3:?}"
        );
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
