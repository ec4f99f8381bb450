//! Distillation: the loop infrastructure ([`driver`]) shared by every method, and the
//! methods: f-distill ([`fdistill`], configured by [`config`]) and VarDiU ([`vardiu`]).
//!
//! A method implements [`DistillMethod`] (one iteration, save/load,
//! one-step generation); [`run_distillation`] owns the step count,
//! RNG, checkpoints, exact resume, the non-finite check and `metrics.jsonl`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use thiserror::Error;

use crate::checkpoint::CheckpointError;
use fdistill_core::Denoiser;
use fdistill_divergence::RegistryError;

pub mod config;
pub mod driver;
pub mod fdistill;
pub mod vardiu;

pub use config::DistillConfig;
pub use driver::{
    DistillMethod, DriverConfig, StepMetrics, StopRequested, Trainable, run_distillation,
    run_training,
};
pub use fdistill::{Critic, FDistill, FDistillMetrics};
pub use vardiu::{VarDiU, VarDiuConfig, VarDiuMetrics};

/// The one-step generator of SPEC §4: the teacher-initialised denoiser evaluated at the
/// largest noise level on pure noise,
///
/// $$ x_0 = G(z) = D_G(\sigma_\text{init}\\, z;\ \sigma_\text{init}),\qquad z \sim \mathcal N(0, I). $$
///
/// A class-conditional generator takes one label per latent (`None` for an unconditional one).
/// A generator with extra latent inputs ([`Denoiser::latent_dim`] `> dim`, e.g.
/// `MlpDenoiser::with_latent_extra`) takes a wider `z`; this is [`Denoiser::generate`].
///
/// # Shapes
/// - `z`: `[batch, latent_dim]`, `labels`: `[batch]`; returns `[batch, dim]`
pub fn one_step_generate<B: Backend, D: Denoiser<B> + ?Sized>(
    generator: &D,
    z: Tensor<B, 2>,
    sigma_init: f64,
    labels: Option<Tensor<B, 1, Int>>,
) -> Tensor<B, 2> {
    generator.generate(z, sigma_init, labels)
}

/// Distillation errors: configuration, setup, non-finite values, checkpoints.
#[derive(Debug, Error)]
pub enum DistillError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid distillation config: {0}")]
    Config(String),
    /// The divergence name is unknown (the message lists the known names).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The networks, data or estimator do not fit together.
    #[error("cannot set up distillation: {0}")]
    Setup(String),
    /// A loss, weight or gradient became NaN or infinite.
    #[error(
        "non-finite {quantity} ({value}) at step {step}; training stopped before writing anything, \
         so the last checkpoint ({last_checkpoint}) is intact. {hint}, then continue with --resume"
    )]
    NonFinite {
        /// The 1-based step.
        step: usize,
        /// What was non-finite (`"generator loss"`, `"fake-score gradient norm"`, ...).
        quantity: String,
        /// Its value.
        value: f64,
        /// The last checkpoint written (`"step 400"` or `"none yet"`).
        last_checkpoint: String,
        /// What to change (the method's [`Trainable::non_finite_hint`]).
        hint: &'static str,
    },
    /// The observer asked to stop ([`StopRequested`], e.g. on Ctrl-C);
    /// a checkpoint of `step` was written, and `--resume` continues from it.
    #[error("stopped at step {step} of {total_steps}; checkpoint in `{}`", checkpoint.display())]
    Interrupted {
        /// The last step done (and checkpointed).
        step: usize,
        /// The run's last step.
        total_steps: usize,
        /// The checkpoint directory.
        checkpoint: std::path::PathBuf,
    },
    /// Reading or writing the run directory failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The run cannot be resumed as asked.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The observer stopped training.
    #[error(transparent)]
    Observer(driver::BoxError),
    /// A data-parallel run's communication failed, or another replica failed
    /// ([`crate::parallel`]).
    #[error("data-parallel run: {0}")]
    Collective(String),
}
