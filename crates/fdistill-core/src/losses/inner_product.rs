//! The Diff-Instruct surrogate of SPEC §4 (Luo et al. 2023).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Inner-product surrogate `⟨x, sg(g)⟩`, averaged over every element:
///
/// $$ L(x) = \frac{1}{\mathrm{numel}} \sum_{i,j} x_{ij}\\, \mathrm{sg}(g)_{ij},\qquad
///    \nabla_x L = \frac{g}{\mathrm{numel}}. $$
///
/// Same gradient as [`inject_gradient()`](super::inject_gradient()); the value differs (it is
/// linear in `x`, so its value tracks the generator's output, not `‖g‖²`). Diff-Instruct
/// uses it with `g = d_F − d_T` and no normaliser.
///
/// # Shapes
/// - `x`, `g`: `[batch, dim]`; returns `[1]`
pub fn inner_product_surrogate<B: Backend>(x: Tensor<B, 2>, g: Tensor<B, 2>) -> Tensor<B, 1> {
    (x * g.detach()).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    /// Analytic derivative ∂L/∂x = g / numel (numel = 4); value Σ x g / 4 by hand.
    #[test]
    fn value_and_gradient() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(TensorData::from([[1.0f32, 2.0], [-3.0, 0.5]]), &device)
            .require_grad();
        let gv = [[0.5f32, -1.0], [2.0, 4.0]];
        let g = Tensor::<B, 2>::from_data(TensorData::from(gv), &device).require_grad();
        let loss = inner_product_surrogate(x.clone(), g.clone());
        let v: Vec<f32> = loss.clone().into_data().to_vec().unwrap();
        assert!((v[0] - (0.5 - 2.0 - 6.0 + 2.0) / 4.0).abs() < 1e-6);
        let grads = loss.backward();
        let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let expect: Vec<f32> = gv.iter().flatten().map(|v| v / 4.0).collect();
        assert_eq!(dx, expect);
        // sg(g): no gradient reaches g.
        assert!(g.grad(&grads).is_none());
    }
}
