//! VarDiU (Wang, Zhang, Ou, Barber 2025; SPEC §7) as a [`DistillMethod`]: the objective of
//! [`fdistill_core::vardiu_bound`], one loss, one backward, the generator's and the posterior's AdamW both
//! step. The loop around it is the driver's ([`run_distillation`](super::run_distillation)).
//!
//! Networks: the frozen teacher `D_T` (an [`AnalyticTeacher`](fdistill_core::AnalyticTeacher) or a
//! trained network passed as `net.no_grad()`), the generator `G` (`x0 = D_G(σ_init z;
//! σ_init)`, the same generator role as f-distill's, initialised from the teacher's network)
//! and the amortised posterior `q_φ(z | x_t, σ)` (random initialisation). No fake score, no
//! inner loop.
//!
//! **Several devices** ([`DataParallel`], [`crate::parallel`]): every replica draws the whole
//! global batch (latents, σ, ε, with the antithetic copies) and keeps its rows; the loss is a
//! mean over rows, so the mean over replicas of the two networks' gradients is the gradient
//! of the global batch. Both gradients are all-reduced (mean) before the norms and the clip,
//! and the reported values are means over replicas: every replica takes the same step.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::driver::{
    AdamWOptimizer, DistillMethod, DriverConfig, StepMetrics, adamw, clip_grads_to, grad_sq_norm,
    load_trained, save_trained, trainable,
};
use super::{DistillError, one_step_generate};
use crate::checkpoint::{CheckpointError, load_module, read_json, save_module, write_json};
use crate::parallel::{DataParallel, Reduce, Shard};
use crate::teacher::{ema_decay, ema_update};
use fdistill_core::denoiser::Denoiser;
use fdistill_core::random::standard_normal;
use fdistill_core::vardiu_bound::{
    LatentPosterior, PowSchedule, VarDiuBatch, VarDiuWeight, antithetic_pairs, draw_vardiu_sigmas,
    vardiu_loss, vardiu_weight,
};

/// Everything VarDiU's trainer needs, validated by [`check`](Self::check).
///
/// **No image-range default.** The noise range `[sigma_min, sigma_max]` and `sigma_init`
/// have no built-in values: VarDiU's σ range must match the data's scale (SPEC §7: the
/// reference runs MoG-40, data std ≈ 23, with σ ∈ [0.1, 20]; EDM's [0.002, 80] is for images
/// of std 0.5 and makes the bound blind to MoG-40's modes). Set them, take the
/// [`mog40_reference`](Self::mog40_reference) preset, or derive them from the data with
/// [`with_data_scale`](Self::with_data_scale); [`check`](Self::check) refuses a config
/// without them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarDiuConfig {
    /// The preset this config started from (informational).
    #[serde(default)]
    pub preset: String,
    /// Samples per generator update. With `antithetic` these are `batch_size / 2` latents,
    /// each used twice (ε and −ε), so it must be even (the reference: 1024 = 512 × 2).
    pub batch_size: usize,
    /// Antithetic pairs (z duplicated, ε and −ε, the same σ), as the reference code.
    pub antithetic: bool,
    /// Smallest noise level of [`vardiu_sigma`](fdistill_core::vardiu_bound::vardiu_sigma); `None` until set or derived from the data.
    pub sigma_min: Option<f64>,
    /// Largest noise level of [`vardiu_sigma`](fdistill_core::vardiu_bound::vardiu_sigma) (and the normaliser of w(σ)); `None` until set
    /// or derived from the data.
    pub sigma_max: Option<f64>,
    /// The schedule of `pow` in `σ = σ_min + u^pow (σ_max − σ_min)`.
    pub pow: PowSchedule,
    /// The weight w(σ) (`sigma2`, `sigma`, `sigma4`, `one`).
    pub weight: VarDiuWeight,
    /// σ_init: the generator is `x0 = D_G(σ_init z; σ_init)`; `None` until set or derived.
    pub sigma_init: Option<f64>,
    /// Learning rate of the generator (Adam: AdamW with `weight_decay = 0`).
    pub lr_generator: f64,
    /// Learning rate of the posterior.
    pub lr_posterior: f64,
    /// AdamW decoupled weight decay, both networks (0: Adam, as the reference).
    pub weight_decay: f64,
    /// Global gradient-norm clip, applied to each network's gradient separately.
    pub grad_clip: f64,
    /// EMA decay of the generator (0: no EMA, sampling uses the trained weights, as the
    /// reference).
    pub ema_beta: f64,
    /// Fault-injection hook for tests, set in code: the loss of this step is multiplied by
    /// NaN. Not a config key (never read from or written to a file), so it stays out of the
    /// user-facing list of keys.
    #[serde(skip)]
    pub inject_nan_at_step: Option<usize>,
    /// Loop settings (steps = generator updates, checkpoints, logging, seed).
    pub driver: DriverConfig,
}

/// The names [`VarDiuConfig::preset`] knows.
pub const VARDIU_PRESETS: [&str; 2] = ["data-scale", "mog40-reference"];

/// Ratio σ_max / σ_min of [`VarDiuConfig::with_data_scale`] (the reference's 20 / 0.1).
pub const SIGMA_RANGE_RATIO: f64 = 200.0;

/// Ratio σ_init / σ_max of [`VarDiuConfig::with_data_scale`] (80 / 20 on MoG-40).
pub const SIGMA_INIT_RATIO: f64 = 4.0;

impl Default for VarDiuConfig {
    /// The [`data_scale`](Self::data_scale) preset: the reference's settings, noise range to
    /// be set or derived from the data.
    fn default() -> Self {
        Self::data_scale()
    }
}

impl VarDiuConfig {
    /// The reference code's optimisation settings (`train_upper_diffusion.py`, SPEC §7):
    /// batch 1024 in antithetic pairs, pow from 0.1 by 0.01 every 1000 updates to 2.0,
    /// w = (σ/σ_max)², Adam lr 1e−4 for both networks, clip 10 each, no EMA — with the noise
    /// range and σ_init left unset: [`with_data_scale`](Self::with_data_scale) derives them.
    pub fn data_scale() -> Self {
        VarDiuConfig {
            preset: "data-scale".into(),
            batch_size: 1024,
            antithetic: true,
            sigma_min: None,
            sigma_max: None,
            pow: PowSchedule::reference(2.0),
            weight: VarDiuWeight::SigmaSquared,
            sigma_init: None,
            lr_generator: 1e-4,
            lr_posterior: 1e-4,
            weight_decay: 0.0,
            grad_clip: 10.0,
            ema_beta: 0.0,
            inject_nan_at_step: None,
            driver: DriverConfig {
                steps: 15_000,
                checkpoint_every: 1000,
                log_every: 100,
                seed: 0,
            },
        }
    }

    /// The reference's MoG-40 run (README, `run_seeds.sh`): [`data_scale`](Self::data_scale)
    /// with σ ∈ [0.1, 20], power 2.0, and σ_init = 80 (our generator is a copy of the teacher
    /// evaluated at σ_init; the reference's is a fresh MLP of z). 15 000 updates.
    pub fn mog40_reference() -> Self {
        VarDiuConfig {
            preset: "mog40-reference".into(),
            sigma_min: Some(0.1),
            sigma_max: Some(20.0),
            sigma_init: Some(80.0),
            ..Self::data_scale()
        }
    }

    /// The preset called `name` (one of [`VARDIU_PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, DistillError> {
        match name {
            "data-scale" => Ok(Self::data_scale()),
            "mog40-reference" => Ok(Self::mog40_reference()),
            other => Err(DistillError::Config(format!(
                "unknown VarDiU preset `{other}`; known: {}",
                VARDIU_PRESETS.join(", ")
            ))),
        }
    }

    /// Fills the unset noise settings from the data's scale `sigma_data` (its per-coordinate
    /// standard deviation): `σ_max = σ_data`, `σ_min = σ_max / 200`, `σ_init = 4 σ_max`.
    /// On MoG-40 (σ_data ≈ 23) this gives ≈ [0.11, 23] and σ_init ≈ 92, next to the
    /// reference's [0.1, 20] and our 80. Values already set are kept.
    pub fn with_data_scale(mut self, sigma_data: f64) -> Self {
        let sigma_max = *self.sigma_max.get_or_insert(sigma_data);
        self.sigma_min.get_or_insert(sigma_max / SIGMA_RANGE_RATIO);
        self.sigma_init.get_or_insert(SIGMA_INIT_RATIO * sigma_max);
        self
    }

    /// `(σ_min, σ_max)`; call after [`check`](Self::check).
    pub fn sigma_range(&self) -> (f64, f64) {
        (
            self.sigma_min.unwrap_or(f64::NAN),
            self.sigma_max.unwrap_or(f64::NAN),
        )
    }

    /// σ_init; call after [`check`](Self::check).
    pub fn sigma_init(&self) -> f64 {
        self.sigma_init.unwrap_or(f64::NAN)
    }

    /// The σ law in words, for tables: `σ = 0.1 + u^pow·19.9, pow 0.1→2 (+0.01/1000), w = (σ/20)²`.
    pub fn sigma_law(&self) -> String {
        let (lo, hi) = self.sigma_range();
        format!(
            "σ = {lo} + u^pow·{}, {}, w = {}",
            fmt_num(hi - lo),
            pow_words(&self.pow),
            weight_words(self.weight, hi)
        )
    }

    /// Validates every field; call before any tensor exists.
    pub fn check(self) -> Result<Self, DistillError> {
        let bad = |m: String| Err(DistillError::Config(format!("vardiu: {m}")));
        let (Some(lo), Some(hi), Some(init)) = (self.sigma_min, self.sigma_max, self.sigma_init)
        else {
            return bad(format!(
                "the noise range is not set (sigma_min {:?}, sigma_max {:?}, sigma_init {:?}). \
                 VarDiU's σ range must match the data's scale — there is no image-range default: \
                 set sigma_min/sigma_max/sigma_init, use the `mog40-reference` preset \
                 (σ ∈ [0.1, 20], σ_init 80), or derive them from the data's std with \
                 with_data_scale (σ_max = σ_data, σ_min = σ_max/200, σ_init = 4 σ_max; \
                 `fdistill distill --method vardiu` does this)",
                self.sigma_min, self.sigma_max, self.sigma_init
            ));
        };
        if self.batch_size == 0 || (self.antithetic && !self.batch_size.is_multiple_of(2)) {
            return bad(format!(
                "batch_size must be ≥ 1, and even with antithetic pairs (latents × 2), got {}",
                self.batch_size
            ));
        }
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo < hi) {
            return bad(format!(
                "need 0 < sigma_min < sigma_max, got {lo} and {hi}; choose them from the data's \
                 scale (MoG-40, std ≈ 23: the reference's [0.1, 20])"
            ));
        }
        self.pow.check().map_err(DistillError::Config)?;
        for (name, v) in [
            ("sigma_init", init),
            ("lr_generator", self.lr_generator),
            ("lr_posterior", self.lr_posterior),
            ("grad_clip", self.grad_clip),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} must be a positive number, got {v}"));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(0.0..1.0).contains(&self.ema_beta) {
            return bad(format!(
                "ema_beta must be in [0, 1) (0: no EMA), got {}",
                self.ema_beta
            ));
        }
        let driver = self.driver.clone().check()?;
        Ok(VarDiuConfig { driver, ..self })
    }
}

/// A number without trailing zeros (`19.9`, `0.1`, `1000`).
fn fmt_num(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The pow schedule in words: `pow 0.1→2 (+0.01/1000)` or `pow 2`.
pub fn pow_words(p: &PowSchedule) -> String {
    if p.raises() == 0 {
        format!("pow {}", fmt_num(p.start))
    } else {
        format!(
            "pow {}→{} (+{}/{})",
            fmt_num(p.start),
            fmt_num(p.pow_at(usize::MAX / 2)),
            fmt_num(p.increment),
            p.period
        )
    }
}

/// The weight in words: `(σ/20)²`, `σ/20`, `(σ/20)⁴`, `1`.
pub fn weight_words(w: VarDiuWeight, sigma_max: f64) -> String {
    let m = fmt_num(sigma_max);
    match w {
        VarDiuWeight::SigmaSquared => format!("(σ/{m})²"),
        VarDiuWeight::Sigma => format!("σ/{m}"),
        VarDiuWeight::SigmaFourth => format!("(σ/{m})⁴"),
        VarDiuWeight::One => "1".into(),
    }
}

/// Wall time of the phases of one step, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VarDiuTimes {
    /// Drawing z, σ, ε.
    pub sample_s: f64,
    /// Generator, posterior and teacher forward.
    pub forward_s: f64,
    /// Backward and clipping.
    pub backward_s: f64,
    /// Both AdamW steps and the EMA.
    pub update_s: f64,
    /// All-reduces (gradients and reported values) of a data-parallel run; 0 on one device.
    #[serde(default)]
    pub allreduce_s: f64,
}

/// What one VarDiU step reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VarDiuMetrics {
    /// `mean w(σ)·(−log q_φ(z | x_t, σ))`: the posterior part of the bound.
    pub neg_log_q: f64,
    /// `mean ‖w(σ) s_p(x_t)‖`: the teacher's pull.
    pub teacher_pull: f64,
    /// The back-propagated surrogate's value.
    pub loss: f64,
    /// The `pow` of this step.
    pub pow: f64,
    /// Generator gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_generator: Option<f64>,
    /// Posterior gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_posterior: Option<f64>,
    /// Wall time by phase: in memory and in `timing.jsonl`, not in `metrics.jsonl` (which
    /// must be the same bytes for the same seed, resumed or not; [`StepMetrics::wall_times`]).
    #[serde(skip)]
    pub time: VarDiuTimes,
}

impl StepMetrics for VarDiuMetrics {
    fn wall_times(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.time).ok()
    }

    fn non_finite(&self) -> Option<(String, f64)> {
        [
            ("VarDiU loss", Some(self.loss)),
            ("posterior term −log q", Some(self.neg_log_q)),
            ("teacher pull", Some(self.teacher_pull)),
            ("generator gradient norm", self.grad_norm_generator),
            ("posterior gradient norm", self.grad_norm_posterior),
        ]
        .into_iter()
        .find_map(|(name, v)| v.filter(|v| !v.is_finite()).map(|v| (name.to_string(), v)))
    }
}

/// `checkpoint/vardiu.json`: the method's running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MethodState {
    generator_steps: usize,
}

/// The VarDiU method. `T` is the teacher (frozen), `N` the generator network type, `P` the
/// posterior.
pub struct VarDiU<B, T, N, P>
where
    B: AutodiffBackend,
    N: AutodiffModule<B>,
    P: AutodiffModule<B>,
{
    config: VarDiuConfig,
    teacher: T,
    generator: N,
    generator_ema: N::InnerModule,
    posterior: P,
    opt_generator: AdamWOptimizer<B, N>,
    opt_posterior: AdamWOptimizer<B, P>,
    state: MethodState,
    dim: usize,
    device: B::Device,
    /// This replica's place in a data-parallel run; `None` on one device.
    shard: Option<Shard<B::InnerBackend>>,
}

fn host_tensor<B: Backend, const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape).convert::<f32>(), device)
}

impl<B, T, N, P> VarDiU<B, T, N, P>
where
    B: AutodiffBackend,
    T: Denoiser<B>,
    N: AutodiffModule<B> + Denoiser<B>,
    N::InnerModule: Denoiser<B::InnerBackend>,
    P: AutodiffModule<B> + LatentPosterior<B>,
{
    /// Validates the config and the pieces (dimensions) before training.
    ///
    /// The generator and the posterior are made [`trainable`]: weights that went through an
    /// inner-backend copy (an EMA, `AutodiffModule::from_inner`) arrive with
    /// `require_grad = false`, and would otherwise silently never train.
    pub fn new(
        config: VarDiuConfig,
        teacher: T,
        generator: N,
        posterior: P,
        device: &B::Device,
    ) -> Result<Self, DistillError> {
        let config = config.check()?;
        let generator = trainable::<B, N>(generator);
        let posterior = trainable::<B, P>(posterior);
        let dim = teacher.dim();
        if generator.dim() != dim {
            return Err(DistillError::Setup(format!(
                "dimensions differ: teacher {dim}, generator {}; build the generator for the teacher's data",
                generator.dim()
            )));
        }
        if generator.latent_dim() != dim {
            return Err(DistillError::Setup(format!(
                "the generator takes a {}-wide latent; VarDiU's posterior q(z | x) needs z as wide                  as the data ({dim}): build the generator without extra latent inputs",
                generator.latent_dim()
            )));
        }
        // The posterior must accept [batch, dim] latents and samples: probe it once.
        let probe = posterior.log_prob(
            Tensor::zeros([1, dim], device),
            Tensor::zeros([1, dim], device),
            Tensor::ones([1], device),
        );
        if probe.dims() != [1] {
            return Err(DistillError::Setup(format!(
                "the posterior returned shape {:?} for one sample; it must return [batch]",
                probe.dims()
            )));
        }
        Ok(VarDiU {
            opt_generator: adamw::<B, N>(config.weight_decay),
            opt_posterior: adamw::<B, P>(config.weight_decay),
            config,
            teacher,
            generator_ema: generator.valid(),
            generator,
            posterior,
            state: MethodState { generator_steps: 0 },
            dim,
            device: device.clone(),
            shard: None,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &VarDiuConfig {
        &self.config
    }

    /// The EMA of the generator: what sampling uses.
    pub fn generator_ema(&self) -> &N::InnerModule {
        &self.generator_ema
    }

    /// The posterior network.
    pub fn posterior(&self) -> &P {
        &self.posterior
    }

    /// This replica's rows of a row-major `[batch, cols]` host array drawn for the global
    /// batch (all of it on one device).
    fn mine(&self, values: Vec<f64>, cols: usize) -> Vec<f64> {
        match &self.shard {
            Some(s) => s.take_rows(&values, cols),
            None => values,
        }
    }

    /// One step: draw (antithetic) z, σ, ε; the VarDiU loss; one backward; clip each
    /// network's gradient; both AdamW steps; EMA. Data-parallel: this replica's rows of the
    /// global batch, gradients and reported values averaged over the replicas.
    fn vardiu_step(
        &mut self,
        step: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<VarDiuMetrics, DistillError> {
        let cfg = self.config.clone();
        let (n, d) = (cfg.batch_size, self.dim);
        let dev = self.device.clone();
        let mut time = VarDiuTimes::default();

        // 1. latents, noise levels σ = σ_min + u^pow (σ_max − σ_min), noise; antithetic pairs
        let t = Instant::now();
        let pow = cfg.pow.pow_at(self.state.generator_steps);
        let (sigma_min, sigma_max) = cfg.sigma_range();
        let n = if cfg.antithetic { n / 2 } else { n };
        let z = standard_normal(n * d, rng);
        let eps = standard_normal(n * d, rng);
        let sigma = draw_vardiu_sigmas(n, pow, sigma_min, sigma_max, rng);
        let (z, eps, sigma) = if cfg.antithetic {
            antithetic_pairs(&z, &eps, &sigma)
        } else {
            (z, eps, sigma)
        };
        let (z, eps, sigma) = (self.mine(z, d), self.mine(eps, d), self.mine(sigma, 1));
        let b = sigma.len();
        let weight: Vec<f64> = sigma
            .iter()
            .map(|s| vardiu_weight(*s, sigma_max, cfg.weight))
            .collect();
        time.sample_s = t.elapsed().as_secs_f64();

        // 2. the loss: −w log q_φ(z | x_t) + injected −w log p_σ(x_t), x_t = G(z) + σε
        let t = Instant::now();
        let z = host_tensor::<B, 2>(z, [b, d], &dev);
        let x0 = one_step_generate(&self.generator, z.clone(), cfg.sigma_init(), None); // [b, d]
        let out = vardiu_loss(
            VarDiuBatch {
                z,
                x0,
                eps: host_tensor::<B, 2>(eps, [b, d], &dev),
                sigma: host_tensor::<B, 1>(sigma, [b], &dev),
                weight: host_tensor::<B, 1>(weight, [b], &dev),
            },
            &self.posterior,
            &self.teacher,
        );
        let loss = if cfg.inject_nan_at_step == Some(step) {
            out.loss.mul_scalar(f64::NAN)
        } else {
            out.loss
        };
        time.forward_s = t.elapsed().as_secs_f64();

        // 3. one backward; each network's gradient clipped to grad_clip (global norm). The
        // loss and both squared norms come to the host in one read.
        let t = Instant::now();
        let mut grads = loss.backward();
        let g_gen = GradientsParams::from_module(&mut grads, &self.generator);
        let g_post = GradientsParams::from_module(&mut grads, &self.posterior);
        let shard = self.shard.clone();
        let (g_gen, g_post) = match &shard {
            Some(s) => (
                s.mean_grads::<B, N>(&self.generator, g_gen)?,
                s.mean_grads::<B, P>(&self.posterior, g_post)?,
            ),
            None => (g_gen, g_post),
        };
        // The loss and the two reported terms (means over replicas); then the squared norms
        // of the averaged gradients: one host read.
        let (neg_log_q, teacher_pull, loss) = match &shard {
            Some(s) => {
                let terms = host_tensor::<B::InnerBackend, 1>(
                    vec![out.neg_log_q, out.teacher_pull],
                    [2],
                    &dev,
                );
                let mean = s.all_reduce(Tensor::cat(vec![loss.inner(), terms], 0), Reduce::Mean)?;
                (None, None, mean)
            }
            None => (Some(out.neg_log_q), Some(out.teacher_pull), loss.inner()),
        };
        let zero = || Tensor::zeros([1], &dev);
        let v = fdistill_core::host::read_values(Tensor::cat(
            vec![
                grad_sq_norm::<B, N>(&self.generator, &g_gen).unwrap_or_else(zero),
                grad_sq_norm::<B, P>(&self.posterior, &g_post).unwrap_or_else(zero),
                loss,
            ],
            0,
        ));
        let (norm_gen, norm_post, value) = (v[0].sqrt(), v[1].sqrt(), v[2]);
        let mut m = VarDiuMetrics {
            neg_log_q: neg_log_q.unwrap_or_else(|| v[3]),
            teacher_pull: teacher_pull.unwrap_or_else(|| v[4]),
            loss: value,
            pow,
            grad_norm_generator: None,
            grad_norm_posterior: None,
            time: VarDiuTimes::default(),
        };
        if m.non_finite().is_some() {
            time.backward_s = t.elapsed().as_secs_f64();
            time.allreduce_s = shard.map_or(0.0, |s| s.take_comm_seconds());
            m.time = time;
            return Ok(m);
        }
        m.grad_norm_generator = Some(norm_gen);
        m.grad_norm_posterior = Some(norm_post);
        let g_gen = clip_grads_to::<B, N>(&self.generator, g_gen, cfg.grad_clip, norm_gen);
        let g_post = clip_grads_to::<B, P>(&self.posterior, g_post, cfg.grad_clip, norm_post);
        time.backward_s = t.elapsed().as_secs_f64();
        if m.non_finite().is_some() {
            time.allreduce_s = shard.map_or(0.0, |s| s.take_comm_seconds());
            m.time = time;
            return Ok(m);
        }

        // 4. both optimisers step; EMA of the generator
        let t = Instant::now();
        self.generator = self
            .opt_generator
            .step(cfg.lr_generator, self.generator.clone(), g_gen);
        self.posterior = self
            .opt_posterior
            .step(cfg.lr_posterior, self.posterior.clone(), g_post);
        self.state.generator_steps += 1;
        let beta = ema_decay(cfg.ema_beta, self.state.generator_steps);
        self.generator_ema = ema_update(self.generator_ema.clone(), &self.generator.valid(), beta);
        time.update_s = t.elapsed().as_secs_f64();
        time.allreduce_s = shard.map_or(0.0, |s| s.take_comm_seconds());
        m.time = time;
        Ok(m)
    }
}

impl<B, T, N, P> DataParallel<B> for VarDiU<B, T, N, P>
where
    B: AutodiffBackend,
    T: Denoiser<B>,
    N: AutodiffModule<B> + Denoiser<B>,
    N::InnerModule: Denoiser<B::InnerBackend>,
    P: AutodiffModule<B> + LatentPosterior<B>,
{
    /// Splits every global batch of `batch_size` rows (antithetic copies included) over the
    /// replicas and copies rank 0's generator, its EMA and the posterior onto this replica.
    fn set_shard(&mut self, shard: Shard<B::InnerBackend>) -> Result<(), DistillError> {
        shard.check_batch(self.config.batch_size, "vardiu batch_size")?;
        self.generator = shard.broadcast_module::<B, N>(self.generator.clone())?;
        self.generator_ema = shard.broadcast_inner(self.generator_ema.clone())?;
        self.posterior = shard.broadcast_module::<B, P>(self.posterior.clone())?;
        self.shard = Some(shard);
        Ok(())
    }
}

const GENERATOR: &str = "generator.safetensors";
const GENERATOR_EMA: &str = "generator_ema.safetensors";
const POSTERIOR: &str = "posterior.safetensors";
const OPT_GENERATOR: &str = "optim_generator.mpk";
const OPT_POSTERIOR: &str = "optim_posterior.mpk";
const STATE: &str = "vardiu.json";

impl<B, T, N, P> DistillMethod<B> for VarDiU<B, T, N, P>
where
    B: AutodiffBackend,
    T: Denoiser<B>,
    N: AutodiffModule<B> + Denoiser<B>,
    N::InnerModule: Denoiser<B::InnerBackend>,
    P: AutodiffModule<B> + LatentPosterior<B>,
{
    type Metrics = VarDiuMetrics;

    fn name(&self) -> &'static str {
        "vardiu"
    }

    fn step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<VarDiuMetrics, DistillError> {
        self.vardiu_step(step, rng)
    }

    fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        save_trained(
            &self.generator,
            &self.opt_generator,
            dir,
            (GENERATOR, OPT_GENERATOR),
        )?;
        save_module::<B::InnerBackend, _>(&self.generator_ema, &dir.join(GENERATOR_EMA))?;
        save_trained(
            &self.posterior,
            &self.opt_posterior,
            dir,
            (POSTERIOR, OPT_POSTERIOR),
        )?;
        write_json(&dir.join(STATE), &self.state)
    }

    fn load(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        let dev = self.device.clone();
        (self.generator, self.opt_generator) = load_trained(
            self.generator.clone(),
            self.opt_generator.clone(),
            dir,
            (GENERATOR, OPT_GENERATOR),
            &dev,
        )?;
        self.generator_ema = load_module::<B::InnerBackend, _>(
            self.generator_ema.clone(),
            &dir.join(GENERATOR_EMA),
        )?;
        (self.posterior, self.opt_posterior) = load_trained(
            self.posterior.clone(),
            self.opt_posterior.clone(),
            dir,
            (POSTERIOR, OPT_POSTERIOR),
            &dev,
        )?;
        self.state = read_json(&dir.join(STATE))?;
        Ok(())
    }

    fn generate(
        &self,
        latents: Tensor<B::InnerBackend, 2>,
        labels: Option<Tensor<B::InnerBackend, 1, Int>>,
    ) -> Tensor<B::InnerBackend, 2> {
        one_step_generate(
            &self.generator_ema,
            latents,
            self.config.sigma_init(),
            labels,
        )
    }
}
