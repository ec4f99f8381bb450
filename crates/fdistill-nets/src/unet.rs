//! An EDM-preconditioned UNet for images, from the DDPM++ / SongUNet family (Song et al.
//! 2021; Karras et al. 2022, `training/networks.py`; SPEC §5), cut down to what a CPU can
//! train.
//!
//! ```text
//! D(x; σ, y) = c_skip x + c_out F(c_in x; c_noise, y)                       x: [b, c·r·r]
//! F:  emb = SiLU(W_1 SiLU(W_0 (sinusoidal(c_noise) + E_label[y])))         [b, 4·mc]
//!     h   = conv_in(x)                                                      [b, mc, r, r]
//!     encoder, level l = 0..L−1 (resolution r/2^l, channels mc·mult_l):
//!         num_blocks × ResBlock(h, emb) [+ self-attention at attn_resolutions]
//!         → tap_l (the discriminator's feature map), then a stride-2 conv (not after the last)
//!     middle: ResBlock + attention, ResBlock
//!     decoder, levels reversed: (num_blocks + 1) × ResBlock(cat(h, skip)), nearest ×2 + conv
//!     F   = conv_out(SiLU(GroupNorm(h)))    (conv_out zero-initialised: D = c_skip x at init)
//! ResBlock(x, emb) = √½ · (skip(x) + conv1(dropout(SiLU(GN(conv0(SiLU(GN(x)))) · (1 + s) + t))))
//!     with (s, t) = Linear(emb): the noise embedding injected as a scale and shift.
//! ```
//!
//! GroupNorm everywhere uses `groups = min(32, C/4)` ([`group_count`]).
//!
//! **Resolution.** Fashion-MNIST's 28×28 images are padded with background (−1) to 32×32
//! (`fdistill_data::pad_images`): 32 halves cleanly three times (32 → 16 → 8), so every
//! level has an even size, the encoder taps are 32×32, 16×16 and 8×8 as in SongUNet's
//! CIFAR-10 configuration, and the discriminator heads end at 8×8 as SPEC §2 describes. 28
//! would give 28 → 14 → 7 and an odd bottleneck.
//!
//! All samples travel flat (`[batch, channels · resolution²]`, the [`Denoiser`] contract);
//! [`UNet::forward_with_features`] reshapes to `[batch, channels, resolution, resolution]`
//! inside.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use fdistill_core::EdmDenoiser;
use fdistill_core::ratio::FeatureMap;
use fdistill_core::{Denoiser, FeatureDenoiser};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::edm::edm_scalings_tensor;
use crate::embedding::check_embedding_period;
use crate::embedding::sinusoidal_embedding;
use crate::ops::{GroupNorm, GroupNormConfig, conv2d};

/// An invalid UNet configuration.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("invalid UNet config: {0}")]
pub struct UNetConfigError(pub String);

/// GroupNorm group count of the DDPM++ family: `min(32, C / 4)`.
pub fn group_count(channels: usize) -> usize {
    (channels / 4).min(32)
}

/// Configuration of [`UNet`], saved in the run directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Side of the (square) input images.
    pub resolution: usize,
    /// Image channels (1 grey, 3 RGB).
    pub channels: usize,
    /// Base channel count `mc`.
    pub model_channels: usize,
    /// Channel multiplier per level; level `l` runs at `resolution / 2^l`.
    pub channel_mult: Vec<usize>,
    /// Residual blocks per encoder level (the decoder has one more per level).
    pub num_blocks: usize,
    /// Resolutions whose blocks get self-attention (the middle always has one).
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability inside the residual blocks (training only).
    pub dropout: f64,
    /// Number of classes for a label embedding; `None` for an unconditional net.
    pub n_classes: Option<usize>,
    /// Maximum period of the sinusoidal noise embedding.
    pub embedding_max_period: f64,
    /// EDM's σ_data (0.5 for images in [−1, 1]).
    pub sigma_data: f64,
}

/// Shape of one encoder tap: `[batch, channels, resolution, resolution]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapShape {
    /// Channels.
    pub channels: usize,
    /// Side.
    pub resolution: usize,
}

impl UNetConfig {
    /// Tiny test configuration: 8×8 grey images, two levels (8×8, 4×4), 8 base channels,
    /// attention at 4×4, 3 classes. Builds and runs in milliseconds.
    pub fn tiny() -> Self {
        UNetConfig {
            resolution: 8,
            channels: 1,
            model_channels: 8,
            channel_mult: vec![1, 2],
            num_blocks: 1,
            attn_resolutions: vec![4],
            dropout: 0.0,
            n_classes: Some(3),
            embedding_max_period: 10_000.0,
            sigma_data: 0.5,
        }
    }

    /// Fashion-MNIST (padded to 32×32, 10 classes) at a size a 2-core CPU trains in minutes:
    /// 32 base channels, levels 32/16/8 with multipliers 1, 2, 2, one block per level,
    /// attention only in the middle, no dropout (short runs underfit; dropout would only
    /// slow them). About 1.0 M parameters.
    pub fn fashion_mnist_small() -> Self {
        UNetConfig {
            resolution: 32,
            channels: 1,
            model_channels: 32,
            channel_mult: vec![1, 2, 2],
            num_blocks: 1,
            attn_resolutions: vec![],
            dropout: 0.0,
            n_classes: Some(10),
            embedding_max_period: 10_000.0,
            sigma_data: 0.5,
        }
    }

    /// Fashion-MNIST at the scale of EDM's CIFAR-10 DDPM++ recipe, halved for a 1-channel
    /// 32×32 data set (64 base channels, multipliers 1, 2, 2, two blocks per level,
    /// attention at 16×16, dropout 0.13 as EDM's CIFAR-10 config). For a GPU.
    pub fn fashion_mnist() -> Self {
        UNetConfig {
            model_channels: 64,
            num_blocks: 2,
            attn_resolutions: vec![16],
            dropout: 0.13,
            ..Self::fashion_mnist_small()
        }
    }

    /// A preset by name: `tiny`, `fashion-mnist-small`, `fashion-mnist`.
    pub fn preset(name: &str) -> Result<Self, UNetConfigError> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "fashion-mnist-small" => Ok(Self::fashion_mnist_small()),
            "fashion-mnist" => Ok(Self::fashion_mnist()),
            other => Err(UNetConfigError(format!(
                "unknown UNet preset `{other}`; known: {}",
                Self::PRESETS.join(", ")
            ))),
        }
    }

    /// Names accepted by [`preset`](Self::preset).
    pub const PRESETS: [&'static str; 3] = ["fashion-mnist", "fashion-mnist-small", "tiny"];

    /// Flattened data dimension `channels · resolution²`.
    pub fn dim(&self) -> usize {
        self.channels * self.resolution * self.resolution
    }

    /// Channels of the noise embedding `4 · mc`.
    pub fn emb_channels(&self) -> usize {
        4 * self.model_channels
    }

    /// Shapes of the encoder taps, one per level.
    pub fn tap_shapes(&self) -> Vec<TapShape> {
        self.channel_mult
            .iter()
            .enumerate()
            .map(|(l, m)| TapShape {
                channels: self.model_channels * m,
                resolution: self.resolution >> l,
            })
            .collect()
    }

    /// Every residual block as `(in, out, resolution, attention)`: encoder levels, middle,
    /// decoder levels (in that order), with the skip-connection channel bookkeeping of SongUNet.
    fn plan(&self) -> Plan {
        let mc = self.model_channels;
        let levels = self.channel_mult.len();
        let mut skips = vec![mc];
        let mut cout = mc;
        let mut plan = Plan::default();
        for (l, m) in self.channel_mult.iter().enumerate() {
            let res = self.resolution >> l;
            let attn = self.attn_resolutions.contains(&res);
            let mut blocks = Vec::new();
            for _ in 0..self.num_blocks {
                blocks.push(BlockSpec {
                    cin: cout,
                    cout: mc * m,
                    attn,
                });
                cout = mc * m;
                skips.push(cout);
            }
            let down = (l + 1 < levels).then_some(cout);
            if down.is_some() {
                skips.push(cout);
            }
            plan.encoder.push((blocks, down));
        }
        plan.middle = vec![
            BlockSpec {
                cin: cout,
                cout,
                attn: true,
            },
            BlockSpec {
                cin: cout,
                cout,
                attn: false,
            },
        ];
        for (l, m) in self.channel_mult.iter().enumerate().rev() {
            let res = self.resolution >> l;
            let attn = self.attn_resolutions.contains(&res);
            let mut blocks = Vec::new();
            for _ in 0..=self.num_blocks {
                let skip = skips.pop().expect("one skip per decoder block");
                blocks.push(BlockSpec {
                    cin: cout + skip,
                    cout: mc * m,
                    attn,
                });
                cout = mc * m;
            }
            let up = (l > 0).then_some(cout);
            plan.decoder.push((blocks, up));
        }
        plan.out_channels = cout;
        plan
    }

    /// Validates the configuration; call before building the network.
    pub fn check(&self) -> Result<(), UNetConfigError> {
        let err = |m: String| Err(UNetConfigError(m));
        if self.channels == 0 || self.model_channels == 0 || self.num_blocks == 0 {
            return err(format!(
                "channels ({}), model_channels ({}) and num_blocks ({}) must be ≥ 1",
                self.channels, self.model_channels, self.num_blocks
            ));
        }
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return err(format!(
                "channel_mult must list ≥ 1 positive multiplier per level, got {:?}",
                self.channel_mult
            ));
        }
        let halvings = self.channel_mult.len() - 1;
        if self.resolution == 0 || !self.resolution.is_multiple_of(1 << halvings) {
            return err(format!(
                "resolution {} cannot be halved {halvings} times ({} levels); pad the images \
                 or use fewer levels",
                self.resolution,
                self.channel_mult.len()
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.n_classes == Some(0) {
            return err("n_classes must be ≥ 1 or absent".into());
        }
        if let Err(m) = check_embedding_period(self.embedding_max_period) {
            return err(m);
        }
        if !(self.sigma_data.is_finite() && self.sigma_data > 0.0) {
            return err(format!(
                "sigma_data must be a positive number, got {}",
                self.sigma_data
            ));
        }
        if !self.model_channels.is_multiple_of(2) {
            return err(format!(
                "model_channels must be even (it sizes the sinusoidal embedding), got {}",
                self.model_channels
            ));
        }
        let plan = self.plan();
        let all = plan
            .encoder
            .iter()
            .chain(&plan.decoder)
            .flat_map(|(b, _)| b)
            .chain(&plan.middle);
        for b in all {
            for c in [b.cin, b.cout] {
                let g = group_count(c);
                if g == 0 || !c.is_multiple_of(g) {
                    return err(format!(
                        "a block has {c} channels, which GroupNorm with min(32, C/4) groups \
                         cannot split evenly; use model_channels that are multiples of 32"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Builds the network on `device`. Call [`check`](Self::check) first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet<B> {
        let mc = self.model_channels;
        let emb = self.emb_channels();
        let plan = self.plan();
        let block = |s: &BlockSpec| ResBlock::new(s, emb, self.dropout, device);
        UNet {
            map_label: self
                .n_classes
                .map(|n| EmbeddingConfig::new(n, mc).init(device)),
            map_layer0: LinearConfig::new(mc, emb).init(device),
            map_layer1: LinearConfig::new(emb, emb).init(device),
            conv_in: conv3x3(self.channels, mc, device),
            encoder: plan
                .encoder
                .iter()
                .map(|(blocks, down)| EncoderLevel {
                    blocks: blocks.iter().map(block).collect(),
                    down: down.map(|c| {
                        Conv2dConfig::new([c, c], [3, 3])
                            .with_stride([2, 2])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .init(device)
                    }),
                })
                .collect(),
            middle: plan.middle.iter().map(block).collect(),
            decoder: plan
                .decoder
                .iter()
                .map(|(blocks, up)| DecoderLevel {
                    blocks: blocks.iter().map(block).collect(),
                    up: up.map(|c| conv3x3(c, c, device)),
                })
                .collect(),
            norm_out: GroupNormConfig::new(group_count(plan.out_channels), plan.out_channels)
                .init(device),
            conv_out: Conv2dConfig::new([plan.out_channels, self.channels], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_initializer(Initializer::Zeros)
                .init(device),
            config: self.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BlockSpec {
    cin: usize,
    cout: usize,
    attn: bool,
}

/// Encoder levels `(blocks, Some(channels) if followed by a downsampling conv)`, middle
/// blocks, decoder levels `(blocks, Some(channels) if followed by an upsampling)`.
#[derive(Debug, Default)]
struct Plan {
    encoder: Vec<(Vec<BlockSpec>, Option<usize>)>,
    middle: Vec<BlockSpec>,
    decoder: Vec<(Vec<BlockSpec>, Option<usize>)>,
    out_channels: usize,
}

fn conv3x3<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// Residual scaling `√½` of DDPM++ (`skip_scale`), keeping the variance of `a + b` that of
/// one input when both have unit variance.
const SKIP_SCALE: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// Single-head self-attention over the pixels of a feature map.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    norm: GroupNorm<B>,
    qkv: Conv2d<B>,
    proj: Conv2d<B>,
}

impl<B: Backend> SelfAttention<B> {
    fn new(c: usize, device: &B::Device) -> Self {
        SelfAttention {
            norm: GroupNormConfig::new(group_count(c), c).init(device),
            qkv: Conv2dConfig::new([c, 3 * c], [1, 1]).init(device),
            proj: Conv2dConfig::new([c, c], [1, 1]).init(device),
        }
    }

    /// `x + proj(V softmax(QᵀK / √c)ᵀ)`, scaled by √½.
    ///
    /// # Shapes
    /// - `x`: `[b, c, h, w]`; returns `[b, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let qkv = conv2d(&self.qkv, self.norm.forward(x.clone())); // [b, 3c, h, w]
        let qkv = qkv.reshape([b, 3, c, h * w]); // [b, 3, c, hw]
        let part = |i: usize| qkv.clone().narrow(1, i, 1).reshape([b, c, h * w]); // [b, c, hw]
        let (q, k, v) = (part(0), part(1), part(2));
        let logits = q.swap_dims(1, 2).matmul(k).div_scalar((c as f64).sqrt()); // [b, hw, hw]
        let weights = softmax(logits, 2); // [b, hw (query), hw (key)]
        let out = v.matmul(weights.swap_dims(1, 2)); // [b, c, hw]
        let out = conv2d(&self.proj, out.reshape([b, c, h, w])); // [b, c, h, w]
        (x + out).mul_scalar(SKIP_SCALE)
    }
}

/// A DDPM++ residual block with noise-embedding injection (adaptive scale and shift).
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    norm0: GroupNorm<B>,
    conv0: Conv2d<B>,
    affine: Linear<B>,
    norm1: GroupNorm<B>,
    dropout: Dropout,
    conv1: Conv2d<B>,
    skip: Option<Conv2d<B>>,
    attn: Option<SelfAttention<B>>,
}

impl<B: Backend> ResBlock<B> {
    fn new(s: &BlockSpec, emb: usize, dropout: f64, device: &B::Device) -> Self {
        ResBlock {
            norm0: GroupNormConfig::new(group_count(s.cin), s.cin).init(device),
            conv0: conv3x3(s.cin, s.cout, device),
            affine: LinearConfig::new(emb, 2 * s.cout).init(device),
            norm1: GroupNormConfig::new(group_count(s.cout), s.cout).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            conv1: conv3x3(s.cout, s.cout, device),
            skip: (s.cin != s.cout)
                .then(|| Conv2dConfig::new([s.cin, s.cout], [1, 1]).init(device)),
            attn: s.attn.then(|| SelfAttention::new(s.cout, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[b, cin, h, w]`, `emb`: `[b, emb]`; returns `[b, cout, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>, emb: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = conv2d(&self.conv0, self.norm0.forward_silu(x.clone())); // [b, cout, h, w]
        let [_, cout, _, _] = h.dims();
        let params = self.affine.forward(emb); // [b, 2 cout]
        let scale = params.clone().narrow(1, 0, cout); // [b, cout]
        let shift = params.narrow(1, cout, cout); // [b, cout]
        // silu(GN(h) · (1 + scale) + shift), one fused op (crate::ops::group_norm)
        let h = self.norm1.forward_modulated_silu(h, scale, shift);
        let h = conv2d(&self.conv1, self.dropout.forward(h)); // [b, cout, h, w]
        let skip = match &self.skip {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        let out = (h + skip).mul_scalar(SKIP_SCALE);
        match &self.attn {
            Some(a) => a.forward(out),
            None => out,
        }
    }
}

/// One encoder level: residual blocks, then (except the last level) a stride-2 conv.
#[derive(Module, Debug)]
pub struct EncoderLevel<B: Backend> {
    blocks: Vec<ResBlock<B>>,
    down: Option<Conv2d<B>>,
}

/// One decoder level: residual blocks on concatenated skips, then (except the top level)
/// nearest-neighbour ×2 upsampling and a conv.
#[derive(Module, Debug)]
pub struct DecoderLevel<B: Backend> {
    blocks: Vec<ResBlock<B>>,
    up: Option<Conv2d<B>>,
}

/// Nearest-neighbour ×2 upsampling.
///
/// # Shapes
/// - `x`: `[b, c, h, w]`; returns `[b, c, 2h, 2w]`
pub fn upsample_nearest2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1]) // [b, c, h, 1, w, 1]
        .repeat_dim(3, 2)
        .repeat_dim(5, 2) // [b, c, h, 2, w, 2]
        .reshape([b, c, 2 * h, 2 * w])
}

/// The EDM-preconditioned UNet; see the module docs.
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    map_label: Option<Embedding<B>>,
    map_layer0: Linear<B>,
    map_layer1: Linear<B>,
    conv_in: Conv2d<B>,
    encoder: Vec<EncoderLevel<B>>,
    middle: Vec<ResBlock<B>>,
    decoder: Vec<DecoderLevel<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: UNetConfig,
}

impl<B: Backend> UNet<B> {
    /// The noise (and label) embedding.
    ///
    /// # Shapes
    /// - `c_noise`: `[b]`, `labels`: `[b]`; returns `[b, 4 mc]`
    fn embedding(&self, c_noise: Tensor<B, 1>, labels: Option<Tensor<B, 1, Int>>) -> Tensor<B, 2> {
        let c = &self.config;
        let mut e = sinusoidal_embedding(c_noise, c.model_channels, c.embedding_max_period); // [b, mc]
        if let (Some(table), Some(y)) = (&self.map_label, labels) {
            let [b] = y.dims();
            let emb = table.forward(y.unsqueeze_dim::<2>(1)); // [b, 1, mc]
            e = e + emb.reshape([b, c.model_channels]); // [b, mc]
        }
        let e = silu(self.map_layer0.forward(e)); // [b, 4 mc]
        silu(self.map_layer1.forward(e)) // [b, 4 mc]
    }

    /// The raw network `F(x_in; c_noise, y)` and the encoder taps.
    ///
    /// # Shapes
    /// - `x_in`: `[b, c, r, r]`, `c_noise`: `[b]`, `labels`: `[b]`
    /// - returns `(F [b, c, r, r], taps)`, tap `l`: `[b, mc·mult_l, r/2^l, r/2^l]`
    pub fn raw(
        &self,
        x_in: Tensor<B, 4>,
        c_noise: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let emb = self.embedding(c_noise, labels);
        let mut h = conv2d(&self.conv_in, x_in); // [b, mc, r, r]
        let mut skips = vec![h.clone()];
        let mut taps = Vec::with_capacity(self.encoder.len());
        for level in &self.encoder {
            for block in &level.blocks {
                h = block.forward(h, emb.clone());
                skips.push(h.clone());
            }
            taps.push(h.clone()); // end of the level: [b, mc·mult_l, r_l, r_l]
            if let Some(down) = &level.down {
                h = conv2d(down, h); // [b, C, r_l / 2, r_l / 2]
                skips.push(h.clone());
            }
        }
        for block in &self.middle {
            h = block.forward(h, emb.clone());
        }
        for level in &self.decoder {
            for block in &level.blocks {
                let skip = skips
                    .pop()
                    .expect("the plan pairs every decoder block with a skip");
                h = block.forward(Tensor::cat(vec![h, skip], 1), emb.clone()); // [b, C', r_l, r_l]
            }
            if let Some(up) = &level.up {
                h = conv2d(up, upsample_nearest2(h)); // [b, C, 2 r_l, 2 r_l]
            }
        }
        let f = conv2d(&self.conv_out, self.norm_out.forward_silu(h)); // [b, c, r, r]
        (f, taps)
    }

    /// `D(x; σ, y)` and the encoder taps of `F(c_in x)` (what a discriminator head reads).
    ///
    /// # Shapes
    /// - `x`: `[b, c·r·r]`, `sigma`: `[b]`, `labels`: `[b]`
    /// - returns `(denoised [b, c·r·r], taps)`, tap `l`: `[b, mc·mult_l, r/2^l, r/2^l]`
    ///   (see [`UNetConfig::tap_shapes`])
    pub fn forward_with_features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Vec<Tensor<B, 4>>) {
        let c = &self.config;
        let [b, dim] = x.dims();
        let (c_skip, c_out, c_in, c_noise) = edm_scalings_tensor(sigma, c.sigma_data);
        let col = |t: Tensor<B, 1>| t.unsqueeze_dim::<2>(1); // [b, 1]
        let x_in = (x.clone() * col(c_in)).reshape([b, c.channels, c.resolution, c.resolution]); // [b, c, r, r]
        let (f, taps) = self.raw(x_in, c_noise, labels);
        let f = f.reshape([b, dim]); // [b, c·r·r]
        (x * col(c_skip) + f * col(c_out), taps)
    }

    /// `D(x; σ, y)`.
    ///
    /// # Shapes
    /// - `x`: `[b, c·r·r]`, `sigma`: `[b]`, `labels`: `[b]`; returns `[b, c·r·r]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        self.forward_with_features(x, sigma, labels).0
    }
}

impl<B: Backend> Denoiser<B> for UNet<B> {
    fn dim(&self) -> usize {
        self.config.dim()
    }

    fn denoise(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        self.forward(x, sigma, labels)
    }
}

/// The taps are the encoder's feature maps at the end of each resolution level
/// ([`UNetConfig::tap_shapes`]), what [`ConvDiscriminator`](crate::ConvDiscriminator) reads.
impl<B: Backend> FeatureDenoiser<B> for UNet<B> {
    fn denoise_with_features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Vec<FeatureMap<B>>) {
        let (denoised, taps) = self.forward_with_features(x, sigma, labels);
        (
            denoised,
            taps.into_iter().map(FeatureMap::Spatial).collect(),
        )
    }
}

impl<B: Backend> EdmDenoiser<B> for UNet<B> {
    fn sigma_data(&self) -> f64 {
        self.config.sigma_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad_check::gradient_norms;
    use burn::backend::{Autodiff, Flex};
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::{Distribution, TensorData};
    use fdistill_core::losses::edm::edm_loss;
    use fdistill_train::checkpoint::{CheckpointError, load_module, save_module};

    type B = Flex;
    type A = Autodiff<Flex>;

    fn batch<Bk: Backend>(
        device: &Bk::Device,
    ) -> (Tensor<Bk, 2>, Tensor<Bk, 1>, Tensor<Bk, 1, Int>) {
        let x = Tensor::<Bk, 2>::random([4, 64], Distribution::Normal(0.0, 1.0), device);
        let sigma = Tensor::<Bk, 1>::from_floats([0.05, 0.5, 2.0, 30.0], device);
        let labels = Tensor::<Bk, 1, Int>::from_data(TensorData::from([0i64, 1, 2, 1]), device);
        (x, sigma, labels)
    }

    #[test]
    fn group_count_and_upsampling() {
        assert_eq!([8, 16, 96, 128, 256].map(group_count), [2, 4, 24, 32, 32]);
        // [[1, 2], [3, 4]] → each value becomes a 2×2 block.
        let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &Default::default());
        let up = upsample_nearest2(x);
        assert_eq!(up.dims(), [1, 1, 4, 4]);
        let v = up.into_data().to_vec::<f32>().unwrap();
        let want = [
            1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.,
        ];
        assert_eq!(v, want);
    }

    #[test]
    fn attention_matches_a_scalar_computation() {
        // With the GroupNorm output n, qkv = W n + b (1×1 conv); check the attention against
        // explicit loops over pixels and channels.
        let device = Default::default();
        let attn = SelfAttention::<B>::new(4, &device);
        let x = Tensor::<B, 4>::random([1, 4, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        let out = attn.forward(x.clone()).into_data().to_vec::<f32>().unwrap();
        let qkv = attn
            .qkv
            .forward(attn.norm.forward(x.clone()))
            .into_data()
            .to_vec::<f32>()
            .unwrap(); // [1, 12, 2, 2]
        let at = |ch: usize, p: usize| qkv[ch * 4 + p] as f64;
        let (c, hw) = (4, 4);
        let mut att = vec![0.0f32; c * hw]; // [c, hw]
        for i in 0..hw {
            let logits: Vec<f64> = (0..hw)
                .map(|j| (0..c).map(|k| at(k, i) * at(c + k, j)).sum::<f64>() / 2.0)
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
            for ch in 0..c {
                att[ch * hw + i] = (0..hw)
                    .map(|j| (logits[j] - m).exp() / z * at(2 * c + ch, j))
                    .sum::<f64>() as f32;
            }
        }
        let att = Tensor::<B, 4>::from_data(TensorData::new(att, [1, 4, 2, 2]), &device);
        let want = (x + attn.proj.forward(att))
            .mul_scalar(SKIP_SCALE)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn shapes_taps_and_zero_init_output() {
        let device = Default::default();
        let cfg = UNetConfig::tiny();
        cfg.check().unwrap();
        let net = cfg.init::<B>(&device);
        let (x, sigma, labels) = batch::<B>(&device);
        let (d, taps) = net.forward_with_features(x.clone(), sigma.clone(), Some(labels));
        assert_eq!(d.dims(), [4, 64]);
        let shapes: Vec<[usize; 4]> = taps.iter().map(|t| t.dims()).collect();
        assert_eq!(shapes, vec![[4, 8, 8, 8], [4, 16, 4, 4]]);
        let expected: Vec<[usize; 4]> = cfg
            .tap_shapes()
            .iter()
            .map(|t| [4, t.channels, t.resolution, t.resolution])
            .collect();
        assert_eq!(shapes, expected);
        // conv_out = 0 at init, so D = c_skip x = σ_d² / (σ² + σ_d²) x.
        let c_skip = sigma
            .powf_scalar(2.0)
            .add_scalar(0.25)
            .recip()
            .mul_scalar(0.25);
        d.into_data().assert_approx_eq::<f32>(
            &(x * c_skip.unsqueeze_dim::<2>(1)).into_data(),
            Default::default(),
        );
        // The Fashion-MNIST presets are valid and tap at 32, 16, 8.
        for cfg in [
            UNetConfig::fashion_mnist_small(),
            UNetConfig::fashion_mnist(),
        ] {
            cfg.check().unwrap();
            let res: Vec<usize> = cfg.tap_shapes().iter().map(|t| t.resolution).collect();
            assert_eq!(res, vec![32, 16, 8]);
            assert_eq!(cfg.dim(), 1024);
        }
    }

    #[test]
    fn gradients_reach_every_parameter_after_one_step() {
        // At init only conv_out gets a gradient (its zero weights block the rest), so take one
        // AdamW step, then every parameter — label table, attention, skips — must get one.
        let device = Default::default();
        let mut cfg = UNetConfig::tiny();
        cfg.dropout = 0.1;
        let mut net = cfg.init::<A>(&device);
        let mut optim = AdamWConfig::new().init::<A, UNet<A>>();
        for step in 0..2 {
            let (x, sigma, labels) = batch::<A>(&device);
            let noise = Tensor::<A, 2>::random([4, 64], Distribution::Normal(0.0, 1.0), &device);
            let loss = edm_loss(&net, x, sigma, noise, 0.5, Some(labels));
            let grads = loss.backward();
            let norms = gradient_norms::<A, _>(&net, &grads);
            assert!(norms.len() > 40, "{}", norms.len());
            let zero: Vec<&str> = norms
                .iter()
                .filter(|(_, g)| !(*g > 0.0 && g.is_finite()))
                .map(|(n, _)| n.as_str())
                .collect();
            if step == 0 {
                assert!(
                    zero.len() > 1 && !zero.contains(&"conv_out.weight"),
                    "{zero:?}"
                );
            } else {
                assert!(zero.is_empty(), "no gradient for {zero:?}");
            }
            let grads = GradientsParams::from_grads(grads, &net);
            net = optim.step(1e-3, net, grads);
        }
    }

    #[test]
    fn checkpoint_round_trip_and_shape_mismatch_names_the_tensor() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unet.safetensors");
        let cfg = UNetConfig::tiny();
        let net = cfg.init::<B>(&device);
        save_module::<B, _>(&net, &path).unwrap();
        let loaded = load_module::<B, _>(cfg.init::<B>(&device), &path).unwrap();
        let (x, sigma, labels) = batch::<B>(&device);
        let a = net.forward(x.clone(), sigma.clone(), Some(labels.clone()));
        let b = loaded.forward(x, sigma, Some(labels));
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Default::default());
        // Wider net: the first differing tensor is named with both shapes.
        let wider = UNetConfig {
            model_channels: 16,
            ..UNetConfig::tiny()
        };
        let e = load_module::<B, _>(wider.init::<B>(&device), &path).unwrap_err();
        assert!(matches!(e, CheckpointError::ShapeMismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("'map_label.weight'") && msg.contains("[3, 8]") && msg.contains("[3, 16]"),
            "{msg}"
        );
    }

    #[test]
    fn bad_configs_are_rejected() {
        let bad = [
            UNetConfig {
                resolution: 28, // 28 → 14 → 7 → 3.5
                channel_mult: vec![1, 2, 2, 2],
                ..UNetConfig::fashion_mnist_small()
            },
            UNetConfig {
                model_channels: 36, // 144 channels at level 2: 32 groups do not divide them
                channel_mult: vec![1, 4],
                ..UNetConfig::tiny()
            },
            UNetConfig {
                dropout: 1.0,
                ..UNetConfig::tiny()
            },
            UNetConfig {
                channel_mult: vec![],
                ..UNetConfig::tiny()
            },
        ];
        let msgs: Vec<String> = bad
            .iter()
            .map(|c| c.check().unwrap_err().to_string())
            .collect();
        assert!(msgs[0].contains("halved"), "{}", msgs[0]);
        assert!(msgs[1].contains("GroupNorm"), "{}", msgs[1]);
        assert!(msgs[2].contains("dropout"), "{}", msgs[2]);
        assert!(
            UNetConfig::preset("huge")
                .unwrap_err()
                .to_string()
                .contains("tiny")
        );
    }
}
