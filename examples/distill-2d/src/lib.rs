//! The main job of fdistill through the library API, on the built-in 2-D target
//! `ring8-unbalanced` (eight Gaussian modes on a circle, weights 40 % … 2 %):
//!
//! 1. train an EDM teacher (an MLP denoiser) on samples of the target;
//! 2. distil it into a one-step generator with f-distill (Jensen–Shannon, the `toy` preset,
//!    a discriminator head on the teacher's features);
//! 3. draw one-step samples and the teacher's 35-NFE Heun samples;
//! 4. score both against exact samples of the target (MMD², modes covered, mean
//!    log-density).
//!
//! Budgets are cut to seconds on a CPU (the `fdistill demo` command runs the full ones), so the
//! numbers show the pipeline working, not the method's best.

use std::fmt;

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use fdistill::core::targets::ring8_unbalanced;
use fdistill::data::TrainingData;
use fdistill::nets::{MlpDenoiser, MlpDiscriminatorConfig};
use fdistill::studies::ring8::{
    Scores, heun35, latents, reference, scores, seeded, to_host, train_ring8_teacher,
};
use fdistill::train::checkpoint::RunDir;
use fdistill::train::distill::{Critic, DistillConfig, DistillMethod, FDistill, run_distillation};

/// The training backend: burn's CPU backend with autodiff.
pub type B = Autodiff<Flex>;

/// Budgets and seed of one run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Teacher optimiser steps.
    pub teacher_steps: usize,
    /// Distillation iterations (each a critic or a generator step; `toy` has 2 critic steps
    /// per generator step).
    pub distill_steps: usize,
    /// Samples drawn from each model for the metrics.
    pub n_eval: usize,
    /// Seed of everything (initialisation, batches, noise, evaluation samples).
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            teacher_steps: 800,
            distill_steps: 600,
            n_eval: 1000,
            seed: 0,
        }
    }
}

/// What a run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The 35-NFE Heun teacher.
    pub teacher: Scores,
    /// The one-step student.
    pub student: Scores,
    /// MMD² between two exact sample sets of the same size: the metric's floor.
    pub mmd2_floor: f64,
    /// Generator updates the student received.
    pub generator_updates: usize,
}

impl fmt::Display for Summary {
    /// Rounded so the text is the same on every run with the same seed and thread count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ring8-unbalanced, f-distill (jensen-shannon, preset toy)"
        )?;
        writeln!(f, "generator updates: {}", self.generator_updates)?;
        writeln!(f, "MMD² floor: {:.3}", self.mmd2_floor)?;
        for (name, s) in [("teacher", &self.teacher), ("student", &self.student)] {
            writeln!(
                f,
                "{name}: NFE {:>2}, MMD² {:.3}, modes {}/8, mean log-density {:.2}",
                s.nfe, s.mmd2, s.modes, s.mean_log_density
            )?;
        }
        Ok(())
    }
}

/// Runs the whole pipeline in a temporary run directory and scores both models. Seeded end
/// to end: the same settings, thread count and CPU give the same summary.
pub fn run(settings: Settings) -> Summary {
    seeded::<B, _>(&FlexDevice, settings.seed, || run_seeded(settings))
}

fn run_seeded(settings: Settings) -> Summary {
    let device = FlexDevice;
    let seed = settings.seed;

    // 1. the teacher: an EDM-preconditioned MLP trained on samples of the target
    let (net, teacher_ema) =
        train_ring8_teacher::<B>(settings.teacher_steps, seed, &device).expect("teacher");

    // 2. f-distill: generator and fake score start as the teacher, a fresh head reads the
    //    teacher's hidden features
    let mut config = DistillConfig::toy();
    config.driver.steps = settings.distill_steps;
    config.driver.checkpoint_every = settings.distill_steps;
    config.driver.seed = seed;
    let config = config.check().expect("valid config");
    let teacher = MlpDenoiser::<B>::from_inner(teacher_ema.clone());
    let mut head = MlpDiscriminatorConfig::new(vec![net.hidden]);
    head.hidden = net.hidden;
    let mut method = FDistill::new(
        config.clone(),
        teacher.clone().no_grad(),
        teacher,
        Critic::Learned(head.init::<B>(&device)),
        TrainingData::Mixture(ring8_unbalanced()),
        &device,
    )
    .expect("distillation set-up");
    let dir = tempfile::tempdir().expect("temporary directory");
    let run_dir = RunDir::create(dir.path()).expect("run directory");
    run_distillation(&mut method, &config.driver, &run_dir, false, |_| Ok(()))
        .expect("distillation");

    // 3. samples: one step from the student, 35 NFE from the teacher, same latents
    let n = settings.n_eval;
    let student = to_host(method.generate(latents(n, 2, seed + 1, &device), None));
    let teacher_samples = to_host(heun35(&teacher_ema, latents(n, 2, seed + 1, &device)));

    // 4. metrics against exact samples of the target
    let (reference, floor) = reference(n, seed + 2);
    Summary {
        teacher: scores(&teacher_samples, &reference, 35),
        student: scores(&student, &reference, 1),
        mmd2_floor: floor,
        generator_updates: settings.distill_steps / (config.critic_steps + 1),
    }
}
