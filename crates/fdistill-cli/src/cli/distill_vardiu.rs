//! `fdistill distill --method vardiu (--teacher DIR | --target NAME) --out DIR [--preset P]
//! [--config FILE] [--steps N] [--resume] [--dry-run]`: VarDiU (SPEC §7) on low-dimensional
//! data.
//!
//! The teacher is a trained MLP teacher's run directory (the generator starts as its copy,
//! as f-distill's) or the exact Tweedie denoiser of a built-in Gaussian-mixture target
//! (`--target mog40`; the generator is then a fresh MLP). The run directory has f-distill's
//! layout (`config.json` with `kind = "student"` and `method = "vardiu"`, `metrics.jsonl`,
//! `checkpoint/generator_ema.safetensors`), so `fdistill sample` and `fdistill eval` work on
//! it as on an f-distill student.
//!
//! **Noise range.** VarDiU's σ range must match the data's scale (there is no image-range
//! default): unless the preset or `--config` sets them, `σ_max = σ_data` (the data's
//! per-coordinate std: the teacher network's `sigma_data`, or the target's), `σ_min =
//! σ_max/200` and `σ_init = 4 σ_max` ([`VarDiuConfig::with_data_scale`]); the chosen values
//! are printed and saved in `config.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use fdistill::backends::{BackendTask, DeviceSpec, DevicesTask, dispatch, dispatch_devices};
use fdistill::core::AnalyticTeacher;
use fdistill::core::Denoiser;
use fdistill::core::targets::gmm_target;
use fdistill::data::TrainingData;
use fdistill::nets::{
    GaussianPosterior, GaussianPosteriorConfig, MlpDenoiser, MlpDenoiserConfig, init_now,
};
use fdistill::train::checkpoint::{RunDir, load_module};
use fdistill::train::distill::driver::{BoxError, StepReport};
use fdistill::train::distill::vardiu::{VARDIU_PRESETS, VarDiuMetrics};
use fdistill::train::distill::{
    DistillError, StopRequested, VarDiU, VarDiuConfig, run_distillation,
};
use fdistill::train::parallel::run_distillation_on;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::distill::{Devices, DistillArgs, DistillOutcome, merge, read_overrides};
use super::parallel::ParallelPlan;
use super::run_guard::{self, loop_error, shell_word};
use super::teacher::{DataInfo, TeacherNet, read_run_config};
use super::{CliError, interrupt};

/// The value of `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MethodArg {
    /// f-distill (SPEC §2–§4) and its DMD2 / Diff-Instruct presets.
    #[default]
    Fdistill,
    /// VarDiU (SPEC §7): the variational upper bound, low-dimensional (MLP) data only.
    Vardiu,
}

/// The VarDiU-only options of `fdistill distill`.
#[derive(Debug, Args, Clone, Default)]
pub struct VarDiuArgs {
    /// With --method vardiu: distil the exact (analytic) teacher of a built-in
    /// Gaussian-mixture target (mog40, ring8-unbalanced, grid25, bimodal-1d) instead of a
    /// --teacher run; the generator is then a fresh MLP.
    #[arg(long, conflicts_with = "teacher")]
    pub target: Option<String>,
    /// With --target: hidden width of the fresh generator MLP and of the posterior (default
    /// 128; with a --teacher run both take the teacher's size).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// With --target: hidden layers of the generator and the posterior (default 3).
    #[arg(long)]
    pub depth: Option<usize>,
}

/// Where a VarDiU run's scores come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum VarDiuTeacher {
    /// A trained MLP teacher (`fdistill teacher train --out RUN`); the generator starts as
    /// its copy.
    Network {
        /// The teacher's run directory.
        run: PathBuf,
    },
    /// The exact Tweedie denoiser of a built-in Gaussian-mixture target; the generator is a
    /// fresh MLP.
    Analytic {
        /// The target's name.
        target: String,
    },
}

/// `RUN/config.json` of a VarDiU student run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarDiuRunConfig {
    /// Always `"student"`.
    pub kind: String,
    /// Always `"vardiu"`.
    pub method: String,
    /// The teacher.
    pub teacher: VarDiuTeacher,
    /// The data (its built-in target or file).
    pub data: DataInfo,
    /// The generator's network (an MLP).
    pub net: TeacherNet,
    /// The amortised posterior `q_φ(z | x_t, σ)`.
    pub posterior: GaussianPosteriorConfig,
    /// The trainer's configuration.
    pub vardiu: VarDiuConfig,
}

/// Whether `dir` holds a VarDiU student run (`config.json` with `method = "vardiu"`).
pub fn is_vardiu_run(dir: &Path) -> bool {
    RunDir::open(dir)
        .ok()
        .and_then(|r| r.read_config::<serde_json::Value>().ok())
        .is_some_and(|v| v["method"] == "vardiu")
}

/// Reads and checks a VarDiU run's `config.json`.
pub fn read_vardiu_config(dir: &Path) -> Result<(RunDir, VarDiuRunConfig), CliError> {
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    let run = RunDir::open(dir).map_err(|e| usage(&e))?;
    let config: VarDiuRunConfig = run.read_config().map_err(|e| usage(&e))?;
    config
        .net
        .check()
        .map_err(|e| CliError::Usage(format!("{}: {e}", run.config_path().display())))?;
    Ok((run, config))
}

/// The settings `fdistill sample` needs from a VarDiU run: the generator network, its EMA
/// weights, σ_init and the data source.
pub fn sampling_info(dir: &Path) -> Result<(TeacherNet, PathBuf, f64, String), CliError> {
    let (run, config) = read_vardiu_config(dir)?;
    let weights = super::distill::student_weights(&run)?;
    Ok((
        config.net,
        weights,
        config.vardiu.sigma_init(),
        config.data.source,
    ))
}

/// The data scale σ_data of a built-in mixture (its per-coordinate std, 3 significant
/// digits, as `fdistill teacher train` computes it with seed 0).
fn target_scale(data: &TrainingData) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let s = data.std(&mut rng);
    format!("{s:.2e}").parse().expect("formatted float parses")
}

/// Resolves and validates the whole VarDiU run configuration; no tensor exists yet. The
/// second value says whether the noise range was derived from the data's scale.
pub fn resolve(args: &DistillArgs) -> Result<(VarDiuRunConfig, bool), CliError> {
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    if args.divergence.is_some() {
        return Err(CliError::Usage(
            "--divergence is for f-distill; VarDiU has no divergence to choose (drop it, or use --method fdistill)"
                .into(),
        ));
    }
    let (mut config, derived) = if args.resume {
        if args.config.is_some()
            || args.vardiu.target.is_some()
            || args.teacher.is_some()
            || args.vardiu.hidden.is_some()
            || args.vardiu.depth.is_some()
        {
            return Err(CliError::Usage(
                "--resume continues with the run's saved config.json; drop --config/--teacher/--target/--hidden/--depth (only --steps may change)".into(),
            ));
        }
        if !is_vardiu_run(&args.out) {
            return Err(CliError::Usage(format!(
                "`{}` is not a VarDiU run (its config.json lacks method = \"vardiu\"); resume it without --method vardiu",
                args.out.display()
            )));
        }
        (read_vardiu_config(&args.out)?.1, false)
    } else {
        let (teacher, data, net) = match (&args.teacher, &args.vardiu.target) {
            (Some(dir), None) => {
                if args.vardiu.hidden.is_some() || args.vardiu.depth.is_some() {
                    return Err(CliError::Usage(
                        "--hidden/--depth size the fresh generator of --target; with --teacher \
                         the generator is the teacher's network (size it at `fdistill teacher \
                         train`, net.hidden / net.depth in its --config)"
                            .into(),
                    ));
                }
                let (_, t) = read_run_config(dir)?;
                let TeacherNet::Mlp(c) = &t.net else {
                    return Err(CliError::Usage(format!(
                        "`{}` is a UNet (image) teacher; VarDiU here is for low-dimensional data \
                         (its posterior is an MLP over a latent of the data's dimension): use an \
                         MLP teacher (`fdistill teacher train --net mlp`) or --target",
                        dir.display()
                    )));
                };
                if c.n_classes.is_some() {
                    return Err(CliError::Usage(format!(
                        "`{}` is class-conditional; VarDiU supports unconditional teachers only",
                        dir.display()
                    )));
                }
                (
                    VarDiuTeacher::Network { run: dir.clone() },
                    t.data,
                    c.clone(),
                )
            }
            (None, Some(name)) => {
                let mixture = gmm_target(name).map_err(|e| {
                    CliError::Usage(format!(
                        "--target `{name}`: {e}. The analytic teacher needs a built-in Gaussian mixture"
                    ))
                })?;
                let data = TrainingData::Mixture(mixture);
                // The library's MLP (128 × 3) unless sized: unlike the teacher-copy
                // generator of `study mog40`, a fresh generator gained nothing from 256 × 4
                // on MoG-40 (docs/results.md, MoG-40, initialisation ablation).
                let mut net = MlpDenoiserConfig::new(data.dim(), target_scale(&data));
                if let Some(h) = args.vardiu.hidden {
                    net.hidden = h;
                }
                if let Some(d) = args.vardiu.depth {
                    net.depth = d;
                }
                (
                    VarDiuTeacher::Analytic {
                        target: name.clone(),
                    },
                    DataInfo {
                        source: name.clone(),
                        dim: data.dim(),
                    },
                    net,
                )
            }
            _ => {
                return Err(CliError::Usage(
                    "--method vardiu needs a teacher: --teacher DIR (an MLP `fdistill teacher train` run) \
                     or --target NAME (the analytic teacher of a built-in Gaussian mixture, e.g. mog40)"
                        .into(),
                ));
            }
        };
        let preset_name = args.preset.as_deref().unwrap_or("data-scale");
        let preset = VarDiuConfig::preset(preset_name).map_err(|e| usage(&e))?;
        let mut value = serde_json::to_value(&preset).expect("config serialises");
        if let Some(p) = &args.config {
            merge(&mut value, read_overrides(p)?);
        }
        let vardiu: VarDiuConfig = serde_json::from_value(value).map_err(|e| {
            CliError::Usage(format!(
                "bad --config: {e} (keys are VarDiuConfig fields; VarDiU presets: {})",
                VARDIU_PRESETS.join(", ")
            ))
        })?;
        let derived = vardiu.sigma_max.is_none();
        let vardiu = vardiu.with_data_scale(net.sigma_data);
        let mut posterior = GaussianPosteriorConfig::new(net.dim, net.dim, net.sigma_data);
        posterior.hidden = net.hidden;
        posterior.depth = net.depth;
        let config = VarDiuRunConfig {
            kind: "student".into(),
            method: "vardiu".into(),
            teacher,
            data,
            net: TeacherNet::Mlp(net),
            posterior,
            vardiu,
        };
        (config, derived)
    };
    if let Some(steps) = args.steps {
        config.vardiu.driver.steps = steps;
    }
    config.vardiu = config.vardiu.clone().check().map_err(|e| usage(&e))?;
    config.posterior.check().map_err(|e| usage(&e))?;
    Ok((config, derived))
}

/// What `--resume` expects, for the guard's message.
const RESUME_HINT: &str = "--resume continues a VarDiU run: pass the --out of an earlier \
     `fdistill distill --method vardiu`";

/// Runs `fdistill distill --method vardiu`: one device, or one replica per device of
/// `--devices` (and nodes), as f-distill.
pub fn run(args: &DistillArgs) -> Result<Option<DistillOutcome>, CliError> {
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
    let (config, derived) = resolve(args)?;
    let (lo, hi) = config.vardiu.sigma_range();
    if derived {
        eprintln!(
            "VarDiU noise range from the data's scale (σ_data = {}): σ ∈ [{lo:.4}, {hi:.4}], \
             σ_init = {:.4}; set sigma_min / sigma_max / sigma_init in --config to choose them",
            config.posterior.sigma_data,
            config.vardiu.sigma_init()
        );
    }
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("config serialises")
        );
        return Ok(None);
    }
    // One writer per run directory; nodes other than 0 write nothing.
    let run = lock.run_dir()?;
    if writes && (!args.resume || args.steps.is_some()) {
        // A resumed run's config.json records its new length.
        run.write_config(&config).map_err(anyhow::Error::from)?;
    }
    let task = VarDiuTask {
        config,
        run,
        resume: args.resume,
        quiet: args.quiet,
    };
    let result = match plan {
        Some(plan) => dispatch_devices(&plan.devices.clone(), VarDiuOnDevices { task, plan }),
        None => dispatch(&device, task),
    }
    .map_err(|e| CliError::Usage(e.to_string()))?;
    drop(lock);
    result.map(Some)
}

struct VarDiuTask {
    config: VarDiuRunConfig,
    run: RunDir,
    resume: bool,
    quiet: bool,
}

impl BackendTask for VarDiuTask {
    type Output = Result<DistillOutcome, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        self.train_on::<B>(Devices::One(device))
    }
}

/// `distill --method vardiu --devices`: one replica per device.
struct VarDiuOnDevices {
    task: VarDiuTask,
    plan: ParallelPlan,
}

impl DevicesTask for VarDiuOnDevices {
    type Output = Result<DistillOutcome, CliError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        self.task.train_on::<B>(Devices::Many(self.plan, devices))
    }
}

/// A VarDiU replica's networks on one device: teacher, generator, posterior.
type Networks<B, T> = (T, MlpDenoiser<B>, GaussianPosterior<B>);

impl VarDiuTask {
    /// The networks for the run's teacher (a trained MLP or a built-in mixture), then the loop.
    fn train_on<B: AutodiffBackend>(self, on: Devices<B>) -> Result<DistillOutcome, CliError> {
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        let TeacherNet::Mlp(net_cfg) = self.config.net.clone() else {
            return Err(CliError::Usage(
                "config.json: a VarDiU run's generator must be an MLP".into(),
            ));
        };
        let post_cfg = self.config.posterior.clone();
        match self.config.teacher.clone() {
            VarDiuTeacher::Network { run } => {
                let weights = RunDir::open(&run)
                    .map_err(|e| usage(&e))?
                    .checkpoint_file("ema.safetensors");
                // The posterior first, then the generator: the backend RNG's order.
                self.train_with(
                    |device: &B::Device| {
                        let posterior = init_now(post_cfg.init::<B>(device));
                        let net: MlpDenoiser<B> =
                            load_module::<B, _>(net_cfg.init(device), &weights)
                                .map_err(|e| usage(&e))?;
                        Ok((net.clone().no_grad(), net, posterior))
                    },
                    on,
                )
            }
            VarDiuTeacher::Analytic { target } => {
                let mixture = gmm_target(&target).map_err(|e| usage(&e))?;
                self.train_with(
                    |device: &B::Device| {
                        let posterior = init_now(post_cfg.init::<B>(device));
                        let generator = init_now(net_cfg.init::<B>(device));
                        Ok((AnalyticTeacher::new(mixture.clone()), generator, posterior))
                    },
                    on,
                )
            }
        }
    }

    /// The VarDiU loop with a progress bar, on one device (the networks built once, the
    /// backend seeded first) or one replica per device.
    fn train_with<B, T, F>(self, build: F, on: Devices<B>) -> Result<DistillOutcome, CliError>
    where
        B: AutodiffBackend,
        T: Denoiser<B>,
        F: Fn(&B::Device) -> Result<Networks<B, T>, CliError> + Sync,
    {
        let VarDiuTask {
            config,
            run,
            resume,
            quiet,
        } = self;
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        let vc = &config.vardiu;
        let method_on = |device: &B::Device| -> Result<VarDiU<B, T, _, _>, CliError> {
            B::seed(device, vc.driver.seed);
            let (teacher, generator, posterior) = build(device)?;
            VarDiU::new(vc.clone(), teacher, generator, posterior, device).map_err(|e| usage(&e))
        };
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(vc.driver.steps as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let armed = interrupt::arm();
        let observe = |r: &StepReport<'_, VarDiuMetrics>| -> Result<(), BoxError> {
            bar.set_position(r.step as u64);
            let m = r.metrics;
            bar.set_message(format!(
                "w·(−log q) {:.3} pull {:.3} pow {:.2}",
                m.neg_log_q, m.teacher_pull, m.pow
            ));
            if interrupt::requested() {
                return Err(Box::new(StopRequested));
            }
            Ok(())
        };
        let start = Instant::now();
        let workers = match &on {
            Devices::One(_) => 1,
            Devices::Many(p, d) => d.len() * p.cluster.nodes,
        };
        let result = match &on {
            Devices::One(device) => {
                let mut method = method_on(device)?;
                run_distillation(&mut method, &vc.driver, &run, resume, observe)
            }
            Devices::Many(plan, devices) => {
                // The backend RNG is one per process: seed and build one replica at a time,
                // so rank 0 starts from the weights a one-device run with this seed has.
                static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
                run_distillation_on::<B, _, _, _>(
                    devices,
                    &plan.cluster,
                    &vc.driver,
                    &run,
                    resume,
                    |_rank, device| {
                        let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
                        method_on(device).map_err(|e| DistillError::Config(e.to_string()))
                    },
                    observe,
                )
            }
        };
        drop(armed);
        bar.finish_and_clear();
        let resume_cmd = format!("fdistill distill --out {} --resume", shell_word(run.root()));
        let summary = result.map_err(|e| loop_error(e, &resume_cmd))?;
        let elapsed = start.elapsed().as_secs_f64();
        let steps = summary.last_step + 1 - summary.first_step;
        if !quiet {
            let (lo, hi) = vc.sigma_range();
            let on = if workers > 1 {
                format!(" on {workers} devices")
            } else {
                String::new()
            };
            eprintln!(
                "VarDiU: {steps} generator updates ({} → {}){on} in {elapsed:.1} s ({:.0} it/s), \
                 σ ∈ [{lo}, {hi}]; checkpoint in {}",
                summary.first_step,
                summary.last_step,
                steps as f64 / elapsed,
                run.checkpoint_dir().display()
            );
        }
        Ok(DistillOutcome { elapsed_s: elapsed })
    }
}
