//! The box filter's ×2 resampling (EDM's `resample_filter = [1, 1]`, DDPM++'s default) as
//! single graph nodes with hand-written backwards.
//!
//! Nearest-neighbour upsampling and 2×2 average pooling, per plane:
//!
//! $$ u_{2i+d,\\,2j+e} = x_{ij},\qquad
//!    \frac{\partial L}{\partial x_{ij}} = \sum_{d, e \in \\{0, 1\\}}
//!    \frac{\partial L}{\partial u_{2i+d,\\,2j+e}} $$
//!
//! $$ p_{ij} = \tfrac14 \sum_{d, e \in \\{0, 1\\}} x_{2i+d,\\,2j+e},\qquad
//!    \frac{\partial L}{\partial x_{2i+d,\\,2j+e}} = \tfrac14 \frac{\partial L}{\partial p_{ij}} $$
//!
//! (for odd sizes the last row or column is dropped by the pooling and gets a zero gradient).
//!
//! **Why.** On burn-flex the upsampling was two `repeat_dim`s (element-by-element copies of
//! strided views) and a reduction backward, and the pooling's backward
//! (`avg_pool3d_backward_f32`) runs on one thread: serial time in a two-thread step
//! (docs/performance.md, change 11). Here both directions are one pass, split over the rayon
//! pool by planes for large tensors.
//!
//! On `Autodiff<Flex>` and `Flex` they run the kernels below; on every other backend they are
//! burn's ops (`repeat_dim`, `avg_pool2d`), which are also what the kernels are tested against.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;

/// Nearest-neighbour ×2 upsampling (module docs).
///
/// # Shapes
/// - `x`: `[b, c, h, w]`; returns `[b, c, 2h, 2w]`
pub fn upsample_nearest2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            return super::same(flex::autodiff_op(super::same(x), flex::Kind::Up));
        }
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            return super::same(flex::inner_op(super::same(x), flex::Kind::Up));
        }
    }
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]) // [b, c, h, 1, w, 1]
        .repeat_dim(3, 2)
        .repeat_dim(5, 2) // [b, c, h, 2, w, 2]
        .reshape([b, c, 2 * h, 2 * w])
}

/// 2×2 average pooling with stride 2 and no padding (module docs).
///
/// # Shapes
/// - `x`: `[b, c, h, w]`; returns `[b, c, ⌊h/2⌋, ⌊w/2⌋]`
pub fn avg_pool2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            return super::same(flex::autodiff_op(super::same(x), flex::Kind::Pool));
        }
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            return super::same(flex::inner_op(super::same(x), flex::Kind::Pool));
        }
    }
    avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
}

#[cfg(feature = "flex")]
mod flex {
    //! The kernels on burn-flex tensors and their autodiff node.

    use super::super::{flex_tensor, par_zeros, values};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorPrimitive};
    use rayon::prelude::*;

    type Ad = Autodiff<Flex>;

    /// Below this many output elements the kernels run on the calling thread.
    const PARALLEL_MIN: usize = 1 << 15;

    /// Which resampling.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Kind {
        Up,
        Pool,
    }

    /// `[h', w']` of the output for an `[h, w]` input.
    fn out_hw(kind: Kind, h: usize, w: usize) -> [usize; 2] {
        match kind {
            Kind::Up => [2 * h, 2 * w],
            Kind::Pool => [h / 2, w / 2],
        }
    }

    /// Runs `f(src_plane, dst_plane)` over the `planes` planes of `src` (`ls` values each) and
    /// a fresh output of `ld` values per plane, in parallel when the output is large.
    fn per_plane(
        src: &[f32],
        planes: usize,
        ld: usize,
        f: impl Fn(&[f32], &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let ls = src.len() / planes.max(1);
        let mut dst = par_zeros(planes * ld);
        if ld == 0 || ls == 0 {
            return dst;
        }
        if dst.len() >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
            // about 16 K output values per task
            let per_task = (16_384 / ld).max(1);
            dst.par_chunks_mut(ld * per_task)
                .zip(src.par_chunks(ls * per_task))
                .for_each(|(d, s)| {
                    for (dp, sp) in d.chunks_exact_mut(ld).zip(s.chunks_exact(ls)) {
                        f(sp, dp);
                    }
                });
        } else {
            for (dp, sp) in dst.chunks_exact_mut(ld).zip(src.chunks_exact(ls)) {
                f(sp, dp);
            }
        }
        dst
    }

    /// One plane of 2×2 block sums: `dst[i, j] = scale · Σ_{a, b ∈ {0, 1}} src[2i + a, 2j + b]`,
    /// `src` with rows of `ws` values and `dst` with rows of `⌊ws/2⌋` (an odd last row or
    /// column of `src` is not read). The pooling's forward (`scale` ¼) and the upsampling's
    /// backward (`scale` 1).
    fn sum_blocks(src: &[f32], dst: &mut [f32], ws: usize, scale: f32) {
        let wd = ws / 2;
        for (i, dr) in dst.chunks_exact_mut(wd).enumerate() {
            let top = &src[2 * i * ws..2 * i * ws + 2 * wd];
            let bottom = &src[(2 * i + 1) * ws..(2 * i + 1) * ws + 2 * wd];
            for ((d, t), b) in dr
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                *d = ((t[0] + t[1]) + (b[0] + b[1])) * scale;
            }
        }
    }

    /// The adjoint of [`sum_blocks`]: `dst[2i + a, 2j + b] = scale · src[i, j]`, `dst` with rows
    /// of `wd` values and `src` with rows of `⌊wd/2⌋` (an odd last row or column of `dst` is
    /// left as it is: zero). The upsampling's forward (`scale` 1) and the pooling's backward
    /// (`scale` ¼).
    fn spread_blocks(src: &[f32], dst: &mut [f32], wd: usize, scale: f32) {
        let ws = wd / 2;
        for (i, sr) in src.chunks_exact(ws).enumerate() {
            for r in [2 * i, 2 * i + 1] {
                let row = &mut dst[r * wd..r * wd + 2 * ws];
                for (pair, &v) in row.chunks_exact_mut(2).zip(sr) {
                    pair[0] = scale * v;
                    pair[1] = scale * v;
                }
            }
        }
    }

    /// The forward of `kind` on `x` `[b, c, h, w]`.
    pub(super) fn forward(kind: Kind, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
        let [b, c, h, w] = shape;
        let [ho, wo] = out_hw(kind, h, w);
        match kind {
            Kind::Up => per_plane(x, b * c, ho * wo, |s, d| spread_blocks(s, d, wo, 1.0)),
            Kind::Pool if wo == 0 => vec![0.0; b * c * ho * wo],
            Kind::Pool => per_plane(x, b * c, ho * wo, |s, d| sum_blocks(s, d, w, 0.25)),
        }
    }

    /// `∂L/∂x` from `dy` (`[b, c, h', w']`) for the input shape `shape` `[b, c, h, w]`.
    pub(super) fn backward(kind: Kind, dy: &[f32], shape: [usize; 4]) -> Vec<f32> {
        let [b, c, h, w] = shape;
        let [ho, wo] = out_hw(kind, h, w);
        assert_eq!(
            dy.len(),
            b * c * ho * wo,
            "resample backward: gradient shape"
        );
        match kind {
            Kind::Up => per_plane(dy, b * c, h * w, |s, d| sum_blocks(s, d, 2 * w, 1.0)),
            Kind::Pool if wo == 0 || ho == 0 => vec![0.0; b * c * h * w],
            Kind::Pool => per_plane(dy, b * c, h * w, |s, d| spread_blocks(s, d, w, 0.25)),
        }
    }

    #[derive(Debug)]
    struct ResampleBackward;

    impl Backward<Flex, 1> for ResampleBackward {
        /// The kind and the input's shape.
        type State = (Kind, [usize; 4]);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (kind, shape) = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                let dx = backward(kind, &values(&dy), shape);
                grads.register::<Flex>(node.id, flex_tensor(dx, shape.to_vec()));
            }
        }
    }

    fn run(kind: Kind, x: &FlexTensor) -> ([usize; 4], FlexTensor) {
        let s = x.layout().shape();
        let shape = [s[0], s[1], s[2], s[3]];
        let [ho, wo] = out_hw(kind, shape[2], shape[3]);
        let y = forward(kind, &values(x), shape);
        (shape, flex_tensor(y, vec![shape[0], shape[1], ho, wo]))
    }

    /// The op on `Autodiff<Flex>`: one graph node with [`ResampleBackward`].
    pub(super) fn autodiff_op(x: Tensor<Ad, 4>, kind: Kind) -> Tensor<Ad, 4> {
        let x = x.into_primitive().tensor();
        let out = match ResampleBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (shape, y) = run(kind, &x.primitive);
                prep.finish((kind, shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(kind, &x.primitive).1),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// The op on `Flex` (no autodiff): the forward kernel alone.
    pub(super) fn inner_op(x: Tensor<Flex, 4>, kind: Kind) -> Tensor<Flex, 4> {
        let x = x.into_primitive().tensor();
        Tensor::from_primitive(TensorPrimitive::Float(run(kind, &x).1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type A = Autodiff<Flex>;

    fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    fn close(name: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{name}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "{name}[{i}]: {g} vs {w}"
            );
        }
    }

    /// `(y, ∂L/∂x)` of `L = Σ v ⊙ op(x)` with fixed `x` and `v`, through our op (`ours`) or
    /// burn's.
    fn value_and_grad(shape: [usize; 4], up: bool, ours: bool) -> (Vec<f32>, Vec<f32>) {
        let device = Default::default();
        let n: usize = shape.iter().product();
        let xv: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 3.0)
            .collect();
        let x = Tensor::<A, 4>::from_data(TensorData::new(xv, shape), &device).require_grad();
        let [b, c, h, w] = shape;
        let y = match (up, ours) {
            (true, true) => upsample_nearest2(x.clone()),
            (false, true) => avg_pool2(x.clone()),
            (true, false) => x
                .clone()
                .reshape([b, c, h, 1, w, 1])
                .repeat_dim(3, 2)
                .repeat_dim(5, 2)
                .reshape([b, c, 2 * h, 2 * w]),
            (false, false) => avg_pool2d(x.clone(), [2, 2], [2, 2], [0, 0], true, false),
        };
        let m: usize = y.dims().iter().product();
        let v: Vec<f32> = (0..m).map(|i| ((i * 5) % 17) as f32 / 17.0 - 0.4).collect();
        let vt = Tensor::<A, 4>::from_data(TensorData::new(v, y.dims()), &device);
        let grads = (y.clone() * vt).sum().backward();
        (host(y), host(x.grad(&grads).expect("x grad")))
    }

    /// Small planes, odd sizes, one pixel, and a batch large enough for the parallel path.
    const SHAPES: [[usize; 4]; 5] = [
        [2, 3, 4, 6],
        [1, 2, 5, 7],
        [1, 1, 1, 1],
        [3, 1, 2, 3],
        [32, 16, 8, 8],
    ];

    #[test]
    fn upsampling_equals_repeat_dim_with_gradients() {
        for shape in SHAPES {
            let (yo, go) = value_and_grad(shape, true, true);
            let (yb, gb) = value_and_grad(shape, true, false);
            assert_eq!(yo, yb, "{shape:?}: values (copies: exact)");
            close(&format!("{shape:?} ∂x"), &go, &gb);
        }
    }

    #[test]
    fn pooling_equals_avg_pool2d_with_gradients() {
        for shape in SHAPES {
            let (yo, go) = value_and_grad(shape, false, true);
            let (yb, gb) = value_and_grad(shape, false, false);
            close(&format!("{shape:?} values"), &yo, &yb);
            close(&format!("{shape:?} ∂x"), &go, &gb);
        }
    }

    /// The definitions written out on a 4×4 plane whose values name their position.
    #[test]
    fn kernels_follow_the_definitions() {
        let device = Default::default();
        let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let t = Tensor::<Flex, 4>::from_data(TensorData::new(x.clone(), [1, 1, 4, 4]), &device);
        let pooled = host(avg_pool2(t.clone()));
        let want: Vec<f32> = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
            .iter()
            .map(|q| q.iter().map(|&i| x[i]).sum::<f32>() / 4.0)
            .collect();
        assert_eq!(pooled, want);
        let up = host(upsample_nearest2(t));
        for r in 0..8 {
            for c in 0..8 {
                assert_eq!(up[r * 8 + c], x[(r / 2) * 4 + c / 2], "({r}, {c})");
            }
        }
        // each adjoint pair: <op x, v> = <x, opᵀ v>, with the kernels' backward as opᵀ
        let v: Vec<f32> = (0..64).map(|i| (i % 7) as f32 - 3.0).collect();
        let up_t = flex::backward(flex::Kind::Up, &v, [1, 1, 4, 4]);
        let lhs: f32 = up.iter().zip(&v).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&up_t).map(|(a, b)| a * b).sum();
        assert_eq!(lhs, rhs);
        let pool_t = flex::backward(flex::Kind::Pool, &v[..4], [1, 1, 4, 4]);
        let lhs: f32 = pooled.iter().zip(&v[..4]).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&pool_t).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }

    #[test]
    fn every_thread_count_gives_the_same_values() {
        let shape = [32, 16, 8, 8];
        let want = value_and_grad(shape, true, true);
        let want_pool = value_and_grad(shape, false, true);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| value_and_grad(shape, true, true)), want);
            assert_eq!(
                pool.install(|| value_and_grad(shape, false, true)),
                want_pool
            );
        }
    }
}
