//! The gradient-injection surrogate of SPEC §4.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Gradient injection: a scalar whose gradient with respect to `x` is `g / numel`,
///
/// $$ L(x) = \tfrac12\\, \mathrm{mean}\big((x - \mathrm{sg}(x - g))^2\big),\qquad
///    \nabla_x L = \frac{x - (x - g)}{\mathrm{numel}} = \frac{g}{\mathrm{numel}}, $$
///
/// where `sg` is the stop-gradient. Its value is `½ mean(g²)`. The trainer builds `g`
/// (detached: `w · h · (d_F − d_T)`) and back-propagates this loss into the generator.
///
/// # Shapes
/// - `x`: `[batch, dim]`, `g`: `[batch, dim]`
/// - returns `[1]`
pub fn inject_gradient<B: Backend>(x: Tensor<B, 2>, g: Tensor<B, 2>) -> Tensor<B, 1> {
    let target = (x.clone() - g).detach(); // [batch, dim]
    (x - target).powi_scalar(2).mean().mul_scalar(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    #[test]
    fn value_is_half_mean_square_of_g() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(TensorData::from([[1.0f32, 2.0], [3.0, 4.0]]), &device);
        let g = Tensor::<B, 2>::from_data(TensorData::from([[0.5f32, -1.0], [2.0, 0.0]]), &device);
        let v: Vec<f32> = inject_gradient(x, g).into_data().to_vec().unwrap();
        // ½ · (0.25 + 1 + 4 + 0) / 4
        assert!((v[0] - 0.65625).abs() < 1e-6);
    }

    /// Analytic derivative: ∂L/∂x = (x − sg(x − g)) / numel = g / numel, here numel = 6.
    #[test]
    fn gradient_wrt_x_is_g_over_numel() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(
            TensorData::from([[0.3f32, -1.2, 4.0], [2.0, 0.0, -0.7]]),
            &device,
        )
        .require_grad();
        let g_vals = [[1.5f32, -2.0, 0.25], [0.0, 3.0, -6.0]];
        let g = Tensor::<B, 2>::from_data(TensorData::from(g_vals), &device);
        let grads = inject_gradient(x.clone(), g).backward();
        let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let expect: Vec<f32> = g_vals.iter().flatten().map(|v| v / 6.0).collect();
        for (a, b) in dx.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-6, "{dx:?} vs {expect:?}");
        }
    }
}
