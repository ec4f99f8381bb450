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
//! (docs/performance.md). Here the swap is a row-by-row `memcpy` (each `[h·w]` plane is
//! contiguous in both layouts) and the bias gradient is a direct per-channel sum; the input
//! gradient and the convolutions themselves are burn-flex's own. On `Autodiff<Flex>` this runs
//! as one graph node; on every other backend [`conv2d`] is `burn::nn::conv::Conv2d::forward`.
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
    }
    burn::tensor::module::conv2d(x, weight, bias, options)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::ops::{ConvOptions, ModuleOps};
    use burn::tensor::{Slice, Tensor, TensorData, TensorMetadata, TensorPrimitive};

    type Ad = Autodiff<Flex>;

    /// `[a, b, rest…]` → `[b, a, rest…]`, contiguous, by whole `rest` rows.
    pub(super) fn swap01(t: &FlexTensor) -> FlexTensor {
        let shape = t.shape().to_vec();
        let (a, b) = (shape[0], shape[1]);
        let row: usize = shape[2..].iter().product();
        let contiguous;
        let src = match t.as_slice::<f32>() {
            Some(s) => s,
            None => {
                contiguous = t.to_contiguous();
                contiguous.as_slice::<f32>().expect("contiguous")
            }
        };
        let mut out = vec![0.0f32; src.len()];
        for i in 0..a {
            for j in 0..b {
                let from = (i * b + j) * row;
                let to = (j * a + i) * row;
                out[to..to + row].copy_from_slice(&src[from..from + row]);
            }
        }
        let mut new_shape = shape;
        new_shape.swap(0, 1);
        FlexTensor::from_data(TensorData::new(out, new_shape))
    }

    /// `Σ_{b, p} g[b, o, p]` for every channel `o`.
    pub(super) fn channel_sums(g: &FlexTensor) -> FlexTensor {
        let shape = g.shape().to_vec();
        let (b, c) = (shape[0], shape[1]);
        let row: usize = shape[2..].iter().product();
        let contiguous;
        let src = match g.as_slice::<f32>() {
            Some(s) => s,
            None => {
                contiguous = g.to_contiguous();
                contiguous.as_slice::<f32>().expect("contiguous")
            }
        };
        let mut sums = vec![0.0f64; c];
        for bi in 0..b {
            for (o, s) in sums.iter_mut().enumerate() {
                let off = (bi * c + o) * row;
                *s += src[off..off + row].iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        let sums: Vec<f32> = sums.into_iter().map(|v| v as f32).collect();
        FlexTensor::from_data(TensorData::new(sums, vec![c]))
    }

    /// The weight gradient: burn's formula (a convolution of the swapped `x` and `∂L/∂y`,
    /// stride and dilation exchanged), with [`swap01`] for the swaps.
    pub(super) fn weight_grad(
        x: &FlexTensor,
        grad: &FlexTensor,
        weight_shape: &[usize],
        options: &ConvOptions<2>,
    ) -> FlexTensor {
        let swapped = <Flex as ModuleOps<Flex>>::conv2d(
            swap01(x),
            swap01(grad),
            None,
            ConvOptions::new(options.dilation, options.padding, options.stride, 1),
        ); // [c_in, c_out, k', k']
        let mut w = swap01(&swapped);
        if w.shape().to_vec()[..] != weight_shape[..] {
            let t = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(w));
            let ranges: Vec<Slice> = weight_shape.iter().map(|&n| Slice::from(0..n)).collect();
            w = t.slice(ranges.as_slice()).into_primitive().tensor();
        }
        w
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
            if let Some(node) = pw {
                let shape = weight.shape().to_vec();
                grads.register::<Flex>(node.id, weight_grad(&x, &grad, &shape, &options));
            }
            if let Some(node) = px {
                let dx = <Flex as ModuleOps<Flex>>::conv2d_x_backward(x, weight, grad, options);
                grads.register::<Flex>(node.id, dx);
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
            <Flex as ModuleOps<Flex>>::conv2d(x, w, has_bias.then_some(b), options.clone())
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
    fn swap_and_channel_sums_match_a_direct_computation() {
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t = burn::backend::flex::FlexTensor::from_data(TensorData::new(v, [2, 3, 4]));
        let s = flex::swap01(&t);
        let got = s.as_slice::<f32>().unwrap();
        for i in 0..2 {
            for j in 0..3 {
                for p in 0..4 {
                    assert_eq!(got[(j * 2 + i) * 4 + p], ((i * 3 + j) * 4 + p) as f32);
                }
            }
        }
        let sums = flex::channel_sums(&t);
        // channel o: Σ_b Σ_p (b·12 + o·4 + p) = 2·(4·o·4 + 6) + 4·12 = 32 o + 60
        let want: Vec<f32> = (0..3).map(|o| (32 * o + 60) as f32).collect();
        assert_eq!(sums.as_slice::<f32>().unwrap(), want.as_slice());
    }
}
