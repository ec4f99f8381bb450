//! Softmax over the last axis as one graph node with a hand-written backward on the CPU
//! backend.
//!
//! $$ y_{i} = \frac{e^{x_{i} - m}}{\sum_j e^{x_{j} - m}},\quad m = \max_j x_j,\qquad
//!    \frac{\partial L}{\partial x_{i}} = y_{i}\Big(\frac{\partial L}{\partial y_{i}}
//!    - \sum_j \frac{\partial L}{\partial y_{j}}\\, y_{j}\Big), $$
//!
//! per row (every index but the last).
//!
//! **Why.** burn's `softmax` on an autodiff backend is four nodes (subtract the row maximum,
//! `exp`, row sum, divide by the broadcast sum); on burn-flex each is a serial pass below its
//! parallel threshold, the division's backward walks the broadcast sum with the strided
//! iterator, and `exp` is a scalar libm call per element. In the bottleneck attention of the
//! 16×16 teacher that was the largest piece of serial work left in a two-thread step
//! (docs/performance.md, change 12). Here the forward is one pass per row and the backward
//! one pass per row, both through the vectorised [`super::fast_exp::exp`], split over the
//! rayon pool by rows when the tensor is large.
//!
//! On `Autodiff<Flex>` and `Flex` it runs the kernels below; on every other backend it is
//! `burn::tensor::activation::softmax(x, D - 1)`, which is also what the kernels are tested
//! against. The backend is recognised at run time by its type, as in [`super::group_norm()`].
//!
//! Non-finite inputs are not hidden: a row holding `NaN` or `+∞` gives a row of `NaN`, as
//! burn's. `−∞` entries give `e^{-87} ≈ 1.6·10⁻³⁸` before normalising instead of `0`
//! ([`super::fast_exp`]'s range), a difference far below `f32` rounding of the row sum.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `softmax(x)` over the last axis (module docs): the CPU kernel on `Flex` /
/// `Autodiff<Flex>`, `burn::tensor::activation::softmax(x, D - 1)` elsewhere.
///
/// # Shapes
/// - `x`: `[…, n]`; returns the same shape, each row of `n` summing to 1
///
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// let x = Tensor::<Flex, 2>::from_floats([[0.0, 0.0], [0.0, 2.0f32.ln()]], &Default::default());
/// let y: Vec<f32> = fdistill_nets::ops::softmax_last(x).into_data().to_vec().unwrap();
/// let want = [0.5, 0.5, 1.0 / 3.0, 2.0 / 3.0];
/// assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6));
/// ```
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            return super::same(flex::autodiff_softmax::<D>(super::same(x)));
        }
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            return super::same(flex::inner_softmax::<D>(super::same(x)));
        }
    }
    burn::tensor::activation::softmax(x, D - 1)
}

#[cfg(feature = "flex")]
pub(super) mod flex {
    //! The kernels on burn-flex tensors and their autodiff node.

    use super::super::fast_exp::exp;
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

    /// Below this many elements the kernels run on the calling thread.
    const PARALLEL_MIN: usize = 1 << 15;
    /// About this many elements per rayon task (whole rows).
    const CHUNK: usize = 1 << 13;

    /// Runs `f` on matching groups of whole rows of the three slices (`a` written), over the
    /// pool when the tensor is large.
    fn by_rows(
        n: usize,
        a: &mut [f32],
        b: &[f32],
        c: &[f32],
        f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
    ) {
        if n == 0 {
            return;
        }
        if a.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
            let step = n * (CHUNK / n).max(1);
            a.par_chunks_mut(step)
                .zip(b.par_chunks(step).zip(c.par_chunks(step)))
                .for_each(|(a, (b, c))| f(a, b, c));
        } else {
            f(a, b, c);
        }
    }

    /// One row: `y = e^{x − max x} / Σ e^{x − max x}`.
    pub(in crate::ops) fn forward_row(x: &[f32], y: &mut [f32]) {
        // NaN wins the maximum, so that it reaches every entry of its row
        let m = x.iter().fold(
            f32::NEG_INFINITY,
            |m, &v| if v > m || v.is_nan() { v } else { m },
        );
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = exp(xv - m);
        }
        let s = super::super::group_norm::flex::lanes::sum(y, |v| v as f64);
        let inv = (1.0 / s) as f32;
        y.iter_mut().for_each(|v| *v *= inv);
    }

    /// One row: `dx = y (dy − Σ dy y)`.
    pub(in crate::ops) fn backward_row(y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let dot = y
            .iter()
            .zip(dy)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>() as f32;
        for ((d, &yv), &g) in dx.iter_mut().zip(y).zip(dy) {
            *d = yv * (g - dot);
        }
    }

    /// Rows of `n`: `y = softmax(x)`.
    pub(super) fn forward(x: &[f32], n: usize) -> Vec<f32> {
        let mut y = super::super::par_zeros(x.len());
        by_rows(n, &mut y, x, x, |y, x, _| {
            for (yr, xr) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                forward_row(xr, yr);
            }
        });
        y
    }

    /// Rows of `n`: `dx` from the output `y` and `dy = ∂L/∂y`.
    pub(super) fn backward(y: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(y.len(), dy.len(), "softmax backward: gradient shape");
        let mut dx = super::super::par_zeros(y.len());
        by_rows(n, &mut dx, y, dy, |dx, y, dy| {
            for ((dr, yr), gr) in dx
                .chunks_exact_mut(n)
                .zip(y.chunks_exact(n))
                .zip(dy.chunks_exact(n))
            {
                backward_row(yr, gr, dr);
            }
        });
        dx
    }

    #[derive(Debug)]
    struct SoftmaxBackward;

    impl Backward<Flex, 1> for SoftmaxBackward {
        /// The output (shared, not copied).
        type State = FlexTensor;

        fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let y = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                let shape = y.layout().shape().to_vec();
                let n = shape.last().copied().unwrap_or(1);
                let dx = backward(&values(&y), &values(&dy), n);
                grads.register::<Flex>(node.id, flex_tensor(dx, shape));
            }
        }
    }

    /// The op on `Autodiff<Flex>`: one graph node with [`SoftmaxBackward`].
    pub(super) fn autodiff_softmax<const D: usize>(x: Tensor<Ad, D>) -> Tensor<Ad, D> {
        let n = x.dims()[D - 1];
        let x = x.into_primitive().tensor();
        let shape = x.primitive.layout().shape().to_vec();
        let out = match SoftmaxBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = flex_tensor(forward(&values(&x.primitive), n), shape);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(flex_tensor(forward(&values(&x.primitive), n), shape))
            }
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// The op on `Flex` (no autodiff): the forward kernel alone.
    pub(super) fn inner_softmax<const D: usize>(x: Tensor<Flex, D>) -> Tensor<Flex, D> {
        let n = x.dims()[D - 1];
        let x = x.into_primitive().tensor();
        let shape = x.layout().shape().to_vec();
        let y = forward(&values(&x), n);
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

    /// Logits with a spread of scales per row (near-uniform rows, peaked rows, large offsets).
    fn logits(rows: usize, n: usize) -> Vec<f32> {
        (0..rows * n)
            .map(|i| {
                let (r, j) = (i / n, i % n);
                let u = ((i * 37 + 11) % 101) as f32 / 101.0 - 0.5;
                match r % 3 {
                    0 => u,
                    1 => 12.0 * u,
                    _ => 300.0 + 4.0 * u + j as f32 * 0.01,
                }
            })
            .collect()
    }

    /// The weight `w` of `L = Σ w ⊙ softmax(x)`.
    fn weights(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4)
            .collect()
    }

    /// `(y, ∂L/∂x)` through our op or burn's softmax.
    fn value_and_grad(x: &[f32], shape: [usize; 3], ours: bool) -> (Vec<f32>, Vec<f32>) {
        let device = Default::default();
        let xt =
            Tensor::<A, 3>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
        let y = if ours {
            softmax_last(xt.clone())
        } else {
            burn::tensor::activation::softmax(xt.clone(), 2)
        };
        let w = Tensor::<A, 3>::from_data(TensorData::new(weights(x.len()), shape), &device);
        let grads = (y.clone() * w).sum().backward();
        (host(y), host(xt.grad(&grads).expect("x is a leaf")))
    }

    /// softmax and its gradient in f64, row by row: the independent computation.
    fn reference64(x: &[f32], n: usize) -> (Vec<f64>, Vec<f64>) {
        let w = weights(x.len());
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        for r in 0..x.len() / n {
            let row = &x[r * n..(r + 1) * n];
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            let dot: f64 = (0..n).map(|j| w[r * n + j] as f64 * e[j] / s).sum();
            for j in 0..n {
                y[r * n + j] = e[j] / s;
                dx[r * n + j] = e[j] / s * (w[r * n + j] as f64 - dot);
            }
        }
        (y, dx)
    }

    #[test]
    fn values_and_gradients_equal_burns_softmax_and_the_f64_formula() {
        // one row group on the calling thread, and a tensor large enough for the rayon path
        // (rows of 64 as in the 8×8 attention, and odd rows of 37)
        for (shape, threads) in [([3, 4, 5], 1), ([8, 64, 64], 2), ([3, 300, 37], 3)] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let n = shape[2];
            let x = logits(shape[0] * shape[1], n);
            let (y, dx) = pool.install(|| value_and_grad(&x, shape, true));
            let (y_burn, dx_burn) = value_and_grad(&x, shape, false);
            let (y64, dx64) = reference64(&x, n);
            for i in 0..x.len() {
                assert!((y[i] as f64 - y64[i]).abs() <= 1e-6, "y[{i}] {shape:?}");
                assert!((dx[i] as f64 - dx64[i]).abs() <= 1e-6, "dx[{i}] {shape:?}");
                assert!(
                    (y[i] - y_burn[i]).abs() <= 1e-6,
                    "y vs burn [{i}] {shape:?}"
                );
                assert!(
                    (dx[i] - dx_burn[i]).abs() <= 1e-6,
                    "dx vs burn [{i}] {shape:?}"
                );
            }
            for r in 0..x.len() / n {
                let s: f64 = y[r * n..(r + 1) * n].iter().map(|&v| v as f64).sum();
                assert!((s - 1.0).abs() < 1e-5, "row {r} sums to {s}");
            }
        }
    }

    #[test]
    fn gradient_matches_central_differences_of_the_op_itself() {
        let device = Default::default();
        let shape = [2, 3, 6];
        let x: Vec<f32> = (0..36)
            .map(|i| ((i * 13) % 17) as f32 / 5.0 - 1.5)
            .collect();
        let w = weights(36);
        let loss = |x: &[f32]| -> f64 {
            let y = host(softmax_last(Tensor::<Flex, 3>::from_data(
                TensorData::new(x.to_vec(), shape),
                &device,
            )));
            y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let xt =
            Tensor::<A, 3>::from_data(TensorData::new(x.clone(), shape), &device).require_grad();
        let wt = Tensor::<A, 3>::from_data(TensorData::new(w.clone(), shape), &device);
        let g = host(
            xt.grad(&(softmax_last(xt.clone()) * wt).sum().backward())
                .unwrap(),
        );
        let fds = crate::grad_check::central_differences(loss, &x, 1e-2);
        for (i, &fd) in fds.iter().enumerate() {
            assert!(
                (g[i] as f64 - fd).abs() < 1e-4,
                "∂L/∂x[{i}] = {}, fd {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn strided_views_untracked_inputs_and_the_plain_backend_agree() {
        let device = Default::default();
        let _rng = crate::test_rng::seeded(141);
        let x = Tensor::<Flex, 3>::random([2, 9, 7], Distribution::Normal(0.0, 3.0), &device);
        let plain = host(softmax_last(x.clone()));
        let untracked = host(softmax_last(Tensor::<A, 3>::from_inner(x.clone())));
        let tracked = host(softmax_last(
            Tensor::<A, 3>::from_inner(x.clone()).require_grad(),
        ));
        assert_eq!(plain, untracked);
        assert_eq!(plain, tracked);
        // a transposed (non-contiguous) input: softmax over what is now the last axis
        let t = host(softmax_last(x.clone().swap_dims(1, 2)));
        let want = host(burn::tensor::activation::softmax(x.swap_dims(1, 2), 2));
        assert!(t.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn non_finite_rows_stay_visible() {
        let device = Default::default();
        let x = Tensor::<A, 2>::from_floats(
            [
                [1.0, f32::NAN, 0.0],
                [1.0, f32::INFINITY, 0.0],
                [1.0, f32::NEG_INFINITY, 0.0],
            ],
            &device,
        )
        .require_grad();
        let y = softmax_last(x.clone());
        let v = host(y.clone());
        assert!(v[..6].iter().all(|a| a.is_nan()), "{v:?}");
        let e = 1.0f32.exp();
        let want = [e / (e + 1.0), 0.0, 1.0 / (e + 1.0)];
        assert!(
            v[6..].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{v:?}"
        );
        let g = host(x.grad(&y.sum().backward()).unwrap());
        assert!(g[..6].iter().all(|a| a.is_nan()));
        assert!(
            g[6..].iter().all(|a| a.abs() < 1e-6),
            "Σ y = 1 has zero gradient: {g:?}"
        );
    }
}
