//! Named Gaussian-mixture targets, defined once and reused by tests, studies and the CLI.

use rand::{RngExt, SeedableRng};

use crate::gmm::GaussianMixture;

/// Names of the built-in Gaussian-mixture targets, sorted.
pub const GMM_TARGETS: [&str; 4] = ["bimodal-1d", "grid25", "mog40", "ring8-unbalanced"];

/// Mode weights of `ring8-unbalanced`, going round the circle.
pub const RING8_WEIGHTS: [f64; 8] = [0.40, 0.20, 0.12, 0.09, 0.07, 0.05, 0.05, 0.02];

/// `ring8-unbalanced`: 8 isotropic modes evenly spaced on a circle of radius 4, std 0.25,
/// weights [`RING8_WEIGHTS`] going round (mode k at angle 2πk/8).
pub fn ring8_unbalanced() -> GaussianMixture {
    let means = (0..8)
        .map(|k| {
            let a = 2.0 * std::f64::consts::PI * k as f64 / 8.0;
            vec![4.0 * a.cos(), 4.0 * a.sin()]
        })
        .collect();
    GaussianMixture::isotropic(RING8_WEIGHTS.to_vec(), means, vec![0.25; 8]).expect("valid target")
}

/// `bimodal-1d`: `0.8 N(−2, 0.5²) + 0.2 N(2, 0.5²)`.
pub fn bimodal_1d() -> GaussianMixture {
    GaussianMixture::isotropic(vec![0.8, 0.2], vec![vec![-2.0], vec![2.0]], vec![0.5, 0.5])
        .expect("valid target")
}

/// `grid25`: 25 equal-weight isotropic modes on the grid {−4, −2, 0, 2, 4}², std 0.2.
pub fn grid25() -> GaussianMixture {
    let mut means = Vec::new();
    for i in 0..5 {
        for j in 0..5 {
            means.push(vec![-4.0 + 2.0 * i as f64, -4.0 + 2.0 * j as f64]);
        }
    }
    GaussianMixture::isotropic(vec![1.0; 25], means, vec![0.2; 25]).expect("valid target")
}

/// `mog40` (VarDiU's benchmark, SPEC §7): 40 equal-weight modes, means uniform in
/// `[−40, 40]²` drawn with the fixed seed 0 (ChaCha8), std `softplus(1) ≈ 1.3133`.
pub fn mog40() -> GaussianMixture {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let means = (0..40)
        .map(|_| vec![rng.random_range(-40.0..40.0), rng.random_range(-40.0..40.0)])
        .collect();
    let std = fdistill_divergence::softplus(1.0);
    GaussianMixture::isotropic(vec![1.0; 40], means, vec![std; 40]).expect("valid target")
}

/// A built-in Gaussian-mixture target by name; the error lists the known names.
pub fn gmm_target(name: &str) -> Result<GaussianMixture, String> {
    match name {
        "ring8-unbalanced" => Ok(ring8_unbalanced()),
        "bimodal-1d" => Ok(bimodal_1d()),
        "grid25" => Ok(grid25()),
        "mog40" => Ok(mog40()),
        _ => Err(format!(
            "unknown target `{name}`; built-in Gaussian-mixture targets: {}",
            GMM_TARGETS.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_and_is_sorted() {
        for name in GMM_TARGETS {
            gmm_target(name).unwrap();
        }
        let mut sorted = GMM_TARGETS;
        sorted.sort_unstable();
        assert_eq!(sorted, GMM_TARGETS);
        assert!(gmm_target("nope").unwrap_err().contains("ring8-unbalanced"));
    }

    #[test]
    fn ring8_has_the_specified_geometry() {
        let g = ring8_unbalanced();
        assert_eq!(g.n_components(), 8);
        for (k, m) in g.means().iter().enumerate() {
            assert!(((m[0] * m[0] + m[1] * m[1]).sqrt() - 4.0).abs() < 1e-12);
            assert!((g.weights()[k] - RING8_WEIGHTS[k]).abs() < 1e-12);
        }
        let mog = mog40();
        assert!(
            mog.means()
                .iter()
                .all(|m| m.iter().all(|v| v.abs() <= 40.0))
        );
        assert_eq!(mog, mog40(), "fixed seed");
    }
}
