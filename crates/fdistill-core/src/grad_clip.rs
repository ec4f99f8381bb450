//! Global gradient-norm clipping (PyTorch's `clip_grad_norm_` semantics).
//!
//! burn's `GradientClippingConfig::Norm` clips each parameter tensor on its own; the reference
//! code of DMD2, f-distill and VarDiU clips the norm of the whole gradient vector, which keeps
//! its direction. This is that operation.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

/// Sums `‖g_p‖²` over the parameters of a module that have a gradient.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.total += g.powi_scalar(2).sum().into_scalar().elem::<f64>();
        }
    }
}

/// Multiplies every gradient of a module's parameters by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global gradient norm `‖g‖ = √(Σ_p ‖g_p‖²)` over `module`'s parameters.
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: &GradientsParams,
    module: &M,
) -> f64 {
    let mut v = SquaredNorm { grads, total: 0.0 };
    module.visit(&mut v);
    v.total.sqrt()
}

/// Clips the global norm of `module`'s gradients to `max_norm`:
///
/// $$ g \leftarrow g \cdot \min\Big(1, \frac{c}{\lVert g\rVert + 10^{-6}}\Big), $$
///
/// and returns the norm **before** clipping (report it; a non-finite norm is the caller's
/// error to raise, never scrubbed here).
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: &mut GradientsParams,
    module: &M,
    max_norm: f64,
) -> f64 {
    let norm = grad_norm::<B, M>(grads, module);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        let mut s = Scale { grads, factor };
        module.visit(&mut s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    /// Loss `Σ W·x + Σ b` for a 2×2 linear layer on x = (3, 4): ∂/∂W_ij = x_i, ∂/∂b_j = 1,
    /// so ‖g‖² = 2·(9 + 16) + 2 = 52.
    fn grads() -> (Linear<B>, GradientsParams) {
        let device = Default::default();
        let lin = LinearConfig::new(2, 2).init::<B>(&device);
        let x = Tensor::<B, 2>::from_data(TensorData::from([[3.0f32, 4.0]]), &device);
        let loss = lin.forward(x).sum();
        let g = GradientsParams::from_grads(loss.backward(), &lin);
        (lin, g)
    }

    #[test]
    fn norm_is_the_global_l2_norm() {
        let (lin, g) = grads();
        assert!((grad_norm::<B, _>(&g, &lin) - 52f64.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn clipping_rescales_to_max_norm_and_keeps_direction() {
        let (lin, mut g) = grads();
        let before = clip_grad_norm::<B, _>(&mut g, &lin, 1.0);
        assert!((before - 52f64.sqrt()).abs() < 1e-5);
        assert!((grad_norm::<B, _>(&g, &lin) - 1.0).abs() < 1e-5);
        let gb: Vec<f32> = g
            .get::<Flex, 1>(lin.bias.as_ref().unwrap().id)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        let expect = 1.0 / 52f32.sqrt();
        assert!(gb.iter().all(|v| (v - expect).abs() < 1e-5), "{gb:?}");
        // Below the threshold nothing changes.
        let (lin, mut g) = grads();
        clip_grad_norm::<B, _>(&mut g, &lin, 100.0);
        assert!((grad_norm::<B, _>(&g, &lin) - 52f64.sqrt()).abs() < 1e-5);
    }
}
