//! A one-step MLP generator `x_0 = G_θ(z)` for low-dimensional targets (VarDiU's MoG-40
//! generator is an MLP from the latent to the sample):
//!
//! ```text
//! h = SiLU(W_0 z),  h = SiLU(W_l h), l = 1..depth−1      [batch, hidden]
//! G(z) = s · W_out h                                      [batch, dim_x]
//! ```
//!
//! The output scale `s` (the data scale) keeps the network's own output O(1) for targets
//! spread over `[−40, 40]²`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::mlp::NetConfigError;

/// Configuration of [`MlpGenerator`], saved with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpGeneratorConfig {
    /// Latent dimension.
    pub dim_z: usize,
    /// Sample dimension.
    pub dim_x: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Number of hidden layers (≥ 1).
    pub depth: usize,
    /// Output scale `s`.
    pub output_scale: f64,
}

impl MlpGeneratorConfig {
    /// Hidden 128, depth 3.
    pub fn new(dim_z: usize, dim_x: usize, output_scale: f64) -> Self {
        MlpGeneratorConfig {
            dim_z,
            dim_x,
            hidden: 128,
            depth: 3,
            output_scale,
        }
    }

    /// Validates the configuration; call before building the network.
    pub fn check(&self) -> Result<(), NetConfigError> {
        let err = |m: String| Err(NetConfigError(format!("generator: {m}")));
        if self.dim_z == 0 || self.dim_x == 0 || self.hidden == 0 || self.depth == 0 {
            return err(format!(
                "dim_z ({}), dim_x ({}), hidden ({}) and depth ({}) must all be ≥ 1",
                self.dim_z, self.dim_x, self.hidden, self.depth
            ));
        }
        if !(self.output_scale.is_finite() && self.output_scale > 0.0) {
            return err(format!(
                "output_scale must be a positive number (the data scale), got {}",
                self.output_scale
            ));
        }
        Ok(())
    }

    /// Builds the network on `device`. Call [`check`](Self::check) first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MlpGenerator<B> {
        let h = self.hidden;
        MlpGenerator {
            input: LinearConfig::new(self.dim_z, h).init(device),
            hidden: (1..self.depth)
                .map(|_| LinearConfig::new(h, h).init(device))
                .collect(),
            output: LinearConfig::new(h, self.dim_x).init(device),
            config: self.clone(),
        }
    }
}

/// The MLP generator; see the module docs.
#[derive(Module, Debug)]
pub struct MlpGenerator<B: Backend> {
    /// `W_0`: latent → hidden.
    pub input: Linear<B>,
    /// `W_1 … W_{depth−1}`.
    pub hidden: Vec<Linear<B>>,
    /// `W_out`: hidden → sample.
    pub output: Linear<B>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: MlpGeneratorConfig,
}

impl<B: Backend> MlpGenerator<B> {
    /// `x_0 = G_θ(z)`.
    ///
    /// # Shapes
    /// - `z`: `[batch, dim_z]`; returns `[batch, dim_x]`
    pub fn forward(&self, z: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut h = silu(self.input.forward(z)); // [batch, hidden]
        for layer in &self.hidden {
            h = silu(layer.forward(h)); // [batch, hidden]
        }
        self.output
            .forward(h) // [batch, dim_x]
            .mul_scalar(self.config.output_scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    type B = Flex;

    #[test]
    fn shapes_and_output_scale() {
        let device = Default::default();
        let mut cfg = MlpGeneratorConfig::new(2, 3, 1.0);
        cfg.hidden = 8;
        cfg.check().unwrap();
        let net = cfg.init::<B>(&device);
        let z = Tensor::<B, 2>::random([5, 2], Distribution::Normal(0.0, 1.0), &device);
        let x = net.forward(z.clone());
        assert_eq!(x.dims(), [5, 3]);
        // Same weights, scale 20: exactly 20 times the output.
        let mut scaled = net.clone();
        scaled.config.output_scale = 20.0;
        scaled
            .forward(z)
            .into_data()
            .assert_approx_eq::<f32>(&x.mul_scalar(20.0).into_data(), Default::default());
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut cfg = MlpGeneratorConfig::new(2, 2, 1.0);
        cfg.depth = 0;
        assert!(cfg.check().unwrap_err().to_string().contains("depth"));
        let cfg = MlpGeneratorConfig::new(2, 2, f64::NAN);
        assert!(
            cfg.check()
                .unwrap_err()
                .to_string()
                .contains("output_scale")
        );
    }
}
