//! VarDiU's amortised Gaussian posterior `q_φ(z | x_t, σ)` (Wang et al. 2025; SPEC §7).
//!
//! ```text
//! c_in = 1/√(σ² + σ_d²),  c_noise = ¼ ln σ                             (EDM scalings)
//! e = SiLU(W_e · sinusoidal(c_noise))                                  [batch, hidden]
//! h = SiLU(W_0 (c_in x_t) + e),  h = SiLU(W_l h + e), l = 1..depth−1    [batch, hidden]
//! [μ, ρ] = W_out h                                                     [batch, 2 · dim_z]
//! q_φ(z | x_t, σ) = N(z; μ, diag(σ e^ρ)²)                               (std scaled by σ)
//! ```
//!
//! Scaling the std by σ makes the posterior collapse at the rate the true posterior of a
//! smooth generator does as σ → 0 (`z ≈ G⁻¹(x_t)` with error `O(σ)`). `W_out` is
//! zero-initialised, so the initial posterior is `N(0, σ² I)`.

use crate::ops::silu;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use fdistill_core::vardiu_bound::LatentPosterior;
use serde::{Deserialize, Serialize};

use crate::edm::edm_scalings_tensor;
use crate::embedding::sinusoidal_embedding;
use crate::embedding::{check_embedding_period, check_embedding_size};
use crate::mlp::NetConfigError;

/// Configuration of [`GaussianPosterior`], saved with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianPosteriorConfig {
    /// Dimension of the noisy sample `x_t`.
    pub dim_x: usize,
    /// Dimension of the latent `z`.
    pub dim_z: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Number of hidden layers (≥ 1).
    pub depth: usize,
    /// Channels of the sinusoidal noise embedding (even).
    pub embedding_size: usize,
    /// Maximum period of the sinusoidal embedding.
    pub embedding_max_period: f64,
    /// Scale of the data: the input is `x_t / √(σ² + σ_d²)` (EDM's `c_in`).
    pub sigma_data: f64,
}

impl GaussianPosteriorConfig {
    /// Defaults (hidden 128, depth 3, 32 embedding channels) for `dim_x`-dimensional samples
    /// of scale `sigma_data` and a `dim_z`-dimensional latent.
    pub fn new(dim_x: usize, dim_z: usize, sigma_data: f64) -> Self {
        GaussianPosteriorConfig {
            dim_x,
            dim_z,
            hidden: 128,
            depth: 3,
            embedding_size: 32,
            embedding_max_period: 100.0,
            sigma_data,
        }
    }

    /// Validates the configuration; call before building the network.
    pub fn check(&self) -> Result<(), NetConfigError> {
        let err = |m: String| Err(NetConfigError(format!("posterior: {m}")));
        if self.dim_x == 0 || self.dim_z == 0 {
            return err(format!(
                "dim_x ({}) and dim_z ({}) must be ≥ 1",
                self.dim_x, self.dim_z
            ));
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
                "sigma_data must be a positive number (the data scale), got {}",
                self.sigma_data
            ));
        }
        Ok(())
    }

    /// Builds the network on `device`. Call [`check`](Self::check) first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GaussianPosterior<B> {
        let h = self.hidden;
        GaussianPosterior {
            input: LinearConfig::new(self.dim_x, h).init(device),
            noise: LinearConfig::new(self.embedding_size, h).init(device),
            hidden: (1..self.depth)
                .map(|_| LinearConfig::new(h, h).init(device))
                .collect(),
            output: LinearConfig::new(h, 2 * self.dim_z)
                .with_initializer(Initializer::Zeros)
                .init(device),
            config: self.clone(),
        }
    }
}

/// `½ ln 2π`, the per-coordinate constant of a Gaussian log density.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// The diagonal Gaussian log density, summed over coordinates:
///
/// $$ \log \mathcal N(z; \mu, \mathrm{diag}\\, s^2) = \sum_j \Big[-\tfrac12
///    \Big(\frac{z_j - \mu_j}{s_j}\Big)^2 - \log s_j - \tfrac12 \log 2\pi\Big],
///    \qquad \log s = \texttt{log\\_std}. $$
///
/// # Shapes
/// - `z`, `mean`, `log_std`: `[batch, dim]`; returns `[batch]`
pub fn diagonal_gaussian_log_prob<B: Backend>(
    z: Tensor<B, 2>,
    mean: Tensor<B, 2>,
    log_std: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [_, dim] = z.dims();
    let standardised = (z - mean) * log_std.clone().neg().exp(); // [batch, dim]
    let per_coord = standardised.powi_scalar(2).mul_scalar(-0.5) - log_std; // [batch, dim]
    per_coord
        .sum_dim(1) // [batch, 1]
        .squeeze_dim::<1>(1) // [batch]
        .sub_scalar(dim as f64 * HALF_LN_2PI)
}

/// The amortised posterior; see the module docs.
#[derive(Module, Debug)]
pub struct GaussianPosterior<B: Backend> {
    /// `W_0`: scaled sample → hidden.
    pub input: Linear<B>,
    /// `W_e`: noise embedding → hidden.
    pub noise: Linear<B>,
    /// `W_1 … W_{depth−1}`.
    pub hidden: Vec<Linear<B>>,
    /// `W_out`: hidden → (mean, log-std offset), zero-initialised.
    pub output: Linear<B>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: GaussianPosteriorConfig,
}

impl<B: Backend> GaussianPosterior<B> {
    /// Mean `μ` and log-std `log σ + ρ` of `q_φ(z | x_t, σ)`.
    ///
    /// # Shapes
    /// - `x_t`: `[batch, dim_x]`, `sigma`: `[batch]`
    /// - returns `(mean [batch, dim_z], log_std [batch, dim_z])`
    pub fn forward(&self, x_t: Tensor<B, 2>, sigma: Tensor<B, 1>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let c = &self.config;
        let (_, _, c_in, c_noise) = edm_scalings_tensor(sigma.clone(), c.sigma_data);
        let e = silu(self.noise.forward(sinusoidal_embedding(
            c_noise,
            c.embedding_size,
            c.embedding_max_period,
        ))); // [batch, hidden]
        let mut h = silu(self.input.forward(x_t * c_in.unsqueeze_dim::<2>(1)) + e.clone()); // [batch, hidden]
        for layer in &self.hidden {
            h = silu(layer.forward(h) + e.clone()); // [batch, hidden]
        }
        let out = self.output.forward(h); // [batch, 2 · dim_z]
        let mean = out.clone().narrow(1, 0, c.dim_z); // [batch, dim_z]
        let rho = out.narrow(1, c.dim_z, c.dim_z); // [batch, dim_z]
        let log_std = rho + sigma.log().unsqueeze_dim::<2>(1); // [batch, dim_z]
        (mean, log_std)
    }

    /// `log q_φ(z | x_t, σ)` ([`diagonal_gaussian_log_prob`] of [`forward`](Self::forward)).
    ///
    /// # Shapes
    /// - `z`: `[batch, dim_z]`, `x_t`: `[batch, dim_x]`, `sigma`: `[batch]`; returns `[batch]`
    pub fn log_prob(
        &self,
        z: Tensor<B, 2>,
        x_t: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let (mean, log_std) = self.forward(x_t, sigma);
        diagonal_gaussian_log_prob(z, mean, log_std)
    }
}

impl<B: Backend> LatentPosterior<B> for GaussianPosterior<B> {
    fn log_prob(&self, z: Tensor<B, 2>, x_t: Tensor<B, 2>, sigma: Tensor<B, 1>) -> Tensor<B, 1> {
        GaussianPosterior::log_prob(self, z, x_t, sigma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    fn small() -> GaussianPosteriorConfig {
        let mut cfg = GaussianPosteriorConfig::new(3, 2, 1.5);
        cfg.hidden = 16;
        cfg.depth = 2;
        cfg
    }

    fn to_vec(t: Tensor<B, 1>) -> Vec<f64> {
        t.into_data().convert::<f64>().to_vec().unwrap()
    }

    #[test]
    fn log_prob_matches_the_closed_form_gaussian() {
        let device = Default::default();
        let z = [[0.3f32, -1.0], [2.0, 0.5]];
        let mu = [[0.0f32, 0.2], [-1.0, 0.5]];
        let ls = [[0.1f32, -0.7], [1.2, 0.0]];
        let t = |v: [[f32; 2]; 2]| Tensor::<B, 2>::from_data(TensorData::from(v), &device);
        let got = to_vec(diagonal_gaussian_log_prob(t(z), t(mu), t(ls)));
        for b in 0..2 {
            // Independent: product of the two 1-D densities exp(−(z−μ)²/2s²)/(s√(2π)).
            let density: f64 = (0..2)
                .map(|j| {
                    let s = (ls[b][j] as f64).exp();
                    let d = (z[b][j] - mu[b][j]) as f64;
                    (-d * d / (2.0 * s * s)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
                })
                .product();
            assert!(
                (got[b] - density.ln()).abs() < 1e-5,
                "{b}: {} vs {}",
                got[b],
                density.ln()
            );
        }
    }

    #[test]
    fn shapes_and_initial_posterior_is_n_0_sigma2() {
        let _rng = crate::test_rng::seeded(100);
        let device = Default::default();
        let cfg = small();
        cfg.check().unwrap();
        let net = cfg.init::<B>(&device);
        let x = Tensor::<B, 2>::random([4, 3], Distribution::Normal(0.0, 3.0), &device);
        let sigma = Tensor::<B, 1>::from_floats([0.01, 0.5, 2.0, 40.0], &device);
        let (mean, log_std) = net.forward(x.clone(), sigma.clone());
        assert_eq!(mean.dims(), [4, 2]);
        assert_eq!(log_std.dims(), [4, 2]);
        // W_out = 0: μ = 0 and std = σ.
        assert_eq!(mean.abs().max().into_scalar(), 0.0);
        let expect = sigma.clone().log().unsqueeze_dim::<2>(1).repeat_dim(1, 2);
        log_std
            .into_data()
            .assert_approx_eq::<f32>(&expect.into_data(), Default::default());
        let z = Tensor::<B, 2>::random([4, 2], Distribution::Normal(0.0, 1.0), &device);
        let lp = to_vec(net.log_prob(z.clone(), x, sigma.clone()));
        assert_eq!(lp.len(), 4);
        let zs: Vec<f64> = z.into_data().convert::<f64>().to_vec().unwrap();
        let ss = to_vec(sigma);
        for b in 0..4 {
            let expect: f64 = (0..2)
                .map(|j| {
                    let v = zs[2 * b + j] / ss[b];
                    -0.5 * v * v - ss[b].ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
                })
                .sum();
            assert!((lp[b] - expect).abs() < 1e-3 * (1.0 + expect.abs()), "{b}");
        }
    }

    #[test]
    fn bad_configs_are_rejected_with_the_field() {
        let mut cfg = small();
        cfg.dim_z = 0;
        assert!(cfg.check().unwrap_err().to_string().contains("dim_z"));
        let mut cfg = small();
        cfg.embedding_size = 5;
        assert!(cfg.check().unwrap_err().to_string().contains("even"));
        let mut cfg = small();
        cfg.sigma_data = 0.0;
        assert!(cfg.check().unwrap_err().to_string().contains("sigma_data"));
    }
}
