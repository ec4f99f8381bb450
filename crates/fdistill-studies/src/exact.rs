//! Mode-coverage study with the exact student (issue #3, item 4).
//!
//! A [`MixtureStudent`] with `2 × (number of target modes)` equal-weight components starts on
//! a subset of the target's modes (the heaviest modes holding ≥ 70 % of the mass) and is
//! distilled with the generator step of SPEC §4, every network replaced by its exact
//! counterpart:
//!
//! ```text
//! x0 = G_θ(z);  σ ~ logU[σ_min, σ_max];  x_t = x0 + σ ε
//! d_T = D_p(x_t, σ);  d_F = D_q(x_t, σ)                       # exact Tweedie denoisers
//! ℓ = clip(clamp(log p_σ − log q_σ, ±10), [log 0.1, log 20])  # exact ratio
//! [ℓ ← stage-1 time-binned normalisation]  (optional)
//! h ← h(ℓ) / (mean h + 1e−6);  w = 1 / (mean |x0 − d_T| + 1e−6)
//! g = w · h · (d_F − d_T);     ∇_θ = Σ_i g_iᵀ ∂x0_i/∂θ / numel   # inject_gradient
//! θ ← Adam(θ, ∇_θ)
//! ```
//!
//! σ is log-uniform on `[σ_min, σ_max]` (default `[0.05, 10]`), not the Karras grid of SPEC §4:
//! the mixture's scale (radius 4, mode std 0.25) makes σ ≫ 10 uninformative.

use std::path::Path;

use anyhow::{Context, Result, bail};
use fdistill_core::gmm::{self, GaussianMixture};
use fdistill_core::student::{MixtureStudent, NoisyDraw};
use fdistill_core::targets;
use fdistill_core::update::{
    LOGIT_CLAMP, RATIO_CLIP, TimeBinnedNormaliser, clamp_logits, clip_ratio, dmd_weight,
};
use fdistill_divergence::weights::{WEIGHT_EPS, normalised_weights};
use fdistill_divergence::{Divergence, registry};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use fdistill_plot as plot;

/// Study settings; [`ExactStudyConfig::check`] validates them before anything runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExactStudyConfig {
    /// Target name (`ring8-unbalanced`, `bimodal-1d`, or another 1-D/2-D built-in target).
    pub target: String,
    /// Divergences in CLI spelling (`alpha:0.5`); empty = every registered one.
    pub divergences: Vec<String>,
    /// Seeds `0..seeds`.
    pub seeds: u64,
    /// Generator steps per run.
    pub steps: usize,
    /// Batch size per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Range of the log-uniform σ.
    pub sigma_range: (f64, f64),
    /// Stage-1 time-binned ratio normalisation `(bins, β)`; `None` = off.
    pub time_bins: Option<(usize, f64)>,
    /// Student and target samples for the final metrics.
    pub eval_samples: usize,
}

impl Default for ExactStudyConfig {
    fn default() -> Self {
        ExactStudyConfig {
            target: "ring8-unbalanced".into(),
            divergences: Vec::new(),
            seeds: 5,
            steps: 1500,
            batch: 256,
            lr: 0.02,
            sigma_range: (0.05, 10.0),
            time_bins: None,
            eval_samples: 20_000,
        }
    }
}

/// A validated configuration: the target mixture and the divergences, built.
pub struct CheckedStudy {
    /// The settings.
    pub config: ExactStudyConfig,
    /// The target `p`.
    pub target: GaussianMixture,
    /// The divergences, in order.
    pub divergences: Vec<Box<dyn Divergence>>,
}

impl ExactStudyConfig {
    /// Resolves the target and divergences and checks every number.
    pub fn check(self) -> Result<CheckedStudy> {
        let target = targets::gmm_target(&self.target).map_err(anyhow::Error::msg)?;
        if !(1..=2).contains(&target.dim()) {
            bail!(
                "target `{}` has dimension {}; the exact study plots 1-D and 2-D targets only \
                 (use ring8-unbalanced or bimodal-1d)",
                self.target,
                target.dim()
            );
        }
        if self.seeds == 0 || self.steps == 0 || self.batch < 2 || self.eval_samples == 0 {
            bail!("--seeds, --steps and the eval sample count must be ≥ 1 and the batch ≥ 2");
        }
        let (lo, hi) = self.sigma_range;
        if !(lo > 0.0 && lo < hi && hi.is_finite() && self.lr > 0.0) {
            bail!("need 0 < σ_min < σ_max < ∞ and a positive learning rate");
        }
        let specs = if self.divergences.is_empty() {
            default_divergences()?
        } else {
            self.divergences.clone()
        };
        let divergences = specs
            .iter()
            .map(|s| registry::resolve(s))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((bins, beta)) = self.time_bins {
            TimeBinnedNormaliser::new(lo, hi, bins, beta).map_err(anyhow::Error::msg)?;
        }
        Ok(CheckedStudy {
            config: self,
            target,
            divergences,
        })
    }
}

/// Every registered divergence, the α family at α = 0.5.
pub fn default_divergences() -> Result<Vec<String>> {
    Ok(registry::list()?
        .into_iter()
        .map(|i| {
            if i.params.is_empty() {
                i.name.to_string()
            } else {
                format!("{}:0.5", i.name)
            }
        })
        .collect())
}

/// The end-of-run measurements of one (divergence, seed).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Divergence label (`alpha:0.5`).
    pub divergence: String,
    /// Seed.
    pub seed: u64,
    /// Student mass within 3 stds of each target mode.
    pub mode_mass: Vec<f64>,
    /// Modes holding ≥ 50 % of their target mass.
    pub modes_covered: usize,
    /// `KL(p‖q)` (Monte Carlo over exact log densities).
    pub kl_pq: f64,
    /// `KL(q‖p)`.
    pub kl_qp: f64,
    /// Steps skipped because a weight or gradient was not finite.
    pub nonfinite_steps: usize,
    /// Final student samples, for the figure.
    pub samples: Vec<f64>,
}

/// The whole study: target masses and one result per (divergence, seed).
#[derive(Debug, Clone, Serialize)]
pub struct StudyResult {
    /// Target name.
    pub target: String,
    /// Target mass within 3 stds of each mode.
    pub target_mass: Vec<f64>,
    /// Runs, divergence-major.
    pub runs: Vec<RunResult>,
}

/// Adam on a flat parameter vector (β = (0.9, 0.999), ε = 1e−8).
struct Adam {
    lr: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    fn new(n: usize, lr: f64) -> Self {
        Adam {
            lr,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `θ ← θ − lr · m̂ / (√v̂ + ε)`.
    fn step(&mut self, theta: &mut [f64], grad: &[f64]) {
        let (b1, b2) = (0.9f64, 0.999f64);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for i in 0..theta.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * grad[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * grad[i] * grad[i];
            theta[i] -= self.lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

/// Indices of the heaviest modes holding at least 70 % of the target's mass.
pub fn initial_modes(target: &GaussianMixture) -> Vec<usize> {
    let mut order: Vec<usize> = (0..target.n_components()).collect();
    order.sort_by(|&a, &b| target.weights()[b].total_cmp(&target.weights()[a]));
    let mut acc = 0.0;
    let mut out = Vec::new();
    for k in order {
        if acc >= 0.7 {
            break;
        }
        acc += target.weights()[k];
        out.push(k);
    }
    out
}

/// The initial student: `2K` equal-weight components placed round-robin on
/// [`initial_modes`], means jittered by `N(0, 0.1²)`, stds those of the modes.
pub fn initial_student(target: &GaussianMixture, rng: &mut ChaCha8Rng) -> MixtureStudent {
    let modes = initial_modes(target);
    let n = 2 * target.n_components();
    let (mut means, mut stds) = (Vec::new(), Vec::new());
    for c in 0..n {
        let k = modes[c % modes.len()];
        let jitter = |m: &f64, rng: &mut ChaCha8Rng| {
            let e: f64 = StandardNormal.sample(rng);
            m + 0.1 * e
        };
        means.push(target.means()[k].iter().map(|m| jitter(m, rng)).collect());
        stds.push(target.stds()[k].clone());
    }
    let init = GaussianMixture::new(vec![1.0; n], means, stds).expect("valid initial student");
    MixtureStudent::from_mixture(&init)
}

/// One f-distill generator step's θ-gradient (the module docs' pipeline), or `None` if a
/// weight or gradient is not finite.
fn generator_gradient(
    student: &MixtureStudent,
    p: &GaussianMixture,
    divergence: &dyn Divergence,
    draws: &[NoisyDraw],
    time_bins: Option<&mut TimeBinnedNormaliser>,
) -> Option<Vec<f64>> {
    let q = student.mixture().ok()?;
    // 1. exact ratio, clamped and clipped as the discriminator's would be
    let raw: Vec<f64> = draws
        .iter()
        .map(|d| gmm::log_ratio(p, &q, &d.x_t, d.sigma))
        .collect();
    let mut l = clip_ratio(&clamp_logits(&raw, LOGIT_CLAMP), RATIO_CLIP.0, RATIO_CLIP.1);
    // 2. stage-1 (optional) and stage-2 normalisation
    if let Some(tb) = time_bins {
        let sigma: Vec<f64> = draws.iter().map(|d| d.sigma).collect();
        l = tb.update_and_normalise(&l, &sigma);
    }
    let h = normalised_weights(divergence, &l, WEIGHT_EPS);
    // 3. g = w · h · (d_F − d_T), pulled back through x0 with the 1/numel of inject_gradient
    let numel = (draws.len() * student.dim()) as f64;
    let mut grad = vec![0.0; student.params().len()];
    for (d, hi) in draws.iter().zip(&h) {
        let d_t = p.denoise(&d.x_t, d.sigma);
        let d_f = q.denoise(&d.x_t, d.sigma);
        let w = dmd_weight(&d.x0, &d_t);
        let g: Vec<f64> = d_f
            .iter()
            .zip(&d_t)
            .map(|(f, t)| w * hi * (f - t) / numel)
            .collect();
        student.add_pullback(d, &g, &mut grad);
    }
    grad.iter().all(|v| v.is_finite()).then_some(grad)
}

/// Trains one student and measures it.
fn run_one(
    study: &CheckedStudy,
    divergence: &dyn Divergence,
    seed: u64,
    target_mass: &[f64],
    progress: &mut dyn FnMut(u64),
) -> Result<RunResult> {
    let cfg = &study.config;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut student = initial_student(&study.target, &mut rng);
    let mut adam = Adam::new(student.params().len(), cfg.lr);
    let (lo, hi) = cfg.sigma_range;
    let mut time_bins = cfg
        .time_bins
        .map(|(b, beta)| TimeBinnedNormaliser::new(lo, hi, b, beta).expect("checked"));
    let mut nonfinite_steps = 0;
    for step in 0..cfg.steps {
        let draws = student.draw(
            cfg.batch,
            |r: &mut ChaCha8Rng| (lo.ln() + r.random::<f64>() * (hi / lo).ln()).exp(),
            &mut rng,
        );
        match generator_gradient(
            &student,
            &study.target,
            divergence,
            &draws,
            time_bins.as_mut(),
        ) {
            Some(g) => {
                let mut theta = student.params().to_vec();
                adam.step(&mut theta, &g);
                student.set_params(&theta);
            }
            None => nonfinite_steps += 1,
        }
        if step % 50 == 49 || step + 1 == cfg.steps {
            progress((step % 50 + 1) as u64);
        }
    }
    measure(
        study,
        &student,
        divergence,
        seed,
        target_mass,
        nonfinite_steps,
    )
}

fn measure(
    study: &CheckedStudy,
    student: &MixtureStudent,
    divergence: &dyn Divergence,
    seed: u64,
    target_mass: &[f64],
    nonfinite_steps: usize,
) -> Result<RunResult> {
    let q = student
        .mixture()
        .map_err(|e| anyhow::anyhow!("{}: student diverged: {e}", divergence.label()))?;
    let n = study.config.eval_samples;
    let mut rng = ChaCha8Rng::seed_from_u64(1_000_000 + seed);
    let xs = q.sample(n, &mut rng);
    let mode_mass = mode_masses(&study.target, &xs);
    let modes_covered = mode_mass
        .iter()
        .zip(target_mass)
        .filter(|(m, t)| **m >= 0.5 * **t)
        .count();
    let kl_qp = mean_log_ratio(&q, &study.target, &xs);
    let kl_pq = mean_log_ratio(&study.target, &q, &study.target.sample(n, &mut rng));
    Ok(RunResult {
        divergence: divergence.label(),
        seed,
        mode_mass,
        modes_covered,
        kl_pq,
        kl_qp,
        nonfinite_steps,
        samples: xs,
    })
}

/// Fraction of samples (row-major) within 3 stds (largest axis std) of each mode's mean.
pub fn mode_masses(target: &GaussianMixture, xs: &[f64]) -> Vec<f64> {
    let d = target.dim();
    let n = (xs.len() / d) as f64;
    target
        .means()
        .iter()
        .zip(target.stds())
        .map(|(m, s)| {
            let radius = 3.0 * s.iter().copied().fold(0.0, f64::max);
            let inside = xs
                .chunks(d)
                .filter(|x| {
                    x.iter()
                        .zip(m)
                        .map(|(a, b)| (a - b).powi(2))
                        .sum::<f64>()
                        .sqrt()
                        <= radius
                })
                .count();
            inside as f64 / n
        })
        .collect()
}

/// `KL(a‖b) ≈ mean over samples of a of (log a − log b)`, exact log densities.
fn mean_log_ratio(a: &GaussianMixture, b: &GaussianMixture, xs: &[f64]) -> f64 {
    let d = a.dim();
    let n = (xs.len() / d) as f64;
    xs.chunks(d)
        .map(|x| gmm::log_ratio(a, b, x, 0.0))
        .sum::<f64>()
        / n
}

/// Runs every (divergence, seed), calling `progress(k)` after every `k` steps.
pub fn run_study(study: &CheckedStudy, progress: &mut dyn FnMut(u64)) -> Result<StudyResult> {
    let mut rng = ChaCha8Rng::seed_from_u64(999);
    let target_mass = mode_masses(&study.target, &study.target.sample(200_000, &mut rng));
    let mut runs = Vec::new();
    for d in &study.divergences {
        for seed in 0..study.config.seeds {
            runs.push(run_one(study, d.as_ref(), seed, &target_mass, progress)?);
        }
    }
    Ok(StudyResult {
        target: study.config.target.clone(),
        target_mass,
        runs,
    })
}

/// Total progress units of [`run_study`] (steps over all runs).
pub fn total_steps(study: &CheckedStudy) -> u64 {
    (study.divergences.len() as u64) * study.config.seeds * study.config.steps as u64
}

/// `DIR/summary.csv`: one row per (divergence, seed).
pub fn summary_csv(result: &StudyResult) -> String {
    let k = result.target_mass.len();
    let mut out =
        String::from("target,divergence,seed,modes_covered,n_modes,kl_pq,kl_qp,nonfinite_steps");
    for i in 0..k {
        out += &format!(",mass_{i}");
    }
    out.push('\n');
    for r in &result.runs {
        out += &format!(
            "{},{},{},{},{},{:.6},{:.6},{}",
            result.target,
            r.divergence,
            r.seed,
            r.modes_covered,
            k,
            r.kl_pq,
            r.kl_qp,
            r.nonfinite_steps
        );
        for m in &r.mode_mass {
            out += &format!(",{m:.5}");
        }
        out.push('\n');
    }
    out
}

/// `DIR/summary.md`: per-divergence means over seeds, then every run.
pub fn summary_md(result: &StudyResult, config: &ExactStudyConfig) -> String {
    let k = result.target_mass.len();
    let mut out = format!(
        "# Exact mode-coverage study: `{}`\n\n{} seeds × {} steps, batch {}, Adam lr {}, \
         σ log-uniform on [{}, {}], stage-1 time bins {:?}, stage-2 batch normalisation on, \
         ratio clamp ±10 and clip [0.1, 20], DMD normaliser on. Mode mass = student mass within \
         3 std of a mode; a mode is covered if it holds ≥ 50 % of its target mass. KLs are Monte \
         Carlo over exact log densities ({} samples).\n\n",
        result.target,
        config.seeds,
        config.steps,
        config.batch,
        config.lr,
        config.sigma_range.0,
        config.sigma_range.1,
        config.time_bins,
        config.eval_samples
    );
    let head: Vec<String> = (0..k).map(|i| format!("m{i}")).collect();
    out += &format!(
        "| divergence | covered (mean, min–max) of {k} | KL(p‖q) | KL(q‖p) | {} |\n|---|---|---|---|{}\n",
        head.join(" | "),
        "---|".repeat(k)
    );
    let masses: Vec<String> = result
        .target_mass
        .iter()
        .map(|m| format!("{m:.3}"))
        .collect();
    out += &format!("| *target* | {k} | 0 | 0 | {} |\n", masses.join(" | "));
    let mut labels: Vec<&str> = result.runs.iter().map(|r| r.divergence.as_str()).collect();
    labels.dedup();
    for label in labels {
        let runs: Vec<&RunResult> = result
            .runs
            .iter()
            .filter(|r| r.divergence == label)
            .collect();
        let n = runs.len() as f64;
        let cov: Vec<usize> = runs.iter().map(|r| r.modes_covered).collect();
        let mean = |f: &dyn Fn(&RunResult) -> f64| runs.iter().map(|r| f(r)).sum::<f64>() / n;
        let masses: Vec<String> = (0..k)
            .map(|i| format!("{:.3}", mean(&|r| r.mode_mass[i])))
            .collect();
        out += &format!(
            "| {label} | {:.2} ({}–{}) | {:.3} | {:.3} | {} |\n",
            mean(&|r| r.modes_covered as f64),
            cov.iter().min().unwrap_or(&0),
            cov.iter().max().unwrap_or(&0),
            mean(&|r| r.kl_pq),
            mean(&|r| r.kl_qp),
            masses.join(" | ")
        );
    }
    let skipped: usize = result.runs.iter().map(|r| r.nonfinite_steps).sum();
    out += &format!("\nNon-finite steps skipped over all runs: {skipped}.\n");
    out
}

/// A file name for a divergence label (`alpha:0.5` → `alpha_0.5`).
pub fn figure_name(label: &str) -> String {
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.png")
}

/// One PNG per divergence (seed 0): student samples over the target density.
pub fn write_figures(dir: &Path, study: &CheckedStudy, result: &StudyResult) -> Result<()> {
    let p = &study.target;
    for r in result.runs.iter().filter(|r| r.seed == 0) {
        let path = dir.join(figure_name(&r.divergence));
        let title = format!("{} on {} (seed 0)", r.divergence, result.target);
        let shown = &r.samples[..r.samples.len().min(3000 * p.dim())];
        if p.dim() == 1 {
            let density = |x: f64| p.log_density(&[x], 0.0);
            plot::histogram_png(
                &path,
                &plot::Histogram1d {
                    title: &title,
                    samples: &r.samples,
                    log_density: Some(&density),
                    x_range: (-5.0, 5.0),
                    bins: 100,
                },
            )?;
        } else {
            let points: Vec<[f64; 2]> = shown.chunks(2).map(|c| [c[0], c[1]]).collect();
            let density = |x: f64, y: f64| p.log_density(&[x, y], 0.0);
            plot::scatter_png(
                &path,
                &plot::Scatter {
                    title: &title,
                    points: &points,
                    log_density: Some(&density),
                    x_range: (-6.0, 6.0),
                    y_range: (-6.0, 6.0),
                },
            )?;
        }
    }
    Ok(())
}

/// Runs the study and writes `summary.csv`, `summary.md` and the figures into `dir`.
pub fn run_and_write(
    study: &CheckedStudy,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<StudyResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_study(study, progress)?;
    std::fs::write(dir.join("summary.csv"), summary_csv(&result))?;
    std::fs::write(dir.join("summary.md"), summary_md(&result, &study.config))?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&study.config)?,
    )?;
    write_figures(dir, study, &result)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_modes_are_the_heaviest_seventy_percent() {
        assert_eq!(initial_modes(&targets::ring8_unbalanced()), vec![0, 1, 2]);
        assert_eq!(initial_modes(&targets::bimodal_1d()), vec![0]);
    }

    /// Independent check of the mode masses: target samples give each mode its weight times
    /// the 2-D Gaussian mass within 3 std, `1 − e^{−9/2}`.
    #[test]
    fn mode_masses_of_target_samples_match_closed_form() {
        let p = targets::ring8_unbalanced();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let m = mode_masses(&p, &p.sample(100_000, &mut rng));
        for (mi, w) in m.iter().zip(targets::RING8_WEIGHTS) {
            let expect = w * (1.0 - (-4.5f64).exp());
            let se = (expect * (1.0 - expect) / 100_000.0).sqrt();
            assert!((mi - expect).abs() < 5.0 * se, "{mi} vs {expect}");
        }
    }

    /// Adam's first step moves every coordinate by lr against the sign of the gradient.
    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let mut adam = Adam::new(2, 0.1);
        let mut theta = [1.0, 1.0];
        adam.step(&mut theta, &[3.0, -0.01]);
        assert!((theta[0] - 0.9).abs() < 1e-6 && (theta[1] - 1.1).abs() < 1e-6);
    }

    /// At `q = p` the exact denoisers agree, so `d_F − d_T = 0` and the step's gradient
    /// vanishes for every divergence, whatever the weights.
    #[test]
    fn generator_gradient_vanishes_when_student_equals_target() {
        fdistill_divergences::link();
        let p = targets::ring8_unbalanced();
        let student = MixtureStudent::from_mixture(&p);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let draws = student.draw(64, |r: &mut ChaCha8Rng| r.random_range(0.05..5.0), &mut rng);
        for spec in ["reverse-kl", "forward-kl", "pearson-chi2"] {
            let d = registry::resolve(spec).unwrap();
            let g = generator_gradient(&student, &p, d.as_ref(), &draws, None).unwrap();
            assert!(g.iter().all(|v| v.abs() < 1e-9), "{spec}: {g:?}");
        }
        // and not at another student: the test can fail.
        let moved =
            student.with_params(&student.params().iter().map(|t| t + 0.3).collect::<Vec<_>>());
        let d = registry::resolve("reverse-kl").unwrap();
        let g = generator_gradient(&moved, &p, d.as_ref(), &draws, None).unwrap();
        assert!(g.iter().any(|v| v.abs() > 1e-3));
    }

    #[test]
    fn unknown_target_lists_the_known_ones() {
        let cfg = ExactStudyConfig {
            target: "nope".into(),
            ..Default::default()
        };
        let err = cfg.check().err().unwrap().to_string();
        assert!(
            err.contains("ring8-unbalanced") && err.contains("bimodal-1d"),
            "{err}"
        );
    }
}
