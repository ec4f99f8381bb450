//! The channel bookkeeping of EDM's UNets (SongUNet and DhariwalUNet), computed once from a
//! configuration and used both to build the network and to validate the configuration.
//!
//! ```text
//! encoder, level l (resolution r = R / 2^l, channels C_l = mc · mult_l):
//!   l = 0: {r}x{r}_conv   in_channels → C_first  (SongUNet: mc, ADM: C_0)
//!   l > 0: {r}x{r}_down   block C_{l−1} → C_{l−1}, ×½   [+ aux_down/aux_skip | aux_residual]
//!   {r}x{r}_block{i}      num_blocks blocks → C_l, attention at attn_resolutions
//!   every output except aux_* is pushed on the skip stack
//! decoder, levels reversed:
//!   lowest level: {r}x{r}_in0 (attention), {r}x{r}_in1; else {r}x{r}_up (×2)
//!   {r}x{r}_block{i}      num_blocks + 1 blocks on cat(h, skip.pop()) → C_l
//!   SongUNet: {r}x{r}_aux_norm, _aux_conv at level 0 (and every level with a skip decoder,
//!   plus {r}x{r}_aux_up above the lowest level)
//! ```

use serde::{Deserialize, Serialize};

/// SongUNet's encoder: plain (DDPM++), with downsampled-input skips, or residual (NCSN++).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderType {
    /// No auxiliary path (DDPM++).
    Standard,
    /// `aux_down` (filter only) + `aux_skip` (1×1) adding the downsampled input at each level.
    Skip,
    /// `aux_residual` (3×3, fused downsampling), averaged into the features (NCSN++).
    Residual,
}

/// SongUNet's decoder: one output head at the top level, or a head per level summed upwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderType {
    /// Output head at level 0 only (DDPM++ and NCSN++).
    Standard,
    /// An output head per level, upsampled and summed.
    Skip,
}

/// One residual block: channels in and out, attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPlan {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Self-attention requested.
    pub attention: bool,
}

/// One encoder level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncLevelPlan {
    /// Resolution `r`.
    pub res: usize,
    /// `{r}x{r}_conv` (level 0): `(in, out)`.
    pub conv: Option<(usize, usize)>,
    /// `{r}x{r}_down` (levels > 0): channels.
    pub down: Option<usize>,
    /// `{r}x{r}_aux_down` (skip encoder): channels of the auxiliary image.
    pub aux_down: Option<usize>,
    /// `{r}x{r}_aux_skip` (skip encoder): `(in, out)`.
    pub aux_skip: Option<(usize, usize)>,
    /// `{r}x{r}_aux_residual` (residual encoder): `(in, out)`.
    pub aux_residual: Option<(usize, usize)>,
    /// `{r}x{r}_block{i}`.
    pub blocks: Vec<BlockPlan>,
}

/// One decoder level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecLevelPlan {
    /// Resolution `r`.
    pub res: usize,
    /// `{r}x{r}_in0` (attention) and `_in1` at the lowest level: channels.
    pub middle: Option<usize>,
    /// `{r}x{r}_up`: channels.
    pub up: Option<usize>,
    /// `{r}x{r}_block{i}` on concatenated skips.
    pub blocks: Vec<BlockPlan>,
    /// `{r}x{r}_aux_up` (skip decoder): channels of the output image.
    pub aux_up: Option<usize>,
    /// `{r}x{r}_aux_norm` + `_aux_conv`: input channels.
    pub aux_out: Option<usize>,
}

/// The whole network's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UNetPlan {
    /// Encoder levels, top (full resolution) first.
    pub enc: Vec<EncLevelPlan>,
    /// Decoder levels, bottom first.
    pub dec: Vec<DecLevelPlan>,
    /// Channels entering the output head.
    pub out_channels: usize,
}

/// What distinguishes the two families' bookkeeping.
#[derive(Debug, Clone)]
pub struct PlanSpec<'a> {
    /// Input resolution `R`.
    pub resolution: usize,
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// `mc`.
    pub model_channels: usize,
    /// `mult_l`.
    pub channel_mult: &'a [usize],
    /// Blocks per encoder level.
    pub num_blocks: usize,
    /// Resolutions with attention.
    pub attn_resolutions: &'a [usize],
    /// SongUNet: the first conv outputs `mc` (ADM: `mc · mult_0`).
    pub first_conv_mc: bool,
    /// SongUNet: attention in the decoder only on the last block of a level (ADM: every block).
    pub dec_attn_last_only: bool,
    /// SongUNet's encoder type (ADM: standard).
    pub encoder: EncoderType,
    /// SongUNet's decoder type (ADM: standard, with its own `out_norm`/`out_conv`).
    pub decoder: Option<DecoderType>,
}

impl PlanSpec<'_> {
    /// The plan; see the module docs.
    pub fn plan(&self) -> UNetPlan {
        let mc = self.model_channels;
        let levels = self.channel_mult.len();
        let mut plan = UNetPlan::default();
        let mut skips = Vec::new();
        let (mut c, mut caux) = (self.in_channels, self.in_channels);
        for (l, m) in self.channel_mult.iter().enumerate() {
            let res = self.resolution >> l;
            let mut lvl = EncLevelPlan {
                res,
                ..Default::default()
            };
            if l == 0 {
                let cout = if self.first_conv_mc { mc } else { mc * m };
                lvl.conv = Some((c, cout));
                c = cout;
                skips.push(c);
            } else {
                lvl.down = Some(c);
                skips.push(c);
                match self.encoder {
                    EncoderType::Standard => {}
                    EncoderType::Skip => {
                        lvl.aux_down = Some(caux);
                        lvl.aux_skip = Some((caux, c));
                    }
                    EncoderType::Residual => {
                        lvl.aux_residual = Some((caux, c));
                        caux = c;
                    }
                }
            }
            for _ in 0..self.num_blocks {
                lvl.blocks.push(BlockPlan {
                    cin: c,
                    cout: mc * m,
                    attention: self.attn_resolutions.contains(&res),
                });
                c = mc * m;
                skips.push(c);
            }
            plan.enc.push(lvl);
        }
        for (l, m) in self.channel_mult.iter().enumerate().rev() {
            let res = self.resolution >> l;
            let mut lvl = DecLevelPlan {
                res,
                ..Default::default()
            };
            if l == levels - 1 {
                lvl.middle = Some(c);
            } else {
                lvl.up = Some(c);
            }
            for i in 0..=self.num_blocks {
                let skip = skips.pop().expect("one skip per decoder block");
                let attn_here = !self.dec_attn_last_only || i == self.num_blocks;
                lvl.blocks.push(BlockPlan {
                    cin: c + skip,
                    cout: mc * m,
                    attention: attn_here && self.attn_resolutions.contains(&res),
                });
                c = mc * m;
            }
            if let Some(dec) = self.decoder
                && (dec == DecoderType::Skip || l == 0)
            {
                if dec == DecoderType::Skip && l < levels - 1 {
                    lvl.aux_up = Some(self.out_channels);
                }
                lvl.aux_out = Some(c);
            }
            plan.dec.push(lvl);
        }
        debug_assert!(skips.is_empty(), "every skip is consumed");
        plan.out_channels = c;
        plan
    }
}

impl UNetPlan {
    /// Every channel count a GroupNorm normalises (block inputs and outputs, output heads).
    pub fn normalised_channels(&self) -> Vec<usize> {
        let blocks = self
            .enc
            .iter()
            .flat_map(|l| &l.blocks)
            .chain(self.dec.iter().flat_map(|l| &l.blocks));
        let mut out: Vec<usize> = blocks.flat_map(|b| [b.cin, b.cout]).collect();
        for l in &self.enc {
            out.extend(l.down);
        }
        for l in &self.dec {
            out.extend(l.middle.iter().chain(&l.up).chain(&l.aux_out));
        }
        out.push(self.out_channels);
        out
    }
}

/// Checks the shared settings of a UNet configuration; `Err` names the problem.
pub fn check_unet(spec: &PlanSpec<'_>) -> Result<(), String> {
    if spec.in_channels == 0 || spec.model_channels == 0 || spec.num_blocks == 0 {
        return Err(format!(
            "channels ({}), model_channels ({}) and num_blocks ({}) must be ≥ 1",
            spec.in_channels, spec.model_channels, spec.num_blocks
        ));
    }
    if spec.channel_mult.is_empty() || spec.channel_mult.contains(&0) {
        return Err(format!(
            "channel_mult must list ≥ 1 positive multiplier per level, got {:?}",
            spec.channel_mult
        ));
    }
    let halvings = spec.channel_mult.len() - 1;
    if spec.resolution == 0 || !spec.resolution.is_multiple_of(1 << halvings) {
        return Err(format!(
            "resolution {} cannot be halved {halvings} times ({} levels); pad the images or use \
             fewer levels",
            spec.resolution,
            spec.channel_mult.len()
        ));
    }
    for c in spec.plan().normalised_channels() {
        let g = crate::edm_layers::group_count(c);
        if g == 0 || !c.is_multiple_of(g) {
            return Err(format!(
                "a GroupNorm sees {c} channels, which min(32, C/4) groups cannot split evenly; \
                 use model_channels that are multiples of 8 (≥ 8)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddpmpp_cifar10_plan_matches_the_published_layout() {
        // EDM's CIFAR-10 DDPM++: 128 channels, mults 2, 2, 2, 4 blocks, attention at 16×16.
        let spec = PlanSpec {
            resolution: 32,
            in_channels: 3,
            out_channels: 3,
            model_channels: 128,
            channel_mult: &[2, 2, 2],
            num_blocks: 4,
            attn_resolutions: &[16],
            first_conv_mc: true,
            dec_attn_last_only: true,
            encoder: EncoderType::Standard,
            decoder: Some(DecoderType::Standard),
        };
        let p = spec.plan();
        assert_eq!(p.enc[0].conv, Some((3, 128)));
        assert_eq!(
            p.enc[0].blocks[0],
            BlockPlan {
                cin: 128,
                cout: 256,
                attention: false
            }
        );
        assert!(p.enc[1].blocks.iter().all(|b| b.attention));
        assert_eq!(p.enc[2].down, Some(256));
        // Lowest decoder level: in0/in1, then 5 blocks of 512 → 256 inputs.
        assert_eq!(p.dec[0].middle, Some(256));
        assert_eq!(p.dec[0].blocks.len(), 5);
        assert!(p.dec[0].blocks.iter().all(|b| b.cin == 512));
        // Top level: the last block sees 256 + 128 (the first conv's skip).
        assert_eq!(p.dec[2].blocks[4].cin, 384);
        // 16×16: attention only on the last decoder block.
        let attn: Vec<bool> = p.dec[1].blocks.iter().map(|b| b.attention).collect();
        assert_eq!(attn, [false, false, false, false, true]);
        assert_eq!(p.dec[2].aux_out, Some(256));
        assert!(check_unet(&spec).is_ok());
        let bad = PlanSpec {
            model_channels: 36,
            ..spec
        }; // 144-channel inputs: 32 groups do not divide them
        assert!(check_unet(&bad).unwrap_err().contains("GroupNorm"));
    }
}
