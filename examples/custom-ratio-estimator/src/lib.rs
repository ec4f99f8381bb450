//! A density-ratio estimator of your own, plugged into f-distill.
//!
//! [`QuadraticRatio`] is logistic regression on quadratic features of the noisy sample and
//! the log noise level: with `s = ln σ`,
//!
//! $$ \ell_w(x, \sigma) = w^\top \phi(x, \sigma),\qquad
//!    \phi = \big(x,\ x^2,\ s\\,x,\ s\\,x^2,\ 1,\ s\big) \in \mathbb R^{4d + 2}. $$
//!
//! Trained with the logistic loss `mean softplus(ℓ(fake)) + mean softplus(−ℓ(real))`, its
//! optimum is the log ratio `log p_σ/q_σ` whenever that is a quadratic in `x` — exactly the
//! case of two Gaussians, which [`check_against_closed_form`] uses as an independent test.
//! A discriminator needs only two traits: [`DensityRatioEstimator`] (the log ratio) and
//! [`LearnedRatioEstimator`] (its training loss); [`distill_with_it`] hands one to
//! [`FDistill`] as its critic.

use std::fmt;

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use fdistill::core::losses::discriminator_loss;
use fdistill::core::ratio::{DensityRatioEstimator, LearnedRatioEstimator, RatioInput};
use fdistill::core::targets::ring8_unbalanced;
use fdistill::data::TrainingData;
use fdistill::nets::MlpDenoiser;
use fdistill::studies::ring8::{
    Scores, latents, reference, scores, seeded, to_host, train_ring8_teacher,
};
use fdistill::train::checkpoint::RunDir;
use fdistill::train::distill::{Critic, DistillConfig, DistillMethod, FDistill, run_distillation};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// The training backend.
type Ad = Autodiff<Flex>;
/// The same without autodiff.
type Inner = Flex;
/// Budgets of the distillation part (those of the `distill-2d` example).
const TEACHER_STEPS: usize = 800;
/// Distillation iterations.
const DISTILL_STEPS: usize = 600;

/// Logistic regression on quadratic features of `(x, ln σ)`; see the crate docs.
#[derive(Module, Debug)]
pub struct QuadraticRatio<B: Backend> {
    /// `w`: `4d + 2` features → one logit.
    pub linear: Linear<B>,
}

impl<B: Backend> QuadraticRatio<B> {
    /// A fresh estimator for `dim`-dimensional samples.
    pub fn new(dim: usize, device: &B::Device) -> Self {
        QuadraticRatio {
            linear: LinearConfig::new(4 * dim + 2, 1).init(device),
        }
    }

    /// `φ(x, σ)`.
    ///
    /// # Shapes
    /// - `x`: `[batch, d]`, `sigma`: `[batch]`; returns `[batch, 4d + 2]`
    fn features(x: Tensor<B, 2>, sigma: Tensor<B, 1>) -> Tensor<B, 2> {
        let [batch, _] = x.dims();
        let s = sigma.log().unsqueeze_dim::<2>(1); // [batch, 1]
        let x2 = x.clone().powf_scalar(2.0);
        let xs = x.clone() * s.clone();
        let x2s = x2.clone() * s.clone();
        let one = Tensor::<B, 2>::ones([batch, 1], &s.device());
        Tensor::cat(vec![x, x2, xs, x2s, one, s], 1)
    }
}

impl<B: Backend> DensityRatioEstimator<B> for QuadraticRatio<B> {
    fn name(&self) -> &str {
        "quadratic-logistic"
    }

    fn log_ratio(&self, input: &RatioInput<B>) -> Tensor<B, 1> {
        let phi = Self::features(input.x_noisy.clone(), input.sigma.clone()); // [b, 4d + 2]
        self.linear.forward(phi).squeeze_dim::<1>(1) // [b]
    }
}

impl<B: AutodiffBackend> LearnedRatioEstimator<B> for QuadraticRatio<B> {
    fn loss(&self, real: &RatioInput<B>, fake: &RatioInput<B>) -> Tensor<B, 1> {
        discriminator_loss(self.log_ratio(fake), self.log_ratio(real))
    }
}

fn tensor2<B: Backend>(values: Vec<f64>, n: usize, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values, [n, 1]).convert::<f32>(), device)
}

/// Log density of `N(mean, var)` at `x`.
fn log_normal(x: f64, mean: f64, var: f64) -> f64 {
    -0.5 * ((x - mean).powi(2) / var + (2.0 * std::f64::consts::PI * var).ln())
}

/// Trains a 1-D [`QuadraticRatio`] to tell `p = N(0, 1)` from `q = N(1, 0.5²)` at σ = 0.5
/// and returns the largest error of its log ratio against the closed form
///
/// $$ \ell^*(x) = \log \mathcal N(x; 0, 1 + \sigma^2) - \log \mathcal N(x; 1, 0.25 + \sigma^2) $$
///
/// on `x ∈ [−1, 2]`, where both noisy densities have mass.
pub fn check_against_closed_form(seed: u64) -> f64 {
    seeded::<Ad, _>(&FlexDevice, seed, || closed_form_error(seed))
}

fn closed_form_error(seed: u64) -> f64 {
    let device = Default::default();
    let sigma = 0.5_f64;
    let (var_p, var_q) = (1.0 + sigma * sigma, 0.25 + sigma * sigma);
    let p = Normal::new(0.0, var_p.sqrt()).expect("valid normal");
    let q = Normal::new(1.0, var_q.sqrt()).expect("valid normal");
    let mut est = QuadraticRatio::<Ad>::new(1, &device);
    let mut optim = AdamConfig::new().init::<Ad, QuadraticRatio<Ad>>();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = 512;
    let sig = Tensor::<Ad, 1>::full([n], sigma, &device);
    for _ in 0..600 {
        let real: Vec<f64> = (0..n).map(|_| p.sample(&mut rng)).collect();
        let fake: Vec<f64> = (0..n).map(|_| q.sample(&mut rng)).collect();
        let loss = est.loss(
            &RatioInput::new(tensor2(real, n, &device), sig.clone()),
            &RatioInput::new(tensor2(fake, n, &device), sig.clone()),
        );
        let grads = GradientsParams::from_grads(loss.backward(), &est);
        est = optim.step(0.05, est, grads);
    }
    let est = est.valid();
    let grid: Vec<f64> = (0..=60).map(|i| -1.0 + 3.0 * i as f64 / 60.0).collect();
    let m = grid.len();
    let input = RatioInput::new(
        tensor2::<Inner>(grid.clone(), m, &device),
        Tensor::<Inner, 1>::full([m], sigma, &device),
    );
    let got: Vec<f64> = est
        .log_ratio(&input)
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("f64 data");
    grid.iter()
        .zip(got)
        .map(|(&x, l)| (l - (log_normal(x, 0.0, var_p) - log_normal(x, 1.0, var_q))).abs())
        .fold(0.0, f64::max)
}

/// What the example reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Largest error of the learnt log ratio against the closed form (1-D Gaussians).
    pub closed_form_max_error: f64,
    /// The f-distill student trained with the estimator as its critic.
    pub student: Scores,
    /// MMD² floor of the evaluation.
    pub mmd2_floor: f64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "estimator: quadratic-logistic")?;
        writeln!(
            f,
            "1-D Gaussians at sigma 0.5: max |log-ratio error| {:.2}",
            self.closed_form_max_error
        )?;
        writeln!(
            f,
            "ring8 student (jensen-shannon, this estimator as critic): MMD² {:.3} (floor {:.3}), modes {}/8",
            self.student.mmd2, self.mmd2_floor, self.student.modes
        )
    }
}

/// Distils the `ring8-unbalanced` teacher (`fdistill::studies::ring8`, as in `distill-2d`) with the estimator as
/// f-distill's critic (`Critic::Learned`), then scores the one-step student. Call it inside
/// [`seeded`].
pub fn distill_with_it(seed: u64) -> (Scores, f64) {
    let device = Default::default();
    let (_, teacher_ema) =
        train_ring8_teacher::<Ad>(TEACHER_STEPS, seed, &device).expect("teacher");
    let teacher = MlpDenoiser::<Ad>::from_inner(teacher_ema);
    let mut config = DistillConfig::toy();
    config.driver.steps = DISTILL_STEPS;
    config.driver.checkpoint_every = DISTILL_STEPS;
    config.driver.seed = seed;
    let config = config.check().expect("valid config");
    let mut method = FDistill::new(
        config.clone(),
        teacher.clone().no_grad(),
        teacher,
        Critic::Learned(QuadraticRatio::<Ad>::new(2, &device)),
        TrainingData::Mixture(ring8_unbalanced()),
        &device,
    )
    .expect("distillation set-up");
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = RunDir::create(dir.path()).expect("run directory");
    run_distillation(&mut method, &config.driver, &run, false, |_| Ok(())).expect("distillation");
    let n = 1000;
    let student = to_host(method.generate(latents(n, 2, seed + 1, &device), None));
    let (reference, floor) = reference(n, seed + 2);
    (scores(&student, &reference, 1), floor)
}

/// Both parts with one seed.
pub fn run(seed: u64) -> Summary {
    seeded::<Ad, _>(&FlexDevice, seed, || {
        let closed_form_max_error = closed_form_error(seed);
        let (student, mmd2_floor) = distill_with_it(seed);
        Summary {
            closed_form_max_error,
            student,
            mmd2_floor,
        }
    })
}
