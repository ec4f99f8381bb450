//! A distillation method of your own, run by fdistill's driver.
//!
//! [`Regression`] is the oldest one-step distillation (Luhman & Luhman 2021): draw latents
//! `z`, solve the teacher's probability-flow ODE from them once (35-NFE Heun) to build a
//! data set of pairs, and regress the one-step generator onto the solutions,
//!
//! $$ \mathcal L(\theta) = \mathbb E_z \big\lVert G_\theta(z) - \mathrm{ODE}_T(z) \big\rVert^2 . $$
//!
//! It implements [`DistillMethod`]: one iteration (`step`), `save`/`load` of its network
//! and optimiser state, and one-step generation. [`run_distillation`] owns the rest — step
//! count, RNG, `metrics.jsonl`, atomic checkpoints and exact resume — as it does for
//! f-distill and VarDiU. [`run`] shows the resume: 150 iterations, stop, resume to 300,
//! and the metrics equal an uninterrupted 300-iteration run's.

use std::fmt;
use std::path::Path;

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use fdistill::nets::MlpDenoiser;
use fdistill::studies::ring8::{
    Scores, heun35, latents, reference, scores, seeded, to_host, train_ring8_teacher,
};
use fdistill::train::checkpoint::{CheckpointError, RunDir};
use fdistill::train::distill::driver::{
    AdamWOptimizer, DriverConfig, StepMetrics, adamw, load_trained, save_trained, trainable,
};
use fdistill::train::distill::{DistillError, DistillMethod, one_step_generate, run_distillation};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The training backend.
type B = Autodiff<Flex>;
/// The same without autodiff.
type I = Flex;

/// σ at which the generator is evaluated: `G(z) = D(σ_init z; σ_init)` (SPEC §4).
pub const SIGMA_INIT: f64 = 80.0;
/// Files of one checkpoint.
const FILES: (&str, &str) = ("generator.safetensors", "generator-adamw.mpk");

/// What one regression step reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionMetrics {
    /// `mean ‖G(z) − ODE_T(z)‖²` over the batch, per coordinate.
    pub loss: f64,
}

impl StepMetrics for RegressionMetrics {
    fn non_finite(&self) -> Option<(String, f64)> {
        (!self.loss.is_finite()).then(|| ("regression loss".to_string(), self.loss))
    }
}

/// Regression distillation: the (latent, ODE solution) pairs, the generator (initialised as
/// the teacher) and its optimiser.
pub struct Regression {
    latents: Vec<f64>,
    targets: Vec<f64>,
    generator: MlpDenoiser<B>,
    optim: AdamWOptimizer<B, MlpDenoiser<B>>,
    batch: usize,
    lr: f64,
    device: FlexDevice,
}

impl Regression {
    /// A method distilling `teacher` (its EMA weights) on `pairs` latents (drawn with
    /// `seed`) and their 35-NFE ODE solutions, `batch` pairs per step.
    pub fn new(teacher: MlpDenoiser<I>, pairs: usize, seed: u64, batch: usize, lr: f64) -> Self {
        let device = Default::default();
        let z = latents::<I>(pairs, 2, seed, &device);
        Regression {
            latents: to_host(z.clone()),
            targets: to_host(heun35(&teacher, z)),
            // weights from an EMA copy come back frozen: `trainable` lets the optimiser move them
            generator: trainable(MlpDenoiser::<B>::from_inner(teacher)),
            optim: adamw::<B, MlpDenoiser<B>>(0.0),
            batch,
            lr,
            device,
        }
    }
}

impl DistillMethod<B> for Regression {
    type Metrics = RegressionMetrics;

    fn name(&self) -> &'static str {
        "regression"
    }

    fn step(&mut self, _step: usize, rng: &mut ChaCha8Rng) -> Result<Self::Metrics, DistillError> {
        // 1. a batch of pairs, drawn with the driver's RNG (so a resumed run draws the same)
        let n = self.latents.len() / 2;
        let rows: Vec<usize> = (0..self.batch).map(|_| rng.random_range(0..n)).collect();
        let pick = |v: &[f64]| -> Tensor<B, 2> {
            let picked: Vec<f64> = rows
                .iter()
                .flat_map(|&i| [v[2 * i], v[2 * i + 1]])
                .collect();
            let data = TensorData::new(picked, [rows.len(), 2]).convert::<f32>();
            Tensor::from_data(data, &self.device)
        };
        let (z, target) = (pick(&self.latents), pick(&self.targets)); // [batch, 2] each
        // 2. one gradient step on ‖G(z) − ODE_T(z)‖²
        let x0 = one_step_generate(&self.generator, z, SIGMA_INIT, None); // [batch, 2]
        let loss = (x0 - target).powf_scalar(2.0).mean();
        let value = loss.clone().into_scalar().elem::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &self.generator);
        self.generator = self.optim.step(self.lr, self.generator.clone(), grads);
        Ok(RegressionMetrics { loss: value })
    }

    fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        save_trained(&self.generator, &self.optim, dir, FILES)
    }

    fn load(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        let fresh = adamw::<B, MlpDenoiser<B>>(0.0);
        let (generator, optim) =
            load_trained(self.generator.clone(), fresh, dir, FILES, &self.device)?;
        self.generator = generator;
        self.optim = optim;
        Ok(())
    }

    fn generate(
        &self,
        latents: Tensor<<B as AutodiffBackend>::InnerBackend, 2>,
        labels: Option<Tensor<<B as AutodiffBackend>::InnerBackend, 1, Int>>,
    ) -> Tensor<<B as AutodiffBackend>::InnerBackend, 2> {
        one_step_generate(&self.generator.valid(), latents, SIGMA_INIT, labels)
    }
}

/// What the example reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Regression loss at the first and the last iteration.
    pub loss_first_last: (f64, f64),
    /// Whether 150 + resumed 150 iterations wrote the same `metrics.jsonl` as 300 at once.
    pub resume_is_exact: bool,
    /// The teacher (35 NFE) and the one-step student.
    pub teacher: Scores,
    /// The one-step student.
    pub student: Scores,
    /// MMD² floor of the evaluation.
    pub mmd2_floor: f64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "method: regression onto the teacher's 35-NFE ODE solutions"
        )?;
        writeln!(
            f,
            "loss: {:.3} at iteration 1, {:.3} at iteration 300",
            self.loss_first_last.0, self.loss_first_last.1
        )?;
        writeln!(
            f,
            "resume 150 + 150 equals 300 at once: {}",
            self.resume_is_exact
        )?;
        writeln!(f, "MMD² floor: {:.3}", self.mmd2_floor)?;
        for (name, s) in [("teacher", &self.teacher), ("student", &self.student)] {
            writeln!(
                f,
                "{name}: NFE {:>2}, MMD² {:.3}, modes {}/8",
                s.nfe, s.mmd2, s.modes
            )?;
        }
        Ok(())
    }
}

fn driver(steps: usize, seed: u64) -> DriverConfig {
    DriverConfig {
        steps,
        checkpoint_every: 50,
        log_every: 10,
        seed,
    }
}

/// Distils a ring8 teacher (`fdistill::studies::ring8`) by regression, once straight through and once
/// interrupted and resumed, and scores the student.
pub fn run(seed: u64) -> Summary {
    seeded::<B, _>(&FlexDevice, seed, || run_seeded(seed))
}

fn run_seeded(seed: u64) -> Summary {
    let device = Default::default();
    let (_, teacher) = train_ring8_teacher::<B>(800, seed, &device).expect("teacher");
    let (pairs, batch, lr) = (4096, 256, 1e-3);

    // straight through: 300 iterations
    let straight = tempfile::tempdir().expect("temporary directory");
    let run_a = RunDir::create(straight.path()).expect("run directory");
    let mut method = Regression::new(teacher.clone(), pairs, seed + 3, batch, lr);
    run_distillation(&mut method, &driver(300, seed), &run_a, false, |_| Ok(()))
        .expect("distillation");

    // interrupted: 150 iterations, then a fresh method resumed from the checkpoint to 300
    let resumed = tempfile::tempdir().expect("temporary directory");
    let run_b = RunDir::create(resumed.path()).expect("run directory");
    let mut first_half = Regression::new(teacher.clone(), pairs, seed + 3, batch, lr);
    run_distillation(&mut first_half, &driver(150, seed), &run_b, false, |_| {
        Ok(())
    })
    .expect("first half");
    let mut second_half = Regression::new(teacher.clone(), pairs, seed + 3, batch, lr);
    run_distillation(&mut second_half, &driver(300, seed), &run_b, true, |_| {
        Ok(())
    })
    .expect("resumed half");
    let metrics = |run: &RunDir| std::fs::read_to_string(run.metrics_path()).expect("metrics");
    let lines = metrics(&run_a);
    let loss_at = |line: &str| -> f64 {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        v["loss"].as_f64().expect("loss")
    };
    let first = lines.lines().next().map(loss_at).expect("a first line");
    let last = lines.lines().last().map(loss_at).expect("a last line");

    let n = 1000;
    let (reference, floor) = reference(n, seed + 2);
    let student = to_host(method.generate(latents(n, 2, seed + 1, &device), None));
    let teacher_samples = to_host(heun35(&teacher, latents(n, 2, seed + 1, &device)));
    Summary {
        loss_first_last: (first, last),
        resume_is_exact: lines == metrics(&run_b),
        teacher: scores(&teacher_samples, &reference, 35),
        student: scores(&student, &reference, 1),
        mmd2_floor: floor,
    }
}
