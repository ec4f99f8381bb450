//! The typed configuration of f-distill (SPEC §2–§4) and its named presets.
//!
//! [`DistillConfig::check`] validates every field once, before any tensor exists; an unknown
//! divergence is answered with the registry's list of names. DMD2, "DMD2 without GAN" and
//! Diff-Instruct are presets of the same trainer, not code paths.

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use super::DistillError;
use super::driver::DriverConfig;
use fdistill_core::schedule::{P_MEAN, P_STD, RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill_core::update::{LOGIT_CLAMP, RATIO_CLIP};
use fdistill_core::vardiu_bound::{PowSchedule, VarDiuWeight, draw_vardiu_sigmas};
use fdistill_divergence::Divergence;
use fdistill_divergence::registry;

/// Where the generator's density ratio `r = p_σ/q_σ` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatioSource {
    /// A discriminator head trained with the logistic loss (SPEC §2).
    Discriminator,
    /// A closed-form estimator supplied by the caller (Gaussian-mixture testbed, SPEC §6).
    Exact,
    /// No ratio: `r ≡ 1`. Only for divergences with constant `h` (reverse KL: DMD2 without
    /// GAN, Diff-Instruct).
    None,
}

/// Which network's features the discriminator head reads (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureSource {
    /// Frozen teacher features (FastGen's f-distill, the default); only the head trains.
    TeacherFeatures,
    /// The fake score's features (DMD2); the discriminator loss also trains the fake score.
    FakeScoreFeatures,
}

/// The generator's surrogate loss; both have gradient `g / numel` with respect to `x0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Surrogate {
    /// `½ mean((x0 − sg(x0 − g))²)` ([`fdistill_core::losses::inject_gradient()`]), f-distill/DMD2.
    InjectGradient,
    /// `mean(x0 · sg(g))` ([`fdistill_core::losses::inner_product_surrogate`]), Diff-Instruct.
    InnerProduct,
}

/// Weighting of the fake score's denoising loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DsmWeighting {
    /// `mean((D_F(x_t) − x0)²)` (SPEC §4).
    Uniform,
    /// EDM's `λ(σ) = (σ² + σ_d²)/(σ σ_d)²` ([`fdistill_core::losses::edm::edm_loss_weight`]).
    Edm,
}

/// The noise distribution `p_train(σ)` of both steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NoiseDistribution {
    /// A uniform index into a `points`-point Karras grid over `[sigma_min, sigma_max]`,
    /// restricted to the fraction `[lo, hi)` of the indices (SPEC §4 default: 1000 points,
    /// σ ∈ [0.002, 80], ρ = 7, indices from 0.2 % to 99.8 %).
    KarrasGrid {
        /// Grid size.
        points: usize,
        /// Smallest σ of the grid.
        sigma_min: f64,
        /// Largest σ of the grid.
        sigma_max: f64,
        /// Karras ρ.
        rho: f64,
        /// Lowest index fraction.
        lo: f64,
        /// Highest index fraction (exclusive).
        hi: f64,
    },
    /// `ln σ ~ N(p_mean, p_std²)` (EDM training; Diff-Instruct).
    LogNormal {
        /// Mean of ln σ.
        p_mean: f64,
        /// Std of ln σ.
        p_std: f64,
    },
    /// VarDiU's law (SPEC §7, [`vardiu_sigma`](fdistill_core::vardiu_bound::vardiu_sigma)):
    /// `σ = σ_min + u^pow (σ_max − σ_min)`, `u ~ U[0, 1)`, pow following `pow` over generator
    /// updates — the VarDiU reference gives its Diff-Instruct baseline this law.
    Power {
        /// Smallest σ.
        sigma_min: f64,
        /// Largest σ.
        sigma_max: f64,
        /// The pow schedule (over generator updates).
        pow: PowSchedule,
    },
}

impl NoiseDistribution {
    /// SPEC §4's default grid.
    pub fn karras_default() -> Self {
        NoiseDistribution::KarrasGrid {
            points: 1000,
            sigma_min: SIGMA_MIN,
            sigma_max: SIGMA_MAX,
            rho: RHO,
            lo: 0.002,
            hi: 0.998,
        }
    }

    /// Validates the parameters and builds the sampler.
    pub fn sampler(&self) -> Result<NoiseSampler, DistillError> {
        let bad = |m: String| Err(DistillError::Config(m));
        match *self {
            NoiseDistribution::KarrasGrid {
                points,
                sigma_min,
                sigma_max,
                rho,
                lo,
                hi,
            } => {
                if points > MAX_GRID_POINTS {
                    return bad(format!(
                        "noise: a Karras grid of {points} points is larger than the \
                         {MAX_GRID_POINTS} accepted (the reference uses 1000)"
                    ));
                }
                let grid = karras_sigmas(points, sigma_min, sigma_max, rho)
                    .map_err(|e| DistillError::Config(format!("noise: {e}")))?;
                if !(0.0 <= lo && lo < hi && hi <= 1.0) {
                    return bad(format!(
                        "noise: need 0 ≤ lo < hi ≤ 1 (index fractions), got lo = {lo}, hi = {hi}"
                    ));
                }
                let (first, last) = grid_index_range(points, lo, hi);
                if first >= last {
                    return bad(format!(
                        "noise: the index range [{lo}, {hi}) of a {points}-point grid is empty; widen it or use more points"
                    ));
                }
                Ok(NoiseSampler::Grid {
                    grid: grid[..points].to_vec(),
                    first,
                    last,
                })
            }
            NoiseDistribution::LogNormal { p_mean, p_std } => {
                if !(p_mean.is_finite() && p_std.is_finite() && p_std > 0.0) {
                    return bad(format!(
                        "noise: log-normal needs a finite p_mean and p_std > 0, got {p_mean}, {p_std}"
                    ));
                }
                Ok(NoiseSampler::LogNormal { p_mean, p_std })
            }
            NoiseDistribution::Power {
                sigma_min,
                sigma_max,
                pow,
            } => {
                if !(sigma_min.is_finite()
                    && sigma_max.is_finite()
                    && 0.0 < sigma_min
                    && sigma_min < sigma_max)
                {
                    return bad(format!(
                        "noise: the power law needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}"
                    ));
                }
                pow.check()
                    .map_err(|e| DistillError::Config(format!("noise: {e}")))?;
                Ok(NoiseSampler::Power {
                    sigma_min,
                    sigma_max,
                    pow,
                })
            }
        }
    }

    /// The law in words, for tables.
    pub fn describe(&self) -> String {
        match self {
            NoiseDistribution::KarrasGrid {
                points,
                sigma_min,
                sigma_max,
                lo,
                hi,
                ..
            } => {
                let s = self.sampler().map(|s| s.range()).ok();
                let (a, b) = s.unwrap_or((*sigma_min, *sigma_max));
                format!(
                    "Karras grid ({points} pts, indices {:.1}–{:.1} %) σ ∈ [{a:.3}, {b:.1}]",
                    100.0 * lo,
                    100.0 * hi
                )
            }
            NoiseDistribution::LogNormal { p_mean, p_std } => {
                format!("ln σ ~ N({p_mean}, {p_std}²)")
            }
            NoiseDistribution::Power {
                sigma_min,
                sigma_max,
                pow,
            } => format!(
                "σ = {sigma_min} + u^pow·{}, {}",
                (sigma_max - sigma_min) as f32,
                super::vardiu::pow_words(pow)
            ),
        }
    }
}

/// Largest Karras grid of [`NoiseDistribution::KarrasGrid`] (it is allocated).
pub const MAX_GRID_POINTS: usize = 1_000_000;

/// Largest batch of any trainer (a batch of images is allocated several times over).
pub const MAX_BATCH_SIZE: usize = 1 << 16;

/// Largest number of σ-bins of stage-1 normalisation (they are allocated).
pub const MAX_TIME_BINS: usize = 10_000;

/// Indices `[first, last)` of a `points`-point grid that the fractions `[lo, hi)` select:
/// `first = ⌊lo·points⌋`, `last = ⌈hi·points⌉` (at most `points`).
pub fn grid_index_range(points: usize, lo: f64, hi: f64) -> (usize, usize) {
    let first = (lo * points as f64).floor() as usize;
    let last = ((hi * points as f64).ceil() as usize).min(points);
    (first, last)
}

/// A validated noise distribution, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub enum NoiseSampler {
    /// Uniform index into `grid[first..last]`.
    Grid {
        /// The Karras grid, decreasing, without the trailing 0.
        grid: Vec<f64>,
        /// First admissible index.
        first: usize,
        /// One past the last admissible index.
        last: usize,
    },
    /// Log-normal σ.
    LogNormal {
        /// Mean of ln σ.
        p_mean: f64,
        /// Std of ln σ.
        p_std: f64,
    },
    /// VarDiU's power law.
    Power {
        /// Smallest σ.
        sigma_min: f64,
        /// Largest σ.
        sigma_max: f64,
        /// The pow schedule.
        pow: PowSchedule,
    },
}

impl NoiseSampler {
    /// `n` draws of σ after `generator_steps` generator updates (only the power law's pow
    /// depends on it).
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        generator_steps: usize,
        rng: &mut R,
    ) -> Vec<f64> {
        match self {
            NoiseSampler::Power {
                sigma_min,
                sigma_max,
                pow,
            } => draw_vardiu_sigmas(n, pow.pow_at(generator_steps), *sigma_min, *sigma_max, rng),
            NoiseSampler::Grid { grid, first, last } => (0..n)
                .map(|_| grid[rng.random_range(*first..*last)])
                .collect(),
            NoiseSampler::LogNormal { p_mean, p_std } => {
                fdistill_core::schedule::sample_training_sigmas(n, *p_mean, *p_std, rng)
            }
        }
    }

    /// The support `[σ_lo, σ_hi]` (the time bins of SPEC §3 split it).
    pub fn range(&self) -> (f64, f64) {
        match self {
            NoiseSampler::Grid { grid, first, last } => (grid[*last - 1], grid[*first]),
            // 4 standard deviations either side.
            NoiseSampler::LogNormal { p_mean, p_std } => {
                ((p_mean - 4.0 * p_std).exp(), (p_mean + 4.0 * p_std).exp())
            }
            NoiseSampler::Power {
                sigma_min,
                sigma_max,
                ..
            } => (*sigma_min, *sigma_max),
        }
    }
}

/// Learning-rate schedule: a factor on `lr_generator`, `lr_fake_score` and
/// `lr_discriminator` as a function of the iteration `i` (1-based) of `n = driver.steps`.
///
/// With `--resume --steps M` the schedule is stretched to the new `n` from the resumed
/// iteration on (a cosine run resumed with the same steps continues exactly).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LrSchedule {
    /// Factor 1 throughout (every preset but `toy`).
    #[default]
    Constant,
    /// Cosine decay from 1 to `final_fraction`, after an optional phase at the full rate
    /// (`hold_fraction` of the run). With progress $p = (i − 1)/(n − 1)$ and hold $h$:
    /// $f(i) = 1$ for $p ≤ h$, else
    /// $f(i) = φ + (1 − φ)\\,\tfrac12\big(1 + \cos(π\\,\tfrac{p − h}{1 − h})\big)$,
    /// so the first iteration runs at the full rate and the last at `φ·lr`.
    Cosine {
        /// φ ∈ [0, 1]: the factor at the last iteration.
        final_fraction: f64,
        /// h ∈ [0, 1): the share of the run held at the full rate before the decay starts
        /// (0, the default, decays from the first iteration; omitted from files when 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        hold_fraction: f64,
    },
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl LrSchedule {
    /// A cosine decay to `final_fraction` from the first iteration (no hold).
    pub fn cosine(final_fraction: f64) -> Self {
        LrSchedule::Cosine {
            final_fraction,
            hold_fraction: 0.0,
        }
    }

    /// The factor at iteration `step` (1-based) of `steps`.
    pub fn factor(&self, step: usize, steps: usize) -> f64 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine {
                final_fraction,
                hold_fraction,
            } => {
                let p = if steps <= 1 {
                    0.0
                } else {
                    (step.clamp(1, steps) - 1) as f64 / (steps - 1) as f64
                };
                if p <= hold_fraction {
                    1.0
                } else {
                    cosine_decay((p - hold_fraction) / (1.0 - hold_fraction), final_fraction)
                }
            }
        }
    }

    fn is_constant(&self) -> bool {
        *self == LrSchedule::Constant
    }

    fn check(&self) -> Result<(), String> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Cosine { final_fraction, .. } if !(0.0..=1.0).contains(&final_fraction) => {
                Err(format!(
                    "lr_schedule.final_fraction must be in [0, 1] (the last iteration's share of \
                     each learning rate), got {final_fraction}"
                ))
            }
            LrSchedule::Cosine { hold_fraction, .. } if !(0.0..1.0).contains(&hold_fraction) => {
                Err(format!(
                    "lr_schedule.hold_fraction must be in [0, 1) (the share of the run at the \
                     full rate before the decay; 0 decays from the start), got {hold_fraction}"
                ))
            }
            LrSchedule::Cosine { .. } => Ok(()),
        }
    }
}

/// Cosine decay at progress `p ∈ [0, 1]` from 1 to `floor`: `floor + (1 − floor)(1 + cos πp)/2`.
pub fn cosine_decay(p: f64, floor: f64) -> f64 {
    floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// Stage-1 time-binned ratio normalisation settings (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeBins {
    /// Equal-width σ-bins (10 in the reference code).
    pub bins: usize,
    /// EMA factor of the bin means (0 default; 0.5 on ImageNet-64).
    pub beta: f64,
}

/// Everything f-distill's trainer needs, validated by [`check`](Self::check).
///
/// **Critic schedule.** With `critic_steps = K`, every iteration is one step of one kind:
/// K critic steps (fake score, discriminator) precede each generator step, i.e. iteration
/// `i` (1-based) is a generator step iff `i % (K + 1) == 0` — the "K critic : 1 generator"
/// reading of FastGen's `student_update_freq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The preset this config started from (informational).
    pub preset: String,
    /// Divergence, as the registry spells it (`jensen-shannon`, `alpha:0.5`, plugins too).
    pub divergence: String,
    /// Samples per batch (generator and critic steps alike).
    pub batch_size: usize,
    /// K: critic steps per generator step (see the type's doc).
    pub critic_steps: usize,
    /// λ_GAN: weight of the generator's GAN term; > 0 needs `ratio = discriminator`.
    pub lambda_gan: f64,
    /// Source of the density ratio.
    pub ratio: RatioSource,
    /// Features the discriminator head reads.
    pub feature_source: FeatureSource,
    /// The generator's surrogate.
    pub surrogate: Surrogate,
    /// Stage 2: `h_i ← h_i / (mean h + 1e−6)`.
    pub normalise_weights: bool,
    /// Stage 1: time-binned ratio normalisation, `None` to skip.
    pub time_bins: Option<TimeBins>,
    /// Per-sample DMD normaliser `1 / mean|x0 − D_T(x_t)|`.
    pub dmd_normaliser: bool,
    /// Logit clamp `[−c, c]` (10).
    pub logit_clamp: f64,
    /// Ratio clip `[lo, hi]` (0.1, 20).
    pub ratio_clip: [f64; 2],
    /// `p_train(σ)` of both steps.
    pub noise: NoiseDistribution,
    /// Weighting of the fake score's DSM loss.
    pub dsm_weighting: DsmWeighting,
    /// VarDiU's weight on the generator's gradient, in score units: with `Some(w)` the
    /// direction becomes `w(σ)·(d_F − d_T)/σ²` (σ_max from the `power` noise law), as the
    /// VarDiU reference's Diff-Instruct baseline (`train_dikl.py`); `None`: `d_F − d_T`
    /// (SPEC §4). Needs `noise.type = "power"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vardiu_weight: Option<VarDiuWeight>,
    /// Classifier-free guidance scale `w` of the teacher (the "real score"): with `Some(w)`
    /// the generator's direction uses
    /// $D_w(x; σ, y) = D_T(x; σ, ∅) + w\\,(D_T(x; σ, y) − D_T(x; σ, ∅))$
    /// ([`fdistill_core::guidance_combine`]; ∅ is the null label, EDM's zero label vector),
    /// as DMD2 and f-distill do for conditional teachers. Needs labelled data and a
    /// class-conditional teacher trained with label dropout (`label_dropout` > 0) for `D(x; ∅)`
    /// to be meaningful. `None` (or 1): the conditional teacher. The fake score and the
    /// discriminator are not guided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_guidance: Option<f64>,
    /// σ_init: the generator is `x0 = D_G(σ_init z; σ_init)`.
    pub sigma_init: f64,
    /// Extra latent dimensions of the generator (default 0; omitted from files when 0): with
    /// `k > 0` the generator takes `z ∈ R^{dim + k}`, whose last `k` entries enter its first
    /// hidden layer through a zero-initialised linear map, so it starts as the teacher copy
    /// (`MlpDenoiser::with_latent_extra`; MLP networks only).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub generator_latent_extra: usize,
    /// AdamW learning rate of the generator.
    pub lr_generator: f64,
    /// AdamW learning rate of the fake score.
    pub lr_fake_score: f64,
    /// AdamW learning rate of the discriminator head.
    pub lr_discriminator: f64,
    /// Learning-rate schedule of all three networks (default constant; omitted from files
    /// when constant).
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// AdamW decoupled weight decay (0.01), all networks.
    pub weight_decay: f64,
    /// Global gradient-norm clip of the generator (10).
    pub grad_clip_generator: f64,
    /// EMA decay of the generator (effective `min(β, (1+t)/(10+t))` at generator step t).
    pub ema_beta: f64,
    /// Fault-injection hook for tests, set in code: the loss of this iteration is multiplied
    /// by NaN. Not a config key (never read from or written to a file), so it stays out of
    /// the user-facing list of keys.
    #[serde(skip)]
    pub inject_nan_at_step: Option<usize>,
    /// Loop settings (steps, checkpoints, logging, seed).
    pub driver: DriverConfig,
}

fn is_zero_usize(k: &usize) -> bool {
    *k == 0
}

/// The names [`DistillConfig::preset`] knows, sorted.
pub const PRESETS: [&str; 7] = [
    "cifar10",
    "diff-instruct",
    "dmd2",
    "dmd2-no-gan",
    "imagenet64",
    "toy",
    "toy-exact",
];

impl DistillConfig {
    /// 2-D toys (the demo), tuned on `ring8-unbalanced` (radius 4, mode std 0.25, teacher
    /// σ_data ≈ 2.5) with Jensen–Shannon, 6000 iterations, MMD² of 2000 one-step samples
    /// against 2000 exact ones (teacher at 35 NFE: 0.0076):
    ///
    /// - `ln σ ~ N(−0.7, 1.2²)` for both steps instead of the image grid up to σ = 80: the
    ///   grid spends a third of its draws above σ = 10, where a ring of radius 4 is a blob,
    ///   and a fifth on σ ∈ [0.1, 0.5], where modes of std 0.25 take their shape;
    /// - σ_init = 4 (≈ 1.6 σ_data) instead of 80: at 80 the teacher copy starts as a constant
    ///   map, at 4 it starts as a blurred ring;
    /// - λ_GAN = 0.3: the discriminator's own gradient is what spreads samples inside a mode.
    ///
    /// Each change alone: MMD² 0.062 (the image settings) → 0.075 (σ_init 4), 0.046
    /// (λ_GAN 0.1); σ_init 4 with the grid cut at σ = 10 and λ_GAN 0.3: 0.023; with the
    /// log-normal σ as well (this preset): 0.0084, 0.0094, 0.0142 over seeds 0, 1, 2, 7 of 8
    /// modes each. lr_generator 1e−3 (2e−3 and 1e−4 were worse); K = 2 (K = 1 and 5 were
    /// worse).
    ///
    /// 24 000 iterations (8000 generator updates), learning rates held for the first half
    /// of the run, then a cosine decay to 5 % ([`LrSchedule::Cosine`] with `hold_fraction`
    /// 0.5, `final_fraction` 0.05). With 256 × 4 teachers, seeds 0–5 on `ring8-unbalanced`
    /// and 0–2 on `grid25` and `two-moons` (`docs/results.md`, "2-D fidelity"):
    ///
    /// - the length: at 12 000 iterations the covering students dropped ring8's 2 % mode in
    ///   about half the seeds (Jensen–Shannon every mode in 3 of 6, forward KL 4 of 6); at
    ///   24 000 both cover every mode in 6 of 6, at 1.28× and 1.41× the teacher's MMD², with
    ///   log-density gaps 0.17 and 0.19;
    /// - the hold: decaying from the start froze the streaks (ring8 log-density gap 0.37–0.40),
    ///   a constant rate left the late jitter in MMD² (grid25 2.2–3.0×); at 24 000 iterations a
    ///   hold of 0.75 (the preset at 12 000) let the reverse-KL student over-sharpen grid25
    ///   (2.4× its teacher's MMD² over seeds 0–2, 8 evaluation draws each), a hold of 0.5
    ///   did not.
    ///
    /// `fdistill demo` runs half this length with a hold of 0.75, the schedule measured best
    /// at 12 000 iterations.
    ///
    /// The length scales (σ_init, the σ law) are for σ_data = [`Self::TOY_SIGMA_DATA`];
    /// [`Self::at_data_scale`] moves them to other data (the CLI does so for every MLP
    /// teacher).
    pub fn toy() -> Self {
        DistillConfig {
            preset: "toy".into(),
            divergence: "jensen-shannon".into(),
            batch_size: 256,
            critic_steps: 2,
            lambda_gan: 0.3,
            ratio: RatioSource::Discriminator,
            feature_source: FeatureSource::TeacherFeatures,
            surrogate: Surrogate::InjectGradient,
            normalise_weights: true,
            time_bins: None,
            dmd_normaliser: true,
            logit_clamp: LOGIT_CLAMP,
            ratio_clip: [RATIO_CLIP.0, RATIO_CLIP.1],
            noise: NoiseDistribution::LogNormal {
                p_mean: -0.7,
                p_std: 1.2,
            },
            dsm_weighting: DsmWeighting::Uniform,
            vardiu_weight: None,
            teacher_guidance: None,
            sigma_init: 4.0,
            generator_latent_extra: 0,
            lr_generator: 1e-3,
            lr_fake_score: 2e-3,
            lr_discriminator: 2e-3,
            lr_schedule: LrSchedule::Cosine {
                final_fraction: 0.05,
                hold_fraction: 0.5,
            },
            weight_decay: 0.01,
            grad_clip_generator: 10.0,
            ema_beta: 0.99,
            inject_nan_at_step: None,
            driver: DriverConfig {
                steps: 24_000,
                checkpoint_every: 1000,
                log_every: 10,
                seed: 0,
            },
        }
    }

    /// The 2-D toys' σ_data: `toy`'s scales (σ_init, the log-normal σ law) were tuned on
    /// `ring8-unbalanced`, whose teacher has this σ_data.
    pub const TOY_SIGMA_DATA: f64 = 2.53;

    /// This config's length scales moved from the toy data's scale ([`Self::TOY_SIGMA_DATA`])
    /// to data of standard deviation `sigma_data`: with `c = sigma_data / 2.53`,
    /// `σ_init ← c σ_init` and, for the log-normal σ law, `p_mean ← p_mean + ln c` (every σ
    /// scaled by `c`), so every σ keeps its ratio to σ_data — the quantity EDM's
    /// preconditioning works in (`c_skip`, `c_in x`, `c_out/σ_data` depend on σ/σ_data only).
    /// Without it, data ten times wider than the toys would be distilled at noise levels
    /// that blur nothing and data ten times narrower at levels that blur everything. The CLI
    /// applies this to the `toy` presets for every MLP teacher. At `sigma_data = 2.53` the
    /// config is unchanged. Other σ laws (grids, the power law) are left as they are.
    pub fn at_data_scale(self, sigma_data: f64) -> Self {
        let c = sigma_data / Self::TOY_SIGMA_DATA;
        let noise = match self.noise {
            NoiseDistribution::LogNormal { p_mean, p_std } => NoiseDistribution::LogNormal {
                p_mean: p_mean + c.ln(),
                p_std,
            },
            other => other,
        };
        DistillConfig {
            sigma_init: self.sigma_init * c,
            noise,
            ..self
        }
    }

    /// The toy preset with the closed-form ratio of the Gaussian-mixture testbed (the caller
    /// supplies the estimator) and no GAN term.
    pub fn toy_exact() -> Self {
        DistillConfig {
            preset: "toy-exact".into(),
            ratio: RatioSource::Exact,
            lambda_gan: 0.0,
            lr_schedule: LrSchedule::Constant,
            ..Self::toy()
        }
    }

    /// f-distill on CIFAR-10 (Xu, Nie & Vahdat 2025, hyperparameter table; SPEC §4): batch
    /// 2048, K = 5, λ_GAN = 1e−3, lr 1e−4, EMA 0.9999, teacher features, time bins β = 0.
    pub fn cifar10() -> Self {
        DistillConfig {
            preset: "cifar10".into(),
            batch_size: 2048,
            critic_steps: 5,
            lambda_gan: 1e-3,
            time_bins: Some(TimeBins {
                bins: 10,
                beta: 0.0,
            }),
            noise: NoiseDistribution::karras_default(),
            sigma_init: 80.0,
            lr_generator: 1e-4,
            lr_fake_score: 1e-4,
            lr_discriminator: 1e-4,
            ema_beta: 0.9999,
            driver: DriverConfig {
                steps: 300_000,
                checkpoint_every: 5000,
                log_every: 100,
                seed: 0,
            },
            lr_schedule: LrSchedule::Constant,
            ..Self::toy()
        }
        .with_preset("cifar10")
    }

    /// f-distill on ImageNet-64 (same table; SPEC §4): batch 512, K = 5, λ_GAN = 3e−3,
    /// lr 2e−6, time bins with β = 0.5.
    pub fn imagenet64() -> Self {
        DistillConfig {
            batch_size: 512,
            lambda_gan: 3e-3,
            time_bins: Some(TimeBins {
                bins: 10,
                beta: 0.5,
            }),
            lr_generator: 2e-6,
            lr_fake_score: 2e-6,
            lr_discriminator: 2e-6,
            ..Self::cifar10()
        }
        .with_preset("imagenet64")
    }

    /// DMD2 (Yin et al. 2024) as a special case (SPEC §4): reverse KL, GAN on with the head
    /// on the fake score's features, ImageNet-64 optimisation settings (lr 2e−6, K = 5,
    /// λ_GAN = 3e−3), no time bins (`h ≡ 1` makes them moot).
    pub fn dmd2() -> Self {
        DistillConfig {
            divergence: "reverse-kl".into(),
            feature_source: FeatureSource::FakeScoreFeatures,
            time_bins: None,
            ..Self::imagenet64()
        }
        .with_preset("dmd2")
    }

    /// DMD2 without its GAN term (= DMD with the two-time-scale update): reverse KL,
    /// λ_GAN = 0, no discriminator.
    pub fn dmd2_no_gan() -> Self {
        DistillConfig {
            lambda_gan: 0.0,
            ratio: RatioSource::None,
            ..Self::dmd2()
        }
        .with_preset("dmd2-no-gan")
    }

    /// Diff-Instruct (Luo et al. 2023; SPEC §4): reverse KL, no normaliser, the inner-product
    /// surrogate `⟨x0, sg(d_F − d_T)⟩`, `ln σ ~ N(−1.2, 1.2²)`, K = 1, no GAN.
    pub fn diff_instruct() -> Self {
        DistillConfig {
            divergence: "reverse-kl".into(),
            critic_steps: 1,
            lambda_gan: 0.0,
            ratio: RatioSource::None,
            surrogate: Surrogate::InnerProduct,
            normalise_weights: false,
            time_bins: None,
            dmd_normaliser: false,
            noise: NoiseDistribution::LogNormal {
                p_mean: P_MEAN,
                p_std: P_STD,
            },
            sigma_init: 80.0,
            lr_schedule: LrSchedule::Constant,
            ..Self::toy()
        }
        .with_preset("diff-instruct")
    }

    fn with_preset(mut self, name: &str) -> Self {
        self.preset = name.into();
        self
    }

    /// The preset called `name` (one of [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, DistillError> {
        Ok(match name {
            "toy" => Self::toy(),
            "toy-exact" => Self::toy_exact(),
            "cifar10" => Self::cifar10(),
            "imagenet64" => Self::imagenet64(),
            "dmd2" => Self::dmd2(),
            "dmd2-no-gan" => Self::dmd2_no_gan(),
            "diff-instruct" => Self::diff_instruct(),
            other => {
                return Err(DistillError::Config(format!(
                    "unknown preset `{other}`; known presets: {}",
                    PRESETS.join(", ")
                )));
            }
        })
    }

    /// The divergence, built through the registry (plugins included).
    pub fn build_divergence(&self) -> Result<Box<dyn Divergence>, DistillError> {
        Ok(registry::resolve(&self.divergence)?)
    }

    /// Validates every field; call before any tensor exists. Returns the config unchanged.
    pub fn check(self) -> Result<Self, DistillError> {
        let bad = |m: String| Err(DistillError::Config(m));
        let driver = self.driver.clone().check()?;
        let divergence = self.build_divergence()?;
        if self.batch_size < 2 || self.batch_size > MAX_BATCH_SIZE {
            return bad(format!(
                "batch_size must be in [2, {MAX_BATCH_SIZE}] (the weights are normalised over \
                 the batch), got {}",
                self.batch_size
            ));
        }
        if self.critic_steps == 0 {
            return bad(
                "critic_steps (K) must be ≥ 1: the fake score must track the generator".into(),
            );
        }
        if !(self.lambda_gan.is_finite() && self.lambda_gan >= 0.0) {
            return bad(format!("lambda_gan must be ≥ 0, got {}", self.lambda_gan));
        }
        if self.lambda_gan > 0.0 && self.ratio != RatioSource::Discriminator {
            return bad(format!(
                "lambda_gan = {} needs a discriminator: set ratio = \"discriminator\" or lambda_gan = 0",
                self.lambda_gan
            ));
        }
        if self.ratio == RatioSource::None && !has_constant_weight(divergence.as_ref()) {
            return bad(format!(
                "divergence `{}` weights samples by h(r), which needs a density ratio; set ratio = \"discriminator\" \
                 (or \"exact\" on a Gaussian-mixture teacher). Only constant-h divergences (reverse-kl) run without one",
                self.divergence
            ));
        }
        if !(self.logit_clamp.is_finite() && self.logit_clamp > 0.0) {
            return bad(format!("logit_clamp must be > 0, got {}", self.logit_clamp));
        }
        let [lo, hi] = self.ratio_clip;
        if !(lo.is_finite() && hi.is_finite() && 0.0 < lo && lo < 1.0 && 1.0 < hi) {
            return bad(format!(
                "ratio_clip must satisfy 0 < lo < 1 < hi, got [{lo}, {hi}] (reference: [0.1, 20])"
            ));
        }
        self.noise.sampler()?;
        if self.vardiu_weight.is_some() && !matches!(self.noise, NoiseDistribution::Power { .. }) {
            return bad(
                "vardiu_weight needs VarDiU's noise law (noise.type = \"power\", whose sigma_max \
                 normalises the weight); drop vardiu_weight or set the power law"
                    .into(),
            );
        }
        if let Some(tb) = self.time_bins
            && (tb.bins == 0 || tb.bins > MAX_TIME_BINS || !(0.0..1.0).contains(&tb.beta))
        {
            return bad(format!(
                "time_bins needs bins in [1, {MAX_TIME_BINS}] and beta in [0, 1), got bins = {}, \
                 beta = {}",
                tb.bins, tb.beta
            ));
        }
        if let Some(w) = self.teacher_guidance
            && !(w.is_finite() && w >= 0.0)
        {
            return bad(format!(
                "teacher_guidance must be a finite number ≥ 0 (1: no guidance), got {w}"
            ));
        }
        if !(self.sigma_init.is_finite() && self.sigma_init > 0.0) {
            return bad(format!("sigma_init must be > 0, got {}", self.sigma_init));
        }
        for (name, lr) in [
            ("lr_generator", self.lr_generator),
            ("lr_fake_score", self.lr_fake_score),
            ("lr_discriminator", self.lr_discriminator),
        ] {
            if !(lr.is_finite() && lr > 0.0) {
                return bad(format!("{name} must be a positive number, got {lr}"));
            }
        }
        self.lr_schedule.check().map_err(DistillError::Config)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be ≥ 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.grad_clip_generator.is_finite() && self.grad_clip_generator > 0.0) {
            return bad(format!(
                "grad_clip_generator must be > 0, got {}",
                self.grad_clip_generator
            ));
        }
        if !(0.0..1.0).contains(&self.ema_beta) {
            return bad(format!("ema_beta must be in [0, 1), got {}", self.ema_beta));
        }
        Ok(DistillConfig { driver, ..self })
    }

    /// Whether iteration `step` (1-based) is a generator step (see the type's doc).
    pub fn is_generator_step(&self, step: usize) -> bool {
        step.is_multiple_of(self.critic_steps + 1)
    }
}

/// Whether `h` is the same at every ratio (reverse KL), so no ratio estimate is needed.
fn has_constant_weight(d: &dyn Divergence) -> bool {
    let h0 = d.log_h(0.0);
    [-5.0, -1.0, 1.0, 5.0]
        .iter()
        .all(|&l| (d.log_h(l) - h0).abs() < 1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The data-scale rule: unchanged at the toys' σ_data; at 10× the scale σ_init is 10×
    /// and the log-normal σ law is the old one times 10 (its quantiles, drawn here).
    #[test]
    fn toy_preset_moves_with_the_data_scale() {
        assert_eq!(
            DistillConfig::toy().at_data_scale(2.53),
            DistillConfig::toy()
        );
        let wide = DistillConfig::toy().at_data_scale(25.3);
        assert!((wide.sigma_init - 40.0).abs() < 1e-12);
        let draws = |c: &DistillConfig| {
            let s = c.noise.sampler().unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
            let mut v: Vec<f64> = (0..4001).map(|_| s.sample(1, 0, &mut rng)[0]).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (a, b) = (draws(&DistillConfig::toy()), draws(&wide));
        for q in [400, 2000, 3600] {
            assert!(
                (b[q] / a[q] - 10.0).abs() < 1e-9,
                "quantile {q}: {} vs {}",
                b[q],
                a[q]
            );
        }
        // Other σ laws are left alone.
        let grid = DistillConfig::cifar10().at_data_scale(25.3);
        assert_eq!(grid.noise, DistillConfig::cifar10().noise);
    }

    #[test]
    fn grid_sampler_draws_from_the_admissible_indices() {
        let s = NoiseDistribution::karras_default().sampler().unwrap();
        let (first, last) = grid_index_range(1000, 0.002, 0.998);
        assert_eq!((first, last), (2, 998));
        let NoiseSampler::Grid { grid, .. } = &s else {
            panic!("grid sampler")
        };
        assert_eq!(grid.len(), 1000);
        let (lo, hi) = s.range();
        assert_eq!((lo, hi), (grid[997], grid[2]));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let draws = s.sample(5000, 0, &mut rng);
        assert!(draws.iter().all(|d| grid[2..998].contains(d)));
        // Both ends of the admissible range are reached, nothing beyond.
        assert!(draws.contains(&grid[2]) || draws.contains(&grid[3]));
        assert!(draws.iter().all(|&d| d <= grid[2] && d >= grid[997]));
    }

    #[test]
    fn every_preset_round_trips_through_json_and_toml() {
        for name in PRESETS {
            let c = DistillConfig::preset(name).unwrap();
            assert_eq!(c.preset, name);
            let json = serde_json::to_string(&c).unwrap();
            let back: DistillConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c);
            let toml_text = toml::to_string(&c).unwrap();
            let back: DistillConfig = toml::from_str(&toml_text).unwrap();
            assert_eq!(back, c);
        }
        let e = DistillConfig::preset("cifar-10").unwrap_err().to_string();
        assert!(e.contains("known presets: cifar10"), "{e}");
    }
}
