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

/// `conv.forward(x)`, with the fast backward on `Autodiff<Flex>` for ungrouped convolutions
/// with symmetric explicit or no padding (every convolution of the UNet and its heads).
///
/// # Shapes
/// - `x`: `[b, c_in, h, w]`; returns `[b, c_out, h', w']`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::{Autodiff, Flex};
        use std::any::TypeId;
        let padding = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => Some([t, l]),
            PaddingConfig2d::Valid => Some([0, 0]),
            _ => None,
        };
        if let Some(padding) = padding
            && conv.groups == 1
            && TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>()
        {
            let options = burn::tensor::ops::ConvOptions::new(
                conv.stride,
                padding,
                conv.dilation,
                conv.groups,
            );
            let out = flex::autodiff_conv2d(
                super::same(x),
                super::same(conv.weight.val()),
                conv.bias.as_ref().map(|b| super::same(b.val())),
                options,
            );
            return super::same(out);
        }
    }
    conv.forward(x)
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
