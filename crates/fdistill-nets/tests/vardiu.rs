//! The VarDiU objective with the real posterior network and the exact teacher of a Gaussian
//! target: its θ-gradient against finite differences of the exact bound, its φ-step, and a
//! short training run.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::LinearConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use fdistill_core::AnalyticTeacher;
use fdistill_core::gmm::GaussianMixture;
use fdistill_core::vardiu_bound::{VarDiuBatch, VarDiuWeight, vardiu_loss, vardiu_weight};
use fdistill_nets::{GaussianPosterior, GaussianPosteriorConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type A = Autodiff<Flex>;
type P = Flex;

const N: usize = 8;
const SIGMA_MAX: f64 = 3.0;

/// A one-step generator `G(z) = a ⊙ z + b`.
#[derive(Module, Debug)]
struct Affine<B: Backend> {
    a: Param<Tensor<B, 1>>,
    b: Param<Tensor<B, 1>>,
}

impl<B: Backend> Affine<B> {
    fn new(a: [f64; 2], b: [f64; 2], device: &B::Device) -> Self {
        let t = |v: [f64; 2]| Param::from_tensor(Tensor::from_data(TensorData::from(v), device));
        Affine { a: t(a), b: t(b) }
    }

    /// # Shapes
    /// - `z`: `[batch, 2]`; returns `[batch, 2]`
    fn forward(&self, z: Tensor<B, 2>) -> Tensor<B, 2> {
        z * self.a.val().unsqueeze_dim::<2>(0) + self.b.val().unsqueeze_dim::<2>(0)
    }
}

fn target() -> GaussianMixture {
    GaussianMixture::new(vec![1.0], vec![vec![1.0, -2.0]], vec![vec![0.7, 1.3]]).unwrap()
}

/// Serialises every network initialisation of this file: the backend's RNG is global, and
/// the resume test needs two constructions to give the same weights.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn locked<T>(f: impl FnOnce() -> T) -> T {
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// A posterior whose output layer is randomly initialised, so that `log q_φ` depends on x_t.
fn posterior<B: Backend>(device: &B::Device) -> GaussianPosterior<B> {
    let mut cfg = GaussianPosteriorConfig::new(2, 2, 1.5);
    cfg.hidden = 16;
    cfg.depth = 2;
    locked(|| {
        // Seeded: the backend's RNG is global, so every test gets the same posterior.
        B::seed(device, 17);
        let mut net = cfg.init::<B>(device);
        net.output = LinearConfig::new(16, 4).init(device);
        net
    })
}

struct Draw {
    z: Vec<f64>,
    eps: Vec<f64>,
    sigma: Vec<f64>,
}

fn draw(seed: u64) -> Draw {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let z = fdistill_core::random::standard_normal(2 * N, &mut rng);
    let eps = fdistill_core::random::standard_normal(2 * N, &mut rng);
    let sigma = (0..N).map(|i| 0.3 + 0.35 * i as f64).collect();
    Draw { z, eps, sigma }
}

fn tensors<B: Backend>(
    d: &Draw,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>) {
    let w: Vec<f64> = d
        .sigma
        .iter()
        .map(|s| vardiu_weight(*s, SIGMA_MAX, VarDiuWeight::SigmaSquared))
        .collect();
    let f = |v: &[f64], shape: Vec<usize>| TensorData::new(v.to_vec(), shape).convert::<f32>();
    (
        Tensor::from_data(f(&d.z, vec![N, 2]), device),
        Tensor::from_data(f(&d.eps, vec![N, 2]), device),
        Tensor::from_data(f(&d.sigma, vec![N]), device),
        Tensor::from_data(f(&w, vec![N]), device),
    )
}

/// The exact bound `U(a, b) = mean_b w_b[−log q_φ(z | x_t, σ) − log p_σ(x_t)]`, `log p_σ` in
/// f64 from the mixture's closed form (independent of the teacher's score).
fn exact_bound(a: [f64; 2], b: [f64; 2], post: &GaussianPosterior<P>, d: &Draw) -> f64 {
    let device = Default::default();
    let generator = Affine::<P>::new(a, b, &device);
    let (z, eps, sigma, w) = tensors::<P>(d, &device);
    let x_t = generator.forward(z.clone()) + eps * sigma.clone().unsqueeze_dim::<2>(1);
    let log_q: Vec<f64> = post
        .log_prob(z, x_t.clone(), sigma)
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let xs: Vec<f64> = x_t.into_data().convert::<f64>().to_vec().unwrap();
    let w: Vec<f64> = w.into_data().convert::<f64>().to_vec().unwrap();
    let p = target();
    (0..N)
        .map(|i| w[i] * (-log_q[i] - p.log_density(&xs[2 * i..2 * i + 2], d.sigma[i])))
        .sum::<f64>()
        / N as f64
}

/// ∇_θ of the surrogate = ∇_θ U, with U from the closed-form `log p_σ` and central
/// differences (step 1e-2; U is smooth, f32 round-off ≈ 1e-5).
#[test]
fn generator_gradient_matches_finite_differences_of_the_exact_bound() {
    let device = Default::default();
    let (a0, b0) = ([0.8, 1.4], [0.3, -0.5]);
    let generator = Affine::<A>::new(a0, b0, &device);
    let post = posterior::<A>(&device);
    let d = draw(7);
    let (z, eps, sigma, weight) = tensors::<A>(&d, &device);
    let teacher = AnalyticTeacher::new(target());
    let out = vardiu_loss(
        VarDiuBatch {
            x0: generator.forward(z.clone()),
            z,
            eps,
            sigma,
            weight,
        },
        &post,
        &teacher,
    );
    let grads = out.loss.backward();
    let to_vec = |t: Tensor<P, 1>| -> Vec<f64> { t.into_data().convert::<f64>().to_vec().unwrap() };
    let ga = to_vec(generator.a.grad(&grads).unwrap());
    let gb = to_vec(generator.b.grad(&grads).unwrap());

    let post_p = post.valid();
    let h = 1e-2;
    for j in 0..2 {
        let (mut ap, mut am, mut bp, mut bm) = (a0, a0, b0, b0);
        ap[j] += h;
        am[j] -= h;
        bp[j] += h;
        bm[j] -= h;
        let fd_a =
            (exact_bound(ap, b0, &post_p, &d) - exact_bound(am, b0, &post_p, &d)) / (2.0 * h);
        let fd_b =
            (exact_bound(a0, bp, &post_p, &d) - exact_bound(a0, bm, &post_p, &d)) / (2.0 * h);
        assert!(
            (ga[j] - fd_a).abs() < 2e-3 + 1e-2 * fd_a.abs(),
            "a[{j}]: {} vs {fd_a}",
            ga[j]
        );
        assert!(
            (gb[j] - fd_b).abs() < 2e-3 + 1e-2 * fd_b.abs(),
            "b[{j}]: {} vs {fd_b}",
            gb[j]
        );
    }
    // The posterior term alone is reported as mean w·(−log q).
    let bound = exact_bound(a0, b0, &post_p, &d);
    assert!(out.neg_log_q.is_finite() && bound.is_finite());
}

/// Stepping only φ on the same loss raises the weighted mean `log q_φ` of a fixed batch.
#[test]
fn posterior_steps_increase_mean_log_q() {
    let device = Default::default();
    let generator = Affine::<A>::new([0.8, 1.4], [0.3, -0.5], &device);
    let mut post = posterior::<A>(&device);
    let d = draw(11);
    let teacher = AnalyticTeacher::new(target());
    let mut optim = AdamConfig::new().init::<A, GaussianPosterior<A>>();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..60 {
        let (z, eps, sigma, weight) = tensors::<A>(&d, &device);
        let out = vardiu_loss(
            VarDiuBatch {
                x0: generator.forward(z.clone()).detach(),
                z,
                eps,
                sigma,
                weight,
            },
            &post,
            &teacher,
        );
        first.get_or_insert(out.neg_log_q);
        last = out.neg_log_q;
        let grads = GradientsParams::from_grads(out.loss.backward(), &post);
        post = optim.step(1e-2, post, grads);
    }
    let first = first.unwrap();
    assert!(last < first - 0.1, "mean w·(−log q): {first} → {last}");
}

/// A short VarDiU run (both optimisers stepping on one backward, antithetic pairs, w = 1,
/// σ ~ U(0.05, 1.5)) moves an affine generator's mean and scale to those of the Gaussian
/// target. (With w = (σ/σ_max)² and σ up to 3 the narrow coordinate collapses: the bound is
/// then dominated by large σ, where the entropy and teacher forces nearly cancel and a lagging
/// posterior's bias wins. Recorded, not hidden.)
#[test]
fn a_short_run_fits_a_gaussian_target() {
    use fdistill_core::vardiu_bound::{antithetic_pairs, vardiu_sigma};
    use rand::RngExt;
    let device = Default::default();
    let mut generator = Affine::<A>::new([0.2, 0.2], [0.0, 0.0], &device);
    let mut post = posterior::<A>(&device);
    let teacher = AnalyticTeacher::new(target());
    let mut opt_g = AdamConfig::new().init::<A, Affine<A>>();
    let mut opt_p = AdamConfig::new().init::<A, GaussianPosterior<A>>();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let half = 64;
    for _ in 0..2500 {
        let z = fdistill_core::random::standard_normal(2 * half, &mut rng);
        let eps = fdistill_core::random::standard_normal(2 * half, &mut rng);
        let sigma: Vec<f64> = (0..half)
            .map(|_| vardiu_sigma(rng.random::<f64>(), 1.0, 0.05, 1.5))
            .collect();
        let (z, eps, sigma) = antithetic_pairs(&z, &eps, &sigma);
        let d = Draw { z, eps, sigma };
        let n = 2 * half;
        let f = |v: &[f64], shape: Vec<usize>| TensorData::new(v.to_vec(), shape).convert::<f32>();
        let w: Vec<f64> = d
            .sigma
            .iter()
            .map(|s| vardiu_weight(*s, 1.5, VarDiuWeight::One))
            .collect();
        let zt = Tensor::<A, 2>::from_data(f(&d.z, vec![n, 2]), &device);
        let out = vardiu_loss(
            VarDiuBatch {
                x0: generator.forward(zt.clone()),
                z: zt,
                eps: Tensor::from_data(f(&d.eps, vec![n, 2]), &device),
                sigma: Tensor::from_data(f(&d.sigma, vec![n]), &device),
                weight: Tensor::from_data(f(&w, vec![n]), &device),
            },
            &post,
            &teacher,
        );
        // One backward, both optimisers step.
        let mut grads = out.loss.backward();
        let gg = GradientsParams::from_module(&mut grads, &generator);
        let gp = GradientsParams::from_module(&mut grads, &post);
        generator = opt_g.step(2e-3, generator, gg);
        post = opt_p.step(1e-2, post, gp);
    }
    let a: Vec<f64> = generator
        .a
        .val()
        .abs()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let b: Vec<f64> = generator
        .b
        .val()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    // Target N((1, −2), diag(0.7², 1.3²)); |a| is the generator's std.
    for (j, (m, s)) in [(1.0, 0.7), (-2.0, 1.3)].into_iter().enumerate() {
        assert!((b[j] - m).abs() < 0.15, "mean[{j}] = {} vs {m}", b[j]);
        assert!((a[j] - s).abs() < 0.15 * s, "std[{j}] = {} vs {s}", a[j]);
    }
}

mod method {
    use super::*;
    use fdistill_core::vardiu_bound::PowSchedule;
    use fdistill_nets::{MlpDenoiser, MlpDenoiserConfig};
    use fdistill_train::checkpoint::RunDir;
    use fdistill_train::distill::driver::DriverSummary;
    use fdistill_train::distill::{
        DistillError, DistillMethod, DriverConfig, VarDiU, VarDiuConfig, run_distillation,
    };
    use fdistill_train::teacher::ema_update;
    use std::path::Path;

    type Method = VarDiU<A, AnalyticTeacher, MlpDenoiser<A>, GaussianPosterior<A>>;

    fn method(steps: usize, nan_at: Option<usize>) -> Method {
        let device = Default::default();
        let (generator, posterior) = networks();
        VarDiU::new(
            config(steps, nan_at),
            AnalyticTeacher::new(target()),
            generator,
            posterior,
            &device,
        )
        .unwrap()
    }

    /// Generator and posterior built from a fixed seed, so that two calls give the same
    /// initial weights.
    fn networks() -> (MlpDenoiser<A>, GaussianPosterior<A>) {
        let device = Default::default();
        let mut net = MlpDenoiserConfig::new(2, 1.5);
        net.hidden = 16;
        net.depth = 2;
        let mut post = GaussianPosteriorConfig::new(2, 2, 1.5);
        post.hidden = 16;
        post.depth = 2;
        locked(|| {
            A::seed(&device, 42);
            (net.init::<A>(&device), post.init::<A>(&device))
        })
    }

    fn config(steps: usize, nan_at: Option<usize>) -> VarDiuConfig {
        VarDiuConfig {
            batch_size: 16,
            sigma_min: Some(0.05),
            sigma_max: Some(5.0),
            sigma_init: Some(5.0),
            lr_generator: 1e-3,
            lr_posterior: 1e-3,
            ema_beta: 0.99,
            pow: PowSchedule {
                start: 0.1,
                end: 1.0,
                increment: 0.09,
                period: 1,
            },
            inject_nan_at_step: nan_at,
            driver: DriverConfig {
                steps,
                checkpoint_every: 3,
                log_every: 1,
                seed: 5,
            },
            ..VarDiuConfig::default()
        }
    }

    /// Weights that went through an EMA copy (inner backend, then `from_inner`) arrive with
    /// `require_grad = false`. The constructor must make the generator and the posterior
    /// trainable again, or neither ever moves and the run silently returns its
    /// initialisation (the guard f-distill's method has, applied to VarDiU).
    #[test]
    fn networks_that_went_through_an_ema_copy_still_train() {
        let device = Default::default();
        let (generator, posterior) = networks();
        let generator =
            MlpDenoiser::<A>::from_inner(ema_update(generator.valid(), &generator.valid(), 0.5));
        let posterior = GaussianPosterior::<A>::from_inner(ema_update(
            posterior.valid(),
            &posterior.valid(),
            0.5,
        ));
        // No EMA: the sampled generator is the trained one.
        let config = VarDiuConfig {
            ema_beta: 0.0,
            ..config(2, None)
        };
        let mut m = VarDiU::new(
            config,
            AnalyticTeacher::new(target()),
            generator,
            posterior,
            &device,
        )
        .unwrap();
        let latents = || {
            Tensor::<P, 2>::from_data(
                TensorData::new(vec![0.3f32, -1.0, 1.2, 0.4, -0.7, 0.9], [3, 2]),
                &device,
            )
        };
        let probe = |m: &Method| {
            let (z, x) = (latents(), latents().mul_scalar(2.0));
            let lq = m.posterior().valid().log_prob(
                z,
                x,
                Tensor::from_data(TensorData::from([0.5f32, 1.0, 2.0]), &device),
            );
            let g = m.generate(latents(), None);
            let v = |t: Tensor<P, 1>| t.into_data().convert::<f64>().to_vec::<f64>().unwrap();
            (v(g.reshape([6])), v(lq))
        };
        let (g0, q0) = probe(&m);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for step in 1..=2 {
            m.step(step, &mut rng).unwrap();
        }
        let (g1, q1) = probe(&m);
        let moved = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max)
        };
        assert!(
            moved(&g0, &g1) > 1e-5,
            "the generator never trained: {g0:?} vs {g1:?}"
        );
        assert!(
            moved(&q0, &q1) > 1e-5,
            "the posterior never trained: {q0:?} vs {q1:?}"
        );
    }

    fn run(m: &mut Method, dir: &Path, resume: bool) -> Result<DriverSummary, DistillError> {
        let run = RunDir::create(dir).unwrap();
        let config = m.config().driver.clone();
        run_distillation(m, &config, &run, resume, |_| Ok(()))
    }

    /// metrics.jsonl without the wall-clock times.
    fn metrics(dir: &Path) -> Vec<serde_json::Value> {
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

    /// 8 steps in one go vs 5 steps, then a fresh method resumed to 8: the same metrics line
    /// for line (generator, posterior, both AdamW states, EMA, RNG, pow schedule).
    #[test]
    fn resume_is_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        run(&mut method(8, None), &a, false).unwrap();
        run(&mut method(5, None), &b, false).unwrap();
        let s = run(&mut method(8, None), &b, true).unwrap();
        assert_eq!((s.first_step, s.last_step), (6, 8));
        let (ma, mb) = (metrics(&a), metrics(&b));
        assert_eq!(ma.len(), 8);
        assert_eq!(ma, mb);
        assert_ne!(ma[1]["neg_log_q"], ma[7]["neg_log_q"]);
        // pow rises 0.1 → 1 by 0.09 per step: step 6 uses pow(5) = 0.55.
        assert!((ma[5]["pow"].as_f64().unwrap() - 0.55).abs() < 1e-12);
        // One-step samples of the EMA generator.
        let mut m = method(8, None);
        m.load(&a.join("checkpoint")).unwrap();
        let x = m.generate(Tensor::zeros([3, 2], &Default::default()), None);
        assert_eq!(x.dims(), [3, 2]);
    }

    /// An injected NaN at step 5 stops with the step and quantity; the step-3 checkpoint is
    /// intact and the run resumes to the end without the fault.
    #[test]
    fn injected_nan_stops_and_keeps_the_last_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let e = run(&mut method(8, Some(5)), &dir, false).unwrap_err();
        assert!(
            matches!(&e, DistillError::NonFinite { step: 5, quantity, .. } if quantity == "VarDiU loss"),
            "{e}"
        );
        assert!(e.to_string().contains("(step 3) is intact"), "{e}");
        assert_eq!(metrics(&dir).len(), 4);
        let s = run(&mut method(8, None), &dir, true).unwrap();
        assert_eq!(s.last_step, 8);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = VarDiuConfig {
            sigma_min: Some(0.0),
            ..VarDiuConfig::mog40_reference()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("sigma_min"), "{e}");
        let e = VarDiuConfig {
            lr_posterior: -1.0,
            ..VarDiuConfig::mog40_reference()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("lr_posterior"), "{e}");
        let e = VarDiuConfig {
            batch_size: 7,
            ..VarDiuConfig::mog40_reference()
        }
        .check()
        .unwrap_err()
        .to_string();
        assert!(e.contains("even"), "{e}");
    }

    /// No image-range default: the default config has no noise range, and says how to get
    /// one; the data-scale rule fills it (σ_max = σ_data, σ_min = σ_max/200, σ_init = 4σ_max)
    /// without overriding what is set.
    #[test]
    fn the_noise_range_comes_from_the_data_or_the_user() {
        let e = VarDiuConfig::default().check().unwrap_err().to_string();
        assert!(
            e.contains("no image-range default")
                && e.contains("mog40-reference")
                && e.contains("σ_max = σ_data"),
            "{e}"
        );
        let c = VarDiuConfig::default()
            .with_data_scale(2.5)
            .check()
            .unwrap();
        assert_eq!(c.sigma_range(), (2.5 / 200.0, 2.5));
        assert_eq!(c.sigma_init(), 10.0);
        let c = VarDiuConfig {
            sigma_max: Some(20.0),
            ..VarDiuConfig::default()
        }
        .with_data_scale(23.0);
        assert_eq!(
            (c.sigma_min, c.sigma_max, c.sigma_init),
            (Some(0.1), Some(20.0), Some(80.0))
        );
        let r = VarDiuConfig::mog40_reference();
        assert_eq!(r.clone().with_data_scale(1.0), r);
        assert_eq!(VarDiuConfig::preset("mog40-reference").unwrap(), r);
        let e = VarDiuConfig::preset("mog40").unwrap_err().to_string();
        assert!(e.contains("data-scale, mog40-reference"), "{e}");
        // JSON round trip of both presets.
        for name in fdistill_train::distill::vardiu::VARDIU_PRESETS {
            let c = VarDiuConfig::preset(name).unwrap();
            let back: VarDiuConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
    }
}

/// `log q_φ(z | x_t, σ)` by hand from the posterior's mean and log-std (a diagonal Gaussian:
/// `Σ_j −½((z_j − μ_j)/s_j)² − log s_j − ½ log 2π`), in f64.
fn log_q_by_hand(
    post: &GaussianPosterior<P>,
    z: &[f64],
    x_t: Tensor<P, 2>,
    sigma: Tensor<P, 1>,
) -> Vec<f64> {
    let (mean, log_std) = post.forward(x_t, sigma);
    let host = |t: Tensor<P, 2>| -> Vec<f64> { t.into_data().convert::<f64>().to_vec().unwrap() };
    let (mu, ls) = (host(mean), host(log_std));
    (0..N)
        .map(|i| {
            (0..2)
                .map(|j| {
                    let k = 2 * i + j;
                    let u = (z[k] - mu[k]) / ls[k].exp();
                    -0.5 * u * u - ls[k] - 0.5 * (2.0 * std::f64::consts::PI).ln()
                })
                .sum()
        })
        .collect()
}

/// The reported posterior term by value, and the φ-gradient against finite differences:
/// `neg_log_q = mean w·(−log q_φ)` with `log q` by hand, and the full bound `U` of
/// [`exact_bound`] equals `neg_log_q + mean w·(−log p_σ(x_t))` (closed-form `log p_σ`);
/// `∂loss/∂φ` (the posterior's output layer, which sets mean and log-std) equals central
/// differences of `U` in φ (the teacher term does not depend on φ).
#[test]
fn reported_bound_and_posterior_gradient_match_the_exact_bound() {
    let device = Default::default();
    let (a0, b0) = ([0.8, 1.4], [0.3, -0.5]);
    let generator = Affine::<A>::new(a0, b0, &device);
    let post = posterior::<A>(&device);
    let d = draw(13);
    let (z, eps, sigma, weight) = tensors::<A>(&d, &device);
    let teacher = AnalyticTeacher::new(target());
    let out = vardiu_loss(
        VarDiuBatch {
            x0: generator.forward(z.clone()),
            z,
            eps,
            sigma,
            weight,
        },
        &post,
        &teacher,
    );
    let grads = out.loss.backward();
    let to_vec = |t: Tensor<P, 1>| -> Vec<f64> { t.into_data().convert::<f64>().to_vec().unwrap() };
    let g_bias = to_vec(post.output.bias.as_ref().unwrap().grad(&grads).unwrap());

    // Value of the reported term, from the hand-written log density.
    let post_p = post.valid();
    let gen_p = Affine::<P>::new(a0, b0, &Default::default());
    let (zp, ep, sp, wp) = tensors::<P>(&d, &Default::default());
    let x_t = gen_p.forward(zp) + ep * sp.clone().unsqueeze_dim::<2>(1);
    let xs: Vec<f64> = x_t.clone().into_data().convert::<f64>().to_vec().unwrap();
    let w = to_vec(wp);
    let log_q = log_q_by_hand(&post_p, &d.z, x_t, sp);
    let neg_log_q = (0..N).map(|i| -w[i] * log_q[i]).sum::<f64>() / N as f64;
    assert!(
        (out.neg_log_q - neg_log_q).abs() < 1e-4 * (1.0 + neg_log_q.abs()),
        "reported {} vs by hand {neg_log_q}",
        out.neg_log_q
    );
    let p = target();
    let neg_log_p = (0..N)
        .map(|i| -w[i] * p.log_density(&xs[2 * i..2 * i + 2], d.sigma[i]))
        .sum::<f64>()
        / N as f64;
    let bound = exact_bound(a0, b0, &post_p, &d);
    assert!(
        (out.neg_log_q + neg_log_p - bound).abs() < 1e-4 * (1.0 + bound.abs()),
        "reported + teacher term {} vs exact bound {bound}",
        out.neg_log_q + neg_log_p
    );

    // φ-gradient: central differences of U in each output bias (mean and log-std offsets).
    let bias0 = to_vec(post_p.output.bias.as_ref().unwrap().val());
    let with_bias = |k: usize, delta: f64| {
        let mut b = bias0.clone();
        b[k] += delta;
        let mut q = post_p.clone();
        q.output.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [4]).convert::<f32>(),
            &Default::default(),
        )));
        exact_bound(a0, b0, &q, &d)
    };
    let h = 1e-2;
    let mut moved = 0.0f64;
    for (k, g) in g_bias.iter().enumerate() {
        let fd = (with_bias(k, h) - with_bias(k, -h)) / (2.0 * h);
        moved = moved.max(fd.abs());
        assert!(
            (g - fd).abs() < 2e-3 + 1e-2 * fd.abs(),
            "∂U/∂b_out[{k}]: autodiff {g} vs finite differences {fd}"
        );
    }
    assert!(moved > 1e-2, "the bound depends on φ: {g_bias:?}");
}
