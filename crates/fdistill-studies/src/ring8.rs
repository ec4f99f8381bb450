//! The 2-D toy pipeline on `ring8-unbalanced` as reusable pieces: a seeded EDM teacher (an
//! MLP), the teacher's 35-NFE samples, and scores against exact samples of the target. The
//! library examples (`examples/`) build on these; `fdistill demo` runs the same pipeline with
//! full budgets.
//!
//! **Reproducibility.** burn's CPU backend draws initial weights from one process-wide RNG,
//! lazily (at a parameter's first use). A seeded run is reproducible only if it seeds that RNG
//! and is the only run using it meanwhile: run it inside [`seeded`].

use std::sync::Mutex;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use fdistill_core::Denoiser;
use fdistill_core::random::standard_normal;
use fdistill_core::sampler::{SamplerKind, sample};
use fdistill_core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill_core::targets::ring8_unbalanced;
use fdistill_data::TrainingData;
use fdistill_metrics::samples::{mean_log_density, mmd2, mode_report};
use fdistill_nets::{MlpDenoiser, MlpDenoiserConfig};
use fdistill_train::teacher::{TeacherConfig, TeacherError, train_teacher};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Runs `f` after seeding backend `B`'s RNG, holding a process-wide lock meanwhile, so no
/// other seeded run interleaves its draws (tests run in parallel threads).
pub fn seeded<B: Backend, T>(device: &B::Device, seed: u64, f: impl FnOnce() -> T) -> T {
    static BACKEND_RNG: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    B::seed(device, seed);
    f()
}

/// An EDM-preconditioned MLP teacher trained for `steps` on samples of `ring8-unbalanced`
/// (σ_data from the data, the other settings [`TeacherConfig::default`]). Returns the
/// network's config and its EMA weights. Run it inside [`seeded`] for reproducible weights.
pub fn train_ring8_teacher<B: AutodiffBackend>(
    steps: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(MlpDenoiserConfig, MlpDenoiser<B::InnerBackend>), TeacherError> {
    let data = TrainingData::Mixture(ring8_unbalanced());
    let sigma_data = data.std(&mut ChaCha8Rng::seed_from_u64(seed));
    let net = MlpDenoiserConfig::new(2, sigma_data);
    let config = TeacherConfig {
        steps,
        seed,
        ..TeacherConfig::default()
    };
    let trained = train_teacher(net.init::<B>(device), &data, &config, device, |_, _| Ok(()))?;
    Ok((net, trained.ema))
}

/// `n` seeded standard-normal latents of dimension `dim`.
///
/// # Shapes
/// returns `[n, dim]`
pub fn latents<B: Backend>(n: usize, dim: usize, seed: u64, device: &B::Device) -> Tensor<B, 2> {
    let z = standard_normal(n * dim, &mut ChaCha8Rng::seed_from_u64(seed));
    Tensor::from_data(TensorData::new(z, [n, dim]).convert::<f32>(), device)
}

/// A tensor's values, row-major, as `f64`.
pub fn to_host<B: Backend>(x: Tensor<B, 2>) -> Vec<f64> {
    x.into_data()
        .convert::<f64>()
        .to_vec()
        .expect("converted to f64")
}

/// The teacher's reference samples: Heun on EDM's 18-level Karras grid, 35 NFE.
///
/// # Shapes
/// - `latents`: `[n, dim]`; returns `[n, dim]`
pub fn heun35<B: Backend, D: Denoiser<B>>(teacher: &D, latents: Tensor<B, 2>) -> Tensor<B, 2> {
    let sigmas = karras_sigmas(18, SIGMA_MIN, SIGMA_MAX, RHO).expect("18 levels are valid");
    sample(SamplerKind::Heun, teacher, latents, &sigmas, None)
}

/// `n` exact samples of `ring8-unbalanced` and the MMD² floor of two such sets (drawn with
/// `seed`): the reference every model is scored against.
pub fn reference(n: usize, seed: u64) -> (Vec<f64>, f64) {
    let target = ring8_unbalanced();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let reference = target.sample(n, &mut rng);
    let floor = mmd2(&target.sample(n, &mut rng), &reference, 2);
    (reference, floor)
}

/// One model's scores against exact samples of `ring8-unbalanced`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Network evaluations per sample.
    pub nfe: usize,
    /// MMD² to the reference samples (multi-bandwidth RBF kernel).
    pub mmd2: f64,
    /// Modes holding at least half their expected mass (of 8).
    pub modes: usize,
    /// Mean log-density of the samples under the target.
    pub mean_log_density: f64,
}

/// Scores `samples` (row-major 2-D) of a model with `nfe` evaluations per sample.
pub fn scores(samples: &[f64], reference: &[f64], nfe: usize) -> Scores {
    let target = ring8_unbalanced();
    Scores {
        nfe,
        mmd2: mmd2(samples, reference, 2),
        modes: mode_report(&target, samples).modes_covered,
        mean_log_density: mean_log_density(&target, samples),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type B = Autodiff<Flex>;

    #[test]
    fn exact_samples_score_at_the_floor_and_cover_every_mode() {
        let (exact, floor) = reference(1000, 1);
        let (again, _) = reference(1000, 2);
        let s = scores(&again, &exact, 0);
        assert_eq!(s.modes, 8);
        assert!(s.mmd2 < 3.0 * floor, "{} vs floor {floor}", s.mmd2);
    }

    #[test]
    fn seeded_teacher_training_is_reproducible() {
        let device = Default::default();
        let train = || {
            seeded::<B, _>(&device, 5, || {
                let (_, net) = train_ring8_teacher::<B>(10, 5, &device).unwrap();
                to_host(heun35(&net, latents(16, 2, 0, &device)))
            })
        };
        assert_eq!(train(), train());
    }
}
