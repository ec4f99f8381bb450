//! The f-distill method (Xu, Nie & Vahdat 2025; SPEC §2–§4) as a [`DistillMethod`].
//!
//! Networks: the frozen teacher `D_T`, the generator `G` (`x0 = D_G(σ_init z; σ_init)`,
//! initialised from the teacher), the fake score `D_F` (initialised from the teacher) and the
//! ratio estimator: a learned discriminator head ([`Critic::Learned`]), a closed-form one
//! ([`Critic::Fixed`], the Gaussian-mixture testbed), or none ([`Critic::Unit`], `r ≡ 1`,
//! reverse-KL only). One AdamW per trained network. Each iteration is a critic step or a
//! generator step ([`DistillConfig::is_generator_step`]); the loop around it is the driver's.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::DistillError;
use super::config::{
    DistillConfig, DsmWeighting, FeatureSource, NoiseDistribution, NoiseSampler, RatioSource,
    Surrogate,
};
use super::driver::{
    AdamWOptimizer, DistillMethod, StepMetrics, adamw, clip_grads_to, grad_sq_norm, load_trained,
    save_trained, trainable,
};
use crate::checkpoint::{CheckpointError, load_module, read_json, save_module, write_json};
use crate::parallel::{DataParallel, Reduce, Shard};
use crate::teacher::{ema_decay, ema_update};
use fdistill_core::EdmDenoiser;
use fdistill_core::denoiser::{Denoiser, FeatureDenoiser};
use fdistill_core::guidance_combine;
use fdistill_core::host;
use fdistill_core::losses::edm::edm_loss_weight_tensor;
use fdistill_core::losses::{gan_generator_loss, inject_gradient, inner_product_surrogate};
use fdistill_core::random::standard_normal;
use fdistill_core::ratio::{DensityRatioEstimator, FeatureMap, LearnedRatioEstimator, RatioInput};
use fdistill_core::update::{TimeBinnedNormaliser, clamp_logits, clip_ratio, dmd_normaliser};
use fdistill_core::vardiu_bound::vardiu_weight;
use fdistill_data::TrainingData;
use fdistill_divergence::Divergence;
use fdistill_divergence::weights::{WEIGHT_EPS, normalised_weights};

/// The density-ratio estimator of an f-distill run.
pub enum Critic<B: AutodiffBackend, C> {
    /// A discriminator head trained with the logistic loss (`ratio = "discriminator"`).
    Learned(C),
    /// A closed-form estimator, not trained (`ratio = "exact"`).
    Fixed(Box<dyn DensityRatioEstimator<B>>),
    /// No estimator: `r ≡ 1` (`ratio = "none"`; reverse KL only).
    Unit,
}

/// Which step an iteration was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Fake score (and discriminator) update.
    Critic,
    /// Generator update and EMA.
    Generator,
}

/// Mean, standard deviation, minimum and maximum of a per-sample quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Summary {
    /// Statistics of `v` (NaN propagates into mean and std).
    pub fn of(v: &[f64]) -> Summary {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        Summary {
            mean,
            std,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Wall time of one iteration by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimes {
    /// Drawing latents, σ, noise and data, and building tensors.
    pub sample_s: f64,
    /// Forward passes and losses (including ratio estimation and normalisation).
    pub forward_s: f64,
    /// Back-propagation and gradient norms.
    pub backward_s: f64,
    /// AdamW updates.
    pub update_s: f64,
    /// EMA of the generator (generator steps only).
    pub ema_s: f64,
    /// Data-parallel runs: time in all-reduces (communication and waiting for the slowest
    /// replica), part of the phases above; absent on one device.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allreduce_s: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// What one f-distill iteration reports. Absent fields do not apply to the phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FDistillMetrics {
    /// Critic or generator step.
    pub phase: Phase,
    /// Generator: surrogate + λ_GAN · GAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_generator: Option<f64>,
    /// Generator: the surrogate's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_surrogate: Option<f64>,
    /// Generator: `mean softplus(−ℓ)` (before λ_GAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_gan: Option<f64>,
    /// Critic: the fake score's denoising loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_dsm: Option<f64>,
    /// Critic: the discriminator's logistic loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_discriminator: Option<f64>,
    /// Generator: the log ratio ℓ after the logit clamp, before the ratio clip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_ratio: Option<Summary>,
    /// Generator: share of samples whose ratio was clipped to `ratio_clip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_clipped: Option<f64>,
    /// Generator: the normalised weights `h_i` (mean 1 with stage-2 normalisation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Summary>,
    /// Generator: global gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_generator: Option<f64>,
    /// Critic: fake-score gradient norm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_fake_score: Option<f64>,
    /// Critic: discriminator gradient norm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm_discriminator: Option<f64>,
    /// Wall time by phase: in memory and in `timing.jsonl`, not in `metrics.jsonl`
    /// ([`StepMetrics::wall_times`]).
    #[serde(skip)]
    pub time: PhaseTimes,
}

impl FDistillMetrics {
    fn new(phase: Phase) -> Self {
        FDistillMetrics {
            phase,
            loss_generator: None,
            loss_surrogate: None,
            loss_gan: None,
            loss_dsm: None,
            loss_discriminator: None,
            log_ratio: None,
            ratio_clipped: None,
            weight: None,
            grad_norm_generator: None,
            grad_norm_fake_score: None,
            grad_norm_discriminator: None,
            time: PhaseTimes::default(),
        }
    }
}

impl StepMetrics for FDistillMetrics {
    fn wall_times(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.time).ok()
    }

    fn non_finite(&self) -> Option<(String, f64)> {
        let scalars = [
            ("generator loss", self.loss_generator),
            ("surrogate loss", self.loss_surrogate),
            ("GAN loss", self.loss_gan),
            ("fake-score DSM loss", self.loss_dsm),
            ("discriminator loss", self.loss_discriminator),
            ("f-distill weight h (mean)", self.weight.map(|w| w.mean)),
            ("generator gradient norm", self.grad_norm_generator),
            ("fake-score gradient norm", self.grad_norm_fake_score),
            ("discriminator gradient norm", self.grad_norm_discriminator),
        ];
        scalars
            .into_iter()
            .find_map(|(name, v)| v.filter(|v| !v.is_finite()).map(|v| (name.to_string(), v)))
    }
}

/// The generator objective of one batch (SPEC §4), before back-propagation.
pub struct GeneratorObjective<B: Backend> {
    /// Surrogate + λ_GAN · GAN: what is back-propagated.
    pub loss: Tensor<B, 1>,
    /// The surrogate's value.
    pub surrogate: f64,
    /// The GAN term (before λ_GAN), when there is a discriminator.
    pub gan: Option<f64>,
    /// ℓ after the logit clamp.
    pub log_ratio: Vec<f64>,
    /// Share of ratios clipped.
    pub ratio_clipped: f64,
    /// The normalised weights h_i.
    pub weights: Vec<f64>,
}

/// `RUN/checkpoint/fdistill.json`: the method's running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct MethodState {
    generator_steps: usize,
    normaliser: Option<TimeBinnedNormaliser>,
}

/// The f-distill method. `T` is the teacher (pass it frozen: `net.no_grad()`, or an
/// [`AnalyticTeacher`](fdistill_core::AnalyticTeacher)), `N` the generator / fake-score network
/// type, `C` the discriminator head type (any type when the critic is not learned).
pub struct FDistill<B, T, N, C>
where
    B: AutodiffBackend,
    N: AutodiffModule<B>,
    C: AutodiffModule<B>,
{
    config: DistillConfig,
    divergence: Box<dyn Divergence>,
    noise: NoiseSampler,
    teacher: T,
    data: TrainingData,
    generator: N,
    generator_ema: N::InnerModule,
    fake_score: N,
    head: Option<C>,
    fixed_ratio: Option<Box<dyn DensityRatioEstimator<B>>>,
    opt_generator: AdamWOptimizer<B, N>,
    opt_fake_score: AdamWOptimizer<B, N>,
    opt_head: Option<AdamWOptimizer<B, C>>,
    state: MethodState,
    dim: usize,
    /// Width of the generator's latent: `dim + generator_latent_extra`.
    latent_dim: usize,
    /// Classes of labelled data: every network is then called with labels (uniform for
    /// generated samples, the data's own for real ones).
    classes: Option<usize>,
    device: B::Device,
    /// This replica's place in a data-parallel run (none on one device).
    shard: Option<Shard<B::InnerBackend>>,
}

fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    host::read_values(t)
}

fn host_tensor<B: Backend, const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape).convert::<f32>(), device)
}

fn label_tensor<B: Backend>(labels: &[u32], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(values, [labels.len()]), device)
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    host::read_scalar(t)
}

/// One-element tensors of the inner backend, read in one host sync.
fn read_all<B: Backend>(values: Vec<Tensor<B, 1>>) -> Vec<f64> {
    host::read_values(Tensor::cat(values, 0))
}

/// The generator objective with its parts still on the device (no host read after the log
/// ratios): what [`FDistill::generator_objective`] reads and the generator step reads in one
/// sync with the gradient norm.
struct ObjectiveTensors<B: Backend> {
    loss: Tensor<B, 1>,
    surrogate: Tensor<B, 1>,
    gan: Option<Tensor<B, 1>>,
    log_ratio: Vec<f64>,
    ratio_clipped: f64,
    weights: Vec<f64>,
}

impl<B, T, N, C> FDistill<B, T, N, C>
where
    B: AutodiffBackend,
    T: FeatureDenoiser<B>,
    N: AutodiffModule<B> + FeatureDenoiser<B> + EdmDenoiser<B>,
    N::InnerModule: Denoiser<B::InnerBackend>,
    C: AutodiffModule<B> + LearnedRatioEstimator<B>,
{
    /// The standard set-up: generator and fake score both start as copies of `student_init`
    /// (the teacher's network). Validates the config and the pieces before training.
    pub fn new(
        config: DistillConfig,
        teacher: T,
        student_init: N,
        critic: Critic<B, C>,
        data: TrainingData,
        device: &B::Device,
    ) -> Result<Self, DistillError> {
        Self::with_networks(
            config,
            teacher,
            student_init.clone(),
            student_init,
            critic,
            data,
            device,
        )
    }

    /// Like [`new`](Self::new) with explicit generator and fake-score networks.
    pub fn with_networks(
        config: DistillConfig,
        teacher: T,
        generator: N,
        fake_score: N,
        critic: Critic<B, C>,
        data: TrainingData,
        device: &B::Device,
    ) -> Result<Self, DistillError> {
        let config = config.check()?;
        let divergence = config.build_divergence()?;
        let noise = config.noise.sampler()?;
        let dim = teacher.dim();
        if generator.dim() != dim || fake_score.dim() != dim || data.dim() != dim {
            return Err(DistillError::Setup(format!(
                "dimensions differ: teacher {dim}, generator {}, fake score {}, data {}",
                generator.dim(),
                fake_score.dim(),
                data.dim()
            )));
        }
        let latent_dim = dim + config.generator_latent_extra;
        if generator.latent_dim() != latent_dim {
            return Err(DistillError::Setup(format!(
                "the generator takes a {}-wide latent but the config asks for {dim} +                  generator_latent_extra {} = {latent_dim}; build the generator with                  MlpDenoiser::with_latent_extra({}) (only MLP networks have extra latent inputs),                  or set generator_latent_extra to {}",
                generator.latent_dim(),
                config.generator_latent_extra,
                config.generator_latent_extra,
                generator.latent_dim().saturating_sub(dim),
            )));
        }
        let (head, fixed_ratio) = match (config.ratio, critic) {
            (RatioSource::Discriminator, Critic::Learned(h)) => (Some(h), None),
            (RatioSource::Exact, Critic::Fixed(e)) => (None, Some(e)),
            (RatioSource::None, Critic::Unit) => (None, None),
            (r, _) => {
                return Err(DistillError::Setup(format!(
                    "config ratio = \"{}\" but the critic given is another kind; pass Critic::{}",
                    serde_json::to_value(r)
                        .expect("serialises")
                        .as_str()
                        .unwrap_or("?"),
                    match r {
                        RatioSource::Discriminator => "Learned(head)",
                        RatioSource::Exact => "Fixed(estimator)",
                        RatioSource::None => "Unit",
                    }
                )));
            }
        };
        let normaliser = match config.time_bins {
            Some(tb) => {
                let (lo, hi) = noise.range();
                Some(
                    TimeBinnedNormaliser::new(lo, hi, tb.bins, tb.beta)
                        .map_err(DistillError::Config)?,
                )
            }
            None => None,
        };
        let classes = data.n_classes();
        if config.teacher_guidance.is_some() && classes.is_none() {
            return Err(DistillError::Setup(
                "teacher_guidance needs class labels (labelled data and a class-conditional \
                 teacher); drop teacher_guidance for unlabelled data"
                    .into(),
            ));
        }
        // Every trained network's parameters take gradients, whatever the caller built them
        // from (a module made with `from_inner` of EMA weights would otherwise not train).
        let generator = trainable::<B, N>(generator);
        let fake_score = trainable::<B, N>(fake_score);
        let head = head.map(trainable::<B, C>);
        let method = FDistill {
            opt_generator: adamw::<B, N>(config.weight_decay),
            opt_fake_score: adamw::<B, N>(config.weight_decay),
            opt_head: head.as_ref().map(|_| adamw::<B, C>(config.weight_decay)),
            config,
            divergence,
            noise,
            teacher,
            data,
            generator_ema: generator.valid(),
            generator,
            fake_score,
            head,
            fixed_ratio,
            state: MethodState {
                generator_steps: 0,
                normaliser,
            },
            dim,
            latent_dim,
            classes,
            device: device.clone(),
            shard: None,
        };
        method.check_features()?;
        Ok(method)
    }

    /// With a learned head: the configured network must give taps the head accepts.
    fn check_features(&self) -> Result<(), DistillError> {
        let Some(head) = &self.head else {
            return Ok(());
        };
        let x = Tensor::<B, 2>::zeros([2, self.dim], &self.device);
        let sigma = Tensor::<B, 1>::ones([2], &self.device);
        let labels = self
            .classes
            .map(|_| label_tensor::<B>(&[0, 0], &self.device));
        let features = self.features(x.clone(), sigma.clone(), labels.clone());
        if features.is_empty() {
            return Err(DistillError::Setup(format!(
                "feature_source = {:?} but that network has no feature taps (an analytic teacher has none); \
                 use feature_source = \"fake-score-features\", or ratio = \"exact\"/\"none\"",
                self.config.feature_source
            )));
        }
        let input = RatioInput {
            x_noisy: x,
            sigma,
            features,
            labels,
        };
        head.check_input(&input)
            .map_err(|e| DistillError::Setup(format!("discriminator head: {e}")))
    }

    /// Feature taps of `x` from the configured source (no gradient to any parameter of the
    /// frozen teacher; the fake score's parameters see gradients only if the caller steps them).
    fn features(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> Vec<FeatureMap<B>> {
        match self.config.feature_source {
            FeatureSource::TeacherFeatures => {
                self.teacher.denoise_with_features(x, sigma, labels).1
            }
            FeatureSource::FakeScoreFeatures => {
                self.fake_score.denoise_with_features(x, sigma, labels).1
            }
        }
    }

    /// Classes of a class-conditional run (from the data's labels), `None` otherwise.
    pub fn classes(&self) -> Option<usize> {
        self.classes
    }

    /// Labels of `n` generated samples, uniform over the classes (none for unlabelled data).
    fn draw_labels(&self, n: usize, rng: &mut ChaCha8Rng) -> Option<Vec<u32>> {
        self.classes
            .map(|k| (0..n).map(|_| rng.random_range(0..k as u32)).collect())
    }

    /// This replica's rows of a row-major `[batch, cols]` host array drawn for the global
    /// batch (all of it on one device).
    fn mine<V: Copy>(&self, values: Vec<V>, cols: usize) -> Vec<V> {
        match &self.shard {
            Some(s) => s.take_rows(&values, cols),
            None => values,
        }
    }

    /// The number of rows this replica computes of a global batch of `batch`.
    fn my_rows(&self, batch: usize) -> usize {
        self.shard.as_ref().map_or(batch, |s| s.rows(batch).len())
    }

    /// The mean over replicas of one-element losses (unchanged on one device).
    fn mean_over_replicas(
        &self,
        parts: Vec<Tensor<B::InnerBackend, 1>>,
    ) -> Result<Vec<Tensor<B::InnerBackend, 1>>, DistillError> {
        let Some(s) = &self.shard else {
            return Ok(parts);
        };
        let n = parts.len();
        let mean = s.all_reduce(Tensor::cat(parts, 0), Reduce::Mean)?;
        Ok((0..n).map(|i| mean.clone().narrow(0, i, 1)).collect())
    }

    /// The validated configuration.
    pub fn config(&self) -> &DistillConfig {
        &self.config
    }

    /// Width of the generator's latent `z`: the data's dim plus
    /// [`generator_latent_extra`](DistillConfig::generator_latent_extra).
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// The generator (trained weights).
    pub fn generator(&self) -> &N {
        &self.generator
    }

    /// The EMA of the generator: what sampling uses.
    pub fn generator_ema(&self) -> &N::InnerModule {
        &self.generator_ema
    }

    /// `x0 = G(z) = D_G(σ_init z; σ_init)`.
    ///
    /// # Shapes
    /// - `z`: `[batch, latent_dim]`, `labels`: `[batch]`; returns `[batch, dim]`
    fn generate_train(&self, z: Tensor<B, 2>, labels: Option<Tensor<B, 1, Int>>) -> Tensor<B, 2> {
        super::one_step_generate(&self.generator, z, self.config.sigma_init, labels)
    }

    /// The generator objective of SPEC §4 for given latents `z`, noise levels `sigma`, noise
    /// `eps` and class labels (the step draws them; tests pass their own). Every network sees
    /// the same labels. Updates the stage-1 bin means.
    ///
    /// # Shapes
    /// - `z`: `[batch, latent_dim]`, `eps`: `[batch, dim]`, `sigma`: `batch` values,
    ///   `labels`: `[batch]`
    pub fn generator_objective(
        &mut self,
        z: Tensor<B, 2>,
        sigma: &[f64],
        eps: Tensor<B, 2>,
        labels: Option<Tensor<B, 1, Int>>,
    ) -> GeneratorObjective<B> {
        // Without a shard nothing is communicated, so nothing can fail.
        let o = self
            .objective(z, sigma, eps, labels, sigma, None)
            .expect("no communication on one device");
        GeneratorObjective {
            loss: o.loss,
            surrogate: scalar(o.surrogate),
            gan: o.gan.map(scalar),
            log_ratio: o.log_ratio,
            ratio_clipped: o.ratio_clipped,
            weights: o.weights,
        }
    }

    /// [`generator_objective`](Self::generator_objective) with the losses left on the device.
    ///
    /// Data-parallel: `z`, `sigma`, `eps` and `labels` are this replica's rows of the global
    /// batch, `sigma_global` the whole batch's noise levels; the log ratios of the whole batch
    /// are gathered from every replica through `shard`, so the time-bin means and the batch
    /// mean of `h` are those of the global batch, as on one device. On one device
    /// `sigma_global` is `sigma` and `shard` is `None`.
    fn objective(
        &mut self,
        z: Tensor<B, 2>,
        sigma: &[f64],
        eps: Tensor<B, 2>,
        labels: Option<Tensor<B, 1, Int>>,
        sigma_global: &[f64],
        shard: Option<&Shard<B::InnerBackend>>,
    ) -> Result<ObjectiveTensors<B>, DistillError> {
        let [batch, _] = z.dims();
        let global = sigma_global.len();
        let cfg = &self.config;
        let sig = host_tensor::<B, 1>(sigma.to_vec(), [batch], &self.device); // [batch]
        // x0 = G(z); x_t = x0 + σ ε
        let x0 = self.generate_train(z, labels.clone()); // [batch, dim]
        let x_t = x0.clone() + eps * sig.clone().unsqueeze_dim::<2>(1); // [batch, dim]

        // d_F = sg(D_F(x_t)); (d_T, feats) = D_T(x_t): the GAN gradient reaches x0 via feats
        let gan_on = self.head.is_some();
        let (d_t, teacher_feats) =
            self.teacher
                .denoise_with_features(x_t.clone(), sig.clone(), labels.clone());
        // Classifier-free guidance of the real score: D_w = D_T(∅) + w (D_T(y) − D_T(∅))
        let d_t = match (cfg.teacher_guidance, &labels) {
            (Some(w), Some(_)) => {
                let d_null = self
                    .teacher
                    .denoise(x_t.clone().detach(), sig.clone(), None);
                guidance_combine(d_t, d_null, w)
            }
            _ => d_t,
        };
        let (d_f, fake_feats) = if gan_on && cfg.feature_source == FeatureSource::FakeScoreFeatures
        {
            self.fake_score
                .denoise_with_features(x_t.clone(), sig.clone(), labels.clone())
        } else {
            let d = self
                .fake_score
                .denoise(x_t.clone().detach(), sig.clone(), labels.clone());
            (d, Vec::new())
        };
        let (d_t, d_f) = (d_t.detach(), d_f.detach());

        // ℓ = C(feats) (kept with its graph for the GAN term); r from sg(ℓ)
        let features = match cfg.feature_source {
            FeatureSource::TeacherFeatures => teacher_feats,
            FeatureSource::FakeScoreFeatures => fake_feats,
        };
        let logits = self.head.as_ref().map(|h| {
            h.log_ratio(&RatioInput {
                x_noisy: x_t.clone(),
                sigma: sig.clone(),
                features,
                labels: labels.clone(),
            })
        }); // [batch]
        let raw: Vec<f64> = match (&logits, &self.fixed_ratio) {
            (Some(l), _) => to_host(l.clone().detach()),
            (None, Some(e)) => {
                to_host(e.log_ratio(&RatioInput::new(x_t.clone().detach(), sig.clone())))
            }
            (None, None) => vec![0.0; batch],
        };
        // The global batch's log ratios (this replica's own on one device).
        let (raw, mine) = match shard {
            Some(s) => (s.gather(&raw, global, &self.device)?, s.rows(global)),
            None => (raw, 0..batch),
        };

        // r = clip(exp(clamp(ℓ)), lo, hi); stage 1 (time bins); stage 2 h ← h / mean h,
        // over the global batch
        let clamped = clamp_logits(&raw, cfg.logit_clamp);
        let [lo, hi] = cfg.ratio_clip;
        let clipped = clip_ratio(&clamped, lo, hi);
        let ratio_clipped =
            clamped.iter().zip(&clipped).filter(|(a, b)| a != b).count() as f64 / global as f64;
        let log_r = match &mut self.state.normaliser {
            Some(n) => n.update_and_normalise(&clipped, sigma_global),
            None => clipped,
        };
        let weights = if cfg.normalise_weights {
            normalised_weights(self.divergence.as_ref(), &log_r, WEIGHT_EPS)
        } else {
            log_r
                .iter()
                .map(|&l| self.divergence.log_h(l).exp())
                .collect()
        };

        // w = 1 / mean|x0 − d_T| (DMD normaliser); g = sg(w · h · (d_F − d_T))
        let h = host_tensor::<B, 1>(weights[mine].to_vec(), [batch], &self.device); // [batch]
        let wh = if cfg.dmd_normaliser {
            dmd_normaliser(x0.clone(), d_t.clone()) * h
        } else {
            h
        };
        // VarDiU's weight in score units (its Diff-Instruct baseline): × w(σ)/σ²
        let wh = match (cfg.vardiu_weight, &cfg.noise) {
            (Some(w), NoiseDistribution::Power { sigma_max, .. }) => {
                let f: Vec<f64> = sigma
                    .iter()
                    .map(|&s| vardiu_weight(s, *sigma_max, w) / (s * s))
                    .collect();
                wh * host_tensor::<B, 1>(f, [batch], &self.device)
            }
            _ => wh,
        };
        let g = ((d_f - d_t) * wh.unsqueeze_dim::<2>(1)).detach(); // [batch, dim]

        // L_G = surrogate(x0, g) + λ_GAN · mean softplus(−ℓ)
        let surrogate = match cfg.surrogate {
            Surrogate::InjectGradient => inject_gradient(x0, g),
            Surrogate::InnerProduct => inner_product_surrogate(x0, g),
        };
        let (loss, gan) = match logits {
            Some(l) => {
                let gan = gan_generator_loss(l);
                (
                    surrogate.clone() + gan.clone().mul_scalar(cfg.lambda_gan),
                    Some(gan),
                )
            }
            None => (surrogate.clone(), None),
        };
        Ok(ObjectiveTensors {
            loss,
            surrogate,
            gan,
            log_ratio: clamped,
            ratio_clipped,
            weights,
        })
    }

    /// Generator step: objective, back-propagation, global-norm clip, AdamW, EMA.
    ///
    /// Data-parallel: the whole batch is drawn and this replica keeps its rows; the
    /// normalisers see the global batch, and the losses and gradients are averaged over the
    /// replicas before the norm, the clip and the step, which are then the same everywhere.
    fn generator_step(
        &mut self,
        rng: &mut ChaCha8Rng,
        poison: bool,
        lr_factor: f64,
    ) -> Result<FDistillMetrics, DistillError> {
        let mut m = FDistillMetrics::new(Phase::Generator);
        let (b, d, l) = (self.config.batch_size, self.dim, self.latent_dim);
        let rows = self.my_rows(b);
        let t = Instant::now();
        let z = self.mine(standard_normal(b * l, rng), l);
        let sigma_global = self.noise.sample(b, self.state.generator_steps, rng);
        let eps = self.mine(standard_normal(b * d, rng), d);
        let labels = self.draw_labels(b, rng).map(|l| self.mine(l, 1));
        let z = host_tensor::<B, 2>(z, [rows, l], &self.device);
        let sigma = self.mine(sigma_global.clone(), 1);
        let eps = host_tensor::<B, 2>(eps, [rows, d], &self.device);
        let labels = labels.map(|l| label_tensor::<B>(&l, &self.device));
        m.time.sample_s = t.elapsed().as_secs_f64();

        // 3. generator update: h(r) times the score difference, plus the GAN term. The losses
        // and the gradient norm stay on the device until one read after the backward pass
        // (host syncs: the log ratios, then this read).
        let t = Instant::now();
        let shard = self.shard.clone();
        let obj = self.objective(z, &sigma, eps, labels, &sigma_global, shard.as_ref())?;
        let loss = if poison {
            obj.loss.mul_scalar(f64::NAN)
        } else {
            obj.loss
        };
        m.log_ratio = Some(Summary::of(&obj.log_ratio));
        m.ratio_clipped = Some(obj.ratio_clipped);
        m.weight = Some(Summary::of(&obj.weights));
        m.time.forward_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &self.generator);
        let grads = match &shard {
            Some(s) => s.mean_grads::<B, N>(&self.generator, grads)?,
            None => grads,
        };
        let sq = grad_sq_norm::<B, N>(&self.generator, &grads)
            .unwrap_or_else(|| Tensor::zeros([1], &self.device));
        let mut losses = vec![loss.inner(), obj.surrogate.inner()];
        losses.extend(obj.gan.map(|g| g.inner()));
        let mut parts = self.mean_over_replicas(losses)?;
        parts.insert(2, sq);
        let v = read_all(parts);
        let (value, norm) = (v[0], v[2].sqrt());
        m.loss_generator = Some(value);
        m.loss_surrogate = Some(v[1]);
        m.loss_gan = v.get(3).copied();
        m.time.backward_s = t.elapsed().as_secs_f64();
        if !value.is_finite() {
            return Ok(m);
        }
        m.grad_norm_generator = Some(norm);
        if !norm.is_finite() {
            return Ok(m);
        }
        let grads = clip_grads_to::<B, N>(
            &self.generator,
            grads,
            self.config.grad_clip_generator,
            norm,
        );
        let t = Instant::now();
        self.generator = self.opt_generator.step(
            self.config.lr_generator * lr_factor,
            self.generator.clone(),
            grads,
        );
        m.time.update_s = t.elapsed().as_secs_f64();

        // 4. EMA of the generator
        let t = Instant::now();
        self.state.generator_steps += 1;
        let beta = ema_decay(self.config.ema_beta, self.state.generator_steps);
        self.generator_ema = ema_update(self.generator_ema.clone(), &self.generator.valid(), beta);
        m.time.ema_s = t.elapsed().as_secs_f64();
        m.time.allreduce_s = shard.map_or(0.0, |s| s.take_comm_seconds());
        Ok(m)
    }

    /// Critic step: fake-score DSM on detached generator samples, and the discriminator on
    /// noisy real (independent σ′, ε′) vs noisy fake samples; one backward, one AdamW each.
    ///
    /// Data-parallel: the whole batch is drawn and this replica keeps its rows; the losses
    /// and both networks' gradients are averaged over the replicas before the steps.
    fn critic_step(
        &mut self,
        rng: &mut ChaCha8Rng,
        poison: bool,
        lr_factor: f64,
    ) -> Result<FDistillMetrics, DistillError> {
        let mut m = FDistillMetrics::new(Phase::Critic);
        let (b, d) = (self.config.batch_size, self.dim);
        let rows = self.my_rows(b);
        let dev = self.device.clone();
        let t = Instant::now();
        let l = self.latent_dim;
        let z = host_tensor::<B, 2>(self.mine(standard_normal(b * l, rng), l), [rows, l], &dev);
        let steps = self.state.generator_steps;
        let sigma = self.mine(self.noise.sample(b, steps, rng), 1);
        let sigma = host_tensor::<B, 1>(sigma, [rows], &dev);
        let eps = host_tensor::<B, 2>(self.mine(standard_normal(b * d, rng), d), [rows, d], &dev);
        let labels = self
            .draw_labels(b, rng)
            .map(|l| label_tensor::<B>(&self.mine(l, 1), &dev));
        let real = (self.head.is_some()).then(|| {
            let (x_r, labels_r) = self.data.sample_labelled(b, rng);
            let x_r = host_tensor::<B, 2>(self.mine(x_r, d), [rows, d], &dev);
            let labels_r = labels_r.map(|l| label_tensor::<B>(&self.mine(l, 1), &dev));
            let sigma_r = self.mine(self.noise.sample(b, steps, rng), 1);
            let sigma_r = host_tensor::<B, 1>(sigma_r, [rows], &dev);
            let eps_r = self.mine(standard_normal(b * d, rng), d);
            let eps_r = host_tensor::<B, 2>(eps_r, [rows, d], &dev);
            let real_t = x_r + eps_r * sigma_r.clone().unsqueeze_dim::<2>(1); // [rows, d]
            (real_t, sigma_r, labels_r)
        });
        m.time.sample_s = t.elapsed().as_secs_f64();

        // 1. fake-score update on detached generator samples: L_DSM = mean (D_F(x_t) − x0)²
        let t = Instant::now();
        let x0 = self.generate_train(z, labels.clone()).detach(); // [b, d]
        let x_t = x0.clone() + eps * sigma.clone().unsqueeze_dim::<2>(1); // [b, d]
        let (d_f, fake_score_feats) =
            self.fake_score
                .denoise_with_features(x_t.clone(), sigma.clone(), labels.clone());
        let sq = (d_f - x0).powi_scalar(2); // [b, d]
        let dsm = match self.config.dsm_weighting {
            DsmWeighting::Uniform => sq.mean(),
            DsmWeighting::Edm => {
                let w = edm_loss_weight_tensor(sigma.clone(), self.fake_score.sigma_data());
                (sq * w.unsqueeze_dim::<2>(1)).mean()
            }
        };
        // Losses and gradient norms stay on the device until one read after the backward
        // pass (one host sync per critic step).
        let mut parts = vec![dsm.clone().inner()];

        // 2. ratio-estimator update: softplus(C(fake)) + softplus(−C(real))
        let mut loss = dsm;
        if let (Some(head), Some((real_t, sigma_r, labels_r))) = (&self.head, real) {
            let fake_feats = match self.config.feature_source {
                FeatureSource::TeacherFeatures => {
                    self.features(x_t.clone(), sigma.clone(), labels.clone())
                }
                FeatureSource::FakeScoreFeatures => fake_score_feats,
            };
            let real_feats = self.features(real_t.clone(), sigma_r.clone(), labels_r.clone());
            let fake_in = RatioInput {
                x_noisy: x_t,
                sigma,
                features: fake_feats,
                labels,
            };
            let real_in = RatioInput {
                x_noisy: real_t,
                sigma: sigma_r,
                features: real_feats,
                labels: labels_r,
            };
            let disc = head.loss(&real_in, &fake_in);
            parts.push(disc.clone().inner());
            loss = loss + disc;
        }
        if poison {
            loss = loss.mul_scalar(f64::NAN);
        }
        m.time.forward_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut grads = loss.backward();
        let zero = || Tensor::zeros([1], &self.device);
        let mut g_fake = GradientsParams::from_module(&mut grads, &self.fake_score);
        let mut g_head = self
            .head
            .as_ref()
            .map(|h| GradientsParams::from_module(&mut grads, h));
        if let Some(s) = &self.shard {
            g_fake = s.mean_grads::<B, N>(&self.fake_score, g_fake)?;
            if let (Some(h), Some(g)) = (&self.head, g_head.take()) {
                g_head = Some(s.mean_grads::<B, C>(h, g)?);
            }
        }
        let mut parts = self.mean_over_replicas(parts)?;
        parts.push(grad_sq_norm::<B, N>(&self.fake_score, &g_fake).unwrap_or_else(zero));
        if let (Some(h), Some(g)) = (&self.head, &g_head) {
            parts.push(grad_sq_norm::<B, C>(h, g).unwrap_or_else(zero));
        }
        // [dsm, disc?, ‖g_F‖², ‖g_D‖²?]
        let v = read_all(parts);
        let with_head = g_head.is_some();
        let loss_value = if with_head { v[0] + v[1] } else { v[0] };
        m.loss_dsm = Some(if poison { f64::NAN } else { v[0] });
        m.loss_discriminator = with_head.then(|| v[1]);
        m.time.backward_s = t.elapsed().as_secs_f64();
        if !loss_value.is_finite() || poison {
            return Ok(m);
        }
        let k = if with_head { 2 } else { 1 };
        m.grad_norm_fake_score = Some(v[k].sqrt());
        m.grad_norm_discriminator = with_head.then(|| v[k + 1].sqrt());
        if m.non_finite().is_some() {
            return Ok(m);
        }
        let t = Instant::now();
        self.fake_score = self.opt_fake_score.step(
            self.config.lr_fake_score * lr_factor,
            self.fake_score.clone(),
            g_fake,
        );
        if let (Some(head), Some(opt), Some(g)) = (self.head.take(), self.opt_head.as_mut(), g_head)
        {
            self.head = Some(opt.step(self.config.lr_discriminator * lr_factor, head, g));
        }
        m.time.update_s = t.elapsed().as_secs_f64();
        m.time.allreduce_s = self.shard.as_ref().map_or(0.0, |s| s.take_comm_seconds());
        Ok(m)
    }
}

const GENERATOR: &str = "generator.safetensors";
const GENERATOR_EMA: &str = "generator_ema.safetensors";
const FAKE_SCORE: &str = "fake_score.safetensors";
const DISCRIMINATOR: &str = "discriminator.safetensors";
const OPT_GENERATOR: &str = "optim_generator.safetensors";
const OPT_FAKE_SCORE: &str = "optim_fake_score.safetensors";
const OPT_DISCRIMINATOR: &str = "optim_discriminator.safetensors";
const STATE: &str = "fdistill.json";

/// The file of the EMA generator inside a checkpoint directory (what `fdistill sample` loads).
pub const GENERATOR_EMA_FILE: &str = GENERATOR_EMA;

impl<B, T, N, C> DistillMethod<B> for FDistill<B, T, N, C>
where
    B: AutodiffBackend,
    T: FeatureDenoiser<B>,
    N: AutodiffModule<B> + FeatureDenoiser<B> + EdmDenoiser<B>,
    N::InnerModule: Denoiser<B::InnerBackend>,
    C: AutodiffModule<B> + LearnedRatioEstimator<B>,
{
    type Metrics = FDistillMetrics;

    fn name(&self) -> &'static str {
        "f-distill"
    }

    fn step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<FDistillMetrics, DistillError> {
        let poison = self.config.inject_nan_at_step == Some(step);
        let lr_factor = self
            .config
            .lr_schedule
            .factor(step, self.config.driver.steps);
        if self.config.is_generator_step(step) {
            self.generator_step(rng, poison, lr_factor)
        } else {
            self.critic_step(rng, poison, lr_factor)
        }
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
            &self.fake_score,
            &self.opt_fake_score,
            dir,
            (FAKE_SCORE, OPT_FAKE_SCORE),
        )?;
        if let (Some(head), Some(opt)) = (&self.head, &self.opt_head) {
            save_trained(head, opt, dir, (DISCRIMINATOR, OPT_DISCRIMINATOR))?;
        }
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
        (self.fake_score, self.opt_fake_score) = load_trained(
            self.fake_score.clone(),
            self.opt_fake_score.clone(),
            dir,
            (FAKE_SCORE, OPT_FAKE_SCORE),
            &dev,
        )?;
        if let (Some(head), Some(opt)) = (self.head.take(), self.opt_head.take()) {
            let (head, opt) =
                load_trained(head, opt, dir, (DISCRIMINATOR, OPT_DISCRIMINATOR), &dev)?;
            self.head = Some(head);
            self.opt_head = Some(opt);
        }
        self.state = read_json(&dir.join(STATE))?;
        Ok(())
    }

    fn generate(
        &self,
        latents: Tensor<B::InnerBackend, 2>,
        labels: Option<Tensor<B::InnerBackend, 1, Int>>,
    ) -> Tensor<B::InnerBackend, 2> {
        super::one_step_generate(&self.generator_ema, latents, self.config.sigma_init, labels)
    }
}

impl<B, T, N, C> DataParallel<B> for FDistill<B, T, N, C>
where
    B: AutodiffBackend,
    T: FeatureDenoiser<B>,
    N: AutodiffModule<B> + FeatureDenoiser<B> + EdmDenoiser<B>,
    N::InnerModule: Denoiser<B::InnerBackend>,
    C: AutodiffModule<B> + LearnedRatioEstimator<B>,
{
    /// Every trained network (generator, its EMA, fake score, discriminator head) takes rank
    /// 0's weights; the teacher is frozen and loaded the same on every replica.
    fn set_shard(&mut self, shard: Shard<B::InnerBackend>) -> Result<(), DistillError> {
        shard.check_batch(self.config.batch_size, "batch_size")?;
        self.generator = shard.broadcast_module::<B, N>(self.generator.clone())?;
        self.generator_ema = shard.broadcast_inner(self.generator_ema.clone())?;
        self.fake_score = shard.broadcast_module::<B, N>(self.fake_score.clone())?;
        if let Some(h) = self.head.take() {
            self.head = Some(shard.broadcast_module::<B, C>(h)?);
        }
        self.shard = Some(shard);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::{Module, Param};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Int;
    use fdistill_core::exact::{AnalyticTeacher, ExactRatio};
    use fdistill_core::gmm::{self, GaussianMixture};
    use fdistill_core::update::{LOGIT_CLAMP, dmd_weight};
    use fdistill_divergence::{ModeBehaviour, register_divergence, sigmoid};

    type A = Autodiff<Flex>;

    /// Jensen–Shannon, registered for these tests only (core does not link the built-ins):
    /// `f = r log r − (r+1) log((r+1)/2)`, `h = r/(r+1)`, `log h = log σ(ℓ)`.
    #[derive(Debug, Clone, Copy, Default)]
    struct TestJs;
    impl Divergence for TestJs {
        fn name(&self) -> &'static str {
            "test-jensen-shannon"
        }
        fn summary(&self) -> String {
            "test-only JS copy".into()
        }
        fn h_formula(&self) -> String {
            "r/(r+1)".into()
        }
        fn mode(&self) -> ModeBehaviour {
            ModeBehaviour::Balanced
        }
        fn f(&self, r: f64) -> f64 {
            r * r.ln() - (r + 1.0) * ((r + 1.0) / 2.0).ln()
        }
        fn f_prime(&self, r: f64) -> f64 {
            r.ln() - ((r + 1.0) / 2.0).ln()
        }
        fn f_second(&self, r: f64) -> f64 {
            1.0 / (r * (r + 1.0))
        }
        fn h(&self, r: f64) -> f64 {
            r / (r + 1.0)
        }
        fn log_h(&self, l: f64) -> f64 {
            fdistill_divergence::log_sigmoid(l)
        }
    }
    register_divergence!(TestJs);

    /// The exact Tweedie denoiser of `N(m, s² I)`: `D(x; σ) = m + s²/(s² + σ²) (x − m)`,
    /// with learnable `m` and `log s`. As a generator, `x0 = D(σ_init z; σ_init)` is Gaussian
    /// with mean `(1 − c) m` and std `c σ_init`, `c = s²/(s² + σ_init²)`.
    #[derive(Module, Debug)]
    struct GaussDenoiser<B: Backend> {
        m: Param<Tensor<B, 1>>,
        log_s: Param<Tensor<B, 1>>,
    }

    impl<B: Backend> GaussDenoiser<B> {
        fn new(m: &[f64], s: f64, device: &B::Device) -> Self {
            let mt = host_tensor::<B, 1>(m.to_vec(), [m.len()], device);
            GaussDenoiser {
                m: Param::from_tensor(mt),
                log_s: Param::from_tensor(host_tensor::<B, 1>(vec![s.ln()], [1], device)),
            }
        }
    }

    impl<B: Backend> Denoiser<B> for GaussDenoiser<B> {
        fn dim(&self) -> usize {
            self.m.dims()[0]
        }
        fn denoise(
            &self,
            x: Tensor<B, 2>,
            sigma: Tensor<B, 1>,
            _labels: Option<Tensor<B, 1, Int>>,
        ) -> Tensor<B, 2> {
            let s2 = self.log_s.val().mul_scalar(2.0).exp(); // [1]
            let c = s2.clone().unsqueeze_dim::<2>(0)
                / (sigma.powi_scalar(2).unsqueeze_dim::<2>(1) + s2.unsqueeze_dim::<2>(0)); // [b, 1]
            let m = self.m.val().unsqueeze_dim::<2>(0); // [1, d]
            m.clone() + (x - m) * c
        }
    }

    impl<B: Backend> FeatureDenoiser<B> for GaussDenoiser<B> {
        fn denoise_with_features(
            &self,
            x: Tensor<B, 2>,
            sigma: Tensor<B, 1>,
            labels: Option<Tensor<B, 1, Int>>,
        ) -> (Tensor<B, 2>, Vec<FeatureMap<B>>) {
            (
                self.denoise(x.clone(), sigma, labels),
                vec![FeatureMap::Flat(x)],
            )
        }
    }

    impl<B: Backend> EdmDenoiser<B> for GaussDenoiser<B> {
        fn sigma_data(&self) -> f64 {
            1.0
        }
    }

    /// A linear head on the flat tap (only to fill the type parameter and to test the
    /// learned path).
    #[derive(Module, Debug)]
    struct LinearHead<B: Backend> {
        lin: Linear<B>,
    }

    impl<B: Backend> DensityRatioEstimator<B> for LinearHead<B> {
        fn name(&self) -> &str {
            "linear"
        }
        fn log_ratio(&self, input: &RatioInput<B>) -> Tensor<B, 1> {
            let FeatureMap::Flat(f) = &input.features[0] else {
                unreachable!("flat taps only")
            };
            self.lin.forward(f.clone()).squeeze_dim::<1>(1)
        }
    }

    impl<B: AutodiffBackend> LearnedRatioEstimator<B> for LinearHead<B> {
        fn loss(&self, real: &RatioInput<B>, fake: &RatioInput<B>) -> Tensor<B, 1> {
            fdistill_core::losses::discriminator_loss(self.log_ratio(fake), self.log_ratio(real))
        }
    }

    fn p() -> GaussianMixture {
        GaussianMixture::isotropic(
            vec![0.3, 0.7],
            vec![vec![-2.0, 1.0], vec![1.5, -0.5]],
            vec![0.4, 0.6],
        )
        .unwrap()
    }

    type ExactMethod = FDistill<A, AnalyticTeacher, GaussDenoiser<A>, LinearHead<A>>;

    const SIGMA_INIT: f64 = 80.0;
    const M_G: [f64; 2] = [0.4, -0.3];

    /// Generator scale s with c σ_init = 1.1 (student std 1.1), c = s²/(s² + σ_init²).
    fn generator_scale() -> (f64, f64) {
        let std = 1.1;
        let c = std / SIGMA_INIT;
        ((c * SIGMA_INIT * SIGMA_INIT / (1.0 - c)).sqrt(), c)
    }

    fn exact_setup(divergence: &str) -> (ExactMethod, GaussianMixture, f64) {
        exact_setup_with(exact_config(divergence))
    }

    fn exact_config(divergence: &str) -> DistillConfig {
        DistillConfig {
            divergence: divergence.into(),
            batch_size: 6,
            sigma_init: SIGMA_INIT,
            ..DistillConfig::toy_exact()
        }
    }

    fn exact_setup_with(config: DistillConfig) -> (ExactMethod, GaussianMixture, f64) {
        let device = Default::default();
        let (s, c) = generator_scale();
        let q_mean: Vec<f64> = M_G.iter().map(|m| (1.0 - c) * m).collect();
        let q = GaussianMixture::isotropic(vec![1.0], vec![q_mean.clone()], vec![c * SIGMA_INIT])
            .unwrap();
        let method = FDistill::with_networks(
            config,
            AnalyticTeacher::new(p()),
            GaussDenoiser::new(&M_G, s, &device),
            GaussDenoiser::new(&q_mean, c * SIGMA_INIT, &device),
            Critic::Fixed(Box::new(ExactRatio {
                p: p(),
                q: q.clone(),
            })),
            TrainingData::Mixture(p()),
            &device,
        )
        .unwrap();
        (method, q, c)
    }

    /// SPEC §4 by hand in f64 with the closed forms of the testbed: the gradient of the
    /// generator objective w.r.t. the generator's mean parameter is
    /// `(1 − c) Σ_i w_i h̃_i (d_F − d_T)_i / (B d)` with `h̃` the clamped, clipped, normalised
    /// JS weights of the exact log ratio and `w_i` the DMD normaliser.
    #[test]
    fn generator_gradient_equals_the_spec_formula_on_the_exact_testbed() {
        let (mut method, q, c) = exact_setup("test-jensen-shannon");
        let device = Default::default();
        let (b, d) = (6usize, 2usize);
        let z: Vec<f64> = vec![
            0.3, -1.2, 1.5, 0.2, -0.7, 0.9, 0.0, -2.0, 1.1, 1.1, -0.4, 0.6,
        ];
        let eps: Vec<f64> = vec![
            -0.5, 0.8, 0.1, -1.3, 0.9, 0.4, -1.0, 0.3, 0.2, -0.2, 1.7, -0.6,
        ];
        let sigma = [0.05, 0.3, 0.8, 1.5, 3.0, 0.6];
        let obj = method.generator_objective(
            host_tensor::<A, 2>(z.clone(), [b, d], &device),
            &sigma,
            host_tensor::<A, 2>(eps.clone(), [b, d], &device),
            None,
        );
        let grads = obj.loss.backward();
        let got: Vec<f64> = to_host(method.generator().m.val().grad(&grads).unwrap());

        // Independent host computation.
        let js = TestJs;
        let mut rows = Vec::new();
        let mut log_r = Vec::new();
        for i in 0..b {
            let x0: Vec<f64> = (0..d)
                .map(|j| (1.0 - c) * M_G[j] + c * SIGMA_INIT * z[i * d + j])
                .collect();
            let xt: Vec<f64> = (0..d).map(|j| x0[j] + sigma[i] * eps[i * d + j]).collect();
            let dt = p().denoise(&xt, sigma[i]);
            let df = q.denoise(&xt, sigma[i]);
            let l = gmm::log_ratio(&p(), &q, &xt, sigma[i]).clamp(-LOGIT_CLAMP, LOGIT_CLAMP);
            log_r.push(l.clamp(0.1f64.ln(), 20f64.ln()));
            rows.push((x0, dt, df));
        }
        let h = normalised_weights(&js, &log_r, WEIGHT_EPS);
        let mut expect = [0.0; 2];
        let mut half_mean_g2 = 0.0;
        for (i, (x0, dt, df)) in rows.iter().enumerate() {
            let w = dmd_weight(x0, dt);
            for j in 0..d {
                let g = w * h[i] * (df[j] - dt[j]);
                expect[j] += (1.0 - c) * g / (b * d) as f64;
                half_mean_g2 += 0.5 * g * g / (b * d) as f64;
            }
        }
        for j in 0..d {
            assert!(
                (got[j] - expect[j]).abs() < 2e-3 * expect[j].abs().max(1e-3),
                "∂L/∂m_{j}: {} vs {}",
                got[j],
                expect[j]
            );
        }
        assert!((obj.surrogate - half_mean_g2).abs() < 2e-3 * half_mean_g2);
        // The weights are not all 1, so h(r) mattered in this test.
        assert!(h.iter().any(|w| (w - 1.0).abs() > 0.05), "{h:?}");
        assert!((h.iter().sum::<f64>() / b as f64 - 1.0).abs() < 1e-5);
    }

    /// Classifier-free guidance on the exact testbed: a class-conditional mixture teacher
    /// (class 0 = component 0, class 1 = component 1 of `p`), `teacher_guidance = w`. The
    /// generator's gradient is SPEC §4's with the guided real denoiser
    /// `D_w = D(∅) + w (D(y) − D(∅))`, computed here from the closed forms (`p` for ∅, the
    /// single component of the class for y); and unlabelled data is refused.
    #[test]
    fn guided_generator_gradient_uses_the_guided_real_denoiser() {
        use fdistill_core::exact::ClassConditionalTeacher;
        use fdistill_data::Dataset;
        let device = Default::default();
        let (s, c) = generator_scale();
        let q_mean: Vec<f64> = M_G.iter().map(|m| (1.0 - c) * m).collect();
        let q = GaussianMixture::isotropic(vec![1.0], vec![q_mean.clone()], vec![c * SIGMA_INIT])
            .unwrap();
        let w = 2.5;
        let config = DistillConfig {
            divergence: "test-jensen-shannon".into(),
            batch_size: 4,
            sigma_init: SIGMA_INIT,
            teacher_guidance: Some(w),
            ..DistillConfig::toy_exact()
        };
        let labelled = TrainingData::Samples(Dataset {
            values: vec![0.0, 0.0, 1.0, 1.0],
            dim: 2,
            labels: Some(vec![0, 1]),
        });
        let build = |data: TrainingData| {
            FDistill::<A, ClassConditionalTeacher, GaussDenoiser<A>, LinearHead<A>>::with_networks(
                config.clone(),
                ClassConditionalTeacher::new(p(), &[0, 1]).unwrap(),
                GaussDenoiser::new(&M_G, s, &device),
                GaussDenoiser::new(&q_mean, c * SIGMA_INIT, &device),
                Critic::Fixed(Box::new(ExactRatio {
                    p: p(),
                    q: q.clone(),
                })),
                data,
                &device,
            )
        };
        let e = build(TrainingData::Mixture(p()))
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("teacher_guidance needs class labels"), "{e}");
        let mut method = build(labelled).unwrap();

        let (b, d) = (4usize, 2usize);
        let z: Vec<f64> = vec![0.3, -1.2, 1.5, 0.2, -0.7, 0.9, 0.0, -2.0];
        let eps: Vec<f64> = vec![-0.5, 0.8, 0.1, -1.3, 0.9, 0.4, -1.0, 0.3];
        let sigma = [0.3, 0.8, 1.5, 0.6];
        let labels = [0i64, 1, 1, 0];
        let y = Tensor::<A, 1, Int>::from_data(TensorData::new(labels.to_vec(), [b]), &device);
        let obj = method.generator_objective(
            host_tensor::<A, 2>(z.clone(), [b, d], &device),
            &sigma,
            host_tensor::<A, 2>(eps.clone(), [b, d], &device),
            Some(y),
        );
        let grads = obj.loss.backward();
        let got: Vec<f64> = to_host(method.generator().m.val().grad(&grads).unwrap());

        let component = |k: usize| {
            GaussianMixture::isotropic(vec![1.0], vec![p().means()[k].clone()], vec![[0.4, 0.6][k]])
                .unwrap()
        };
        let js = TestJs;
        let mut rows = Vec::new();
        let mut log_r = Vec::new();
        let mut guidance_mattered = false;
        for i in 0..b {
            let x0: Vec<f64> = (0..d)
                .map(|j| (1.0 - c) * M_G[j] + c * SIGMA_INIT * z[i * d + j])
                .collect();
            let xt: Vec<f64> = (0..d).map(|j| x0[j] + sigma[i] * eps[i * d + j]).collect();
            let d_null = p().denoise(&xt, sigma[i]);
            let d_y = component(labels[i] as usize).denoise(&xt, sigma[i]);
            let dt: Vec<f64> = (0..d)
                .map(|j| d_null[j] + w * (d_y[j] - d_null[j]))
                .collect();
            guidance_mattered |= (0..d).any(|j| (dt[j] - d_y[j]).abs() > 1e-2);
            let df = q.denoise(&xt, sigma[i]);
            let l = gmm::log_ratio(&p(), &q, &xt, sigma[i]).clamp(-LOGIT_CLAMP, LOGIT_CLAMP);
            log_r.push(l.clamp(0.1f64.ln(), 20f64.ln()));
            rows.push((x0, dt, df));
        }
        assert!(
            guidance_mattered,
            "D_w equals D_y on every row: a weak test"
        );
        let h = normalised_weights(&js, &log_r, WEIGHT_EPS);
        let mut expect = [0.0; 2];
        for (i, (x0, dt, df)) in rows.iter().enumerate() {
            let wn = dmd_weight(x0, dt);
            for j in 0..d {
                expect[j] += (1.0 - c) * wn * h[i] * (df[j] - dt[j]) / (b * d) as f64;
            }
        }
        for j in 0..d {
            assert!(
                (got[j] - expect[j]).abs() < 2e-3 * expect[j].abs().max(1e-3),
                "∂L/∂m_{j}: {} vs {}",
                got[j],
                expect[j]
            );
        }
    }

    #[test]
    fn a_critic_that_does_not_match_the_config_is_rejected() {
        let device = Default::default();
        let (s, _) = generator_scale();
        let net = GaussDenoiser::<A>::new(&M_G, s, &device);
        let e = FDistill::<A, _, _, LinearHead<A>>::new(
            DistillConfig {
                divergence: "test-jensen-shannon".into(),
                ..DistillConfig::toy_exact()
            },
            AnalyticTeacher::new(p()),
            net.clone(),
            Critic::Unit,
            TrainingData::Mixture(p()),
            &device,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("Critic::Fixed"), "{e}");
        // Teacher features from an analytic teacher: no taps, refused before training.
        let e = FDistill::<A, _, _, LinearHead<A>>::new(
            DistillConfig {
                divergence: "test-jensen-shannon".into(),
                ..DistillConfig::toy()
            },
            AnalyticTeacher::new(p()),
            net,
            Critic::Learned(LinearHead {
                lin: LinearConfig::new(2, 1).init(&device),
            }),
            TrainingData::Mixture(p()),
            &device,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no feature taps"), "{e}");
        // Unknown divergence: the registry's list of names.
        let e = DistillConfig {
            divergence: "no-such-divergence".into(),
            ..DistillConfig::toy()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown divergence `no-such-divergence`")
                && e.contains("test-jensen-shannon"),
            "{e}"
        );
    }

    /// The learned path runs: fake-score features from a Gaussian "network", a linear head,
    /// critic and generator steps with finite metrics, and the stats reported per phase.
    #[test]
    fn learned_critic_steps_run_and_report_their_phase() {
        let device = Default::default();
        let (s, _) = generator_scale();
        let mut method = FDistill::<A, _, _, _>::new(
            DistillConfig {
                divergence: "test-jensen-shannon".into(),
                feature_source: FeatureSource::FakeScoreFeatures,
                batch_size: 16,
                sigma_init: SIGMA_INIT,
                ..DistillConfig::toy()
            },
            AnalyticTeacher::new(p()),
            GaussDenoiser::<A>::new(&M_G, s, &device),
            Critic::Learned(LinearHead {
                lin: LinearConfig::new(2, 1).init(&device),
            }),
            TrainingData::Mixture(p()),
            &device,
        )
        .unwrap();
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let m1 = method.step(1, &mut rng).unwrap();
        assert_eq!(m1.phase, Phase::Critic);
        assert!(m1.loss_dsm.is_some() && m1.loss_discriminator.is_some());
        assert!(m1.grad_norm_discriminator.unwrap() > 0.0);
        assert!(m1.non_finite().is_none());
        method.step(2, &mut rng).unwrap();
        let m3 = method.step(3, &mut rng).unwrap();
        assert_eq!(m3.phase, Phase::Generator);
        assert!(m3.loss_gan.is_some() && m3.weight.is_some());
        assert!(m3.grad_norm_generator.unwrap() > 0.0);
        assert!(m3.non_finite().is_none(), "{m3:?}");
    }

    /// The cosine learning-rate schedule scales all three optimisers' steps: a run with
    /// `lr_schedule = cosine(φ)` equals, parameter for parameter, a constant-rate run whose
    /// three learning rates are set by hand before each iteration to
    /// `lr · (φ + (1 − φ)(1 + cos(π (i − 1)/(n − 1)))/2)`.
    #[test]
    fn cosine_schedule_scales_every_learning_rate_by_its_closed_form() {
        use super::super::config::LrSchedule;
        let n = 6;
        let phi = 0.25;
        let mut scheduled = learned_method(n, None);
        scheduled.config.lr_schedule = LrSchedule::cosine(phi);
        let mut by_hand = learned_method(n, None);
        let base = (
            by_hand.config.lr_generator,
            by_hand.config.lr_fake_score,
            by_hand.config.lr_discriminator,
        );
        let mut rng_a = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
        let mut rng_b = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
        for i in 1..=n {
            let f = phi
                + (1.0 - phi) * 0.5 * (1.0 + (std::f64::consts::PI * (i - 1) as f64 / 5.0).cos());
            by_hand.config.lr_generator = base.0 * f;
            by_hand.config.lr_fake_score = base.1 * f;
            by_hand.config.lr_discriminator = base.2 * f;
            scheduled.step(i, &mut rng_a).unwrap();
            by_hand.step(i, &mut rng_b).unwrap();
        }
        let params = |m: &FDistill<A, AnalyticTeacher, GaussDenoiser<A>, LinearHead<A>>| {
            let mut v: Vec<f64> = to_host(m.generator.m.val());
            v.extend(to_host::<_, 1>(m.fake_score.m.val()));
            v.extend(to_host::<_, 1>(m.fake_score.log_s.val()));
            v.extend(to_host::<_, 2>(m.head.as_ref().unwrap().lin.weight.val()));
            v
        };
        let (a, b) = (params(&scheduled), params(&by_hand));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-3), "{a:?} vs {b:?}");
        }
        // ... and differs from the constant-rate run (the schedule did something).
        let mut constant = learned_method(n, None);
        let mut rng_c = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
        for i in 1..=n {
            constant.step(i, &mut rng_c).unwrap();
        }
        let c = params(&constant);
        let diff = a
            .iter()
            .zip(&c)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(diff > 1e-5, "cosine and constant runs agree: {diff}");
    }

    #[test]
    fn lr_schedule_factors_and_validation() {
        use super::super::config::LrSchedule;
        let s = LrSchedule::cosine(0.1);
        assert_eq!(s.factor(1, 101), 1.0);
        assert!((s.factor(101, 101) - 0.1).abs() < 1e-15);
        assert!((s.factor(51, 101) - 0.55).abs() < 1e-12);
        let f: Vec<f64> = (1..=101).map(|i| s.factor(i, 101)).collect();
        assert!(f.windows(2).all(|w| w[1] <= w[0]));
        assert_eq!(LrSchedule::Constant.factor(7, 10), 1.0);
        let e = DistillConfig {
            divergence: "test-jensen-shannon".into(),
            lr_schedule: LrSchedule::cosine(1.5),
            ..DistillConfig::toy()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("final_fraction") && e.contains("1.5"), "{e}");
        // Omitted when constant (old config files stay valid), read back when set. Only
        // `toy` decays; every preset built on it keeps the constant rate it was measured with.
        for name in [
            "toy-exact",
            "cifar10",
            "imagenet64",
            "dmd2",
            "dmd2-no-gan",
            "diff-instruct",
        ] {
            let cfg = DistillConfig::preset(name).unwrap();
            assert_eq!(cfg.lr_schedule, LrSchedule::Constant, "{name}");
            let json = serde_json::to_string(&cfg).unwrap();
            assert!(!json.contains("lr_schedule"), "{name}");
        }
        let json = serde_json::to_string(&DistillConfig::toy()).unwrap();
        assert!(
            json.contains(
                "\"lr_schedule\":{\"type\":\"cosine\",\"final_fraction\":0.05,\"hold_fraction\":0.5}"
            ),
            "{json}"
        );
        let json = serde_json::to_string(&DistillConfig::cifar10()).unwrap();
        let cfg: DistillConfig = serde_json::from_str(&json.replace(
            "\"weight_decay\"",
            "\"lr_schedule\":{\"type\":\"cosine\",\"final_fraction\":0.2},\"weight_decay\"",
        ))
        .unwrap();
        assert_eq!(cfg.lr_schedule, LrSchedule::cosine(0.2));
        assert!(
            !serde_json::to_string(&cfg)
                .unwrap()
                .contains("hold_fraction")
        );
    }

    /// A held cosine: factor 1 through the hold, then the cosine of the remaining progress,
    /// checked against the closed form at every iteration; bad holds are refused.
    #[test]
    fn held_cosine_is_flat_then_a_rescaled_cosine() {
        use super::super::config::LrSchedule;
        let (n, h, phi) = (101, 0.6, 0.05);
        let s = LrSchedule::Cosine {
            final_fraction: phi,
            hold_fraction: h,
        };
        for i in 1..=n {
            let p = (i - 1) as f64 / 100.0;
            let want = if p <= h {
                1.0
            } else {
                let q = (p - h) / (1.0 - h);
                phi + (1.0 - phi) * 0.5 * (1.0 + (std::f64::consts::PI * q).cos())
            };
            assert!((s.factor(i, n) - want).abs() < 1e-12, "i = {i}");
        }
        assert_eq!(s.factor(61, n), 1.0);
        assert!(s.factor(62, n) < 1.0);
        assert!((s.factor(n, n) - phi).abs() < 1e-15);
        // Midway through the decay (p = 0.8) the factor is halfway between 1 and φ.
        assert!((s.factor(81, n) - (1.0 + phi) / 2.0).abs() < 1e-12);
        for bad in [1.0, -0.1, f64::NAN] {
            let e = DistillConfig {
                divergence: "test-jensen-shannon".into(),
                lr_schedule: LrSchedule::Cosine {
                    final_fraction: phi,
                    hold_fraction: bad,
                },
                ..DistillConfig::toy()
            }
            .check()
            .unwrap_err()
            .to_string();
            assert!(e.contains("hold_fraction"), "{e}");
        }
        let cfg: LrSchedule =
            serde_json::from_str(r#"{"type":"cosine","final_fraction":0.05,"hold_fraction":0.5}"#)
                .unwrap();
        assert_eq!(
            cfg,
            LrSchedule::Cosine {
                final_fraction: 0.05,
                hold_fraction: 0.5
            }
        );
    }

    fn learned_method(
        steps: usize,
        nan_at: Option<usize>,
    ) -> FDistill<A, AnalyticTeacher, GaussDenoiser<A>, LinearHead<A>> {
        let device = Default::default();
        let (s, _) = generator_scale();
        let head = LinearHead {
            lin: LinearConfig::new(2, 1)
                .with_initializer(burn::nn::Initializer::Constant { value: 0.05 })
                .init(&device),
        };
        FDistill::new(
            DistillConfig {
                divergence: "test-jensen-shannon".into(),
                feature_source: FeatureSource::FakeScoreFeatures,
                batch_size: 16,
                sigma_init: SIGMA_INIT,
                time_bins: Some(super::super::config::TimeBins { bins: 4, beta: 0.5 }),
                lr_generator: 1e-2,
                // The schedule test sets rates by hand against this constant-rate run.
                lr_schedule: super::super::config::LrSchedule::Constant,
                inject_nan_at_step: nan_at,
                driver: super::super::DriverConfig {
                    steps,
                    checkpoint_every: 6,
                    log_every: 1,
                    seed: 3,
                },
                ..DistillConfig::toy()
            },
            AnalyticTeacher::new(p()),
            GaussDenoiser::<A>::new(&M_G, s, &device),
            Critic::Learned(head),
            TrainingData::Mixture(p()),
            &device,
        )
        .unwrap()
    }

    fn run(
        method: &mut FDistill<A, AnalyticTeacher, GaussDenoiser<A>, LinearHead<A>>,
        dir: &Path,
        resume: bool,
    ) -> Result<super::super::driver::DriverSummary, DistillError> {
        let run = crate::checkpoint::RunDir::create(dir).unwrap();
        let config = method.config().driver.clone();
        super::super::run_distillation(method, &config, &run, resume, |_| Ok(()))
    }

    /// metrics.jsonl without the wall-clock times.
    fn metrics_without_time(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("time");
                v
            })
            .collect()
    }

    /// 12 steps in one go vs 6 steps, then a fresh process-like restart resumed to 12: the
    /// same metrics, line for line (networks, optimiser moments, time-bin means, EMA, RNG).
    #[test]
    fn resume_is_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        run(&mut learned_method(12, None), &a, false).unwrap();
        run(&mut learned_method(6, None), &b, false).unwrap();
        let e = run(&mut learned_method(12, None), &b, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--resume"), "{e}");
        let summary = run(&mut learned_method(12, None), &b, true).unwrap();
        assert_eq!((summary.first_step, summary.last_step), (7, 12));
        let (ma, mb) = (metrics_without_time(&a), metrics_without_time(&b));
        assert_eq!(ma.len(), 12);
        assert_eq!(ma, mb);
        // metrics.jsonl holds no wall-clock times: the files are equal byte for byte, and
        // so are the generator's weights.
        assert!(ma.iter().all(|l| l.get("time").is_none()));
        let bytes = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
        assert_eq!(bytes(&a, "metrics.jsonl"), bytes(&b, "metrics.jsonl"));
        for f in ["generator.safetensors", "generator_ema.safetensors"] {
            let f = format!("checkpoint/{f}");
            assert_eq!(bytes(&a, &f), bytes(&b, &f), "{f}");
        }
        // The times went to timing.jsonl, one line per logged step.
        let timing = std::fs::read_to_string(b.join("timing.jsonl")).unwrap();
        assert_eq!(timing.lines().count(), 12);
        assert!(timing.contains("\"forward_s\""), "{timing}");
        // The run changed the generator, so equality is not trivial.
        assert_ne!(ma[2]["loss_generator"], ma[11]["loss_generator"]);
    }

    /// An injected NaN at step 8 (a critic step) stops training with the step and quantity;
    /// the checkpoint of step 6 is intact and loadable, and nothing of step 8 was logged.
    #[test]
    fn injected_fault_stops_and_keeps_the_last_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let e = run(&mut learned_method(12, Some(8)), &dir, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, DistillError::NonFinite { step: 8, quantity, .. } if quantity == "fake-score DSM loss"),
            "{msg}"
        );
        assert!(
            msg.contains("at step 8") && msg.contains("(step 6) is intact"),
            "{msg}"
        );
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("checkpoint/driver.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(state["step"], 6);
        let mut fresh = learned_method(12, None);
        fresh.load(&dir.join("checkpoint")).unwrap();
        assert_eq!(metrics_without_time(&dir).len(), 7);
        // Resuming without the fault finishes the run.
        let s = run(&mut learned_method(12, None), &dir, true).unwrap();
        assert_eq!(s.last_step, 12);
    }

    #[test]
    fn non_finite_reports_the_first_bad_quantity() {
        let mut m = FDistillMetrics::new(Phase::Critic);
        m.loss_dsm = Some(1.0);
        m.grad_norm_fake_score = Some(f64::INFINITY);
        assert_eq!(
            m.non_finite(),
            Some(("fake-score gradient norm".to_string(), f64::INFINITY))
        );
        m.grad_norm_fake_score = Some(2.0);
        assert_eq!(m.non_finite(), None);
        let _ = sigmoid(0.0);
    }

    // ---- issue 19: value checks of the generator objective ----

    /// A Gaussian denoiser whose feature tap is its own output `D(x; σ)` (not `x`), so that
    /// teacher and fake-score taps differ and a head reading the wrong one is seen.
    #[derive(Module, Debug)]
    struct TapGauss<B: Backend> {
        inner: GaussDenoiser<B>,
    }

    impl<B: Backend> Denoiser<B> for TapGauss<B> {
        fn dim(&self) -> usize {
            self.inner.dim()
        }
        fn denoise(
            &self,
            x: Tensor<B, 2>,
            sigma: Tensor<B, 1>,
            labels: Option<Tensor<B, 1, Int>>,
        ) -> Tensor<B, 2> {
            self.inner.denoise(x, sigma, labels)
        }
    }

    impl<B: Backend> FeatureDenoiser<B> for TapGauss<B> {
        fn denoise_with_features(
            &self,
            x: Tensor<B, 2>,
            sigma: Tensor<B, 1>,
            labels: Option<Tensor<B, 1, Int>>,
        ) -> (Tensor<B, 2>, Vec<FeatureMap<B>>) {
            let d = self.inner.denoise(x, sigma, labels);
            (d.clone(), vec![FeatureMap::Flat(d)])
        }
    }

    impl<B: Backend> EdmDenoiser<B> for TapGauss<B> {
        fn sigma_data(&self) -> f64 {
            1.0
        }
    }

    fn tap(m: &[f64], s: f64) -> TapGauss<A> {
        TapGauss {
            inner: GaussDenoiser::new(m, s, &Default::default()),
        }
    }

    /// Host Tweedie denoiser of `N(m, s² I)`: `m + s²/(s² + σ²)(x − m)` and its slope.
    fn gauss_host(m: &[f64], s: f64, x: &[f64], sigma: f64) -> (Vec<f64>, f64) {
        let c = s * s / (s * s + sigma * sigma);
        (m.iter().zip(x).map(|(m, x)| m + c * (x - m)).collect(), c)
    }

    fn softplus(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    const HEAD_W: [f64; 2] = [4.0, -3.0];
    const HEAD_B: f64 = 0.3;
    const M_T: [f64; 2] = [0.5, -0.8];
    const S_T: f64 = 1.3;
    const M_F: [f64; 2] = [-0.2, 0.6];
    const S_F: f64 = 0.9;

    fn fixed_head() -> LinearHead<A> {
        let device = Default::default();
        let mut lin = LinearConfig::new(2, 1).init::<A>(&device);
        lin.weight = Param::from_tensor(host_tensor::<A, 2>(HEAD_W.to_vec(), [2, 1], &device));
        lin.bias = Some(Param::from_tensor(host_tensor::<A, 1>(
            vec![HEAD_B],
            [1],
            &device,
        )));
        LinearHead { lin }
    }

    /// SPEC §2–§4 with a learned head, by value, for both feature sources: the reported
    /// log ratio is ℓ clamped to the config's `logit_clamp`; the weights are the JS `h` of ℓ
    /// clamped, clipped to the config's `ratio_clip` and normalised; `gan = mean softplus(−ℓ)`
    /// of the unclamped ℓ; `loss = surrogate + λ_GAN · gan`; and the gradient w.r.t. the
    /// generator's mean holds the GAN term's path through the (teacher or fake-score) taps.
    /// Clamp and clip are set away from their defaults, so constants re-typed in the code
    /// instead of the config's values fail.
    #[test]
    fn learned_head_objective_matches_the_spec_by_value_for_both_feature_sources() {
        for source in [
            FeatureSource::TeacherFeatures,
            FeatureSource::FakeScoreFeatures,
        ] {
            let device = Default::default();
            let (s_g, c_g) = generator_scale();
            let config = DistillConfig {
                divergence: "test-jensen-shannon".into(),
                feature_source: source,
                sigma_init: SIGMA_INIT,
                lambda_gan: 0.7,
                logit_clamp: 2.0,
                ratio_clip: [0.05, 5.0],
                ..DistillConfig::toy()
            };
            let (clamp, [lo, hi], lambda) =
                (config.logit_clamp, config.ratio_clip, config.lambda_gan);
            let mut method = FDistill::with_networks(
                config,
                tap(&M_T, S_T).no_grad(),
                tap(&M_G, s_g),
                tap(&M_F, S_F),
                Critic::Learned(fixed_head()),
                TrainingData::Mixture(p()),
                &device,
            )
            .unwrap();
            let (b, d) = (8usize, 2usize);
            let z: Vec<f64> = vec![
                0.3, -1.2, 1.5, 0.2, -0.7, 0.9, 0.0, -2.0, 1.1, 1.1, -0.4, 0.6, 2.2, -1.4, -1.9,
                1.7,
            ];
            let eps: Vec<f64> = vec![
                -0.5, 0.8, 0.1, -1.3, 0.9, 0.4, -1.0, 0.3, 0.2, -0.2, 1.7, -0.6, 0.4, 0.4, -0.3,
                -1.1,
            ];
            let sigma = [0.05, 0.3, 0.8, 1.5, 3.0, 0.6, 0.2, 1.1];
            let obj = method.generator_objective(
                host_tensor::<A, 2>(z.clone(), [b, d], &device),
                &sigma,
                host_tensor::<A, 2>(eps.clone(), [b, d], &device),
                None,
            );
            let loss_value = scalar(obj.loss.clone());
            let grads = obj.loss.backward();
            let got = to_host(method.generator().inner.m.val().grad(&grads).unwrap());

            // Independent host computation (f64).
            let mut raw = Vec::new();
            let mut rows = Vec::new();
            for i in 0..b {
                let x0: Vec<f64> = (0..d)
                    .map(|j| (1.0 - c_g) * M_G[j] + c_g * SIGMA_INIT * z[i * d + j])
                    .collect();
                let xt: Vec<f64> = (0..d).map(|j| x0[j] + sigma[i] * eps[i * d + j]).collect();
                let (dt, ct) = gauss_host(&M_T, S_T, &xt, sigma[i]);
                let (df, cf) = gauss_host(&M_F, S_F, &xt, sigma[i]);
                let (feat, slope) = match source {
                    FeatureSource::TeacherFeatures => (dt.clone(), ct),
                    FeatureSource::FakeScoreFeatures => (df.clone(), cf),
                };
                raw.push(HEAD_W[0] * feat[0] + HEAD_W[1] * feat[1] + HEAD_B);
                rows.push((x0, dt, df, slope));
            }
            let clamped: Vec<f64> = raw.iter().map(|l| l.max(-clamp).min(clamp)).collect();
            let r: Vec<f64> = clamped.iter().map(|l| l.exp().max(lo).min(hi)).collect();
            // The test covers all three regimes: clamped, clipped, and untouched.
            assert!(raw.iter().any(|&l| l < -clamp), "{raw:?}");
            assert!(raw.iter().any(|&l| l > hi.ln()), "{raw:?}");
            assert!(raw.iter().any(|&l| l.abs() < hi.ln().min(clamp)), "{raw:?}");
            let h: Vec<f64> = r.iter().map(|r| r / (r + 1.0)).collect();
            let mean_h = h.iter().sum::<f64>() / b as f64;
            let weights: Vec<f64> = h.iter().map(|h| h / (mean_h + 1e-6)).collect();
            let gan = raw.iter().map(|l| softplus(-l)).sum::<f64>() / b as f64;
            let mut surrogate = 0.0;
            let mut grad = [0.0; 2];
            for (i, (x0, dt, df, slope)) in rows.iter().enumerate() {
                let w = dmd_weight(x0, dt);
                // d/dℓ softplus(−ℓ) = −σ(−ℓ); dℓ/dx0 = slope · HEAD_W; dx0/dm = 1 − c_g.
                let dgan = -1.0 / (1.0 + raw[i].exp());
                for j in 0..d {
                    let g = w * weights[i] * (df[j] - dt[j]);
                    surrogate += 0.5 * g * g / (b * d) as f64;
                    grad[j] += (1.0 - c_g) * g / (b * d) as f64;
                    grad[j] += (1.0 - c_g) * lambda * dgan * slope * HEAD_W[j] / b as f64;
                }
            }

            let close = |a: f64, e: f64, tol: f64| (a - e).abs() <= tol * e.abs().max(1e-3);
            for i in 0..b {
                assert!(
                    close(obj.log_ratio[i], clamped[i], 1e-5),
                    "{source:?} ℓ[{i}]"
                );
                assert!(
                    close(obj.weights[i], weights[i], 1e-4),
                    "{source:?} h[{i}]: {} vs {}",
                    obj.weights[i],
                    weights[i]
                );
            }
            let n_clipped = clamped
                .iter()
                .zip(&r)
                .filter(|(l, r)| l.exp() != **r)
                .count();
            assert!((obj.ratio_clipped - n_clipped as f64 / b as f64).abs() < 1e-12);
            let got_gan = obj.gan.expect("a learned head has a GAN term");
            assert!(
                close(got_gan, gan, 1e-4),
                "{source:?} gan {got_gan} vs {gan}"
            );
            assert!(
                close(obj.surrogate, surrogate, 1e-3),
                "{source:?} surrogate"
            );
            assert!(
                close(loss_value, obj.surrogate + lambda * gan, 1e-4),
                "{source:?} loss {loss_value} vs {} + {lambda}·{gan}",
                obj.surrogate
            );
            for j in 0..d {
                assert!(
                    close(got[j], grad[j], 2e-3),
                    "{source:?} ∂L/∂m_{j}: {} vs {}",
                    got[j],
                    grad[j]
                );
            }
        }
    }

    /// Stage-1 time bins on a Karras grid (SPEC §3), by value: equal-width bins over the
    /// sampler's `[σ_lo, σ_hi]`, several populated in one batch, `b_k` an EMA with β over
    /// non-empty bins only, `r / (b_k + 1e−6)` before `h`; the bin means survive save/load
    /// and a resumed method gives the same weights as one that never stopped.
    #[test]
    #[allow(clippy::needless_range_loop)] // bins and batches index several parallel arrays
    fn time_bins_with_several_populated_bins_match_the_spec_and_survive_resume() {
        let (beta, bins) = (0.5, 4usize);
        let make = || {
            let (method, _, _) = exact_setup_with(DistillConfig {
                noise: NoiseDistribution::KarrasGrid {
                    points: 40,
                    sigma_min: 0.05,
                    sigma_max: 6.0,
                    rho: 7.0,
                    lo: 0.0,
                    hi: 1.0,
                },
                time_bins: Some(super::super::config::TimeBins { bins, beta }),
                ..exact_config("test-jensen-shannon")
            });
            method
        };
        // The grid's support, from SPEC's Karras formula (independent of the sampler).
        let grid: Vec<f64> = (0..40)
            .map(|i| {
                let (a, b) = (6.0f64.powf(1.0 / 7.0), 0.05f64.powf(1.0 / 7.0));
                (a + i as f64 / 39.0 * (b - a)).powi(7)
            })
            .collect();
        let (s_lo, s_hi) = (grid[39], grid[0]);
        let width = (s_hi - s_lo) / bins as f64;
        let host_bin = |s: f64| (((s - s_lo) / width).floor().max(0.0) as usize).min(bins - 1);
        {
            let m = make();
            let n = m.state.normaliser.as_ref().unwrap();
            for (k, s) in grid.iter().enumerate() {
                assert_eq!(n.bin_index(*s), host_bin(*s), "grid point {k}: σ = {s}");
            }
            // Bin edges at σ_lo + k·width.
            for k in 1..bins {
                let edge = s_lo + k as f64 * width;
                assert_eq!(n.bin_index(edge - 1e-9), k - 1);
                assert_eq!(n.bin_index(edge + 1e-9), k);
            }
        }

        let device = Default::default();
        let (b, d) = (6usize, 2usize);
        let batch = |seed: u64| {
            let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
            (
                standard_normal(b * d, &mut rng),
                standard_normal(b * d, &mut rng),
            )
        };
        // Each batch populates three of the four bins (bins 0 and 3 twice).
        let sigmas = [
            [0.06, 2.0, 5.9, 0.4, 3.5, 5.5],
            [0.3, 1.0, 4.0, 1.8, 0.1, 3.2],
            [5.8, 0.2, 2.5, 3.1, 0.08, 1.6],
        ];
        let objective = |m: &mut ExactMethod, k: usize| {
            let (z, eps) = batch(k as u64);
            let obj = m.generator_objective(
                host_tensor::<A, 2>(z, [b, d], &device),
                &sigmas[k],
                host_tensor::<A, 2>(eps, [b, d], &device),
                None,
            );
            (obj.log_ratio.clone(), obj.weights.clone())
        };

        // Host replay of stage 1 + stage 2 from the clamped log ratios the method reports.
        let mut means = vec![1.0f64; bins];
        let mut replay = |log_r: &[f64], sigma: &[f64]| -> Vec<f64> {
            let r: Vec<f64> = log_r.iter().map(|l| l.exp().clamp(0.1, 20.0)).collect();
            let k: Vec<usize> = sigma.iter().map(|&s| host_bin(s)).collect();
            for bin in 0..bins {
                let in_bin: Vec<f64> = (0..r.len())
                    .filter(|&i| k[i] == bin)
                    .map(|i| r[i])
                    .collect();
                if !in_bin.is_empty() {
                    let mean = in_bin.iter().sum::<f64>() / in_bin.len() as f64;
                    means[bin] = beta * means[bin] + (1.0 - beta) * mean;
                }
            }
            let h: Vec<f64> = (0..r.len())
                .map(|i| {
                    let rn = r[i] / (means[k[i]] + 1e-6);
                    rn / (rn + 1.0)
                })
                .collect();
            let mean_h = h.iter().sum::<f64>() / h.len() as f64;
            h.iter().map(|h| h / (mean_h + 1e-6)).collect()
        };

        let mut through = make();
        let mut populated = std::collections::BTreeSet::new();
        for k in 0..2 {
            let (log_r, w) = objective(&mut through, k);
            let expect = replay(&log_r, &sigmas[k]);
            for i in 0..b {
                assert!(
                    (w[i] - expect[i]).abs() < 1e-9,
                    "batch {k}, h[{i}]: {} vs {}",
                    w[i],
                    expect[i]
                );
            }
            populated.extend(sigmas[k].iter().map(|&s| host_bin(s)));
        }
        assert_eq!(populated.len(), bins, "every bin was populated");
        let after_two = means.clone();
        let got = through
            .state
            .normaliser
            .as_ref()
            .unwrap()
            .bin_means()
            .to_vec();
        for k in 0..bins {
            assert!(
                (got[k] - after_two[k]).abs() < 1e-9,
                "b_{k}: {} vs {}",
                got[k],
                after_two[k]
            );
            assert!((got[k] - 1.0).abs() > 1e-3, "b_{k} moved from 1");
        }

        // Save after two batches, load into a fresh method: same bin means, same weights.
        let tmp = tempfile::tempdir().unwrap();
        through.save(tmp.path()).unwrap();
        let mut resumed = make();
        resumed.load(tmp.path()).unwrap();
        // Equal to the last bit: the workspace enables serde_json's `float_roundtrip`
        // (without it b_k came back 1 ulp off; see checkpoint's
        // `json_state_round_trips_every_f64_bit_for_bit`).
        for (k, (r, g)) in resumed
            .state
            .normaliser
            .as_ref()
            .unwrap()
            .bin_means()
            .iter()
            .zip(&got)
            .enumerate()
        {
            assert_eq!(r.to_bits(), g.to_bits(), "b_{k}: {r} vs {g}");
        }
        let (_, w_through) = objective(&mut through, 2);
        let (_, w_resumed) = objective(&mut resumed, 2);
        for (a, b) in w_through.iter().zip(&w_resumed) {
            assert_eq!(a.to_bits(), b.to_bits(), "{w_through:?} vs {w_resumed:?}");
        }
        // And a method that never saw the first two batches weights them differently.
        let (_, w_fresh) = objective(&mut make(), 2);
        assert!(
            w_fresh
                .iter()
                .zip(&w_through)
                .any(|(a, b)| (a - b).abs() > 1e-3)
        );
    }
}
