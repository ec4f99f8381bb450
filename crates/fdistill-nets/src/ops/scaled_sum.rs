//! The residual sum of the UNet blocks, `(a + b)·s`, as one graph node with a hand-written
//! backward on the CPU backend.
//!
//! $$ y = s\\,(a + b),\qquad
//!    \frac{\partial L}{\partial a} = \frac{\partial L}{\partial b} = s\\,\frac{\partial L}{\partial y}. $$
//!
//! **Why.** Every DDPM++ / ADM block ends in `(conv1(h) + skip(x)) · skip_scale`, and every
//! attention block in `(proj(a) + h) · skip_scale`. Written with burn's ops that is two graph
//! nodes and two element-wise passes forward (`add`, `mul_scalar`) and a pass backward, all on
//! the calling thread on burn-flex: between the parallel convolution kernels that thread is the
//! only one running, so in a two-thread step they were serial time (docs/performance.md,
//! change 13). Here it is one node, one pass forward and one backward, split over the rayon
//! pool from 2¹⁵ elements; both inputs receive the same gradient tensor.
//!
//! On `Autodiff<Flex>` and `Flex` it runs the kernels below; on every other backend it is
//! `(a + b).mul_scalar(s)`, which is also what the kernels are tested against. The backend is
//! recognised at run time by its type, as in [`super::group_norm()`].

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `(a + b)·s` element-wise (module docs): the CPU kernel on `Flex` / `Autodiff<Flex>`,
/// burn's `add` and `mul_scalar` elsewhere.
///
/// # Shapes
/// - `a`, `b`: the same shape (no broadcasting); returns that shape
///
/// # Panics
/// If the shapes differ (as burn's `add` does for shapes that do not broadcast).
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use fdistill_nets::ops::scaled_sum;
///
/// let device = Default::default();
/// let a = Tensor::<Flex, 1>::from_floats([1.0, 2.0], &device);
/// let b = Tensor::<Flex, 1>::from_floats([3.0, -4.0], &device);
/// let y: Vec<f32> = scaled_sum(a, b, 0.5).into_data().to_vec().unwrap();
/// assert_eq!(y, [2.0, -1.0]);
/// ```
pub fn scaled_sum<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    s: f64,
) -> Tensor<B, D> {
    assert_eq!(
        a.dims(),
        b.dims(),
        "scaled_sum: the two inputs must have the same shape"
    );
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            return super::same(flex::autodiff_scaled_sum::<D>(
                super::same(a),
                super::same(b),
                s,
            ));
        }
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            return super::same(flex::inner_scaled_sum::<D>(
                super::same(a),
                super::same(b),
                s,
            ));
        }
    }
    (a + b).mul_scalar(s)
}

#[cfg(feature = "flex")]
mod flex {
    //! The kernels on burn-flex tensors and their autodiff node.

    use super::super::{flex_tensor, values};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorPrimitive};
    use std::mem::MaybeUninit;

    type Ad = Autodiff<Flex>;

    /// Below this many elements the kernels run on the calling thread.
    const PARALLEL_MIN: usize = 1 << 15;
    const CHUNK: usize = 1 << 13;

    /// `n` values by chunks of [`CHUNK`], over the pool from [`PARALLEL_MIN`].
    fn build(n: usize, f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
        super::super::par_build(n, CHUNK, PARALLEL_MIN, f)
    }

    /// `y = (a + b)·s`.
    pub(super) fn forward(a: &[f32], b: &[f32], s: f32) -> Vec<f32> {
        assert_eq!(a.len(), b.len(), "scaled_sum: input lengths");
        build(a.len(), |i, y| {
            let (a, b) = (&a[i..i + y.len()], &b[i..i + y.len()]);
            for ((yv, &av), &bv) in y.iter_mut().zip(a).zip(b) {
                yv.write((av + bv) * s);
            }
        })
    }

    /// `dy·s`, the gradient of both inputs.
    pub(super) fn backward(dy: &[f32], s: f32) -> Vec<f32> {
        build(dy.len(), |i, d| {
            let dy = &dy[i..i + d.len()];
            for (dv, &gv) in d.iter_mut().zip(dy) {
                dv.write(gv * s);
            }
        })
    }

    #[derive(Debug)]
    struct ScaledSumBackward;

    impl Backward<Flex, 2> for ScaledSumBackward {
        /// The scale `s` and the output shape.
        type State = (f32, Vec<usize>);

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (s, shape) = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let [pa, pb] = ops.parents;
            if pa.is_none() && pb.is_none() {
                return;
            }
            // one tensor for both parents (shared storage: burn-flex copies on write)
            let d = flex_tensor(backward(&values(&dy), s), shape);
            for node in [pa, pb].into_iter().flatten() {
                grads.register::<Flex>(node.id, d.clone());
            }
        }
    }

    fn run(a: &FlexTensor, b: &FlexTensor, s: f32) -> FlexTensor {
        let shape = a.layout().shape().to_vec();
        flex_tensor(forward(&values(a), &values(b), s), shape)
    }

    /// The op on `Autodiff<Flex>`: one graph node with [`ScaledSumBackward`].
    pub(super) fn autodiff_scaled_sum<const D: usize>(
        a: Tensor<Ad, D>,
        b: Tensor<Ad, D>,
        s: f64,
    ) -> Tensor<Ad, D> {
        let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
        let s = s as f32;
        let out = match ScaledSumBackward
            .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = run(&a.primitive, &b.primitive, s);
                let shape = y.layout().shape().to_vec();
                prep.finish((s, shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(&a.primitive, &b.primitive, s)),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// The op on `Flex` (no autodiff): the forward kernel alone.
    pub(super) fn inner_scaled_sum<const D: usize>(
        a: Tensor<Flex, D>,
        b: Tensor<Flex, D>,
        s: f64,
    ) -> Tensor<Flex, D> {
        let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(run(&a, &b, s as f32)))
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

    /// `(y, ∂L/∂a, ∂L/∂b)` of `L = Σ w ⊙ f(a, b)` for `w_i = (7i mod 11)/11 − 0.4`, through
    /// our op or burn's `(a + b)·s`.
    fn value_and_grads<const D: usize>(
        a: &[f32],
        b: &[f32],
        shape: [usize; D],
        s: f64,
        ours: bool,
    ) -> [Vec<f32>; 3] {
        let device = Default::default();
        let leaf = |v: &[f32]| {
            Tensor::<A, D>::from_data(TensorData::new(v.to_vec(), shape), &device).require_grad()
        };
        let (at, bt) = (leaf(a), leaf(b));
        let y = if ours {
            scaled_sum(at.clone(), bt.clone(), s)
        } else {
            (at.clone() + bt.clone()).mul_scalar(s)
        };
        let w: Vec<f32> = (0..a.len())
            .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4)
            .collect();
        let w = Tensor::<A, D>::from_data(TensorData::new(w, shape), &device);
        let grads = (y.clone() * w).sum().backward();
        [
            host(y),
            host(at.grad(&grads).expect("a is a leaf")),
            host(bt.grad(&grads).expect("b is a leaf")),
        ]
    }

    fn inputs(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 + seed * 11) % 101) as f32 / 25.0 - 2.0)
            .collect()
    }

    #[test]
    fn values_and_gradients_equal_burns_ops_and_the_f64_formula() {
        // a one-thread size and a parallel one (rank 4, as in the UNet blocks)
        for (shape, threads) in [
            ([2, 3, 2, 2], 1),
            ([3, 16, 40, 20], 2),
            ([3, 16, 40, 20], 3),
        ] {
            let n: usize = shape.iter().product();
            let (a, b) = (inputs(n, 1), inputs(n, 2));
            let s = 0.5f64.sqrt();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let ours = pool.install(|| value_and_grads(&a, &b, shape, s, true));
            let burns = value_and_grads(&a, &b, shape, s, false);
            for (k, name) in ["y", "∂a", "∂b"].iter().enumerate() {
                assert_eq!(ours[k].len(), n, "{name}");
                for i in 0..n {
                    let w = ((i * 7) % 11) as f64 / 11.0 - 0.4;
                    let want = if k == 0 {
                        (a[i] as f64 + b[i] as f64) * s
                    } else {
                        w * s
                    };
                    assert!(
                        (ours[k][i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{name}[{i}] = {}, f64 {want} ({threads} threads)",
                        ours[k][i]
                    );
                    assert!(
                        (ours[k][i] - burns[k][i]).abs() <= 1e-6 * burns[k][i].abs().max(1.0),
                        "{name}[{i}]: ours {} burn's {}",
                        ours[k][i],
                        burns[k][i]
                    );
                }
            }
        }
    }

    #[test]
    fn gradient_matches_central_differences_of_the_op_itself() {
        // L(a, b) = Σ w ⊙ (a + b)·s through the op on Flex, differentiated numerically in
        // each input, against the autodiff node (L is linear: central differences are exact
        // up to f32 rounding).
        let device = Default::default();
        let (a, b) = (inputs(24, 3), inputs(24, 4));
        let w: Vec<f32> = (0..24)
            .map(|i| ((i * 5) % 13) as f32 / 13.0 - 0.5)
            .collect();
        let s = 1.7;
        let loss = |a: &[f32], b: &[f32]| -> f64 {
            let t = |v: &[f32]| Tensor::<Flex, 1>::from_floats(v, &device);
            let y = host(scaled_sum(t(a), t(b), s));
            y.iter().zip(&w).map(|(&p, &q)| p as f64 * q as f64).sum()
        };
        let leaf = |v: &[f32]| Tensor::<A, 1>::from_floats(v, &device).require_grad();
        let (at, bt) = (leaf(&a), leaf(&b));
        let wt = Tensor::<A, 1>::from_floats(w.as_slice(), &device);
        let grads = (scaled_sum(at.clone(), bt.clone(), s) * wt)
            .sum()
            .backward();
        let (ga, gb) = (
            host(at.grad(&grads).unwrap()),
            host(bt.grad(&grads).unwrap()),
        );
        let fa = crate::grad_check::central_differences(|v| loss(v, &b), &a, 1e-1);
        let fb = crate::grad_check::central_differences(|v| loss(&a, v), &b, 1e-1);
        for i in 0..24 {
            assert!(
                (ga[i] as f64 - fa[i]).abs() < 1e-4,
                "∂a[{i}]: {} vs {}",
                ga[i],
                fa[i]
            );
            assert!(
                (gb[i] as f64 - fb[i]).abs() < 1e-4,
                "∂b[{i}]: {} vs {}",
                gb[i],
                fb[i]
            );
        }
    }

    #[test]
    fn one_input_untracked_the_same_input_twice_and_strided_views() {
        let device = Default::default();
        let _rng = crate::test_rng::seeded(141);
        let x = Tensor::<Flex, 2>::random([7, 9], Distribution::Normal(0.0, 3.0), &device);
        let c = Tensor::<Flex, 2>::random([7, 9], Distribution::Normal(0.0, 3.0), &device);
        // only `a` tracked: its gradient is s, and the untracked `b` is left alone
        let a = Tensor::<A, 2>::from_inner(x.clone()).require_grad();
        let g = a.grad(
            &scaled_sum(a.clone(), Tensor::from_inner(c.clone()), 2.0)
                .sum()
                .backward(),
        );
        assert!(host(g.unwrap()).iter().all(|&v| v == 2.0));
        // the same tensor on both sides: the two registrations add up to 2s
        let a = Tensor::<A, 2>::from_inner(x.clone()).require_grad();
        let g = a.grad(&scaled_sum(a.clone(), a.clone(), 0.25).sum().backward());
        assert!(host(g.unwrap()).iter().all(|&v| v == 0.5));
        // nothing tracked: the untracked path gives the same values as the tracked one
        let untracked = host(scaled_sum(
            Tensor::<A, 2>::from_inner(x.clone()),
            Tensor::from_inner(c.clone()),
            0.3,
        ));
        assert_eq!(untracked, host(scaled_sum(x.clone(), c.clone(), 0.3)));
        // transposed (non-contiguous) inputs give the transpose of the result
        let t = host(scaled_sum(
            x.clone().transpose(),
            c.clone().transpose(),
            0.3,
        ));
        assert_eq!(t, host(scaled_sum(x, c, 0.3).transpose()));
    }

    #[test]
    fn nan_propagates_forward_and_backward() {
        let device = Default::default();
        let a = Tensor::<A, 1>::from_floats([1.0, f32::NAN, -2.0], &device).require_grad();
        let b = Tensor::<A, 1>::from_floats([0.5, 0.5, f32::INFINITY], &device);
        let y = scaled_sum(a.clone(), b, 0.5);
        let yv = host(y.clone());
        assert!(yv[0] == 0.75 && yv[1].is_nan() && yv[2] == f32::INFINITY);
        let dy = Tensor::<A, 1>::from_floats([1.0, 1.0, f32::NAN], &device);
        let g = host(a.grad(&(y * dy).sum().backward()).unwrap());
        assert!(g[0] == 0.5 && g[1] == 0.5 && g[2].is_nan());
    }

    #[test]
    #[should_panic(expected = "same shape")]
    fn different_shapes_are_refused() {
        let device = Default::default();
        let a = Tensor::<Flex, 2>::zeros([2, 3], &device);
        let b = Tensor::<Flex, 2>::zeros([3, 2], &device);
        let _ = scaled_sum(a, b, 1.0);
    }
}
