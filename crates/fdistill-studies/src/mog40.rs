//! The MoG-40 benchmark of VarDiU (issue #7; SPEC §7): VarDiU against Diff-Instruct, DMD2
//! and f-distill (reverse KL, Jensen–Shannon, forward KL) on the 2-D mixture of 40
//! Gaussians, with the analytic teacher and with a learned MLP teacher.
//!
//! Every run goes through the one driver ([`run_distillation`]); the methods differ only in
//! their [`DistillMethod`]. The set-up:
//!
//! - **Teachers.** `analytic`: the exact Tweedie denoiser of `mog40`. `learned`: an EDM MLP
//!   trained here ([`train_teacher`]) with `ln σ ~ N(1, 2²)` (the data scale is ≈ 21, so
//!   EDM's `N(−1.2, 1.2²)` would never train the large-σ regime); its EMA is the teacher.
//! - **Generator.** Every method's generator (and f-distill's fake score) is the teacher
//!   copy `x0 = D_G(σ_init z; σ_init)`, σ_init = 80, initialised from the learned MLP teacher
//!   — for both teachers, so that all runs start from the same network.
//! - **Budget.** Equal *generator* updates: `steps` per run. An f-distill iteration is one
//!   generator update plus its K critic updates (K = 2 for f-distill, 1 for Diff-Instruct,
//!   5 for DMD2), so those runs take `steps · (K + 1)` driver iterations; VarDiU takes
//!   `steps`. The wall time per iteration reported is per generator update, all included.
//! - **Metrics** (on the EMA generator, fixed latents): mean log-density under the target,
//!   MMD² averaged over the RBF bandwidths {0.25, 0.5, 1, 2, 4}
//!   ([`mmd2_bandwidth_mean`]) against a fixed exact sample set, modes covered
//!   ([`mode_report`]), wall time per iteration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use fdistill_core::denoiser::FeatureDenoiser;
use fdistill_core::exact::AnalyticTeacher;
use fdistill_core::gmm::GaussianMixture;
use fdistill_core::random::standard_normal;
use fdistill_core::sampler::heun_sample;
use fdistill_core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill_core::targets;
use fdistill_data::TrainingData;
use fdistill_metrics::samples::{mean_log_density, mmd2_bandwidth_mean, mode_report};
use fdistill_nets::{
    GaussianPosteriorConfig, MlpDenoiser, MlpDenoiserConfig, MlpDiscriminator,
    MlpDiscriminatorConfig,
};
use fdistill_train::checkpoint::{RunDir, load_module, save_module};
use fdistill_train::distill::config::{FeatureSource, NoiseDistribution};
use fdistill_train::distill::{
    Critic, DistillConfig, DistillError, DistillMethod, DriverConfig, FDistill, VarDiU,
    VarDiuConfig, run_distillation,
};
use fdistill_train::teacher::{TeacherConfig, train_teacher};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fdistill_plot as plot;

/// Which teacher supplies the scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeacherKind {
    /// The exact Tweedie denoiser of the mixture.
    Analytic,
    /// The EDM MLP trained by the study.
    Learned,
}

impl TeacherKind {
    /// Name in tables and file names.
    pub fn label(self) -> &'static str {
        match self {
            TeacherKind::Analytic => "analytic",
            TeacherKind::Learned => "learned",
        }
    }
}

/// The compared methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mog40Method {
    /// VarDiU (SPEC §7).
    Vardiu,
    /// Diff-Instruct: the `diff-instruct` preset (SPEC §4 special case).
    DiffInstruct,
    /// DMD2: reverse KL + GAN on the fake score's features, K = 5 (the `dmd2` preset).
    Dmd2,
    /// f-distill with reverse KL.
    FDistillReverseKl,
    /// f-distill with Jensen–Shannon.
    FDistillJensenShannon,
    /// f-distill with forward KL.
    FDistillForwardKl,
}

/// Every method, in table order.
pub const METHODS: [Mog40Method; 6] = [
    Mog40Method::Vardiu,
    Mog40Method::DiffInstruct,
    Mog40Method::Dmd2,
    Mog40Method::FDistillReverseKl,
    Mog40Method::FDistillJensenShannon,
    Mog40Method::FDistillForwardKl,
];

impl Mog40Method {
    /// Name in tables and file names.
    pub fn label(self) -> &'static str {
        match self {
            Mog40Method::Vardiu => "vardiu",
            Mog40Method::DiffInstruct => "diff-instruct",
            Mog40Method::Dmd2 => "dmd2",
            Mog40Method::FDistillReverseKl => "f-distill-reverse-kl",
            Mog40Method::FDistillJensenShannon => "f-distill-jensen-shannon",
            Mog40Method::FDistillForwardKl => "f-distill-forward-kl",
        }
    }

    /// The method a label names; the error lists the labels.
    pub fn parse(label: &str) -> Result<Self> {
        METHODS
            .into_iter()
            .find(|m| m.label() == label)
            .with_context(|| {
                let known: Vec<&str> = METHODS.iter().map(|m| m.label()).collect();
                format!("unknown method `{label}`; known: {}", known.join(", "))
            })
    }
}

/// Study settings; [`check`](Self::check) validates them before anything runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mog40Config {
    /// Seeds `0..seeds` per (teacher, method).
    pub seeds: u64,
    /// Generator updates per run (the equal budget).
    pub steps: usize,
    /// Generator updates between two points of the metric curves.
    pub eval_every: usize,
    /// Samples per curve point.
    pub curve_samples: usize,
    /// Samples of the final evaluation.
    pub eval_samples: usize,
    /// Steps of the learned teacher's training.
    pub teacher_steps: usize,
    /// Samples per generator update (VarDiU: half as many latents, each used twice).
    pub batch_size: usize,
    /// AdamW learning rate of every generator.
    pub lr_generator: f64,
    /// AdamW learning rate of the fake score, discriminator and posterior.
    pub lr_critic: f64,
    /// EMA decay of every generator.
    pub ema_beta: f64,
    /// Hidden width of every network (teacher, generator, fake score, head, posterior).
    pub hidden: usize,
    /// Teachers to run.
    pub teachers: Vec<TeacherKind>,
    /// Methods to run.
    pub methods: Vec<Mog40Method>,
}

impl Default for Mog40Config {
    fn default() -> Self {
        Mog40Config {
            seeds: 3,
            steps: 400,
            eval_every: 50,
            curve_samples: 500,
            eval_samples: 2000,
            teacher_steps: 3000,
            batch_size: 256,
            lr_generator: 1e-3,
            lr_critic: 1e-3,
            ema_beta: 0.95,
            hidden: 128,
            teachers: vec![TeacherKind::Analytic, TeacherKind::Learned],
            methods: METHODS.to_vec(),
        }
    }
}

impl Mog40Config {
    /// Validates every field.
    pub fn check(self) -> Result<Self> {
        if self.seeds == 0 || self.steps == 0 || self.eval_every == 0 || self.teacher_steps == 0 {
            bail!(
                "seeds ({}), steps ({}), eval_every ({}) and teacher_steps ({}) must be ≥ 1",
                self.seeds,
                self.steps,
                self.eval_every,
                self.teacher_steps
            );
        }
        if self.batch_size < 2 || self.curve_samples < 2 || self.eval_samples < 2 {
            bail!("batch_size, curve_samples and eval_samples must be ≥ 2");
        }
        for (name, v) in [
            ("lr_generator", self.lr_generator),
            ("lr_critic", self.lr_critic),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number, got {v}");
            }
        }
        if !(0.0..1.0).contains(&self.ema_beta) {
            bail!("ema_beta must be in [0, 1), got {}", self.ema_beta);
        }
        if self.teachers.is_empty() || self.methods.is_empty() {
            bail!("give at least one teacher and one method");
        }
        Ok(self)
    }

    /// The f-distill configuration of `method` (None for VarDiU): the named preset's
    /// structure (divergence, critic steps, GAN, features, surrogate, normalisers, noise),
    /// the study's optimisation settings.
    pub fn distill_config(
        &self,
        method: Mog40Method,
        teacher: TeacherKind,
    ) -> Option<DistillConfig> {
        let mut c = match method {
            Mog40Method::Vardiu => return None,
            Mog40Method::DiffInstruct => DistillConfig::diff_instruct(),
            Mog40Method::Dmd2 => DistillConfig::dmd2(),
            Mog40Method::FDistillReverseKl => f_distill_structure("reverse-kl"),
            Mog40Method::FDistillJensenShannon => f_distill_structure("jensen-shannon"),
            Mog40Method::FDistillForwardKl => f_distill_structure("forward-kl"),
        };
        // The analytic teacher has no feature taps: heads read the fake score's.
        if teacher == TeacherKind::Analytic {
            c.feature_source = FeatureSource::FakeScoreFeatures;
        }
        c.batch_size = self.batch_size;
        c.lr_generator = self.lr_generator;
        c.lr_fake_score = self.lr_critic;
        c.lr_discriminator = self.lr_critic;
        c.ema_beta = self.ema_beta;
        c.sigma_init = SIGMA_MAX;
        Some(c)
    }

    /// VarDiU's configuration: the reference defaults (antithetic pairs, pow 0.1 → 1 over
    /// half the run, w = (σ/σ_max)², σ ∈ [0.002, 80], clip 10), the study's optimisation
    /// settings.
    pub fn vardiu_config(&self) -> VarDiuConfig {
        let mut c = VarDiuConfig {
            batch_size: self.batch_size / 2,
            lr_generator: self.lr_generator,
            lr_posterior: self.lr_critic,
            ema_beta: self.ema_beta,
            sigma_init: SIGMA_MAX,
            ..VarDiuConfig::default()
        };
        c.pow.steps = (self.steps / 2).max(1);
        c
    }

    /// Driver iterations per generator update: K + 1 for f-distill configurations, 1 for VarDiU.
    pub fn iterations_per_update(&self, method: Mog40Method, teacher: TeacherKind) -> usize {
        self.distill_config(method, teacher)
            .map_or(1, |c| c.critic_steps + 1)
    }
}

/// One point of a metric curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Generator updates done.
    pub step: usize,
    /// Mean log-density under the target.
    pub log_density: f64,
    /// MMD² averaged over bandwidths.
    pub mmd: f64,
    /// Modes covered.
    pub modes: usize,
}

/// The outcome of one (teacher, method, seed) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mog40Run {
    /// Teacher.
    pub teacher: TeacherKind,
    /// Method.
    pub method: Mog40Method,
    /// Seed.
    pub seed: u64,
    /// `"ok"` or the error that stopped the run (a non-finite value names its step).
    pub status: String,
    /// Final metrics (NaN when the run failed before any evaluation).
    pub final_point: CurvePoint,
    /// Metric curve.
    pub curve: Vec<CurvePoint>,
    /// Wall seconds per generator update (critic updates included).
    pub seconds_per_iteration: f64,
    /// Driver iterations run.
    pub driver_iterations: usize,
    /// Final samples (row-major, `eval_samples × 2`).
    #[serde(skip)]
    pub samples: Vec<f64>,
}

/// The whole study.
#[derive(Debug, Clone, Serialize)]
pub struct Mog40Result {
    /// Every run.
    pub runs: Vec<Mog40Run>,
    /// The learned teacher's own samples (Heun, 35 NFE), evaluated like a run.
    pub teacher_reference: CurvePoint,
    /// Exact samples against the reference set: the floor of every metric.
    pub floor: CurvePoint,
}

/// Evaluates samples: mean log-density, MMD² (bandwidth mean) against `reference`, modes.
pub fn evaluate(
    target: &GaussianMixture,
    samples: &[f64],
    reference: &[f64],
    step: usize,
) -> CurvePoint {
    let finite = samples.iter().all(|v| v.is_finite());
    if !finite {
        return CurvePoint {
            step,
            log_density: f64::NAN,
            mmd: f64::NAN,
            modes: 0,
        };
    }
    CurvePoint {
        step,
        log_density: mean_log_density(target, samples),
        mmd: mmd2_bandwidth_mean(samples, reference, 2),
        modes: mode_report(target, samples).modes_covered,
    }
}

fn host_tensor<B: burn::tensor::backend::Backend>(
    values: Vec<f64>,
    n: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values, [n, 2]).convert::<f32>(), device)
}

fn to_host<B: burn::tensor::backend::Backend>(t: Tensor<B, 2>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("f64 data")
}

/// Fixed evaluation inputs shared by every run.
struct EvalSet {
    latents: Vec<f64>,
    reference: Vec<f64>,
}

impl EvalSet {
    fn new(target: &GaussianMixture, n: usize) -> Self {
        EvalSet {
            latents: standard_normal(2 * n, &mut ChaCha8Rng::seed_from_u64(0xe7a1)),
            reference: target.sample(n, &mut ChaCha8Rng::seed_from_u64(0x5ef)),
        }
    }

    /// The first `n` latents and reference samples.
    fn first(&self, n: usize) -> (&[f64], &[f64]) {
        (&self.latents[..2 * n], &self.reference[..2 * n])
    }
}

/// The teacher network's configuration for `mog40`.
fn teacher_net(hidden: usize, target: &GaussianMixture) -> MlpDenoiserConfig {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let data = TrainingData::Mixture(target.clone());
    let mut c = MlpDenoiserConfig::new(2, data.std(&mut rng));
    c.hidden = hidden;
    c
}

/// Trains the learned teacher (seed 0) and writes its EMA weights to `path`.
pub fn train_mog40_teacher<B: AutodiffBackend>(
    config: &Mog40Config,
    path: &Path,
    device: &B::Device,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let target = targets::mog40();
    let net = teacher_net(config.hidden, &target);
    let tc = TeacherConfig {
        steps: config.teacher_steps,
        p_mean: 1.0,
        p_std: 2.0,
        seed: 0,
        ..TeacherConfig::default()
    };
    let state = train_teacher(
        net.init::<B>(device),
        &TrainingData::Mixture(target),
        &tc,
        device,
        |_, _| {
            progress(1);
            Ok(())
        },
    )?;
    save_module::<B::InnerBackend, _>(&state.ema, path)?;
    Ok(())
}

/// Drives `method` for `steps` generator updates in `segments` of `eval_every`, evaluating
/// after each; segments after the first resume the driver's own checkpoint.
#[allow(clippy::too_many_arguments)]
fn drive<B, M>(
    method: &mut M,
    config: &Mog40Config,
    per_update: usize,
    seed: u64,
    run_dir: &Path,
    target: &GaussianMixture,
    eval: &EvalSet,
    progress: &mut dyn FnMut(u64),
) -> (Vec<CurvePoint>, Vec<f64>, f64, usize, String)
where
    B: AutodiffBackend,
    M: DistillMethod<B>,
{
    let device = B::Device::default();
    let mut curve = Vec::new();
    let mut elapsed = 0.0;
    let mut done = 0usize;
    let sample = |m: &M, n: usize| -> Vec<f64> {
        let (z, _) = eval.first(n);
        to_host(m.generate(host_tensor::<B::InnerBackend>(z.to_vec(), n, &device), None))
    };
    let run = match RunDir::create(run_dir) {
        Ok(r) => r,
        Err(e) => return (curve, Vec::new(), f64::NAN, 0, e.to_string()),
    };
    let mut status = "ok".to_string();
    let mut step = 0;
    while step < config.steps {
        let next = (step + config.eval_every).min(config.steps);
        let driver = DriverConfig {
            steps: next * per_update,
            checkpoint_every: next * per_update,
            log_every: per_update,
            seed,
        };
        let resume = step > 0;
        match run_distillation(method, &driver, &run, resume, |_| {
            progress(1);
            Ok(())
        }) {
            Ok(s) => {
                elapsed += s.elapsed_s;
                done = s.last_step;
            }
            Err(e) => {
                status = match e {
                    DistillError::NonFinite { step, quantity, .. } => {
                        format!("non-finite {quantity} at iteration {step}")
                    }
                    other => other.to_string(),
                };
                break;
            }
        }
        step = next;
        let (_, reference) = eval.first(config.curve_samples);
        curve.push(evaluate(
            target,
            &sample(method, config.curve_samples),
            reference,
            step,
        ));
    }
    let samples = if status == "ok" {
        sample(method, config.eval_samples)
    } else {
        Vec::new()
    };
    let per_iteration = elapsed / (done as f64 / per_update as f64).max(1.0);
    (curve, samples, per_iteration, done, status)
}

/// One (teacher, method, seed) run with teacher `teacher` (scores) and `init` (weights of
/// the learned teacher, the generator's initialisation).
#[allow(clippy::too_many_arguments)]
fn run_one<B, T>(
    config: &Mog40Config,
    teacher_kind: TeacherKind,
    teacher: T,
    method: Mog40Method,
    seed: u64,
    init_path: &Path,
    dir: &Path,
    eval: &EvalSet,
    progress: &mut dyn FnMut(u64),
) -> Result<Mog40Run>
where
    B: AutodiffBackend,
    T: FeatureDenoiser<B>,
{
    let device = B::Device::default();
    let target = targets::mog40();
    let net_cfg = teacher_net(config.hidden, &target);
    B::seed(&device, 1000 + seed);
    let init = load_module::<B, _>(net_cfg.init::<B>(&device), init_path)?;
    let run_dir = dir
        .join("runs")
        .join(teacher_kind.label())
        .join(method.label())
        .join(format!("seed{seed}"));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    let per_update = config.iterations_per_update(method, teacher_kind);
    let (curve, samples, per_iteration, driver_iterations, status) =
        match config.distill_config(method, teacher_kind) {
            None => {
                let mut post = GaussianPosteriorConfig::new(2, 2, net_cfg.sigma_data);
                post.hidden = config.hidden;
                let mut m = VarDiU::new(
                    config.vardiu_config(),
                    teacher,
                    init,
                    post.init::<B>(&device),
                    &device,
                )?;
                drive(
                    &mut m, config, per_update, seed, &run_dir, &target, eval, progress,
                )
            }
            Some(dc) => {
                let mut head = MlpDiscriminatorConfig::new(vec![config.hidden]);
                head.hidden = config.hidden;
                let critic = match dc.ratio {
                    fdistill_train::distill::config::RatioSource::Discriminator => {
                        Critic::Learned(head.init::<B>(&device))
                    }
                    _ => Critic::<B, MlpDiscriminator<B>>::Unit,
                };
                let mut m = FDistill::new(
                    dc,
                    teacher,
                    init,
                    critic,
                    TrainingData::Mixture(target.clone()),
                    &device,
                )?;
                drive(
                    &mut m, config, per_update, seed, &run_dir, &target, eval, progress,
                )
            }
        };
    let final_point = if samples.is_empty() {
        CurvePoint {
            step: curve.last().map_or(0, |p| p.step),
            log_density: f64::NAN,
            mmd: f64::NAN,
            modes: 0,
        }
    } else {
        evaluate(&target, &samples, &eval.reference, config.steps)
    };
    Ok(Mog40Run {
        teacher: teacher_kind,
        method,
        seed,
        status,
        final_point,
        curve,
        seconds_per_iteration: per_iteration,
        driver_iterations,
        samples,
    })
}

/// Total progress ticks of the study (driver iterations plus one per teacher step).
pub fn total_ticks(config: &Mog40Config) -> u64 {
    let runs: usize = config
        .teachers
        .iter()
        .flat_map(|t| {
            config
                .methods
                .iter()
                .map(move |m| config.steps * config.iterations_per_update(*m, *t))
        })
        .sum();
    (runs as u64) * config.seeds + config.teacher_steps as u64
}

/// Runs the study in `dir` (teacher weights and run directories go under it). A learned
/// teacher already in `dir` (`teacher_ema.safetensors` with a matching `teacher.json`) is
/// reused instead of retrained.
pub fn run_study<B: AutodiffBackend>(
    config: &Mog40Config,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Mog40Result> {
    let device = B::Device::default();
    let target = targets::mog40();
    let eval = EvalSet::new(&target, config.eval_samples.max(config.curve_samples));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The learned teacher, reused when DIR already holds one trained with the same settings.
    let teacher_path: PathBuf = dir.join("teacher_ema.safetensors");
    let stamp_path = dir.join("teacher.json");
    let stamp = serde_json::json!({
        "teacher_steps": config.teacher_steps,
        "hidden": config.hidden,
        "p_mean": 1.0,
        "p_std": 2.0,
        "seed": 0,
    });
    let cached = teacher_path.is_file()
        && std::fs::read_to_string(&stamp_path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            == Some(stamp.clone());
    if cached {
        progress(config.teacher_steps as u64);
    } else {
        train_mog40_teacher::<B>(config, &teacher_path, &device, progress)?;
        std::fs::write(&stamp_path, serde_json::to_string_pretty(&stamp)?)?;
    }

    // The learned teacher's own samples (Heun, 35 NFE): the reference a one-step student of
    // the learned teacher can at best reach.
    let net_cfg = teacher_net(config.hidden, &target);
    let teacher_inner =
        load_module::<B::InnerBackend, _>(net_cfg.init::<B::InnerBackend>(&device), &teacher_path)?;
    let sigmas = karras_sigmas(18, SIGMA_MIN, SIGMA_MAX, RHO)?;
    let (z, _) = eval.first(config.eval_samples);
    let x = heun_sample(
        &teacher_inner,
        host_tensor::<B::InnerBackend>(z.to_vec(), config.eval_samples, &device),
        &sigmas,
        None,
    );
    let teacher_reference = evaluate(&target, &to_host(x), &eval.reference, 0);
    let exact = target.sample(config.eval_samples, &mut ChaCha8Rng::seed_from_u64(0xf100));
    let floor = evaluate(&target, &exact, &eval.reference, 0);

    let mut runs = Vec::new();
    for &teacher in &config.teachers {
        for &method in &config.methods {
            for seed in 0..config.seeds {
                let run = match teacher {
                    TeacherKind::Analytic => run_one::<B, _>(
                        config,
                        teacher,
                        AnalyticTeacher::new(target.clone()),
                        method,
                        seed,
                        &teacher_path,
                        dir,
                        &eval,
                        progress,
                    )?,
                    TeacherKind::Learned => {
                        let t = load_module::<B, _>(net_cfg.init::<B>(&device), &teacher_path)?
                            .no_grad();
                        run_one::<B, MlpDenoiser<B>>(
                            config,
                            teacher,
                            t,
                            method,
                            seed,
                            &teacher_path,
                            dir,
                            &eval,
                            progress,
                        )?
                    }
                };
                runs.push(run);
            }
        }
    }
    Ok(Mog40Result {
        runs,
        teacher_reference,
        floor,
    })
}

/// Mean and (population) standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
    )
}

/// `DIR/summary.csv`: one row per run.
pub fn summary_csv(result: &Mog40Result) -> String {
    let mut out = String::from(
        "teacher,method,seed,status,mean_log_density,mmd2_bandwidth_mean,modes_covered,\
         ms_per_iteration,driver_iterations\n",
    );
    for r in &result.runs {
        out += &format!(
            "{},{},{},{},{:.5},{:.6},{},{:.3},{}\n",
            r.teacher.label(),
            r.method.label(),
            r.seed,
            r.status.replace(',', ";"),
            r.final_point.log_density,
            r.final_point.mmd,
            r.final_point.modes,
            1e3 * r.seconds_per_iteration,
            r.driver_iterations
        );
    }
    out
}

/// `DIR/summary.md`: mean ± std over seeds per (teacher, method), the references, settings.
pub fn summary_md(result: &Mog40Result, config: &Mog40Config) -> String {
    let mut out = format!(
        "# MoG-40: VarDiU vs Diff-Instruct, DMD2 and f-distill\n\n\
         {} seeds × {} generator updates per run (equal budget; f-distill-family runs also do \
         K critic updates per generator update), batch {}, AdamW lr {} (generators) / {} \
         (fake score, discriminator, posterior), generator EMA {}, networks of width {}. \
         Learned teacher: EDM MLP, {} steps, ln σ ~ N(1, 2²). Metrics on {} samples of the EMA \
         generator from fixed latents: mean log-density under the target (higher is better), \
         MMD² averaged over RBF bandwidths {{0.25, 0.5, 1, 2, 4}} against {} exact samples \
         (lower is better), modes covered of 40, wall time per generator update.\n\n",
        config.seeds,
        config.steps,
        config.batch_size,
        config.lr_generator,
        config.lr_critic,
        config.ema_beta,
        config.hidden,
        config.teacher_steps,
        config.eval_samples,
        config.eval_samples,
    );
    out += "| teacher | method | mean log-density | MMD² (bw mean) | modes covered | ms / iter | failed runs |\n\
            |---|---|---|---|---|---|---|\n";
    for &teacher in &config.teachers {
        for &method in &config.methods {
            let runs: Vec<&Mog40Run> = result
                .runs
                .iter()
                .filter(|r| r.teacher == teacher && r.method == method)
                .collect();
            let ok: Vec<&&Mog40Run> = runs.iter().filter(|r| r.status == "ok").collect();
            let failed = runs.len() - ok.len();
            let col = |f: &dyn Fn(&Mog40Run) -> f64| -> (f64, f64) {
                mean_std(&ok.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let (ld, ld_s) = col(&|r| r.final_point.log_density);
            let (mmd, mmd_s) = col(&|r| r.final_point.mmd);
            let (modes, modes_s) = col(&|r| r.final_point.modes as f64);
            let (ms, _) = col(&|r| 1e3 * r.seconds_per_iteration);
            out += &format!(
                "| {} | {} | {ld:.2} ± {ld_s:.2} | {mmd:.4} ± {mmd_s:.4} | {modes:.1} ± {modes_s:.1} | {ms:.1} | {failed} |\n",
                teacher.label(),
                method.label(),
            );
        }
    }
    let (t, f) = (&result.teacher_reference, &result.floor);
    out += &format!(
        "| *learned teacher, Heun 35 NFE* | — | {:.2} | {:.4} | {} | — | — |\n\
         | *exact samples (floor)* | — | {:.2} | {:.4} | {} | — | — |\n",
        t.log_density, t.mmd, t.modes, f.log_density, f.mmd, f.modes
    );
    let failures: Vec<String> = result
        .runs
        .iter()
        .filter(|r| r.status != "ok")
        .map(|r| {
            format!(
                "- {} / {} / seed {}: {}",
                r.teacher.label(),
                r.method.label(),
                r.seed,
                r.status
            )
        })
        .collect();
    if !failures.is_empty() {
        out += &format!(
            "\nFailed runs (excluded from the means):\n{}\n",
            failures.join("\n")
        );
    }
    out
}

/// Seed-0 sample scatters per (teacher, method) and metric curves (seed means) per teacher.
pub fn write_figures(dir: &Path, config: &Mog40Config, result: &Mog40Result) -> Result<()> {
    let target = targets::mog40();
    let density = |x: f64, y: f64| target.log_density(&[x, y], 0.0);
    for r in result
        .runs
        .iter()
        .filter(|r| r.seed == 0 && !r.samples.is_empty())
    {
        let points: Vec<[f64; 2]> = r.samples.chunks(2).map(|c| [c[0], c[1]]).collect();
        let title = format!(
            "{} ({} teacher, seed 0)",
            r.method.label(),
            r.teacher.label()
        );
        plot::scatter_png(
            &dir.join(format!(
                "samples_{}_{}.png",
                r.teacher.label(),
                r.method.label()
            )),
            &plot::Scatter {
                title: &title,
                points: &points,
                log_density: Some(&density),
                x_range: (-50.0, 50.0),
                y_range: (-50.0, 50.0),
            },
        )?;
    }
    type Metric = (&'static str, &'static str, fn(&CurvePoint) -> f64, bool);
    let metrics: [Metric; 3] = [
        ("mmd", "MMD² (bandwidth mean)", |p| p.mmd, true),
        ("log_density", "mean log-density", |p| p.log_density, false),
        ("modes", "modes covered", |p| p.modes as f64, false),
    ];
    for &teacher in &config.teachers {
        for (key, name, f, log_y) in metrics {
            let mut series_points = Vec::new();
            for &method in &config.methods {
                let runs: Vec<&Mog40Run> = result
                    .runs
                    .iter()
                    .filter(|r| r.teacher == teacher && r.method == method && r.status == "ok")
                    .collect();
                let Some(first) = runs.first() else { continue };
                let points: Vec<(f64, f64)> = (0..first.curve.len())
                    .map(|i| {
                        let v: Vec<f64> = runs.iter().map(|r| f(&r.curve[i])).collect();
                        (first.curve[i].step as f64, mean_std(&v).0)
                    })
                    .collect();
                series_points.push((method.label(), points));
            }
            if series_points.is_empty() {
                continue;
            }
            let series: Vec<plot::Series<'_>> = series_points
                .iter()
                .map(|(n, p)| plot::Series { name: n, points: p })
                .collect();
            plot::line_chart_png(
                &dir.join(format!("curve_{}_{key}.png", teacher.label())),
                &format!("MoG-40, {} teacher: {name}", teacher.label()),
                "generator updates",
                name,
                &series,
                log_y,
            )?;
        }
    }
    Ok(())
}

/// Runs the study and writes `summary.csv`, `summary.md`, `config.json` and the figures.
pub fn run_and_write<B: AutodiffBackend>(
    config: &Mog40Config,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Mog40Result> {
    let result = run_study::<B>(config, dir, progress)?;
    std::fs::write(dir.join("summary.csv"), summary_csv(&result))?;
    std::fs::write(dir.join("summary.md"), summary_md(&result, config))?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config)?,
    )?;
    write_figures(dir, config, &result)?;
    Ok(result)
}

/// The f-distill rows of the study: the `toy` preset's structure (K = 2, DMD normaliser,
/// stage-2 normalisation, teacher features) with the settings the recorded study ran with —
/// the image noise grid up to σ = 80 and λ_GAN = 1e−2 — rather than the ring8-tuned
/// log-normal σ and λ_GAN = 0.3 of the current `toy` preset (MoG-40's scale is ≈ 21).
fn f_distill_structure(divergence: &str) -> DistillConfig {
    DistillConfig {
        divergence: divergence.into(),
        noise: NoiseDistribution::karras_default(),
        lambda_gan: 1e-2,
        ..DistillConfig::toy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_round_trip_and_unknown_lists_them() {
        for m in METHODS {
            assert_eq!(Mog40Method::parse(m.label()).unwrap(), m);
        }
        let e = Mog40Method::parse("nope").unwrap_err().to_string();
        assert!(e.contains("vardiu") && e.contains("diff-instruct"), "{e}");
    }

    /// The configurations are the named presets' structures with the study's optimisation
    /// settings; the budget in driver iterations follows K.
    #[test]
    fn configurations_follow_the_presets() {
        let c = Mog40Config::default();
        let di = c
            .distill_config(Mog40Method::DiffInstruct, TeacherKind::Learned)
            .unwrap();
        assert_eq!(di.divergence, "reverse-kl");
        assert_eq!(di.critic_steps, 1);
        assert_eq!(di.lr_generator, c.lr_generator);
        let js = c
            .distill_config(Mog40Method::FDistillJensenShannon, TeacherKind::Analytic)
            .unwrap();
        assert_eq!(js.divergence, "jensen-shannon");
        assert_eq!(js.feature_source, FeatureSource::FakeScoreFeatures);
        assert_eq!(
            c.iterations_per_update(Mog40Method::Dmd2, TeacherKind::Learned),
            DistillConfig::dmd2().critic_steps + 1
        );
        assert_eq!(
            c.iterations_per_update(Mog40Method::Vardiu, TeacherKind::Learned),
            1
        );
        assert!(c.clone().check().is_ok());
        assert!(Mog40Config { seeds: 0, ..c }.check().is_err());
    }

    /// Exact samples score like the floor: all modes, MMD near 0; a collapsed set does not.
    #[test]
    fn evaluate_separates_exact_from_collapsed_samples() {
        let t = targets::mog40();
        let eval = EvalSet::new(&t, 1000);
        let exact = t.sample(1000, &mut ChaCha8Rng::seed_from_u64(3));
        let good = evaluate(&t, &exact, &eval.reference, 0);
        assert!(good.modes >= 38, "{good:?}");
        let collapsed: Vec<f64> = (0..1000).flat_map(|_| t.means()[0].clone()).collect();
        let bad = evaluate(&t, &collapsed, &eval.reference, 0);
        assert_eq!(bad.modes, 1);
        assert!(bad.mmd > 10.0 * good.mmd, "{bad:?} vs {good:?}");
        let nan = evaluate(&t, &[f64::NAN, 0.0], &eval.reference, 0);
        assert!(nan.mmd.is_nan());
    }
}
