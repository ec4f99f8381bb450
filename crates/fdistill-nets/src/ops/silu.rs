//! SiLU as one graph node with a hand-written backward on the CPU backend.
//!
//! $$ y = \operatorname{silu}(x) = x\\,\sigma(x) = \frac{x}{1 + e^{-x}},\qquad
//!    \frac{\partial y}{\partial x} = \sigma(x)\big(1 + x\\,(1 - \sigma(x))\big). $$
//!
//! **Why.** `burn::tensor::activation::silu` is `x · sigmoid(x)`: two autodiff nodes, and on
//! burn-flex a scalar libm `expf` per element in the forward plus four element-wise passes in
//! the backward. On the MLP networks (teacher, fake score, generator, VarDiU posterior) that
//! was about half of a toy step (docs/performance.md). Here the forward is one pass and the
//! backward one pass, both through the vectorised [`super::fast_exp::sigmoid`]; tensors of
//! 2¹⁶ elements or more are split over the rayon pool.
//!
//! On `Autodiff<Flex>` and `Flex` it runs the kernels below; on every other backend it is
//! burn's `silu`, which is also what the kernels are tested against. The backend is
//! recognised at run time by its type, as in [`super::group_norm()`].

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `silu(x)` element-wise (module docs): the CPU kernel on `Flex` / `Autodiff<Flex>`,
/// `burn::tensor::activation::silu` elsewhere.
///
/// # Shapes
/// - `x`: any shape; returns the same shape
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            return super::same(flex::autodiff_silu::<D>(super::same(x)));
        }
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            return super::same(flex::inner_silu::<D>(super::same(x)));
        }
    }
    burn::tensor::activation::silu(x)
}

#[cfg(feature = "flex")]
mod flex {
    //! The kernels on burn-flex tensors and their autodiff node.

    use super::super::fast_exp::{exp, sigmoid};
    use super::super::{flex_tensor, values};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorPrimitive};
    use rayon::prelude::*;

    type Ad = Autodiff<Flex>;

    /// Below this many elements the kernels run on the calling thread: rayon's hand-off costs
    /// more than it saves on the MLPs' `[256, 128]` activations.
    const PARALLEL_MIN: usize = 1 << 16;
    const CHUNK: usize = 1 << 14;

    fn forward_chunk(x: &[f32], y: &mut [f32]) {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = xv * sigmoid(xv);
        }
    }

    fn backward_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((dv, &xv), &gv) in dx.iter_mut().zip(x).zip(dy) {
            // 1 − σ(x) = e^{-x} σ(x), without the cancellation of `1.0 - s` near σ = 1
            let e = exp(-xv);
            let s = 1.0 / (1.0 + e);
            *dv = gv * s * (1.0 + xv * (e * s));
        }
    }

    /// `y = x σ(x)`.
    pub(super) fn forward(x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; x.len()];
        if x.len() >= PARALLEL_MIN {
            y.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(y, x)| forward_chunk(x, y));
        } else {
            forward_chunk(x, &mut y);
        }
        y
    }

    /// `dx = dy · σ(x)(1 + x(1 − σ(x)))`, with `1 − σ(x)` computed as `e^{-x} σ(x)`.
    pub(super) fn backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), dy.len(), "silu backward: gradient shape");
        let mut dx = vec![0.0f32; x.len()];
        if x.len() >= PARALLEL_MIN {
            dx.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
                .for_each(|(dx, (x, dy))| backward_chunk(x, dy, dx));
        } else {
            backward_chunk(x, dy, &mut dx);
        }
        dx
    }

    #[derive(Debug)]
    struct SiluBackward;

    impl Backward<Flex, 1> for SiluBackward {
        /// The input (shared, not copied).
        type State = FlexTensor;

        fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let x = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                let dx = backward(&values(&x), &values(&dy));
                grads.register::<Flex>(node.id, flex_tensor(dx, x.layout().shape().to_vec()));
            }
        }
    }

    /// The op on `Autodiff<Flex>`: one graph node with [`SiluBackward`].
    pub(super) fn autodiff_silu<const D: usize>(x: Tensor<Ad, D>) -> Tensor<Ad, D> {
        let x = x.into_primitive().tensor();
        let shape = x.primitive.layout().shape().to_vec();
        let out = match SiluBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward(&values(&x.primitive));
                prep.finish(x.primitive.clone(), flex_tensor(y, shape))
            }
            OpsKind::UnTracked(prep) => {
                let y = forward(&values(&x.primitive));
                prep.finish(flex_tensor(y, shape))
            }
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// The op on `Flex` (no autodiff): the forward kernel alone.
    pub(super) fn inner_silu<const D: usize>(x: Tensor<Flex, D>) -> Tensor<Flex, D> {
        let x = x.into_primitive().tensor();
        let shape = x.layout().shape().to_vec();
        let y = forward(&values(&x));
        Tensor::from_primitive(TensorPrimitive::Float(flex_tensor(y, shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    type A = Autodiff<Flex>;

    fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// `silu` and its derivative in f64: the independent computation.
    fn silu64(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    /// Inputs spanning the flat tails, the curved middle and exact zeros.
    fn inputs(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let u = (i as f32 * 0.618_034).fract();
                match i % 4 {
                    0 => 40.0 * (u - 0.5),
                    1 => 6.0 * (u - 0.5),
                    2 => 0.0,
                    _ => 200.0 * (u - 0.5),
                }
            })
            .collect()
    }

    /// `(y, ∂L/∂x)` of `L = Σ w ⊙ silu(x)` for the weight `w_i = (7i mod 11)/11 − 0.4`, through
    /// our op or burn's.
    fn value_and_grad<const D: usize>(
        x: &[f32],
        shape: [usize; D],
        ours: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let device = Default::default();
        let xt =
            Tensor::<A, D>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
        let y = if ours {
            silu(xt.clone())
        } else {
            burn::tensor::activation::silu(xt.clone())
        };
        let w: Vec<f32> = (0..x.len())
            .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4)
            .collect();
        let w = Tensor::<A, D>::from_data(TensorData::new(w, shape), &device);
        let grads = (y.clone() * w).sum().backward();
        (host(y), host(xt.grad(&grads).expect("x is a leaf")))
    }

    #[test]
    fn values_and_gradients_equal_burns_silu_and_the_f64_closed_form() {
        // Small (one thread) and large (the rayon path) tensors, rank 2 and rank 3.
        for n in [6 * 5, 3 * 300 * 80] {
            let x = inputs(n);
            let (y, dx) = if n < 1000 {
                let ours = value_and_grad(&x, [6, 5], true);
                let burns = value_and_grad(&x, [6, 5], false);
                assert_eq!(ours.0.len(), burns.0.len());
                (ours, burns)
            } else {
                let ours = value_and_grad(&x, [3, 300, 80], true);
                let burns = value_and_grad(&x, [3, 300, 80], false);
                (ours, burns)
            };
            let ((y_ours, dx_ours), (y_burn, dx_burn)) = (y, dx);
            for i in 0..n {
                let xv = x[i] as f64;
                let w = ((i * 7) % 11) as f64 / 11.0 - 0.4;
                let s = 1.0 / (1.0 + (-xv).exp());
                let (y64, dx64) = (silu64(xv), w * s * (1.0 + xv * (1.0 - s)));
                let tol = |v: f64| 1e-6 * v.abs().max(1.0);
                assert!(
                    (y_ours[i] as f64 - y64).abs() <= tol(y64),
                    "y({xv}) = {}, f64 {y64}",
                    y_ours[i]
                );
                assert!(
                    (dx_ours[i] as f64 - dx64).abs() <= tol(dx64),
                    "dx({xv}) = {}, f64 {dx64}",
                    dx_ours[i]
                );
                // burn's own silu agrees to float rounding wherever it is finite
                if y_burn[i].is_finite() && dx_burn[i].is_finite() {
                    assert!((y_ours[i] - y_burn[i]).abs() <= 2e-6 * y_burn[i].abs().max(1.0));
                    assert!((dx_ours[i] - dx_burn[i]).abs() <= 2e-6 * dx_burn[i].abs().max(1.0));
                }
            }
        }
    }

    #[test]
    fn gradient_matches_central_differences_of_the_op_itself() {
        // L(x) = Σ w ⊙ silu(x) evaluated through the op on Flex, differentiated numerically
        // (step 1e-2, values of order 1: truncation error ~1e-5), against the autodiff node.
        let device = Default::default();
        let x: Vec<f32> = (0..40).map(|i| -4.0 + 0.2 * i as f32 + 0.013).collect();
        let w: Vec<f32> = (0..40)
            .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4)
            .collect();
        let loss = |x: &[f32]| -> f64 {
            let y = host(silu(Tensor::<Flex, 1>::from_floats(x, &device)));
            y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let xt = Tensor::<A, 1>::from_floats(x.as_slice(), &device).require_grad();
        let wt = Tensor::<A, 1>::from_floats(w.as_slice(), &device);
        let grads = (silu(xt.clone()) * wt).sum().backward();
        let g = host(xt.grad(&grads).unwrap());
        let fds = crate::grad_check::central_differences(loss, &x, 1e-2);
        for (i, &fd) in fds.iter().enumerate() {
            assert!(
                (g[i] as f64 - fd).abs() < 1e-4,
                "∂L/∂x[{i}] = {}, central difference {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn flex_and_autodiff_paths_agree_and_strided_views_work() {
        let device = Default::default();
        let _rng = crate::test_rng::seeded(131);
        let x = Tensor::<Flex, 2>::random([7, 9], Distribution::Normal(0.0, 3.0), &device);
        let plain = host(silu(x.clone()));
        let tracked = host(silu(Tensor::<A, 2>::from_inner(x.clone())));
        assert_eq!(plain, tracked);
        // a transposed (non-contiguous) input gives the transpose of the result
        let t = host(silu(x.clone().transpose()));
        let want = host(silu(x).transpose());
        assert_eq!(t, want);
    }

    #[test]
    fn nan_propagates_forward_and_backward() {
        let device = Default::default();
        let x = Tensor::<A, 1>::from_floats([1.0, f32::NAN, -2.0], &device).require_grad();
        let y = silu(x.clone());
        let yv = host(y.clone());
        assert!(yv[1].is_nan() && yv[0].is_finite() && yv[2].is_finite());
        let g = host(x.grad(&y.sum().backward()).unwrap());
        assert!(g[1].is_nan() && g[0].is_finite() && g[2].is_finite());
    }

    #[test]
    fn the_untracked_path_gives_the_tracked_values() {
        // The untracked branch returns the same values as the tracked one.
        let device = Default::default();
        let x = Tensor::<A, 1>::from_floats([-3.0, -0.5, 0.0, 0.5, 3.0], &device);
        let untracked = host(silu(x.clone()));
        let tracked = host(silu(x.require_grad()));
        assert_eq!(untracked, tracked);
    }
}
