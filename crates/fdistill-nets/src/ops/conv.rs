//! 2-D convolution whose gradients skip burn-flex's strided copies.
//!
//! $$ y_{b,o} = \beta_o + \sum_i w_{o,i} \star x_{b,i},\qquad
//!    \partial_{w_{o,i}} L = \sum_b \partial_{y_{b,o}} L \star x_{b,i},\qquad
//!    \partial_{\beta_o} L = \sum_{b,p} \partial_{y_{b,o,p}} L. $$
//!
//! burn's default `conv2d_weight_backward` computes the weight gradient as a convolution of
//! `x` and `∂L/∂y` with their batch and channel axes swapped (`swap_dims(0, 1)`), and the bias
//! gradient as a sum after another `swap_dims(0, 1)`; burn-flex materialises each swapped view
//! with its element-by-element strided iterator, about a quarter of a UNet training step
//! (docs/performance.md). burn-flex's convolution itself builds NHWC `im2col` tiles element
//! by element and scatters its result back to NCHW channel by channel, and its input gradient
//! is a transposed 3-D convolution. Here the bias gradient is a direct per-channel sum, and
//! the convolution, its input gradient and its weight gradient run on the NCHW `im2col` +
//! GEMM kernels of [`super::conv_gemm`] (no layout change at all). On `Autodiff<Flex>` this
//! runs as one graph node, on `Flex` as the forward kernel; on every other backend [`conv2d`]
//! is `burn::nn::conv::Conv2d::forward`.
//!
//! The parameters stay in burn's `Conv2d` module (names `weight`, `bias`), so checkpoints do
//! not change.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::ops::ConvOptions;

/// `conv.forward(x)`, with the fast backward on `Autodiff<Flex>` for ungrouped convolutions
/// with symmetric explicit or no padding (every convolution of the conv heads).
///
/// # Shapes
/// - `x`: `[b, c_in, h, w]`; returns `[b, c_out, h', w']`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => Some([t, l]),
        PaddingConfig2d::Valid => Some([0, 0]),
        _ => None,
    };
    match padding {
        Some(padding) => conv2d_with(
            x,
            conv.weight.val(),
            conv.bias.as_ref().map(|b| b.val()),
            ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups),
        ),
        None => conv.forward(x),
    }
}

/// `burn::tensor::module::conv2d(x, weight, bias, options)`, with the fast backward on
/// `Autodiff<Flex>` for ungrouped convolutions (`options.groups == 1`); any backend, any
/// options otherwise. For networks that keep their convolution weights as plain parameters
/// (EDM's `Conv2d`, [`EdmConv2d`](crate::edm_layers::EdmConv2d)).
///
/// # Shapes
/// - `x`: `[b, c_in, h, w]`, `weight`: `[c_out, c_in, k_h, k_w]`, `bias`: `[c_out]`
/// - returns `[b, c_out, h', w']`
pub fn conv2d_with<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        if options.groups == 1 && TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() {
            let out = flex::autodiff_conv2d(
                super::same(x),
                super::same(weight),
                bias.map(super::same),
                options,
            );
            return super::same(out);
        }
        if options.groups == 1 && TypeId::of::<B>() == TypeId::of::<Flex>() {
            let out = flex::inner_conv2d(
                super::same(x),
                super::same(weight),
                bias.map(super::same),
                &options,
            );
            return super::same(out);
        }
    }
    burn::tensor::module::conv2d(x, weight, bias, options)
}

#[cfg(feature = "flex")]
mod flex {
    use super::super::conv_gemm::{self, Geometry};
    use super::super::group_norm::flex::lanes;
    use super::super::values;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Tensor, TensorData, TensorMetadata, TensorPrimitive};

    type Ad = Autodiff<Flex>;

    /// The kernels' geometry of `x` `[b, c_in, h, w]` and `weight` `[c_out, c_in, k_h, k_w]`.
    fn geometry(x: &[usize], weight: &[usize], options: &ConvOptions<2>) -> Geometry {
        assert_eq!(
            x[1], weight[1],
            "conv2d: input has {} channels, the weight expects {}",
            x[1], weight[1]
        );
        Geometry {
            c_in: x[1],
            h: x[2],
            w: x[3],
            c_out: weight[0],
            k: [weight[2], weight[3]],
            stride: options.stride,
            padding: options.padding,
            dilation: options.dilation,
        }
    }

    /// `conv(x, w) + β` through [`conv_gemm::forward`].
    fn forward(
        x: &FlexTensor,
        w: &FlexTensor,
        b: Option<&FlexTensor>,
        o: &ConvOptions<2>,
    ) -> FlexTensor {
        let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
        let g = geometry(&xs, &ws, o);
        let bias = b.map(values);
        let y = conv_gemm::forward(&g, &values(x), &values(w), bias.as_deref());
        let [oh, ow] = g.out();
        FlexTensor::from_data(TensorData::new(y, vec![xs[0], g.c_out, oh, ow]))
    }

    /// `Σ_{b, p} g[b, o, p]` for every channel `o`, in f64: each row summed over eight
    /// independent lanes (so the loop vectorises), the samples split over the rayon pool for
    /// large gradients (this ran serially on the calling thread: docs/performance.md,
    /// change 11).
    pub(super) fn channel_sums(g: &FlexTensor) -> FlexTensor {
        use rayon::prelude::*;
        let shape = g.shape().to_vec();
        let (b, c) = (shape[0], shape[1]);
        let row: usize = shape[2..].iter().product();
        let src = values(g);
        let sample = |s: &[f32], sums: &mut Vec<f64>| {
            for (o, acc) in sums.iter_mut().enumerate() {
                *acc += lanes::sum(&s[o * row..(o + 1) * row], |v| v as f64);
            }
        };
        let add = |mut a: Vec<f64>, b: Vec<f64>| {
            a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
            a
        };
        let sums = if b * c * row >= 1 << 16 && rayon::current_num_threads() > 1 {
            src.par_chunks((c * row).max(1))
                .take(b)
                .fold(
                    || vec![0.0f64; c],
                    |mut acc, s| {
                        sample(s, &mut acc);
                        acc
                    },
                )
                .reduce(|| vec![0.0f64; c], add)
        } else {
            let mut acc = vec![0.0f64; c];
            for s in src.chunks((c * row).max(1)).take(b) {
                sample(s, &mut acc);
            }
            acc
        };
        let sums: Vec<f32> = sums.into_iter().map(|v| v as f32).collect();
        FlexTensor::from_data(TensorData::new(sums, vec![c]))
    }

    #[derive(Debug, Clone)]
    struct State {
        x: FlexTensor,
        weight: FlexTensor,
        options: ConvOptions<2>,
    }

    #[derive(Debug)]
    struct Conv2dBackward;

    impl Backward<Flex, 3> for Conv2dBackward {
        type State = State;

        fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let State { x, weight, options } = ops.state;
            let grad = grads.consume::<Flex>(&ops.node);
            let [px, pw, pb] = ops.parents;
            if let Some(node) = pb {
                grads.register::<Flex>(node.id, channel_sums(&grad));
            }
            let (xs, ws) = (x.shape().to_vec(), weight.shape().to_vec());
            let g = geometry(&xs, &ws, &options);
            let (dx, dw) = conv_gemm::backward(
                &g,
                &values(&x),
                &values(&weight),
                &values(&grad),
                px.is_some(),
                pw.is_some(),
            );
            let tensor =
                |v: Vec<f32>, shape: Vec<usize>| FlexTensor::from_data(TensorData::new(v, shape));
            if let (Some(node), Some(dw)) = (pw, dw) {
                grads.register::<Flex>(node.id, tensor(dw, ws));
            }
            if let (Some(node), Some(dx)) = (px, dx) {
                grads.register::<Flex>(node.id, tensor(dx, xs));
            }
        }
    }

    /// The convolution on `Autodiff<Flex>` as one node with [`Conv2dBackward`].
    pub(super) fn autodiff_conv2d(
        x: Tensor<Ad, 4>,
        weight: Tensor<Ad, 4>,
        bias: Option<Tensor<Ad, 1>>,
        options: ConvOptions<2>,
    ) -> Tensor<Ad, 4> {
        let [c_out, ..] = weight.dims();
        let has_bias = bias.is_some();
        let bias = bias.unwrap_or_else(|| Tensor::zeros([c_out], &x.device()));
        let (x, weight, bias) = (
            x.into_primitive().tensor(),
            weight.into_primitive().tensor(),
            bias.into_primitive().tensor(),
        );
        let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        let forward = |x: FlexTensor, w: FlexTensor, b: FlexTensor| {
            forward(&x, &w, has_bias.then_some(&b), &options)
        };
        let out = match Conv2dBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = State {
                    x: x.primitive.clone(),
                    weight: weight.primitive.clone(),
                    options: options.clone(),
                };
                prep.finish(
                    state,
                    forward(x.primitive, weight.primitive, bias.primitive),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(x.primitive, weight.primitive, bias.primitive))
            }
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// The convolution on `Flex` (no autodiff): the forward kernel alone.
    pub(super) fn inner_conv2d(
        x: Tensor<Flex, 4>,
        weight: Tensor<Flex, 4>,
        bias: Option<Tensor<Flex, 1>>,
        options: &ConvOptions<2>,
    ) -> Tensor<Flex, 4> {
        let (x, w) = (
            x.into_primitive().tensor(),
            weight.into_primitive().tensor(),
        );
        let b = bias.map(|b| b.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(forward(&x, &w, b.as_ref(), options)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, TensorData};

    type A = Autodiff<Flex>;

    fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    fn close(name: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{name}");
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * scale, "{name}[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn values_and_gradients_equal_burns_conv2d() {
        let _rng = crate::test_rng::seeded(100);
        // 3×3 pad 1, 4×4 stride 2 pad 1 (odd output grid), 1×1, valid 8×8 and no-bias.
        let device = Default::default();
        let cases = [
            Conv2dConfig::new([3, 5], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            Conv2dConfig::new([3, 4], [4, 4])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            Conv2dConfig::new([3, 6], [1, 1]),
            Conv2dConfig::new([3, 1], [5, 5]),
            Conv2dConfig::new([3, 2], [3, 3]).with_bias(false),
        ];
        for (k, cfg) in cases.iter().enumerate() {
            let conv = cfg.init::<A>(&device);
            let x = Tensor::<A, 4>::random([2, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let y_fast = conv2d(&conv, x.clone());
            let y_ref = conv.forward(x.clone());
            close(
                &format!("y {k}"),
                &host(y_fast.clone()),
                &host(y_ref.clone()),
            );
            let w = Tensor::<A, 4>::random(y_ref.dims(), Distribution::Normal(0.0, 1.0), &device);
            let g_fast = (y_fast * w.clone()).sum().backward();
            let g_ref = (y_ref * w).sum().backward();
            close(
                &format!("dx {k}"),
                &host(x.grad(&g_fast).unwrap()),
                &host(x.grad(&g_ref).unwrap()),
            );
            close(
                &format!("dw {k}"),
                &host(conv.weight.val().grad(&g_fast).unwrap()),
                &host(conv.weight.val().grad(&g_ref).unwrap()),
            );
            if let Some(b) = &conv.bias {
                close(
                    &format!("db {k}"),
                    &host(b.val().grad(&g_fast).unwrap()),
                    &host(b.val().grad(&g_ref).unwrap()),
                );
            }
        }
    }

    /// `conv2d_with` (raw weight and bias, as EDM's layers hold them): its gradients against
    /// burn's autodiff of the same convolution and against central finite differences of the
    /// forward pass (3×3 padding 1 with bias, 1×1 without padding, no bias).
    #[test]
    fn raw_weight_form_matches_burn_and_finite_differences() {
        let _rng = crate::test_rng::seeded(4);
        let device = Default::default();
        for (k, p, with_bias) in [(3, 1, true), (1, 0, true), (3, 1, false)] {
            let options = || ConvOptions::new([1, 1], [p, p], [1, 1], 1);
            let xv = host(Tensor::<A, 4>::random(
                [2, 3, 4, 4],
                Distribution::Normal(0.0, 1.0),
                &device,
            ));
            let wv = host(Tensor::<A, 4>::random(
                [4, 3, k, k],
                Distribution::Normal(0.0, 0.5),
                &device,
            ));
            let bv = host(Tensor::<A, 1>::random(
                [4],
                Distribution::Normal(0.0, 0.5),
                &device,
            ));
            let cot = host(Tensor::<A, 4>::random(
                [2, 4, 4, 4],
                Distribution::Normal(0.0, 1.0),
                &device,
            ));
            let leaf = |v: &[f32], shape: [usize; 4]| {
                Tensor::<A, 4>::from_data(TensorData::new(v.to_vec(), shape), &device)
                    .require_grad()
            };
            let grads_of = |fast: bool| {
                let x = leaf(&xv, [2, 3, 4, 4]);
                let w = leaf(&wv, [4, 3, k, k]);
                let b = Tensor::<A, 1>::from_floats(bv.as_slice(), &device).require_grad();
                let bias = with_bias.then(|| b.clone());
                let y = if fast {
                    conv2d_with(x.clone(), w.clone(), bias, options())
                } else {
                    burn::tensor::module::conv2d(x.clone(), w.clone(), bias, options())
                };
                let cot =
                    Tensor::<A, 4>::from_data(TensorData::new(cot.clone(), [2, 4, 4, 4]), &device);
                let g = (y.clone() * cot).sum().backward();
                (
                    host(y),
                    host(x.grad(&g).unwrap()),
                    host(w.grad(&g).unwrap()),
                    b.grad(&g).map(host).unwrap_or_default(),
                )
            };
            let (fast, slow) = (grads_of(true), grads_of(false));
            close(&format!("y k{k}"), &fast.0, &slow.0);
            close(&format!("dx k{k}"), &fast.1, &slow.1);
            close(&format!("dw k{k}"), &fast.2, &slow.2);
            close(&format!("db k{k}"), &fast.3, &slow.3);
            assert_eq!(fast.3.is_empty(), !with_bias);
            // central differences of L = Σ cot ⊙ conv(x, w) + b on the plain backend
            let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
                let t = |v: &[f32], s: [usize; 4]| {
                    Tensor::<Flex, 4>::from_data(TensorData::new(v.to_vec(), s), &device)
                };
                let bias = with_bias.then(|| Tensor::<Flex, 1>::from_floats(b, &device));
                let y = burn::tensor::module::conv2d(
                    t(x, [2, 3, 4, 4]),
                    t(w, [4, 3, k, k]),
                    bias,
                    options(),
                );
                host(y).iter().zip(&cot).map(|(a, c)| (a * c) as f64).sum()
            };
            let h = 1e-2f32;
            let check = |name: &str, which: usize, analytic: &[f32]| {
                let base = [xv.clone(), wv.clone(), bv.clone()];
                for i in (0..base[which].len()).step_by(3) {
                    let bump = |sign: f32| {
                        let mut v = base.clone();
                        v[which][i] += sign * h;
                        loss(&v[0], &v[1], &v[2])
                    };
                    let fd = (bump(1.0) - bump(-1.0)) / (2.0 * h as f64);
                    let an = analytic[i] as f64;
                    assert!(
                        (fd - an).abs() <= 2e-3 + 1e-2 * an.abs(),
                        "{name}[{i}] (k {k}): analytic {an} vs finite differences {fd}"
                    );
                }
            };
            check("dx", 0, &fast.1);
            check("dw", 1, &fast.2);
            if with_bias {
                check("db", 2, &fast.3);
            }
        }
    }

    #[test]
    fn channel_sums_match_a_direct_computation() {
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t = burn::backend::flex::FlexTensor::from_data(TensorData::new(v, [2, 3, 4]));
        let sums = flex::channel_sums(&t);
        // channel o: Σ_b Σ_p (b·12 + o·4 + p) = 2·(4·o·4 + 6) + 4·12 = 32 o + 60
        let want: Vec<f32> = (0..3).map(|o| (32 * o + 60) as f32).collect();
        assert_eq!(sums.as_slice::<f32>().unwrap(), want.as_slice());
    }

    /// The parallel path (a gradient above the threshold, at 1–3 threads) and a strided view
    /// against the sums written out in f64.
    #[test]
    fn channel_sums_on_the_parallel_path_and_strided_views() {
        let (b, c, h, w) = (32, 5, 33, 17);
        let v: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.3) * 2.0)
            .collect();
        let mut want = vec![0.0f64; c];
        for (i, &x) in v.iter().enumerate() {
            want[(i / (h * w)) % c] += x as f64;
        }
        let t =
            burn::backend::flex::FlexTensor::from_data(TensorData::new(v.clone(), [b, c, h, w]));
        let check = |got: &burn::backend::flex::FlexTensor, what: &str| {
            for (o, (g, w)) in got.as_slice::<f32>().unwrap().iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{what}: channel {o}: {g} vs {w}"
                );
            }
        };
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            check(
                &pool.install(|| flex::channel_sums(&t)),
                &format!("{threads} threads"),
            );
        }
        // the same values stored as [b, c, w, h] and seen through swap_dims(2, 3)
        let swapped: Vec<f32> = (0..v.len())
            .map(|i| {
                let (y, x, rest) = (i % h, (i / h) % w, i / (h * w));
                v[rest * h * w + y * w + x]
            })
            .collect();
        let st = Tensor::<Flex, 4>::from_data(
            TensorData::new(swapped, [b, c, w, h]),
            &Default::default(),
        )
        .swap_dims(2, 3)
        .into_primitive()
        .tensor();
        check(&flex::channel_sums(&st), "strided view");
    }
}
