//! SongUNet: the DDPM++ and NCSN++ architectures of Song et al. 2021 as configured in EDM
//! (Karras et al. 2022, appendix F.2, Table 7; SPEC §5).
//!
//! ```text
//! F(x; c_noise, y, a):
//!   e   = [sin, cos](map_noise(c_noise))           positional (DDPM++) or Fourier (NCSN++)
//!       + map_label(√K · y) + map_augment(a)        y one-hot [b, K] (zeros: no label)
//!   emb = SiLU(map_layer1(SiLU(map_layer0(e))))     [b, 4 mc]
//!   encoder / decoder of UNetBlocks (see `unet_plan`), skip_scale √½, additive injection,
//!   one attention head, GroupNorm ε = 10⁻⁶
//!   F   = aux_conv(SiLU(aux_norm(h)))               (summed over levels with a skip decoder)
//! ```
//!
//! The encoder taps — what a discriminator reads — are the features at the end of each
//! resolution level (after `{r}x{r}_block{num_blocks−1}`; `block3` in EDM's CIFAR-10 config).
//!
//! Initialisation as EDM: Xavier-uniform everywhere, biases zero, `conv1`, `proj`, `aux_conv`
//! with gain 10⁻⁵, `qkv` with gain √0.2.

use crate::ops::{self, silu};
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::edm_block::{BlockKind, Heads, UNetBlock};
use crate::edm_layers::{
    EdmConv2d, EdmGroupNorm, EdmLinear, FourierEmbedding, InitMode, LayerInit, Resample,
    positional_embedding, swap_halves,
};
use crate::state_dict::{EdmMapper, EdmNamed, sub_name};
use crate::unet_plan::{DecoderType, EncoderType, PlanSpec};

/// The noise-level embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingType {
    /// Sinusoidal with fixed frequencies `10⁴^{−i/(h−1)}` (DDPM++).
    Positional,
    /// Random Fourier features `N(0, 16²)` (NCSN++).
    Fourier,
}

fn four() -> usize {
    4
}

/// Hyperparameters of [`SongUNet`] (EDM's constructor arguments; the image size, channels,
/// labels and augmentation labels come from the [`EdmPrecondConfig`](crate::EdmPrecondConfig)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SongUNetConfig {
    /// Base channel count `mc`.
    pub model_channels: usize,
    /// Channel multiplier per level; level `l` runs at `R / 2^l`.
    pub channel_mult: Vec<usize>,
    /// Embedding width `mc · channel_mult_emb`.
    #[serde(default = "four")]
    pub channel_mult_emb: usize,
    /// Residual blocks per encoder level (the decoder has one more).
    pub num_blocks: usize,
    /// Resolutions whose blocks get attention.
    pub attn_resolutions: Vec<usize>,
    /// Dropout before each block's second convolution (training only).
    pub dropout: f64,
    /// Positional (DDPM++) or Fourier (NCSN++).
    pub embedding_type: EmbeddingType,
    /// Noise-embedding width `mc · channel_mult_noise` (1 DDPM++, 2 NCSN++).
    pub channel_mult_noise: usize,
    /// Standard (DDPM++), skip or residual (NCSN++).
    pub encoder_type: EncoderType,
    /// Standard (both) or skip.
    pub decoder_type: DecoderType,
    /// Separable resampling filter: `[1, 1]` (DDPM++), `[1, 3, 3, 1]` (NCSN++).
    pub resample_filter: Vec<f64>,
}

impl SongUNetConfig {
    /// DDPM++ as EDM trains it on CIFAR-10 (`--arch=ddpmpp`): 128 channels, multipliers
    /// 2, 2, 2, 4 blocks, attention at 16×16, dropout 0.13.
    pub fn ddpmpp() -> Self {
        SongUNetConfig {
            model_channels: 128,
            channel_mult: vec![2, 2, 2],
            channel_mult_emb: 4,
            num_blocks: 4,
            attn_resolutions: vec![16],
            dropout: 0.13,
            embedding_type: EmbeddingType::Positional,
            channel_mult_noise: 1,
            encoder_type: EncoderType::Standard,
            decoder_type: DecoderType::Standard,
            resample_filter: vec![1.0, 1.0],
        }
    }

    /// NCSN++ as EDM trains it on CIFAR-10 (`--arch=ncsnpp`): DDPM++'s sizes with a Fourier
    /// embedding of width 2 mc, a residual encoder and the `[1, 3, 3, 1]` filter.
    pub fn ncsnpp() -> Self {
        SongUNetConfig {
            embedding_type: EmbeddingType::Fourier,
            channel_mult_noise: 2,
            encoder_type: EncoderType::Residual,
            resample_filter: vec![1.0, 3.0, 3.0, 1.0],
            ..Self::ddpmpp()
        }
    }

    pub(crate) fn plan_spec(&self, io: &NetIo) -> PlanSpec<'_> {
        PlanSpec {
            resolution: io.resolution,
            in_channels: io.in_channels,
            out_channels: io.out_channels,
            model_channels: self.model_channels,
            channel_mult: &self.channel_mult,
            num_blocks: self.num_blocks,
            attn_resolutions: &self.attn_resolutions,
            first_conv_mc: true,
            dec_attn_last_only: true,
            encoder: self.encoder_type,
            decoder: Some(self.decoder_type),
        }
    }

    /// Checks what the shared UNet check does not: embedding and filter settings.
    pub(crate) fn check(&self, io: &NetIo) -> Result<(), String> {
        crate::unet_plan::check_unet(&self.plan_spec(io))?;
        if self.channel_mult_emb == 0 || self.channel_mult_noise == 0 {
            return Err("channel_mult_emb and channel_mult_noise must be ≥ 1".into());
        }
        let noise = self.model_channels * self.channel_mult_noise;
        if noise < 4 || !noise.is_multiple_of(2) {
            return Err(format!(
                "the noise embedding has {noise} channels; it needs an even number ≥ 4"
            ));
        }
        if self.resample_filter.is_empty()
            || !self.resample_filter.len().is_multiple_of(2)
            || self.resample_filter.iter().sum::<f64>() <= 0.0
        {
            return Err(format!(
                "resample_filter must have an even, non-zero number of taps with a positive sum \
                 (EDM: [1, 1] or [1, 3, 3, 1]), got {:?}",
                self.resample_filter
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// Builds the network (parameters initialised lazily, on first use).
    pub fn init<B: Backend>(&self, io: &NetIo, device: &B::Device) -> SongUNet<B> {
        let mc = self.model_channels;
        let emb = mc * self.channel_mult_emb;
        let noise = mc * self.channel_mult_noise;
        let init = LayerInit::new(InitMode::XavierUniform);
        let kind = BlockKind {
            emb_channels: emb,
            heads: Heads::Fixed(1),
            dropout: self.dropout,
            skip_scale: std::f64::consts::FRAC_1_SQRT_2,
            eps: 1e-6,
            resample_filter: self.resample_filter.clone(),
            resample_proj: true,
            adaptive_scale: false,
            init,
            init_zero: init.weight(1e-5),
            init_attn: init.weight(0.2f64.sqrt()),
        };
        let f = &self.resample_filter;
        let plan = self.plan_spec(io).plan();
        let block = |b: &crate::unet_plan::BlockPlan, r: Resample| {
            UNetBlock::new(&kind, b.cin, b.cout, r, b.attention, device)
        };
        let enc = plan
            .enc
            .iter()
            .map(|l| SongEncLevel {
                conv: l.conv.map(|(i, o)| EdmConv2d::plain(i, o, 3, init, device)),
                down: l
                    .down
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::Down, false, device)),
                aux_down: l
                    .aux_down
                    .map(|c| EdmConv2d::new(c, c, 0, init, Resample::Down, f, device)),
                aux_skip: l
                    .aux_skip
                    .map(|(i, o)| EdmConv2d::plain(i, o, 1, init, device)),
                aux_residual: l
                    .aux_residual
                    .map(|(i, o)| EdmConv2d::new(i, o, 3, init, Resample::FusedDown, f, device)),
                blocks: l.blocks.iter().map(|b| block(b, Resample::None)).collect(),
                res: l.res,
            })
            .collect();
        let dec = plan
            .dec
            .iter()
            .map(|l| SongDecLevel {
                in0: l
                    .middle
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::None, true, device)),
                in1: l
                    .middle
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::None, false, device)),
                up: l
                    .up
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::Up, false, device)),
                blocks: l.blocks.iter().map(|b| block(b, Resample::None)).collect(),
                aux_up: l
                    .aux_up
                    .map(|c| EdmConv2d::new(c, c, 0, init, Resample::Up, f, device)),
                aux_norm: l.aux_out.map(|c| EdmGroupNorm::new(c, 1e-6, device)),
                aux_conv: l
                    .aux_out
                    .map(|c| EdmConv2d::plain(c, io.out_channels, 3, kind.init_zero, device)),
                res: l.res,
            })
            .collect();
        SongUNet {
            map_noise: (self.embedding_type == EmbeddingType::Fourier)
                .then(|| FourierEmbedding::new(noise, device)),
            map_label: (io.label_dim > 0)
                .then(|| EdmLinear::new(io.label_dim, noise, true, init, device)),
            map_augment: (io.augment_dim > 0)
                .then(|| EdmLinear::new(io.augment_dim, noise, false, init, device)),
            map_layer0: EdmLinear::new(noise, emb, true, init, device),
            map_layer1: EdmLinear::new(emb, emb, true, init, device),
            enc,
            dec,
            noise_channels: noise,
            label_dim: io.label_dim,
        }
    }
}

/// Image size, channels and conditioning widths of a UNet (from the preconditioner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetIo {
    /// Input resolution `R`.
    pub resolution: usize,
    /// Input image channels.
    pub in_channels: usize,
    /// Output image channels.
    pub out_channels: usize,
    /// Classes `K` (0: unconditional).
    pub label_dim: usize,
    /// Augmentation-label width (0: none).
    pub augment_dim: usize,
}

/// One encoder level of [`SongUNet`]; fields named as EDM's `{r}x{r}_…` entries.
#[derive(Module, Debug)]
pub struct SongEncLevel<B: Backend> {
    conv: Option<EdmConv2d<B>>,
    down: Option<UNetBlock<B>>,
    aux_down: Option<EdmConv2d<B>>,
    aux_skip: Option<EdmConv2d<B>>,
    aux_residual: Option<EdmConv2d<B>>,
    blocks: Vec<UNetBlock<B>>,
    #[module(skip)]
    res: usize,
}

/// One decoder level of [`SongUNet`].
#[derive(Module, Debug)]
pub struct SongDecLevel<B: Backend> {
    in0: Option<UNetBlock<B>>,
    in1: Option<UNetBlock<B>>,
    up: Option<UNetBlock<B>>,
    blocks: Vec<UNetBlock<B>>,
    aux_up: Option<EdmConv2d<B>>,
    aux_norm: Option<EdmGroupNorm<B>>,
    aux_conv: Option<EdmConv2d<B>>,
    #[module(skip)]
    res: usize,
}

/// The raw SongUNet `F`; see the module docs.
#[derive(Module, Debug)]
pub struct SongUNet<B: Backend> {
    map_noise: Option<FourierEmbedding<B>>,
    map_label: Option<EdmLinear<B>>,
    map_augment: Option<EdmLinear<B>>,
    map_layer0: EdmLinear<B>,
    map_layer1: EdmLinear<B>,
    enc: Vec<SongEncLevel<B>>,
    dec: Vec<SongDecLevel<B>>,
    #[module(skip)]
    noise_channels: usize,
    #[module(skip)]
    label_dim: usize,
}

impl<B: Backend> SongUNet<B> {
    /// The same network with every block's dropout switched off.
    pub fn without_dropout(self) -> Self {
        let off = |v: Vec<UNetBlock<B>>| v.into_iter().map(UNetBlock::without_dropout).collect();
        SongUNet {
            enc: self
                .enc
                .into_iter()
                .map(|l| SongEncLevel {
                    down: l.down.map(UNetBlock::without_dropout),
                    blocks: off(l.blocks),
                    ..l
                })
                .collect(),
            dec: self
                .dec
                .into_iter()
                .map(|l| SongDecLevel {
                    in0: l.in0.map(UNetBlock::without_dropout),
                    in1: l.in1.map(UNetBlock::without_dropout),
                    up: l.up.map(UNetBlock::without_dropout),
                    blocks: off(l.blocks),
                    ..l
                })
                .collect(),
            ..self
        }
    }

    /// The embedding vector.
    ///
    /// # Shapes
    /// - `c_noise`: `[b]`, `class_labels`: `[b, K]`, `augment_labels`: `[b, A]`
    /// - returns `[b, mc · channel_mult_emb]`
    fn embedding(
        &self,
        c_noise: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let [b] = c_noise.dims();
        let device = c_noise.device();
        let e = match &self.map_noise {
            Some(fourier) => fourier.forward(c_noise),
            None => positional_embedding(c_noise, self.noise_channels, 10_000.0, true),
        }; // [b, noise]: cosines, sines
        let mut e = swap_halves(e); // sines first, as SongUNet orders them
        if let Some(map_label) = &self.map_label {
            let y = class_labels.unwrap_or_else(|| Tensor::zeros([b, self.label_dim], &device));
            e = e + map_label.forward(y.mul_scalar((self.label_dim as f64).sqrt()));
        }
        if let (Some(map_augment), Some(a)) = (&self.map_augment, augment_labels) {
            e = e + map_augment.forward(a);
        }
        silu(self.map_layer1.forward(silu(self.map_layer0.forward(e))))
    }

    /// `F(x; c_noise, y, a)` and the encoder taps (end of each level).
    ///
    /// # Shapes
    /// - `x`: `[b, in, R, R]`, `c_noise`: `[b]`, `class_labels`: `[b, K]` (one-hot; `None`:
    ///   zeros), `augment_labels`: `[b, A]` (`None`: not added)
    /// - returns `(F [b, out, R, R], taps)`, tap `l`: `[b, mc · mult_l, R/2^l, R/2^l]`
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        c_noise: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let emb = self.embedding(c_noise, class_labels, augment_labels);
        let mut skips = Vec::new();
        let mut taps = Vec::with_capacity(self.enc.len());
        let mut aux = x.clone();
        let mut h = x;
        for level in &self.enc {
            if let Some(conv) = &level.conv {
                h = conv.forward(h); // [b, mc, R, R]
                skips.push(h.clone());
            }
            if let Some(down) = &level.down {
                h = down.forward(h, emb.clone()); // [b, C, r, r]
                skips.push(h.clone());
            }
            if let Some(aux_down) = &level.aux_down {
                aux = aux_down.forward(aux); // [b, in, r, r]
            }
            if let Some(aux_skip) = &level.aux_skip {
                h = h + aux_skip.forward(aux.clone());
                *skips.last_mut().expect("the down block's output") = h.clone();
            }
            if let Some(aux_residual) = &level.aux_residual {
                h = crate::ops::scaled_sum(
                    h,
                    aux_residual.forward(aux),
                    std::f64::consts::FRAC_1_SQRT_2,
                );
                aux = h.clone();
                *skips.last_mut().expect("the down block's output") = h.clone();
            }
            for block in &level.blocks {
                h = block.forward(h, emb.clone()); // [b, mc·mult_l, r, r]
                skips.push(h.clone());
            }
            taps.push(h.clone());
        }
        let mut out: Option<Tensor<B, 4>> = None;
        for level in &self.dec {
            for block in [&level.in0, &level.in1, &level.up].into_iter().flatten() {
                h = block.forward(h, emb.clone());
            }
            for block in &level.blocks {
                let skip = skips
                    .pop()
                    .expect("the plan pairs every decoder block with a skip");
                h = block.forward(ops::cat_channels(h, skip), emb.clone()); // [b, C', r, r]
            }
            if let Some(aux_up) = &level.aux_up {
                out = out.map(|o| aux_up.forward(o)); // [b, out, 2r, 2r]
            }
            if let (Some(norm), Some(conv)) = (&level.aux_norm, &level.aux_conv) {
                let o = conv.forward(norm.forward_silu(h.clone())); // [b, out, r, r]
                out = Some(match out {
                    Some(prev) => o + prev,
                    None => o,
                });
            }
        }
        (out.expect("level 0 has an output head"), taps)
    }
}

impl<B: Backend> EdmNamed<B> for SongUNet<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        let n = |f: &str| sub_name(name, f);
        let enc = self
            .enc
            .into_iter()
            .map(|l| {
                let r = l.res;
                let e = |f: &str| n(&format!("enc.{r}x{r}_{f}"));
                SongEncLevel {
                    conv: l.conv.map(|c| c.map_edm(&e("conv"), m)),
                    down: l.down.map(|c| c.map_edm(&e("down"), m)),
                    aux_down: l.aux_down.map(|c| c.map_edm(&e("aux_down"), m)),
                    aux_skip: l.aux_skip.map(|c| c.map_edm(&e("aux_skip"), m)),
                    aux_residual: l.aux_residual.map(|c| c.map_edm(&e("aux_residual"), m)),
                    blocks: l
                        .blocks
                        .into_iter()
                        .enumerate()
                        .map(|(i, b)| b.map_edm(&e(&format!("block{i}")), m))
                        .collect(),
                    res: r,
                }
            })
            .collect();
        let dec = self
            .dec
            .into_iter()
            .map(|l| {
                let r = l.res;
                let d = |f: &str| n(&format!("dec.{r}x{r}_{f}"));
                SongDecLevel {
                    in0: l.in0.map(|c| c.map_edm(&d("in0"), m)),
                    in1: l.in1.map(|c| c.map_edm(&d("in1"), m)),
                    up: l.up.map(|c| c.map_edm(&d("up"), m)),
                    blocks: l
                        .blocks
                        .into_iter()
                        .enumerate()
                        .map(|(i, b)| b.map_edm(&d(&format!("block{i}")), m))
                        .collect(),
                    aux_up: l.aux_up.map(|c| c.map_edm(&d("aux_up"), m)),
                    aux_norm: l.aux_norm.map(|c| c.map_edm(&d("aux_norm"), m)),
                    aux_conv: l.aux_conv.map(|c| c.map_edm(&d("aux_conv"), m)),
                    res: r,
                }
            })
            .collect();
        SongUNet {
            map_noise: self.map_noise.map(|e| e.map_edm(&n("map_noise"), m)),
            map_label: self.map_label.map(|e| e.map_edm(&n("map_label"), m)),
            map_augment: self.map_augment.map(|e| e.map_edm(&n("map_augment"), m)),
            map_layer0: self.map_layer0.map_edm(&n("map_layer0"), m),
            map_layer1: self.map_layer1.map_edm(&n("map_layer1"), m),
            enc,
            dec,
            noise_channels: self.noise_channels,
            label_dim: self.label_dim,
        }
    }
}
