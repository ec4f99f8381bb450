//! `fdistill teacher train --data NAME|FILE|IMAGES --out DIR [--net mlp|unet[:PRESET]]
//! [--steps N] [--config FILE] [--dry-run]`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use clap::{Args, Subcommand};
use fdistill::backends::{BackendTask, DeviceSpec, dispatch};
use fdistill::core::EdmDenoiser;
use fdistill::core::random::standard_normal;
use fdistill::data::{DataSource, TrainingData};
use fdistill::nets::{MlpDenoiserConfig, UNetConfig};
use fdistill::train::checkpoint::{RunDir, save_module, write_json};
use fdistill::train::teacher::{
    TeacherCheckpointState, TeacherConfig, TeacherState, train_teacher,
};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::CliError;

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
}

/// Arguments of `fdistill teacher train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Built-in target (bimodal-1d, grid25, mog40, ring8-unbalanced, two-moons), a .csv/.npy
    /// file, or images: fashion-mnist[:DIR], idx:IMAGES,LABELS, png:DIR, each optionally
    /// @SIDE (e.g. fashion-mnist@16). Labelled images train a class-conditional net.
    #[arg(long)]
    pub data: String,
    /// Network: `mlp` (vectors) or `unet[:PRESET]` (images: EDM's SongUNet/DhariwalUNet;
    /// presets fashion-mnist, fashion-mnist-small (default), fashion-mnist-16, tiny,
    /// edm-ddpmpp-cifar10, edm-ncsnpp-cifar10, edm-adm-imagenet64). Resolution, channels and
    /// classes follow the data; a config file's `unet` object replaces the preset.
    #[arg(long, default_value = "mlp")]
    pub net: String,
    /// Run directory to create (config.json, metrics.jsonl, checkpoint/).
    #[arg(long)]
    pub out: PathBuf,
    /// Training steps (overrides the config file).
    #[arg(long)]
    pub steps: Option<usize>,
    /// JSON file with `{"teacher": {...}, "net": {...}}` overrides.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the resolved configuration and exit without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Device: flex (CPU, default), candle, cuda[:N], wgpu.
    #[arg(long, default_value = "flex")]
    pub device: String,
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

    /// Flattened data dimension.
    pub fn dim(&self) -> usize {
        match self {
            TeacherNet::Mlp(c) => c.dim,
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
    /// - returns latents `[n, dim]` and labels `[n]`
    pub fn sampling_inputs<B: Backend>(
        &self,
        n: usize,
        seed: u64,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Option<Tensor<B, 1, Int>>) {
        let dim = self.dim();
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
    /// The `--data` value.
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
}

/// Resolves and validates everything; no tensor exists yet.
pub fn resolve(args: &TrainArgs) -> Result<(TeacherRunConfig, TrainingData), CliError> {
    let data = DataSource::parse(&args.data)
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
                    "--data `{}` is images; use --net unet",
                    args.data
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
            let mut net = MlpDenoiserConfig::new(data.dim(), sigma_data);
            let o = &user.net;
            net.hidden = o.hidden.unwrap_or(net.hidden);
            net.depth = o.depth.unwrap_or(net.depth);
            net.embedding_size = o.embedding_size.unwrap_or(net.embedding_size);
            net.embedding_max_period = o.embedding_max_period.unwrap_or(net.embedding_max_period);
            TeacherNet::Mlp(net)
        }
        ("unet", preset) => {
            let TrainingData::Images(set) = &data else {
                return Err(CliError::Usage(format!(
                    "--net unet needs images (fashion-mnist, idx:…, png:…); `{}` is not",
                    args.data
                )));
            };
            if set.height != set.width {
                return Err(CliError::Usage(format!(
                    "the UNet needs square images; `{}` is {}×{}",
                    args.data, set.height, set.width
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
            source: args.data.clone(),
            dim: data.dim(),
        },
        net,
        teacher,
    };
    Ok((config, data))
}

/// Runs `fdistill teacher`.
pub fn run(args: TeacherArgs) -> Result<(), CliError> {
    match args.action {
        TeacherAction::Train(a) => train(a),
    }
}

/// `fdistill teacher train` as a function (the demo calls it).
pub fn train(args: TrainArgs) -> Result<(), CliError> {
    let device: DeviceSpec = args
        .device
        .parse()
        .map_err(|e: fdistill::backends::DeviceError| CliError::Usage(e.to_string()))?;
    if !device.is_compiled() {
        return Err(CliError::Usage(
            dispatch(&device, Noop)
                .expect_err("not compiled")
                .to_string(),
        ));
    }
    let (config, data) = resolve(&args)?;
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&config).expect("config serialises")
        );
        return Ok(());
    }
    let run = RunDir::create(&args.out).map_err(|e| CliError::Usage(e.to_string()))?;
    run.write_config(&config).map_err(anyhow::Error::from)?;
    let task = TrainTask { config, data, run };
    dispatch(&device, task).map_err(|e| CliError::Usage(e.to_string()))?
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
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Serialize)]
struct MetricsLine {
    step: usize,
    loss: f64,
    ema_beta: f64,
    elapsed_s: f64,
    steps_per_s: f64,
}

/// Writes `checkpoint/{model,ema}.safetensors` and `checkpoint/state.json`.
fn save_checkpoint<B: AutodiffBackend, M: AutodiffModule<B>>(
    run: &RunDir,
    state: &TeacherState<B, M>,
    ema_beta: f64,
    loss: f64,
) -> anyhow::Result<()> {
    save_module::<B, _>(&state.model, &run.checkpoint_file("model.safetensors"))?;
    save_module::<B::InnerBackend, _>(&state.ema, &run.checkpoint_file("ema.safetensors"))?;
    let st = TeacherCheckpointState {
        step: state.step,
        rng: state.rng.clone(),
        ema_beta,
        loss,
    };
    write_json(&run.checkpoint_file("state.json"), &st)?;
    Ok(())
}

impl BackendTask for TrainTask {
    type Output = Result<(), CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), CliError> {
        let TrainTask { config, data, run } = self;
        match &config.net {
            TeacherNet::Mlp(c) => train_net(c.init::<B>(&device), &config, &data, &run, &device),
            TeacherNet::Unet(c) => train_net(c.init::<B>(&device), &config, &data, &run, &device),
        }
    }
}

/// The training loop of [`train_teacher`] with a progress bar, metrics and checkpoints.
fn train_net<B, M>(
    model: M,
    config: &TeacherRunConfig,
    data: &TrainingData,
    run: &RunDir,
    device: &B::Device,
) -> Result<(), CliError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + EdmDenoiser<B>,
{
    let t = &config.teacher;
    let bar = ProgressBar::new(t.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} loss {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut loss_avg = f64::NAN;
    let result = train_teacher(model, data, t, device, |m, state| {
        loss_avg = if loss_avg.is_nan() {
            m.loss
        } else {
            0.98 * loss_avg + 0.02 * m.loss
        };
        bar.set_position(m.step as u64);
        if m.step % 10 == 0 || m.step == t.steps {
            bar.set_message(format!("{loss_avg:.4}"));
        }
        if m.step % t.log_every == 0 || m.step == t.steps {
            let elapsed = start.elapsed().as_secs_f64();
            run.append_metrics(&MetricsLine {
                step: m.step,
                loss: m.loss,
                ema_beta: m.ema_beta,
                elapsed_s: elapsed,
                steps_per_s: m.step as f64 / elapsed.max(1e-9),
            })?;
        }
        if m.step % t.checkpoint_every == 0 || m.step == t.steps {
            save_checkpoint(run, state, m.ema_beta, m.loss)?;
        }
        Ok(())
    });
    bar.finish_and_clear();
    result.map_err(|e| CliError::Runtime(e.into()))?;
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "trained {} steps in {elapsed:.1} s ({:.0} steps/s), final loss (running mean) {loss_avg:.4}; \
         checkpoint in {}",
        t.steps,
        t.steps as f64 / elapsed,
        run.checkpoint_dir().display()
    );
    Ok(())
}

/// Reads and checks a teacher run's `config.json`.
pub fn read_run_config(dir: &Path) -> Result<(RunDir, TeacherRunConfig), CliError> {
    let run = RunDir::open(dir).map_err(|e| CliError::Usage(e.to_string()))?;
    let config: TeacherRunConfig = run
        .read_config()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if config.kind != "teacher" {
        return Err(CliError::Usage(format!(
            "`{}` is a `{}` run; expected a teacher run",
            dir.display(),
            config.kind
        )));
    }
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
    Ok((run, config))
}
