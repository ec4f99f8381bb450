//! # fdistill
//!
//! Distil a multi-step diffusion model (the *teacher*) into a **one-step generator** by
//! f-divergence distribution matching (f-distill; Xu, Nie & Vahdat 2025), with VarDiU (Wang,
//! Zhang, Ou & Barber 2025) and the reverse-KL family (DMD, DMD2, Diff-Instruct) as
//! alternatives — in Rust, on [burn](https://burn.dev), generic over its backends.
//!
//! The generator's gradient is a weighted score difference,
//!
//! $$ \nabla_\theta D_f = -\\,\mathbb E\big[\\, h(r)\\,(s_p - s_q)^\top \partial_\theta x_t \big],
//!    \qquad h(r) = r^2 f''(r),\quad r = p_\sigma / q_\sigma, $$
//!
//! with the ratio `r` estimated by a discriminator. Choosing `f` chooses how the student
//! treats modes it has not found: reverse KL (`h ≡ 1`) seeks modes, forward KL (`h = r`)
//! covers them, Jensen–Shannon (`h = σ(log r)`) sits between with bounded weights.
//!
//! ## The main job, and what to import for it
//!
//! | step | import |
//! |---|---|
//! | data: a built-in target, CSV/NPY, images | [`data::TrainingData`], [`data::DataSource`], [`core::targets`] |
//! | a teacher: train one | [`nets::MlpDenoiserConfig`] / [`nets::UNetConfig`], [`train::teacher::train_teacher`] |
//! | distil it | [`train::distill::DistillConfig`] (presets: `toy`, `cifar10`, `dmd2`, …), [`train::distill::FDistill`], [`train::distill::run_distillation`] |
//! | a ratio estimator | [`nets::MlpDiscriminatorConfig`], [`nets::ConvDiscriminatorConfig`], or your own [`core::DensityRatioEstimator`] |
//! | sample | [`train::distill::DistillMethod::generate`] (one step), [`core::sampler::sample`] (the teacher, Heun/Euler) |
//! | evaluate | [`metrics::samples`] (MMD², modes, log-density), [`metrics::features`] (Fréchet, KID, precision/recall) |
//! | a divergence of your own | [`divergence::Divergence`] + [`register_divergence!`](divergence::register_divergence) (crate `fdistill-divergence` alone suffices) |
//! | a method of your own | [`train::distill::DistillMethod`], run by [`train::distill::run_distillation`] |
//!
//! End to end on the 2-D target `ring8-unbalanced` (budgets cut to a fraction of a second;
//! the `examples/distill-2d` crate runs the same with real budgets and prints the scores):
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::module::{AutodiffModule, Module};
//! use burn::tensor::{Tensor, TensorData};
//! use fdistill::core::targets::ring8_unbalanced;
//! use fdistill::data::TrainingData;
//! use fdistill::metrics::samples::mode_report;
//! use fdistill::nets::{MlpDenoiser, MlpDenoiserConfig, MlpDiscriminatorConfig};
//! use fdistill::train::checkpoint::RunDir;
//! use fdistill::train::distill::{Critic, DistillConfig, DistillMethod, FDistill, run_distillation};
//! use fdistill::train::teacher::{TeacherConfig, train_teacher};
//!
//! type B = Autodiff<Flex>;
//! fdistill::link_registrations(); // the built-in divergences
//! let device = Default::default();
//! let data = TrainingData::Mixture(ring8_unbalanced());
//!
//! // 1. a teacher: an EDM-preconditioned MLP denoiser (σ_data = 2.5 fits this target)
//! let net = MlpDenoiserConfig::new(2, 2.5);
//! let config = TeacherConfig { steps: 20, ..TeacherConfig::default() };
//! let teacher = train_teacher(net.init::<B>(&device), &data, &config, &device, |_, _| Ok(()))?.ema;
//!
//! // 2. f-distill with Jensen–Shannon: generator and fake score start as the teacher,
//! //    a discriminator head reads the teacher's features
//! let mut config = DistillConfig::toy();
//! config.divergence = "jensen-shannon".into();
//! config.driver.steps = 6;
//! let config = config.check()?;
//! let teacher = MlpDenoiser::<B>::from_inner(teacher);
//! let head = MlpDiscriminatorConfig::new(vec![net.hidden]).init::<B>(&device);
//! let mut method = FDistill::new(
//!     config.clone(), teacher.clone().no_grad(), teacher, Critic::Learned(head), data, &device,
//! )?;
//! let dir = tempfile::tempdir()?;
//! run_distillation(&mut method, &config.driver, &RunDir::create(dir.path())?, false, |_| Ok(()))?;
//!
//! // 3. one-step samples, scored against the target's modes
//! let z = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.1f32; 2 * 64], [64, 2]), &device);
//! let x: Vec<f64> = method.generate(z, None).into_data().convert::<f64>().to_vec().unwrap();
//! let report = mode_report(&ring8_unbalanced(), &x);
//! assert_eq!(report.modes_total, 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `fdistill` command (package `fdistill-cli`) does the same from the shell:
//! `fdistill teacher train`, `fdistill distill`, `fdistill sample`, `fdistill eval`,
//! `fdistill demo`; see the repository's README and `docs/guide.md`.
//!
//! ## The crates
//!
//! This facade re-exports the workspace's crates, light to heavy:
//! [`divergence`] (the trait a plugin implements; no tensors), [`divergences`] (the
//! built-ins), [`core`] (tensor traits, schedules, samplers, losses, the exact testbed),
//! [`data`], [`metrics`], [`nets`], [`train`] (driver, f-distill, VarDiU, teacher trainer),
//! [`plot`], [`studies`], [`backends`] (`--device` → a monomorphised burn backend).

#![warn(missing_docs)]

pub use fdistill_backends as backends;
pub use fdistill_core as core;
pub use fdistill_data as data;
pub use fdistill_divergence as divergence;
pub use fdistill_divergences as divergences;
pub use fdistill_metrics as metrics;
pub use fdistill_nets as nets;
pub use fdistill_plot as plot;
pub use fdistill_studies as studies;
pub use fdistill_train as train;

pub use fdistill_divergence::{Divergence, ModeBehaviour, registry};

/// Makes sure the built-in divergences are linked into the final binary, so their
/// `inventory` registrations exist (see docs/plugins.md). A binary that uses a plugin
/// crate links it the same way (`my_plugin::link()` or `use my_plugin as _;`).
pub fn link_registrations() {
    fdistill_divergences::link();
}
