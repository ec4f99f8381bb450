//! Convolutional discriminator heads on spatial feature taps (SPEC §2), the density-ratio
//! estimator of f-distill on images.
//!
//! One [`ConvHead`] per tap:
//!
//! ```text
//! tap [b, C, R, R]
//!   → (conv 4×4 stride 2 pad 1 → GroupNorm → SiLU) while the side is > 8       [b, W, 8, 8]
//!   → conv 3×3 → GroupNorm → SiLU                                             [b, W, s, s]
//!   → conv s×s (no padding)                                                    [b, 1, 1, 1]
//! ```
//!
//! Taps already at 8×8 or smaller (the 8×8 bottleneck of a 32×32 UNet, or the 4×4 level of
//! the tiny test UNet) skip the halving and go straight to the 3×3 block, so every head has at
//! least one nonlinearity; `s = min(R, 8)`. [`ConvDiscriminator`] holds one head per tap and
//! **averages their logits**: `C(x) = (1/H) Σ_h C_h(tap_h(x))`.
//!
//! The heads are trained with the non-saturating logistic loss ([`logistic_discriminator_loss`])
//!
//! $$ \mathcal L_C = \operatorname{mean} \operatorname{softplus}(C(\text{fake})) +
//!    \operatorname{mean} \operatorname{softplus}(-C(\text{real})), $$
//!
//! whose optimum is `C* = log p_σ / q_σ` (teacher over student), so the averaged logit is the
//! log density ratio the f-distill weight `h(r)` needs. Clamping it to [−10, 10] and clipping
//! `r` are the trainer's job (SPEC §2), not the head's.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use fdistill_core::ratio::{DensityRatioEstimator, FeatureMap, LearnedRatioEstimator, RatioInput};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::edm_layers::group_count;
use crate::edm_precond::TapShape;
use crate::ops::{GroupNorm, GroupNormConfig, conv2d};

/// Side at which the halving stops (SPEC §2: "down to 8×8").
pub const HEAD_TARGET_RESOLUTION: usize = 8;

/// A configuration error or features that do not match the heads.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConvDiscError {
    /// The configuration is invalid.
    #[error("invalid discriminator config: {0}")]
    Config(String),
    /// The features handed to the heads do not match the taps they were built for.
    #[error("discriminator features: {0}")]
    Features(String),
}

/// Configuration of [`ConvDiscriminator`]: one head per tap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvDiscriminatorConfig {
    /// The taps the heads read, in the order the features arrive
    /// (e.g. [`UNetConfig::tap_shapes`](crate::EdmPrecondConfig::tap_shapes)).
    pub taps: Vec<TapShape>,
    /// Hidden channels of every head's convolutions.
    pub width: usize,
}

impl ConvDiscriminatorConfig {
    /// Heads of `width` channels on every tap.
    pub fn new(taps: Vec<TapShape>, width: usize) -> Self {
        ConvDiscriminatorConfig { taps, width }
    }

    /// Validates the configuration; call before building the heads.
    pub fn check(&self) -> Result<(), ConvDiscError> {
        let err = |m: String| Err(ConvDiscError::Config(m));
        if self.taps.is_empty() {
            return err("need at least one tap".into());
        }
        let g = group_count(self.width);
        if g == 0 || !self.width.is_multiple_of(g) {
            return err(format!(
                "width {} cannot be split into min(32, C/4) GroupNorm groups; use a multiple of 32 \
                 (or of 4 up to 128)",
                self.width
            ));
        }
        for t in &self.taps {
            if t.channels == 0 || t.resolution == 0 {
                return err(format!("tap {t:?} is empty"));
            }
            let halves_cleanly = t.resolution.is_multiple_of(HEAD_TARGET_RESOLUTION)
                && (t.resolution / HEAD_TARGET_RESOLUTION).is_power_of_two();
            if t.resolution > HEAD_TARGET_RESOLUTION && !halves_cleanly {
                return err(format!(
                    "tap side {} does not halve down to {HEAD_TARGET_RESOLUTION}",
                    t.resolution
                ));
            }
        }
        Ok(())
    }

    /// Builds the heads on `device`. Call [`check`](Self::check) first.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvDiscriminator<B> {
        ConvDiscriminator {
            heads: self
                .taps
                .iter()
                .map(|t| ConvHead::new(*t, self.width, device))
                .collect(),
            config: self.clone(),
        }
    }
}

/// Number of stride-2 halvings a head applies to a tap of side `resolution`: halve while the
/// side is above [`HEAD_TARGET_RESOLUTION`].
pub fn head_halvings(resolution: usize) -> usize {
    let mut r = resolution;
    let mut n = 0;
    while r > HEAD_TARGET_RESOLUTION {
        r /= 2;
        n += 1;
    }
    n
}

/// conv → GroupNorm → SiLU.
#[derive(Module, Debug)]
pub struct ConvNormAct<B: Backend> {
    conv: Conv2d<B>,
    norm: GroupNorm<B>,
}

impl<B: Backend> ConvNormAct<B> {
    /// A `k×k` conv (`cin → cout`; padding 1 at stride 2, `(k − 1)/2` at stride 1) followed by GroupNorm with `min(32, cout/4)` groups and SiLU.
    pub fn new(cin: usize, cout: usize, kernel: usize, stride: usize, device: &B::Device) -> Self {
        let pad = if stride == 2 { 1 } else { (kernel - 1) / 2 };
        ConvNormAct {
            conv: Conv2dConfig::new([cin, cout], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device),
            norm: GroupNormConfig::new(group_count(cout), cout).init(device),
        }
    }

    /// # Shapes
    /// - `x`: `[b, c_in, h, w]`; returns `[b, c_out, h', w']`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.norm.forward_silu(conv2d(&self.conv, x))
    }
}

/// One discriminator head on one tap; see the module docs.
#[derive(Module, Debug)]
pub struct ConvHead<B: Backend> {
    downs: Vec<ConvNormAct<B>>,
    last: ConvNormAct<B>,
    out: Conv2d<B>,
}

impl<B: Backend> ConvHead<B> {
    fn new(tap: TapShape, width: usize, device: &B::Device) -> Self {
        let n = head_halvings(tap.resolution);
        let cin = |i: usize| if i == 0 { tap.channels } else { width };
        let side = tap.resolution >> n;
        ConvHead {
            downs: (0..n)
                .map(|i| ConvNormAct::new(cin(i), width, 4, 2, device))
                .collect(),
            last: ConvNormAct::new(cin(n), width, 3, 1, device),
            out: Conv2dConfig::new([width, 1], [side, side]).init(device),
        }
    }

    /// The head's logit.
    ///
    /// # Shapes
    /// - `tap`: `[b, C, R, R]`; returns `[b]`
    pub fn forward(&self, tap: Tensor<B, 4>) -> Tensor<B, 1> {
        let mut h = tap;
        for d in &self.downs {
            h = d.forward(h); // [b, W, R/2, R/2]
        }
        let h = self.last.forward(h); // [b, W, s, s]
        let [b, _, _, _] = h.dims();
        conv2d(&self.out, h).reshape([b]) // [b, 1, 1, 1] → [b]
    }
}

/// Several heads, one per tap, whose logits are averaged.
#[derive(Module, Debug)]
pub struct ConvDiscriminator<B: Backend> {
    heads: Vec<ConvHead<B>>,
    /// The configuration (not a parameter).
    #[module(skip)]
    pub config: ConvDiscriminatorConfig,
}

impl<B: Backend> ConvDiscriminator<B> {
    /// The averaged logit `(1/H) Σ_h C_h(tap_h)`, checking the features against the taps the
    /// heads were built for.
    ///
    /// # Shapes
    /// - `features[h]`: `FeatureMap::Spatial([b, C_h, R_h, R_h])`; returns `[b]`
    pub fn try_logits(&self, features: &[FeatureMap<B>]) -> Result<Tensor<B, 1>, ConvDiscError> {
        let bad = |m: String| Err(ConvDiscError::Features(m));
        if features.len() != self.heads.len() {
            return bad(format!(
                "got {} feature maps for {} heads; pass the taps of `forward_with_features` in order",
                features.len(),
                self.heads.len()
            ));
        }
        let mut sum: Option<Tensor<B, 1>> = None;
        for (i, (head, f)) in self.heads.iter().zip(features).enumerate() {
            let FeatureMap::Spatial(t) = f else {
                return bad(format!(
                    "feature {i} is flat; convolutional heads need spatial [b, C, H, W] maps \
                     (use the MLP head for flat taps)"
                ));
            };
            let want = self.config.taps[i];
            let [_, c, h, w] = t.dims();
            if (c, h, w) != (want.channels, want.resolution, want.resolution) {
                return bad(format!(
                    "feature {i} has shape [_, {c}, {h}, {w}] but head {i} was built for \
                     [_, {}, {r}, {r}]",
                    want.channels,
                    r = want.resolution
                ));
            }
            let l = head.forward(t.clone()); // [b]
            sum = Some(match sum {
                Some(s) => s + l,
                None => l,
            });
        }
        Ok(sum
            .expect("at least one head (checked)")
            .div_scalar(self.heads.len() as f64))
    }

    /// [`try_logits`](Self::try_logits) for callers that built the heads from the same
    /// network's [`tap_shapes`](crate::EdmPrecondConfig::tap_shapes).
    ///
    /// # Panics
    /// If the features do not match the heads (a programming error, with the reason).
    ///
    /// # Shapes
    /// - `features[h]`: `[b, C_h, R_h, R_h]`; returns `[b]`
    pub fn logits(&self, features: &[FeatureMap<B>]) -> Tensor<B, 1> {
        self.try_logits(features).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Elementwise `softplus(x) = log(1 + eˣ) = max(x, 0) + log1p(e^{−|x|})`, finite for every
/// finite `x`.
///
/// # Shapes
/// - `x`: `[n]`; returns `[n]`
pub fn softplus_tensor<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    relu(x.clone()) + x.abs().neg().exp().log1p()
}

/// The non-saturating logistic discriminator loss
/// `mean softplus(C(fake)) + mean softplus(−C(real))` (SPEC §2), minimised at
/// `C* = log p/q`.
///
/// # Shapes
/// - `real_logits`: `[n_real]`, `fake_logits`: `[n_fake]`; returns `[1]`
pub fn logistic_discriminator_loss<B: Backend>(
    real_logits: Tensor<B, 1>,
    fake_logits: Tensor<B, 1>,
) -> Tensor<B, 1> {
    softplus_tensor(fake_logits).mean() + softplus_tensor(real_logits.neg()).mean()
}

impl<B: Backend> DensityRatioEstimator<B> for ConvDiscriminator<B> {
    fn name(&self) -> &str {
        "conv-discriminator"
    }

    /// The averaged head logit on `input.features` (spatial taps, in tap order).
    fn log_ratio(&self, input: &RatioInput<B>) -> Tensor<B, 1> {
        self.logits(&input.features)
    }
}

impl<B: AutodiffBackend> LearnedRatioEstimator<B> for ConvDiscriminator<B> {
    /// [`logistic_discriminator_loss`] of the heads' logits on the real and fake taps.
    fn loss(&self, real: &RatioInput<B>, fake: &RatioInput<B>) -> Tensor<B, 1> {
        logistic_discriminator_loss(self.logits(&real.features), self.logits(&fake.features))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UNetConfig;
    use crate::grad_check::gradient_norms;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, ElementConversion, Int, TensorData};
    use fdistill_divergence::softplus;

    type B = Flex;
    type A = Autodiff<Flex>;

    #[test]
    fn halvings_and_head_shapes() {
        let _rng = crate::test_rng::seeded(100);
        assert_eq!([4, 8, 16, 32, 64].map(head_halvings), [0, 0, 1, 2, 3]);
        let device = Default::default();
        let taps = UNetConfig::fashion_mnist_small().tap_shapes(); // 32, 16, 8
        let cfg = ConvDiscriminatorConfig::new(taps.clone(), 16);
        cfg.check().unwrap();
        let disc = cfg.init::<B>(&device);
        assert_eq!(
            disc.heads.iter().map(|h| h.downs.len()).collect::<Vec<_>>(),
            vec![2, 1, 0]
        );
        let feats: Vec<FeatureMap<B>> = taps
            .iter()
            .map(|t| {
                FeatureMap::Spatial(Tensor::random(
                    [3, t.channels, t.resolution, t.resolution],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                ))
            })
            .collect();
        assert_eq!(disc.try_logits(&feats).unwrap().dims(), [3]);
        // The average of the heads, head by head.
        let mut mean = Tensor::<B, 1>::zeros([3], &device);
        for (h, f) in disc.heads.iter().zip(&feats) {
            let FeatureMap::Spatial(t) = f else {
                unreachable!()
            };
            mean = mean + h.forward(t.clone()).div_scalar(3.0);
        }
        disc.try_logits(&feats)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&mean.into_data(), Default::default());
        // Wrong count, flat maps and wrong shapes are errors naming the problem.
        let e = disc.try_logits(&feats[..2]).unwrap_err().to_string();
        assert!(e.contains("2 feature maps for 3 heads"), "{e}");
        let mut flat = feats.clone();
        flat[1] = FeatureMap::Flat(Tensor::zeros([3, 4], &device));
        let e = disc.try_logits(&flat).unwrap_err().to_string();
        assert!(e.contains("feature 1 is flat"), "{e}");
        let mut wrong = feats.clone();
        wrong[2] = FeatureMap::Spatial(Tensor::zeros([3, 64, 4, 4], &device));
        let e = disc.try_logits(&wrong).unwrap_err().to_string();
        assert!(e.contains("feature 2 has shape [_, 64, 4, 4]"), "{e}");
        assert!(ConvDiscriminatorConfig::new(vec![], 16).check().is_err());
        assert!(ConvDiscriminatorConfig::new(taps, 200).check().is_err());
    }

    #[test]
    fn loss_on_hand_set_logits() {
        // real = [0, 2], fake = [−1, 3]:
        // mean softplus(fake) + mean softplus(−real) = (sp(−1) + sp(3))/2 + (sp(0) + sp(−2))/2.
        let device = Default::default();
        let real = Tensor::<B, 1>::from_floats([0.0, 2.0], &device);
        let fake = Tensor::<B, 1>::from_floats([-1.0, 3.0], &device);
        let got = logistic_discriminator_loss(real, fake)
            .into_scalar()
            .elem::<f64>();
        let want = (softplus(-1.0) + softplus(3.0)) / 2.0 + (softplus(0.0) + softplus(-2.0)) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Stable at extreme logits: softplus(±100) is 100 or 0, never inf.
        let sp = softplus_tensor(Tensor::<B, 1>::from_floats([-100.0, 100.0, 0.5], &device))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!(sp[0].abs() < 1e-30 && (sp[1] - 100.0).abs() < 1e-4);
        assert!((sp[2] as f64 - softplus(0.5)).abs() < 1e-6);
    }

    #[test]
    fn loss_gradient_reaches_the_heads_only() {
        let _rng = crate::test_rng::seeded(101);
        // Teacher-features setup: taps from a frozen UNet, heads trained by the loss. Every
        // head parameter gets a gradient; no UNet parameter does (its weights are not
        // tracked), while the gradient still flows back to the noisy input.
        let device = Default::default();
        let ucfg = UNetConfig::tiny();
        let unet = ucfg.init::<A>(&device).no_grad();
        let disc = ConvDiscriminatorConfig::new(ucfg.tap_shapes(), 8).init::<A>(&device);
        let input = |seed: f64| {
            let x = Tensor::<A, 2>::random([4, 64], Distribution::Normal(seed, 1.0), &device)
                .require_grad();
            let sigma = Tensor::<A, 1>::from_floats([0.1, 0.5, 1.0, 5.0], &device);
            let labels = Tensor::<A, 1, Int>::from_data(TensorData::from([0i64, 1, 2, 0]), &device);
            let (_, taps) = unet.forward_with_features(x.clone(), sigma.clone(), Some(labels));
            let mut r = RatioInput::new(x.clone(), sigma);
            r.features = taps.into_iter().map(FeatureMap::Spatial).collect();
            (x, r)
        };
        let (x_real, real) = input(0.5);
        let (_, fake) = input(-0.5);
        let loss = disc.loss(&real, &fake);
        let grads = loss.backward();
        let heads = gradient_norms::<A, _>(&disc, &grads);
        assert!(heads.len() >= 12);
        assert!(heads.iter().all(|(_, g)| *g > 0.0), "{heads:?}");
        assert!(
            gradient_norms::<A, _>(&unet, &grads)
                .iter()
                .all(|(_, g)| *g == 0.0)
        );
        assert!(x_real.grad(&grads).is_some());
        assert_eq!(disc.log_ratio(&real).dims(), [4]);
    }
}
