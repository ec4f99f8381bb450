//! EDM's preconditioned denoiser around a SongUNet (DDPM++, NCSN++) or a DhariwalUNet (ADM):
//! fdistill's one image network (Karras et al. 2022, Table 1; SPEC §5).
//!
//! ```text
//! D(x; σ, y) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; ¼ ln σ, y)               x: [b, c·R·R]
//! y: one-hot class labels [b, K]; no label (None) is the zero vector — EDM's convention, and
//!    the null label of classifier-free guidance;
//! label_dropout p: while training (autodiff backend), each row of y is zeroed with prob. p.
//! ```
//!
//! Parameter names, shapes and buffers are EDM's (`EDMPrecond.state_dict()` with the `model.`
//! prefix): [`EdmPrecond::to_state_dict`] exports, [`EdmPrecond::load_state_dict`] imports
//! (see [`crate::state_dict`]). fdistill's own checkpoints (`save_module`) use the module
//! paths instead; checkpoints of the earlier "SongUNet-lite" `UNet` do not load into this
//! network.
//!
//! All samples travel flat (`[batch, channels · resolution²]`, the [`Denoiser`] contract);
//! [`EdmPrecond::forward_images`] works on `[b, c, R, R]` images.

use std::marker::PhantomData;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use fdistill_core::EdmDenoiser;
use fdistill_core::ratio::FeatureMap;
use fdistill_core::{Denoiser, FeatureDenoiser};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dhariwal_unet::{DhariwalUNet, DhariwalUNetConfig};
use crate::edm::edm_scalings_tensor;
use crate::song_unet::{EmbeddingType, NetIo, SongUNet, SongUNetConfig};
use crate::state_dict::{
    EdmMapper, EdmNamed, EntrySpec, Exporter, Importer, KeyPrefix, SpecCollector, StateDict,
    WeightsError,
};
use crate::unet_plan::{DecoderType, EncoderType};

/// The key prefix of EDM's `EDMPrecond.state_dict()`: its network is the attribute `model`.
pub const EDM_PREFIX: &str = "model.";

/// An invalid network configuration.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("invalid UNet config: {0}")]
pub struct UNetConfigError(pub String);

/// The UNet inside the preconditioner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdmArch {
    /// DDPM++ / NCSN++.
    SongUnet(SongUNetConfig),
    /// ADM.
    DhariwalUnet(DhariwalUNetConfig),
}

impl EdmArch {
    fn model_channels(&self) -> usize {
        match self {
            EdmArch::SongUnet(c) => c.model_channels,
            EdmArch::DhariwalUnet(c) => c.model_channels,
        }
    }

    fn channel_mult(&self) -> &[usize] {
        match self {
            EdmArch::SongUnet(c) => &c.channel_mult,
            EdmArch::DhariwalUnet(c) => &c.channel_mult,
        }
    }
}

/// Shape of one encoder tap: `[batch, channels, resolution, resolution]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapShape {
    /// Channels.
    pub channels: usize,
    /// Side.
    pub resolution: usize,
}

/// Configuration of [`EdmPrecond`], saved in a run directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdmPrecondConfig {
    /// Side `R` of the (square) images.
    pub resolution: usize,
    /// Image channels (1 grey, 3 RGB).
    pub channels: usize,
    /// Number of classes `K` of a class-conditional net; `None` for an unconditional one.
    pub n_classes: Option<usize>,
    /// Width of EDM's augmentation labels (9 in its CIFAR-10 checkpoints); 0: none. Sampling
    /// passes no augmentation labels (the `map_augment` term is then absent, as in EDM).
    #[serde(default)]
    pub augment_dim: usize,
    /// Probability of zeroing a class label while training (classifier-free guidance).
    #[serde(default)]
    pub label_dropout: f64,
    /// EDM's σ_data (0.5 for images in [−1, 1]).
    pub sigma_data: f64,
    /// The UNet.
    pub arch: EdmArch,
    /// Resolutions of the encoder levels a discriminator reads (end of each level);
    /// `None`: every level.
    #[serde(default)]
    pub tap_resolutions: Option<Vec<usize>>,
}

impl EdmPrecondConfig {
    /// A small DDPM++ (positional embedding, standard encoder, box filter) of `levels`
    /// multipliers, the shape of fdistill's CPU presets.
    fn small_ddpmpp(
        resolution: usize,
        model_channels: usize,
        channel_mult: Vec<usize>,
        num_blocks: usize,
        attn_resolutions: Vec<usize>,
        dropout: f64,
        n_classes: Option<usize>,
    ) -> Self {
        EdmPrecondConfig {
            resolution,
            channels: 1,
            n_classes,
            augment_dim: 0,
            label_dropout: 0.0,
            sigma_data: 0.5,
            arch: EdmArch::SongUnet(SongUNetConfig {
                model_channels,
                channel_mult,
                num_blocks,
                attn_resolutions,
                dropout,
                ..SongUNetConfig::ddpmpp()
            }),
            tap_resolutions: None,
        }
    }

    /// Tiny test configuration: 8×8 grey images, a DDPM++ with two levels (8×8, 4×4), 8 base
    /// channels, one block per level, attention at 4×4, 3 classes. Builds and runs in
    /// milliseconds.
    pub fn tiny() -> Self {
        Self::small_ddpmpp(8, 8, vec![1, 2], 1, vec![4], 0.0, Some(3))
    }

    /// Fashion-MNIST (padded to 32×32, 10 classes) at a size a 2-core CPU trains in minutes:
    /// a DDPM++ with 32 base channels, levels 32/16/8 with multipliers 1, 2, 2, one block per
    /// level, attention only at the bottleneck (`8x8_in0`), no dropout.
    pub fn fashion_mnist_small() -> Self {
        Self::small_ddpmpp(32, 32, vec![1, 2, 2], 1, vec![], 0.0, Some(10))
    }

    /// [`fashion_mnist_small`](Self::fashion_mnist_small) at 16×16 with two levels, for a CPU
    /// budget.
    pub fn fashion_mnist_16() -> Self {
        Self::small_ddpmpp(16, 32, vec![1, 2], 1, vec![], 0.0, Some(10))
    }

    /// Fashion-MNIST at about half the width of EDM's CIFAR-10 DDPM++ (64 base channels,
    /// multipliers 1, 2, 2, two blocks per level, attention at 16×16, dropout 0.13). For a GPU.
    pub fn fashion_mnist() -> Self {
        Self::small_ddpmpp(32, 64, vec![1, 2, 2], 2, vec![16], 0.13, Some(10))
    }

    /// EDM's class-conditional CIFAR-10 DDPM++ (`edm-cifar10-32x32-cond-vp`): 32×32 RGB, 10
    /// classes, augmentation labels of width 9; 55,735,299 parameters.
    pub fn edm_ddpmpp_cifar10() -> Self {
        EdmPrecondConfig {
            resolution: 32,
            channels: 3,
            n_classes: Some(10),
            augment_dim: 9,
            label_dropout: 0.0,
            sigma_data: 0.5,
            arch: EdmArch::SongUnet(SongUNetConfig::ddpmpp()),
            tap_resolutions: None,
        }
    }

    /// EDM's class-conditional CIFAR-10 NCSN++ (`edm-cifar10-32x32-cond-ve`).
    pub fn edm_ncsnpp_cifar10() -> Self {
        EdmPrecondConfig {
            arch: EdmArch::SongUnet(SongUNetConfig::ncsnpp()),
            ..Self::edm_ddpmpp_cifar10()
        }
    }

    /// EDM's class-conditional ImageNet-64 ADM (`edm-imagenet-64x64-cond-adm`): 1000 classes;
    /// 295,899,267 parameters. The discriminator reads the 8×8 level (FastGen).
    pub fn edm_adm_imagenet64() -> Self {
        EdmPrecondConfig {
            resolution: 64,
            channels: 3,
            n_classes: Some(1000),
            augment_dim: 0,
            label_dropout: 0.0,
            sigma_data: 0.5,
            arch: EdmArch::DhariwalUnet(DhariwalUNetConfig::adm()),
            tap_resolutions: Some(vec![8]),
        }
    }

    /// A preset by name; see [`PRESETS`](Self::PRESETS).
    pub fn preset(name: &str) -> Result<Self, UNetConfigError> {
        Ok(match name {
            "tiny" => Self::tiny(),
            "fashion-mnist-small" => Self::fashion_mnist_small(),
            "fashion-mnist-16" => Self::fashion_mnist_16(),
            "fashion-mnist" => Self::fashion_mnist(),
            "edm-ddpmpp-cifar10" => Self::edm_ddpmpp_cifar10(),
            "edm-ncsnpp-cifar10" => Self::edm_ncsnpp_cifar10(),
            "edm-adm-imagenet64" => Self::edm_adm_imagenet64(),
            other => {
                return Err(UNetConfigError(format!(
                    "unknown UNet preset `{other}`; known: {}",
                    Self::PRESETS.join(", ")
                )));
            }
        })
    }

    /// Names accepted by [`preset`](Self::preset), sorted.
    pub const PRESETS: [&'static str; 7] = [
        "edm-adm-imagenet64",
        "edm-ddpmpp-cifar10",
        "edm-ncsnpp-cifar10",
        "fashion-mnist",
        "fashion-mnist-16",
        "fashion-mnist-small",
        "tiny",
    ];

    /// Flattened data dimension `channels · resolution²`.
    pub fn dim(&self) -> usize {
        self.channels * self.resolution * self.resolution
    }

    /// Image size, channels and conditioning widths for the UNet.
    pub fn net_io(&self) -> NetIo {
        NetIo {
            resolution: self.resolution,
            in_channels: self.channels,
            out_channels: self.channels,
            label_dim: self.n_classes.unwrap_or(0),
            augment_dim: self.augment_dim,
        }
    }

    /// The levels whose taps a discriminator reads: indices into the encoder levels.
    fn tap_levels(&self) -> Vec<usize> {
        let levels = self.arch.channel_mult().len();
        (0..levels)
            .filter(|l| {
                self.tap_resolutions
                    .as_ref()
                    .is_none_or(|r| r.contains(&(self.resolution >> l)))
            })
            .collect()
    }

    /// Shapes of the encoder taps, one per tapped level (top level first).
    pub fn tap_shapes(&self) -> Vec<TapShape> {
        let mc = self.arch.model_channels();
        let mult = self.arch.channel_mult();
        self.tap_levels()
            .into_iter()
            .map(|l| TapShape {
                channels: mc * mult[l],
                resolution: self.resolution >> l,
            })
            .collect()
    }

    /// Validates the configuration; call before building the network.
    pub fn check(&self) -> Result<(), UNetConfigError> {
        let err = |m: String| Err(UNetConfigError(m));
        if self.channels == 0 || self.resolution == 0 {
            return err(format!(
                "channels ({}) and resolution ({}) must be ≥ 1",
                self.channels, self.resolution
            ));
        }
        if self.n_classes == Some(0) {
            return err("n_classes must be ≥ 1 or absent".into());
        }
        if !(0.0..1.0).contains(&self.label_dropout) {
            return err(format!(
                "label_dropout must be in [0, 1), got {}",
                self.label_dropout
            ));
        }
        if self.label_dropout > 0.0 && self.n_classes.is_none() {
            return err("label_dropout needs a class-conditional net (n_classes)".into());
        }
        if !(self.sigma_data.is_finite() && self.sigma_data > 0.0) {
            return err(format!(
                "sigma_data must be a positive number, got {}",
                self.sigma_data
            ));
        }
        let io = self.net_io();
        match &self.arch {
            EdmArch::SongUnet(c) => c.check(&io),
            EdmArch::DhariwalUnet(c) => c.check(&io),
        }
        .map_err(UNetConfigError)?;
        if let Some(taps) = &self.tap_resolutions {
            let levels: Vec<usize> = (0..self.arch.channel_mult().len())
                .map(|l| self.resolution >> l)
                .collect();
            if taps.is_empty() || taps.iter().any(|r| !levels.contains(r)) {
                return err(format!(
                    "tap_resolutions {taps:?} must name ≥ 1 of the levels' resolutions {levels:?}"
                ));
            }
        }
        Ok(())
    }

    /// Builds the network on `device`. Call [`check`](Self::check) first. Parameters are
    /// initialised lazily (on first use), so building only to list names and shapes, or to
    /// load weights into, allocates nothing for the initial values.
    pub fn init<B: Backend>(&self, device: &B::Device) -> EdmPrecond<B> {
        let io = self.net_io();
        EdmPrecond {
            model: match &self.arch {
                EdmArch::SongUnet(c) => EdmNet::SongUnet(c.init(&io, device)),
                EdmArch::DhariwalUnet(c) => EdmNet::DhariwalUnet(c.init(&io, device)),
            },
            config: self.clone(),
        }
    }

    /// The configuration from EDM's constructor keyword arguments.
    pub fn from_edm_kwargs(k: &EdmKwargs) -> Result<Self, UNetConfigError> {
        let song_only = [
            ("embedding_type", k.embedding_type.is_some()),
            ("channel_mult_noise", k.channel_mult_noise.is_some()),
            ("encoder_type", k.encoder_type.is_some()),
            ("decoder_type", k.decoder_type.is_some()),
            ("resample_filter", k.resample_filter.is_some()),
        ];
        let arch = match k.model_type.as_str() {
            "SongUNet" => {
                if k.channels_per_head.is_some() {
                    return Err(UNetConfigError(
                        "channels_per_head is a DhariwalUNet setting; SongUNet has one head".into(),
                    ));
                }
                // EDM's SongUNet defaults.
                EdmArch::SongUnet(SongUNetConfig {
                    model_channels: k.model_channels.unwrap_or(128),
                    channel_mult: k.channel_mult.clone().unwrap_or(vec![1, 2, 2, 2]),
                    channel_mult_emb: k.channel_mult_emb.unwrap_or(4),
                    num_blocks: k.num_blocks.unwrap_or(4),
                    attn_resolutions: k.attn_resolutions.clone().unwrap_or(vec![16]),
                    dropout: k.dropout.unwrap_or(0.10),
                    embedding_type: k.embedding_type.unwrap_or(EmbeddingType::Positional),
                    channel_mult_noise: k.channel_mult_noise.unwrap_or(1),
                    encoder_type: k.encoder_type.unwrap_or(EncoderType::Standard),
                    decoder_type: k.decoder_type.unwrap_or(DecoderType::Standard),
                    resample_filter: k.resample_filter.clone().unwrap_or(vec![1.0, 1.0]),
                })
            }
            "DhariwalUNet" => {
                if let Some((name, _)) = song_only.iter().find(|(_, set)| *set) {
                    return Err(UNetConfigError(format!(
                        "{name} is a SongUNet setting; DhariwalUNet does not take it"
                    )));
                }
                // EDM's DhariwalUNet defaults.
                EdmArch::DhariwalUnet(DhariwalUNetConfig {
                    model_channels: k.model_channels.unwrap_or(192),
                    channel_mult: k.channel_mult.clone().unwrap_or(vec![1, 2, 3, 4]),
                    channel_mult_emb: k.channel_mult_emb.unwrap_or(4),
                    num_blocks: k.num_blocks.unwrap_or(3),
                    attn_resolutions: k.attn_resolutions.clone().unwrap_or(vec![32, 16, 8]),
                    dropout: k.dropout.unwrap_or(0.10),
                    channels_per_head: k.channels_per_head.unwrap_or(64),
                })
            }
            other => {
                return Err(UNetConfigError(format!(
                    "model_type `{other}`: fdistill has SongUNet and DhariwalUNet"
                )));
            }
        };
        let cfg = EdmPrecondConfig {
            resolution: k.img_resolution,
            channels: k.img_channels,
            n_classes: (k.label_dim > 0).then_some(k.label_dim),
            augment_dim: k.augment_dim,
            label_dropout: k.label_dropout.unwrap_or(0.0),
            sigma_data: k.sigma_data,
            arch,
            tap_resolutions: None,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// EDM's constructor keyword arguments for this configuration (every architecture
    /// setting explicit), e.g. to build the same network in PyTorch:
    /// `EDMPrecond(**kwargs)`.
    pub fn to_edm_kwargs(&self) -> EdmKwargs {
        let mut k = EdmKwargs {
            img_resolution: self.resolution,
            img_channels: self.channels,
            label_dim: self.n_classes.unwrap_or(0),
            sigma_data: self.sigma_data,
            augment_dim: self.augment_dim,
            label_dropout: (self.label_dropout > 0.0).then_some(self.label_dropout),
            ..EdmKwargs::default()
        };
        match &self.arch {
            EdmArch::SongUnet(c) => {
                k.model_type = "SongUNet".into();
                k.model_channels = Some(c.model_channels);
                k.channel_mult = Some(c.channel_mult.clone());
                k.channel_mult_emb = Some(c.channel_mult_emb);
                k.num_blocks = Some(c.num_blocks);
                k.attn_resolutions = Some(c.attn_resolutions.clone());
                k.dropout = Some(c.dropout);
                k.embedding_type = Some(c.embedding_type);
                k.channel_mult_noise = Some(c.channel_mult_noise);
                k.encoder_type = Some(c.encoder_type);
                k.decoder_type = Some(c.decoder_type);
                k.resample_filter = Some(c.resample_filter.clone());
            }
            EdmArch::DhariwalUnet(c) => {
                k.model_type = "DhariwalUNet".into();
                k.model_channels = Some(c.model_channels);
                k.channel_mult = Some(c.channel_mult.clone());
                k.channel_mult_emb = Some(c.channel_mult_emb);
                k.num_blocks = Some(c.num_blocks);
                k.attn_resolutions = Some(c.attn_resolutions.clone());
                k.dropout = Some(c.dropout);
                k.channels_per_head = (c.channels_per_head != 64).then_some(c.channels_per_head);
            }
        }
        k
    }
}

fn half() -> f64 {
    0.5
}

fn dhariwal() -> String {
    "DhariwalUNet".into()
}

/// The keyword arguments of EDM's `EDMPrecond(...)` (and of its UNet), as JSON: the
/// `network_kwargs` of an EDM training run plus the data's resolution, channels and label
/// width. Settings left out take EDM's defaults. `class_name`, `use_fp16`, `sigma_min` and
/// `sigma_max` are accepted and ignored (fdistill runs in f32; σ is not clamped).
/// `channels_per_head` is fdistill's extension of DhariwalUNet (64 in EDM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdmKwargs {
    /// Image side.
    pub img_resolution: usize,
    /// Image channels.
    pub img_channels: usize,
    /// Classes (0: unconditional).
    #[serde(default)]
    pub label_dim: usize,
    /// σ_data.
    #[serde(default = "half")]
    pub sigma_data: f64,
    /// `SongUNet` or `DhariwalUNet` (EDMPrecond's default).
    #[serde(default = "dhariwal")]
    pub model_type: String,
    /// Augmentation-label width.
    #[serde(default)]
    pub augment_dim: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `model_channels`.
    pub model_channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `channel_mult`.
    pub channel_mult: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `channel_mult_emb`.
    pub channel_mult_emb: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `num_blocks`.
    pub num_blocks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `attn_resolutions`.
    pub attn_resolutions: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `dropout`.
    pub dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `label_dropout`.
    pub label_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `embedding_type`.
    pub embedding_type: Option<EmbeddingType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `channel_mult_noise`.
    pub channel_mult_noise: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `encoder_type`.
    pub encoder_type: Option<EncoderType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `decoder_type`.
    pub decoder_type: Option<DecoderType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `resample_filter`.
    pub resample_filter: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// EDM's `channels_per_head`.
    pub channels_per_head: Option<usize>,
    /// Ignored (EDM's class path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Ignored (fdistill runs in f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_fp16: Option<bool>,
    /// Ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_min: Option<f64>,
    /// Ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_max: Option<f64>,
}

impl Default for EdmKwargs {
    fn default() -> Self {
        EdmKwargs {
            img_resolution: 0,
            img_channels: 0,
            label_dim: 0,
            sigma_data: half(),
            model_type: dhariwal(),
            augment_dim: 0,
            model_channels: None,
            channel_mult: None,
            channel_mult_emb: None,
            num_blocks: None,
            attn_resolutions: None,
            dropout: None,
            label_dropout: None,
            embedding_type: None,
            channel_mult_noise: None,
            encoder_type: None,
            decoder_type: None,
            resample_filter: None,
            channels_per_head: None,
            class_name: None,
            use_fp16: None,
            sigma_min: None,
            sigma_max: None,
        }
    }
}

/// The UNet of an [`EdmPrecond`].
// One network per model, held once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum EdmNet<B: Backend> {
    /// DDPM++ / NCSN++.
    SongUnet(SongUNet<B>),
    /// ADM.
    DhariwalUnet(DhariwalUNet<B>),
}

impl<B: Backend> EdmNet<B> {
    /// `F` and the encoder taps; see [`SongUNet::forward`] and [`DhariwalUNet::forward`].
    ///
    /// # Shapes
    /// - `x`: `[b, c, R, R]`, `c_noise`: `[b]`, `class_labels`: `[b, K]`, `augment_labels`:
    ///   `[b, A]`; returns `(F [b, c, R, R], taps)`
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        c_noise: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        match self {
            EdmNet::SongUnet(n) => n.forward(x, c_noise, class_labels, augment_labels),
            EdmNet::DhariwalUnet(n) => n.forward(x, c_noise, class_labels, augment_labels),
        }
    }
}

impl<B: Backend> EdmNamed<B> for EdmNet<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        match self {
            EdmNet::SongUnet(n) => EdmNet::SongUnet(n.map_edm(name, m)),
            EdmNet::DhariwalUnet(n) => EdmNet::DhariwalUnet(n.map_edm(name, m)),
        }
    }
}

/// Initialises every lazily initialised parameter in place.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// The EDM-preconditioned image denoiser; see the module docs.
#[derive(Module, Debug)]
pub struct EdmPrecond<B: Backend> {
    /// The UNet `F` (EDM's attribute `model`).
    pub model: EdmNet<B>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: EdmPrecondConfig,
}

impl<B: Backend> EdmPrecond<B> {
    /// The same network in evaluation mode on any backend: block dropout and label dropout
    /// off (as EDM's `net.eval()`), e.g. for a frozen teacher that runs on an autodiff backend,
    /// where burn's dropout is otherwise active. The saved configuration is unchanged apart
    /// from `label_dropout`.
    pub fn without_dropout(self) -> Self {
        let model = match self.model {
            EdmNet::SongUnet(n) => EdmNet::SongUnet(n.without_dropout()),
            EdmNet::DhariwalUnet(n) => EdmNet::DhariwalUnet(n.without_dropout()),
        };
        EdmPrecond {
            model,
            config: EdmPrecondConfig {
                label_dropout: 0.0,
                ..self.config
            },
        }
    }

    /// One-hot class labels `[b, K]` from integer labels, with label dropout while training.
    ///
    /// # Shapes
    /// - `labels`: `[b]`; returns `[b, K]` (`None` for an unconditional net)
    pub fn one_hot_labels(&self, labels: Option<Tensor<B, 1, Int>>) -> Option<Tensor<B, 2>> {
        let k = self.config.n_classes?;
        labels.map(|y| y.one_hot::<2>(k).float())
    }

    /// Zeroes each row of `y` with probability `label_dropout` on an autodiff backend (the
    /// same rule as burn's dropout: training happens on autodiff backends).
    fn drop_labels(&self, y: Option<Tensor<B, 2>>, batch: usize) -> Option<Tensor<B, 2>> {
        let p = self.config.label_dropout;
        let k = self.config.n_classes?;
        let device = match &y {
            Some(t) => t.device(),
            None => return None,
        };
        if p == 0.0 || !B::ad_enabled(&device) {
            return y;
        }
        let keep = Tensor::<B, 2>::random([batch, 1], Distribution::Bernoulli(1.0 - p), &device); // [b, 1]
        y.map(|y| y * keep.repeat_dim(1, k))
    }

    /// `D(x; σ, y)` on images and the selected encoder taps of the same pass.
    ///
    /// # Shapes
    /// - `x`: `[b, c, R, R]`, `sigma`: `[b]`, `class_labels`: `[b, K]` (one-hot, or soft;
    ///   `None`: the zero vector), `augment_labels`: `[b, A]` (`None`: no augmentation term)
    /// - returns `(D [b, c, R, R], taps)`, taps as [`EdmPrecondConfig::tap_shapes`]
    pub fn forward_images(
        &self,
        x: Tensor<B, 4>,
        sigma: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 2>>,
        augment_labels: Option<Tensor<B, 2>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let [b, _, _, _] = x.dims();
        let (c_skip, c_out, c_in, c_noise) = edm_scalings_tensor(sigma, self.config.sigma_data);
        let col = |t: Tensor<B, 1>| t.reshape([b, 1, 1, 1]); // [b, 1, 1, 1]
        let y = self.drop_labels(class_labels, b);
        let (f, taps) = self
            .model
            .forward(x.clone() * col(c_in), c_noise, y, augment_labels);
        let levels = self.config.tap_levels();
        let taps = taps
            .into_iter()
            .enumerate()
            .filter(|(l, _)| levels.contains(l))
            .map(|(_, t)| t)
            .collect();
        (x * col(c_skip) + f * col(c_out), taps)
    }

    /// `D(x; σ, y)` and the encoder taps of `F(c_in x)` (what a discriminator head reads).
    ///
    /// # Shapes
    /// - `x`: `[b, c·R·R]`, `sigma`: `[b]`, `labels`: `[b]`
    /// - returns `(denoised [b, c·R·R], taps)` (see [`EdmPrecondConfig::tap_shapes`])
    pub fn forward_with_features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Vec<Tensor<B, 4>>) {
        let c = &self.config;
        let [b, dim] = x.dims();
        let x = x.reshape([b, c.channels, c.resolution, c.resolution]); // [b, c, R, R]
        let (d, taps) = self.forward_images(x, sigma, self.one_hot_labels(labels), None);
        (d.reshape([b, dim]), taps)
    }

    /// `D(x; σ, y)`.
    ///
    /// # Shapes
    /// - `x`: `[b, c·R·R]`, `sigma`: `[b]`, `labels`: `[b]`; returns `[b, c·R·R]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        self.forward_with_features(x, sigma, labels).0
    }

    /// Every state-dict entry of the network (EDM's names without the `model.` prefix, shapes,
    /// parameter or buffer). Does not materialise lazily initialised parameters.
    pub fn state_spec(&self) -> Vec<EntrySpec> {
        let mut c = SpecCollector(Vec::new(), PhantomData);
        let _ = self.model.clone().map_edm("", &mut c);
        c.0
    }

    /// The weights as EDM's `EDMPrecond.state_dict()`: keys `model.…`, buffers included.
    pub fn to_state_dict(&self) -> StateDict {
        // A clone of a lazily initialised parameter would draw its own values: initialise the
        // originals first, so that the clone below shares them.
        self.visit(&mut Materialise);
        let mut e = Exporter {
            prefix: EDM_PREFIX.to_string(),
            out: Default::default(),
            _b: PhantomData,
        };
        let _ = self.model.clone().map_edm("", &mut e);
        StateDict {
            tensors: e.out,
            source: "fdistill EdmPrecond".into(),
        }
    }

    /// Checks `sd` against the network without loading anything (lazily initialised parameters
    /// stay unallocated): the same checks as [`load_state_dict`](Self::load_state_dict).
    /// Returns the resolved prefix.
    pub fn check_state_dict(
        &self,
        sd: &StateDict,
        prefix: &KeyPrefix,
    ) -> Result<String, WeightsError> {
        let prefix = sd.resolve_prefix(prefix)?;
        let mut check = Importer::<B>::new(sd, prefix.clone(), false);
        let _ = self.model.clone().map_edm("", &mut check);
        let report = check.finish();
        if !report.is_empty() {
            return Err(WeightsError::Mismatch(Box::new(report)));
        }
        Ok(prefix)
    }

    /// Loads every parameter from `sd` (keys `prefix + name`). Nothing is replaced unless all
    /// names, shapes and buffers match; otherwise one [`WeightsError::Mismatch`] lists every
    /// missing, unexpected and mis-shaped tensor.
    pub fn load_state_dict(self, sd: &StateDict, prefix: &KeyPrefix) -> Result<Self, WeightsError> {
        let prefix = self.check_state_dict(sd, prefix)?;
        let mut apply = Importer::<B>::new(sd, prefix, true);
        let model = self.model.map_edm("", &mut apply);
        Ok(EdmPrecond {
            model,
            config: self.config,
        })
    }
}

impl<B: Backend> Denoiser<B> for EdmPrecond<B> {
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

/// The taps are the encoder's feature maps at the end of the selected resolution levels
/// ([`EdmPrecondConfig::tap_shapes`]), what [`ConvDiscriminator`](crate::ConvDiscriminator)
/// reads.
impl<B: Backend> FeatureDenoiser<B> for EdmPrecond<B> {
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

impl<B: Backend> EdmDenoiser<B> for EdmPrecond<B> {
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
    use burn::tensor::TensorData;
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

    /// Seeded values for every parameter: `N(0, 1/fan_in)` (norm scales `1 + N(0, 0.04)`).
    fn randomised(sd: &StateDict) -> StateDict {
        use rand::SeedableRng;
        use rand_distr::{Distribution as _, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut out = sd.clone();
        for (k, t) in out.tensors.iter_mut() {
            if k.ends_with("resample_filter") {
                continue;
            }
            let fan_in: usize = t.shape.iter().skip(1).product::<usize>().max(1);
            let norm_scale = k.contains("norm") && k.ends_with("weight");
            for v in t.values.iter_mut() {
                let n: f32 = StandardNormal.sample(&mut rng);
                *v = if norm_scale {
                    1.0 + 0.2 * n
                } else {
                    n / (fan_in as f32).sqrt()
                };
            }
        }
        out
    }

    fn adm_tiny() -> EdmPrecondConfig {
        EdmPrecondConfig {
            arch: EdmArch::DhariwalUnet(DhariwalUNetConfig {
                model_channels: 8,
                channel_mult: vec![1, 2],
                num_blocks: 1,
                attn_resolutions: vec![4],
                channels_per_head: 8,
                ..DhariwalUNetConfig::adm()
            }),
            ..EdmPrecondConfig::tiny()
        }
    }

    #[test]
    fn shapes_taps_and_near_identity_at_init() {
        let _rng = crate::test_rng::seeded(100);
        let device = Default::default();
        for cfg in [EdmPrecondConfig::tiny(), adm_tiny()] {
            cfg.check().unwrap();
            let net = cfg.init::<B>(&device);
            let (x, sigma, labels) = batch::<B>(&device);
            let (d, taps) = net.forward_with_features(x.clone(), sigma.clone(), Some(labels));
            assert_eq!(d.dims(), [4, 64]);
            let shapes: Vec<[usize; 4]> = taps.iter().map(|t| t.dims()).collect();
            let expected: Vec<[usize; 4]> = cfg
                .tap_shapes()
                .iter()
                .map(|t| [4, t.channels, t.resolution, t.resolution])
                .collect();
            assert_eq!(shapes, vec![[4, 8, 8, 8], [4, 16, 4, 4]]);
            assert_eq!(shapes, expected);
            // The output convolution starts at (nearly) zero — 10⁻⁵ gain in SongUNet, zeros in
            // ADM — so D ≈ c_skip x = σ_d² / (σ² + σ_d²) x.
            let c_skip = sigma
                .powf_scalar(2.0)
                .add_scalar(0.25)
                .recip()
                .mul_scalar(0.25);
            let want = x * c_skip.unsqueeze_dim::<2>(1);
            let err = (d - want).abs().max().into_scalar();
            assert!(err < 1e-3, "{err}");
        }
        // The presets are valid; the image presets tap every level, ADM ImageNet-64 the 8×8.
        for name in EdmPrecondConfig::PRESETS {
            let cfg = EdmPrecondConfig::preset(name).unwrap();
            cfg.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let res = |c: EdmPrecondConfig| -> Vec<usize> {
            c.tap_shapes().iter().map(|t| t.resolution).collect()
        };
        assert_eq!(
            res(EdmPrecondConfig::fashion_mnist_small()),
            vec![32, 16, 8]
        );
        assert_eq!(res(EdmPrecondConfig::edm_ddpmpp_cifar10()), vec![32, 16, 8]);
        assert_eq!(res(EdmPrecondConfig::edm_adm_imagenet64()), vec![8]);
        assert_eq!(
            EdmPrecondConfig::edm_adm_imagenet64().tap_shapes()[0].channels,
            768
        );
    }

    #[test]
    fn gradients_reach_every_parameter() {
        let _rng = crate::test_rng::seeded(101);
        // NCSN++'s Fourier frequencies are a buffer (no gradient); every other parameter —
        // label map, attention, skips, resampling blocks — gets one after an AdamW step.
        let device = Default::default();
        for mut cfg in [EdmPrecondConfig::tiny(), adm_tiny()] {
            cfg.label_dropout = 0.2;
            let mut net = cfg.init::<A>(&device);
            let mut optim = AdamWConfig::new().init::<A, EdmPrecond<A>>();
            // Zero-initialised residual branches (ADM's conv1, proj, out_conv) pass gradients
            // on only once they have moved: three steps reach the embedding layers.
            for step in 0..3 {
                let (x, sigma, labels) = batch::<A>(&device);
                let noise =
                    Tensor::<A, 2>::random([4, 64], Distribution::Normal(0.0, 1.0), &device);
                let loss = edm_loss(&net, x, sigma, noise, 0.5, Some(labels));
                let grads = loss.backward();
                let norms = gradient_norms::<A, _>(&net, &grads);
                assert!(norms.len() > 40, "{}", norms.len());
                let zero: Vec<&str> = norms
                    .iter()
                    .filter(|(_, g)| !(*g > 0.0 && g.is_finite()))
                    .map(|(n, _)| n.as_str())
                    .collect();
                if step == 2 {
                    assert!(zero.is_empty(), "no gradient for {zero:?}");
                }
                let grads = GradientsParams::from_grads(grads, &net);
                net = optim.step(1e-3, net, grads);
            }
        }
    }

    #[test]
    fn fourier_frequencies_are_saved_but_not_trained() {
        let _rng = crate::test_rng::seeded(102);
        let device = Default::default();
        let cfg = EdmPrecondConfig {
            arch: EdmArch::SongUnet(SongUNetConfig {
                model_channels: 8,
                channel_mult: vec![1, 2],
                num_blocks: 1,
                attn_resolutions: vec![],
                ..SongUNetConfig::ncsnpp()
            }),
            ..EdmPrecondConfig::tiny()
        };
        cfg.check().unwrap();
        let net = cfg.init::<A>(&device);
        let (x, sigma, labels) = batch::<A>(&device);
        let noise = Tensor::<A, 2>::random([4, 64], Distribution::Normal(0.0, 1.0), &device);
        let grads = edm_loss(&net, x, sigma, noise, 0.5, Some(labels)).backward();
        let norms = gradient_norms::<A, _>(&net, &grads);
        let freqs = norms
            .iter()
            .find(|(n, _)| n.ends_with("map_noise.freqs"))
            .unwrap();
        assert_eq!(freqs.1, 0.0, "the frequencies are fixed");
        assert!(norms.iter().filter(|(_, g)| *g > 0.0).count() > 40);
        let spec = net.state_spec();
        let freqs = spec.iter().find(|e| e.name == "map_noise.freqs").unwrap();
        assert_eq!(freqs.kind, crate::state_dict::EntryKind::Buffer);
        assert_eq!(freqs.shape, vec![8]); // 2 mc / 2
    }

    #[test]
    fn without_dropout_makes_training_forwards_deterministic() {
        let _rng = crate::test_rng::seeded(103);
        let device = Default::default();
        for arch in [EdmPrecondConfig::tiny().arch, adm_tiny().arch] {
            let mut arch = arch;
            match &mut arch {
                EdmArch::SongUnet(c) => c.dropout = 0.5,
                EdmArch::DhariwalUnet(c) => c.dropout = 0.5,
            }
            let cfg = EdmPrecondConfig {
                arch,
                label_dropout: 0.5,
                ..EdmPrecondConfig::tiny()
            };
            // Random weights everywhere (the zero-initialised convolutions would hide dropout).
            let net = cfg.init::<A>(&device);
            let sd = randomised(&net.to_state_dict());
            let net = net
                .load_state_dict(&sd, &crate::state_dict::KeyPrefix::Auto)
                .unwrap();
            let (x, sigma, labels) = batch::<A>(&device);
            let run = |n: &EdmPrecond<A>| -> Vec<f32> {
                n.forward(x.clone(), sigma.clone(), Some(labels.clone()))
                    .into_data()
                    .to_vec()
                    .unwrap()
            };
            assert_ne!(
                run(&net),
                run(&net),
                "dropout is active on an autodiff backend"
            );
            let eval = net.without_dropout();
            assert_eq!(run(&eval), run(&eval));
            assert_eq!(eval.config.label_dropout, 0.0);
        }
    }

    #[test]
    fn label_dropout_zeroes_labels_only_while_training() {
        let _rng = crate::test_rng::seeded(104);
        let device = Default::default();
        let cfg = EdmPrecondConfig {
            label_dropout: 0.5,
            ..EdmPrecondConfig::tiny()
        };
        let net = cfg.init::<A>(&device);
        let y = Tensor::<A, 2>::ones([4000, 3], &device);
        let kept = net.drop_labels(Some(y.clone()), 4000).unwrap();
        let rows: Vec<f32> = kept.sum_dim(1).into_data().to_vec().unwrap();
        assert!(rows.iter().all(|r| *r == 0.0 || *r == 3.0));
        let frac = rows.iter().filter(|r| **r == 0.0).count() as f64 / 4000.0;
        assert!((frac - 0.5).abs() < 0.04, "{frac}");
        // Inference backend: labels untouched.
        let inner = cfg.init::<B>(&device);
        let y = Tensor::<B, 2>::ones([8, 3], &device);
        let same = inner.drop_labels(Some(y.clone()), 8).unwrap();
        assert_eq!(
            same.into_data().to_vec::<f32>().unwrap(),
            y.into_data().to_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn checkpoint_round_trip_and_shape_mismatch_names_the_tensor() {
        let _rng = crate::test_rng::seeded(105);
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unet.safetensors");
        let cfg = EdmPrecondConfig::tiny();
        let net = cfg.init::<B>(&device);
        save_module::<B, _>(&net, &path).unwrap();
        let loaded = load_module::<B, _>(cfg.init::<B>(&device), &path).unwrap();
        let (x, sigma, labels) = batch::<B>(&device);
        let a = net.forward(x.clone(), sigma.clone(), Some(labels.clone()));
        let b = loaded.forward(x, sigma, Some(labels));
        assert_eq!(
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap()
        );
        // Four classes instead of three: the label map is named with both shapes.
        let other = EdmPrecondConfig {
            n_classes: Some(4),
            ..cfg
        };
        let e = load_module::<B, _>(other.init::<B>(&device), &path).unwrap_err();
        assert!(matches!(e, CheckpointError::ShapeMismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("map_label.weight") && msg.contains("[8, 3]"),
            "{msg}"
        );
    }

    #[test]
    fn bad_configs_are_rejected() {
        let _rng = crate::test_rng::seeded(106);
        let song = |f: &dyn Fn(&mut SongUNetConfig)| {
            let mut c = EdmPrecondConfig::fashion_mnist_small();
            if let EdmArch::SongUnet(s) = &mut c.arch {
                f(s);
            }
            c
        };
        let cases: Vec<(EdmPrecondConfig, &str)> = vec![
            (
                EdmPrecondConfig {
                    resolution: 28, // 28 → 14 → 7 → 3.5
                    ..song(&|s| s.channel_mult = vec![1, 2, 2, 2])
                },
                "halved",
            ),
            (song(&|s| s.model_channels = 36), "GroupNorm"),
            (song(&|s| s.dropout = 1.0), "dropout"),
            (song(&|s| s.channel_mult = vec![]), "channel_mult"),
            (
                song(&|s| s.resample_filter = vec![1.0, 2.0, 1.0]),
                "resample_filter",
            ),
            (
                EdmPrecondConfig {
                    tap_resolutions: Some(vec![12]),
                    ..EdmPrecondConfig::fashion_mnist_small()
                },
                "tap_resolutions",
            ),
            (
                EdmPrecondConfig {
                    label_dropout: 0.1,
                    n_classes: None,
                    ..EdmPrecondConfig::fashion_mnist_small()
                },
                "label_dropout",
            ),
        ];
        for (cfg, word) in cases {
            let msg = cfg.check().unwrap_err().to_string();
            assert!(msg.contains(word), "{word}: {msg}");
        }
        assert!(
            EdmPrecondConfig::preset("huge")
                .unwrap_err()
                .to_string()
                .contains("tiny")
        );
    }

    #[test]
    fn edm_kwargs_round_trip_and_defaults() {
        let _rng = crate::test_rng::seeded(107);
        for name in EdmPrecondConfig::PRESETS {
            let cfg = EdmPrecondConfig::preset(name).unwrap();
            let back = EdmPrecondConfig::from_edm_kwargs(&cfg.to_edm_kwargs()).unwrap();
            assert_eq!(
                EdmPrecondConfig {
                    tap_resolutions: cfg.tap_resolutions.clone(),
                    ..back
                },
                cfg,
                "{name}"
            );
        }
        // EDM's training_options.json network_kwargs for CIFAR-10 DDPM++ (plus the data's
        // resolution, channels and labels) give the preset.
        let json = r#"{"img_resolution": 32, "img_channels": 3, "label_dim": 10,
            "class_name": "training.networks.EDMPrecond", "model_type": "SongUNet",
            "embedding_type": "positional", "encoder_type": "standard",
            "decoder_type": "standard", "channel_mult_noise": 1, "resample_filter": [1, 1],
            "model_channels": 128, "channel_mult": [2, 2, 2], "augment_dim": 9,
            "dropout": 0.13, "use_fp16": false}"#;
        let k: EdmKwargs = serde_json::from_str(json).unwrap();
        assert_eq!(
            EdmPrecondConfig::from_edm_kwargs(&k).unwrap(),
            EdmPrecondConfig::edm_ddpmpp_cifar10()
        );
        // EDMPrecond's default network is ADM.
        let k: EdmKwargs =
            serde_json::from_str(r#"{"img_resolution": 64, "img_channels": 3, "label_dim": 1000}"#)
                .unwrap();
        let cfg = EdmPrecondConfig::from_edm_kwargs(&k).unwrap();
        assert_eq!(cfg.arch, EdmArch::DhariwalUnet(DhariwalUNetConfig::adm()));
        // Settings of the other family are refused.
        let k: EdmKwargs = serde_json::from_str(
            r#"{"img_resolution": 64, "img_channels": 3, "encoder_type": "residual"}"#,
        )
        .unwrap();
        let e = EdmPrecondConfig::from_edm_kwargs(&k)
            .unwrap_err()
            .to_string();
        assert!(e.contains("encoder_type"), "{e}");
        assert!(
            serde_json::from_str::<EdmKwargs>(
                r#"{"img_resolution": 8, "img_channels": 1, "bogus": 1}"#
            )
            .is_err()
        );
    }
}
