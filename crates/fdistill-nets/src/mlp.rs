//! An EDM-preconditioned MLP denoiser for low-dimensional data (SPEC §5).
//!
//! ```text
//! D(x; σ, y) = c_skip x + c_out F(c_in x; c_noise, y)
//! F:  e = SiLU(W_e · sinusoidal(c_noise) [+ label embedding y])        [batch, hidden]
//!     h = SiLU(W_0 (c_in x) + e)                                      [batch, hidden]
//!     h = SiLU(W_l h + e),  l = 1..depth−1                            [batch, hidden]
//!     F = W_out h   (W_out zero-initialised, so D = c_skip x at init)  [batch, dim]
//! ```
//!
//! The last hidden activation `h` is the feature tap a discriminator head reads
//! ([`MlpDenoiser::forward_with_features`]).

use crate::ops::silu;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use fdistill_core::EdmDenoiser;
use fdistill_core::ratio::FeatureMap;
use fdistill_core::{Denoiser, FeatureDenoiser};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::edm::edm_scalings_tensor;
use crate::embedding::sinusoidal_embedding;
use crate::embedding::{check_embedding_period, check_embedding_size};

/// An invalid network configuration.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("invalid MLP denoiser config: {0}")]
pub struct NetConfigError(pub String);

/// Configuration of [`MlpDenoiser`], saved in the run directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpDenoiserConfig {
    /// Data dimension.
    pub dim: usize,
    /// Hidden width.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Number of hidden layers (≥ 1).
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Channels of the sinusoidal noise embedding (even).
    #[serde(default = "default_embedding_size")]
    pub embedding_size: usize,
    /// Maximum period `P` of the sinusoidal embedding.
    #[serde(default = "default_max_period")]
    pub embedding_max_period: f64,
    /// EDM's σ_data: the data standard deviation the preconditioning assumes.
    pub sigma_data: f64,
    /// Number of classes for a label embedding; `None` for an unconditional net.
    #[serde(default)]
    pub n_classes: Option<usize>,
}

fn default_hidden() -> usize {
    128
}
fn default_depth() -> usize {
    3
}
fn default_embedding_size() -> usize {
    32
}
fn default_max_period() -> f64 {
    100.0
}

impl MlpDenoiserConfig {
    /// Defaults for a `dim`-dimensional data set with standard deviation `sigma_data`.
    pub fn new(dim: usize, sigma_data: f64) -> Self {
        MlpDenoiserConfig {
            dim,
            hidden: default_hidden(),
            depth: default_depth(),
            embedding_size: default_embedding_size(),
            embedding_max_period: default_max_period(),
            sigma_data,
            n_classes: None,
        }
    }

    /// Validates the configuration; call before building the network.
    pub fn check(&self) -> Result<(), NetConfigError> {
        let err = |m: String| Err(NetConfigError(m));
        if self.dim == 0 {
            return err("dim must be ≥ 1".into());
        }
        if self.hidden == 0 || self.depth == 0 {
            return err(format!(
                "hidden ({}) and depth ({}) must be ≥ 1",
                self.hidden, self.depth
            ));
        }
        if let Err(m) = check_embedding_size(self.embedding_size) {
            return err(m);
        }
        if let Err(m) = check_embedding_period(self.embedding_max_period) {
            return err(m);
        }
        if !(self.sigma_data.is_finite() && self.sigma_data > 0.0) {
            return err(format!(
                "sigma_data must be a positive number (the data std), got {}",
                self.sigma_data
            ));
        }
        if self.n_classes == Some(0) {
            return err("n_classes must be ≥ 1 or absent".into());
        }
        Ok(())
    }

    /// Builds the network on `device`. Call [`check`](Self::check) first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MlpDenoiser<B> {
        let h = self.hidden;
        MlpDenoiser {
            input: LinearConfig::new(self.dim, h).init(device),
            noise: LinearConfig::new(self.embedding_size, h).init(device),
            label: self
                .n_classes
                .map(|n| EmbeddingConfig::new(n, h).init(device)),
            hidden: (1..self.depth)
                .map(|_| LinearConfig::new(h, h).init(device))
                .collect(),
            output: LinearConfig::new(h, self.dim)
                .with_initializer(Initializer::Zeros)
                .init(device),
            config: self.clone(),
        }
    }
}

/// The EDM-preconditioned MLP denoiser; see the module docs.
#[derive(Module, Debug)]
pub struct MlpDenoiser<B: Backend> {
    /// `W_0`: data → hidden.
    pub input: Linear<B>,
    /// `W_e`: noise embedding → hidden.
    pub noise: Linear<B>,
    /// Label embedding, if conditional.
    pub label: Option<Embedding<B>>,
    /// `W_1 … W_{depth−1}`.
    pub hidden: Vec<Linear<B>>,
    /// `W_out`: hidden → data, zero-initialised.
    pub output: Linear<B>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: MlpDenoiserConfig,
}

impl<B: Backend> MlpDenoiser<B> {
    /// The raw network `F(c_in x; c_noise, y)` and its last hidden activation.
    ///
    /// # Shapes
    /// - `x_in` (already scaled by c_in): `[batch, dim]`, `c_noise`: `[batch]`,
    ///   `labels`: `[batch]`
    /// - returns `(F [batch, dim], features [batch, hidden])`
    fn raw(
        &self,
        x_in: Tensor<B, 2>,
        c_noise: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let c = &self.config;
        let mut e = self.noise.forward(sinusoidal_embedding(
            c_noise,
            c.embedding_size,
            c.embedding_max_period,
        )); // [batch, hidden]
        if let (Some(table), Some(y)) = (&self.label, labels) {
            let [batch] = y.dims();
            let emb = table.forward(y.unsqueeze_dim::<2>(1)); // [batch, 1, hidden]
            e = e + emb.reshape([batch, c.hidden]); // [batch, hidden]
        }
        let e = silu(e);
        let mut h = silu(self.input.forward(x_in) + e.clone()); // [batch, hidden]
        for layer in &self.hidden {
            h = silu(layer.forward(h) + e.clone()); // [batch, hidden]
        }
        (self.output.forward(h.clone()), h)
    }

    /// `D(x; σ, y)` and the feature tap.
    ///
    /// # Shapes
    /// - `x`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`
    /// - returns `(denoised [batch, dim], features [batch, hidden])`
    pub fn forward_with_features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (c_skip, c_out, c_in, c_noise) = edm_scalings_tensor(sigma, self.config.sigma_data);
        let col = |t: Tensor<B, 1>| t.unsqueeze_dim::<2>(1); // [batch, 1]
        let (f, features) = self.raw(x.clone() * col(c_in), c_noise, labels);
        let denoised = x * col(c_skip) + f * col(c_out); // [batch, dim]
        (denoised, features)
    }

    /// `D(x; σ, y)`.
    ///
    /// # Shapes
    /// - `x`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`; returns `[batch, dim]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        self.forward_with_features(x, sigma, labels).0
    }
}

impl<B: Backend> Denoiser<B> for MlpDenoiser<B> {
    fn dim(&self) -> usize {
        self.config.dim
    }

    fn denoise(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        self.forward(x, sigma, labels)
    }
}

/// One flat tap: the last hidden activation `[batch, hidden]`.
impl<B: Backend> FeatureDenoiser<B> for MlpDenoiser<B> {
    fn denoise_with_features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Vec<FeatureMap<B>>) {
        let (denoised, features) = self.forward_with_features(x, sigma, labels);
        (denoised, vec![FeatureMap::Flat(features)])
    }
}

impl<B: Backend> EdmDenoiser<B> for MlpDenoiser<B> {
    fn sigma_data(&self) -> f64 {
        self.config.sigma_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    #[test]
    fn shapes_and_zero_init_output() {
        let _rng = crate::test_rng::seeded(100);
        let device = Default::default();
        let mut cfg = MlpDenoiserConfig::new(3, 0.5);
        cfg.hidden = 16;
        cfg.n_classes = Some(4);
        cfg.check().unwrap();
        let net = cfg.init::<B>(&device);
        let x = Tensor::<B, 2>::random([5, 3], Distribution::Normal(0.0, 1.0), &device);
        let sigma = Tensor::<B, 1>::from_floats([0.1, 0.5, 1.0, 2.0, 10.0], &device);
        let labels = Tensor::<B, 1, Int>::from_data(TensorData::from([0i64, 1, 2, 3, 0]), &device);
        let (d, f) = net.forward_with_features(x.clone(), sigma.clone(), Some(labels));
        assert_eq!(d.dims(), [5, 3]);
        assert_eq!(f.dims(), [5, 16]);
        // W_out = 0 at init, so D = c_skip x = σ_d² / (σ² + σ_d²) x.
        let c_skip = sigma
            .powf_scalar(2.0)
            .add_scalar(0.25)
            .recip()
            .mul_scalar(0.25);
        let expect = x * c_skip.unsqueeze_dim::<2>(1);
        d.into_data()
            .assert_approx_eq::<f32>(&expect.into_data(), Default::default());
    }

    #[test]
    fn a_short_teacher_run_lower_the_loss_and_the_ema_tracks() {
        let _rng = crate::test_rng::seeded(101);
        use burn::backend::Autodiff;
        use fdistill_data::TrainingData;
        use fdistill_train::teacher::{TeacherConfig, train_teacher};
        type A = Autodiff<Flex>;
        let device = Default::default();
        let mut cfg = MlpDenoiserConfig::new(2, 2.5);
        cfg.hidden = 32;
        cfg.depth = 2;
        let data = TrainingData::Mixture(fdistill_core::targets::ring8_unbalanced());
        let config = TeacherConfig {
            steps: 150,
            batch_size: 256,
            lr: 5e-3,
            ..TeacherConfig::default()
        };
        let mut losses = Vec::new();
        let state = train_teacher(cfg.init::<A>(&device), &data, &config, &device, |m, _| {
            losses.push(m.loss);
            Ok(())
        })
        .unwrap();
        let first = losses[..10].iter().sum::<f64>() / 10.0;
        let last = losses[140..].iter().sum::<f64>() / 10.0;
        assert!(last < 0.9 * first, "{first} → {last}");
        // The EMA moved away from the initial zero output weights.
        let w = state.ema.output.weight.val().abs().sum().into_scalar();
        assert!(w > 0.0);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut cfg = MlpDenoiserConfig::new(2, 0.5);
        cfg.embedding_size = 7;
        assert!(cfg.check().unwrap_err().to_string().contains("even"));
        let cfg = MlpDenoiserConfig::new(2, -1.0);
        assert!(cfg.check().unwrap_err().to_string().contains("sigma_data"));
        let cfg = MlpDenoiserConfig::new(0, 1.0);
        assert!(cfg.check().is_err());
    }
}
