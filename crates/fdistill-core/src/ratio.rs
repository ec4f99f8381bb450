//! Density-ratio estimation (SPEC §2): `ℓ = log p_σ(x)/q_σ(x)` per noisy sample.
//!
//! The f-distill weight `h(r)` needs the ratio of the teacher's noisy marginal to the
//! student's at every noisy generator sample. Learned estimators (a discriminator head on
//! feature maps, trained with the logistic loss whose optimum logit is `ℓ*`) and exact
//! estimators (Gaussian-mixture testbed) implement the same trait, so the trainer does not
//! know which one it holds.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};

/// A feature map read from a network's tap, flat (MLP hidden units) or spatial (UNet level).
#[derive(Debug, Clone)]
pub enum FeatureMap<B: Backend> {
    /// `[batch, channels]`.
    Flat(Tensor<B, 2>),
    /// `[batch, channels, height, width]`.
    Spatial(Tensor<B, 4>),
}

/// What a ratio estimator sees for one batch of noisy samples.
#[derive(Debug, Clone)]
pub struct RatioInput<B: Backend> {
    /// Noisy samples `x_t = x_0 + σ ε`, flattened: `[batch, dim]`.
    pub x_noisy: Tensor<B, 2>,
    /// Noise level of each sample: `[batch]`.
    pub sigma: Tensor<B, 1>,
    /// Feature maps of `x_noisy` from the network the estimator reads (may be empty).
    pub features: Vec<FeatureMap<B>>,
    /// Class labels, if the model is conditional: `[batch]`.
    pub labels: Option<Tensor<B, 1, Int>>,
}

impl<B: Backend> RatioInput<B> {
    /// Input without features or labels.
    pub fn new(x_noisy: Tensor<B, 2>, sigma: Tensor<B, 1>) -> Self {
        RatioInput {
            x_noisy,
            sigma,
            features: Vec::new(),
            labels: None,
        }
    }

    /// Batch size.
    pub fn batch_size(&self) -> usize {
        self.x_noisy.dims()[0]
    }
}

/// Estimates the log density ratio `ℓ = log p_σ(x)/q_σ(x)` (teacher over student).
///
/// # Example
///
/// An estimator that believes the student is the teacher shifted by `+1` in every
/// coordinate of a unit-variance Gaussian, so `ℓ(x) = −Σ x + d/2`... or, more simply,
/// the [`Constant`] estimator:
///
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use fdistill_core::ratio::{Constant, DensityRatioEstimator, RatioInput};
///
/// type B = Flex;
/// let device = Default::default();
/// let x = Tensor::<B, 2>::zeros([4, 2], &device);        // [batch, dim]
/// let sigma = Tensor::<B, 1>::ones([4], &device);        // [batch]
/// let est = Constant::new(0.5);
/// let l = est.log_ratio(&RatioInput::new(x, sigma));      // [batch]
/// assert_eq!(l.dims(), [4]);
/// let v: Vec<f32> = l.into_data().to_vec().unwrap();
/// assert!(v.iter().all(|&x| x == 0.5));
/// ```
pub trait DensityRatioEstimator<B: Backend> {
    /// Short name for logs (`"constant"`, `"exact"`, `"discriminator"`).
    fn name(&self) -> &str;

    /// Per-sample log-ratio `ℓ_i`.
    ///
    /// # Shapes
    /// - `input.x_noisy`: `[batch, dim]`, `input.sigma`: `[batch]`
    /// - returns `[batch]`
    fn log_ratio(&self, input: &RatioInput<B>) -> Tensor<B, 1>;
}

/// A ratio estimator with parameters, trained by its own loss.
pub trait LearnedRatioEstimator<B: AutodiffBackend>: DensityRatioEstimator<B> {
    /// Training loss on a batch of noisy real (teacher) samples and noisy fake (student)
    /// samples; for the logistic discriminator
    /// `mean softplus(C(fake)) + mean softplus(−C(real))`, whose optimum is `ℓ*`.
    ///
    /// # Shapes
    /// returns a scalar tensor `[1]`.
    fn loss(&self, real: &RatioInput<B>, fake: &RatioInput<B>) -> Tensor<B, 1>;

    /// Checks that `input` carries what this estimator reads (number and shapes of feature
    /// taps) before training starts; the error says what is missing. Default: accepts all.
    fn check_input(&self, input: &RatioInput<B>) -> Result<(), String> {
        let _ = input;
        Ok(())
    }
}

/// The same log-ratio for every sample. `Constant::new(0.0)` means "student = teacher"
/// (`r ≡ 1`), under which every f-distill weight is `h(1)` and normalises to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant {
    log_ratio: f64,
}

impl Constant {
    /// An estimator returning `log_ratio` everywhere.
    pub fn new(log_ratio: f64) -> Self {
        Constant { log_ratio }
    }
}

impl<B: Backend> DensityRatioEstimator<B> for Constant {
    fn name(&self) -> &str {
        "constant"
    }

    fn log_ratio(&self, input: &RatioInput<B>) -> Tensor<B, 1> {
        let batch = input.batch_size();
        Tensor::full([batch], self.log_ratio, &input.x_noisy.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn constant_returns_one_value_per_sample() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::zeros([3, 5], &device);
        let sigma = Tensor::<Flex, 1>::ones([3], &device);
        let out = Constant::new(-1.25).log_ratio(&RatioInput::new(x, sigma));
        let v: Vec<f32> = out.into_data().to_vec().unwrap();
        assert_eq!(v, vec![-1.25; 3]);
    }
}
