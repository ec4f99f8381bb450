//! The [`Denoiser`] trait: `D(x; σ) ≈ E[x_0 | x_t = x]`, the x0-prediction every teacher,
//! fake score and generator network implements (SPEC §0, §5).
//!
//! All samples travel as flat `[batch, dim]` tensors; an image network reshapes to
//! `[batch, channels, height, width]` inside its `forward`. The trainers and samplers are
//! therefore the same code for 2-D toys and images.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// A denoiser predicting the clean sample from a noisy one.
pub trait Denoiser<B: Backend> {
    /// Flattened data dimension.
    fn dim(&self) -> usize;

    /// `D(x; σ, label)`, the x0 prediction.
    ///
    /// # Shapes
    /// - `x`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`
    /// - returns `[batch, dim]`
    fn denoise(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2>;

    /// Width of the latent `z` this network takes as a one-step generator
    /// ([`generate`](Self::generate)): `dim` unless the network has extra latent inputs.
    fn latent_dim(&self) -> usize {
        self.dim()
    }

    /// The one-step generator of SPEC §4 built on this denoiser:
    ///
    /// $$ x_0 = G(z) = D(\sigma_\text{init}\\, z;\ \sigma_\text{init}),\qquad z \sim \mathcal N(0, I). $$
    ///
    /// A network with extra latent inputs (`latent_dim > dim`) overrides this: the first `dim`
    /// columns of `z` play the role above and the rest enter the network directly.
    ///
    /// # Shapes
    /// - `z`: `[batch, latent_dim]`, `labels`: `[batch]`; returns `[batch, dim]`
    fn generate(
        &self,
        z: Tensor<B, 2>,
        sigma_init: f64,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        let [batch, _] = z.dims();
        let sigma = Tensor::<B, 1>::full([batch], sigma_init, &z.device());
        self.denoise(z.mul_scalar(sigma_init), sigma, labels)
    }
}

/// A denoiser with EDM preconditioning: it knows the σ_data its loss weight needs.
pub trait EdmDenoiser<B: Backend>: Denoiser<B> {
    /// EDM's σ_data.
    fn sigma_data(&self) -> f64;
}

/// The score of the noisy marginal from a denoiser (Tweedie):
///
/// $$ s(x, \sigma) = \nabla_x \log p_\sigma(x) = \frac{D(x;\sigma) - x}{\sigma^2}. $$
///
/// # Shapes
/// - `denoised`, `x`: `[batch, dim]`, `sigma`: `[batch]`; returns `[batch, dim]`
pub fn score_from_denoised<B: Backend>(
    denoised: Tensor<B, 2>,
    x: Tensor<B, 2>,
    sigma: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let s2 = sigma.clone().mul(sigma).unsqueeze_dim::<2>(1); // [batch, 1]
    (denoised - x) / s2
}

/// Classifier-free guidance of a class-conditional denoiser (Ho & Salimans 2022), from the
/// conditional output `D(x; y)` and the unconditional one `D(x; ∅)` (the null label: EDM's
/// zero label vector, what a denoiser gives for `labels = None`):
///
/// $$ D_w(x; \sigma, y) = D(x; \sigma, \varnothing) + w \\,\big(D(x; \sigma, y) - D(x; \sigma, \varnothing)\big). $$
///
/// With Tweedie's $D = x + \sigma^2 s$ this is the guided score
/// $s_w = s_\varnothing + w\\,(s_y - s_\varnothing)$: $w = 1$ is the conditional model,
/// $w = 0$ the unconditional one, $w > 1$ sharpens towards class $y$.
///
/// # Shapes
/// - `conditional`, `unconditional`: `[batch, dim]`; returns `[batch, dim]`
pub fn guidance_combine<B: Backend>(
    conditional: Tensor<B, 2>,
    unconditional: Tensor<B, 2>,
    w: f64,
) -> Tensor<B, 2> {
    unconditional.clone() + (conditional - unconditional).mul_scalar(w)
}

/// [`guidance_combine`] of `denoiser`'s outputs with `labels` and with the null label:
/// $D_w(x; \sigma, y)$.
///
/// # Shapes
/// - `x`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`; returns `[batch, dim]`
pub fn guided_denoise<B: Backend, D: Denoiser<B> + ?Sized>(
    denoiser: &D,
    x: Tensor<B, 2>,
    sigma: Tensor<B, 1>,
    labels: Tensor<B, 1, Int>,
    w: f64,
) -> Tensor<B, 2> {
    let conditional = denoiser.denoise(x.clone(), sigma.clone(), Some(labels));
    let unconditional = denoiser.denoise(x, sigma, None);
    guidance_combine(conditional, unconditional, w)
}

/// A denoiser that also exposes the feature maps a discriminator head reads (SPEC §2):
/// the teacher's encoder taps (`teacher-features`) or the fake score's bottleneck
/// (`fake-score-features`). An MLP gives one flat tap `[batch, hidden]`; a UNet gives one
/// spatial tap per resolution level. An analytic denoiser has no features (empty `Vec`):
/// it can serve as a teacher whenever no learned discriminator reads it.
pub trait FeatureDenoiser<B: Backend>: Denoiser<B> {
    /// `D(x; σ, label)` and the feature taps of the same forward pass.
    ///
    /// # Shapes
    /// - `x`: `[batch, dim]`, `sigma`: `[batch]`, `labels`: `[batch]`
    /// - returns `(denoised [batch, dim], taps)`, each tap `[batch, c]` or `[batch, c, h, w]`
    fn denoise_with_features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> (Tensor<B, 2>, Vec<crate::ratio::FeatureMap<B>>);
}
