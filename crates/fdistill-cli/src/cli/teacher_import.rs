//! `fdistill teacher import --weights FILE (--arch NAME | --config FILE) --out DIR
//! [--prefix auto|model.|ema.model.|none|…] [--data SOURCE] [--overwrite]`: a pretrained EDM
//! network (EDM's `EDMPrecond` state dict, e.g. FastGen's converted CIFAR-10 / ImageNet-64
//! checkpoints) as a teacher run directory that `sample`, `eval` and `distill` accept.
//!
//! ```text
//! DIR/config.json                 kind "teacher", the net's configuration, `imported` (source)
//! DIR/checkpoint/ema.safetensors  the weights (what sampling and distillation load)
//! DIR/checkpoint/model.safetensors  the same weights (the "trained" copy of a teacher run)
//! DIR/checkpoint/state.json       step 0
//! ```
//!
//! Every tensor is checked before anything is written: all missing, unexpected and
//! mis-shaped tensors are listed in one error (exit code 2).

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use fdistill::backends::{BackendTask, DeviceSpec, dispatch};
use fdistill::data::{DataSource, TrainingData};
use fdistill::nets::{EdmKwargs, KeyPrefix, StateDict, UNetConfig, WeightsError};
use fdistill::train::checkpoint::{RunDir, save_module, write_json};
use fdistill::train::guard::WriteMode;
use fdistill::train::teacher::{
    TEACHER_EMA_FILE, TEACHER_MODEL_FILE, TEACHER_STATE_FILE, TeacherCheckpointState, TeacherConfig,
};
use serde::{Deserialize, Serialize};

use super::CliError;
use super::run_guard;
use super::teacher::{DataInfo, TeacherNet, TeacherRunConfig};

/// The `--arch` names: EDM's published configurations.
pub const IMPORT_ARCHS: [&str; 3] = [
    "edm-ddpmpp-cifar10",
    "edm-ncsnpp-cifar10",
    "edm-adm-imagenet64",
];

/// `data.source` of an import without `--data`: sampling works, distillation asks for data.
pub const NO_DATA: &str = "none";

/// Arguments of `fdistill teacher import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The weights: EDMPrecond's state dict as .safetensors or a PyTorch .pt/.pth file
    /// (torch.save of a state dict; EDM's .pkl network pickles: convert them first with
    /// tools/edm_pickle_to_safetensors.py).
    #[arg(long)]
    pub weights: PathBuf,
    /// EDM's published architecture: edm-ddpmpp-cifar10, edm-ncsnpp-cifar10 or
    /// edm-adm-imagenet64. The class-label and augmentation widths follow the weights (so
    /// EDM's unconditional checkpoints import with the same names).
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    pub arch: Option<String>,
    /// JSON file with EDMPrecond's keyword arguments instead of --arch: img_resolution,
    /// img_channels, label_dim, model_type (SongUNet|DhariwalUNet) and the UNet's settings
    /// (model_channels, channel_mult, …; EDM's defaults for those left out).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory to create. A directory that holds a run is refused unless --overwrite.
    #[arg(long)]
    pub out: PathBuf,
    /// Key prefix of the network's tensors: `auto` (the one in front of `map_layer0.weight`),
    /// `model.` (EDMPrecond.state_dict()), `ema.model.`, `none` (a bare UNet), or any other.
    #[arg(long, default_value = "auto")]
    pub prefix: String,
    /// The data the teacher models (as `teacher train --data`): distillation draws its real
    /// samples from it; checked against the net's image size and classes. Without it the
    /// run samples, and `distill` asks for data.
    #[arg(long)]
    pub data: Option<String>,
    /// Delete the run in --out (config.json, metrics, checkpoints) and import afresh.
    #[arg(long)]
    pub overwrite: bool,
}

/// Where an imported teacher came from, in its `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportInfo {
    /// The weights file (absolute).
    pub weights: String,
    /// The key prefix used.
    pub prefix: String,
    /// `--arch`, or the `--config` file (absolute).
    pub architecture: String,
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// The network configuration: `--arch` with the label and augmentation widths of the weights,
/// or `--config`'s EDM keyword arguments.
fn resolve_net(args: &ImportArgs, sd: &StateDict, prefix: &str) -> Result<UNetConfig, CliError> {
    match (&args.arch, &args.config) {
        (Some(arch), _) => {
            if !IMPORT_ARCHS.contains(&arch.as_str()) {
                return Err(usage(format!(
                    "--arch `{arch}`: use one of {} (or --config FILE with EDMPrecond's keyword \
                     arguments)",
                    IMPORT_ARCHS.join(", ")
                )));
            }
            let mut cfg = UNetConfig::preset(arch).map_err(usage)?;
            // [out, K] and [out, A]: EDM's unconditional checkpoints have no map_label.
            let width = |name: &str| {
                sd.get(&format!("{prefix}{name}"))
                    .and_then(|t| t.shape.get(1).copied())
            };
            cfg.n_classes = width("map_label.weight");
            cfg.augment_dim = width("map_augment.weight").unwrap_or(0);
            Ok(cfg)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read --config `{}`: {e}", path.display())))?;
            let kwargs: EdmKwargs = serde_json::from_str(&text).map_err(|e| {
                usage(format!(
                    "bad --config `{}`: {e} (EDMPrecond's keyword arguments: img_resolution, \
                     img_channels, label_dim, model_type, model_channels, channel_mult, …)",
                    path.display()
                ))
            })?;
            UNetConfig::from_edm_kwargs(&kwargs)
                .map_err(|e| usage(format!("--config `{}`: {e}", path.display())))
        }
        (None, None) => Err(usage("give --arch NAME or --config FILE")),
    }
}

/// Checks `--data` against the net: square images of its side and channels, and its classes.
fn check_data(spec: &str, net: &UNetConfig) -> Result<(), CliError> {
    let data = DataSource::parse(spec).resolve().map_err(usage)?;
    let TrainingData::Images(set) = &data else {
        return Err(usage(format!(
            "--data `{spec}` is not an image set; an EDM teacher models images (png:DIR, \
             idx:IMAGES,LABELS, fashion-mnist, each optionally @SIDE)"
        )));
    };
    if (set.channels, set.height, set.width) != (net.channels, net.resolution, net.resolution) {
        return Err(usage(format!(
            "--data `{spec}` holds {}×{}×{} images (channels × height × width) but the network \
             takes {}×{}×{}; give images of that size (`@SIDE` resizes)",
            set.channels, set.height, set.width, net.channels, net.resolution, net.resolution
        )));
    }
    if let Some(k) = net.n_classes
        && data.n_classes() != Some(k)
    {
        return Err(usage(format!(
            "the network is class-conditional with {k} classes but --data `{spec}` has {}; give \
             the labelled data it was trained on",
            match data.n_classes() {
                Some(n) => format!("{n} classes"),
                None => "no labels".into(),
            }
        )));
    }
    Ok(())
}

/// Runs `fdistill teacher import`.
pub fn import(args: ImportArgs) -> Result<(), CliError> {
    let sd = StateDict::read(&args.weights).map_err(usage)?;
    let prefix: KeyPrefix = args.prefix.parse().expect("infallible");
    let prefix = sd.resolve_prefix(&prefix).map_err(usage)?;
    let net = resolve_net(&args, &sd, &prefix)?;
    net.check().map_err(usage)?;
    let source = match &args.data {
        Some(spec) => {
            check_data(spec, &net)?;
            fdistill::data::absolute_source(spec)
        }
        None => NO_DATA.to_string(),
    };
    // Every tensor is checked before the run directory is touched (nothing is allocated).
    let sd = dispatch(
        &DeviceSpec::default(),
        ImportTask {
            net: net.clone(),
            sd,
            prefix: prefix.clone(),
            run: None,
        },
    )
    .map_err(usage)?
    .map_err(import_error)?;

    let mode = WriteMode::from_flags(false, args.overwrite);
    let guard = run_guard::acquire(
        &args.out,
        mode,
        &[],
        "--resume does not apply to an import; use --overwrite",
    )?;
    let run = guard.run().clone();
    let config = TeacherRunConfig {
        kind: "teacher".into(),
        data: DataInfo {
            source,
            dim: net.dim(),
        },
        net: TeacherNet::Unet(net.clone()),
        teacher: TeacherConfig::default(),
        imported: Some(ImportInfo {
            weights: absolute(&args.weights),
            prefix: prefix.clone(),
            architecture: match (&args.arch, &args.config) {
                (Some(a), _) => a.clone(),
                (None, Some(c)) => absolute(c),
                (None, None) => unreachable!("resolve_net needs one"),
            },
        }),
    };
    run.write_config(&config).map_err(anyhow::Error::from)?;
    let task = ImportTask {
        net: net.clone(),
        sd,
        prefix,
        run: Some(run.clone()),
    };
    dispatch(&DeviceSpec::default(), task)
        .map_err(usage)?
        .map_err(import_error)?;
    drop(guard);
    eprintln!(
        "imported {} ({} classes, {}×{}×{}) from {} into {}; sample it with `fdistill sample \
         --checkpoint {}`",
        match &net.arch {
            fdistill::nets::EdmArch::SongUnet(_) => "SongUNet",
            fdistill::nets::EdmArch::DhariwalUnet(_) => "DhariwalUNet",
        },
        net.n_classes.map_or("no".into(), |k| k.to_string()),
        net.channels,
        net.resolution,
        net.resolution,
        args.weights.display(),
        args.out.display(),
        run_guard::shell_word(&args.out)
    );
    Ok(())
}

fn import_error(e: ImportError) -> CliError {
    match e {
        ImportError::Weights(e) => usage(e),
        ImportError::Write(e) => CliError::Runtime(e),
    }
}

enum ImportError {
    Weights(WeightsError),
    Write(anyhow::Error),
}

/// Loads the weights into the network (checking every tensor) and, with a run directory,
/// writes them as a teacher checkpoint.
struct ImportTask {
    net: UNetConfig,
    sd: StateDict,
    prefix: String,
    run: Option<RunDir>,
}

impl BackendTask for ImportTask {
    /// The state dict back after a check (no run directory); after a write, an empty one.
    type Output = Result<StateDict, ImportError>;

    fn run<A: AutodiffBackend>(self, device: A::Device) -> Self::Output {
        let prefix = KeyPrefix::Exact(self.prefix.clone());
        let net = self.net.init::<A::InnerBackend>(&device);
        let Some(run) = self.run else {
            net.check_state_dict(&self.sd, &prefix)
                .map_err(ImportError::Weights)?;
            return Ok(self.sd);
        };
        let net = net
            .load_state_dict(&self.sd, &prefix)
            .map_err(ImportError::Weights)?;
        write_checkpoint::<A::InnerBackend>(&net, &run).map_err(ImportError::Write)?;
        Ok(StateDict::default())
    }
}

fn write_checkpoint<B: Backend>(
    net: &fdistill::nets::UNet<B>,
    run: &RunDir,
) -> Result<(), anyhow::Error> {
    let dir = run.checkpoint_dir();
    std::fs::create_dir_all(&dir)?;
    save_module::<B, _>(net, &dir.join(TEACHER_EMA_FILE))?;
    save_module::<B, _>(net, &dir.join(TEACHER_MODEL_FILE))?;
    write_json(
        &dir.join(TEACHER_STATE_FILE),
        &TeacherCheckpointState {
            step: 0,
            ema_beta: 0.0,
            loss: 0.0,
        },
    )?;
    Ok(())
}
