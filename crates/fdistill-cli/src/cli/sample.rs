//! `fdistill sample --checkpoint DIR --n N [--nfe K] [--sampler heun|euler]
//! --out FILE.csv|FILE.npy|- [--grid FILE.png] [--plot FILE.png]`.
//!
//! Class-conditional checkpoints are sampled class-balanced: sample `i` gets label
//! `i mod n_classes`.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::{Args, ValueEnum};
use fdistill::backends::{BackendTask, DeviceSpec, dispatch};
use fdistill::core::Denoiser;
use fdistill::core::sampler::{SamplerKind, sample};
use fdistill::core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, sampling_sigmas};
use fdistill::core::targets::gmm_target;
use fdistill::data::images::save_image_grid;
use fdistill::data::{DataSource, TrainingData, save_file, write_csv};
use fdistill::train::checkpoint::{CheckpointError, load_module, read_json};
use fdistill::train::teacher::{
    TEACHER_EMA_FILE, TEACHER_STATE_FILE, TeacherCheckpointState, teacher_checkpoint,
};
use fdistill_plot::{Scatter, scatter_over_data_png};
use rand::SeedableRng;

use super::CliError;
use super::teacher::{TeacherNet, read_run_config};

/// The ODE solver of `--sampler`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SamplerArg {
    Heun,
    Euler,
}

/// Arguments of `fdistill sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Run directory of a trained teacher (`fdistill teacher train --out`) or of a student
    /// (`fdistill distill --out`; one step, --nfe and the noise-grid options do not apply).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Number of samples.
    #[arg(long)]
    pub n: usize,
    /// Denoiser evaluations: Heun uses 2N − 1 for N noise levels (odd, ≥ 3), Euler N (≥ 1;
    /// 1 is the teacher's one-step prediction D(σ_max z)).
    #[arg(long, default_value_t = 35)]
    pub nfe: usize,
    /// ODE solver.
    #[arg(long, value_enum, default_value = "heun")]
    pub sampler: SamplerArg,
    /// Smallest nonzero noise level of the Karras grid.
    #[arg(long, default_value_t = SIGMA_MIN, allow_hyphen_values = true)]
    pub sigma_min: f64,
    /// Largest noise level of the Karras grid.
    #[arg(long, default_value_t = SIGMA_MAX, allow_hyphen_values = true)]
    pub sigma_max: f64,
    /// Karras grid exponent ρ.
    #[arg(long, default_value_t = RHO, allow_hyphen_values = true)]
    pub rho: f64,
    /// Seed of the latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file: .csv or .npy, or `-` for CSV on stdout.
    #[arg(long)]
    pub out: PathBuf,
    /// Image checkpoints: also write the first samples as a PNG grid (10 per row, up to 100).
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// 2-D data: also write a scatter PNG of the samples (red) over the target density (built-in
    /// Gaussian mixtures) or over the training data (grey; files and two-moons), titled with the
    /// model (teacher sampler or student divergence).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Device: flex (CPU, default), candle, cuda[:N], wgpu.
    #[arg(long, default_value = "flex")]
    pub device: String,
}

/// Checks `--plot` before any sampling: a `.png` name.
fn check_plot_arg(plot: &Option<PathBuf>) -> Result<(), CliError> {
    match plot {
        Some(p) if p.extension().and_then(|e| e.to_str()) != Some("png") => Err(CliError::Usage(
            format!("--plot `{}`: use a .png file name", p.display()),
        )),
        _ => Ok(()),
    }
}

/// `--plot` needs 2-D samples: checked from the checkpoint's dimension before anything is
/// sampled or written.
fn check_plot_dim(plot: &Option<PathBuf>, dim: usize) -> Result<(), CliError> {
    if plot.is_some() && dim != 2 {
        return Err(CliError::Usage(format!(
            "--plot needs 2-D samples; this checkpoint's data has dimension {dim} (drop --plot, \
             or plot the --out file yourself)"
        )));
    }
    Ok(())
}

/// Largest number of training points drawn behind a scatter.
const MAX_BACKGROUND: usize = 5000;

/// Writes the `--plot` scatter of 2-D samples titled `model`: over the density of `source`
/// when it is a built-in Gaussian-mixture target, else over (up to 5000 of) its data in grey.
/// The view covers the samples and the data.
fn write_scatter(path: &Path, values: &[f64], source: &str, model: &str) -> Result<(), CliError> {
    let points: Vec<[f64; 2]> = values.chunks(2).map(|p| [p[0], p[1]]).collect();
    let mixture = gmm_target(source).ok();
    let background: Vec<[f64; 2]> = if mixture.is_some() {
        Vec::new()
    } else {
        match DataSource::parse(source).resolve() {
            Ok(TrainingData::Samples(d)) if d.dim == 2 => {
                let step = d.len().div_ceil(MAX_BACKGROUND).max(1);
                (0..d.len())
                    .step_by(step)
                    .map(|i| [d.row(i)[0], d.row(i)[1]])
                    .collect()
            }
            Ok(data) if data.dim() == 2 && !matches!(data, TrainingData::Images(_)) => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                data.sample(2000, &mut rng)
                    .chunks(2)
                    .map(|p| [p[0], p[1]])
                    .collect()
            }
            _ => Vec::new(),
        }
    };
    let mut extent = points
        .iter()
        .chain(&background)
        .filter(|p| p[0].is_finite() && p[1].is_finite())
        .fold(1.0f64, |m, p| m.max(p[0].abs()).max(p[1].abs()));
    if let Some(g) = &mixture {
        for (m, s) in g.means().iter().zip(g.stds()) {
            extent = extent
                .max(m[0].abs() + 3.0 * s[0])
                .max(m[1].abs() + 3.0 * s[1]);
        }
    }
    let extent = 1.05 * extent;
    let log_density = mixture
        .as_ref()
        .map(|g| move |x: f64, y: f64| g.log_density(&[x, y], 0.0));
    let behind = if mixture.is_some() {
        "density"
    } else if background.is_empty() {
        "data not available"
    } else {
        "grey: data"
    };
    let title = format!("{model}: {} samples, {source} ({behind})", points.len());
    scatter_over_data_png(
        path,
        &Scatter {
            title: &title,
            points: &points,
            log_density: log_density.as_ref().map(|f| f as &dyn Fn(f64, f64) -> f64),
            x_range: (-extent, extent),
            y_range: (-extent, extent),
        },
        &background,
    )
    .map_err(CliError::Runtime)?;
    eprintln!(
        "wrote a scatter plot to {} titled \"{title}\"",
        path.display()
    );
    Ok(())
}

/// Whether `--out` is `-` (CSV on stdout).
fn to_stdout(out: &Path) -> bool {
    out.as_os_str() == "-"
}

/// Runs `fdistill sample`.
pub fn run(args: SampleArgs) -> Result<(), CliError> {
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    let device: DeviceSpec = args.device.parse().map_err(|e| usage(&e))?;
    if args.n == 0 {
        return Err(CliError::Usage("--n must be ≥ 1".into()));
    }
    match args.out.extension().and_then(|e| e.to_str()) {
        Some("csv" | "npy") => {}
        _ if to_stdout(&args.out) => {}
        _ => {
            return Err(CliError::Usage(format!(
                "--out `{}`: use a .csv or .npy file name, or `-` for CSV on stdout",
                args.out.display()
            )));
        }
    }
    check_plot_arg(&args.plot)?;
    if let Some(g) = &args.grid
        && g.extension().and_then(|e| e.to_str()) != Some("png")
    {
        return Err(CliError::Usage(format!(
            "--grid `{}`: use a .png file name",
            g.display()
        )));
    }
    if super::distill::run_kind(&args.checkpoint)? == "student" {
        return sample_student(&args, device);
    }
    let kind = match args.sampler {
        SamplerArg::Heun => SamplerKind::Heun,
        SamplerArg::Euler => SamplerKind::Euler,
    };
    let steps = kind.steps_for_nfe(args.nfe).ok_or_else(|| {
        CliError::Usage(match kind {
            SamplerKind::Heun => format!(
                "--nfe {} is impossible for Heun (NFE = 2N − 1 with N ≥ 2 noise levels): use an odd number ≥ 3, e.g. 35",
                args.nfe
            ),
            SamplerKind::Euler => format!("--nfe {} is too small for Euler: use ≥ 1", args.nfe),
        })
    })?;
    let sigmas =
        sampling_sigmas(steps, args.sigma_min, args.sigma_max, args.rho).map_err(|e| usage(&e))?;
    let (run, config) = read_run_config(&args.checkpoint)?;
    let image_shape = config.net.image_shape();
    check_grid_arg(&args, image_shape)?;
    check_plot_dim(&args.plot, config.net.dim())?;
    let checkpoint = teacher_checkpoint(&run);
    let state: TeacherCheckpointState =
        read_json(&checkpoint.join(TEACHER_STATE_FILE)).map_err(|e| usage(&e))?;
    let task = SampleTask {
        net: config.net,
        weights: checkpoint.join(TEACHER_EMA_FILE),
        kind,
        sigmas,
        n: args.n,
        seed: args.seed,
    };
    let values = dispatch(&device, task)
        .map_err(|e| usage(&e))?
        .map_err(|e| usage(&e))?;
    write_outputs(
        &args,
        &values,
        &config.data.source,
        image_shape,
        &format!("teacher, {kind:?} {} NFE", args.nfe),
        "the checkpoint's weights are broken — retrain with a lower lr",
    )?;
    eprintln!(
        "wrote {} samples ({:?}, {} NFE, teacher step {}) to {}",
        args.n,
        kind,
        args.nfe,
        state.step,
        out_name(&args.out)
    );
    Ok(())
}

/// How `--out` reads in messages.
fn out_name(out: &Path) -> String {
    if to_stdout(out) {
        "stdout".into()
    } else {
        out.display().to_string()
    }
}

/// `--grid` needs an image checkpoint.
fn check_grid_arg(
    args: &SampleArgs,
    image_shape: Option<(usize, usize, usize)>,
) -> Result<(), CliError> {
    if args.grid.is_some() && image_shape.is_none() {
        return Err(CliError::Usage(
            "--grid needs an image checkpoint (a UNet teacher or student); this one is an MLP; \
             drop --grid or use --plot for 2-D data"
                .into(),
        ));
    }
    Ok(())
}

/// Refuses non-finite samples (naming the first and `broken`, what to do about it), then
/// writes `--out` (CSV on stdout for `-`), and `--plot` (titled `model`) / `--grid` when asked.
fn write_outputs(
    args: &SampleArgs,
    values: &[f64],
    source: &str,
    image_shape: Option<(usize, usize, usize)>,
    model: &str,
    broken: &str,
) -> Result<(), CliError> {
    let dim = values.len() / args.n;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(CliError::Runtime(anyhow::anyhow!(
            "sample {} is not finite ({}); {broken}",
            i / dim + 1,
            values[i]
        )));
    }
    if to_stdout(&args.out) {
        let mut stdout = std::io::stdout().lock();
        write_csv(&mut stdout, values, dim)
            .and_then(|()| stdout.flush())
            .map_err(|e| CliError::Runtime(anyhow::anyhow!("writing samples to stdout: {e}")))?;
    } else {
        save_file(&args.out, values, dim).map_err(|e| CliError::Runtime(e.into()))?;
    }
    if let Some(plot) = &args.plot {
        write_scatter(plot, values, source, model)?;
    }
    if let (Some(grid), Some(shape)) = (&args.grid, image_shape) {
        write_grid(grid, values, args.n, shape)?;
    }
    Ok(())
}

/// The first (up to 100) samples as a PNG grid, 10 per row: with class-balanced labels
/// `i mod 10`, one class per column.
fn write_grid(
    path: &Path,
    values: &[f64],
    n: usize,
    shape: (usize, usize, usize),
) -> Result<(), CliError> {
    let cols = 10.min(n);
    let rows = n.div_ceil(cols).min(10);
    let pixels: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    save_image_grid(path, &pixels, shape, rows, cols)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    eprintln!("wrote a {rows}×{cols} grid to {}", path.display());
    Ok(())
}

struct SampleTask {
    net: TeacherNet,
    weights: PathBuf,
    kind: SamplerKind,
    sigmas: Vec<f64>,
    n: usize,
    seed: u64,
}

impl BackendTask for SampleTask {
    type Output = Result<Vec<f64>, CheckpointError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        // Inference only: the EMA weights on the inner (non-autodiff) backend.
        match &self.net {
            TeacherNet::Mlp(c) => {
                let net = load_module::<B::InnerBackend, _>(c.init(&device), &self.weights)?;
                Ok(self.sample_with(&net, &device))
            }
            TeacherNet::Unet(c) => {
                let net = load_module::<B::InnerBackend, _>(c.init(&device), &self.weights)?;
                Ok(self.sample_with(&net, &device))
            }
        }
    }
}

impl SampleTask {
    /// Latents from the seed, class-balanced labels for conditional nets, then the ODE solver.
    fn sample_with<B: Backend, D: Denoiser<B>>(&self, net: &D, device: &B::Device) -> Vec<f64> {
        let (latents, labels) = self.net.sampling_inputs::<B>(self.n, self.seed, device); // [n, dim], [n]
        let x = sample(self.kind, net, latents, &self.sigmas, labels); // [n, dim]
        x.into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("converted to f64")
    }
}

/// One-step samples of a student run's EMA generator (f-distill or VarDiU).
fn sample_student(args: &SampleArgs, device: DeviceSpec) -> Result<(), CliError> {
    let (net, weights, sigma_init, source, what) =
        if super::distill_vardiu::is_vardiu_run(&args.checkpoint) {
            let (net, weights, sigma_init, source) =
                super::distill_vardiu::sampling_info(&args.checkpoint)?;
            (net, weights, sigma_init, source, "VarDiU".to_string())
        } else {
            let (run, config) = super::distill::read_student_config(&args.checkpoint)?;
            let weights = super::distill::student_weights(&run)?;
            (
                config.net,
                weights,
                config.distill.sigma_init,
                config.data.source,
                config.distill.divergence,
            )
        };
    let image_shape = net.image_shape();
    check_grid_arg(args, image_shape)?;
    check_plot_dim(&args.plot, net.dim())?;
    let task = StudentSampleTask {
        net,
        weights,
        sigma_init,
        n: args.n,
        seed: args.seed,
    };
    let values = dispatch(&device, task).map_err(|e| CliError::Usage(e.to_string()))??;
    write_outputs(
        args,
        &values,
        &source,
        image_shape,
        &format!("student ({what}), 1 NFE"),
        "the student's weights are broken — distil again with lower lr_* (or resume an earlier checkpoint)",
    )?;
    eprintln!(
        "wrote {} one-step samples (NFE 1, {what}) to {}",
        args.n,
        out_name(&args.out)
    );
    Ok(())
}

struct StudentSampleTask {
    net: TeacherNet,
    weights: PathBuf,
    sigma_init: f64,
    n: usize,
    seed: u64,
}

impl BackendTask for StudentSampleTask {
    type Output = Result<Vec<f64>, CliError>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output {
        super::distill::student_samples::<B::InnerBackend>(
            &self.net,
            &self.weights,
            self.sigma_init,
            self.n,
            self.seed,
            &device,
        )
        .map(|(v, _)| v)
    }
}
