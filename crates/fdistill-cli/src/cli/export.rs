//! `fdistill export --checkpoint RUN --format edm-safetensors|pytorch-state-dict --out FILE
//! [--kwargs FILE]`: the EMA generator of a student run, or a teacher's weights, under EDM's
//! names (`model.…`, buffers included), so that PyTorch's
//! `EDMPrecond(**kwargs).load_state_dict(state_dict)` takes it unchanged.
//!
//! A student is a one-step generator `x0 = D_G(σ_init z; σ_init, y)`: the message names its
//! σ_init, which PyTorch code needs to sample from it.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use fdistill::backends::{BackendTask, DeviceSpec, dispatch};
use fdistill::nets::{StateDict, UNetConfig, WeightsError};
use fdistill::train::checkpoint::{CheckpointError, load_module};
use fdistill::train::teacher::{TEACHER_EMA_FILE, teacher_checkpoint};

use super::CliError;
use super::teacher::{TeacherNet, read_run_config};

/// The file formats of `fdistill export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// safetensors (`safetensors.torch.load_file`).
    EdmSafetensors,
    /// A PyTorch state dict as `torch.save` writes it (`torch.load(..., weights_only=True)`).
    PytorchStateDict,
}

/// Arguments of `fdistill export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run directory: a student (`fdistill distill --out`; its EMA generator is exported) or
    /// a teacher (`teacher train` / `teacher import`; its EMA weights).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// edm-safetensors (.safetensors) or pytorch-state-dict (.pt, torch.save's zip format).
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The file to write (keys `model.…`, as EDMPrecond.state_dict()).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write EDMPrecond's keyword arguments as JSON (every architecture setting), to
    /// build the same network in PyTorch or to import the file again with `teacher import
    /// --config`.
    #[arg(long)]
    pub kwargs: Option<PathBuf>,
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// The network, its weights file (fdistill's checkpoint format) and, for a student, σ_init.
fn locate(run: &Path) -> Result<(UNetConfig, PathBuf, Option<f64>), CliError> {
    let kind = super::distill::run_kind(run)?;
    let (net, weights, sigma_init) = match kind.as_str() {
        "teacher" => {
            let (dir, config) = read_run_config(run)?;
            (
                config.net,
                teacher_checkpoint(&dir).join(TEACHER_EMA_FILE),
                None,
            )
        }
        "student" if super::distill_vardiu::is_vardiu_run(run) => {
            let (net, weights, sigma_init, _) = super::distill_vardiu::sampling_info(run)?;
            (net, weights, Some(sigma_init))
        }
        "student" => {
            let (dir, config) = super::distill::read_student_config(run)?;
            (
                config.net,
                super::distill::student_weights(&dir)?,
                Some(config.distill.sigma_init),
            )
        }
        other => {
            return Err(usage(format!(
                "`{}` is a `{other}` run; export takes a student (`fdistill distill --out`) or a \
                 teacher run",
                run.display()
            )));
        }
    };
    match net {
        TeacherNet::Unet(c) => Ok((c, weights, sigma_init)),
        TeacherNet::Mlp(_) => Err(usage(format!(
            "`{}` holds an MLP denoiser of vectors; export writes EDM's image networks \
             (SongUNet / DhariwalUNet) only",
            run.display()
        ))),
    }
}

/// Runs `fdistill export`.
pub fn run(args: ExportArgs) -> Result<(), CliError> {
    let (net, weights, sigma_init) = locate(&args.checkpoint)?;
    let sd = dispatch(
        &DeviceSpec::default(),
        ToStateDict {
            net: net.clone(),
            weights,
        },
    )
    .map_err(usage)?
    .map_err(usage)?;
    let written = match args.format {
        ExportFormat::EdmSafetensors => sd.write_safetensors(&args.out),
        ExportFormat::PytorchStateDict => sd.write_pytorch(&args.out),
    };
    written.map_err(|e| match e {
        WeightsError::Io { .. } => usage(e),
        e => CliError::Runtime(e.into()),
    })?;
    if let Some(k) = &args.kwargs {
        let text = serde_json::to_string_pretty(&net.to_edm_kwargs()).expect("serialises");
        std::fs::write(k, text + "\n")
            .map_err(|e| usage(format!("cannot write --kwargs `{}`: {e}", k.display())))?;
    }
    let what = match sigma_init {
        Some(s) => format!(
            "the student's EMA generator (one step: x0 = D(σ_init · z; σ_init, y) with σ_init = \
             {s})"
        ),
        None => "the teacher".into(),
    };
    eprintln!(
        "wrote {} tensors of {what} to {} (keys `model.…`; PyTorch: \
         EDMPrecond(**kwargs).load_state_dict(...))",
        sd.len(),
        args.out.display()
    );
    Ok(())
}

/// Loads fdistill's checkpoint and returns the weights under EDM's names.
struct ToStateDict {
    net: UNetConfig,
    weights: PathBuf,
}

impl BackendTask for ToStateDict {
    type Output = Result<StateDict, CheckpointError>;

    fn run<A: AutodiffBackend>(self, device: A::Device) -> Self::Output {
        let net = load_module::<A::InnerBackend, _>(self.net.init(&device), &self.weights)?;
        let mut sd = net.to_state_dict();
        sd.source = self.weights.display().to_string();
        Ok(sd)
    }
}
