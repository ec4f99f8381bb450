//! EDM preconditioning (Karras et al. 2022, Table 1; SPEC §5).
//!
//! The network `F` is wrapped as `D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))`
//! so that its input and its training target both have unit variance at every σ.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The loss weight λ(σ) lives with the loss; re-exported here next to the scalings it pairs with.
pub use fdistill_core::losses::edm::edm_loss_weight;

/// The four EDM preconditioning coefficients `(c_skip, c_out, c_in, c_noise)`:
///
/// $$ c_\text{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\quad
///    c_\text{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
///    c_\text{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\quad
///    c_\text{noise} = \tfrac14 \ln \sigma. $$
pub fn edm_scalings(sigma: f64, sigma_data: f64) -> (f64, f64, f64, f64) {
    let s2 = sigma * sigma + sigma_data * sigma_data;
    let c_skip = sigma_data * sigma_data / s2;
    let c_out = sigma * sigma_data / s2.sqrt();
    let c_in = 1.0 / s2.sqrt();
    let c_noise = sigma.ln() / 4.0;
    (c_skip, c_out, c_in, c_noise)
}

/// [`edm_scalings`] for a batch of noise levels.
///
/// # Shapes
/// - `sigma`: `[batch]`; each returned coefficient is `[batch]`.
pub fn edm_scalings_tensor<B: Backend>(
    sigma: Tensor<B, 1>,
    sigma_data: f64,
) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
    let sd2 = sigma_data * sigma_data;
    let s2 = sigma.clone().powf_scalar(2.0).add_scalar(sd2); // σ² + σ_d²
    let root = s2.clone().sqrt();
    let c_skip = s2.recip().mul_scalar(sd2);
    let c_out = sigma.clone().mul_scalar(sigma_data).div(root.clone());
    let c_in = root.recip();
    let c_noise = sigma.log().div_scalar(4.0);
    (c_skip, c_out, c_in, c_noise)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn scalings_closed_forms_at_sigma_equal_sigma_data() {
        let sd = 0.5;
        let (c_skip, c_out, c_in, c_noise) = edm_scalings(sd, sd);
        assert!((c_skip - 0.5).abs() < 1e-15);
        assert!((c_out - sd / 2f64.sqrt()).abs() < 1e-15);
        assert!((c_in - 1.0 / (sd * 2f64.sqrt())).abs() < 1e-15);
        assert!((c_noise - sd.ln() / 4.0).abs() < 1e-15);
    }

    #[test]
    fn scalings_give_unit_variance_input_and_target() {
        // EDM appendix B.6: Var[c_in (y + σn)] = 1 and the effective target
        // (y − c_skip (y + σn)) / c_out has unit variance, for y with std σ_d.
        let sd = 1.7;
        for sigma in [0.002, 0.1, 1.0, 5.0, 80.0] {
            let (c_skip, c_out, c_in, _) = edm_scalings(sigma, sd);
            let var_in = c_in * c_in * (sd * sd + sigma * sigma);
            let var_target = ((1.0 - c_skip).powi(2) * sd * sd + c_skip * c_skip * sigma * sigma)
                / (c_out * c_out);
            assert!((var_in - 1.0).abs() < 1e-12, "σ={sigma}: {var_in}");
            assert!((var_target - 1.0).abs() < 1e-9, "σ={sigma}: {var_target}");
            // λ(σ) = 1 / c_out².
            assert!((edm_loss_weight(sigma, sd) * c_out * c_out - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn tensor_scalings_match_the_scalar_ones() {
        let sigmas = [0.002f32, 0.3, 1.0, 12.0, 80.0];
        let t = Tensor::<Flex, 1>::from_data(TensorData::from(sigmas), &Default::default());
        let (a, b, c, d) = edm_scalings_tensor(t, 0.5);
        let cols: Vec<Vec<f32>> = [a, b, c, d]
            .into_iter()
            .map(|x| x.into_data().to_vec::<f32>().unwrap())
            .collect();
        for (i, s) in sigmas.iter().enumerate() {
            let (s0, s1, s2, s3) = edm_scalings(*s as f64, 0.5);
            for (got, want) in cols.iter().map(|c| c[i] as f64).zip([s0, s1, s2, s3]) {
                assert!(
                    (got - want).abs() < 1e-5 * want.abs().max(1.0),
                    "σ={s}: {got} vs {want}"
                );
            }
        }
    }
}
