//! Sinusoidal (positional) embedding of the noise conditioning `c_noise`, as EDM's
//! `PositionalEmbedding` (Vaswani et al. 2017 frequencies).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Checks a sinusoidal embedding's channel count: even and ≥ 2 (cosines and sines pair up).
pub fn check_embedding_size(size: usize) -> Result<(), String> {
    if size < 2 || !size.is_multiple_of(2) {
        return Err(format!("embedding_size must be even and ≥ 2, got {size}"));
    }
    Ok(())
}

/// Checks a sinusoidal embedding's maximum period `P`: finite and > 1 (else the
/// frequencies `P^{−i/h}` do not decrease).
pub fn check_embedding_period(max_period: f64) -> Result<(), String> {
    if !(max_period.is_finite() && max_period > 1.0) {
        return Err(format!(
            "embedding_max_period must be > 1, got {max_period}"
        ));
    }
    Ok(())
}

/// The `i`-th frequency of a `size`-channel embedding, `ω_i = P^{−i/(size/2)}` for
/// `i = 0, …, size/2 − 1` with maximum period `P`.
pub fn embedding_frequency(i: usize, size: usize, max_period: f64) -> f64 {
    max_period.powf(-(i as f64) / (size / 2) as f64)
}

/// Sinusoidal embedding, cosines then sines:
///
/// $$ e(c) = \big[\cos(\omega_0 c), \dots, \cos(\omega_{h-1} c),\ \sin(\omega_0 c), \dots,
///    \sin(\omega_{h-1} c)\big], \quad h = \text{size}/2,\ \omega_i = P^{-i/h}. $$
///
/// # Shapes
/// - `c_noise`: `[batch]`; returns `[batch, size]` (`size` even).
pub fn sinusoidal_embedding<B: Backend>(
    c_noise: Tensor<B, 1>,
    size: usize,
    max_period: f64,
) -> Tensor<B, 2> {
    let half = size / 2;
    let device = c_noise.device();
    let freqs: Vec<f32> = (0..half)
        .map(|i| embedding_frequency(i, size, max_period) as f32)
        .collect();
    let freqs = Tensor::<B, 1>::from_floats(freqs.as_slice(), &device).unsqueeze_dim::<2>(0); // [1, half]
    let args = c_noise.unsqueeze_dim::<2>(1).mul(freqs); // [batch, half]
    Tensor::cat(vec![args.clone().cos(), args.sin()], 1) // [batch, size]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn matches_the_scalar_formula() {
        let c = [-1.3f32, 0.0, 0.7];
        let t = Tensor::<Flex, 1>::from_floats(c.as_slice(), &Default::default());
        let e = sinusoidal_embedding(t, 8, 100.0);
        assert_eq!(e.dims(), [3, 8]);
        let v = e.into_data().to_vec::<f32>().unwrap();
        for (b, cb) in c.iter().enumerate() {
            for i in 0..4 {
                let w = 100f64.powf(-(i as f64) / 4.0);
                let arg = *cb as f64 * w;
                assert!((v[b * 8 + i] as f64 - arg.cos()).abs() < 1e-5);
                assert!((v[b * 8 + 4 + i] as f64 - arg.sin()).abs() < 1e-5);
            }
        }
        assert_eq!(embedding_frequency(0, 8, 100.0), 1.0);
    }
}
