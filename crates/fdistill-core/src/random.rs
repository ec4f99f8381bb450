//! Host-side random draws shared by trainers, samplers and the command line.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// `n` independent standard-normal draws, as `f64` (latents and noise built on the CPU from
/// a seeded generator, so a run is reproducible whatever the backend).
pub fn standard_normal<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}
