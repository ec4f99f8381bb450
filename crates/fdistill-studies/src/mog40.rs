//! The MoG-40 benchmark of VarDiU (issues #7, #12; SPEC §7): VarDiU against Diff-Instruct,
//! DMD2 and f-distill (reverse KL, Jensen–Shannon, forward KL) on the 2-D mixture of 40
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
//!   — for both teachers, so that all runs start from the same network. Every network is
//!   [`Mog40Config::hidden`] wide (256; at 128 VarDiU's generator collapses onto 7 of 40
//!   modes).
//! - **Noise laws.** `vardiu` and `diff-instruct-vardiu-law` share VarDiU's law (the
//!   reference protocol, SPEC §7): `σ = σ_min + u^pow (σ_max − σ_min)` on the data's scale
//!   (σ ∈ [0.1, 20]), pow raised 0.1 → 2 by 0.01 steps (period shortened to the budget,
//!   [`Mog40Config::pow_schedule`]), weight `(σ/σ_max)²` — VarDiU on its bound, Diff-Instruct
//!   on its score difference (`w(σ)(d_F − d_T)/σ²`, `train_dikl.py`). `diff-instruct` keeps
//!   its own preset (`ln σ ~ N(−1.2, 1.2²)`); DMD2 and f-distill use SPEC §4's Karras grid.
//!   Each row of the table states its law ([`Mog40Config::sigma_law`]).
//! - **Budget.** Equal *generator* updates: `steps` per run. An f-distill iteration is one
//!   generator update plus its K critic updates (K = 2 for f-distill, 1 for Diff-Instruct,
//!   10 for Diff-Instruct with VarDiU's law as in the reference, 5 for DMD2), so those runs
//!   take `steps · (K + 1)` driver iterations; VarDiU takes `steps`. `vardiu-reference` is
//!   the reference's own run (`VarDiuConfig::mog40_reference`: batch 1024, lr 1e−4, no EMA,
//!   pow +0.01 per 1000 updates) for `reference_steps` updates. The wall time reported is
//!   per generator update, all included.
//! - **Metrics** (on the EMA generator, fixed latents): mean log-density under the target,
//!   MMD² averaged over the RBF bandwidths {0.25, 0.5, 1, 2, 4}
//!   ([`mmd2_bandwidth_mean`]) against a fixed exact sample set, modes covered
//!   ([`mode_report`]), wall time per generator update.
//! - **Resume.** Each run writes `progress.json` after every curve point and `result.json`
//!   when done, stamped with its full configuration; [`run_study`] with `resume` reuses
//!   finished runs and continues unfinished ones from their last checkpoint.

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
use fdistill_core::vardiu_bound::{PowSchedule, VarDiuWeight};
use fdistill_data::TrainingData;
use fdistill_metrics::samples::{mean_log_density, mmd2_bandwidth_mean, mode_report};
use fdistill_nets::{
    GaussianPosteriorConfig, MlpDenoiser, MlpDenoiserConfig, MlpDiscriminator,
    MlpDiscriminatorConfig,
};
use fdistill_train::checkpoint::{RunDir, load_module, read_json, save_module, write_json};
use fdistill_train::distill::config::{DsmWeighting, FeatureSource, LrSchedule, NoiseDistribution};
use fdistill_train::distill::driver::{DriverState, latest_checkpoint};
use fdistill_train::distill::vardiu::weight_words;
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
    /// VarDiU (SPEC §7) at the study's budget and optimisation settings, VarDiU's σ law.
    Vardiu,
    /// VarDiU as the reference runs it (`VarDiuConfig::mog40_reference`), for
    /// `reference_steps` updates.
    VardiuReference,
    /// `vardiu` on EDM's image range σ ∈ [0.002, 80] (the recorded collapse of issue #7):
    /// the control for the noise range.
    VardiuImageRange,
    /// Diff-Instruct: the `diff-instruct` preset (SPEC §4 special case, `ln σ ~ N(−1.2, 1.2²)`).
    DiffInstruct,
    /// Diff-Instruct with VarDiU's σ law and weight, 10 fake-score steps per update and the
    /// EDM-weighted fake-score loss: the VarDiU reference's baseline (`train_dikl.py`).
    DiffInstructVardiuLaw,
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
pub const METHODS: [Mog40Method; 9] = [
    Mog40Method::Vardiu,
    Mog40Method::VardiuReference,
    Mog40Method::VardiuImageRange,
    Mog40Method::DiffInstruct,
    Mog40Method::DiffInstructVardiuLaw,
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
            Mog40Method::VardiuReference => "vardiu-reference",
            Mog40Method::VardiuImageRange => "vardiu-image-range",
            Mog40Method::DiffInstruct => "diff-instruct",
            Mog40Method::DiffInstructVardiuLaw => "diff-instruct-vardiu-law",
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

    /// Whether the method trains with VarDiU's objective.
    pub fn is_vardiu(self) -> bool {
        matches!(
            self,
            Mog40Method::Vardiu | Mog40Method::VardiuReference | Mog40Method::VardiuImageRange
        )
    }
}

/// Study settings; [`check`](Self::check) validates them before anything runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mog40Config {
    /// Number of seeds per (teacher, method): seeds `first_seed..first_seed + seeds`.
    pub seeds: u64,
    /// The first seed (0 by default). A study can be extended with more seeds in a new
    /// directory (`first_seed = 3, seeds = 2` runs seeds 3 and 4) without rerunning the others;
    /// a run's seed alone decides its result.
    #[serde(default)]
    pub first_seed: u64,
    /// Generator updates per run (the equal budget).
    pub steps: usize,
    /// Generator updates of `vardiu-reference` runs.
    pub reference_steps: usize,
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
    /// Default 256: at 128 VarDiU's teacher-copy generator covered 7.3 ± 0.5 of 40 modes
    /// after 3000 updates, at 256 15.7 ± 0.5 (`docs/results.md`, MoG-40, "Capacity").
    pub hidden: usize,
    /// VarDiU's noise range `[σ_min, σ_max]` (the reference's [0.1, 20]), shared by
    /// `vardiu`, `vardiu-reference` and `diff-instruct-vardiu-law`.
    pub vardiu_sigma: [f64; 2],
    /// The pow schedule of `vardiu` and `diff-instruct-vardiu-law`; `None`: the reference's
    /// 0.1 → 2 by 0.01, reaching 2 at half the budget ([`PowSchedule::reference_within`]).
    pub vardiu_pow: Option<PowSchedule>,
    /// Fake-score steps per generator update of `diff-instruct-vardiu-law` (the reference's
    /// `score_step`, 10).
    pub vardiu_law_critic_steps: usize,
    /// Teachers to run.
    pub teachers: Vec<TeacherKind>,
    /// Methods to run.
    pub methods: Vec<Mog40Method>,
}

impl Default for Mog40Config {
    fn default() -> Self {
        Mog40Config {
            seeds: 3,
            first_seed: 0,
            steps: 3000,
            reference_steps: 15_000,
            eval_every: 100,
            curve_samples: 500,
            eval_samples: 2000,
            teacher_steps: 3000,
            batch_size: 256,
            lr_generator: 1e-3,
            lr_critic: 1e-3,
            ema_beta: 0.95,
            hidden: 256,
            vardiu_sigma: [0.1, 20.0],
            vardiu_pow: None,
            vardiu_law_critic_steps: 10,
            teachers: vec![TeacherKind::Analytic, TeacherKind::Learned],
            methods: METHODS.to_vec(),
        }
    }
}

impl Mog40Config {
    /// Validates every field (the method configurations included).
    pub fn check(self) -> Result<Self> {
        if self.seeds == 0
            || self.steps == 0
            || self.reference_steps == 0
            || self.eval_every == 0
            || self.teacher_steps == 0
            || self.vardiu_law_critic_steps == 0
        {
            bail!(
                "seeds ({}), steps ({}), reference_steps ({}), eval_every ({}), teacher_steps ({}) \
                 and vardiu_law_critic_steps ({}) must be ≥ 1",
                self.seeds,
                self.steps,
                self.reference_steps,
                self.eval_every,
                self.teacher_steps,
                self.vardiu_law_critic_steps
            );
        }
        if self.first_seed > u64::from(u32::MAX) {
            bail!(
                "first_seed must be at most {} (runs seed their backend with 1000 + seed), got {}",
                u32::MAX,
                self.first_seed
            );
        }
        if self.batch_size < 2 || self.curve_samples < 2 || self.eval_samples < 2 {
            bail!("batch_size, curve_samples and eval_samples must be ≥ 2");
        }
        if !self.batch_size.is_multiple_of(2) {
            bail!(
                "batch_size must be even (VarDiU's antithetic pairs), got {}",
                self.batch_size
            );
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
        for &method in &self.methods {
            match self.distill_config(method, TeacherKind::Learned) {
                Some(c) => {
                    c.check()
                        .with_context(|| format!("method {}", method.label()))?;
                }
                None => {
                    self.vardiu_config(method)
                        .check()
                        .with_context(|| format!("method {}", method.label()))?;
                }
            }
        }
        Ok(self)
    }

    /// Generator updates of a `method` run.
    pub fn steps_for(&self, method: Mog40Method) -> usize {
        match method {
            Mog40Method::VardiuReference => self.reference_steps,
            _ => self.steps,
        }
    }

    /// The pow schedule of `vardiu` and `diff-instruct-vardiu-law`.
    pub fn pow_schedule(&self) -> PowSchedule {
        self.vardiu_pow
            .unwrap_or_else(|| PowSchedule::reference_within(2.0, (self.steps / 2).max(1)))
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
            Mog40Method::Vardiu | Mog40Method::VardiuReference | Mog40Method::VardiuImageRange => {
                return None;
            }
            Mog40Method::DiffInstruct => DistillConfig::diff_instruct(),
            Mog40Method::DiffInstructVardiuLaw => DistillConfig {
                noise: NoiseDistribution::Power {
                    sigma_min: self.vardiu_sigma[0],
                    sigma_max: self.vardiu_sigma[1],
                    pow: self.pow_schedule(),
                },
                vardiu_weight: Some(VarDiuWeight::SigmaSquared),
                critic_steps: self.vardiu_law_critic_steps,
                dsm_weighting: DsmWeighting::Edm,
                ..DistillConfig::diff_instruct()
            },
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

    /// VarDiU's configuration. `vardiu`: the reference's structure (antithetic pairs,
    /// w = (σ/σ_max)², clip 10, Adam) on `vardiu_sigma` with [`pow_schedule`](Self::pow_schedule)
    /// and the study's batch, learning rates and EMA. `vardiu-reference`:
    /// [`VarDiuConfig::mog40_reference`] whole (batch 1024, lr 1e−4, no EMA, pow +0.01 per
    /// 1000 updates) on `vardiu_sigma`.
    pub fn vardiu_config(&self, method: Mog40Method) -> VarDiuConfig {
        let reference = VarDiuConfig {
            sigma_min: Some(self.vardiu_sigma[0]),
            sigma_max: Some(self.vardiu_sigma[1]),
            sigma_init: Some(SIGMA_MAX),
            ..VarDiuConfig::mog40_reference()
        };
        match method {
            Mog40Method::VardiuReference => reference,
            Mog40Method::VardiuImageRange => VarDiuConfig {
                sigma_min: Some(SIGMA_MIN),
                sigma_max: Some(SIGMA_MAX),
                ..self.vardiu_config(Mog40Method::Vardiu)
            },
            _ => VarDiuConfig {
                preset: "mog40-study".into(),
                batch_size: self.batch_size,
                lr_generator: self.lr_generator,
                lr_posterior: self.lr_critic,
                ema_beta: self.ema_beta,
                pow: self.pow_schedule(),
                ..reference
            },
        }
    }

    /// Driver iterations per generator update: K + 1 for f-distill configurations, 1 for VarDiU.
    pub fn iterations_per_update(&self, method: Mog40Method, teacher: TeacherKind) -> usize {
        self.distill_config(method, teacher)
            .map_or(1, |c| c.critic_steps + 1)
    }

    /// The row's σ law and generator weighting, from the configuration itself.
    pub fn sigma_law(&self, method: Mog40Method) -> String {
        match self.distill_config(method, TeacherKind::Learned) {
            None => self.vardiu_config(method).sigma_law(),
            Some(c) => {
                let g = match (c.vardiu_weight, &c.noise) {
                    (Some(w), NoiseDistribution::Power { sigma_max, .. }) => {
                        format!("g = {}·(d_F − d_T)/σ²", weight_words(w, *sigma_max))
                    }
                    _ if c.dmd_normaliser => "g = h·(d_F − d_T)/mean|x0 − d_T|".into(),
                    _ => "g = d_F − d_T".into(),
                };
                format!("{}; {g}", c.noise.describe())
            }
        }
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
    /// Generator updates of the run.
    pub updates: usize,
    /// Final metrics (NaN when the run failed before any evaluation).
    pub final_point: CurvePoint,
    /// Metric curve.
    pub curve: Vec<CurvePoint>,
    /// Wall seconds per generator update (critic updates included).
    #[serde(alias = "seconds_per_iteration")]
    pub seconds_per_update: f64,
    /// Driver iterations run.
    pub driver_iterations: usize,
    /// Final samples (row-major, `eval_samples × 2`).
    pub samples: Vec<f64>,
}

/// `progress.json` of a run directory: the curve so far, stamped with the run's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    stamp: serde_json::Value,
    curve: Vec<CurvePoint>,
    elapsed_s: f64,
    driver_iterations: usize,
}

/// `result.json` of a run directory: the finished run, stamped with its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Finished {
    stamp: serde_json::Value,
    run: Mog40Run,
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
    // Seeded: the initial weights come from the backend's RNG (burn draws them on first
    // use, so the whole training runs in the seeded section). Unseeded, every process drew
    // another teacher, and with it another initialisation for every generator of the study.
    let state = crate::ring8::seeded::<B, _>(device, tc.seed, || {
        train_teacher(
            net.init::<B>(device),
            &TrainingData::Mixture(target),
            &tc,
            device,
            |_, _| {
                progress(1);
                Ok(())
            },
        )
    })?;
    save_module::<B::InnerBackend, _>(&state.ema, path)?;
    Ok(())
}

/// What [`drive`] returns.
struct Driven {
    curve: Vec<CurvePoint>,
    samples: Vec<f64>,
    seconds_per_update: f64,
    driver_iterations: usize,
    status: String,
}

/// Where one run lives and how far it got.
struct RunPlace<'a> {
    dir: &'a Path,
    stamp: &'a serde_json::Value,
    resume_from: Option<Progress>,
}

/// Drives `method` for `updates` generator updates in segments of `eval_every`, evaluating
/// after each and writing `progress.json`; segments after the first (and a resumed run)
/// continue from the driver's own checkpoint.
#[allow(clippy::too_many_arguments)]
fn drive<B, M>(
    method: &mut M,
    config: &Mog40Config,
    updates: usize,
    per_update: usize,
    seed: u64,
    place: RunPlace<'_>,
    target: &GaussianMixture,
    eval: &EvalSet,
    progress: &mut dyn FnMut(u64),
) -> Driven
where
    B: AutodiffBackend,
    M: DistillMethod<B>,
{
    let device = B::Device::default();
    let sample = |m: &M, n: usize| -> Vec<f64> {
        let (z, _) = eval.first(n);
        to_host(m.generate(host_tensor::<B::InnerBackend>(z.to_vec(), n, &device), None))
    };
    let (mut curve, mut elapsed, mut done) = match place.resume_from {
        Some(p) => (p.curve, p.elapsed_s, p.driver_iterations),
        None => (Vec::new(), 0.0, 0),
    };
    let failed = |curve, status: String| Driven {
        curve,
        samples: Vec::new(),
        seconds_per_update: f64::NAN,
        driver_iterations: 0,
        status,
    };
    let run = match RunDir::create(place.dir) {
        Ok(r) => r,
        Err(e) => return failed(curve, e.to_string()),
    };
    let mut status = "ok".to_string();
    let mut step = done / per_update;
    progress(done as u64);
    while step < updates {
        let next = (step + config.eval_every).min(updates);
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
        let p = Progress {
            stamp: place.stamp.clone(),
            curve: curve.clone(),
            elapsed_s: elapsed,
            driver_iterations: done,
        };
        if let Err(e) = write_json(&place.dir.join(PROGRESS), &p) {
            status = e.to_string();
            break;
        }
    }
    if status != "ok" {
        return failed(curve, status);
    }
    Driven {
        samples: sample(method, config.eval_samples),
        seconds_per_update: elapsed / (done as f64 / per_update as f64).max(1.0),
        driver_iterations: done,
        curve,
        status,
    }
}

const PROGRESS: &str = "progress.json";
const RESULT: &str = "result.json";

/// Everything a run's outcome depends on: its method configuration, budget, evaluation and
/// teacher settings. A saved run is reused only under the same stamp.
fn run_stamp(
    config: &Mog40Config,
    teacher: TeacherKind,
    method: Mog40Method,
    seed: u64,
) -> serde_json::Value {
    let method_config = match config.distill_config(method, teacher) {
        Some(c) => serde_json::to_value(c),
        None => serde_json::to_value(config.vardiu_config(method)),
    }
    .expect("configs serialise");
    serde_json::json!({
        "teacher": teacher.label(),
        "method": method.label(),
        "seed": seed,
        "updates": config.steps_for(method),
        "eval_every": config.eval_every,
        "curve_samples": config.curve_samples,
        "eval_samples": config.eval_samples,
        "teacher_steps": config.teacher_steps,
        "hidden": config.hidden,
        "config": method_config,
    })
}

/// One (teacher, method, seed) run with teacher `teacher` (scores) and `init` (weights of
/// the learned teacher, the generator's initialisation). With `resume`, a finished run with
/// the same stamp is read back and an unfinished one continues from its checkpoint.
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
    resume: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Mog40Run>
where
    B: AutodiffBackend,
    T: FeatureDenoiser<B>,
{
    let device = B::Device::default();
    let target = targets::mog40();
    let net_cfg = teacher_net(config.hidden, &target);
    let run_dir = dir
        .join("runs")
        .join(teacher_kind.label())
        .join(method.label())
        .join(format!("seed{seed}"));
    let stamp = run_stamp(config, teacher_kind, method, seed);
    let per_update = config.iterations_per_update(method, teacher_kind);
    let updates = config.steps_for(method);
    if resume
        && let Ok(f) = read_json::<Finished>(&run_dir.join(RESULT))
        && f.stamp == stamp
    {
        progress((updates * per_update) as u64);
        return Ok(f.run);
    }
    // An unfinished run continues when its progress matches its checkpoint's step.
    let checkpoint_step = RunDir::open(&run_dir)
        .ok()
        .and_then(|r| latest_checkpoint(&r).ok())
        .and_then(|c| read_json::<DriverState>(&c.join("driver.json")).ok())
        .map(|s| s.step);
    let resume_from = resume
        .then(|| read_json::<Progress>(&run_dir.join(PROGRESS)).ok())
        .flatten()
        .filter(|p| {
            p.stamp == stamp
                && p.driver_iterations > 0
                && checkpoint_step == Some(p.driver_iterations)
        });
    if resume_from.is_none() && run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    B::seed(&device, 1000 + seed);
    let init = load_module::<B, _>(net_cfg.init::<B>(&device), init_path)?;
    let place = RunPlace {
        dir: &run_dir,
        stamp: &stamp,
        resume_from,
    };
    let resumed = place.resume_from.is_some();
    let driven = match config.distill_config(method, teacher_kind) {
        None => {
            let mut post = GaussianPosteriorConfig::new(2, 2, net_cfg.sigma_data);
            post.hidden = config.hidden;
            let mut m = VarDiU::new(
                config.vardiu_config(method),
                teacher,
                init,
                post.init::<B>(&device),
                &device,
            )?;
            if resumed {
                m.load(&run_dir.join("checkpoint"))?;
            }
            drive(
                &mut m, config, updates, per_update, seed, place, &target, eval, progress,
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
            if resumed {
                m.load(&run_dir.join("checkpoint"))?;
            }
            drive(
                &mut m, config, updates, per_update, seed, place, &target, eval, progress,
            )
        }
    };
    let final_point = if driven.samples.is_empty() {
        CurvePoint {
            step: driven.curve.last().map_or(0, |p| p.step),
            log_density: f64::NAN,
            mmd: f64::NAN,
            modes: 0,
        }
    } else {
        evaluate(&target, &driven.samples, &eval.reference, updates)
    };
    let run = Mog40Run {
        teacher: teacher_kind,
        method,
        seed,
        status: driven.status,
        updates,
        final_point,
        curve: driven.curve,
        seconds_per_update: driven.seconds_per_update,
        driver_iterations: driven.driver_iterations,
        samples: driven.samples,
    };
    if run_dir.is_dir() {
        write_json(
            &run_dir.join(RESULT),
            &Finished {
                stamp,
                run: run.clone(),
            },
        )?;
    }
    Ok(run)
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
                .map(move |m| config.steps_for(*m) * config.iterations_per_update(*m, *t))
        })
        .sum();
    (runs as u64) * config.seeds + config.teacher_steps as u64
}

/// How [`run_study`] runs: resume, and what it reports as it goes.
pub struct StudyHooks<'a> {
    /// Reuse finished runs (`result.json`) and continue unfinished ones (`progress.json`)
    /// whose stamp matches; otherwise every run starts afresh.
    pub resume: bool,
    /// Progress ticks (driver iterations and teacher steps).
    pub progress: &'a mut dyn FnMut(u64),
    /// Called with each finished run.
    pub finished: &'a mut dyn FnMut(&Mog40Run),
}

/// Runs the study in `dir` (teacher weights and run directories go under it). A learned
/// teacher already in `dir` (`teacher_ema.safetensors` with a matching `teacher.json`) is
/// reused instead of retrained.
pub fn run_study<B: AutodiffBackend>(
    config: &Mog40Config,
    dir: &Path,
    hooks: StudyHooks<'_>,
) -> Result<Mog40Result> {
    let StudyHooks {
        resume,
        progress,
        finished,
    } = hooks;
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
            for seed in config.first_seed..config.first_seed + config.seeds {
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
                        resume,
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
                            resume,
                            progress,
                        )?
                    }
                };
                finished(&run);
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
         ms_per_update,driver_iterations,updates\n",
    );
    for r in &result.runs {
        out += &format!(
            "{},{},{},{},{:.5},{:.6},{},{:.3},{},{}\n",
            r.teacher.label(),
            r.method.label(),
            r.seed,
            r.status.replace(',', ";"),
            r.final_point.log_density,
            r.final_point.mmd,
            r.final_point.modes,
            1e3 * r.seconds_per_update,
            r.driver_iterations,
            r.updates
        );
    }
    out
}

/// `DIR/summary.md`: mean ± std over seeds per (teacher, method), each row with its σ law
/// and generator weighting, the references, settings.
pub fn summary_md(result: &Mog40Result, config: &Mog40Config) -> String {
    let reference = config.vardiu_config(Mog40Method::VardiuReference);
    let mut out = format!(
        "# MoG-40: VarDiU vs Diff-Instruct, DMD2 and f-distill\n\n\
         {} seeds × {} generator updates per run (equal budget; f-distill-family runs also do \
         K critic updates per generator update), batch {}, AdamW lr {} (generators) / {} \
         (fake score, discriminator, posterior), generator EMA {}, networks of width {}; \
         `vardiu-reference`: {} updates, batch {} (antithetic), lr {} / {}, EMA {}. \
         Learned teacher: EDM MLP, {} steps, ln σ ~ N(1, 2²). Metrics on {} samples of the \
         (EMA) generator from fixed latents: mean log-density under the target (higher is \
         better), MMD² averaged over RBF bandwidths {{0.25, 0.5, 1, 2, 4}} against {} exact \
         samples (lower is better), modes covered of 40, wall time per generator update. \
         Mean ± std (population) over seeds.\n\n",
        config.seeds,
        config.steps,
        config.batch_size,
        config.lr_generator,
        config.lr_critic,
        config.ema_beta,
        config.hidden,
        config.reference_steps,
        reference.batch_size,
        reference.lr_generator,
        reference.lr_posterior,
        reference.ema_beta,
        config.teacher_steps,
        config.eval_samples,
        config.eval_samples,
    );
    out += "| teacher | method | σ law; generator weighting | updates | mean log-density | MMD² (bw mean) | modes covered | ms / update | failed runs |\n\
            |---|---|---|---|---|---|---|---|---|\n";
    for &teacher in &config.teachers {
        for &method in &config.methods {
            let runs: Vec<&Mog40Run> = result
                .runs
                .iter()
                .filter(|r| r.teacher == teacher && r.method == method)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let ok: Vec<&&Mog40Run> = runs.iter().filter(|r| r.status == "ok").collect();
            let failed = runs.len() - ok.len();
            let col = |f: &dyn Fn(&Mog40Run) -> f64| -> (f64, f64) {
                mean_std(&ok.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let (ld, ld_s) = col(&|r| r.final_point.log_density);
            let (mmd, mmd_s) = col(&|r| r.final_point.mmd);
            let (modes, modes_s) = col(&|r| r.final_point.modes as f64);
            let (ms, _) = col(&|r| 1e3 * r.seconds_per_update);
            out += &format!(
                "| {} | {} | {} | {} | {ld:.2} ± {ld_s:.2} | {mmd:.4} ± {mmd_s:.4} | {modes:.1} ± {modes_s:.1} | {ms:.1} | {failed} |\n",
                teacher.label(),
                method.label(),
                config.sigma_law(method),
                config.steps_for(method),
            );
        }
    }
    let (t, f) = (&result.teacher_reference, &result.floor);
    out += &format!(
        "| *learned teacher, Heun 35 NFE* | — | — | — | {:.2} | {:.4} | {} | — | — |\n\
         | *exact samples (floor)* | — | — | — | {:.2} | {:.4} | {} | — | — |\n",
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
    // The seed mean of a method's curve (points where every ok run has a value).
    let mean_curve = |teacher: TeacherKind, method: Mog40Method, f: fn(&CurvePoint) -> f64| {
        let runs: Vec<&Mog40Run> = result
            .runs
            .iter()
            .filter(|r| r.teacher == teacher && r.method == method && r.status == "ok")
            .collect();
        let len = runs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
        (0..len)
            .map(|i| {
                let v: Vec<f64> = runs.iter().map(|r| f(&r.curve[i])).collect();
                (runs[0].curve[i].step as f64, mean_std(&v).0)
            })
            .collect::<Vec<(f64, f64)>>()
    };
    for &teacher in &config.teachers {
        // One chart at the study's budget (every method but the long reference run), and
        // one of the reference run beside the VarDiU-law rows.
        let charts: [(&str, Vec<Mog40Method>); 2] = [
            (
                "",
                config
                    .methods
                    .iter()
                    .copied()
                    .filter(|m| *m != Mog40Method::VardiuReference)
                    .collect(),
            ),
            (
                "reference_",
                [
                    Mog40Method::VardiuReference,
                    Mog40Method::Vardiu,
                    Mog40Method::VardiuImageRange,
                    Mog40Method::DiffInstructVardiuLaw,
                ]
                .into_iter()
                .filter(|m| config.methods.contains(m))
                .collect(),
            ),
        ];
        for (prefix, methods) in charts {
            if prefix == "reference_" && !methods.contains(&Mog40Method::VardiuReference) {
                continue;
            }
            for (key, name, f, log_y) in metrics {
                let series_points: Vec<(&str, Vec<(f64, f64)>)> = methods
                    .iter()
                    .map(|m| (m.label(), mean_curve(teacher, *m, f)))
                    .filter(|(_, p)| !p.is_empty())
                    .collect();
                if series_points.is_empty() {
                    continue;
                }
                let series: Vec<plot::Series<'_>> = series_points
                    .iter()
                    .map(|(n, p)| plot::Series { name: n, points: p })
                    .collect();
                plot::line_chart_png(
                    &dir.join(format!("curve_{}_{prefix}{key}.png", teacher.label())),
                    &format!("MoG-40, {} teacher: {name} (seed mean)", teacher.label()),
                    "generator updates",
                    name,
                    &series,
                    log_y,
                )?;
            }
        }
    }
    Ok(())
}

/// Runs the study and writes `summary.csv`, `summary.md`, `config.json` and the figures.
pub fn run_and_write<B: AutodiffBackend>(
    config: &Mog40Config,
    dir: &Path,
    hooks: StudyHooks<'_>,
) -> Result<Mog40Result> {
    let result = run_study::<B>(config, dir, hooks)?;
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
        lr_schedule: LrSchedule::Constant,
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

    /// `vardiu` and `diff-instruct-vardiu-law` share one σ law (range, pow schedule, weight);
    /// `vardiu-reference` is the reference preset whole; every row names its law.
    #[test]
    fn vardiu_law_rows_share_the_sigma_law() {
        let c = Mog40Config::default();
        let v = c.vardiu_config(Mog40Method::Vardiu);
        let di = c
            .distill_config(Mog40Method::DiffInstructVardiuLaw, TeacherKind::Analytic)
            .unwrap();
        let NoiseDistribution::Power {
            sigma_min,
            sigma_max,
            pow,
        } = di.noise
        else {
            panic!("power law")
        };
        assert_eq!(
            (Some(sigma_min), Some(sigma_max)),
            (v.sigma_min, v.sigma_max)
        );
        assert_eq!((sigma_min, sigma_max), (0.1, 20.0));
        assert_eq!(pow, v.pow);
        assert_eq!(di.vardiu_weight, Some(v.weight));
        assert_eq!(di.critic_steps, 10);
        assert_eq!(
            c.iterations_per_update(Mog40Method::DiffInstructVardiuLaw, TeacherKind::Learned),
            11
        );
        // pow reaches 2 at half the 3000-update budget.
        assert!((pow.pow_at(1500) - 2.0).abs() < 1e-12 && pow.pow_at(1000) < 2.0);
        let r = c.vardiu_config(Mog40Method::VardiuReference);
        assert_eq!(
            r,
            VarDiuConfig {
                sigma_init: Some(SIGMA_MAX),
                ..VarDiuConfig::mog40_reference()
            }
        );
        assert_eq!(c.steps_for(Mog40Method::VardiuReference), 15_000);
        assert_eq!(
            (r.batch_size, r.lr_generator, r.ema_beta),
            (1024, 1e-4, 0.0)
        );
        let laws: Vec<String> = METHODS.iter().map(|m| c.sigma_law(*m)).collect();
        assert!(
            laws[0].starts_with("σ = 0.1 + u^pow·19.9, pow 0.1→2 (+0.01/7)"),
            "{}",
            laws[0]
        );
        assert!(laws[0].ends_with("w = (σ/20)²"), "{}", laws[0]);
        assert!(laws[1].contains("(+0.01/1000)"), "{}", laws[1]);
        assert!(
            laws[2].starts_with("σ = 0.002 + u^pow·79.998"),
            "{}",
            laws[2]
        );
        assert!(laws[2].ends_with("w = (σ/80)²"), "{}", laws[2]);
        assert!(laws[3].starts_with("ln σ ~ N(-1.2, 1.2²)"), "{}", laws[3]);
        assert!(
            laws[4].ends_with("g = (σ/20)²·(d_F − d_T)/σ²"),
            "{}",
            laws[4]
        );
        assert!(laws[5].starts_with("Karras grid"), "{}", laws[5]);
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
