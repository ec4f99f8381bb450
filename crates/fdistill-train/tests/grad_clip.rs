//! The driver's global gradient-norm clipping (`torch.nn.utils.clip_grad_norm_` semantics),
//! checked by hand on a linear layer.

use burn::backend::{Autodiff, Flex};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use fdistill_train::distill::driver::{clip_grad_norm, grad_norm};

type B = Autodiff<Flex>;

/// Loss `Σ (W x + b)` for a 2→2 linear layer at x = (3, 4): `∂/∂W_ij = x_i`, `∂/∂b_j = 1`,
/// so `‖g‖² = 2·(9 + 16) + 2 = 52`.
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
    assert!((grad_norm::<B, _>(&lin, &g) - 52f64.sqrt()).abs() < 1e-5);
}

#[test]
fn clipping_rescales_to_max_norm_and_keeps_direction() {
    let (lin, g) = grads();
    let (g, before) = clip_grad_norm::<B, _>(&lin, g, 1.0);
    assert!((before - 52f64.sqrt()).abs() < 1e-5);
    assert!((grad_norm::<B, _>(&lin, &g) - 1.0).abs() < 1e-5);
    let gb: Vec<f32> = g
        .get::<Flex, 1>(lin.bias.as_ref().unwrap().id)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let expect = 1.0 / 52f32.sqrt();
    assert!(gb.iter().all(|v| (v - expect).abs() < 1e-5), "{gb:?}");
    // Below the threshold nothing changes.
    let (lin, g) = grads();
    let (g, _) = clip_grad_norm::<B, _>(&lin, g, 100.0);
    assert!((grad_norm::<B, _>(&lin, &g) - 52f64.sqrt()).abs() < 1e-5);
}
