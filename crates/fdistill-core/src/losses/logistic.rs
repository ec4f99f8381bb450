//! The logistic density-ratio losses of SPEC §2: the discriminator's non-saturating loss and
//! the generator's GAN term.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Element-wise softplus in its overflow-free form,
///
/// $$ \operatorname{softplus}(x) = \log(1 + e^x) = \max(x, 0) + \log\\!\big(1 + e^{-|x|}\big), $$
///
/// finite for every finite `x` (burn's `activation::softplus` exponentiates `x` directly and
/// overflows to ∞ for `x ≳ 89` in f32).
///
/// # Shapes
/// - `x`: any `[d…]`; returns the same shape
pub fn softplus_stable<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let pos = x.clone().clamp_min(0.0);
    let tail = x.abs().neg().exp().add_scalar(1.0).log();
    pos + tail
}

/// The discriminator's logistic loss (SPEC §2),
///
/// $$ L_C = \operatorname{mean}_i \operatorname{softplus}\big(C(\text{fake}_i)\big)
///        + \operatorname{mean}_j \operatorname{softplus}\big(-C(\text{real}_j)\big), $$
///
/// minimised by the logit `ℓ* = log p_σ/q_σ` (real = teacher/data, fake = student).
///
/// # Shapes
/// - `fake_logits`: `[batch_f]`, `real_logits`: `[batch_r]`; returns `[1]`
pub fn discriminator_loss<B: Backend>(
    fake_logits: Tensor<B, 1>,
    real_logits: Tensor<B, 1>,
) -> Tensor<B, 1> {
    softplus_stable(fake_logits).mean() + softplus_stable(real_logits.neg()).mean()
}

/// The generator's non-saturating GAN term (SPEC §2), before the factor λ_GAN:
/// `mean_i softplus(−C(G(z_i)_σ))`.
///
/// # Shapes
/// - `fake_logits`: `[batch]`; returns `[1]`
pub fn gan_generator_loss<B: Backend>(fake_logits: Tensor<B, 1>) -> Tensor<B, 1> {
    softplus_stable(fake_logits.neg()).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    type B = Autodiff<Flex>;

    fn t(v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    #[test]
    fn softplus_matches_the_f64_reference_and_never_overflows() {
        let xs = [-200.0f32, -5.0, -0.3, 0.0, 0.7, 5.0, 200.0];
        let got: Vec<f32> = softplus_stable(t(&xs)).into_data().to_vec().unwrap();
        for (x, g) in xs.iter().zip(got) {
            let expect = fdistill_divergence::softplus(*x as f64);
            assert!(
                (g as f64 - expect).abs() < 1e-5 * (1.0 + expect),
                "{x}: {g} vs {expect}"
            );
        }
    }

    /// By hand: fake = [0], real = [0] gives 2 log 2; d/dC(fake) = sigmoid(C)/n_fake.
    #[test]
    fn discriminator_loss_value_and_gradient() {
        let v: Vec<f32> = discriminator_loss(t(&[0.0]), t(&[0.0]))
            .into_data()
            .to_vec()
            .unwrap();
        assert!((v[0] - 2.0 * 2f32.ln()).abs() < 1e-6);
        let fake = t(&[1.0, -2.0]).require_grad();
        let real = t(&[0.5, 3.0, -1.0]).require_grad();
        let grads = discriminator_loss(fake.clone(), real.clone()).backward();
        let gf: Vec<f32> = fake.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let gr: Vec<f32> = real.grad(&grads).unwrap().into_data().to_vec().unwrap();
        for (x, g) in [1.0, -2.0].iter().zip(gf) {
            assert!((g as f64 - fdistill_divergence::sigmoid(*x) / 2.0).abs() < 1e-6);
        }
        // ∂/∂r softplus(−r)/3 = −sigmoid(−r)/3
        for (x, g) in [0.5, 3.0, -1.0].iter().zip(gr) {
            assert!((g as f64 + fdistill_divergence::sigmoid(-*x) / 3.0).abs() < 1e-6);
        }
    }

    /// The optimum of the logistic loss is the log ratio: for a fixed point with real density
    /// a and fake density b, minimising a·softplus(−ℓ) + b·softplus(ℓ) gives ℓ* = log(a/b).
    #[test]
    fn logistic_optimum_is_the_log_ratio() {
        let (a, b) = (0.8f64, 0.2f64);
        let loss =
            |l: f64| a * fdistill_divergence::softplus(-l) + b * fdistill_divergence::softplus(l);
        let l_star = (a / b).ln();
        for d in [-0.1, 0.1] {
            assert!(loss(l_star + d) > loss(l_star));
        }
        let v: Vec<f32> = gan_generator_loss(t(&[0.0, 2.0]))
            .into_data()
            .to_vec()
            .unwrap();
        let expect =
            (fdistill_divergence::softplus(0.0) + fdistill_divergence::softplus(-2.0)) / 2.0;
        assert!((v[0] as f64 - expect).abs() < 1e-6);
    }
}
