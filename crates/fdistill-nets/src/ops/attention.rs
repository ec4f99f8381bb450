//! Multi-head self-attention over the pixels (the attention of EDM's `UNetBlock`) as one graph
//! node with a hand-written backward on the CPU backend.
//!
//! Per batch element and head `n`, with `Q_n, K_n, V_n ∈ ℝ^{c × hw}` read from the `qkv`
//! projection (EDM's channel layout `[head][channel][q|k|v]`), `c` the channels per head:
//!
//! $$ \Lambda_n = Q_n^\top K_n / \sqrt{c},\qquad W_n = \operatorname{softmax}(\Lambda_n)\ \text{(over keys)},\qquad
//!    O_n = V_n W_n^\top, $$
//!
//! and, with `G_n = ∂O_nᵀ V_n` (`= ∂L/∂W_n`):
//!
//! $$ \partial V_n = \partial O_n W_n,\qquad
//!    \partial\Lambda_n = W_n \odot \big(G_n - \operatorname{rowsum}(G_n \odot W_n)\big),\qquad
//!    \partial Q_n = K_n\\,\partial\Lambda_n^\top / \sqrt{c},\qquad
//!    \partial K_n = Q_n\\,\partial\Lambda_n / \sqrt{c}. $$
//!
//! **Why.** In burn's ops the attention is a dozen graph nodes on the calling thread: the
//! `narrow`s of `q`, `k`, `v` are strided views that each `reshape` copies element by element,
//! their backward builds three zero tensors of the size of `qkv` and adds them, the transposes
//! around the products leave strided gradients for the softmax to copy. In a two-thread 16×16
//! distillation step that was 2 % of the calling thread's samples (docs/performance.md,
//! change 13). Here it is one node: the products are GEMMs on strided views of `qkv` (no
//! copies), the softmax rows are [`super::softmax_last`]'s, and the whole forward and backward
//! run over the rayon pool by `(batch, head)`; the backward writes `∂Q`, `∂K`, `∂V` straight
//! into their rows of `∂qkv`. The node keeps `W` (`[b·heads, hw, hw]`) for the backward.
//!
//! On `Autodiff<Flex>` and `Flex` it runs the kernels below; on every other backend it is
//! [`attention_reference`], burn's tensor ops, which is also what the kernels are tested
//! against.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The attention of the module docs: the CPU kernels on `Flex` / `Autodiff<Flex>`,
/// [`attention_reference`] elsewhere.
///
/// # Shapes
/// - `qkv`: `[b, 3C, h, w]` (`C` divisible by `heads`); returns `[b, C, h, w]`
///
/// # Panics
/// If `3·heads` does not divide the channels of `qkv`.
pub fn attention<B: Backend>(qkv: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [_, c3, _, _] = qkv.dims();
    assert!(
        heads > 0 && c3 % (3 * heads) == 0,
        "attention: {c3} qkv channels are not 3 × heads ({heads}) × channels per head"
    );
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            return super::same(flex::autodiff_attention(super::same(qkv), heads));
        }
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            return super::same(flex::inner_attention(super::same(qkv), heads));
        }
    }
    attention_reference(qkv, heads)
}

/// The same function in burn's tensor ops: what GPU backends run and what the kernels are
/// tested against.
///
/// # Shapes
/// - `qkv`: `[b, 3C, h, w]`; returns `[b, C, h, w]`
pub fn attention_reference<B: Backend>(qkv: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [b, c3, h, w] = qkv.dims();
    let c = c3 / 3;
    let ch = c / heads;
    let n = b * heads;
    let qkv = qkv.reshape([n, ch, 3, h * w]); // [b·heads, c/heads, 3, hw]
    let part = |i: usize| qkv.clone().narrow(2, i, 1).reshape([n, ch, h * w]); // [n, ch, hw]
    let (q, k, v) = (part(0), part(1), part(2));
    // 1/√c on k (EDM's order): a pass over [n, ch, hw] instead of the [n, hw, hw] logits
    let logits = q.swap_dims(1, 2).matmul(k.div_scalar((ch as f64).sqrt())); // [n, hw_q, hw_k]
    let weights = super::softmax_last(logits);
    v.matmul(weights.swap_dims(1, 2)) // [n, ch, hw_q]
        .reshape([b, c, h, w])
}

#[cfg(feature = "flex")]
mod flex {
    //! The kernels on burn-flex tensors and their autodiff node.

    use super::super::conv_gemm::{Mat, matmul, matmul_into};
    use super::super::softmax::flex::{backward_row, forward_row};
    use super::super::{flex_tensor, par_zeros, values};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorPrimitive};
    use gemm::Parallelism;
    use rayon::prelude::*;

    type Ad = Autodiff<Flex>;

    /// Sizes of one call: `n = b·heads` blocks of `ch` channels on `hw` pixels.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Dims {
        pub n: usize,
        pub ch: usize,
        pub hw: usize,
    }

    impl Dims {
        fn of(shape: &[usize], heads: usize) -> Self {
            let (b, c3, hw) = (shape[0], shape[1], shape[2] * shape[3]);
            Dims {
                n: b * heads,
                ch: c3 / 3 / heads,
                hw,
            }
        }

        /// `1/√c`.
        fn scale(&self) -> f32 {
            (1.0 / (self.ch as f64).sqrt()) as f32
        }
    }

    /// `Q`, `K`, `V` (`[ch, hw]` each) of one block of `qkv`: rows `3·hw` apart.
    fn parts(x: &[f32], d: Dims) -> [Mat<'_>; 3] {
        let hw = d.hw;
        std::array::from_fn(|i| Mat::strided(&x[i * hw..], d.ch, hw, 3 * hw, 1))
    }

    /// `(O, W)`: the output `[n, ch, hw]` and the attention weights `[n, hw, hw]`.
    pub(super) fn forward(qkv: &[f32], d: Dims) -> (Vec<f32>, Vec<f32>) {
        let Dims { n, ch, hw } = d;
        assert_eq!(qkv.len(), n * 3 * ch * hw, "attention: qkv size");
        let (mut out, mut w) = (par_zeros(n * ch * hw), par_zeros(n * hw * hw));
        if n * ch * hw == 0 {
            return (out, w);
        }
        out.par_chunks_mut(ch * hw)
            .zip(w.par_chunks_mut(hw * hw))
            .zip(qkv.par_chunks(3 * ch * hw))
            .for_each(|((o, wn), x)| {
                let [q, k, v] = parts(x, d);
                // Λ = Qᵀ K / √c, then W = softmax(Λ) row by row
                let mut logits = vec![0.0f32; hw * hw];
                matmul(&mut logits, q.t(), k, false, Parallelism::None);
                let s = d.scale();
                logits.iter_mut().for_each(|v| *v *= s);
                for (lr, wr) in logits.chunks_exact(hw).zip(wn.chunks_exact_mut(hw)) {
                    forward_row(lr, wr);
                }
                // O = V Wᵀ
                matmul(o, v, Mat::new(wn, hw, hw).t(), false, Parallelism::None);
            });
        (out, w)
    }

    /// `∂qkv` from `qkv`, the weights `W` and `∂O` (module docs).
    pub(super) fn backward(qkv: &[f32], w: &[f32], dout: &[f32], d: Dims) -> Vec<f32> {
        let Dims { n, ch, hw } = d;
        assert_eq!(
            dout.len(),
            n * ch * hw,
            "attention backward: gradient shape"
        );
        let mut dqkv = par_zeros(qkv.len());
        if n * ch * hw == 0 {
            return dqkv;
        }
        dqkv.par_chunks_mut(3 * ch * hw)
            .zip(qkv.par_chunks(3 * ch * hw))
            .zip(w.par_chunks(hw * hw).zip(dout.par_chunks(ch * hw)))
            .for_each(|((dx, x), (wn, go))| {
                let [q, k, v] = parts(x, d);
                let (wm, dom) = (Mat::new(wn, hw, hw), Mat::new(go, ch, hw));
                let rows = (3 * hw, 1); // ∂Q, ∂K, ∂V: every third row of the block
                // ∂V = ∂O W
                matmul_into(&mut dx[2 * hw..], rows, dom, wm, false, Parallelism::None);
                // G = ∂Oᵀ V, then ∂Λ/√c = W ⊙ (G − rowsum(G ⊙ W)) / √c
                let mut g = vec![0.0f32; hw * hw];
                matmul(&mut g, dom.t(), v, false, Parallelism::None);
                let mut dl = vec![0.0f32; hw * hw];
                for ((dr, wr), gr) in dl
                    .chunks_exact_mut(hw)
                    .zip(wn.chunks_exact(hw))
                    .zip(g.chunks_exact(hw))
                {
                    backward_row(wr, gr, dr);
                }
                let s = d.scale();
                dl.iter_mut().for_each(|v| *v *= s);
                let dlm = Mat::new(&dl, hw, hw);
                // ∂Q = K ∂Λᵀ/√c, ∂K = Q ∂Λ/√c
                matmul_into(dx, rows, k, dlm.t(), false, Parallelism::None);
                matmul_into(&mut dx[hw..], rows, q, dlm, false, Parallelism::None);
            });
        dqkv
    }

    /// What the backward needs: the input (shared, not copied), the weights and the sizes.
    #[derive(Debug, Clone)]
    struct State {
        qkv: FlexTensor,
        w: Vec<f32>,
        dims: Dims,
    }

    #[derive(Debug)]
    struct AttentionBackward;

    impl Backward<Flex, 1> for AttentionBackward {
        type State = State;

        fn backward(self, ops: Ops<State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let State { qkv, w, dims } = ops.state;
            let dy = grads.consume::<Flex>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                let dx = backward(&values(&qkv), &w, &values(&dy), dims);
                grads.register::<Flex>(node.id, flex_tensor(dx, qkv.layout().shape().to_vec()));
            }
        }
    }

    fn out_shape(shape: &[usize]) -> Vec<usize> {
        vec![shape[0], shape[1] / 3, shape[2], shape[3]]
    }

    /// The op on `Autodiff<Flex>`: one graph node with [`AttentionBackward`].
    pub(super) fn autodiff_attention(qkv: Tensor<Ad, 4>, heads: usize) -> Tensor<Ad, 4> {
        let x = qkv.into_primitive().tensor();
        let shape = x.primitive.layout().shape().to_vec();
        let dims = Dims::of(&shape, heads);
        let out = match AttentionBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (o, w) = forward(&values(&x.primitive), dims);
                let state = State {
                    qkv: x.primitive.clone(),
                    w,
                    dims,
                };
                prep.finish(state, flex_tensor(o, out_shape(&shape)))
            }
            OpsKind::UnTracked(prep) => {
                let (o, _) = forward(&values(&x.primitive), dims);
                prep.finish(flex_tensor(o, out_shape(&shape)))
            }
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// The op on `Flex` (no autodiff): the forward kernel alone.
    pub(super) fn inner_attention(qkv: Tensor<Flex, 4>, heads: usize) -> Tensor<Flex, 4> {
        let x = qkv.into_primitive().tensor();
        let shape = x.layout().shape().to_vec();
        let (o, _) = forward(&values(&x), Dims::of(&shape, heads));
        Tensor::from_primitive(TensorPrimitive::Float(flex_tensor(o, out_shape(&shape))))
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

    use crate::grad_check::assert_close;

    /// `(O, ∂L/∂qkv)` of `L = Σ w ⊙ O` for a fixed weight `w`, through ours or the reference.
    fn value_and_grad(
        qkv: &[f32],
        shape: [usize; 4],
        heads: usize,
        ours: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let device = Default::default();
        let x =
            Tensor::<A, 4>::from_data(TensorData::new(qkv.to_vec(), shape), &device).require_grad();
        let y = if ours {
            attention(x.clone(), heads)
        } else {
            attention_reference(x.clone(), heads)
        };
        let n: usize = y.dims().iter().product();
        let w: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4).collect();
        let w = Tensor::<A, 4>::from_data(TensorData::new(w, y.dims()), &device);
        let grads = (y.clone() * w).sum().backward();
        (host(y), host(x.grad(&grads).expect("qkv is a leaf")))
    }

    fn random(shape: [usize; 4], seed: u64) -> Vec<f32> {
        let device = Default::default();
        Flex::seed(&device, seed);
        host(Tensor::<Flex, 4>::random(
            shape,
            Distribution::Normal(0.0, 1.5),
            &device,
        ))
    }

    #[test]
    fn values_and_gradients_equal_the_tensor_op_version() {
        let _rng = crate::test_rng::seeded(150);
        // (shape, heads): one head; two heads; the docs UNet's 8×8 bottleneck on a batch
        // (the parallel path at 1–3 threads); odd sizes
        for (shape, heads) in [
            ([1, 6, 1, 3], 1),
            ([2, 12, 2, 3], 2),
            ([4, 3 * 32, 8, 8], 1),
            ([3, 3 * 6, 5, 3], 3),
        ] {
            let qkv = random(shape, 7);
            let (y_ref, g_ref) = value_and_grad(&qkv, shape, heads, false);
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (y, g) = pool.install(|| value_and_grad(&qkv, shape, heads, true));
                let case = format!("{shape:?}, {heads} heads, {threads} threads");
                assert_close(&format!("O ({case})"), &y, &y_ref, 2e-5);
                assert_close(&format!("∂qkv ({case})"), &g, &g_ref, 1e-4);
            }
        }
    }

    #[test]
    fn gradient_matches_central_differences_of_the_op_itself() {
        // L(qkv) = Σ w ⊙ attention(qkv) through the op on Flex, central differences (f64 sums
        // of the f32 op, step 1e-2) against the autodiff node, every input entry.
        let _rng = crate::test_rng::seeded(151);
        let device = Default::default();
        let shape = [2, 12, 2, 2]; // two heads of two channels, four pixels
        let qkv = random(shape, 9);
        let w: Vec<f32> = (0..2 * 4 * 4)
            .map(|i| ((i * 5) % 13) as f32 / 13.0 - 0.5)
            .collect();
        let loss = |v: &[f32]| -> f64 {
            let x = Tensor::<Flex, 4>::from_data(TensorData::new(v.to_vec(), shape), &device);
            let y = host(attention(x, 2));
            y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let x =
            Tensor::<A, 4>::from_data(TensorData::new(qkv.clone(), shape), &device).require_grad();
        let wt = Tensor::<A, 4>::from_data(TensorData::new(w.clone(), [2, 4, 2, 2]), &device);
        let grads = (attention(x.clone(), 2) * wt).sum().backward();
        let g = host(x.grad(&grads).unwrap());
        let fds = crate::grad_check::central_differences(loss, &qkv, 1e-2);
        for (i, &fd) in fds.iter().enumerate() {
            assert!(
                (g[i] as f64 - fd).abs() < 2e-3 + 1e-2 * fd.abs(),
                "∂qkv[{i}] = {}, central difference {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn a_scalar_computation_strided_input_and_the_untracked_path_agree() {
        // the scalar definition with EDM's interleaved heads (channel (head·c + i)·3 + part)
        let _rng = crate::test_rng::seeded(152);
        let device = Default::default();
        let (heads, ch, hw) = (2, 2, 3);
        let shape = [1, 3 * heads * ch, 1, hw];
        let v = random(shape, 11);
        let at = |head: usize, c: usize, part: usize, p: usize| {
            v[((head * ch + c) * 3 + part) * hw + p] as f64
        };
        let x = Tensor::<Flex, 4>::from_data(TensorData::new(v.clone(), shape), &device);
        let got = host(attention(x.clone(), heads));
        for head in 0..heads {
            for i in 0..hw {
                let logits: Vec<f64> = (0..hw)
                    .map(|j| {
                        (0..ch)
                            .map(|c| at(head, c, 0, i) * at(head, c, 1, j))
                            .sum::<f64>()
                            / (ch as f64).sqrt()
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                for c in 0..ch {
                    let want: f64 = (0..hw)
                        .map(|j| (logits[j] - m).exp() / z * at(head, c, 2, j))
                        .sum();
                    let g = got[(head * ch + c) * hw + i] as f64;
                    assert!((g - want).abs() < 1e-5, "head {head} c {c} pixel {i}");
                }
            }
        }
        // a strided view of the same values (every row of a wider tensor, NaN between) gives
        // the same result
        let wide: Vec<f32> = (0..3 * heads * ch * 2 * hw)
            .map(|i| {
                if i % (2 * hw) < hw {
                    v[i / (2 * hw) * hw + i % (2 * hw)]
                } else {
                    f32::NAN
                }
            })
            .collect();
        let view = Tensor::<Flex, 4>::from_data(
            TensorData::new(wide, [1, 3 * heads * ch, 1, 2 * hw]),
            &device,
        )
        .narrow(3, 0, hw);
        assert_close("strided", &host(attention(view, heads)), &got, 1e-6);
        // the untracked autodiff path gives the plain backend's values
        assert_eq!(host(attention(Tensor::<A, 4>::from_inner(x), heads)), got);
    }

    #[test]
    fn nan_in_a_key_stays_visible_in_its_block_only() {
        let device = Default::default();
        let shape = [2, 6, 1, 3]; // two samples, one head of two channels
        let mut v = random(shape, 13);
        v[3 + 1] = f32::NAN; // sample 0, channel 1 (c 0, k), pixel 1
        let x = Tensor::<A, 4>::from_data(TensorData::new(v, shape), &device).require_grad();
        let y = attention(x.clone(), 1);
        let yv = host(y.clone());
        assert!(yv[..6].iter().all(|v| v.is_nan()), "sample 0: {yv:?}");
        assert!(yv[6..].iter().all(|v| v.is_finite()), "sample 1: {yv:?}");
        let g = host(x.grad(&y.sum().backward()).unwrap());
        assert!(g[..18].iter().any(|v| v.is_nan()));
        assert!(g[18..].iter().all(|v| v.is_finite()));
    }

    #[test]
    #[should_panic(expected = "qkv channels")]
    fn channels_not_divisible_by_three_heads_are_refused() {
        let device = Default::default();
        let _ = attention(Tensor::<Flex, 4>::zeros([1, 8, 2, 2], &device), 2);
    }
}
