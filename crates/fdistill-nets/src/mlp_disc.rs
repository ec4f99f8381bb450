//! A discriminator head on flat feature taps (SPEC §2): the density-ratio estimator of
//! f-distill on MLP teachers.
//!
//! ```text
//! per tap k with features f_k [batch, c_k]:
//!   e   = SiLU(W_e · sinusoidal(¼ ln σ))            [batch, hidden]   (σ-conditioning)
//!   h   = SiLU(W_in f_k + e)                         [batch, hidden]
//!   h   = SiLU(W_h h)                                [batch, hidden]
//!   ℓ_k = W_out h                                    [batch]
//! ℓ = mean_k ℓ_k                                     (logits averaged over heads)
//! ```
//!
//! Trained with the logistic loss
//! `L_C = mean softplus(C(fake)) + mean softplus(−C(real))`, whose optimum logit is
//! `ℓ* = log p_σ/q_σ` (teacher over student), so `r̂ = exp ℓ`.

use crate::ops::silu;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use fdistill_core::losses::discriminator_loss;
use fdistill_core::ratio::{DensityRatioEstimator, FeatureMap, LearnedRatioEstimator, RatioInput};
use serde::{Deserialize, Serialize};

use crate::embedding::{check_embedding_size, sinusoidal_embedding};
use crate::mlp::NetConfigError;

/// Configuration of [`MlpDiscriminator`], saved in the run directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpDiscriminatorConfig {
    /// Channels of each flat tap, in the order the feature network returns them.
    pub taps: Vec<usize>,
    /// Hidden width of each head.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Channels of the sinusoidal σ embedding (even).
    #[serde(default = "default_embedding_size")]
    pub embedding_size: usize,
}

fn default_hidden() -> usize {
    128
}
fn default_embedding_size() -> usize {
    32
}

impl MlpDiscriminatorConfig {
    /// One head per tap, default widths.
    pub fn new(taps: Vec<usize>) -> Self {
        MlpDiscriminatorConfig {
            taps,
            hidden: default_hidden(),
            embedding_size: default_embedding_size(),
        }
    }

    /// Validates the configuration; call before building the head.
    pub fn check(&self) -> Result<(), NetConfigError> {
        if self.taps.is_empty() || self.taps.contains(&0) {
            return Err(NetConfigError(format!(
                "discriminator taps must be a non-empty list of channel counts ≥ 1, got {:?}",
                self.taps
            )));
        }
        if self.hidden == 0 {
            return Err(NetConfigError("discriminator hidden must be ≥ 1".into()));
        }
        check_embedding_size(self.embedding_size)
            .map_err(|m| NetConfigError(format!("discriminator {m}")))?;
        Ok(())
    }

    /// Builds the head on `device`. Call [`check`](Self::check) first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MlpDiscriminator<B> {
        let h = self.hidden;
        MlpDiscriminator {
            heads: self
                .taps
                .iter()
                .map(|&c| TapHead {
                    input: LinearConfig::new(c, h).init(device),
                    noise: LinearConfig::new(self.embedding_size, h).init(device),
                    hidden: LinearConfig::new(h, h).init(device),
                    output: LinearConfig::new(h, 1).init(device),
                })
                .collect(),
            config: self.clone(),
        }
    }
}

/// The MLP on one tap.
#[derive(Module, Debug)]
pub struct TapHead<B: Backend> {
    /// `W_in`: tap → hidden.
    pub input: Linear<B>,
    /// `W_e`: σ embedding → hidden.
    pub noise: Linear<B>,
    /// `W_h`.
    pub hidden: Linear<B>,
    /// `W_out`: hidden → logit.
    pub output: Linear<B>,
}

/// The discriminator: one [`TapHead`] per flat tap, logits averaged; see the module docs.
#[derive(Module, Debug)]
pub struct MlpDiscriminator<B: Backend> {
    /// One head per tap.
    pub heads: Vec<TapHead<B>>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: MlpDiscriminatorConfig,
}

impl<B: Backend> MlpDiscriminator<B> {
    /// Per-head logits `ℓ_k`.
    ///
    /// # Shapes
    /// - `features[k]`: `[batch, taps[k]]`, `sigma`: `[batch]`
    /// - returns one `[batch]` tensor per head
    ///
    /// # Panics
    /// If the features do not match the configured taps; [`LearnedRatioEstimator::check_input`]
    /// reports that as an error before training.
    pub fn head_logits(
        &self,
        features: &[FeatureMap<B>],
        sigma: Tensor<B, 1>,
    ) -> Vec<Tensor<B, 1>> {
        let c_noise = sigma.log().div_scalar(4.0); // [batch]
        let emb = sinusoidal_embedding(c_noise, self.config.embedding_size, 100.0); // [batch, emb]
        self.heads
            .iter()
            .zip(features)
            .map(|(head, f)| {
                let FeatureMap::Flat(f) = f else {
                    panic!("MlpDiscriminator reads flat taps; check_input rejects spatial ones")
                };
                let e = silu(head.noise.forward(emb.clone())); // [batch, hidden]
                let h = silu(head.input.forward(f.clone()) + e); // [batch, hidden]
                let h = silu(head.hidden.forward(h)); // [batch, hidden]
                head.output.forward(h).squeeze_dim::<1>(1) // [batch]
            })
            .collect()
    }
}

impl<B: Backend> DensityRatioEstimator<B> for MlpDiscriminator<B> {
    fn name(&self) -> &str {
        "discriminator"
    }

    /// `ℓ = mean_k ℓ_k`.
    ///
    /// # Shapes
    /// - `input.features[k]`: `[batch, taps[k]]`, `input.sigma`: `[batch]`; returns `[batch]`
    fn log_ratio(&self, input: &RatioInput<B>) -> Tensor<B, 1> {
        let logits = self.head_logits(&input.features, input.sigma.clone());
        let n = logits.len() as f64;
        logits
            .into_iter()
            .reduce(|a, b| a + b)
            .expect("at least one head")
            .div_scalar(n)
    }
}

impl<B: AutodiffBackend> LearnedRatioEstimator<B> for MlpDiscriminator<B> {
    /// `mean softplus(C(fake)) + mean softplus(−C(real))`
    /// ([`fdistill_core::losses::discriminator_loss`]).
    fn loss(&self, real: &RatioInput<B>, fake: &RatioInput<B>) -> Tensor<B, 1> {
        discriminator_loss(self.log_ratio(fake), self.log_ratio(real))
    }

    fn check_input(&self, input: &RatioInput<B>) -> Result<(), String> {
        let taps = &self.config.taps;
        if input.features.len() != taps.len() {
            return Err(format!(
                "the feature network gives {} taps but the head was built for {} ({taps:?}); \
                 build it with MlpDiscriminatorConfig::new(<channels of each tap>)",
                input.features.len(),
                taps.len()
            ));
        }
        for (k, (f, &c)) in input.features.iter().zip(taps).enumerate() {
            match f {
                FeatureMap::Flat(t) if t.dims()[1] == c => {}
                FeatureMap::Flat(t) => {
                    return Err(format!(
                        "tap {k} has {} channels but the head expects {c}",
                        t.dims()[1]
                    ));
                }
                FeatureMap::Spatial(_) => {
                    return Err(format!(
                        "tap {k} is spatial [b, c, h, w]; MlpDiscriminator reads flat taps (use the conv head)"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::{Distribution, TensorData};
    use fdistill_divergence::softplus;

    type A = Autodiff<Flex>;

    fn input(f: Vec<Tensor<A, 2>>, sigma: Tensor<A, 1>) -> RatioInput<A> {
        RatioInput {
            x_noisy: Tensor::zeros([sigma.dims()[0], 1], &sigma.device()),
            sigma,
            features: f.into_iter().map(FeatureMap::Flat).collect(),
            labels: None,
        }
    }

    fn host(t: Tensor<A, 1>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec().unwrap()
    }

    #[test]
    fn logits_average_the_heads_and_the_loss_is_the_logistic_formula() {
        let _rng = crate::test_rng::seeded(100);
        let device = Default::default();
        let mut cfg = MlpDiscriminatorConfig::new(vec![3, 5]);
        cfg.hidden = 8;
        cfg.check().unwrap();
        let disc = cfg.init::<A>(&device);
        let f1 = Tensor::<A, 2>::random([4, 3], Distribution::Normal(0.0, 1.0), &device);
        let f2 = Tensor::<A, 2>::random([4, 5], Distribution::Normal(0.0, 1.0), &device);
        let sigma = Tensor::<A, 1>::from_data(TensorData::from([0.1f32, 1.0, 5.0, 80.0]), &device);
        let inp = input(vec![f1, f2], sigma.clone());
        disc.check_input(&inp).unwrap();
        let per_head = disc.head_logits(&inp.features, sigma);
        let (a, b) = (host(per_head[0].clone()), host(per_head[1].clone()));
        let l = host(disc.log_ratio(&inp));
        assert_eq!(l.len(), 4);
        for i in 0..4 {
            assert!((l[i] - (a[i] + b[i]) / 2.0).abs() < 1e-6);
        }
        // Loss with the same input as real and fake: mean softplus(ℓ) + mean softplus(−ℓ).
        let loss = host(disc.loss(&inp, &inp))[0];
        let expect: f64 = l.iter().map(|x| softplus(*x) + softplus(-x)).sum::<f64>() / 4.0;
        assert!((loss - expect).abs() < 1e-5, "{loss} vs {expect}");
    }

    #[test]
    fn mismatched_taps_are_errors_not_panics() {
        let _rng = crate::test_rng::seeded(101);
        let device = Default::default();
        let disc = MlpDiscriminatorConfig::new(vec![3]).init::<A>(&device);
        let sigma = Tensor::<A, 1>::ones([2], &device);
        let e = disc
            .check_input(&input(vec![Tensor::zeros([2, 4], &device)], sigma.clone()))
            .unwrap_err();
        assert!(
            e.contains("tap 0 has 4 channels but the head expects 3"),
            "{e}"
        );
        let e = disc.check_input(&input(vec![], sigma)).unwrap_err();
        assert!(e.contains("0 taps"), "{e}");
        assert!(MlpDiscriminatorConfig::new(vec![]).check().is_err());
    }

    /// Trained on N(+1, 1) (real) vs N(−1, 1) (fake) with the feature = x, the logit
    /// approaches the true log ratio ℓ*(x) = log N(x; 1, 1)/N(x; −1, 1) = 2x.
    #[test]
    fn training_recovers_the_log_ratio_of_two_gaussians() {
        let _rng = crate::test_rng::seeded(102);
        // Real N(1, 1), fake N(−1, 1): the optimal logit is ℓ*(x) = log p/q = 2x. Data come
        // from a seeded host RNG so the test does not depend on the order tests draw from
        // the backend's global RNG.
        use rand::SeedableRng;
        use rand_distr::{Distribution as _, StandardNormal};
        let device = Default::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut normal = |n: usize, mean: f32| -> Tensor<A, 2> {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    mean + z
                })
                .collect();
            Tensor::from_data(TensorData::new(v, [n, 1]), &device) // [n, 1]
        };
        let mut cfg = MlpDiscriminatorConfig::new(vec![1]);
        cfg.hidden = 32;
        let mut disc = cfg.init::<A>(&device);
        let mut opt = AdamConfig::new().init::<A, MlpDiscriminator<A>>();
        let sigma = Tensor::<A, 1>::ones([512], &device);
        for _ in 0..400 {
            let real = normal(512, 1.0);
            let fake = normal(512, -1.0);
            let loss = disc.loss(
                &input(vec![real], sigma.clone()),
                &input(vec![fake], sigma.clone()),
            );
            let grads = GradientsParams::from_grads(loss.backward(), &disc);
            disc = opt.step(5e-3, disc, grads);
        }
        // Where both densities have mass; the tails are learnt from few samples.
        let xs = [-0.5f32, 0.0, 0.5];
        let x = Tensor::<A, 2>::from_data(TensorData::new(xs.to_vec(), [3, 1]), &device);
        let l = host(disc.log_ratio(&input(vec![x], Tensor::ones([3], &device))));
        for (xi, li) in xs.iter().zip(&l) {
            assert!(
                (li - 2.0 * *xi as f64).abs() < 0.5,
                "ℓ({xi}) = {li}, expected {}",
                2.0 * xi
            );
        }
    }
}
