//! Concatenation along the channel axis (the UNet decoder's skip connections) with a
//! backward that returns contiguous gradients.
//!
//! $$ y_n = \begin{bmatrix} a_n \\\\ b_n \end{bmatrix},\qquad
//!    \frac{\partial L}{\partial a_n} = \Big(\frac{\partial L}{\partial y_n}\Big)_{1:C_a},\quad
//!    \frac{\partial L}{\partial b_n} = \Big(\frac{\partial L}{\partial y_n}\Big)_{C_a+1:C_a+C_b} $$
//!
//! per sample `n`.
//!
//! **Why.** burn's `Tensor::cat` backward hands each input a `narrow` view of the gradient;
//! along the channel axis of an NCHW tensor that view is strided (one run per sample), so every
//! op that then reads it on burn-flex — the skip scale's `mul_scalar`, the gradient sums where
//! a tensor feeds two ops — walks it element by element (`StridedIter`), on the calling
//! thread: 13 % of that thread's samples in a two-thread teacher step (docs/performance.md,
//! change 11). Here the gradient is split into two contiguous tensors by whole per-sample
//! runs, and both directions copy by samples over the rayon pool from 2¹⁵ values (they were
//! serial time between the parallel kernels; change 13).
//!
//! On `Autodiff<Flex>` and `Flex` it runs the kernels below; on every other backend it is
//! `Tensor::cat(vec![a, b], 1)`, which is also what the kernels are tested against.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `[a, b]` along the channel axis (module docs).
///
/// # Shapes
/// - `a`: `[n, c_a, h, w]`, `b`: `[n, c_b, h, w]`; returns `[n, c_a + c_b, h, w]`
///
/// # Panics
/// If the batch or spatial sizes differ (as `Tensor::cat` does).
pub fn cat_channels<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    let ([na, _, ha, wa], [nb, _, hb, wb]) = (a.dims(), b.dims());
    assert!(
        (na, ha, wa) == (nb, hb, wb),
        "cat_channels: inputs {:?} and {:?} differ outside the channel axis",
        a.dims(),
        b.dims()
    );
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            return super::same(flex::autodiff_cat(super::same(a), super::same(b)));
        }
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            return super::same(flex::inner_cat(super::same(a), super::same(b)));
        }
    }
    Tensor::cat(vec![a, b], 1)
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
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    type Ad = Autodiff<Flex>;

    /// Below this many values the copies run on the calling thread.
    const PARALLEL_MIN: usize = 1 << 15;

    /// `y_n = [a_n; b_n]` for `n` samples of `la` and `lb` values each; samples split over the
    /// rayon pool from [`PARALLEL_MIN`] values.
    pub(super) fn forward(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
        let (la, lb) = (a.len() / n.max(1), b.len() / n.max(1));
        // one chunk per sample: `[a_i; b_i]`
        super::super::par_build(a.len() + b.len(), la + lb, PARALLEL_MIN, |start, out| {
            let i = start / (la + lb).max(1);
            let (oa, ob) = out.split_at_mut(la);
            write(oa, &a[i * la..(i + 1) * la]);
            write(ob, &b[i * lb..(i + 1) * lb]);
        })
    }

    /// `dst ← src` (equal lengths) into uninitialised memory.
    fn write(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
        assert_eq!(dst.len(), src.len(), "cat_channels: row lengths");
        for (d, &s) in dst.iter_mut().zip(src) {
            d.write(s);
        }
    }

    /// The two contiguous parts of `dy`: the first `la` and the last `lb` values per sample;
    /// samples split over the rayon pool from [`PARALLEL_MIN`] values.
    pub(super) fn backward(dy: &[f32], n: usize, la: usize, lb: usize) -> (Vec<f32>, Vec<f32>) {
        assert_eq!(
            dy.len(),
            n * (la + lb),
            "cat_channels backward: gradient shape"
        );
        if la == 0 || lb == 0 {
            // one side has no channels: the other's gradient is all of `dy`
            return if la == 0 {
                (vec![], dy.to_vec())
            } else {
                (dy.to_vec(), vec![])
            };
        }
        let (mut da, mut db) = (Vec::with_capacity(n * la), Vec::with_capacity(n * lb));
        let (oa, ob) = (
            &mut da.spare_capacity_mut()[..n * la],
            &mut db.spare_capacity_mut()[..n * lb],
        );
        /// The two gradient rows of one sample, and its row of `dy`.
        type Rows<'a> = (
            (&'a mut [MaybeUninit<f32>], &'a mut [MaybeUninit<f32>]),
            &'a [f32],
        );
        let split = |((ra, rb), row): Rows<'_>| {
            write(ra, &row[..la]);
            write(rb, &row[la..]);
        };
        if dy.len() >= PARALLEL_MIN {
            oa.par_chunks_mut(la)
                .zip(ob.par_chunks_mut(lb))
                .zip(dy.par_chunks(la + lb))
                .for_each(split);
        } else {
            oa.chunks_mut(la)
                .zip(ob.chunks_mut(lb))
                .zip(dy.chunks(la + lb))
                .for_each(split);
        }
        // SAFETY: the capacities are `n·la` and `n·lb`, and each of the `n` rows wrote its
        // `la` and `lb` values (`write` fills its whole destination)
        unsafe {
            da.set_len(n * la);
            db.set_len(n * lb);
        }
        (da, db)
    }

    /// The sample count and the two inputs' shapes.
    #[derive(Debug, Clone)]
    struct State {
        shape_a: Vec<usize>,
        shape_b: Vec<usize>,
    }

    #[derive(Debug)]
    struct CatBackward;

    impl Backward<Flex, 2> for CatBackward {
        type State = State;

        fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let State { shape_a, shape_b } = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let n = shape_a[0];
            let per = |s: &[usize]| s[1..].iter().product::<usize>();
            let (da, db) = backward(&values(&dy), n, per(&shape_a), per(&shape_b));
            let [pa, pb] = ops.parents;
            if let Some(node) = pa {
                grads.register::<Flex>(node.id, flex_tensor(da, shape_a));
            }
            if let Some(node) = pb {
                grads.register::<Flex>(node.id, flex_tensor(db, shape_b));
            }
        }
    }

    fn shape_out(a: &FlexTensor, b: &FlexTensor) -> Vec<usize> {
        let (sa, sb) = (a.layout().shape(), b.layout().shape());
        vec![sa[0], sa[1] + sb[1], sa[2], sa[3]]
    }

    fn run(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
        let n = a.layout().shape()[0];
        flex_tensor(forward(&values(a), &values(b), n), shape_out(a, b))
    }

    /// The op on `Autodiff<Flex>`: one graph node with [`CatBackward`].
    pub(super) fn autodiff_cat(a: Tensor<Ad, 4>, b: Tensor<Ad, 4>) -> Tensor<Ad, 4> {
        let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
        let out = match CatBackward
            .prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = State {
                    shape_a: a.primitive.layout().shape().to_vec(),
                    shape_b: b.primitive.layout().shape().to_vec(),
                };
                prep.finish(state, run(&a.primitive, &b.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(run(&a.primitive, &b.primitive)),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// The op on `Flex` (no autodiff).
    pub(super) fn inner_cat(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) -> Tensor<Flex, 4> {
        let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(run(&a, &b)))
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

    /// `(y, ∂L/∂a, ∂L/∂b)` of `L = Σ w ⊙ y` with a fixed weight `w`, through our op or burn's
    /// `Tensor::cat`; `a` is given as a strided view when `strided`.
    fn value_and_grads(
        sa: [usize; 4],
        cb: usize,
        ours: bool,
        strided: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let device = Default::default();
        let [n, ca, h, w] = sa;
        // deterministic values (the two calls compared must see the same inputs)
        let data = |shape: [usize; 4], seed: f32| -> Vec<f32> {
            (0..shape.iter().product::<usize>())
                .map(|i| ((i as f32 * 0.618_034 + seed).fract() - 0.5) * 4.0)
                .collect()
        };
        let (va, vb) = (data(sa, 0.1), data([n, cb, h, w], 0.7));
        let a = if strided {
            // a [n, c_a, w, h] tensor seen through swap_dims: the same values, strided
            let t: Vec<f32> = (0..va.len())
                .map(|i| {
                    let (x, y) = (i % w, (i / w) % h);
                    let rest = i / (w * h);
                    va[rest * w * h + x * h + y]
                })
                .collect();
            Tensor::<A, 4>::from_data(TensorData::new(t, [n, ca, w, h]), &device).require_grad()
        } else {
            Tensor::<A, 4>::from_data(TensorData::new(va, sa), &device).require_grad()
        };
        let b =
            Tensor::<A, 4>::from_data(TensorData::new(vb, [n, cb, h, w]), &device).require_grad();
        let a_in = if strided {
            a.clone().swap_dims(2, 3)
        } else {
            a.clone()
        };
        let y = if ours {
            cat_channels(a_in, b.clone())
        } else {
            Tensor::cat(vec![a_in, b.clone()], 1)
        };
        let wts: Vec<f32> = (0..y.dims().iter().product::<usize>())
            .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.45)
            .collect();
        let wt = Tensor::<A, 4>::from_data(TensorData::new(wts, y.dims()), &device);
        let grads = (y.clone() * wt).sum().backward();
        let ga = host(a.grad(&grads).expect("a grad"));
        let gb = host(b.grad(&grads).expect("b grad"));
        (host(y), ga, gb)
    }

    #[test]
    fn values_and_gradients_equal_burns_cat() {
        for (shape, cb, strided) in [
            ([3, 4, 5, 6], 2, false),
            ([1, 1, 1, 1], 3, false),
            ([2, 3, 4, 5], 4, true),
            ([5, 2, 3, 3], 1, false),
            // ≥ 2¹⁵ values: the rayon path, at 1, 2 and 3 threads below
            ([6, 24, 16, 16], 40, false),
            ([5, 8, 32, 32], 16, true),
        ] {
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let ours = pool.install(|| value_and_grads(shape, cb, true, strided));
                let burn = value_and_grads(shape, cb, false, strided);
                // a concatenation and its split only move values: exact equality
                let case = format!("{shape:?}+{cb}, {threads} threads");
                assert_eq!(ours.0, burn.0, "{case}: values");
                assert_eq!(ours.1, burn.1, "{case}: ∂a");
                assert_eq!(ours.2, burn.2, "{case}: ∂b");
            }
        }
    }

    #[test]
    fn kernels_handle_a_side_without_channels() {
        // y = [a; b] with one side empty is the other side; its gradient is all of dy
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(flex::forward(&v, &[], 3), v);
        assert_eq!(flex::forward(&[], &v, 3), v);
        assert_eq!(flex::backward(&v, 3, 4, 0), (v.clone(), vec![]));
        assert_eq!(flex::backward(&v, 3, 0, 4), (vec![], v.clone()));
        // and both sides non-empty: per-sample rows split at la
        let (da, db) = flex::backward(&v, 3, 1, 3);
        assert_eq!(da, [0.0, 4.0, 8.0]);
        assert_eq!(db, [1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 9.0, 10.0, 11.0]);
    }

    #[test]
    fn the_inner_backend_agrees_and_gradients_are_contiguous_splits() {
        let device = Default::default();
        let a = Tensor::<Flex, 4>::random([2, 3, 2, 2], Distribution::Default, &device);
        let b = Tensor::<Flex, 4>::random([2, 1, 2, 2], Distribution::Default, &device);
        let ours = host(cat_channels(a.clone(), b.clone()));
        let want = host(Tensor::cat(vec![a, b], 1));
        assert_eq!(ours, want);
        // the backward kernel on a gradient whose values name their position
        let dy: Vec<f32> = (0..2 * 4 * 4).map(|i| i as f32).collect();
        let (da, db) = flex::backward(&dy, 2, 12, 4);
        let want_a: Vec<f32> = (0..12).chain(16..28).map(|i| i as f32).collect();
        let want_b: Vec<f32> = (12..16).chain(28..32).map(|i| i as f32).collect();
        assert_eq!((da, db), (want_a, want_b));
    }

    #[test]
    #[should_panic(expected = "differ outside the channel axis")]
    fn mismatched_spatial_sizes_are_refused() {
        let device = Default::default();
        let a = Tensor::<Flex, 4>::zeros([2, 3, 4, 4], &device);
        let b = Tensor::<Flex, 4>::zeros([2, 3, 4, 5], &device);
        let _ = cat_channels(a, b);
    }
}
