//! VarDiU (Wang, Zhang, Ou, Barber 2025; SPEC §7) as a [`DistillMethod`]: the objective of
//! [`fdistill_core::vardiu_bound`], one loss, one backward, the generator's and the posterior's AdamW both
//! step. The loop around it is the driver's ([`run_distillation`](super::run_distillation)).
//!
//! Networks: the frozen teacher `D_T` (an [`AnalyticTeacher`](fdistill_core::AnalyticTeacher) or a
//! trained network passed as `net.no_grad()`), the generator `G` (`x0 = D_G(σ_init z;
//! σ_init)`, the same generator role as f-distill's, initialised from the teacher's network)
//! and the amortised posterior `q_φ(z | x_t, σ)` (random initialisation). No fake score, no
//! inner loop.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::driver::{
    AdamWOptimizer, DistillMethod, DriverConfig, StepMetrics, adamw, clip_grad_norm, load_trained,
    save_trained,
};
use super::{DistillError, one_step_generate};
use crate::checkpoint::{CheckpointError, load_module, read_json, save_module, write_json};
use crate::teacher::{ema_decay, ema_update};
use fdistill_core::denoiser::Denoiser;
use fdistill_core::random::standard_normal;
use fdistill_core::vardiu_bound::{
    LatentPosterior, PowSchedule, VarDiuBatch, VarDiuWeight, antithetic_pairs, vardiu_loss,
    vardiu_sigma, vardiu_weight,
};

/// Everything VarDiU's trainer needs, validated by [`check`](Self::check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarDiuConfig {
    /// Latents per step; with `antithetic` the batch holds twice as many samples.
    pub batch_size: usize,
    /// Antithetic pairs (z duplicated, ε and −ε), as the reference code.
    pub antithetic: bool,
    /// Smallest noise level of [`vardiu_sigma`].
    pub sigma_min: f64,
    /// Largest noise level of [`vardiu_sigma`] (and the normaliser of w(σ)).
    pub sigma_max: f64,
    /// The annealing of `pow` in `σ = σ_min + u^pow (σ_max − σ_min)`.
    pub pow: PowSchedule,
    /// The weight w(σ).
    pub weight: VarDiuWeight,
    /// σ_init: the generator is `x0 = D_G(σ_init z; σ_init)`.
    pub sigma_init: f64,
    /// AdamW learning rate of the generator.
    pub lr_generator: f64,
    /// AdamW learning rate of the posterior.
    pub lr_posterior: f64,
    /// AdamW decoupled weight decay, both networks.
    pub weight_decay: f64,
    /// Global gradient-norm clip, applied to each network's gradient separately.
    pub grad_clip: f64,
    /// EMA decay of the generator.
    pub ema_beta: f64,
    /// Fault-injection hook for tests: the loss of this step is multiplied by NaN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_nan_at_step: Option<usize>,
    /// Loop settings (steps, checkpoints, logging, seed).
    pub driver: DriverConfig,
}

impl Default for VarDiuConfig {
    /// The reference code's settings (SPEC §7): antithetic pairs, pow annealed from 0.1,
    /// w = (σ/σ_max)², Adam lr 1e−4 (here AdamW without decay), clip 10; σ ∈ [0.002, 80]
    /// (EDM's range) and σ_init = 80 as f-distill's generator.
    fn default() -> Self {
        VarDiuConfig {
            batch_size: 256,
            antithetic: true,
            sigma_min: 0.002,
            sigma_max: 80.0,
            pow: PowSchedule::default(),
            weight: VarDiuWeight::SigmaSquared,
            sigma_init: 80.0,
            lr_generator: 1e-4,
            lr_posterior: 1e-4,
            weight_decay: 0.0,
            grad_clip: 10.0,
            ema_beta: 0.99,
            inject_nan_at_step: None,
            driver: DriverConfig::default(),
        }
    }
}

impl VarDiuConfig {
    /// Validates every field; call before any tensor exists.
    pub fn check(self) -> Result<Self, DistillError> {
        let bad = |m: String| Err(DistillError::Config(format!("vardiu: {m}")));
        if self.batch_size == 0 {
            return bad("batch_size must be ≥ 1".into());
        }
        if !(self.sigma_min.is_finite()
            && self.sigma_max.is_finite()
            && self.sigma_min > 0.0
            && self.sigma_min < self.sigma_max)
        {
            return bad(format!(
                "need 0 < sigma_min < sigma_max, got {} and {}; the reference uses [0.002, 80]",
                self.sigma_min, self.sigma_max
            ));
        }
        self.pow.check().map_err(DistillError::Config)?;
        for (name, v) in [
            ("sigma_init", self.sigma_init),
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
            return bad(format!("ema_beta must be in [0, 1), got {}", self.ema_beta));
        }
        let driver = self.driver.clone().check()?;
        Ok(VarDiuConfig { driver, ..self })
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
    /// Wall time by phase.
    pub time: VarDiuTimes,
}

impl StepMetrics for VarDiuMetrics {
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
    pub fn new(
        config: VarDiuConfig,
        teacher: T,
        generator: N,
        posterior: P,
        device: &B::Device,
    ) -> Result<Self, DistillError> {
        let config = config.check()?;
        let dim = teacher.dim();
        if generator.dim() != dim {
            return Err(DistillError::Setup(format!(
                "dimensions differ: teacher {dim}, generator {}; build the generator for the teacher's data",
                generator.dim()
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

    /// One step: draw (antithetic) z, σ, ε; the VarDiU loss; one backward; clip each
    /// network's gradient; both AdamW steps; EMA.
    fn vardiu_step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> VarDiuMetrics {
        let cfg = self.config.clone();
        let (n, d) = (cfg.batch_size, self.dim);
        let dev = self.device.clone();
        let mut time = VarDiuTimes::default();

        // 1. latents, noise levels σ = σ_min + u^pow (σ_max − σ_min), noise; antithetic pairs
        let t = Instant::now();
        let pow = cfg.pow.pow_at(step - 1);
        let z = standard_normal(n * d, rng);
        let eps = standard_normal(n * d, rng);
        let sigma: Vec<f64> = (0..n)
            .map(|_| vardiu_sigma(rng.random::<f64>(), pow, cfg.sigma_min, cfg.sigma_max))
            .collect();
        let (z, eps, sigma) = if cfg.antithetic {
            antithetic_pairs(&z, &eps, &sigma)
        } else {
            (z, eps, sigma)
        };
        let b = sigma.len();
        let weight: Vec<f64> = sigma
            .iter()
            .map(|s| vardiu_weight(*s, cfg.sigma_max, cfg.weight))
            .collect();
        time.sample_s = t.elapsed().as_secs_f64();

        // 2. the loss: −w log q_φ(z | x_t) + injected −w log p_σ(x_t), x_t = G(z) + σε
        let t = Instant::now();
        let z = host_tensor::<B, 2>(z, [b, d], &dev);
        let x0 = one_step_generate(&self.generator, z.clone(), cfg.sigma_init, None); // [b, d]
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
        let value: f64 = burn::tensor::ElementConversion::elem(loss.clone().into_scalar());
        let mut m = VarDiuMetrics {
            neg_log_q: out.neg_log_q,
            teacher_pull: out.teacher_pull,
            loss: value,
            pow,
            grad_norm_generator: None,
            grad_norm_posterior: None,
            time: VarDiuTimes::default(),
        };
        time.forward_s = t.elapsed().as_secs_f64();
        if m.non_finite().is_some() {
            m.time = time;
            return m;
        }

        // 3. one backward; each network's gradient clipped to grad_clip (global norm)
        let t = Instant::now();
        let mut grads = loss.backward();
        let g_gen = GradientsParams::from_module(&mut grads, &self.generator);
        let g_post = GradientsParams::from_module(&mut grads, &self.posterior);
        let (g_gen, norm_gen) = clip_grad_norm::<B, N>(&self.generator, g_gen, cfg.grad_clip);
        let (g_post, norm_post) = clip_grad_norm::<B, P>(&self.posterior, g_post, cfg.grad_clip);
        m.grad_norm_generator = Some(norm_gen);
        m.grad_norm_posterior = Some(norm_post);
        time.backward_s = t.elapsed().as_secs_f64();
        if m.non_finite().is_some() {
            m.time = time;
            return m;
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
        m.time = time;
        m
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
        Ok(self.vardiu_step(step, rng))
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
        one_step_generate(&self.generator_ema, latents, self.config.sigma_init, labels)
    }
}
