//! `fdistill teacher train --data NAME|FILE|IMAGES --out DIR [--net mlp|unet[:PRESET]]
//! [--steps N] [--config FILE] [--dry-run] [--overwrite]`, and
//! `fdistill teacher train --out DIR --resume [--steps N]`, and `fdistill teacher import`
//! ([`super::teacher_import`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use clap::{Args, Subcommand};
use fdistill::backends::{BackendTask, DeviceSpec, DevicesTask, dispatch, dispatch_devices};
use fdistill::core::EdmDenoiser;
use fdistill::core::random::standard_normal;
use fdistill::data::{DataSource, TrainingData};
use fdistill::nets::{MlpDenoiserConfig, UNetConfig};
use fdistill::train::checkpoint::RunDir;
use fdistill::train::distill::driver::{BoxError, DriverSummary, StepReport, latest_checkpoint};
use fdistill::train::distill::{DistillError, StopRequested, run_training};
use fdistill::train::parallel::run_training_on;
use fdistill::train::teacher::{EdmTeacher, TeacherConfig, TeacherMetrics};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::parallel::{ParallelArgs, ParallelPlan};
use super::progress::Progress;
use super::run_guard::{self, loop_error, shell_word};
use super::{CliError, interrupt};

/// Arguments of `fdistill teacher`.
#[derive(Debug, Args)]
pub struct TeacherArgs {
    #[command(subcommand)]
    pub action: TeacherAction,
}

/// `fdistill teacher` subcommands.
#[derive(Debug, Subcommand)]
pub enum TeacherAction {
    /// Train an EDM teacher: an MLP denoiser on a built-in target or a CSV/NPY file, or a UNet
    /// on images.
    Train(TrainArgs),
    /// Import a pretrained EDM network (EDMPrecond's state dict as .safetensors or a PyTorch
    /// .pt/.pth) as a teacher run that `sample`, `eval` and `distill` accept.
    Import(super::teacher_import::ImportArgs),
}

/// Arguments of `fdistill teacher train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Built-in target (bimodal-1d, grid25, mog40, ring8-unbalanced, two-moons), a .csv/.npy
    /// file, or images: fashion-mnist[:DIR], idx:IMAGES,LABELS, png:DIR, each optionally
    /// @SIDE (e.g. fashion-mnist@16). Labelled images train a class-conditional net. File
    /// paths are stored absolute in config.json. Not with --resume (the run's data is used).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<String>,
    /// Network: `mlp` (vectors) or `unet[:PRESET]` (images: EDM's SongUNet/DhariwalUNet;
    /// presets fashion-mnist, fashion-mnist-small (default), fashion-mnist-16, tiny,
    /// edm-ddpmpp-cifar10, edm-ncsnpp-cifar10, edm-adm-imagenet64). Resolution, channels and
    /// classes follow the data; a config file's `unet` object replaces the preset.
    #[arg(long, default_value = "mlp")]
    pub net: String,
    /// Run directory to create (config.json, metrics.jsonl, timing.jsonl, checkpoint/). A
    /// directory that holds a run is refused unless --resume or --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Training steps (overrides the config file; with --resume, may extend the run).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Continue the run in --out from its last checkpoint, exactly (its config.json is used;
    /// only --steps may change).
    #[arg(long, conflicts_with_all = ["overwrite", "data", "net", "config"])]
    pub resume: bool,
    /// Delete the run in --out (config.json, metrics, checkpoints) and start afresh.
    #[arg(long)]
    pub overwrite: bool,
    /// JSON file with `{"teacher": {...}, "net": {...}}` overrides.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the resolved configuration and exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Device: flex (CPU, default), candle, cuda[:N], wgpu.
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

/// Network settings a config file may override; `sigma_data` defaults to the data's std.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetOverrides {
    pub hidden: Option<usize>,
    pub depth: Option<usize>,
    pub embedding_size: Option<usize>,
    pub embedding_max_period: Option<f64>,
    pub sigma_data: Option<f64>,
    /// UNet only: probability of training a row with the null label (classifier-free
    /// guidance; needs labelled data).
    pub label_dropout: Option<f64>,
}

/// The `--config` file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    pub teacher: TeacherConfig,
    pub net: NetOverrides,
    /// A full UNet configuration (with `--net unet`), replacing the preset.
    pub unet: Option<UNetConfig>,
}

/// The teacher network: its configuration is enough to rebuild it. Serialised untagged, so
/// MLP runs keep their `config.json` format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TeacherNet {
    /// EDM MLP for vectors.
    Mlp(MlpDenoiserConfig),
    /// EDM UNet for images.
    Unet(UNetConfig),
}

impl TeacherNet {
    /// The MLP configuration, for commands that work on 2-D mixtures only (the demo).
    pub fn as_mlp(&self) -> Result<&MlpDenoiserConfig, CliError> {
        match self {
            TeacherNet::Mlp(c) => Ok(c),
            TeacherNet::Unet(_) => Err(CliError::Usage(
                "this teacher is a UNet (images); this command needs an MLP teacher of vector \
                 data: train it with `--net mlp`"
                    .into(),
            )),
        }
    }

    /// Validates the configuration.
    pub fn check(&self) -> Result<(), String> {
        match self {
            TeacherNet::Mlp(c) => c.check().map_err(|e| e.to_string()),
            TeacherNet::Unet(c) => c.check().map_err(|e| e.to_string()),
        }
    }

    /// EDM's σ_data of the net (the data's scale).
    pub fn sigma_data(&self) -> f64 {
        match self {
            TeacherNet::Mlp(c) => c.sigma_data,
            TeacherNet::Unet(c) => c.sigma_data,
        }
    }

    /// Flattened data dimension.
    pub fn dim(&self) -> usize {
        match self {
            TeacherNet::Mlp(c) => c.dim,
            TeacherNet::Unet(c) => c.dim(),
        }
    }

    /// Width of the latent of a one-step generator with this network: `dim`, plus an MLP
    /// generator's extra latent inputs.
    pub fn latent_dim(&self) -> usize {
        match self {
            TeacherNet::Mlp(c) => c.dim + c.latent_extra,
            TeacherNet::Unet(c) => c.dim(),
        }
    }

    /// Number of classes of a conditional net.
    pub fn n_classes(&self) -> Option<usize> {
        match self {
            TeacherNet::Mlp(c) => c.n_classes,
            TeacherNet::Unet(c) => c.n_classes,
        }
    }

    /// What sampling feeds this net: `n` standard-normal latents from `seed` and, for a
    /// class-conditional net, class-balanced labels `i mod classes` (one class per grid
    /// column with 10 classes). Shared by the teacher's sampler and one-step students.
    ///
    /// # Shapes
    /// - returns latents `[n, latent_dim]` and labels `[n]`
    pub fn sampling_inputs<B: Backend>(
        &self,
        n: usize,
        seed: u64,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Option<Tensor<B, 1, Int>>) {
        let dim = self.latent_dim();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let z = standard_normal(n * dim, &mut rng);
        let latents = Tensor::from_data(TensorData::new(z, [n, dim]).convert::<f32>(), device);
        let labels = self.n_classes().map(|k| {
            let l: Vec<i64> = (0..n).map(|i| (i % k) as i64).collect();
            Tensor::from_data(TensorData::new(l, [n]), device)
        });
        (latents, labels)
    }

    /// `(channels, height, width)` of an image net.
    pub fn image_shape(&self) -> Option<(usize, usize, usize)> {
        match self {
            TeacherNet::Mlp(_) => None,
            TeacherNet::Unet(c) => Some((c.channels, c.resolution, c.resolution)),
        }
    }
}

/// A UNet preset by name (`fdistill::nets::UNetConfig::PRESETS`).
fn unet_preset(name: &str) -> Result<UNetConfig, CliError> {
    UNetConfig::preset(name).map_err(|e| CliError::Usage(format!("--net unet:{name}: {e}")))
}

/// Where the training data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// The `--data` value, with file paths made absolute
    /// ([`absolute_source`](fdistill::data::absolute_source)).
    pub source: String,
    /// Data dimension.
    pub dim: usize,
}

/// `RUN/config.json` of a teacher run: everything needed to rebuild the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherRunConfig {
    /// Always `"teacher"`.
    pub kind: String,
    pub data: DataInfo,
    pub net: TeacherNet,
    pub teacher: TeacherConfig,
    /// Set by `teacher import`: where the weights came from (absent for trained teachers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<super::teacher_import::ImportInfo>,
}

/// Resolves and validates a new run's configuration; no tensor exists yet.
pub fn resolve(args: &TrainArgs) -> Result<(TeacherRunConfig, TrainingData), CliError> {
    let data_spec = args
        .data
        .as_deref()
        .ok_or_else(|| CliError::Usage("--data is required (without --resume)".into()))?;
    let data = DataSource::parse(data_spec)
        .resolve()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let user: UserConfig = match &args.config {
        None => UserConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                CliError::Usage(format!("cannot read --config `{}`: {e}", p.display()))
            })?;
            serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("bad --config `{}`: {e}", p.display())))?
        }
    };
    let mut teacher = user.teacher;
    if let Some(steps) = args.steps {
        teacher.steps = steps;
    }
    let teacher = teacher
        .check()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let net = match args
        .net
        .split_once(':')
        .map_or((args.net.as_str(), None), |(a, b)| (a, Some(b)))
    {
        ("mlp", None) => {
            if let TrainingData::Images(_) = data {
                return Err(CliError::Usage(format!(
                    "--data `{data_spec}` is images; use --net unet"
                )));
            }
            let sigma_data = match user.net.sigma_data {
                Some(s) => s,
                None => {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(teacher.seed);
                    // σ_data is a scale; 3 significant digits keep config.json readable.
                    let s = data.std(&mut rng);
                    format!("{s:.2e}").parse().expect("formatted float parses")
                }
            };
            if user.net.label_dropout.is_some() {
                return Err(CliError::Usage(
                    "net.label_dropout is a UNet setting (class-conditional images); drop it for \
                     --net mlp"
                        .into(),
                ));
            }
            let net = MlpDenoiserConfig::new(data.dim(), sigma_data);
            let o = &user.net;
            let mut net = MlpDenoiserConfig {
                hidden: o.hidden.unwrap_or(VECTOR_TEACHER_HIDDEN),
                depth: o.depth.unwrap_or(VECTOR_TEACHER_DEPTH),
                ..net
            };
            net.embedding_size = o.embedding_size.unwrap_or(net.embedding_size);
            net.embedding_max_period = o.embedding_max_period.unwrap_or(net.embedding_max_period);
            TeacherNet::Mlp(net)
        }
        ("unet", preset) => {
            let TrainingData::Images(set) = &data else {
                return Err(CliError::Usage(format!(
                    "--net unet needs images (fashion-mnist, idx:…, png:…); `{data_spec}` is not"
                )));
            };
            if set.height != set.width {
                return Err(CliError::Usage(format!(
                    "the UNet needs square images; `{data_spec}` is {}×{}",
                    set.height, set.width
                )));
            }
            let mut net = match (&user.unet, preset) {
                (Some(u), _) => u.clone(),
                (None, p) => unet_preset(p.unwrap_or("fashion-mnist-small"))?,
            };
            // Resolution, channels and classes always follow the data.
            net.resolution = set.height;
            net.channels = set.channels;
            net.n_classes = data.n_classes();
            if let Some(s) = user.net.sigma_data {
                net.sigma_data = s;
            }
            if let Some(p) = user.net.label_dropout {
                net.label_dropout = p;
            }
            TeacherNet::Unet(net)
        }
        _ => {
            return Err(CliError::Usage(format!(
                "--net `{}`: use `mlp` or `unet[:PRESET]` (presets: {})",
                args.net,
                UNetConfig::PRESETS.join(", ")
            )));
        }
    };
    net.check().map_err(CliError::Usage)?;
    let config = TeacherRunConfig {
        kind: "teacher".into(),
        data: DataInfo {
            source: fdistill::data::absolute_source(data_spec),
            dim: data.dim(),
        },
        net,
        teacher,
        imported: None,
    };
    Ok((config, data))
}

/// Runs `fdistill teacher`.
pub fn run(args: TeacherArgs) -> Result<(), CliError> {
    match args.action {
        TeacherAction::Train(a) => train(a),
        TeacherAction::Import(a) => super::teacher_import::import(a),
    }
}

/// What `--resume` expects, for the guard's message.
/// Hidden width of the MLP teacher for vector data when the config does not set `net.hidden`.
///
/// Wider and deeper than the library's [`MlpDenoiserConfig::new`] (128 × 3) because the
/// one-step student is a copy of the teacher's network: at 128 × 3 the students of
/// `ring8-unbalanced` dropped its 2 % mode in 3 of 3 seeds and those of `grid25` covered 19–20
/// of 25 modes; at 256 × 4 they covered 8/8 and 25/25 (docs/results.md, "2-D fidelity").
pub const VECTOR_TEACHER_HIDDEN: usize = 256;
/// Hidden layers of the MLP teacher for vector data (see [`VECTOR_TEACHER_HIDDEN`]).
pub const VECTOR_TEACHER_DEPTH: usize = 4;

const RESUME_HINT: &str =
    "--resume continues a run: pass the --out of an earlier `fdistill teacher train`";

/// The configuration of the run in `args.out` for `--resume`: its own `config.json` with
/// `--steps` applied, and its data (from the recorded source).
fn resolve_resume(args: &TrainArgs) -> Result<(TeacherRunConfig, TrainingData), CliError> {
    let (run, mut config) = read_run_config(&args.out)?;
    if let Some(info) = &config.imported {
        return Err(CliError::Usage(format!(
            "`{}` holds a teacher imported from `{}`, which has no training state to continue; \
             use it as it is (sample, distill), or train a teacher of your own",
            args.out.display(),
            info.weights
        )));
    }
    if latest_checkpoint(&run).is_err() && run.checkpoint_file("state.json").is_file() {
        return Err(CliError::Usage(format!(
            "`{}` was trained by an earlier fdistill whose checkpoints hold no optimiser state, \
             so it cannot continue exactly; train it again with --overwrite (distillation can \
             still use it as it is)",
            args.out.display()
        )));
    }
    if let Some(steps) = args.steps {
        config.teacher.steps = steps;
    }
    config.teacher = config
        .teacher
        .clone()
        .check()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let data = load_recorded_data(&config.data.source, &run.config_path())?;
    Ok((config, data))
}

/// Loads the data a run recorded; an error names the `config.json` the source came from.
pub fn load_recorded_data(source: &str, config_path: &Path) -> Result<TrainingData, CliError> {
    if source == super::teacher_import::NO_DATA {
        return Err(CliError::Usage(format!(
            "the teacher was imported without --data (`data.source` is `{source}` in `{}`), and \
             this needs the data's samples (distillation's real images); import it again with \
             `--data SOURCE --overwrite`, or set `data.source` in that file",
            config_path.display()
        )));
    }
    DataSource::parse(source).resolve().map_err(|e| {
        CliError::Usage(format!(
            "{e}\n(the data source `{source}` is recorded in `{}`; restore the data there, or \
             edit `data.source` in that file to point at it)",
            config_path.display()
        ))
    })
}

/// `fdistill teacher train` as a function (the demo calls it).
pub fn train(args: TrainArgs) -> Result<(), CliError> {
    let plan = args.parallel.plan(&args.device)?;
    let writes = args.parallel.writes();
    let device: DeviceSpec = args
        .parallel
        .single_device(&args.device)
        .parse()
        .map_err(|e: fdistill::backends::DeviceError| CliError::Usage(e.to_string()))?;
    if !device.is_compiled() {
        return Err(CliError::Usage(
            dispatch(&device, Noop)
                .expect_err("not compiled")
                .to_string(),
        ));
    }
    // --resume reads the run it continues: lock it first (creating nothing).
    let mut lock = run_guard::TrainingLock::start(
        &args.out,
        (args.resume, args.overwrite, args.dry_run),
        writes,
        RESUME_HINT,
    )?;
    let (config, data) = if args.resume {
        resolve_resume(&args)?
    } else {
        resolve(&args)?
    };
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("config serialises")
        );
        return Ok(());
    }
    // Nodes other than 0 write nothing: node 0 writes the run.
    let run = lock.run_dir()?;
    if writes && (!args.resume || args.steps.is_some()) {
        // A resumed run's config.json records its new length.
        run.write_config(&config).map_err(anyhow::Error::from)?;
    }
    tracing::info!(
        "teacher on `{}` (dimension {}), {} steps, seed {}",
        config.data.source,
        config.data.dim,
        config.teacher.steps,
        config.teacher.seed
    );
    let task = TrainTask {
        config,
        data,
        run,
        resume: args.resume,
    };
    let result = match plan {
        Some(plan) => dispatch_devices(&plan.devices.clone(), TrainOnDevices { task, plan }),
        None => dispatch(&device, task),
    }
    .map_err(|e| CliError::Usage(e.to_string()))?;
    drop(lock);
    result
}

/// `teacher train --devices`: one replica per device ([`run_training_on`]).
struct TrainOnDevices {
    task: TrainTask,
    plan: ParallelPlan,
}

impl DevicesTask for TrainOnDevices {
    type Output = Result<(), CliError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<(), CliError> {
        match &self.task.config.net {
            TeacherNet::Mlp(c) => {
                train_on::<B, _>(&self.task, &self.plan, &devices, |d| c.init::<B>(d))
            }
            TeacherNet::Unet(c) => {
                train_on::<B, _>(&self.task, &self.plan, &devices, |d| c.init::<B>(d))
            }
        }
    }
}

/// One replica per device; every replica starts from rank 0's weights, which are those a
/// one-device run with the same seed starts from.
fn train_on<B, M>(
    task: &TrainTask,
    plan: &ParallelPlan,
    devices: &[B::Device],
    init: impl Fn(&B::Device) -> M + Sync,
) -> Result<(), CliError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + EdmDenoiser<B>,
{
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let t = &task.config.teacher;
    let classes = task.config.net.n_classes();
    let make = |_rank: usize, device: &B::Device| {
        // The backend RNG is one per process: seed and build one replica at a time.
        let _one = INIT.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, t.seed);
        let teacher = EdmTeacher::new(init(device), &task.data, t, device)
            .map_err(|e| DistillError::Config(e.to_string()))?;
        // burn draws the weights lazily, at their first use: draw them now, under the lock,
        // by a forward pass (what a one-device run's first step does, in the same order).
        let dim = teacher.model().dim();
        let labels = classes.map(|_| Tensor::<B, 1, Int>::zeros([1], device));
        let _ = teacher.model().denoise(
            Tensor::zeros([1, dim], device),
            Tensor::ones([1], device),
            labels,
        );
        Ok::<_, DistillError>(teacher)
    };
    let mut observer = TeacherObserver::new(&task.run);
    let start = Instant::now();
    let armed = interrupt::arm();
    let result = run_training_on::<B, _, _, _>(
        devices,
        &plan.cluster,
        &t.driver(),
        &task.run,
        task.resume,
        make,
        |r| observer.observe(r),
    );
    drop(armed);
    observer.finish(result, start, &task.run, devices.len() * plan.cluster.nodes)
}

struct Noop;
impl BackendTask for Noop {
    type Output = ();
    fn run<B: AutodiffBackend>(self, _device: B::Device) {}
}

struct TrainTask {
    config: TeacherRunConfig,
    data: TrainingData,
    run: RunDir,
    resume: bool,
}

impl BackendTask for TrainTask {
    type Output = Result<(), CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), CliError> {
        // The initial weights come from the backend's RNG: seed it, so the same seed gives
        // the same teacher.
        B::seed(&device, self.config.teacher.seed);
        match &self.config.net {
            TeacherNet::Mlp(c) => train_net(c.init::<B>(&device), &self, &device),
            TeacherNet::Unet(c) => train_net(c.init::<B>(&device), &self, &device),
        }
    }
}

/// The checkpointed training loop with progress, a clean stop on Ctrl-C and the summary.
fn train_net<B, M>(model: M, task: &TrainTask, device: &B::Device) -> Result<(), CliError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + EdmDenoiser<B>,
{
    let t = &task.config.teacher;
    let mut teacher = EdmTeacher::new(model, &task.data, t, device)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mut observer = TeacherObserver::new(&task.run);
    let start = Instant::now();
    let armed = interrupt::arm();
    let result = run_training(&mut teacher, &t.driver(), &task.run, task.resume, |r| {
        observer.observe(r)
    });
    drop(armed);
    observer.finish(result, start, &task.run, 1)
}

/// Progress, debug lines and Ctrl-C of a teacher run (rank 0's, in a data-parallel run).
struct TeacherObserver<'a> {
    run: &'a RunDir,
    loss_avg: f64,
    progress: Option<Progress>,
}

impl<'a> TeacherObserver<'a> {
    fn new(run: &'a RunDir) -> Self {
        TeacherObserver {
            run,
            loss_avg: f64::NAN,
            progress: None,
        }
    }

    fn observe(&mut self, r: &StepReport<'_, TeacherMetrics>) -> Result<(), BoxError> {
        let m = r.metrics;
        self.loss_avg = if self.loss_avg.is_nan() {
            m.loss
        } else {
            0.98 * self.loss_avg + 0.02 * m.loss
        };
        let loss_avg = self.loss_avg;
        let p = self.progress.get_or_insert_with(|| {
            Progress::new("teacher", r.step as u64 - 1, r.total_steps as u64, false)
        });
        p.update(r.step as u64, || format!("loss {loss_avg:.4}"));
        if r.checkpointed {
            tracing::info!(
                "checkpoint at step {} in {}",
                r.step,
                self.run.checkpoint_dir().display()
            );
        }
        tracing::debug!(
            "step {}: loss {:.6}, ema β {:.6}",
            r.step,
            m.loss,
            m.ema_beta
        );
        if interrupt::requested() {
            return Err(Box::new(StopRequested));
        }
        Ok(())
    }

    /// The progress bar's last line and the summary (or the loop's error as a CLI error).
    fn finish(
        mut self,
        result: Result<DriverSummary, DistillError>,
        start: Instant,
        run: &RunDir,
        workers: usize,
    ) -> Result<(), CliError> {
        let loss_avg = self.loss_avg;
        if let Some(p) = &mut self.progress {
            p.finish(|| format!("loss {loss_avg:.4}"));
        }
        let resume_cmd = format!(
            "fdistill teacher train --out {} --resume",
            shell_word(run.root())
        );
        let summary = result.map_err(|e| loop_error(e, &resume_cmd))?;
        let elapsed = start.elapsed().as_secs_f64();
        let steps = summary.last_step + 1 - summary.first_step;
        let on = if workers > 1 {
            format!(" on {workers} devices")
        } else {
            String::new()
        };
        eprintln!(
            "trained {steps} steps ({} → {}){on} in {elapsed:.1} s ({:.0} steps/s), final loss \
             (running mean) {loss_avg:.4}; checkpoint in {}",
            summary.first_step,
            summary.last_step,
            steps as f64 / elapsed,
            run.checkpoint_dir().display()
        );
        Ok(())
    }
}

/// Reads and checks a teacher run's `config.json`. A run of another kind is named as such
/// (a student run given as `--teacher` is a likely slip).
pub fn read_run_config(dir: &Path) -> Result<(RunDir, TeacherRunConfig), CliError> {
    let run = RunDir::open(dir).map_err(|e| {
        CliError::Usage(format!(
            "{e} (a teacher run is the --out directory of `fdistill teacher train`)"
        ))
    })?;
    let value: serde_json::Value = run
        .read_config()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let kind = value["kind"].as_str().unwrap_or("unknown");
    if kind != "teacher" {
        let made_by = match kind {
            "student" => "a student run (`fdistill distill --out`)",
            "classifier" => "a classifier run (`fdistill classifier train --out`)",
            _ => "not a teacher run",
        };
        return Err(CliError::Usage(format!(
            "`{}` is {made_by}; this needs a teacher run: the --out directory of `fdistill \
             teacher train`",
            dir.display()
        )));
    }
    let config: TeacherRunConfig = serde_json::from_value(value).map_err(|e| {
        CliError::Usage(format!(
            "`{}` is corrupt or from an incompatible version: {e}",
            run.config_path().display()
        ))
    })?;
    config
        .net
        .check()
        .map_err(|e| CliError::Usage(format!("{}: {e}", run.config_path().display())))?;
    if config.net.dim() != config.data.dim {
        return Err(CliError::Usage(format!(
            "{}: the net has dimension {} but the data {}",
            run.config_path().display(),
            config.net.dim(),
            config.data.dim
        )));
    }
    if config.net.latent_dim() != config.net.dim() {
        return Err(CliError::Usage(format!(
            "{}: a teacher has no extra latent inputs; remove net.latent_extra (it is set by \
             `fdistill distill` for a student's generator, through generator_latent_extra)",
            run.config_path().display()
        )));
    }
    Ok((run, config))
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::TeacherNet;
    use burn::backend::Flex;
    use fdistill::nets::MlpDenoiserConfig;

    fn conditional(classes: Option<usize>) -> TeacherNet {
        let mut c = MlpDenoiserConfig::new(3, 0.5);
        c.n_classes = classes;
        TeacherNet::Mlp(c)
    }

    fn host(t: burn::tensor::Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// `sample` (teachers and students) feeds class-balanced labels: with `n` samples and `k`
    /// classes every class gets ⌊n/k⌋ or ⌈n/k⌉ of them, for every `n` (not only multiples
    /// of `k`), and the latents are `[n, dim]`, fixed by the seed.
    #[test]
    fn sampling_labels_are_class_balanced_and_latents_follow_the_seed() {
        let device = Default::default();
        for k in [2usize, 3, 7, 10] {
            let net = conditional(Some(k));
            for n in [1usize, 5, 10, 19, 20, 21, 99, 100, 101] {
                let (z, labels) = net.sampling_inputs::<Flex>(n, 0, &device);
                assert_eq!(z.dims(), [n, 3]);
                let labels: Vec<i64> = labels
                    .expect("a conditional net gets labels")
                    .into_data()
                    .convert::<i64>()
                    .to_vec()
                    .unwrap();
                assert_eq!(labels.len(), n);
                let mut counts = vec![0usize; k];
                for &l in &labels {
                    assert!((0..k as i64).contains(&l), "label {l} of {k} classes");
                    counts[l as usize] += 1;
                }
                for (class, &c) in counts.iter().enumerate() {
                    assert!(
                        c == n / k || c == n.div_ceil(k),
                        "n = {n}, k = {k}: class {class} has {c} samples ({counts:?})"
                    );
                }
            }
        }
        let (_, none) = conditional(None).sampling_inputs::<Flex>(4, 0, &device);
        assert!(none.is_none(), "an unconditional net gets no labels");
        // The latents: the same seed gives the same values, another seed others, and they
        // look standard normal (mean ≈ 0, variance ≈ 1 over 3000 values).
        let net = conditional(Some(10));
        let a = host(net.sampling_inputs::<Flex>(1000, 3, &device).0);
        let b = host(net.sampling_inputs::<Flex>(1000, 3, &device).0);
        let c = host(net.sampling_inputs::<Flex>(1000, 4, &device).0);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean}, {var}");
    }
}
