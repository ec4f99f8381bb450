//! `fdistill distill --teacher DIR --divergence NAME --out DIR [--preset P] [--config FILE]
//! [--steps N] [--resume | --overwrite] [--dry-run]`: distil a trained teacher into a one-step student.
//! `--method vardiu` runs VarDiU instead ([`super::distill_vardiu`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use fdistill::backends::{BackendTask, DeviceSpec, DevicesTask, dispatch, dispatch_devices};
use fdistill::core::EdmDenoiser;
use fdistill::core::ratio::LearnedRatioEstimator;
use fdistill::core::{Denoiser, FeatureDenoiser};
use fdistill::data::TrainingData;
use fdistill::nets::{
    ConvDiscriminator, ConvDiscriminatorConfig, MlpDenoiser, MlpDenoiserConfig, MlpDiscriminator,
    MlpDiscriminatorConfig, UNet, UNetConfig, init_now,
};
use fdistill::train::checkpoint::{RunDir, load_module};
use fdistill::train::distill::config::{PRESETS, RatioSource};
use fdistill::train::distill::driver::{BoxError, StepReport, latest_checkpoint};
use fdistill::train::distill::fdistill::{FDistillMetrics, GENERATOR_EMA_FILE, Phase};
use fdistill::train::distill::{
    Critic, DistillConfig, DistillError, FDistill, StepMetrics, StopRequested, one_step_generate,
    run_distillation,
};
use fdistill::train::parallel::run_distillation_on;
use fdistill::train::teacher::{TEACHER_EMA_FILE, teacher_checkpoint};
use serde::{Deserialize, Serialize};

use super::distill_vardiu::{MethodArg, VarDiuArgs};
use super::parallel::{ParallelArgs, ParallelPlan};
use super::progress::Progress;
use super::run_guard::{self, loop_error, shell_word};
use super::teacher::{DataInfo, TeacherNet, load_recorded_data, read_run_config};
use super::{CliError, interrupt};

/// Arguments of `fdistill distill`.
#[derive(Debug, Args, Clone)]
pub struct DistillArgs {
    /// Run directory of a trained teacher (`fdistill teacher train --out`).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// f-divergence by registry name (`fdistill divergences` lists them; plugins included).
    #[arg(long)]
    pub divergence: Option<String>,
    /// Run directory of the student (config.json, metrics.jsonl, timing.jsonl, checkpoint/).
    /// A directory that holds a run is refused unless --resume or --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Named preset: cifar10, diff-instruct, dmd2, dmd2-no-gan, imagenet64, toy, toy-exact.
    /// Default: `toy` for an MLP teacher (vectors), `cifar10` for a UNet teacher (images).
    /// With --method vardiu: data-scale (default; σ range from the data's std) or
    /// mog40-reference.
    #[arg(long)]
    pub preset: Option<String>,
    /// JSON or TOML file whose keys override the preset (any `DistillConfig` field).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Iterations (overrides the preset and the file; with --resume, may extend the run).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Continue the run in --out from its last checkpoint (the saved config is used).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Delete the run in --out (config.json, metrics, checkpoints) and start afresh.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the resolved configuration and exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Device: flex (CPU, default), candle, cuda[:N], wgpu.
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// No progress bar (the demo draws its own).
    #[arg(skip)]
    pub quiet: bool,
    /// Fields merged into the preset before `--config` (which wins): a caller's own settings
    /// of a preset, e.g. the demo's schedule. Not a command-line flag.
    #[arg(skip)]
    pub preset_overrides: Option<serde_json::Value>,
    /// Method: fdistill (f-distill; DMD2 and Diff-Instruct are its presets) or vardiu
    /// (VarDiU, SPEC §7, low-dimensional data; keys of --config are then VarDiuConfig fields).
    #[arg(long, value_enum, default_value = "fdistill")]
    pub method: MethodArg,
    #[command(flatten)]
    pub vardiu: VarDiuArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// `RUN/config.json` of a student run: everything needed to rebuild and resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentRunConfig {
    /// Always `"student"`.
    pub kind: String,
    /// The teacher's run directory.
    pub teacher: PathBuf,
    /// The teacher's data (real samples of the discriminator).
    pub data: DataInfo,
    /// The generator / fake-score network (the teacher's: an MLP or a UNet).
    pub net: TeacherNet,
    /// The discriminator head, when the ratio is learned.
    pub discriminator: Option<DiscriminatorNet>,
    /// The trainer's configuration.
    pub distill: DistillConfig,
}

/// The discriminator head of a student run: flat heads on an MLP's taps, convolutional heads
/// on a UNet's per-level taps (SPEC §2). Untagged, so MLP runs keep their `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DiscriminatorNet {
    /// One MLP head per flat tap.
    Mlp(MlpDiscriminatorConfig),
    /// One conv head per spatial tap, logits averaged.
    Conv(ConvDiscriminatorConfig),
}

/// Hidden channels of the convolutional heads on a UNet's taps.
pub const CONV_HEAD_WIDTH: usize = 32;

impl DiscriminatorNet {
    /// The head that fits `net`'s feature taps.
    pub fn for_net(net: &TeacherNet) -> Self {
        match net {
            TeacherNet::Mlp(c) => {
                let mut d = MlpDiscriminatorConfig::new(vec![c.hidden]);
                d.hidden = c.hidden;
                DiscriminatorNet::Mlp(d)
            }
            TeacherNet::Unet(c) => DiscriminatorNet::Conv(ConvDiscriminatorConfig::new(
                c.tap_shapes(),
                CONV_HEAD_WIDTH,
            )),
        }
    }

    /// Validates the configuration.
    pub fn check(&self) -> Result<(), String> {
        match self {
            DiscriminatorNet::Mlp(c) => c.check().map_err(|e| e.to_string()),
            DiscriminatorNet::Conv(c) => c.check().map_err(|e| e.to_string()),
        }
    }
}

/// Merges `patch` into `base` key by key (objects recursively). An object whose `"type"`
/// differs from the base's (a tagged enum such as `noise`) replaces it whole: the other
/// variant's fields must not leak into it.
pub(super) fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p))
            if p.get("type").is_none_or(|t| b.get("type") == Some(t)) =>
        {
            for (k, v) in p {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

pub(super) fn read_overrides(path: &Path) -> Result<serde_json::Value, CliError> {
    read_overrides_for("--config", path)
}

/// A JSON (or, by extension, TOML) object of overrides given by command-line option `flag`;
/// errors name the flag and the file.
pub(super) fn read_overrides_for(flag: &str, path: &Path) -> Result<serde_json::Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {flag} `{}`: {e}", path.display())))?;
    let is_toml = path.extension().and_then(|e| e.to_str()) == Some("toml");
    let value = if is_toml {
        toml::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
    };
    let value =
        value.map_err(|e| CliError::Usage(format!("bad {flag} `{}`: {e}", path.display())))?;
    if !value.is_object() {
        return Err(CliError::Usage(format!(
            "{flag} `{}` must hold an object of overrides ({{\"key\": value, ...}})",
            path.display()
        )));
    }
    Ok(value)
}

/// Image-scale presets on vector data (or the toy preset on images) resolve to settings of
/// the wrong scale without an error: say so. The test is on the resolved values, so a
/// `--config` that fixes them silences it: σ_init against the teacher's σ_data (images use
/// 80 ≈ 160 σ_data, the 2-D toys 4 ≈ 1.6 σ_data) and, for vectors, the iteration count.
pub fn preset_scale_warning(net: &TeacherNet, d: &DistillConfig) -> Option<String> {
    let ratio = d.sigma_init / net.sigma_data();
    let values = format!(
        "{} iterations, lr_generator {:e}, sigma_init {}",
        d.driver.steps, d.lr_generator, d.sigma_init
    );
    match net {
        TeacherNet::Mlp(c) if ratio > 10.0 || d.driver.steps >= 100_000 => Some(format!(
            "preset `{}` resolves to image-scale settings ({values}) but the teacher is an MLP \
             on {}-D vectors with σ_data {}; for vectors use --preset toy (the default), or set \
             driver.steps, lr_* and sigma_init in --config",
            d.preset, c.dim, c.sigma_data
        )),
        TeacherNet::Unet(c) if ratio < 10.0 => Some(format!(
            "preset `{}` resolves to settings for 2-D toys ({values}) but the teacher is a UNet \
             on {}×{} images with σ_data {}; for images use --preset cifar10 (the default), or \
             set sigma_init in --config",
            d.preset, c.resolution, c.resolution, c.sigma_data
        )),
        _ => None,
    }
}

/// Resolves and validates the whole run configuration; no tensor exists yet.
pub fn resolve(args: &DistillArgs) -> Result<(StudentRunConfig, TrainingData), CliError> {
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    // The config.json the data source is read from (named when the data is missing).
    let source_config;
    let mut config = if args.resume {
        let run = RunDir::open(&args.out).map_err(|e| usage(&e))?;
        let c: StudentRunConfig = run.read_config().map_err(|e| usage(&e))?;
        if args.config.is_some() || args.divergence.is_some() {
            return Err(CliError::Usage(
                "--resume continues with the run's saved config.json; drop --config/--divergence (only --steps may change)".into(),
            ));
        }
        source_config = run.config_path();
        c
    } else {
        let teacher_dir = args.teacher.clone().ok_or_else(|| {
            CliError::Usage("--teacher DIR is required (a `fdistill teacher train` run)".into())
        })?;
        let (teacher_run, teacher) = read_run_config(&teacher_dir)?;
        source_config = teacher_run.config_path();
        // Recorded absolute, so `--resume` and `sample` work from any directory.
        let teacher_dir = std::fs::canonicalize(&teacher_dir).unwrap_or(teacher_dir);
        let preset_name = args.preset.clone().unwrap_or_else(|| {
            match teacher.net {
                TeacherNet::Mlp(_) => "toy",
                TeacherNet::Unet(_) => "cifar10",
            }
            .to_string()
        });
        let mut preset = DistillConfig::preset(&preset_name).map_err(|e| usage(&e))?;
        // The toy presets' length scales follow the data (σ_init, the σ law), before the
        // user's --config, which wins.
        if let (TeacherNet::Mlp(c), "toy" | "toy-exact") = (&teacher.net, preset_name.as_str()) {
            preset = preset.at_data_scale(c.sigma_data);
        }
        let mut value = serde_json::to_value(&preset).expect("config serialises");
        if let Some(o) = &args.preset_overrides {
            merge(&mut value, o.clone());
        }
        if let Some(p) = &args.config {
            merge(&mut value, read_overrides(p)?);
        }
        let mut distill: DistillConfig = serde_json::from_value(value).map_err(|e| {
            CliError::Usage(format!(
                "bad --config: {e} (keys are DistillConfig fields; presets: {})",
                PRESETS.join(", ")
            ))
        })?;
        if let Some(d) = &args.divergence {
            distill.divergence = d.clone();
        }
        if let Some(steps) = args.steps {
            distill.driver.steps = steps;
        }
        if let Some(w) = preset_scale_warning(&teacher.net, &distill) {
            eprintln!("warning: {w}");
        }
        let mut net = teacher.net.clone();
        match (&mut net, distill.generator_latent_extra) {
            (_, 0) => {}
            (TeacherNet::Mlp(c), k) => c.latent_extra = k,
            (TeacherNet::Unet(_), k) => {
                return Err(CliError::Usage(format!(
                    "generator_latent_extra = {k}: extra latent inputs are for MLP generators \
                     (vector data); a UNet generator's latent is the image itself: drop the key"
                )));
            }
        }
        let discriminator =
            (distill.ratio == RatioSource::Discriminator).then(|| DiscriminatorNet::for_net(&net));
        StudentRunConfig {
            kind: "student".into(),
            teacher: teacher_dir,
            data: teacher.data,
            net,
            discriminator,
            distill,
        }
    };
    if let Some(steps) = args.steps {
        config.distill.driver.steps = steps;
    }
    config.distill = config.distill.clone().check().map_err(|e| usage(&e))?;
    let net_extra = config.net.latent_dim() - config.net.dim();
    if net_extra != config.distill.generator_latent_extra {
        return Err(CliError::Usage(format!(
            "{}: the generator network has {net_extra} extra latent inputs (net.latent_extra) but \
             distill.generator_latent_extra is {}; the two must agree (start a new run to change it)",
            source_config.display(),
            config.distill.generator_latent_extra
        )));
    }
    if config.distill.ratio == RatioSource::Exact {
        return Err(CliError::Usage(
            "ratio = \"exact\" needs a closed-form student density, which a network student lacks; \
             use ratio = \"discriminator\" here (the exact ratio is for the library's Gaussian-mixture testbed)"
                .into(),
        ));
    }
    if let Some(d) = &config.discriminator {
        d.check().map_err(|e| usage(&e))?;
    }
    let data = load_recorded_data(&config.data.source, &source_config)?;
    Ok((config, data))
}

/// What `--resume` expects, for the guard's message.
const RESUME_HINT: &str =
    "--resume continues a distillation: pass the --out of an earlier `fdistill distill`";

/// What a finished distillation reports to its caller.
#[derive(Debug, Clone)]
pub struct DistillOutcome {
    /// Wall time of the loop.
    pub elapsed_s: f64,
}

/// Runs `fdistill distill`.
pub fn run(args: DistillArgs) -> Result<(), CliError> {
    run_distill(args).map(|_| ())
}

/// `fdistill distill` as a function (the demo calls it).
pub fn run_distill(args: DistillArgs) -> Result<Option<DistillOutcome>, CliError> {
    // A VarDiU run resumes as VarDiU, with or without --method.
    if args.method == MethodArg::Vardiu
        || (args.resume && super::distill_vardiu::is_vardiu_run(&args.out))
    {
        return super::distill_vardiu::run(&args);
    }
    if args.vardiu.target.is_some() {
        return Err(CliError::Usage(
            "--target is for --method vardiu (the analytic teacher); f-distill needs --teacher DIR"
                .into(),
        ));
    }
    if args.vardiu.hidden.is_some() || args.vardiu.depth.is_some() {
        return Err(CliError::Usage(
            "--hidden/--depth are for --method vardiu --target; f-distill's networks are copies \
             of the teacher's (size it at `fdistill teacher train`)"
                .into(),
        ));
    }
    let plan = args.parallel.plan(&args.device)?;
    let writes = args.parallel.writes();
    let device: DeviceSpec = args
        .parallel
        .single_device(&args.device)
        .parse()
        .map_err(|e: fdistill::backends::DeviceError| CliError::Usage(e.to_string()))?;
    // --resume reads the run it continues: lock it first (creating nothing).
    let mut lock = run_guard::TrainingLock::start(
        &args.out,
        (args.resume, args.overwrite, args.dry_run),
        writes,
        RESUME_HINT,
    )?;
    let (config, data) = resolve(&args)?;
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("config serialises")
        );
        return Ok(None);
    }
    // Nodes other than 0 write nothing: node 0 writes the run.
    let run = lock.run_dir()?;
    if writes && (!args.resume || args.steps.is_some()) {
        // A resumed run's config.json records its new length.
        run.write_config(&config).map_err(anyhow::Error::from)?;
    }
    let d = &config.distill;
    tracing::info!(
        "distilling {} with {} (preset {}), {} iterations (K = {}), seed {}",
        config.teacher.display(),
        d.divergence,
        d.preset,
        d.driver.steps,
        d.critic_steps,
        d.driver.seed
    );
    let task = DistillTask {
        config,
        data,
        run,
        resume: args.resume,
        quiet: args.quiet,
    };
    let result = match plan {
        Some(plan) => dispatch_devices(&plan.devices.clone(), DistillOnDevices { task, plan }),
        None => dispatch(&device, task),
    }
    .map_err(|e| CliError::Usage(e.to_string()))?;
    drop(lock);
    result.map(Some)
}

/// `distill --devices`: one replica per device ([`run_distillation_on`]).
struct DistillOnDevices {
    task: DistillTask,
    plan: ParallelPlan,
}

impl DevicesTask for DistillOnDevices {
    type Output = Result<DistillOutcome, CliError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let DistillOnDevices { task, plan } = self;
        let on = Devices::Many(plan, devices);
        let mlp = matches!(task.config.net, TeacherNet::Mlp(_));
        match mlp {
            true => task.train_with::<B, MlpDenoiser<B>, MlpDiscriminator<B>, _>(
                |t, d| match t.build::<B>(d)? {
                    Built::Mlp(nets) => Ok(nets),
                    Built::Unet(..) => Err(CliError::Usage("an MLP config built a UNet".into())),
                },
                on,
            ),
            false => task.train_with::<B, UNet<B>, ConvDiscriminator<B>, _>(
                |t, d| match t.build::<B>(d)? {
                    Built::Unet(nets) => Ok(nets),
                    Built::Mlp(..) => Err(CliError::Usage("a UNet config built an MLP".into())),
                },
                on,
            ),
        }
    }
}

/// Where a student run trains: one device, or one replica per device of a plan.
pub(super) enum Devices<B: AutodiffBackend> {
    One(B::Device),
    Many(ParallelPlan, Vec<B::Device>),
}

/// The networks of a student run before training: the teacher, the generator and the fake
/// score (copies of the teacher; the generator with its extra latent inputs, if any) and the
/// discriminator head.
struct Nets<N, C> {
    teacher: N,
    generator: N,
    fake_score: N,
    head: Option<C>,
}

/// [`Nets`] of an MLP or a UNet run.
// Built once per device and unpacked at once: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Built<B: AutodiffBackend> {
    Mlp(Nets<MlpDenoiser<B>, MlpDiscriminator<B>>),
    Unet(Nets<UNet<B>, ConvDiscriminator<B>>),
}

/// The backend RNG (which draws the discriminator heads) is one per process: runs that start
/// concurrently (the demo's students, the replicas of `--devices`) seed it and build their
/// networks one at a time, so each run starts from the weights its seed gives alone.
static SEED_AND_BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct DistillTask {
    config: StudentRunConfig,
    data: TrainingData,
    run: RunDir,
    resume: bool,
    quiet: bool,
}

impl BackendTask for DistillTask {
    type Output = Result<DistillOutcome, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let built = {
            let _one = SEED_AND_BUILD.lock().unwrap_or_else(|e| e.into_inner());
            B::seed(&device, self.config.distill.driver.seed);
            self.build::<B>(&device)?
        };
        match built {
            Built::Mlp(nets) => self.train(nets, &device),
            Built::Unet(nets) => self.train(nets, &device),
        }
    }
}

impl DistillTask {
    /// The networks, loaded from the teacher's checkpoint (the head drawn from the backend
    /// RNG, seeded by the caller, here and now: [`init_now`]).
    fn build<B: AutodiffBackend>(&self, device: &B::Device) -> Result<Built<B>, CliError> {
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        let teacher_run = RunDir::open(&self.config.teacher).map_err(|e| usage(&e))?;
        let weights = teacher_checkpoint(&teacher_run).join(TEACHER_EMA_FILE);
        match (&self.config.net, &self.config.discriminator) {
            (TeacherNet::Mlp(c), d) => {
                // The student's net config is the generator's; the teacher has no extra
                // latent inputs.
                let teacher_config = MlpDenoiserConfig {
                    latent_extra: 0,
                    ..c.clone()
                };
                let net: MlpDenoiser<B> =
                    load_module::<B, _>(teacher_config.init(device), &weights)
                        .map_err(|e| usage(&e))?;
                let head = match d {
                    Some(DiscriminatorNet::Mlp(h)) => Some(init_now(h.init::<B>(device))),
                    Some(DiscriminatorNet::Conv(_)) => return Err(head_mismatch("MLP", "conv")),
                    None => None,
                };
                Ok(Built::Mlp(Nets {
                    teacher: net.clone(),
                    generator: net.clone().with_latent_extra(c.latent_extra, device),
                    fake_score: net,
                    head,
                }))
            }
            (TeacherNet::Unet(c), d) => {
                let net: UNet<B> =
                    load_module::<B, _>(c.init(device), &weights).map_err(|e| usage(&e))?;
                let head = match d {
                    Some(DiscriminatorNet::Conv(h)) => Some(init_now(h.init::<B>(device))),
                    Some(DiscriminatorNet::Mlp(_)) => return Err(head_mismatch("UNet", "MLP")),
                    None => None,
                };
                // The frozen teacher in evaluation mode (no block or label dropout, as EDM's
                // `net.eval()`); the generator and fake score keep block dropout but never
                // drop labels (a teacher trained for guidance has label_dropout > 0).
                let teacher = net.clone().without_dropout();
                let net = UNet {
                    config: UNetConfig {
                        label_dropout: 0.0,
                        ..net.config.clone()
                    },
                    model: net.model,
                };
                Ok(Built::Unet(Nets {
                    teacher,
                    generator: net.clone(),
                    fake_score: net,
                    head,
                }))
            }
        }
    }
}

fn head_mismatch(net: &str, head: &str) -> CliError {
    CliError::Usage(format!(
        "config.json pairs a {net} network with {head} discriminator heads; remove the \
         `discriminator` entry and let `fdistill distill` choose the heads for the teacher"
    ))
}

impl DistillTask {
    /// The f-distill loop for one network type `N` (teacher, generator and fake score) and
    /// head type `C`, with a progress bar.
    fn train<B, N, C>(
        self,
        nets: Nets<N, C>,
        device: &B::Device,
    ) -> Result<DistillOutcome, CliError>
    where
        B: AutodiffBackend,
        N: AutodiffModule<B> + FeatureDenoiser<B> + EdmDenoiser<B>,
        N::InnerModule: Denoiser<B::InnerBackend>,
        C: AutodiffModule<B> + LearnedRatioEstimator<B>,
    {
        let built = std::sync::Mutex::new(Some(nets));
        self.train_with::<B, N, C, _>(
            |_, _| {
                built
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        CliError::Usage("the networks of one device are built once".into())
                    })
            },
            Devices::One(device.clone()),
        )
    }

    /// The f-distill loop: on one device (`build` is called once, with the backend seeded by
    /// the caller) or one replica per device.
    fn train_with<B, N, C, F>(self, build: F, on: Devices<B>) -> Result<DistillOutcome, CliError>
    where
        B: AutodiffBackend,
        N: AutodiffModule<B> + FeatureDenoiser<B> + EdmDenoiser<B>,
        N::InnerModule: Denoiser<B::InnerBackend>,
        C: AutodiffModule<B> + LearnedRatioEstimator<B>,
        F: Fn(&DistillTask, &B::Device) -> Result<Nets<N, C>, CliError> + Sync,
    {
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        let dc = self.config.distill.clone();
        let method_on = |device: &B::Device| -> Result<FDistill<B, N, N, C>, CliError> {
            let nets = build(&self, device)?;
            let teacher = nets.teacher.no_grad();
            let critic = match (nets.head, dc.ratio) {
                (Some(h), RatioSource::Discriminator) => Critic::Learned(h),
                _ => Critic::<B, C>::Unit,
            };
            FDistill::with_networks(
                dc.clone(),
                teacher,
                nets.generator,
                nets.fake_score,
                critic,
                self.data.clone(),
                device,
            )
            .map_err(|e| usage(&e))
        };
        let (run, resume, quiet) = (&self.run, self.resume, self.quiet);
        let start = Instant::now();
        let mut last_gen: Option<FDistillMetrics> = None;
        let mut last_critic: Option<FDistillMetrics> = None;
        let losses = |g: &Option<FDistillMetrics>, c: &Option<FDistillMetrics>| {
            let g = g.as_ref();
            let c = c.as_ref();
            format!(
                "h∈[{:.2},{:.2}] ℓ̄ {:.2} gan {:.3} dsm {:.4} disc {:.4}",
                g.and_then(|m| m.weight).map_or(f64::NAN, |w| w.min),
                g.and_then(|m| m.weight).map_or(f64::NAN, |w| w.max),
                g.and_then(|m| m.log_ratio).map_or(f64::NAN, |l| l.mean),
                g.and_then(|m| m.loss_gan).unwrap_or(f64::NAN),
                c.and_then(|m| m.loss_dsm).unwrap_or(f64::NAN),
                c.and_then(|m| m.loss_discriminator).unwrap_or(f64::NAN),
            )
        };
        let mut progress: Option<Progress> = None;
        let armed = interrupt::arm();
        let observe = |r: &StepReport<'_, FDistillMetrics>| -> Result<(), BoxError> {
            if r.metrics.phase == Phase::Generator {
                last_gen = Some(r.metrics.clone());
            } else {
                last_critic = Some(r.metrics.clone());
            }
            let p = progress.get_or_insert_with(|| {
                Progress::new("distill", r.step as u64 - 1, r.total_steps as u64, quiet)
            });
            p.update(r.step as u64, || losses(&last_gen, &last_critic));
            if r.checkpointed {
                tracing::info!(
                    "checkpoint at step {} in {}",
                    r.step,
                    run.checkpoint_dir().display()
                );
            }
            tracing::debug!("step {}: {:?}", r.step, r.metrics);
            debug_assert!(r.metrics.non_finite().is_none());
            if interrupt::requested() {
                return Err(Box::new(StopRequested));
            }
            Ok(())
        };
        let workers = match &on {
            Devices::One(_) => 1,
            Devices::Many(p, d) => d.len() * p.cluster.nodes,
        };
        let result = match &on {
            Devices::One(device) => {
                let mut method = method_on(device)?;
                run_distillation(&mut method, &dc.driver, run, resume, observe)
            }
            Devices::Many(plan, devices) => {
                // One replica at a time (`SEED_AND_BUILD`), so rank 0 starts from the weights
                // a one-device run with this seed has.
                run_distillation_on::<B, _, _, _>(
                    devices,
                    &plan.cluster,
                    &dc.driver,
                    run,
                    resume,
                    |_rank, device| {
                        let _one = SEED_AND_BUILD.lock().unwrap_or_else(|e| e.into_inner());
                        B::seed(device, dc.driver.seed);
                        method_on(device).map_err(|e| DistillError::Config(e.to_string()))
                    },
                    observe,
                )
            }
        };
        drop(armed);
        if let Some(p) = &mut progress {
            p.finish(|| losses(&last_gen, &last_critic));
        }
        let resume_cmd = format!("fdistill distill --out {} --resume", shell_word(run.root()));
        let summary = result.map_err(|e| loop_error(e, &resume_cmd))?;
        let elapsed = start.elapsed().as_secs_f64();
        let steps = summary.last_step + 1 - summary.first_step;
        if !quiet {
            let on = if workers > 1 {
                format!(" on {workers} devices")
            } else {
                String::new()
            };
            super::progress::eprint_line(&format!(
                "distilled {} iterations ({} → {}){on} in {elapsed:.1} s ({:.0} it/s) with {}; checkpoint in {}",
                steps,
                summary.first_step,
                summary.last_step,
                steps as f64 / elapsed,
                dc.divergence,
                run.checkpoint_dir().display()
            ));
        }
        Ok(DistillOutcome { elapsed_s: elapsed })
    }
}

/// Reads and checks a student run's `config.json`.
pub fn read_student_config(dir: &Path) -> Result<(RunDir, StudentRunConfig), CliError> {
    let run = RunDir::open(dir).map_err(|e| CliError::Usage(e.to_string()))?;
    let config: StudentRunConfig = run
        .read_config()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    config
        .net
        .check()
        .map_err(|e| CliError::Usage(format!("{}: {e}", run.config_path().display())))?;
    Ok((run, config))
}

/// The `kind` field of a run directory's `config.json` (`"teacher"` or `"student"`).
pub fn run_kind(dir: &Path) -> Result<String, CliError> {
    let run = RunDir::open(dir).map_err(|e| CliError::Usage(e.to_string()))?;
    let v: serde_json::Value = run
        .read_config()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(v["kind"].as_str().unwrap_or("").to_string())
}

/// One-step samples of a student run's EMA generator: `n` rows, row-major, and the samples
/// per second of the generation itself. A class-conditional generator gets class-balanced
/// labels `i mod classes` (as the teacher's sampler).
pub fn student_samples<B: Backend>(
    net: &TeacherNet,
    weights: &Path,
    sigma_init: f64,
    n: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(Vec<f64>, f64), CliError> {
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    match net {
        TeacherNet::Mlp(c) => {
            let g = load_module::<B, _>(c.init(device), weights).map_err(|e| usage(&e))?;
            Ok(one_step_samples(&g, net, sigma_init, n, seed, device))
        }
        TeacherNet::Unet(c) => {
            let g = load_module::<B, _>(c.init(device), weights).map_err(|e| usage(&e))?;
            Ok(one_step_samples(&g, net, sigma_init, n, seed, device))
        }
    }
}

fn one_step_samples<B: Backend, D: Denoiser<B>>(
    g: &D,
    net: &TeacherNet,
    sigma_init: f64,
    n: usize,
    seed: u64,
    device: &B::Device,
) -> (Vec<f64>, f64) {
    let (latents, labels) = net.sampling_inputs::<B>(n, seed, device); // [n, dim], [n]
    let start = Instant::now();
    let x = one_step_generate(g, latents, sigma_init, labels); // [n, dim]
    let values = x
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("converted to f64");
    let rate = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
    (values, rate)
}

/// The EMA generator weights of a student run.
pub fn student_weights(run: &RunDir) -> Result<PathBuf, CliError> {
    let dir = latest_checkpoint(run).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(dir.join(GENERATOR_EMA_FILE))
}

#[cfg(test)]
mod tests {
    use super::merge;
    use fdistill::train::distill::DistillConfig;
    use fdistill::train::distill::config::NoiseDistribution;

    fn resolved(patch: serde_json::Value) -> DistillConfig {
        // cifar10: the Karras-grid noise of SPEC §4.
        let mut v = serde_json::to_value(DistillConfig::cifar10()).unwrap();
        merge(&mut v, patch);
        serde_json::from_value(v).unwrap()
    }

    /// Fields merge into the preset; a tagged enum of another `type` replaces the preset's
    /// variant instead of inheriting its fields.
    #[test]
    fn overrides_merge_fields_and_replace_enum_variants() {
        let c = resolved(serde_json::json!({"lambda_gan": 0.3, "driver": {"steps": 7}}));
        assert_eq!((c.lambda_gan, c.driver.steps), (0.3, 7));
        assert_eq!(c.driver.seed, DistillConfig::cifar10().driver.seed);
        let c = resolved(
            serde_json::json!({"noise": {"type": "log-normal", "p_mean": -0.5, "p_std": 1.0}}),
        );
        assert_eq!(
            c.noise,
            NoiseDistribution::LogNormal {
                p_mean: -0.5,
                p_std: 1.0
            }
        );
        // Same variant: a partial patch keeps the other fields.
        let c = resolved(serde_json::json!({"noise": {"type": "karras-grid", "sigma_max": 10.0}}));
        let NoiseDistribution::KarrasGrid {
            sigma_max, points, ..
        } = c.noise
        else {
            panic!("karras grid")
        };
        assert_eq!((sigma_max, points), (10.0, 1000));
    }
}
