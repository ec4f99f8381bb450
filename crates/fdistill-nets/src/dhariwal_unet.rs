//! DhariwalUNet: the ADM architecture of Dhariwal & Nichol 2021 as configured in EDM
//! (Karras et al. 2022, appendix F.2; SPEC §5).
//!
//! ```text
//! F(x; c_noise, y, a):
//!   e   = [cos, sin](positional(c_noise)) + map_augment(a)        [b, mc]
//!   emb = SiLU(map_layer1(SiLU(map_layer0(e))) + map_label(y))   y one-hot [b, K], no bias
//!   encoder / decoder of UNetBlocks (see `unet_plan`), skip_scale 1, scale-and-shift
//!   injection, C/64 attention heads, GroupNorm ε = 10⁻⁵, attention in every block at
//!   attn_resolutions (decoder included)
//!   F   = out_conv(SiLU(out_norm(h)))
//! ```
//!
//! The encoder taps are the features at the end of each resolution level (after
//! `{r}x{r}_block{num_blocks−1}`; `block2` in EDM's ImageNet-64 config, whose discriminator
//! reads the 8×8 one).
//!
//! Initialisation as EDM: Kaiming-uniform with gain √⅓ for weights and biases, zeros for
//! `conv1`, `proj`, `out_conv` and `map_augment`, Kaiming-normal with gain √K for `map_label`.

use crate::ops::silu;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::edm_block::{BlockKind, Heads, UNetBlock};
use crate::edm_layers::{
    EdmConv2d, EdmGroupNorm, EdmLinear, InitMode, LayerInit, Resample, positional_embedding,
};
use crate::song_unet::NetIo;
use crate::state_dict::{EdmMapper, EdmNamed, sub_name};
use crate::unet_plan::{EncoderType, PlanSpec};

fn four() -> usize {
    4
}

fn sixty_four() -> usize {
    64
}

/// Hyperparameters of [`DhariwalUNet`] (EDM's constructor arguments; image size, channels,
/// labels and augmentation come from the [`EdmPrecondConfig`](crate::EdmPrecondConfig)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhariwalUNetConfig {
    /// Base channel count `mc`.
    pub model_channels: usize,
    /// Channel multiplier per level.
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
    /// Channels per attention head (64 in EDM; smaller values give small test networks
    /// multi-head attention).
    #[serde(default = "sixty_four")]
    pub channels_per_head: usize,
}

impl DhariwalUNetConfig {
    /// ADM as EDM trains it on ImageNet-64 (`--arch=adm`): 192 channels, multipliers
    /// 1, 2, 3, 4, 3 blocks, attention at 32, 16 and 8, dropout 0.10.
    pub fn adm() -> Self {
        DhariwalUNetConfig {
            model_channels: 192,
            channel_mult: vec![1, 2, 3, 4],
            channel_mult_emb: 4,
            num_blocks: 3,
            attn_resolutions: vec![32, 16, 8],
            dropout: 0.10,
            channels_per_head: 64,
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
            first_conv_mc: false,
            dec_attn_last_only: false,
            encoder: EncoderType::Standard,
            decoder: None,
        }
    }

    pub(crate) fn check(&self, io: &NetIo) -> Result<(), String> {
        crate::unet_plan::check_unet(&self.plan_spec(io))?;
        if self.channel_mult_emb == 0 || self.channels_per_head == 0 {
            return Err("channel_mult_emb and channels_per_head must be ≥ 1".into());
        }
        if self.model_channels < 2 || !self.model_channels.is_multiple_of(2) {
            return Err(format!(
                "model_channels sizes the positional embedding and must be even, got {}",
                self.model_channels
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// Builds the network (parameters initialised lazily, on first use).
    pub fn init<B: Backend>(&self, io: &NetIo, device: &B::Device) -> DhariwalUNet<B> {
        let mc = self.model_channels;
        let emb = mc * self.channel_mult_emb;
        let third = (1.0f64 / 3.0).sqrt();
        let init = LayerInit::new(InitMode::KaimingUniform)
            .weight(third)
            .bias(third);
        let init_zero = LayerInit::new(InitMode::KaimingUniform).weight(0.0);
        let kind = BlockKind {
            emb_channels: emb,
            heads: Heads::ChannelsPerHead(self.channels_per_head),
            dropout: self.dropout,
            skip_scale: 1.0,
            eps: 1e-5,
            resample_filter: vec![1.0, 1.0],
            resample_proj: false,
            adaptive_scale: true,
            init,
            init_zero,
            init_attn: init,
        };
        let plan = self.plan_spec(io).plan();
        let block = |b: &crate::unet_plan::BlockPlan| {
            UNetBlock::new(&kind, b.cin, b.cout, Resample::None, b.attention, device)
        };
        let enc = plan
            .enc
            .iter()
            .map(|l| AdmEncLevel {
                conv: l.conv.map(|(i, o)| EdmConv2d::plain(i, o, 3, init, device)),
                down: l
                    .down
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::Down, false, device)),
                blocks: l.blocks.iter().map(block).collect(),
                res: l.res,
            })
            .collect();
        let dec = plan
            .dec
            .iter()
            .map(|l| AdmDecLevel {
                in0: l
                    .middle
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::None, true, device)),
                in1: l
                    .middle
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::None, false, device)),
                up: l
                    .up
                    .map(|c| UNetBlock::new(&kind, c, c, Resample::Up, false, device)),
                blocks: l.blocks.iter().map(block).collect(),
                res: l.res,
            })
            .collect();
        let label_init =
            LayerInit::new(InitMode::KaimingNormal).weight((io.label_dim as f64).sqrt());
        DhariwalUNet {
            map_augment: (io.augment_dim > 0)
                .then(|| EdmLinear::new(io.augment_dim, mc, false, init_zero, device)),
            map_layer0: EdmLinear::new(mc, emb, true, init, device),
            map_layer1: EdmLinear::new(emb, emb, true, init, device),
            map_label: (io.label_dim > 0)
                .then(|| EdmLinear::new(io.label_dim, emb, false, label_init, device)),
            enc,
            dec,
            out_norm: EdmGroupNorm::new(plan.out_channels, 1e-5, device),
            out_conv: EdmConv2d::plain(plan.out_channels, io.out_channels, 3, init_zero, device),
            model_channels: mc,
            label_dim: io.label_dim,
        }
    }
}

/// One encoder level of [`DhariwalUNet`].
#[derive(Module, Debug)]
pub struct AdmEncLevel<B: Backend> {
    conv: Option<EdmConv2d<B>>,
    down: Option<UNetBlock<B>>,
    blocks: Vec<UNetBlock<B>>,
    #[module(skip)]
    res: usize,
}

/// One decoder level of [`DhariwalUNet`].
#[derive(Module, Debug)]
pub struct AdmDecLevel<B: Backend> {
    in0: Option<UNetBlock<B>>,
    in1: Option<UNetBlock<B>>,
    up: Option<UNetBlock<B>>,
    blocks: Vec<UNetBlock<B>>,
    #[module(skip)]
    res: usize,
}

/// The raw ADM network `F`; see the module docs.
#[derive(Module, Debug)]
pub struct DhariwalUNet<B: Backend> {
    map_augment: Option<EdmLinear<B>>,
    map_layer0: EdmLinear<B>,
    map_layer1: EdmLinear<B>,
    map_label: Option<EdmLinear<B>>,
    enc: Vec<AdmEncLevel<B>>,
    dec: Vec<AdmDecLevel<B>>,
    out_norm: EdmGroupNorm<B>,
    out_conv: EdmConv2d<B>,
    #[module(skip)]
    model_channels: usize,
    #[module(skip)]
    label_dim: usize,
}

impl<B: Backend> DhariwalUNet<B> {
    /// The same network with every block's dropout switched off.
    pub fn without_dropout(self) -> Self {
        let off = |v: Vec<UNetBlock<B>>| v.into_iter().map(UNetBlock::without_dropout).collect();
        DhariwalUNet {
            enc: self
                .enc
                .into_iter()
                .map(|l| AdmEncLevel {
                    down: l.down.map(UNetBlock::without_dropout),
                    blocks: off(l.blocks),
                    ..l
                })
                .collect(),
            dec: self
                .dec
                .into_iter()
                .map(|l| AdmDecLevel {
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
        let [b] = c_noise.dims();
        let device = c_noise.device();
        let mut e = positional_embedding(c_noise, self.model_channels, 10_000.0, false); // [b, mc]
        if let (Some(map_augment), Some(a)) = (&self.map_augment, augment_labels) {
            e = e + map_augment.forward(a);
        }
        let mut e = self.map_layer1.forward(silu(self.map_layer0.forward(e))); // [b, emb]
        if let Some(map_label) = &self.map_label {
            let y = class_labels.unwrap_or_else(|| Tensor::zeros([b, self.label_dim], &device));
            e = e + map_label.forward(y);
        }
        let emb = silu(e);

        let mut skips = Vec::new();
        let mut taps = Vec::with_capacity(self.enc.len());
        let mut h = x;
        for level in &self.enc {
            if let Some(conv) = &level.conv {
                h = conv.forward(h); // [b, mc·mult_0, R, R]
                skips.push(h.clone());
            }
            if let Some(down) = &level.down {
                h = down.forward(h, emb.clone()); // [b, C, r, r]
                skips.push(h.clone());
            }
            for block in &level.blocks {
                h = block.forward(h, emb.clone()); // [b, mc·mult_l, r, r]
                skips.push(h.clone());
            }
            taps.push(h.clone());
        }
        for level in &self.dec {
            for block in [&level.in0, &level.in1, &level.up].into_iter().flatten() {
                h = block.forward(h, emb.clone());
            }
            for block in &level.blocks {
                let skip = skips
                    .pop()
                    .expect("the plan pairs every decoder block with a skip");
                h = block.forward(Tensor::cat(vec![h, skip], 1), emb.clone()); // [b, C', r, r]
            }
        }
        let f = self.out_conv.forward(self.out_norm.forward_silu(h)); // [b, out, R, R]
        (f, taps)
    }
}

impl<B: Backend> EdmNamed<B> for DhariwalUNet<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        let n = |f: &str| sub_name(name, f);
        let enc = self
            .enc
            .into_iter()
            .map(|l| {
                let r = l.res;
                let e = |f: &str| n(&format!("enc.{r}x{r}_{f}"));
                AdmEncLevel {
                    conv: l.conv.map(|c| c.map_edm(&e("conv"), m)),
                    down: l.down.map(|c| c.map_edm(&e("down"), m)),
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
                AdmDecLevel {
                    in0: l.in0.map(|c| c.map_edm(&d("in0"), m)),
                    in1: l.in1.map(|c| c.map_edm(&d("in1"), m)),
                    up: l.up.map(|c| c.map_edm(&d("up"), m)),
                    blocks: l
                        .blocks
                        .into_iter()
                        .enumerate()
                        .map(|(i, b)| b.map_edm(&d(&format!("block{i}")), m))
                        .collect(),
                    res: r,
                }
            })
            .collect();
        DhariwalUNet {
            map_augment: self.map_augment.map(|e| e.map_edm(&n("map_augment"), m)),
            map_layer0: self.map_layer0.map_edm(&n("map_layer0"), m),
            map_layer1: self.map_layer1.map_edm(&n("map_layer1"), m),
            map_label: self.map_label.map(|e| e.map_edm(&n("map_label"), m)),
            enc,
            dec,
            out_norm: self.out_norm.map_edm(&n("out_norm"), m),
            out_conv: self.out_conv.map_edm(&n("out_conv"), m),
            model_channels: self.model_channels,
            label_dim: self.label_dim,
        }
    }
}
