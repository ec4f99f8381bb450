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
//!
//! As a one-step generator the network may take a latent wider than the data
//! ([`MlpDenoiser::with_latent_extra`]): `z = (z_d, z_e) ∈ R^{dim + k}`, and `z_e` enters the
//! first hidden layer through a zero-initialised `W_z`, so the widened generator starts as the
//! teacher copy it was made from:
//!
//! ```text
//! G(z) = c_skip x + c_out F(c_in x; c_noise, y; z_e),   x = σ_init z_d,  σ = σ_init
//!     h = SiLU(W_0 (c_in x) + W_z z_e + e)                            [batch, hidden]
//! ```

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
    /// Extra latent inputs of a one-step generator (`W_z`: `latent_extra` → hidden; 0 for a
    /// denoiser). See [`MlpDenoiser::with_latent_extra`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latent_extra: usize,
}

fn is_zero(k: &usize) -> bool {
    *k == 0
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
            latent_extra: 0,
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
            latent: latent_layer(self.latent_extra, h, device),
            config: self.clone(),
        }
    }
}

/// `W_z`: extra latent → hidden, zero-initialised and without bias (none when `extra` is 0).
fn latent_layer<B: Backend>(extra: usize, hidden: usize, device: &B::Device) -> Option<Linear<B>> {
    (extra > 0).then(|| {
        LinearConfig::new(extra, hidden)
            .with_bias(false)
            .with_initializer(Initializer::Zeros)
            .init(device)
    })
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
    /// `W_z`: extra generator latent → hidden, zero-initialised (generators made with
    /// [`MlpDenoiser::with_latent_extra`] only).
    pub latent: Option<Linear<B>>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: MlpDenoiserConfig,
}

impl<B: Backend> MlpDenoiser<B> {
    /// A one-step generator with `extra` latent inputs beyond the data's `dim`, made from this
    /// network (usually the teacher's): the new `W_z` is zero, so the result generates exactly
    /// what this network does from the latent's first `dim` columns until `W_z` is trained.
    /// A network that already has extra inputs keeps its `W_z` when `extra` is unchanged.
    pub fn with_latent_extra(self, extra: usize, device: &B::Device) -> Self {
        if extra == self.config.latent_extra {
            return self;
        }
        MlpDenoiser {
            latent: latent_layer(extra, self.config.hidden, device),
            config: MlpDenoiserConfig {
                latent_extra: extra,
                ..self.config
            },
            ..self
        }
    }

    /// The raw network `F(c_in x; c_noise, y [; z_e])` and its last hidden activation.
    ///
    /// # Shapes
    /// - `x_in` (already scaled by c_in): `[batch, dim]`, `c_noise`: `[batch]`,
    ///   `labels`: `[batch]`, `z_extra`: `[batch, latent_extra]`
    /// - returns `(F [batch, dim], features [batch, hidden])`
    fn raw(
        &self,
        x_in: Tensor<B, 2>,
        c_noise: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
        z_extra: Option<Tensor<B, 2>>,
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
        let mut pre = self.input.forward(x_in) + e.clone(); // [batch, hidden]
        if let (Some(w_z), Some(z_e)) = (&self.latent, z_extra) {
            pre = pre + w_z.forward(z_e); // [batch, hidden]
        }
        let mut h = silu(pre); // [batch, hidden]
        for layer in &self.hidden {
            h = silu(layer.forward(h) + e.clone()); // [batch, hidden]
        }
        (self.output.forward(h.clone()), h)
    }

    /// EDM's preconditioning around [`raw`](Self::raw):
    /// `c_skip x + c_out F(c_in x; c_noise, y [; z_e])`, and the feature tap.
    ///
    /// # Shapes
    /// - `x`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`,
    ///   `z_extra`: `[batch, latent_extra]`
    /// - returns `(denoised [batch, dim], features [batch, hidden])`
    fn preconditioned(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
        z_extra: Option<Tensor<B, 2>>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (c_skip, c_out, c_in, c_noise) = edm_scalings_tensor(sigma, self.config.sigma_data);
        let col = |t: Tensor<B, 1>| t.unsqueeze_dim::<2>(1); // [batch, 1]
        let (f, features) = self.raw(x.clone() * col(c_in), c_noise, labels, z_extra);
        let denoised = x * col(c_skip) + f * col(c_out); // [batch, dim]
        (denoised, features)
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
        self.preconditioned(x, sigma, labels, None)
    }

    /// The one-step generator `G(z)` of the module docs (this network's
    /// `Denoiser::generate`); without extra latent inputs it is `D(σ_init z; σ_init)`.
    ///
    /// # Shapes
    /// - `z`: `[batch, dim + latent_extra]`, `labels`: `[batch]`; returns `[batch, dim]`
    ///
    /// # Panics
    /// If `z` is not `dim + latent_extra` wide (a caller's shape bug).
    pub fn generate_one_step(
        &self,
        z: Tensor<B, 2>,
        sigma_init: f64,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        let [batch, width] = z.dims();
        let (dim, extra) = (self.config.dim, self.config.latent_extra);
        assert_eq!(
            width,
            dim + extra,
            "the generator's latent is {dim} + {extra} wide, z is {width}"
        );
        let sigma = Tensor::<B, 1>::full([batch], sigma_init, &z.device());
        let x = z.clone().narrow(1, 0, dim).mul_scalar(sigma_init); // [batch, dim]
        let z_extra = (extra > 0).then(|| z.narrow(1, dim, extra)); // [batch, extra]
        self.preconditioned(x, sigma, labels, z_extra).0
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

    fn latent_dim(&self) -> usize {
        self.config.dim + self.config.latent_extra
    }

    fn generate(
        &self,
        z: Tensor<B, 2>,
        sigma_init: f64,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        self.generate_one_step(z, sigma_init, labels)
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

    /// A random-weight 2-D net with a nonzero output layer (so `F` matters), the same for the
    /// same `seed`. The caller holds [`crate::test_rng::seeded`]'s guard.
    fn random_net(seed: u64, extra: usize) -> MlpDenoiser<B> {
        let device = Default::default();
        B::seed(&device, seed);
        let mut cfg = MlpDenoiserConfig::new(2, 1.5);
        cfg.hidden = 16;
        cfg.depth = 2;
        let mut net = crate::init_now(cfg.init::<B>(&device));
        net.output.weight = net
            .output
            .weight
            .map(|w| w.random_like(Distribution::Normal(0.0, 0.5)));
        net.with_latent_extra(extra, &device)
    }

    fn values(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// `W_z` starts at zero: the widened generator generates from `z`'s first `dim` columns
    /// exactly what its source does, whatever the extra columns hold.
    #[test]
    fn a_widened_generator_starts_as_its_source() {
        let _rng = crate::test_rng::seeded(102);
        let source = random_net(102, 0);
        let widened = source.clone().with_latent_extra(3, &Default::default());
        assert_eq!((source.latent_dim(), widened.latent_dim()), (2, 5));
        assert_eq!(widened.dim(), 2);
        let device = Default::default();
        let z = Tensor::<B, 2>::random([6, 5], Distribution::Normal(0.0, 1.0), &device);
        let want = source.generate(z.clone().narrow(1, 0, 2), 4.0, None);
        let got = widened.generate(z, 4.0, None);
        assert_eq!(values(got), values(want));
        // Without extra inputs `generate` is D(σ_init z; σ_init) (the trait's default).
        let z = Tensor::<B, 2>::random([4, 2], Distribution::Normal(0.0, 1.0), &device);
        let sigma = Tensor::<B, 1>::full([4], 4.0, &device);
        let want = source.denoise(z.clone().mul_scalar(4.0), sigma, None);
        assert_eq!(values(source.generate(z, 4.0, None)), values(want));
    }

    /// With `W_z ≠ 0` each sample's extra latent adds `W_z z_e` to the first layer's
    /// pre-activation: the same as a denoiser whose first-layer bias is shifted by it.
    #[test]
    fn the_extra_latent_shifts_the_first_layer() {
        let _rng = crate::test_rng::seeded(103);
        let device = Default::default();
        let mut g = random_net(103, 3);
        let w_z = Tensor::<B, 2>::random([3, 16], Distribution::Normal(0.0, 1.0), &device);
        g.latent.as_mut().unwrap().weight = burn::module::Param::from_tensor(w_z.clone());
        let z = Tensor::<B, 2>::random([5, 5], Distribution::Normal(0.0, 1.0), &device);
        let got = values(g.generate(z.clone(), 3.0, None));
        assert_ne!(
            got,
            values(random_net(103, 0).generate(z.clone().narrow(1, 0, 2), 3.0, None)),
            "W_z must change the output"
        );
        for row in 0..5 {
            let zr = z.clone().narrow(0, row, 1); // [1, 5]
            let shift = zr.clone().narrow(1, 2, 3).matmul(w_z.clone()); // [1, 16]
            let mut plain = random_net(103, 0);
            let bias = plain.input.bias.take().unwrap().val(); // [16]
            plain.input.bias = Some(burn::module::Param::from_tensor(bias + shift.reshape([16])));
            let sigma = Tensor::<B, 1>::full([1], 3.0, &device);
            let want = plain.denoise(zr.narrow(1, 0, 2).mul_scalar(3.0), sigma, None);
            let want = values(want);
            for (a, b) in got[2 * row..2 * row + 2].iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                    "row {row}: {a} vs {b}"
                );
            }
        }
    }

    /// Trained through `generate`, `W_z` receives a gradient (it starts at zero, so only the
    /// gradient can move it).
    #[test]
    fn the_extra_latent_weights_take_gradients() {
        use burn::backend::Autodiff;
        type A = Autodiff<Flex>;
        let _rng = crate::test_rng::seeded(104);
        let device = Default::default();
        let mut cfg = MlpDenoiserConfig::new(2, 1.5);
        cfg.hidden = 8;
        cfg.depth = 2;
        let mut net = cfg.init::<A>(&device);
        net.output.weight = net
            .output
            .weight
            .map(|w| w.random_like(Distribution::Normal(0.0, 0.5)));
        let g = net.with_latent_extra(2, &device);
        let z = Tensor::<A, 2>::random([7, 4], Distribution::Normal(0.0, 1.0), &device);
        let grads = g.generate(z, 2.0, None).powf_scalar(2.0).sum().backward();
        let norms = crate::grad_check::gradient_norms(&g, &grads);
        let w_z = norms.iter().find(|(n, _)| n.starts_with("latent")).unwrap();
        assert!(w_z.1 > 0.0, "{norms:?}");
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
