//! The layers of EDM's networks (Karras et al. 2022, appendix F.2; SPEC §5), each storing its
//! parameters in PyTorch's layout under EDM's names, so that weights move between fdistill
//! and EDM state dicts without reshaping:
//!
//! - [`EdmLinear`]: `y = x Wᵀ + b`, `W` of shape `[out, in]`;
//! - [`EdmConv2d`]: a `k × k` convolution (`k = 0`: none) after an optional ×2 up- or
//!   down-sampling by the separable filter `f fᵀ / (Σf)²` (`[1, 1]`: box, `[1, 3, 3, 1]`:
//!   binomial), the filter exported as the `resample_filter` buffer;
//! - [`EdmGroupNorm`]: GroupNorm with `min(32, C/4)` groups — the one place where every EDM
//!   network normalises, so that a faster kernel can replace its body;
//! - [`positional_embedding`] and [`FourierEmbedding`] of the noise level.
//!
//! Initialisation follows EDM's `weight_init` modes (`xavier_uniform`, `kaiming_uniform`,
//! `kaiming_normal`) scaled by a per-layer gain ([`LayerInit`]). Parameters are created
//! lazily (burn's `Initializer`), so a full-size network can be built to list its names and
//! shapes without allocating its weights ([`EdmPrecond::state_spec`](crate::EdmPrecond::state_spec)).

use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::ops::{self, Modulation};
use crate::state_dict::{EdmMapper, EdmNamed, StateTensor, sub_name};

/// GroupNorm group count of the EDM family: `min(32, C / 4)`.
pub fn group_count(channels: usize) -> usize {
    (channels / 4).min(32)
}

/// An EDM initialisation mode (`training/networks.py`, `weight_init`). With fan-in `n_in` and
/// fan-out `n_out` (for a convolution: channels × k²):
///
/// - `XavierUniform`: `U(−a, a)`, `a = √(6 / (n_in + n_out))`;
/// - `KaimingUniform`: `U(−a, a)`, `a = √(3 / n_in)`;
/// - `KaimingNormal`: `N(0, 1 / n_in)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitMode {
    /// Glorot uniform.
    XavierUniform,
    /// He uniform.
    KaimingUniform,
    /// He normal.
    KaimingNormal,
}

/// How a layer is initialised: a mode and the gains of its weight and bias (`0` gives zeros).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerInit {
    /// The distribution.
    pub mode: InitMode,
    /// Multiplies the weight's draw.
    pub weight: f64,
    /// Multiplies the bias's draw (EDM draws biases from the weight's distribution).
    pub bias: f64,
}

impl LayerInit {
    /// `mode` with weight gain 1 and zero biases.
    pub const fn new(mode: InitMode) -> Self {
        LayerInit {
            mode,
            weight: 1.0,
            bias: 0.0,
        }
    }

    /// The same mode with weight gain `w`.
    pub const fn weight(self, w: f64) -> Self {
        LayerInit { weight: w, ..self }
    }

    /// The same mode with bias gain `b`.
    pub const fn bias(self, b: f64) -> Self {
        LayerInit { bias: b, ..self }
    }

    fn initializer(&self, gain: f64, fan_in: usize, fan_out: usize) -> Initializer {
        if gain == 0.0 {
            return Initializer::Zeros;
        }
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        match self.mode {
            InitMode::XavierUniform => {
                let a = gain * (6.0 / (fi + fo)).sqrt();
                Initializer::Uniform { min: -a, max: a }
            }
            InitMode::KaimingUniform => {
                let a = gain * (3.0 / fi).sqrt();
                Initializer::Uniform { min: -a, max: a }
            }
            InitMode::KaimingNormal => Initializer::Normal {
                mean: 0.0,
                std: gain * (1.0 / fi).sqrt(),
            },
        }
    }

    fn weight_param<B: Backend, const D: usize>(
        &self,
        shape: [usize; D],
        fan_in: usize,
        fan_out: usize,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        self.initializer(self.weight, fan_in, fan_out)
            .init(shape, device)
    }

    fn bias_param<B: Backend>(
        &self,
        n: usize,
        fan_in: usize,
        fan_out: usize,
        device: &B::Device,
    ) -> Param<Tensor<B, 1>> {
        self.initializer(self.bias, fan_in, fan_out)
            .init([n], device)
    }
}

/// A fully connected layer `y = x Wᵀ + b` with `W: [out, in]` (PyTorch's layout).
#[derive(Module, Debug)]
pub struct EdmLinear<B: Backend> {
    /// `[out, in]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> EdmLinear<B> {
    /// A `cin → cout` layer.
    pub fn new(cin: usize, cout: usize, bias: bool, init: LayerInit, device: &B::Device) -> Self {
        EdmLinear {
            weight: init.weight_param([cout, cin], cin, cout, device),
            bias: bias.then(|| init.bias_param(cout, cin, cout, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[b, in]`; returns `[b, out]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = x.matmul(self.weight.val().transpose()); // [b, out]
        match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim::<2>(0),
            None => y,
        }
    }
}

impl<B: Backend> EdmNamed<B> for EdmLinear<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        EdmLinear {
            weight: m.param(&sub_name(name, "weight"), self.weight),
            bias: self.bias.map(|b| m.param(&sub_name(name, "bias"), b)),
        }
    }
}

/// Resampling around a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resample {
    /// None.
    None,
    /// ×2 upsampling (transposed depthwise convolution with `4 f fᵀ / (Σf)²`, stride 2),
    /// then the convolution.
    Up,
    /// ×2 downsampling (depthwise convolution with `f fᵀ / (Σf)²`, stride 2), then the
    /// convolution.
    Down,
    /// The convolution first (padding `k/2 + (len f − 1)/2`), then the stride-2 filter
    /// without padding: EDM's `fused_resample` downsampling.
    FusedDown,
}

/// The resampling filter `f fᵀ / (Σf)²` as EDM's `resample_filter` buffer `[1, 1, n, n]`.
pub fn resample_filter_2d(taps: &[f64]) -> StateTensor {
    let n = taps.len();
    let s: f64 = taps.iter().sum();
    let values = (0..n * n)
        .map(|i| (taps[i / n] * taps[i % n] / (s * s)) as f32)
        .collect();
    StateTensor {
        shape: vec![1, 1, n, n],
        values,
    }
}

fn is_box(taps: &[f64]) -> bool {
    taps.len() == 2 && taps[0] == taps[1]
}

/// The depthwise filter `gain · f fᵀ / (Σf)²` for `channels` channels: `[channels, 1, n, n]`.
fn depthwise_filter<B: Backend>(
    taps: &[f64],
    gain: f32,
    channels: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let f = resample_filter_2d(taps);
    let n = taps.len();
    let values: Vec<f32> = f.values.iter().map(|v| v * gain).collect();
    Tensor::<B, 4>::from_data(TensorData::new(values, [1, 1, n, n]), device).repeat_dim(0, channels) // [c, 1, n, n]
}

/// ×2 downsampling by `f fᵀ / (Σf)²`, stride 2, padding `(n − 1)/2` (the box filter `[1, 1]`
/// is 2×2 average pooling). `pad = false` drops the padding (EDM's fused path).
///
/// # Shapes
/// - `x`: `[b, c, h, w]`; returns `[b, c, h/2, w/2]` (with padding)
pub fn downsample<B: Backend>(x: Tensor<B, 4>, taps: &[f64], pad: bool) -> Tensor<B, 4> {
    let [_, c, _, _] = x.dims();
    let p = if pad { (taps.len() - 1) / 2 } else { 0 };
    if is_box(taps) && p == 0 {
        return ops::avg_pool2(x);
    }
    let f = depthwise_filter::<B>(taps, 1.0, c, &x.device());
    conv2d(x, f, None, ConvOptions::new([2, 2], [p, p], [1, 1], c))
}

/// ×2 upsampling: transposed depthwise convolution with `4 f fᵀ / (Σf)²`, stride 2, padding
/// `(n − 1)/2` (the box filter `[1, 1]` is nearest-neighbour upsampling).
///
/// # Shapes
/// - `x`: `[b, c, h, w]`; returns `[b, c, 2h, 2w]`
pub fn upsample<B: Backend>(x: Tensor<B, 4>, taps: &[f64]) -> Tensor<B, 4> {
    let [_, c, _, _] = x.dims();
    if is_box(taps) {
        return ops::upsample_nearest2(x);
    }
    let p = (taps.len() - 1) / 2;
    let f = depthwise_filter::<B>(taps, 4.0, c, &x.device());
    conv_transpose2d(
        x,
        f,
        None,
        ConvTransposeOptions::new([2, 2], [p, p], [0, 0], [1, 1], c),
    )
}

/// A `k × k` convolution with optional resampling (EDM's `Conv2d`). `k = 0` keeps only the
/// resampling (no parameters), as in ADM's skip path of a resampling block.
#[derive(Module, Debug)]
pub struct EdmConv2d<B: Backend> {
    /// `[out, in, k, k]`; absent for `k = 0`.
    pub weight: Option<Param<Tensor<B, 4>>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    resample: Resample,
    #[module(skip)]
    taps: Vec<f64>,
}

impl<B: Backend> EdmConv2d<B> {
    /// A `cin → cout` convolution with kernel `k` (0: none) and bias, resampled by `taps`.
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        init: LayerInit,
        resample: Resample,
        taps: &[f64],
        device: &B::Device,
    ) -> Self {
        let (fan_in, fan_out) = (cin * k * k, cout * k * k);
        EdmConv2d {
            weight: (k > 0).then(|| init.weight_param([cout, cin, k, k], fan_in, fan_out, device)),
            bias: (k > 0).then(|| init.bias_param(cout, fan_in, fan_out, device)),
            resample,
            taps: taps.to_vec(),
        }
    }

    /// A plain `k × k` convolution with bias.
    pub fn plain(cin: usize, cout: usize, k: usize, init: LayerInit, device: &B::Device) -> Self {
        Self::new(cin, cout, k, init, Resample::None, &[1.0, 1.0], device)
    }

    /// # Shapes
    /// - `x`: `[b, in, h, w]`; returns `[b, out, h', w']` with `h' = 2h` (up), `h/2` (down)
    ///   or `h`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let w = self.weight.as_ref().map(|w| w.val());
        let b = self.bias.as_ref().map(|b| b.val());
        let pad = w.as_ref().map_or(0, |w| w.dims()[3] / 2);
        // the convolution through the op with the fast CPU backward (crate::ops::conv)
        let conv = |x: Tensor<B, 4>, w: Tensor<B, 4>, b: Option<Tensor<B, 1>>, p: usize| {
            ops::conv2d_with(x, w, b, ConvOptions::new([1, 1], [p, p], [1, 1], 1))
        };
        match (self.resample, w) {
            (Resample::FusedDown, Some(w)) => {
                // the filter sums to one and has no padding here: adding the bias before it
                // equals adding it after, so the bias rides in the convolution
                let fp = (self.taps.len() - 1) / 2;
                downsample(conv(x, w, b, pad + fp), &self.taps, false)
            }
            (r, w) => {
                let x = match r {
                    Resample::Up => upsample(x, &self.taps),
                    Resample::Down | Resample::FusedDown => downsample(x, &self.taps, true),
                    Resample::None => x,
                };
                match w {
                    Some(w) => conv(x, w, b, pad),
                    None => x,
                }
            }
        }
    }
}

impl<B: Backend> EdmNamed<B> for EdmConv2d<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        if self.resample != Resample::None {
            m.buffer(
                &sub_name(name, "resample_filter"),
                resample_filter_2d(&self.taps),
            );
        }
        EdmConv2d {
            weight: self.weight.map(|w| m.param(&sub_name(name, "weight"), w)),
            bias: self.bias.map(|b| m.param(&sub_name(name, "bias"), b)),
            resample: self.resample,
            taps: self.taps,
        }
    }
}

/// GroupNorm with `min(32, C/4)` groups and a per-channel affine map:
///
/// $$ y = \gamma \odot \frac{x - \mu_g}{\sqrt{\sigma_g^2 + \epsilon}} + \beta, $$
///
/// `μ_g`, `σ_g²` the mean and (biased) variance over each group's channels and pixels.
/// Every EDM block normalises through this type. It runs the fused op of
/// [`crate::ops::group_norm()`] (GroupNorm, the optional per-sample injection `x + e` or
/// `· (1 + s) + t`, and SiLU as one
/// node with a hand-written backward on the CPU backend; burn's tensor ops elsewhere) on its
/// own parameters, which keep EDM's names `weight`, `bias`.
#[derive(Module, Debug)]
pub struct EdmGroupNorm<B: Backend> {
    /// `γ`, `[C]` (ones at init).
    pub weight: Param<Tensor<B, 1>>,
    /// `β`, `[C]` (zeros at init).
    pub bias: Param<Tensor<B, 1>>,
    #[module(skip)]
    groups: usize,
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> EdmGroupNorm<B> {
    /// GroupNorm over `channels` channels with `ε = eps`.
    pub fn new(channels: usize, eps: f64, device: &B::Device) -> Self {
        EdmGroupNorm {
            weight: Initializer::Ones.init([channels], device),
            bias: Initializer::Zeros.init([channels], device),
            groups: group_count(channels),
            eps,
        }
    }

    /// Groups `G = min(32, C/4)`.
    pub fn groups(&self) -> usize {
        self.groups
    }

    fn run(&self, x: Tensor<B, 4>, modulation: Modulation<B>, act: bool) -> Tensor<B, 4> {
        let [_, c, _, _] = x.dims();
        let [channels] = self.weight.dims();
        assert_eq!(
            c, channels,
            "GroupNorm built for {channels} channels got {c}"
        );
        ops::group_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            self.groups,
            self.eps,
            modulation,
            act,
        )
    }

    /// `GN(x)`.
    ///
    /// # Shapes
    /// - `x`: `[b, c, h, w]`; returns `[b, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.run(x, Modulation::None, false)
    }

    /// `silu(GN(x))`.
    ///
    /// # Shapes
    /// - `x`: `[b, c, h, w]`; returns `[b, c, h, w]`
    pub fn forward_silu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.run(x, Modulation::None, true)
    }

    /// `silu(GN(x + e))`, `e` per sample and channel broadcast over the pixels (the additive
    /// injection of the noise embedding in DDPM++ / NCSN++ blocks), fused into one op.
    ///
    /// # Shapes
    /// - `x`: `[b, c, h, w]`, `e`: `[b, c]`; returns `[b, c, h, w]`
    pub fn forward_injected_silu(&self, x: Tensor<B, 4>, e: Tensor<B, 2>) -> Tensor<B, 4> {
        self.run(x, Modulation::Add(e), true)
    }

    /// `silu(GN(x) · (1 + scale) + shift)`, scale and shift per sample and channel (ADM's
    /// adaptive injection of the noise embedding).
    ///
    /// # Shapes
    /// - `x`: `[b, c, h, w]`, `scale`, `shift`: `[b, c]`; returns `[b, c, h, w]`
    pub fn forward_modulated_silu(
        &self,
        x: Tensor<B, 4>,
        scale: Tensor<B, 2>,
        shift: Tensor<B, 2>,
    ) -> Tensor<B, 4> {
        self.run(x, Modulation::ScaleShift(scale, shift), true)
    }

    /// The same map in plain tensor ops, [`ops::group_norm_reference`]: what the fused path is
    /// tested against.
    ///
    /// # Shapes
    /// - `x`: `[b, c, h, w]`, the [`Modulation`]'s terms `[b, c]` each; returns `[b, c, h, w]`
    pub fn forward_reference(
        &self,
        x: Tensor<B, 4>,
        modulation: Modulation<B>,
        act: bool,
    ) -> Tensor<B, 4> {
        ops::group_norm_reference(
            x,
            self.weight.val(),
            self.bias.val(),
            self.groups,
            self.eps,
            modulation,
            act,
        )
    }
}

impl<B: Backend> EdmNamed<B> for EdmGroupNorm<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        EdmGroupNorm {
            weight: m.param(&sub_name(name, "weight"), self.weight),
            bias: m.param(&sub_name(name, "bias"), self.bias),
            groups: self.groups,
            eps: self.eps,
        }
    }
}

/// EDM's positional embedding of the noise level, cosines then sines:
///
/// $$ e(c) = [\cos(\omega_0 c), \dots, \cos(\omega_{h-1} c), \sin(\omega_0 c), \dots,
///    \sin(\omega_{h-1} c)],\quad \omega_i = P^{-i / (h - \delta)},\ h = \text{channels}/2, $$
///
/// with `δ = 1` when `endpoint` (SongUNet: the last frequency is exactly `1/P`) and `0`
/// otherwise (ADM), `P = max_positions` (10 000 in EDM).
///
/// # Shapes
/// - `c_noise`: `[b]`; returns `[b, channels]`
pub fn positional_embedding<B: Backend>(
    c_noise: Tensor<B, 1>,
    channels: usize,
    max_positions: f64,
    endpoint: bool,
) -> Tensor<B, 2> {
    let half = channels / 2;
    let denom = (half - usize::from(endpoint)).max(1) as f64;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (1.0 / max_positions).powf(i as f64 / denom) as f32)
        .collect();
    let freqs = Tensor::<B, 1>::from_floats(freqs.as_slice(), &c_noise.device()).unsqueeze_dim(0); // [1, half]
    let arg = c_noise.unsqueeze_dim::<2>(1) * freqs; // [b, half]
    Tensor::cat(vec![arg.clone().cos(), arg.sin()], 1) // [b, channels]
}

/// Random Fourier features of the noise level (NCSN++), cosines then sines:
/// `e(c) = [cos(2π f c), sin(2π f c)]` with fixed frequencies `f ~ N(0, 16²)` drawn at
/// initialisation (EDM's `map_noise.freqs` buffer; a parameter that never trains here, so
/// that it is saved, loaded and exported with the weights).
#[derive(Module, Debug)]
pub struct FourierEmbedding<B: Backend> {
    /// `f`, `[channels / 2]`.
    pub freqs: Param<Tensor<B, 1>>,
}

impl<B: Backend> FourierEmbedding<B> {
    /// `channels` features (`channels / 2` frequencies of scale 16).
    pub fn new(channels: usize, device: &B::Device) -> Self {
        FourierEmbedding {
            freqs: Initializer::Normal {
                mean: 0.0,
                std: 16.0,
            }
            .init([channels / 2], device)
            .set_require_grad(false),
        }
    }

    /// # Shapes
    /// - `c_noise`: `[b]`; returns `[b, channels]`
    pub fn forward(&self, c_noise: Tensor<B, 1>) -> Tensor<B, 2> {
        let f = self
            .freqs
            .val()
            .mul_scalar(2.0 * std::f64::consts::PI)
            .unsqueeze_dim::<2>(0); // [1, half]
        let arg = c_noise.unsqueeze_dim::<2>(1) * f; // [b, half]
        Tensor::cat(vec![arg.clone().cos(), arg.sin()], 1) // [b, channels]
    }
}

impl<B: Backend> EdmNamed<B> for FourierEmbedding<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        FourierEmbedding {
            freqs: m.stored_buffer(&sub_name(name, "freqs"), self.freqs),
        }
    }
}

/// Swaps the two halves of an embedding: `[cos, sin] → [sin, cos]` (SongUNet's order).
///
/// # Shapes
/// - `e`: `[b, 2h]`; returns `[b, 2h]`
pub fn swap_halves<B: Backend>(e: Tensor<B, 2>) -> Tensor<B, 2> {
    let [_, n] = e.dims();
    let h = n / 2;
    Tensor::cat(vec![e.clone().narrow(1, h, n - h), e.narrow(1, 0, h)], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    type B = Flex;

    fn vec4(t: Tensor<B, 4>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Direct evaluation of a stride-2 depthwise correlation with zero padding `p`.
    fn correlate_stride2(x: &[f32], h: usize, f: &[f32], n: usize, p: usize) -> Vec<f32> {
        let ho = (h + 2 * p - n) / 2 + 1;
        let mut out = vec![0.0; ho * ho];
        for i in 0..ho {
            for j in 0..ho {
                let mut s = 0.0;
                for a in 0..n {
                    for b in 0..n {
                        let (y, xx) = (
                            (2 * i + a) as isize - p as isize,
                            (2 * j + b) as isize - p as isize,
                        );
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < h {
                            s += x[y as usize * h + xx as usize] * f[a * n + b];
                        }
                    }
                }
                out[i * ho + j] = s;
            }
        }
        out
    }

    #[test]
    fn group_count_and_filters() {
        assert_eq!([8, 16, 96, 128, 256].map(group_count), [2, 4, 24, 32, 32]);
        let f = resample_filter_2d(&[1.0, 3.0, 3.0, 1.0]);
        assert_eq!(f.shape, vec![1, 1, 4, 4]);
        assert_eq!(f.values[0], 1.0 / 64.0);
        assert_eq!(f.values[5], 9.0 / 64.0);
        assert!((f.values.iter().sum::<f32>() - 1.0).abs() < 1e-7);
        assert_eq!(resample_filter_2d(&[1.0, 1.0]).values, vec![0.25; 4]);
    }

    #[test]
    fn resampling_matches_direct_sums() {
        let _rng = crate::test_rng::seeded(100);
        let device = Default::default();
        let x = Tensor::<B, 4>::random([1, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let xv = vec4(x.clone());
        for taps in [vec![1.0, 1.0], vec![1.0, 3.0, 3.0, 1.0]] {
            let n = taps.len();
            let f = resample_filter_2d(&taps).values;
            let got = vec4(downsample(x.clone(), &taps, true));
            let want = correlate_stride2(&xv, 8, &f, n, (n - 1) / 2);
            assert_eq!(got.len(), 16);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{taps:?}: {g} vs {w}");
            }
            // Upsampling is the adjoint of downsampling times 4: <up(y), x> = 4 <y, down(x)>.
            let y = Tensor::<B, 4>::random([1, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device);
            let up = vec4(upsample(y.clone(), &taps));
            assert_eq!(up.len(), 64);
            let lhs: f32 = up.iter().zip(&xv).map(|(a, b)| a * b).sum();
            let rhs: f32 = 4.0 * vec4(y).iter().zip(&got).map(|(a, b)| a * b).sum::<f32>();
            assert!(
                (lhs - rhs).abs() < 1e-4 * rhs.abs().max(1.0),
                "{taps:?}: {lhs} vs {rhs}"
            );
        }
        // The box filter upsamples by repetition.
        let y = Tensor::<B, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
        let want = [
            1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.,
        ];
        assert_eq!(vec4(upsample(y, &[1.0, 1.0])), want);
    }

    #[test]
    fn group_norm_matches_a_scalar_computation() {
        let _rng = crate::test_rng::seeded(101);
        let device = Default::default();
        let gn = EdmGroupNorm::<B>::new(8, 1e-6, &device); // 2 groups of 4 channels
        let x = Tensor::<B, 4>::random([2, 8, 3, 3], Distribution::Normal(1.0, 2.0), &device);
        let xv = vec4(x.clone());
        let got = vec4(gn.forward(x));
        for b in 0..2 {
            for g in 0..2 {
                let s = &xv[b * 72 + g * 36..b * 72 + (g + 1) * 36];
                let m = s.iter().map(|v| *v as f64).sum::<f64>() / 36.0;
                let v = s.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / 36.0;
                for (i, xi) in s.iter().enumerate() {
                    let want = (*xi as f64 - m) / (v + 1e-6).sqrt();
                    assert!((got[b * 72 + g * 36 + i] as f64 - want).abs() < 1e-4);
                }
            }
        }
    }

    type A = burn::backend::Autodiff<Flex>;

    fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    use crate::grad_check::assert_close;

    /// A fixed, non-trivial cotangent for `L = Σ y ⊙ w`.
    fn cotangent<Bk: Backend>(dims: [usize; 4], device: &Bk::Device) -> Tensor<Bk, 4> {
        let n: usize = dims.iter().product();
        let w: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4).collect();
        Tensor::from_data(TensorData::new(w, dims), device)
    }

    /// EDM's GroupNorm (`min(32, C/4)` groups, names `weight`/`bias`, ε = 10⁻⁶) through the
    /// fused op equals the plain tensor-op formula in value and in the gradients of the input,
    /// `weight`, `bias` and the modulation, in all four forms the networks use.
    #[test]
    fn fused_group_norm_equals_the_plain_formula_with_gradients() {
        let _rng = crate::test_rng::seeded(5);
        let device = Default::default();
        let (b, c, h, w) = (3, 12, 4, 3); // 3 groups of 4 channels
        let mut gn = EdmGroupNorm::<A>::new(c, 1e-6, &device);
        assert_eq!(gn.groups(), 3);
        gn.weight = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(0.5, 1.5),
            &device,
        ));
        gn.bias = Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(-0.5, 0.5),
            &device,
        ));
        let x = Tensor::<A, 4>::random([b, c, h, w], Distribution::Uniform(0.5, 3.0), &device);
        // scale and shift as the ADM block makes them: narrowed views of one projection
        let p = Tensor::<A, 2>::random([b, 2 * c], Distribution::Uniform(-0.5, 0.5), &device);
        // 0: GN, 1: silu(GN), 2: ADM's silu(GN·(1 + s) + t), 3: DDPM++'s silu(GN(x + e))
        for form in 0..4 {
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let p = p.clone().detach().require_grad();
                let m = match form {
                    2 => {
                        Modulation::ScaleShift(p.clone().narrow(1, 0, c), p.clone().narrow(1, c, c))
                    }
                    3 => Modulation::Add(p.clone().narrow(1, c, c)),
                    _ => Modulation::None,
                };
                let act = form > 0;
                let y = if !fused {
                    gn.forward_reference(x.clone(), m, act)
                } else {
                    match m {
                        Modulation::ScaleShift(s, t) => gn.forward_modulated_silu(x.clone(), s, t),
                        Modulation::Add(e) => gn.forward_injected_silu(x.clone(), e),
                        Modulation::None if act => gn.forward_silu(x.clone()),
                        Modulation::None => gn.forward(x.clone()),
                    }
                };
                let grads = (y.clone() * cotangent::<A>([b, c, h, w], &device))
                    .sum()
                    .backward();
                let g = |t: Option<Tensor<Flex, 1>>| t.map(host).unwrap_or_default();
                (
                    host(y),
                    host(x.grad(&grads).unwrap()),
                    g(gn.weight.val().grad(&grads)),
                    g(gn.bias.val().grad(&grads)),
                    p.grad(&grads).map(host).unwrap_or_default(),
                )
            };
            let (fast, plain) = (run(true), run(false));
            assert_close(&format!("y, form {form}"), &fast.0, &plain.0, 1e-5);
            assert_close(&format!("dx, form {form}"), &fast.1, &plain.1, 1e-4);
            assert_close(&format!("dweight, form {form}"), &fast.2, &plain.2, 1e-4);
            assert_close(&format!("dbias, form {form}"), &fast.3, &plain.3, 1e-4);
            assert_eq!(
                fast.4.is_empty(),
                form < 2,
                "modulation gradient, form {form}"
            );
            assert_close(
                &format!("dscale|dshift|de, form {form}"),
                &fast.4,
                &plain.4,
                1e-4,
            );
        }
    }

    /// The gradient of `L = Σ w ⊙ silu(GN(x)(1 + s) + t)` through `EdmGroupNorm` on the
    /// autodiff backend equals central finite differences of the forward pass on the plain
    /// backend (both the fused kernels), for `x`, `weight`, `bias`, `s` and `t`.
    #[test]
    fn fused_group_norm_gradients_match_finite_differences() {
        let device = Default::default();
        let (b, c, h, w) = (2, 8, 3, 2); // 2 groups
        let n = b * c * h * w;
        let mk = |n: usize, k: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..n)
                .map(|i| lo + (hi - lo) * (((i * k + 3) % 17) as f32 / 16.0))
                .collect()
        };
        let base = [
            mk(n, 5, 0.5, 3.0),
            mk(c, 3, 0.5, 1.5),
            mk(c, 7, -0.5, 0.5),
            mk(b * c, 11, -0.5, 0.5),
            mk(b * c, 13, -0.5, 0.5),
        ];
        let cot = host(cotangent::<Flex>([b, c, h, w], &device));
        let loss = |v: &[Vec<f32>]| -> f64 {
            let mut gn = EdmGroupNorm::<Flex>::new(c, 1e-6, &device);
            gn.weight = Param::from_tensor(Tensor::from_floats(v[1].as_slice(), &device));
            gn.bias = Param::from_tensor(Tensor::from_floats(v[2].as_slice(), &device));
            let x = Tensor::from_data(TensorData::new(v[0].clone(), [b, c, h, w]), &device);
            let s = Tensor::from_data(TensorData::new(v[3].clone(), [b, c]), &device);
            let t = Tensor::from_data(TensorData::new(v[4].clone(), [b, c]), &device);
            host(gn.forward_modulated_silu(x, s, t))
                .iter()
                .zip(&cot)
                .map(|(a, w)| (a * w) as f64)
                .sum()
        };
        // analytic, on the autodiff backend
        let mut gn = EdmGroupNorm::<A>::new(c, 1e-6, &device);
        gn.weight = Param::from_tensor(Tensor::from_floats(base[1].as_slice(), &device));
        gn.bias = Param::from_tensor(Tensor::from_floats(base[2].as_slice(), &device));
        let x = Tensor::<A, 4>::from_data(TensorData::new(base[0].clone(), [b, c, h, w]), &device)
            .require_grad();
        let s = Tensor::<A, 2>::from_data(TensorData::new(base[3].clone(), [b, c]), &device)
            .require_grad();
        let t = Tensor::<A, 2>::from_data(TensorData::new(base[4].clone(), [b, c]), &device)
            .require_grad();
        let y = gn.forward_modulated_silu(x.clone(), s.clone(), t.clone());
        let grads = (y * cotangent::<A>([b, c, h, w], &device)).sum().backward();
        let analytic = [
            host(x.grad(&grads).unwrap()),
            host(gn.weight.val().grad(&grads).unwrap()),
            host(gn.bias.val().grad(&grads).unwrap()),
            host(s.grad(&grads).unwrap()),
            host(t.grad(&grads).unwrap()),
        ];
        let eps = 1e-2f32;
        for (k, name) in ["x", "weight", "bias", "scale", "shift"].iter().enumerate() {
            let idx: Vec<usize> = if k == 0 {
                (0..base[0].len()).step_by(7).collect()
            } else {
                (0..base[k].len()).collect()
            };
            for i in idx {
                let bump = |sign: f32| {
                    let mut v = base.to_vec();
                    v[k][i] += sign * eps;
                    loss(&v)
                };
                let fd = (bump(1.0) - bump(-1.0)) / (2.0 * eps as f64);
                let an = analytic[k][i] as f64;
                assert!(
                    (fd - an).abs() <= 2e-3 + 2e-2 * an.abs(),
                    "{name}[{i}]: analytic {an} vs finite differences {fd}"
                );
            }
        }
    }

    /// `EdmConv2d` (the convolution through `ops::conv2d_with`, the bias inside it) equals
    /// the plain formula `conv2d(resample(x), W) + b` (or EDM's fused order) in value and in
    /// the gradients of `x`, `weight` and `bias`, for every resampling mode and both filters.
    #[test]
    fn conv_equals_the_plain_formula_with_gradients() {
        let _rng = crate::test_rng::seeded(9);
        let device = Default::default();
        let init = LayerInit::new(InitMode::KaimingNormal).bias(1.0);
        let modes = [
            (Resample::None, 3, vec![1.0, 1.0]),
            (Resample::None, 1, vec![1.0, 1.0]),
            (Resample::Up, 3, vec![1.0, 1.0]),
            (Resample::Down, 3, vec![1.0, 1.0]),
            (Resample::Up, 3, vec![1.0, 3.0, 3.0, 1.0]),
            (Resample::Down, 1, vec![1.0, 3.0, 3.0, 1.0]),
            (Resample::FusedDown, 3, vec![1.0, 3.0, 3.0, 1.0]),
            (Resample::FusedDown, 3, vec![1.0, 1.0]),
        ];
        for (mode, k, taps) in modes {
            let conv = EdmConv2d::<A>::new(3, 5, k, init, mode, &taps, &device);
            let x = Tensor::<A, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
            let wv = conv.weight.as_ref().unwrap().val();
            let bv = conv.bias.as_ref().unwrap().val();
            let plain = |x: Tensor<A, 4>| {
                let c = |x: Tensor<A, 4>, p: usize| {
                    conv2d(
                        x,
                        wv.clone(),
                        None,
                        ConvOptions::new([1, 1], [p, p], [1, 1], 1),
                    )
                };
                let y = match mode {
                    Resample::None => c(x, k / 2),
                    Resample::Up => c(upsample(x, &taps), k / 2),
                    Resample::Down => c(downsample(x, &taps, true), k / 2),
                    Resample::FusedDown => {
                        downsample(c(x, k / 2 + (taps.len() - 1) / 2), &taps, false)
                    }
                };
                y + bv.clone().reshape([1, 5, 1, 1])
            };
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fused {
                    conv.forward(x.clone())
                } else {
                    plain(x.clone())
                };
                let grads = (y.clone() * cotangent::<A>(y.dims(), &device))
                    .sum()
                    .backward();
                [
                    host(y),
                    host(x.grad(&grads).unwrap()),
                    host(wv.grad(&grads).unwrap()),
                    host(bv.grad(&grads).unwrap()),
                ]
            };
            let (fast, slow) = (run(true), run(false));
            for (name, (a, b)) in ["y", "dx", "dweight", "dbias"]
                .iter()
                .zip(fast.iter().zip(&slow))
            {
                assert_close(&format!("{name} ({mode:?}, k {k}, {taps:?})"), a, b, 1e-4);
            }
        }
    }

    #[test]
    fn embeddings_match_their_formulas() {
        let device = Default::default();
        let c = Tensor::<B, 1>::from_floats([-1.3, 0.0, 0.7], &device);
        let v = positional_embedding(c.clone(), 8, 10_000.0, true)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (b, cb) in [-1.3f64, 0.0, 0.7].iter().enumerate() {
            for i in 0..4 {
                let w = (1e-4f64).powf(i as f64 / 3.0); // endpoint: ω_3 = 1/P
                assert!((v[b * 8 + i] as f64 - (cb * w).cos()).abs() < 1e-5);
                assert!((v[b * 8 + 4 + i] as f64 - (cb * w).sin()).abs() < 1e-5);
            }
        }
        let sw = swap_halves(positional_embedding(c, 8, 10_000.0, true))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(sw[0..4], v[4..8]);
        assert_eq!(sw[4..8], v[0..4]);
    }

    #[test]
    fn conv_shapes_with_resampling() {
        let _rng = crate::test_rng::seeded(104);
        let device = Default::default();
        let init = LayerInit::new(InitMode::XavierUniform);
        let x = Tensor::<B, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let taps = [1.0, 3.0, 3.0, 1.0];
        for (r, side) in [
            (Resample::None, 8),
            (Resample::Up, 16),
            (Resample::Down, 4),
            (Resample::FusedDown, 4),
        ] {
            let c = EdmConv2d::<B>::new(4, 6, 3, init, r, &taps, &device);
            assert_eq!(c.forward(x.clone()).dims(), [2, 6, side, side], "{r:?}");
        }
        let c = EdmConv2d::<B>::new(4, 4, 0, init, Resample::Down, &taps, &device);
        assert!(c.weight.is_none() && c.bias.is_none());
        assert_eq!(c.forward(x).dims(), [2, 4, 4, 4]);
    }
}
