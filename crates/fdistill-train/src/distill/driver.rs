//! The distillation driver: one loop infrastructure for every method (f-distill, DMD2,
//! Diff-Instruct, VarDiU).
//!
//! A method implements [`DistillMethod`]: one iteration (`step`), saving and loading of all
//! its networks, optimiser states and running state, and one-step generation. The driver
//! [`run_distillation`] owns everything else, like argmin's `Executor`:
//!
//! - the step counter and the RNG (ChaCha8, saved with every checkpoint);
//! - the non-finite check: a step whose [`StepMetrics::non_finite`] names a quantity stops
//!   training *before* anything is written, so the last checkpoint stays intact;
//! - `metrics.jsonl` (one line every `log_every` steps; truncated to the checkpoint on resume);
//! - checkpoints every `checkpoint_every` steps and at the end, written to `checkpoint.tmp/`
//!   and renamed over `checkpoint/`, so a crash mid-write never leaves a torn checkpoint;
//! - exact resume: with the same config, an interrupted-and-resumed run writes the same
//!   metrics as an uninterrupted one.
//!
//! Progress bars and console output live in the caller, through the observer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::DistillError;
use crate::checkpoint::{CheckpointError, RunDir, read_json, write_atomic, write_json};

/// A boxed error an observer may return to stop training.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every method's per-step metrics must offer the driver.
pub trait StepMetrics: Serialize + Clone + std::fmt::Debug {
    /// The first non-finite quantity of this step, as `(name, value)` (e.g.
    /// `("generator loss", NaN)`), or `None` when every loss and gradient norm is finite.
    fn non_finite(&self) -> Option<(String, f64)>;
}

/// A distillation method: the objective, its networks and their optimisers. The loop around
/// it is [`run_distillation`].
pub trait DistillMethod<B: AutodiffBackend> {
    /// What one iteration reports (losses, weight statistics, gradient norms, phase times).
    type Metrics: StepMetrics;

    /// Short name saved with the checkpoint (`"f-distill"`, `"vardiu"`); resuming a
    /// checkpoint of another method is refused.
    fn name(&self) -> &'static str;

    /// One iteration (1-based `step`), drawing all randomness from `rng`. A non-finite loss
    /// or gradient is reported through the metrics, not scrubbed; after any error the
    /// method's in-memory state is unspecified (reload it from the checkpoint).
    fn step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<Self::Metrics, DistillError>;

    /// Writes every network, optimiser state and running state into `dir` (which exists).
    fn save(&self, dir: &Path) -> Result<(), CheckpointError>;

    /// Restores what [`save`](Self::save) wrote.
    fn load(&mut self, dir: &Path) -> Result<(), CheckpointError>;

    /// One-step samples of the (EMA) generator from standard-normal latents, with one class
    /// label per latent for a class-conditional generator (`None` otherwise).
    ///
    /// # Shapes
    /// - `latents`: `[batch, dim]`, `labels`: `[batch]`; returns `[batch, dim]`
    fn generate(
        &self,
        latents: Tensor<B::InnerBackend, 2>,
        labels: Option<Tensor<B::InnerBackend, 1, Int>>,
    ) -> Tensor<B::InnerBackend, 2>;
}

/// Loop settings shared by every method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverConfig {
    /// Iterations (each one generator or critic step for f-distill).
    pub steps: usize,
    /// Iterations between checkpoints (and always at the last one).
    pub checkpoint_every: usize,
    /// Iterations between `metrics.jsonl` lines (and always the last one).
    pub log_every: usize,
    /// Seed of all training randomness (latents, σ, noise, data batches, initialisation).
    pub seed: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            steps: 3000,
            checkpoint_every: 1000,
            log_every: 10,
            seed: 0,
        }
    }
}

impl DriverConfig {
    /// Validates every field; call before any tensor exists.
    pub fn check(self) -> Result<Self, DistillError> {
        if self.steps == 0 {
            return Err(DistillError::Config(
                "driver.steps must be ≥ 1 (the number of iterations)".into(),
            ));
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return Err(DistillError::Config(format!(
                "driver.checkpoint_every ({}) and driver.log_every ({}) must be ≥ 1",
                self.checkpoint_every, self.log_every
            )));
        }
        Ok(self)
    }
}

/// `checkpoint/driver.json`: the loop's own state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverState {
    /// [`DistillMethod::name`] of the method that wrote the checkpoint.
    pub method: String,
    /// Iterations done.
    pub step: usize,
    /// The RNG after `step` iterations.
    pub rng: ChaCha8Rng,
}

/// What the observer sees after every step.
#[derive(Debug)]
pub struct StepReport<'a, M> {
    /// The 1-based step just done.
    pub step: usize,
    /// The last step of this run.
    pub total_steps: usize,
    /// Its metrics.
    pub metrics: &'a M,
    /// Whether a checkpoint was written after this step.
    pub checkpointed: bool,
}

/// Outcome of [`run_distillation`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverSummary {
    /// The first step this call ran (1, or the checkpoint's step + 1 on resume).
    pub first_step: usize,
    /// The last step done.
    pub last_step: usize,
    /// Wall time of the loop.
    pub elapsed_s: f64,
}

/// One `metrics.jsonl` line: the step and the method's metrics, flattened.
#[derive(Serialize)]
struct MetricsLine<'a, M: Serialize> {
    step: usize,
    #[serde(flatten)]
    metrics: &'a M,
}

const DRIVER_FILE: &str = "driver.json";

/// The directory holding the newest complete checkpoint of `run`: `checkpoint/`, or
/// `checkpoint.old/` if a crash interrupted the final rename.
pub fn latest_checkpoint(run: &RunDir) -> Result<PathBuf, CheckpointError> {
    let current = run.checkpoint_dir();
    if current.join(DRIVER_FILE).is_file() {
        return Ok(current);
    }
    let old = run.root().join("checkpoint.old");
    if old.join(DRIVER_FILE).is_file() {
        return Ok(old);
    }
    Err(CheckpointError::Missing {
        path: current.join(DRIVER_FILE),
        hint: "the run has no distillation checkpoint yet; start it without --resume".into(),
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a complete checkpoint into `checkpoint.tmp/`, then swaps it in with renames.
fn write_checkpoint<B: AutodiffBackend, D: DistillMethod<B>>(
    run: &RunDir,
    method: &D,
    state: &DriverState,
) -> Result<(), CheckpointError> {
    let root = run.root();
    let tmp = root.join("checkpoint.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    method.save(&tmp)?;
    write_json(&tmp.join(DRIVER_FILE), state)?;
    let current = run.checkpoint_dir();
    let old = root.join("checkpoint.old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    if current.exists() {
        std::fs::rename(&current, &old).map_err(io(&current))?;
    }
    std::fs::rename(&tmp, &current).map_err(io(&tmp))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Keeps the `metrics.jsonl` lines of steps ≤ `step` (a resumed run rewrites the rest).
fn truncate_metrics(run: &RunDir, step: usize) -> Result<(), CheckpointError> {
    let path = run.metrics_path();
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let mut kept = String::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| CheckpointError::Corrupt {
                path: path.clone(),
                reason: format!("bad metrics line `{line}`: {e}"),
            })?;
        if v["step"].as_u64().is_some_and(|s| s as usize <= step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    write_atomic(&path, kept.as_bytes())
}

/// Runs `method` for `config.steps` iterations in `run`, or continues the run from its last
/// checkpoint when `resume` is set. `observe` runs after every step (progress bars, console);
/// an error from it stops training.
///
/// Errors: [`DistillError::NonFinite`] names the step and the quantity; nothing of that step
/// is written, so the previous checkpoint is intact and loadable.
pub fn run_distillation<B, D, F>(
    method: &mut D,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
    mut observe: F,
) -> Result<DriverSummary, DistillError>
where
    B: AutodiffBackend,
    D: DistillMethod<B>,
    F: FnMut(&StepReport<'_, D::Metrics>) -> Result<(), BoxError>,
{
    let config = config.clone().check()?;
    let mut state = if resume {
        let dir = latest_checkpoint(run)?;
        let state: DriverState = read_json(&dir.join(DRIVER_FILE))?;
        if state.method != method.name() {
            return Err(DistillError::Resume(format!(
                "the checkpoint in `{}` was written by `{}`, not `{}`",
                dir.display(),
                state.method,
                method.name()
            )));
        }
        if state.step >= config.steps {
            return Err(DistillError::Resume(format!(
                "the checkpoint is at step {} and the run asks for {} steps; pass a larger --steps",
                state.step, config.steps
            )));
        }
        method.load(&dir)?;
        truncate_metrics(run, state.step)?;
        state
    } else {
        if latest_checkpoint(run).is_ok() {
            return Err(DistillError::Resume(format!(
                "`{}` already holds a distillation checkpoint; continue it with --resume or choose a new --out",
                run.root().display()
            )));
        }
        DriverState {
            method: method.name().to_string(),
            step: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
        }
    };
    let first_step = state.step + 1;
    let mut last_checkpoint = if resume {
        format!("step {}", state.step)
    } else {
        "none yet".to_string()
    };
    let start = Instant::now();
    for step in first_step..=config.steps {
        // 1. one iteration of the method
        let metrics = method.step(step, &mut state.rng)?;
        state.step = step;

        // 2. a non-finite loss or gradient stops training before anything is written
        if let Some((quantity, value)) = metrics.non_finite() {
            return Err(DistillError::NonFinite {
                step,
                quantity,
                value,
                last_checkpoint,
            });
        }

        // 3. metrics line and checkpoint at their cadences
        let last = step == config.steps;
        if step % config.log_every == 0 || last {
            run.append_metrics(&MetricsLine {
                step,
                metrics: &metrics,
            })?;
        }
        let checkpointed = step % config.checkpoint_every == 0 || last;
        if checkpointed {
            write_checkpoint(run, method, &state)?;
            last_checkpoint = format!("step {step}");
        }

        // 4. the caller's progress and logging
        observe(&StepReport {
            step,
            total_steps: config.steps,
            metrics: &metrics,
            checkpointed,
        })
        .map_err(DistillError::Observer)?;
    }
    Ok(DriverSummary {
        first_step,
        last_step: state.step,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}

/// Sets every float parameter of `module` to take gradients.
///
/// Parameters keep a `require_grad` flag; weights that went through an inner-backend module
/// (an EMA copy, `AutodiffModule::from_inner`) come back without it, and an optimiser then
/// silently leaves them as they are. Methods call this on each network they train.
pub fn trainable<B: AutodiffBackend, M: AutodiffModule<B>>(module: M) -> M {
    struct RequireGrad;
    impl<B: Backend> ModuleMapper<B> for RequireGrad {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.set_require_grad(true), mapper)
        }
    }
    module.map(&mut RequireGrad)
}

/// The AdamW optimiser of one network.
pub type AdamWOptimizer<B, M> = OptimizerAdaptor<AdamW, M, B>;

/// AdamW with the betas, ε and weight decay of SPEC §4 (β = (0.9, 0.999), ε = 1e−8).
pub fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(weight_decay: f64) -> AdamWOptimizer<B, M> {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay as f32)
        .init::<B, M>()
}

/// The parameter ids of a module in visiting order.
struct Ids(Vec<ParamId>);

impl<B: Backend> ModuleVisitor<B> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.id);
    }
}

fn param_ids<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamId> {
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

/// Saves a trained network and its AdamW state as `dir/module_file` and `dir/optim_file`
/// (what every [`DistillMethod::save`] does once per network).
pub fn save_trained<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    optim: &AdamWOptimizer<B, M>,
    dir: &Path,
    (module_file, optim_file): (&str, &str),
) -> Result<(), CheckpointError> {
    crate::checkpoint::save_module::<B, _>(module, &dir.join(module_file))?;
    save_adamw(optim, module, &dir.join(optim_file))
}

/// Loads what [`save_trained`] wrote: the network's weights (names and shapes checked), then
/// its AdamW state mapped onto the loaded parameters.
pub fn load_trained<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: M,
    optim: AdamWOptimizer<B, M>,
    dir: &Path,
    (module_file, optim_file): (&str, &str),
    device: &B::Device,
) -> Result<(M, AdamWOptimizer<B, M>), CheckpointError> {
    let module = crate::checkpoint::load_module::<B, _>(module, &dir.join(module_file))?;
    let optim = load_adamw(optim, &module, &dir.join(optim_file), device)?;
    Ok((module, optim))
}

/// Saves an AdamW state (moments and step counts) for `module` to `path`, atomically.
///
/// Burn keys optimiser state by runtime [`ParamId`]s, which a freshly built network does not
/// share; the file therefore keys each entry by the parameter's position in visiting order,
/// and [`load_adamw`] maps positions back onto the ids of the module it restores into.
pub fn save_adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    optim: &AdamWOptimizer<B, M>,
    module: &M,
    path: &Path,
) -> Result<(), CheckpointError> {
    let ids = param_ids::<B, M>(module);
    let mut record = optim.to_record();
    let mut by_position: <AdamWOptimizer<B, M> as Optimizer<M, B>>::Record = Default::default();
    for (i, id) in ids.iter().enumerate() {
        if let Some(r) = record.remove(id) {
            by_position.insert(ParamId::from(i as u64), r);
        }
    }
    let bytes = Recorder::<B>::record(
        &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
        by_position,
        (),
    )
    .map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode the optimiser state: {e}"),
    })?;
    write_atomic(path, &bytes)
}

/// Restores an AdamW state written by [`save_adamw`] onto `module`'s parameters.
pub fn load_adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    optim: AdamWOptimizer<B, M>,
    module: &M,
    path: &Path,
    device: &B::Device,
) -> Result<AdamWOptimizer<B, M>, CheckpointError> {
    if !path.is_file() {
        return Err(CheckpointError::Missing {
            path: path.to_path_buf(),
            hint: "the checkpoint lacks an optimiser state; was it written by this method?".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    let mut by_position: <AdamWOptimizer<B, M> as Optimizer<M, B>>::Record = Recorder::<B>::load(
        &NamedMpkBytesRecorder::<FullPrecisionSettings>::new(),
        bytes,
        device,
    )
    .map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot decode the optimiser state: {e}"),
    })?;
    let ids = param_ids::<B, M>(module);
    let mut record: <AdamWOptimizer<B, M> as Optimizer<M, B>>::Record = Default::default();
    for (i, id) in ids.iter().enumerate() {
        if let Some(r) = by_position.remove(&ParamId::from(i as u64)) {
            record.insert(*id, r);
        }
    }
    if let Some(k) = by_position.keys().next() {
        return Err(CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "optimiser state for parameter #{} which the network (with {} parameters) lacks",
                k.val(),
                ids.len()
            ),
        });
    }
    Ok(optim.load_record(record))
}

/// Sums `‖g‖²` over a module's parameters.
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    /// `Σ g²` of each parameter, on the device: read back once, not once per parameter.
    sums: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sums.push(g.powi_scalar(2).sum());
        }
    }
}

/// The global gradient norm `‖g‖ = √(Σ_params Σ g²)` of a module's gradients.
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> {
        grads,
        sums: Vec::new(),
    };
    module.visit(&mut v);
    if v.sums.is_empty() {
        return 0.0;
    }
    let total: f64 =
        burn::tensor::ElementConversion::elem(Tensor::cat(v.sums, 0).sum().into_scalar());
    total.sqrt()
}

/// Rescales every gradient by `c = min(1, max_norm / ‖g‖)` (global-norm clipping, as
/// `torch.nn.utils.clip_grad_norm_`: one factor for all parameters, unlike burn's per-tensor
/// clipping). Returns the clipped gradients and the norm before clipping. A non-finite norm
/// is returned unchanged for the caller to report.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = grad_norm::<B, M>(module, &grads);
    if !norm.is_finite() || norm <= max_norm {
        return (grads, norm);
    }
    let scale = max_norm / (norm + 1e-6);
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        scale: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.scale));
            }
        }
    }
    module.visit(&mut Scale {
        grads: &mut grads,
        scale,
    });
    (grads, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teacher::ema_update;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    type B = Autodiff<Flex>;

    /// How many float parameters of `module` take gradients, and how many there are.
    fn requiring_grad<M: Module<B>>(module: &M) -> (usize, usize) {
        struct Count(usize, usize);
        impl ModuleVisitor<B> for Count {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0 += usize::from(param.val().is_require_grad());
                self.1 += 1;
            }
        }
        let mut c = Count(0, 0);
        module.visit(&mut c);
        (c.0, c.1)
    }

    /// Weights that went through an EMA copy come back frozen; `trainable` thaws them (the
    /// bug this guards against: a generator built from EMA weights that never trained).
    #[test]
    fn trainable_restores_gradients_lost_through_an_ema_copy() {
        let device = Default::default();
        let net: Linear<B> = LinearConfig::new(3, 2).init(&device);
        let ema = ema_update(net.valid(), &net.valid(), 0.5);
        let thawed_copy = Linear::<B>::from_inner(ema);
        assert_eq!(
            requiring_grad(&thawed_copy),
            (0, 2),
            "the EMA copy is frozen"
        );
        assert_eq!(requiring_grad(&trainable(thawed_copy)), (2, 2));
    }
}
