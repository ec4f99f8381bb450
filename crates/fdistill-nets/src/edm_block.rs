//! The residual block shared by DDPM++, NCSN++ and ADM (EDM's `UNetBlock`; Karras et al.
//! 2022, appendix F.2), with optional ×2 resampling and multi-head self-attention:
//!
//! ```text
//! h = conv0(SiLU(norm0(x)))                              (conv0 resamples when up/down)
//! p = affine(emb)                                        [b, 2C] or [b, C]
//! h = SiLU(norm1(h) · (1 + scale) + shift)                adaptive (ADM): (scale, shift) = p
//!   | SiLU(norm1(h + p))                                  additive (DDPM++, NCSN++)
//! h = s · (conv1(dropout(h)) + skip(x))                  s = skip_scale (√½ or 1)
//! attention (heads > 0):
//!   [q; k; v] = qkv(norm2(h)), channels laid out [head][channel][q|k|v] (EDM's order)
//!   a_head = v · softmax(qᵀk / √c_head)ᵀ                  per head, over the pixels
//!   h = s · (proj(a) + h)
//! ```
//!
//! Names of the parameters (EDM's): `norm0, conv0, affine, norm1, conv1[, skip][, norm2, qkv,
//! proj]`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::edm_layers::{EdmConv2d, EdmGroupNorm, EdmLinear, LayerInit, Resample};
use crate::ops::scaled_sum;
use crate::state_dict::{EdmMapper, EdmNamed, sub_name};

/// Settings shared by every block of one network (EDM's `block_kwargs`).
#[derive(Debug, Clone)]
pub struct BlockKind {
    /// Channels of the embedding vector.
    pub emb_channels: usize,
    /// Attention heads: a fixed count (SongUNet: 1) or `C / channels_per_head` (ADM: 64).
    pub heads: Heads,
    /// Dropout before `conv1` (training only).
    pub dropout: f64,
    /// `s` in the residual sums (√½ for DDPM++/NCSN++, 1 for ADM).
    pub skip_scale: f64,
    /// GroupNorm ε.
    pub eps: f64,
    /// The separable resampling filter taps.
    pub resample_filter: Vec<f64>,
    /// A 1×1 convolution on the skip path of a resampling block even when `in = out`.
    pub resample_proj: bool,
    /// Scale-and-shift (true, ADM) or additive (false) noise-embedding injection.
    pub adaptive_scale: bool,
    /// Initialisation of `conv0`, `affine`, `skip`.
    pub init: LayerInit,
    /// Initialisation of `conv1` and `proj` (zero or nearly).
    pub init_zero: LayerInit,
    /// Initialisation of `qkv`.
    pub init_attn: LayerInit,
}

/// How many attention heads a block with attention has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// Exactly this many.
    Fixed(usize),
    /// `out_channels / this` (0 heads, i.e. no attention, below this many channels).
    ChannelsPerHead(usize),
}

/// One block: residual unit with noise-embedding injection, optional resampling and
/// attention; see the module docs.
#[derive(Module, Debug)]
pub struct UNetBlock<B: Backend> {
    norm0: EdmGroupNorm<B>,
    conv0: EdmConv2d<B>,
    affine: EdmLinear<B>,
    norm1: EdmGroupNorm<B>,
    conv1: EdmConv2d<B>,
    skip: Option<EdmConv2d<B>>,
    norm2: Option<EdmGroupNorm<B>>,
    qkv: Option<EdmConv2d<B>>,
    proj: Option<EdmConv2d<B>>,
    dropout: Dropout,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    skip_scale: f64,
    #[module(skip)]
    adaptive_scale: bool,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    out_channels: usize,
}

impl<B: Backend> UNetBlock<B> {
    /// A `cin → cout` block resampled by `resample` (`None`, `Up` or `Down`), with attention
    /// when `attention` (and the head rule gives at least one head).
    pub fn new(
        kind: &BlockKind,
        cin: usize,
        cout: usize,
        resample: Resample,
        attention: bool,
        device: &B::Device,
    ) -> Self {
        let heads = match (attention, kind.heads) {
            (false, _) => 0,
            (true, Heads::Fixed(n)) => n,
            (true, Heads::ChannelsPerHead(c)) => cout / c,
        };
        let f = &kind.resample_filter;
        let resampling = resample != Resample::None;
        let skip = (cin != cout || resampling).then(|| {
            let k = if kind.resample_proj || cin != cout {
                1
            } else {
                0
            };
            EdmConv2d::new(cin, cout, k, kind.init, resample, f, device)
        });
        let emb_out = if kind.adaptive_scale { 2 * cout } else { cout };
        UNetBlock {
            norm0: EdmGroupNorm::new(cin, kind.eps, device),
            conv0: EdmConv2d::new(cin, cout, 3, kind.init, resample, f, device),
            affine: EdmLinear::new(kind.emb_channels, emb_out, true, kind.init, device),
            norm1: EdmGroupNorm::new(cout, kind.eps, device),
            conv1: EdmConv2d::plain(cout, cout, 3, kind.init_zero, device),
            skip,
            norm2: (heads > 0).then(|| EdmGroupNorm::new(cout, kind.eps, device)),
            qkv: (heads > 0).then(|| EdmConv2d::plain(cout, 3 * cout, 1, kind.init_attn, device)),
            proj: (heads > 0).then(|| EdmConv2d::plain(cout, cout, 1, kind.init_zero, device)),
            dropout: DropoutConfig::new(kind.dropout).init(),
            heads,
            skip_scale: kind.skip_scale,
            adaptive_scale: kind.adaptive_scale,
            in_channels: cin,
            out_channels: cout,
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Attention heads (0: no attention).
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The same block with its dropout switched off.
    pub fn without_dropout(self) -> Self {
        UNetBlock {
            dropout: DropoutConfig::new(0.0).init(),
            ..self
        }
    }

    /// # Shapes
    /// - `x`: `[b, in, h, w]`, `emb`: `[b, emb_channels]`
    /// - returns `[b, out, h', w']` (`h' = 2h` up, `h/2` down, else `h`)
    pub fn forward(&self, x: Tensor<B, 4>, emb: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = self.conv0.forward(self.norm0.forward_silu(x.clone())); // [b, out, h', w']
        let [_, c, _, _] = h.dims();
        let p = self.affine.forward(emb); // [b, 2c] or [b, c]
        let h = if self.adaptive_scale {
            let scale = p.clone().narrow(1, 0, c); // [b, c]
            let shift = p.narrow(1, c, c); // [b, c]
            self.norm1.forward_modulated_silu(h, scale, shift)
        } else {
            self.norm1.forward_injected_silu(h, p) // GN(h + p): the injection fused
        };
        let h = self.conv1.forward(self.dropout.forward(h)); // [b, out, h', w']
        let skip = match &self.skip {
            Some(s) => s.forward(x),
            None => x,
        };
        let h = scaled_sum(h, skip, self.skip_scale);
        match (&self.norm2, &self.qkv, &self.proj) {
            (Some(norm2), Some(qkv), Some(proj)) => {
                let a = attention(qkv.forward(norm2.forward(h.clone())), self.heads); // [b, out, h', w']
                scaled_sum(proj.forward(a), h, self.skip_scale)
            }
            _ => h,
        }
    }
}

/// Multi-head self-attention over the pixels, from the `qkv` projection laid out as EDM's
/// (`[head][channel][q|k|v]` along the channel axis): [`crate::ops::attention()`], one node
/// with a hand-written backward on the CPU backend.
///
/// $$ a_{n} = V_n \operatorname{softmax}\\!\big(Q_n^\top K_n / \sqrt{c}\big)^\top $$
///
/// per batch element and head `n`, `Q_n, K_n, V_n ∈ ℝ^{c × hw}`, `c = C / heads`, the
/// softmax over keys.
///
/// # Shapes
/// - `qkv`: `[b, 3C, h, w]`; returns `[b, C, h, w]`
pub fn attention<B: Backend>(qkv: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    crate::ops::attention(qkv, heads)
}

impl<B: Backend> EdmNamed<B> for UNetBlock<B> {
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self {
        let n = |f: &str| sub_name(name, f);
        UNetBlock {
            norm0: self.norm0.map_edm(&n("norm0"), m),
            conv0: self.conv0.map_edm(&n("conv0"), m),
            affine: self.affine.map_edm(&n("affine"), m),
            norm1: self.norm1.map_edm(&n("norm1"), m),
            conv1: self.conv1.map_edm(&n("conv1"), m),
            skip: self.skip.map(|s| s.map_edm(&n("skip"), m)),
            norm2: self.norm2.map(|s| s.map_edm(&n("norm2"), m)),
            qkv: self.qkv.map(|s| s.map_edm(&n("qkv"), m)),
            proj: self.proj.map(|s| s.map_edm(&n("proj"), m)),
            dropout: self.dropout,
            heads: self.heads,
            skip_scale: self.skip_scale,
            adaptive_scale: self.adaptive_scale,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    type B = Flex;

    fn kind(adaptive: bool) -> BlockKind {
        use crate::edm_layers::InitMode;
        let init = LayerInit::new(InitMode::XavierUniform);
        BlockKind {
            emb_channels: 6,
            heads: Heads::ChannelsPerHead(4),
            dropout: 0.0,
            skip_scale: 0.5f64.sqrt(),
            eps: 1e-6,
            resample_filter: vec![1.0, 1.0],
            resample_proj: !adaptive,
            adaptive_scale: adaptive,
            init,
            init_zero: init,
            init_attn: init,
        }
    }

    #[test]
    fn block_shapes_parameters_and_heads() {
        let _rng = crate::test_rng::seeded(101);
        let device = Default::default();
        let x = Tensor::<B, 4>::random([2, 8, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let emb = Tensor::<B, 2>::random([2, 6], Distribution::Normal(0.0, 1.0), &device);
        for adaptive in [false, true] {
            let k = kind(adaptive);
            let down = UNetBlock::<B>::new(&k, 8, 8, Resample::Down, false, &device);
            assert_eq!(down.forward(x.clone(), emb.clone()).dims(), [2, 8, 2, 2]);
            // Skip of an in = out resampling block: 1×1 conv (resample_proj) or parameter-free.
            let skip = down.skip.as_ref().unwrap();
            assert_eq!(skip.weight.is_some(), !adaptive);
            let up = UNetBlock::<B>::new(&k, 8, 16, Resample::Up, true, &device);
            assert_eq!(up.heads(), 4);
            assert_eq!(up.forward(x.clone(), emb.clone()).dims(), [2, 16, 8, 8]);
            assert_eq!(up.affine.weight.dims(), [if adaptive { 32 } else { 16 }, 6]);
            // Fewer channels than one head: attention requested but absent (as EDM).
            let small = UNetBlock::<B>::new(&k, 8, 3, Resample::None, true, &device);
            assert_eq!(small.heads(), 0);
            assert!(small.qkv.is_none());
        }
    }
}
