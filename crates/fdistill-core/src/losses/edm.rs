//! The EDM denoising loss (Karras et al. 2022, eq. 2 and Table 1; SPEC §5).
//!
//! $$ \mathcal L = \mathbb E_{\sigma, y, n}\Big[\lambda(\sigma)\\,
//!    \big\lVert D(y + \sigma n;\ \sigma) - y \big\rVert^2\Big],\qquad
//!    \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma \sigma_d)^2}, $$
//!
//! with `ln σ ~ N(P_mean, P_std²)` ([`crate::schedule::sample_training_sigma`]) and
//! `n ~ N(0, I)`. We average over batch *and* coordinates (EDM sums over coordinates; the
//! constant factor `dim` does not change Adam's updates and keeps the logged loss ≈ 1 at init).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::Denoiser;

/// EDM's loss weight, `λ(σ) = (σ² + σ_d²) / (σ σ_d)² = 1 / c_out(σ)²`.
pub fn edm_loss_weight(sigma: f64, sigma_data: f64) -> f64 {
    (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
}

/// [`edm_loss_weight`] for a batch of noise levels.
///
/// # Shapes
/// - `sigma`: `[batch]`; returns `[batch]`
pub fn edm_loss_weight_tensor<B: Backend>(sigma: Tensor<B, 1>, sigma_data: f64) -> Tensor<B, 1> {
    let s2 = sigma.powf_scalar(2.0); // σ²
    s2.clone()
        .add_scalar(sigma_data * sigma_data)
        .div(s2.mul_scalar(sigma_data * sigma_data))
}

/// The EDM loss for one batch: `mean_{b, j} λ(σ_b) (D(y_b + σ_b n_b; σ_b) − y_b)_j²`.
///
/// # Shapes
/// - `y` (clean data), `noise`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`
/// - returns the scalar loss, `[1]`
pub fn edm_loss<B: Backend, D: Denoiser<B> + ?Sized>(
    denoiser: &D,
    y: Tensor<B, 2>,
    sigma: Tensor<B, 1>,
    noise: Tensor<B, 2>,
    sigma_data: f64,
    labels: Option<Tensor<B, 1, Int>>,
) -> Tensor<B, 1> {
    let weight = edm_loss_weight_tensor(sigma.clone(), sigma_data).unsqueeze_dim::<2>(1); // [batch, 1]
    let x = y.clone() + noise * sigma.clone().unsqueeze_dim::<2>(1); // y + σn, [batch, dim]
    let denoised = denoiser.denoise(x, sigma, labels); // [batch, dim]
    (weight * (denoised - y).powf_scalar(2.0)).mean() // [1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    /// `D(x; σ) = a · x` with a learnable scalar `a`, for a hand-computed case.
    struct Scale<B: Backend>(Tensor<B, 1>);

    impl<B: Backend> Denoiser<B> for Scale<B> {
        fn dim(&self) -> usize {
            2
        }
        fn denoise(
            &self,
            x: Tensor<B, 2>,
            _sigma: Tensor<B, 1>,
            _labels: Option<Tensor<B, 1, Int>>,
        ) -> Tensor<B, 2> {
            x * self.0.clone().unsqueeze_dim::<2>(1)
        }
    }

    #[test]
    fn weight_closed_form() {
        // σ = 1, σ_d = 0.5: (1 + 0.25) / 0.25 = 5.
        assert!((edm_loss_weight(1.0, 0.5) - 5.0).abs() < 1e-15);
        let t = edm_loss_weight_tensor(
            Tensor::<Flex, 1>::from_floats([1.0, 0.1, 30.0], &Default::default()),
            0.5,
        )
        .into_data()
        .to_vec::<f32>()
        .unwrap();
        for (got, s) in t.iter().zip([1.0, 0.1, 30.0]) {
            let want = edm_loss_weight(s, 0.5);
            assert!((*got as f64 - want).abs() < 1e-5 * want, "{got} vs {want}");
        }
    }

    #[test]
    fn hand_computed_value_and_gradient() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        // y = [1, 2], σ = 1, n = [0.5, −1], σ_d = 0.5, D(x) = a x with a = 0.5:
        // x = [1.5, 1], D = [0.75, 0.5], D − y = [−0.25, −1.5], λ = 5,
        // loss = 5 · (0.0625 + 2.25) / 2 = 5.78125.
        // ∂loss/∂a = 5 · mean(2 (a x − y) x) = 5 · (2·(−0.25)·1.5 + 2·(−1.5)·1) / 2 = −9.375.
        let a = Tensor::<B, 1>::from_floats([0.5], &device).require_grad();
        let y = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &device);
        let n = Tensor::<B, 2>::from_data(TensorData::new(vec![0.5f32, -1.0], [1, 2]), &device);
        let sigma = Tensor::<B, 1>::from_floats([1.0], &device);
        let loss = edm_loss(&Scale(a.clone()), y, sigma, n, 0.5, None);
        let value = loss.clone().into_data().to_vec::<f32>().unwrap()[0];
        assert!((value - 5.78125).abs() < 1e-5, "{value}");
        let grads = loss.backward();
        let g = a.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap()[0];
        assert!((g + 9.375).abs() < 1e-4, "{g}");
    }
}
