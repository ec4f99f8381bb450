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
//! - `metrics.jsonl` (one line every `log_every` steps; truncated to the checkpoint on resume),
//!   free of wall-clock times, which go to `timing.jsonl` ([`StepMetrics::wall_times`]);
//! - checkpoints every `checkpoint_every` steps and at the end, written to `checkpoint.tmp/`
//!   and renamed over `checkpoint/`, so a crash mid-write never leaves a torn checkpoint;
//! - exact resume: with the same config, an interrupted-and-resumed run writes the same
//!   `metrics.jsonl` and checkpoint files, byte for byte, as an uninterrupted one;
//! - a clean stop: an observer returning [`StopRequested`] (the CLI's Ctrl-C) gets a
//!   checkpoint of the step just done and [`DistillError::Interrupted`].
//!
//! The loop itself is [`run_training`], generic over [`Trainable`]; the EDM teacher
//! ([`crate::teacher::EdmTeacher`]) runs in it too. Progress bars and console output live in
//! the caller, through the observer.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, Optimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::DistillError;
use crate::checkpoint::{
    CheckpointError, RunDir, TensorMap, parameter_shapes, read_json, read_tensors, write_atomic,
    write_json,
};

/// A boxed error an observer may return to stop training.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every method's per-step metrics must offer the driver.
///
/// **Wall-clock times** do not belong in the serialised metrics: `metrics.jsonl` must be the
/// same bytes for the same seed (and for an interrupted-and-resumed run). A method that
/// measures its phases skips them in `Serialize` and returns them from
/// [`wall_times`](Self::wall_times); the driver writes them to `timing.jsonl`.
pub trait StepMetrics: Serialize + Clone + std::fmt::Debug {
    /// The first non-finite quantity of this step, as `(name, value)` (e.g.
    /// `("generator loss", NaN)`), or `None` when every loss and gradient norm is finite.
    fn non_finite(&self) -> Option<(String, f64)>;

    /// Wall-clock times of this step (any JSON), for `timing.jsonl`; `None` by default.
    fn wall_times(&self) -> Option<serde_json::Value> {
        None
    }
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
    /// - `latents`: `[batch, latent_dim]` (the data's `dim` unless the generator has extra
    ///   latent inputs, [`DistillConfig::generator_latent_extra`](super::DistillConfig)),
    ///   `labels`: `[batch]`; returns `[batch, dim]`
    fn generate(
        &self,
        latents: Tensor<B::InnerBackend, 2>,
        labels: Option<Tensor<B::InnerBackend, 1, Int>>,
    ) -> Tensor<B::InnerBackend, 2>;
}

/// Anything the checkpointed loop [`run_training`] can drive: one step at a time, saved and
/// restored whole. Every [`DistillMethod`] is one (through [`run_distillation`]); so is the
/// EDM teacher ([`crate::teacher::EdmTeacher`]).
pub trait Trainable {
    /// What one step reports.
    type Metrics: StepMetrics;

    /// Short name saved with the checkpoint; resuming a checkpoint of another name is refused.
    fn name(&self) -> &'static str;

    /// One step (1-based), drawing all randomness from `rng`.
    fn step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<Self::Metrics, DistillError>;

    /// Writes the whole training state into `dir` (which exists).
    fn save(&self, dir: &Path) -> Result<(), CheckpointError>;

    /// Restores what [`save`](Self::save) wrote.
    fn load(&mut self, dir: &Path) -> Result<(), CheckpointError>;

    /// What to change when a step is non-finite (ends the [`DistillError::NonFinite`] message).
    fn non_finite_hint(&self) -> &'static str {
        "Lower the learning rates (lr_*) or lambda_gan"
    }
}

/// A [`DistillMethod`] seen as a [`Trainable`].
struct MethodLoop<'a, B, D>(&'a mut D, PhantomData<B>);

impl<B: AutodiffBackend, D: DistillMethod<B>> Trainable for MethodLoop<'_, B, D> {
    type Metrics = D::Metrics;
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<Self::Metrics, DistillError> {
        self.0.step(step, rng)
    }
    fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        self.0.save(dir)
    }
    fn load(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        self.0.load(dir)
    }
}

/// What an observer returns to stop training cleanly (on Ctrl-C, say): the driver writes a
/// checkpoint of the step just finished (unless it has just written one) and returns
/// [`DistillError::Interrupted`], from which `--resume` continues exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequested;

impl std::fmt::Display for StopRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop requested")
    }
}

impl std::error::Error for StopRequested {}

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

/// One `timing.jsonl` line: wall-clock seconds since this process started the loop, the
/// loop's rate so far, and the method's own times.
#[derive(Serialize)]
struct TimingLine {
    step: usize,
    elapsed_s: f64,
    steps_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<serde_json::Value>,
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
        hint: "the run stopped before its first checkpoint, so there is nothing to resume; \
               start it again with --overwrite"
            .into(),
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a complete checkpoint into `checkpoint.tmp/`, then swaps it in with renames. At
/// every instant `checkpoint/` or `checkpoint.old/` holds a complete checkpoint
/// ([`latest_checkpoint`] finds it), so an abrupt exit (a second Ctrl-C, a crash) mid-write
/// never costs the last good one.
fn write_checkpoint<T: Trainable + ?Sized>(
    run: &RunDir,
    method: &T,
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

/// Keeps the lines of a JSON-lines file (`metrics.jsonl`, `timing.jsonl`) of steps ≤ `step`
/// (a resumed run rewrites the rest). A last line without its newline (the process ended
/// mid-write) is dropped; any other unreadable line is an error.
fn truncate_jsonl(path: &Path, step: usize) -> Result<(), CheckpointError> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut kept = String::new();
    let complete = text.ends_with('\n');
    let n_lines = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if i + 1 == n_lines && !complete => break,
            Err(e) => {
                return Err(CheckpointError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("bad line {} `{line}`: {e}", i + 1),
                });
            }
        };
        if v["step"].as_u64().is_some_and(|s| s as usize <= step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    write_atomic(path, kept.as_bytes())
}

/// Runs `method` for `config.steps` iterations in `run`, or continues the run from its last
/// checkpoint when `resume` is set. `observe` runs after every step (progress bars, console);
/// an error from it stops training, and [`StopRequested`] stops it cleanly after a
/// checkpoint ([`DistillError::Interrupted`]).
///
/// Errors: [`DistillError::NonFinite`] names the step and the quantity; nothing of that step
/// is written, so the previous checkpoint is intact and loadable.
pub fn run_distillation<B, D, F>(
    method: &mut D,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
    observe: F,
) -> Result<DriverSummary, DistillError>
where
    B: AutodiffBackend,
    D: DistillMethod<B>,
    F: FnMut(&StepReport<'_, D::Metrics>) -> Result<(), BoxError>,
{
    run_training(
        &mut MethodLoop(method, PhantomData),
        config,
        run,
        resume,
        observe,
    )
}

/// The checkpointed loop of any [`Trainable`] (the driver of [`run_distillation`], and of
/// teacher training):
///
/// 1. one step; a non-finite metric stops training before anything of the step is written;
/// 2. a `metrics.jsonl` line every `log_every` steps and at the last (its wall-clock times to
///    `timing.jsonl`);
/// 3. a checkpoint every `checkpoint_every` steps and at the last;
/// 4. the observer; [`StopRequested`] from it writes a checkpoint (if step 3 did not) and
///    returns [`DistillError::Interrupted`].
///
/// With `resume`, the newest checkpoint is loaded (its name must match), the metrics past it
/// are dropped, and the loop continues from the saved step and RNG: the same metrics and
/// weights, byte for byte, as a run that was never interrupted.
pub fn run_training<T, F>(
    method: &mut T,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
    observe: F,
) -> Result<DriverSummary, DistillError>
where
    T: Trainable,
    F: FnMut(&StepReport<'_, T::Metrics>) -> Result<(), BoxError>,
{
    drive(method, config, run, resume, Some(observe))
}

/// The loop of a data-parallel replica other than rank 0 ([`crate::parallel`]): the same
/// steps as [`run_training`] (the same resume checks, the same RNG, the same non-finite
/// stop), writing nothing; rank 0 writes the run.
pub fn run_replica<T: Trainable>(
    method: &mut T,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
) -> Result<DriverSummary, DistillError> {
    type Silent<M> = fn(&StepReport<'_, M>) -> Result<(), BoxError>;
    drive::<T, Silent<T::Metrics>>(method, config, run, resume, None)
}

/// The loop of [`run_training`] (`observe` given: this process writes the run) and of
/// [`run_replica`] (`None`: only the steps, nothing written, no observer).
fn drive<T, F>(
    method: &mut T,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
    mut observe: Option<F>,
) -> Result<DriverSummary, DistillError>
where
    T: Trainable,
    F: FnMut(&StepReport<'_, T::Metrics>) -> Result<(), BoxError>,
{
    let writes = observe.is_some();
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
        if writes {
            truncate_jsonl(&run.metrics_path(), state.step)?;
            truncate_jsonl(&run.timing_path(), state.step)?;
        }
        state
    } else {
        // Rank 0 checks; a replica must not race it for the directory it writes.
        if writes && latest_checkpoint(run).is_ok() {
            return Err(DistillError::Resume(format!(
                "`{}` already holds a checkpoint; continue it with --resume or choose a new --out",
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
                hint: method.non_finite_hint(),
            });
        }
        let last = step == config.steps;
        let checkpointed = step % config.checkpoint_every == 0 || last;
        let Some(observe) = observe.as_mut() else {
            // A replica: the same cadence, for the same error messages.
            if checkpointed {
                last_checkpoint = format!("step {step}");
            }
            continue;
        };

        // 3. metrics line and checkpoint at their cadences
        if step % config.log_every == 0 || last {
            run.append_metrics(&MetricsLine {
                step,
                metrics: &metrics,
            })?;
            let elapsed_s = start.elapsed().as_secs_f64();
            run.append_timing(&TimingLine {
                step,
                elapsed_s,
                steps_per_s: (step + 1 - first_step) as f64 / elapsed_s.max(1e-9),
                time: metrics.wall_times(),
            })?;
        }
        if checkpointed {
            write_checkpoint(run, method, &state)?;
            last_checkpoint = format!("step {step}");
        }

        // 4. the caller's progress and logging; a stop request ends the loop after a checkpoint
        if let Err(e) = observe(&StepReport {
            step,
            total_steps: config.steps,
            metrics: &metrics,
            checkpointed,
        }) {
            if !e.is::<StopRequested>() {
                return Err(DistillError::Observer(e));
            }
            if !checkpointed {
                write_checkpoint(run, method, &state)?;
            }
            return Err(DistillError::Interrupted {
                step,
                total_steps: config.steps,
                checkpoint: run.checkpoint_dir(),
            });
        }
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

/// Name of the per-parameter step counts in an optimiser-state file (`-1`: no state).
const OPTIM_TIME: &str = "time";

fn moment_name(position: usize, which: &str) -> String {
    format!("param{position}.{which}")
}

/// Collects the AdamW state of each parameter, in visiting order, as named `f32` tensors.
struct StateWriter<'a, B: AutodiffBackend, M: AutodiffModule<B>> {
    record: &'a mut StateRecord<B, M>,
    position: usize,
    times: Vec<f64>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// The AdamW record of a module: parameter id → state.
type StateRecord<B, M> = <AdamWOptimizer<B, M> as Optimizer<M, B>>::Record;

fn f32_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> ModuleVisitor<B> for StateWriter<'_, B, M> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let i = self.position;
        self.position += 1;
        let Some(r) = self.record.remove(&param.id) else {
            self.times.push(-1.0);
            return;
        };
        // The rank matches: this state was made for this parameter.
        let state: AdamWState<B::InnerBackend, D> = r.into_state::<D>();
        let m = state.momentum;
        self.times.push(m.time as f64);
        let dims = m.moment_1.dims().to_vec();
        self.tensors.push((
            moment_name(i, "moment_1"),
            dims.clone(),
            f32_values(m.moment_1),
        ));
        self.tensors.push((
            moment_name(i, "moment_2"),
            dims.clone(),
            f32_values(m.moment_2),
        ));
        if let Some(max) = m.max_moment_2 {
            self.tensors
                .push((moment_name(i, "max_moment_2"), dims, f32_values(max)));
        }
    }
}

/// Saves an AdamW state (step counts and moments) for `module` to `path`, atomically, as
/// safetensors: `time` (`f64`, one per parameter in visiting order, `-1` without state) and
/// `param{i}.moment_1`, `param{i}.moment_2` (and `param{i}.max_moment_2` with AMSGrad).
///
/// Burn keys optimiser state by runtime [`ParamId`](burn::module::ParamId)s, which a freshly built network does not
/// share; positions in visiting order do not change, so [`load_adamw`] maps them back onto the
/// ids of the module it restores into. Safetensors keeps the bytes deterministic (an exactly
/// resumed run compares byte for byte) and the loading validated: [`read_tensors`] checks
/// every name and shape against the network before anything is built.
pub fn save_adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    optim: &AdamWOptimizer<B, M>,
    module: &M,
    path: &Path,
) -> Result<(), CheckpointError> {
    let mut record = optim.to_record();
    let mut writer = StateWriter::<B, M> {
        record: &mut record,
        position: 0,
        times: Vec::new(),
        tensors: Vec::new(),
    };
    module.visit(&mut writer);
    let n = writer.times.len();
    let time_bytes: Vec<u8> = writer.times.iter().flat_map(|t| t.to_le_bytes()).collect();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = writer
        .tensors
        .into_iter()
        .map(|(name, shape, v)| {
            (
                name,
                shape,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = vec![(
        OPTIM_TIME.to_string(),
        TensorView::new(Dtype::F64, vec![n], &time_bytes).expect("shape matches data"),
    )];
    for (name, shape, b) in &bytes {
        views.push((
            name.clone(),
            TensorView::new(Dtype::F32, shape.clone(), b).expect("shape matches data"),
        ));
    }
    let encoded = safetensors::serialize(views, None).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode the optimiser state: {e}"),
    })?;
    write_atomic(path, &encoded)
}

/// Rebuilds the AdamW record of a module's parameters from validated tensors.
struct StateReader<'a, B: AutodiffBackend, M: AutodiffModule<B>> {
    times: &'a [f64],
    tensors: &'a mut TensorMap,
    device: &'a B::Device,
    position: usize,
    record: StateRecord<B, M>,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> ModuleVisitor<B> for StateReader<'_, B, M> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let i = self.position;
        self.position += 1;
        if self.times[i] < 0.0 {
            return;
        }
        let mut take = |which: &str| {
            self.tensors
                .remove(&moment_name(i, which))
                .map(|(shape, values)| {
                    Tensor::<B::InnerBackend, D>::from_data(
                        TensorData::new(values, shape),
                        self.device,
                    )
                })
        };
        let (Some(m1), Some(m2)) = (take("moment_1"), take("moment_2")) else {
            unreachable!("names validated before loading");
        };
        let mut momentum = AdaptiveMomentumState::new(self.times[i] as usize, m1, m2);
        momentum.max_moment_2 = take("max_moment_2");
        self.record.insert(
            param.id,
            AdaptorRecord::from_state::<D>(AdamWState::new(momentum)),
        );
    }
}

/// Restores an AdamW state written by [`save_adamw`] onto `module`'s parameters. Every
/// tensor's name and shape is checked against the module first (a state for another network,
/// a truncated or foreign file is a [`CheckpointError`], never a panic in the next step).
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
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let shapes = parameter_shapes::<B, M>(module);
    let n = shapes.len();
    // The step counts say which parameters have state; read them first, then everything.
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        corrupt(format!(
            "{e}; not a safetensors optimiser state (checkpoints of earlier versions stored it \
             in burn's format and cannot resume: start again with --overwrite)"
        ))
    })?;
    let time = st
        .tensor(OPTIM_TIME)
        .map_err(|_| corrupt(format!("no `{OPTIM_TIME}` tensor")))?;
    if time.dtype() != Dtype::F64 || time.shape() != [n] {
        return Err(corrupt(format!(
            "`{OPTIM_TIME}` is {:?} {:?}; the network has {n} parameters (expected F64 [{n}])",
            time.dtype(),
            time.shape()
        )));
    }
    let times: Vec<f64> = time
        .data()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let mut expected = vec![(OPTIM_TIME.to_string(), vec![n])];
    for (i, ((_, shape), &t)) in shapes.iter().zip(&times).enumerate() {
        if t == -1.0 {
            continue;
        }
        if !(t >= 0.0 && t.fract() == 0.0 && t < 9.0e15) {
            return Err(corrupt(format!(
                "parameter #{i} has step count {t}; expected a whole number ≥ 0 (or −1)"
            )));
        }
        for which in ["moment_1", "moment_2"] {
            expected.push((moment_name(i, which), shape.clone()));
        }
        let max = moment_name(i, "max_moment_2");
        if st.tensor(&max).is_ok() {
            expected.push((max, shape.clone()));
        }
    }
    drop(st);
    let mut tensors = read_tensors(&bytes, path, &expected)?;
    let mut reader = StateReader::<B, M> {
        times: &times,
        tensors: &mut tensors,
        device,
        position: 0,
        record: Default::default(),
    };
    module.visit(&mut reader);
    Ok(optim.load_record(reader.record))
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

/// `Σ_params Σ g²` of a module's gradients as a one-element tensor on the device (no host
/// read; `None` when no parameter has a gradient). A step reads it together with its losses
/// in one host sync ([`fdistill_core::host`]).
pub fn grad_sq_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut v = SquaredNorm::<B> {
        grads,
        sums: Vec::new(),
    };
    module.visit(&mut v);
    (!v.sums.is_empty()).then(|| Tensor::cat(v.sums, 0).sum())
}

/// The global gradient norm `‖g‖ = √(Σ_params Σ g²)` of a module's gradients (one host read).
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    grad_sq_norm::<B, M>(module, grads)
        .map(|sq| fdistill_core::host::read_scalar(sq).sqrt())
        .unwrap_or(0.0)
}

/// Rescales every gradient by `c = min(1, max_norm / ‖g‖)` (global-norm clipping, as
/// `torch.nn.utils.clip_grad_norm_`: one factor for all parameters, unlike burn's per-tensor
/// clipping). Returns the clipped gradients and the norm before clipping. A non-finite norm
/// is returned unchanged for the caller to report.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = grad_norm::<B, M>(module, &grads);
    (clip_grads_to::<B, M>(module, grads, max_norm, norm), norm)
}

/// [`clip_grad_norm`] with the norm `‖g‖` already read (from [`grad_sq_norm`]): gradients
/// scaled by `max_norm / (‖g‖ + 1e−6)` when `‖g‖ > max_norm`, unchanged otherwise (and when
/// the norm is not finite).
pub fn clip_grads_to<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: f64,
    norm: f64,
) -> GradientsParams {
    if !norm.is_finite() || norm <= max_norm {
        return grads;
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
    grads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::teacher::ema_update;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
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
