//! The conformance checks. Each is generic over the backend under test `B` and compares it
//! with the [`Reference`] (`Autodiff<Flex>`) on the same weights and inputs; each panics with
//! the first value out of tolerance. `tests/conformance.rs` runs every check on every backend
//! of the build.
//!
//! Weights always travel through checkpoint files: a network is built once on the reference
//! from a fixed seed, written with [`save_module`](fdistill::train::checkpoint::save_module)
//! and loaded on each backend, so every check also reads a record written by another backend.

use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use fdistill::core::ratio::{FeatureMap, RatioInput};
use fdistill::core::sampler::{euler_sample, heun_sample};
use fdistill::core::schedule::karras_sigmas;
use fdistill::core::{Denoiser, DensityRatioEstimator, EdmDenoiser, FeatureDenoiser};
use fdistill::core::{LearnedRatioEstimator, targets::ring8_unbalanced};
use fdistill::data::TrainingData;
use fdistill::data::images::ImageSet;
use fdistill::nets::{
    ConvDiscriminator, ConvDiscriminatorConfig, DhariwalUNetConfig, EdmArch, EdmPrecond,
    EdmPrecondConfig, GaussianPosterior, GaussianPosteriorConfig, MlpDenoiser, MlpDenoiserConfig,
    MlpDiscriminator, MlpDiscriminatorConfig, SongUNetConfig,
};
use fdistill::train::checkpoint::load_module;
use fdistill::train::distill::driver::{DistillMethod, DriverConfig, Trainable};
use fdistill::train::distill::{Critic, DistillConfig, FDistill, VarDiU, VarDiuConfig};
use fdistill::train::distill::{fdistill::GENERATOR_EMA_FILE, one_step_generate};
use fdistill::train::teacher::{EdmTeacher, TeacherConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::{
    Reference, Tolerance, Tolerances, assert_checkpoints_close, assert_close, assert_json_close,
    host, labels, normal, seeded, tensor, transfer,
};

type RefDevice = burn::tensor::Device<Reference>;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a scratch directory")
}

/// Noise levels spanning the EDM range (0.002 … 80), `n` of them.
fn sigmas(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.002 * (80.0f64 / 0.002).powf(i as f64 / (n - 1).max(1) as f64))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The networks of the checks, tiny.

/// The MLP denoiser of the 2-D checks: 2-D data, width 32, two hidden layers, `classes`
/// label embeddings (or none).
pub fn mlp_config(classes: Option<usize>) -> MlpDenoiserConfig {
    MlpDenoiserConfig {
        hidden: 32,
        depth: 2,
        embedding_size: 16,
        n_classes: classes,
        ..MlpDenoiserConfig::new(2, 0.5)
    }
}

/// The UNet families at a tiny size (8×8 grey images, 3 classes, two levels, 8 channels):
/// DDPM++ with attention (the `tiny` preset), NCSN++ (Fourier embedding, residual encoder
/// skips, FIR resampling) and ADM (DhariwalUNet).
pub fn unet_configs() -> Vec<(&'static str, EdmPrecondConfig)> {
    let tiny = EdmPrecondConfig::tiny();
    vec![
        ("ddpm++", tiny.clone()),
        (
            "ncsn++",
            EdmPrecondConfig {
                arch: EdmArch::SongUnet(SongUNetConfig {
                    model_channels: 8,
                    channel_mult: vec![1, 2],
                    num_blocks: 1,
                    attn_resolutions: vec![4],
                    ..SongUNetConfig::ncsnpp()
                }),
                ..tiny.clone()
            },
        ),
        (
            "adm",
            EdmPrecondConfig {
                arch: EdmArch::DhariwalUnet(DhariwalUNetConfig {
                    model_channels: 8,
                    channel_mult: vec![1, 2],
                    num_blocks: 1,
                    attn_resolutions: vec![4],
                    channels_per_head: 8,
                    ..DhariwalUNetConfig::adm()
                }),
                ..tiny
            },
        ),
    ]
}

/// A network family the training checks run on: the same construction on any backend.
pub trait Family {
    /// The denoiser (teacher, generator, fake score).
    type Net<X: Backend>: Module<X> + FeatureDenoiser<X> + EdmDenoiser<X>;
    /// The discriminator head on the denoiser's feature taps.
    type Head<X: Backend>: Module<X>;
    /// Name, for messages.
    fn name(&self) -> &'static str;
    /// A denoiser (random weights; the checks load theirs over them).
    fn net<X: Backend>(&self, device: &X::Device) -> Self::Net<X>;
    /// A head (random weights).
    fn head<X: Backend>(&self, device: &X::Device) -> Self::Head<X>;
    /// The training data.
    fn data(&self) -> TrainingData;
    /// The batch size of the training checks.
    fn batch(&self) -> usize;
    /// Class labels for `n` samples (`None` for an unconditional family).
    fn labels(&self, n: usize) -> Option<Vec<u32>>;
}

/// The 2-D MLP family on `ring8-unbalanced`, with the MLP discriminator.
pub struct Mlp;

impl Family for Mlp {
    type Net<X: Backend> = MlpDenoiser<X>;
    type Head<X: Backend> = MlpDiscriminator<X>;
    fn name(&self) -> &'static str {
        "mlp"
    }
    fn net<X: Backend>(&self, device: &X::Device) -> MlpDenoiser<X> {
        mlp_config(None).init(device)
    }
    fn head<X: Backend>(&self, device: &X::Device) -> MlpDiscriminator<X> {
        MlpDiscriminatorConfig {
            hidden: 16,
            embedding_size: 8,
            ..MlpDiscriminatorConfig::new(vec![32])
        }
        .init(device)
    }
    fn data(&self) -> TrainingData {
        TrainingData::Mixture(ring8_unbalanced())
    }
    fn batch(&self) -> usize {
        32
    }
    fn labels(&self, _n: usize) -> Option<Vec<u32>> {
        None
    }
}

/// The tiny class-conditional DDPM++ on 8×8 images, with the convolutional discriminator.
pub struct TinyUNet;

impl TinyUNet {
    fn config() -> EdmPrecondConfig {
        EdmPrecondConfig::tiny()
    }
}

impl Family for TinyUNet {
    type Net<X: Backend> = EdmPrecond<X>;
    type Head<X: Backend> = ConvDiscriminator<X>;
    fn name(&self) -> &'static str {
        "unet"
    }
    fn net<X: Backend>(&self, device: &X::Device) -> EdmPrecond<X> {
        Self::config().init(device)
    }
    fn head<X: Backend>(&self, device: &X::Device) -> ConvDiscriminator<X> {
        ConvDiscriminatorConfig::new(Self::config().tap_shapes(), 8).init(device)
    }
    fn data(&self) -> TrainingData {
        let (n, dim) = (16, Self::config().dim());
        let pixels: Vec<f32> = normal(n * dim, 41)
            .iter()
            .map(|v| (0.5 * v).tanh() as f32)
            .collect();
        TrainingData::Images(ImageSet {
            n,
            channels: 1,
            height: 8,
            width: 8,
            pixels,
            labels: self.labels(n),
            class_names: vec!["0".into(), "1".into(), "2".into()],
        })
    }
    fn batch(&self) -> usize {
        4
    }
    fn labels(&self, n: usize) -> Option<Vec<u32>> {
        Some((0..n as u32).map(|i| i % 3).collect())
    }
}

/// Builds the family's denoiser and head on the reference from seed `seed` and writes them
/// into `dir` (`net.safetensors`, `head.safetensors`).
fn write_weights<F: Family>(family: &F, seed: u64, dir: &Path) {
    let (net, head) = seeded(seed, |d: &RefDevice| {
        (family.net::<Reference>(d), family.head::<Reference>(d))
    });
    fdistill::train::checkpoint::save_module::<Reference, _>(&net, &dir.join("net.safetensors"))
        .expect("written");
    fdistill::train::checkpoint::save_module::<Reference, _>(&head, &dir.join("head.safetensors"))
        .expect("written");
}

/// Loads what [`write_weights`] wrote onto backend `X`.
fn read_weights<X: Backend, F: Family>(
    family: &F,
    dir: &Path,
    device: &X::Device,
) -> (F::Net<X>, F::Head<X>) {
    let net = load_module::<X, _>(family.net::<X>(device), &dir.join("net.safetensors"))
        .expect("the reference's weights load");
    let head = load_module::<X, _>(family.head::<X>(device), &dir.join("head.safetensors"))
        .expect("the reference's weights load");
    (net, head)
}

// ---------------------------------------------------------------------------------------
// Forward passes.

/// The MLP denoiser (with label embeddings): denoised output and feature tap at σ from
/// 0.002 to 80.
pub fn mlp_forward<B: AutodiffBackend>(device: &B::Device, tol: Tolerances) {
    let dir = scratch();
    let cfg = mlp_config(Some(3));
    let reference = seeded(1, |d: &RefDevice| cfg.init::<Reference>(d));
    let net = transfer::<Reference, B, _, _>(&reference, cfg.init::<B>(device), dir.path(), "mlp");
    let n = 12;
    let (x, s) = (normal(2 * n, 2), sigmas(n));
    let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let run = |d: &RefDevice| {
        let (out, feat) = reference.forward_with_features(
            tensor(&x, [n, 2], d),
            tensor(&s, [n], d),
            Some(labels(&y, d)),
        );
        (host(out), host(feat))
    };
    let (want_out, want_feat) = run(&Default::default());
    let (out, feat) = net.forward_with_features(
        tensor(&x, [n, 2], device),
        tensor(&s, [n], device),
        Some(labels(&y, device)),
    );
    assert_close(
        tol.backend,
        "mlp denoised",
        &host(out),
        &want_out,
        tol.forward,
    );
    assert_close(
        tol.backend,
        "mlp features",
        &host(feat),
        &want_feat,
        tol.forward,
    );
}

fn taps<X: Backend>(features: Vec<FeatureMap<X>>) -> Vec<Vec<f32>> {
    features
        .into_iter()
        .map(|f| match f {
            FeatureMap::Flat(t) => host(t),
            FeatureMap::Spatial(t) => host(t),
        })
        .collect()
}

/// The UNet families (DDPM++, NCSN++, ADM) inside EDM's preconditioning: denoised images and
/// every encoder tap, class-conditional. On `flex` GroupNorm and the convolution gradients
/// take the fused CPU kernels; elsewhere the tensor-op fallback (`fdistill_nets::ops`).
pub fn unet_forward<B: AutodiffBackend>(device: &B::Device, tol: Tolerances) {
    let dir = scratch();
    for (name, cfg) in unet_configs() {
        let reference = seeded(3, |d: &RefDevice| cfg.init::<Reference>(d));
        let net =
            transfer::<Reference, B, _, _>(&reference, cfg.init::<B>(device), dir.path(), name);
        let (n, dim) = (3, cfg.dim());
        let x = normal(n * dim, 4);
        let s = [0.02, 1.0, 40.0];
        let y = [0, 1, 2];
        let d0: RefDevice = Default::default();
        let (want, want_taps) = reference.denoise_with_features(
            tensor(&x, [n, dim], &d0),
            tensor(&s, [n], &d0),
            Some(labels(&y, &d0)),
        );
        let (got, got_taps) = net.denoise_with_features(
            tensor(&x, [n, dim], device),
            tensor(&s, [n], device),
            Some(labels(&y, device)),
        );
        assert_close(
            tol.backend,
            &format!("{name} denoised"),
            &host(got),
            &host(want),
            tol.forward,
        );
        let (got_taps, want_taps) = (taps(got_taps), taps(want_taps));
        assert_eq!(got_taps.len(), want_taps.len());
        for (i, (g, w)) in got_taps.iter().zip(&want_taps).enumerate() {
            assert_close(tol.backend, &format!("{name} tap {i}"), g, w, tol.forward);
        }
    }
}

/// The discriminator heads: the MLP head on flat taps and the convolutional head on the
/// tiny UNet's spatial taps, log ratios of the same features.
pub fn heads_forward<B: AutodiffBackend>(device: &B::Device, tol: Tolerances) {
    let dir = scratch();
    let d0: RefDevice = Default::default();
    // MLP head: one flat tap of 32 channels
    let n = 10;
    let reference = seeded(5, |d: &RefDevice| Mlp.head::<Reference>(d));
    let head =
        transfer::<Reference, B, _, _>(&reference, Mlp.head::<B>(device), dir.path(), "mlp-head");
    let (x, s, f) = (normal(2 * n, 6), sigmas(n), normal(32 * n, 7));
    fn input<X: Backend>(x: &[f64], s: &[f64], f: &[f64], dev: &X::Device) -> RatioInput<X> {
        let n = s.len();
        RatioInput {
            x_noisy: tensor(x, [n, 2], dev),
            sigma: tensor(s, [n], dev),
            features: vec![FeatureMap::Flat(tensor(f, [n, 32], dev))],
            labels: None,
        }
    }
    let want = host(reference.log_ratio(&input(&x, &s, &f, &d0)));
    let got = host(head.log_ratio(&input(&x, &s, &f, device)));
    assert_close(tol.backend, "mlp head log ratio", &got, &want, tol.forward);

    // convolutional head: the tiny UNet's taps
    let n = 3;
    let shapes = TinyUNet::config().tap_shapes();
    let reference = seeded(8, |d: &RefDevice| TinyUNet.head::<Reference>(d));
    let head = transfer::<Reference, B, _, _>(
        &reference,
        TinyUNet.head::<B>(device),
        dir.path(),
        "conv-head",
    );
    let values: Vec<Vec<f64>> = shapes
        .iter()
        .enumerate()
        .map(|(i, t)| normal(n * t.channels * t.resolution * t.resolution, 9 + i as u64))
        .collect();
    fn features<X: Backend>(
        shapes: &[fdistill::nets::TapShape],
        values: &[Vec<f64>],
        n: usize,
        dev: &X::Device,
    ) -> Vec<FeatureMap<X>> {
        shapes
            .iter()
            .zip(values)
            .map(|(t, v)| {
                FeatureMap::Spatial(tensor(v, [n, t.channels, t.resolution, t.resolution], dev))
            })
            .collect()
    }
    let want = host(reference.logits(&features(&shapes, &values, n, &d0)));
    let got = host(head.logits(&features(&shapes, &values, n, device)));
    assert_close(tol.backend, "conv head logits", &got, &want, tol.forward);
}

/// The VarDiU posterior: mean and log-variance of `q_φ(z | x_t, σ)` and `log q_φ`.
pub fn posterior_forward<B: AutodiffBackend>(device: &B::Device, tol: Tolerances) {
    let dir = scratch();
    let cfg = posterior_config();
    let reference = seeded(11, |d: &RefDevice| cfg.init::<Reference>(d));
    let post =
        transfer::<Reference, B, _, _>(&reference, cfg.init::<B>(device), dir.path(), "posterior");
    let n = 12;
    let (z, x, s) = (normal(2 * n, 12), normal(2 * n, 13), sigmas(n));
    let d0: RefDevice = Default::default();
    let (wm, wl) = reference.forward(tensor(&x, [n, 2], &d0), tensor(&s, [n], &d0));
    let (gm, gl) = post.forward(tensor(&x, [n, 2], device), tensor(&s, [n], device));
    assert_close(
        tol.backend,
        "posterior mean",
        &host(gm),
        &host(wm),
        tol.forward,
    );
    assert_close(
        tol.backend,
        "posterior log-variance",
        &host(gl),
        &host(wl),
        tol.forward,
    );
    let want = reference.log_prob(
        tensor(&z, [n, 2], &d0),
        tensor(&x, [n, 2], &d0),
        tensor(&s, [n], &d0),
    );
    let got = post.log_prob(
        tensor(&z, [n, 2], device),
        tensor(&x, [n, 2], device),
        tensor(&s, [n], device),
    );
    assert_close(
        tol.backend,
        "posterior log q",
        &host(got),
        &host(want),
        tol.forward,
    );
}

fn posterior_config() -> GaussianPosteriorConfig {
    GaussianPosteriorConfig {
        hidden: 32,
        depth: 2,
        embedding_size: 16,
        ..GaussianPosteriorConfig::new(2, 2, 0.5)
    }
}

// ---------------------------------------------------------------------------------------
// Sampling.

/// Heun (35 NFE) and Euler (18 steps) sampling of the MLP and the tiny UNet, and one-step
/// generation `G(z) = D(σ_init z; σ_init)`, from the same latents.
pub fn sampling<B: AutodiffBackend>(device: &B::Device, tol: Tolerances) {
    let dir = scratch();
    let d0: RefDevice = Default::default();
    let grid = karras_sigmas(18, 0.002, 80.0, 7.0).expect("a valid grid");
    let short = karras_sigmas(4, 0.002, 80.0, 7.0).expect("a valid grid");
    // MLP
    let n = 16;
    let z = normal(2 * n, 14);
    let reference = seeded(15, |d: &RefDevice| Mlp.net::<Reference>(d));
    let net = transfer::<Reference, B, _, _>(&reference, Mlp.net::<B>(device), dir.path(), "mlp");
    let cases: [(&str, &[f64]); 2] = [("heun", &grid), ("euler", &grid)];
    for (name, grid) in cases {
        let run = |kind: &str, x| match kind {
            "heun" => host(heun_sample(&reference, x, grid, None)),
            _ => host(euler_sample(&reference, x, grid, None)),
        };
        let want = run(name, tensor(&z, [n, 2], &d0));
        let got = match name {
            "heun" => host(heun_sample(&net, tensor(&z, [n, 2], device), grid, None)),
            _ => host(euler_sample(&net, tensor(&z, [n, 2], device), grid, None)),
        };
        assert_close(
            tol.backend,
            &format!("mlp {name} samples"),
            &got,
            &want,
            tol.trained,
        );
    }
    let want = host(one_step_generate(
        &reference,
        tensor(&z, [n, 2], &d0),
        80.0,
        None,
    ));
    let got = host(one_step_generate(
        &net,
        tensor(&z, [n, 2], device),
        80.0,
        None,
    ));
    assert_close(tol.backend, "mlp one-step", &got, &want, tol.forward);

    // tiny UNet, class-conditional
    let n = 2;
    let dim = TinyUNet::config().dim();
    let z = normal(n * dim, 16);
    let y = [1, 2];
    let reference = seeded(17, |d: &RefDevice| TinyUNet.net::<Reference>(d));
    let net =
        transfer::<Reference, B, _, _>(&reference, TinyUNet.net::<B>(device), dir.path(), "unet");
    let want = host(heun_sample(
        &reference,
        tensor(&z, [n, dim], &d0),
        &short,
        Some(labels(&y, &d0)),
    ));
    let got = host(heun_sample(
        &net,
        tensor(&z, [n, dim], device),
        &short,
        Some(labels(&y, device)),
    ));
    assert_close(tol.backend, "unet heun samples", &got, &want, tol.trained);
    let want = host(euler_sample(
        &reference,
        tensor(&z, [n, dim], &d0),
        &short,
        Some(labels(&y, &d0)),
    ));
    let got = host(euler_sample(
        &net,
        tensor(&z, [n, dim], device),
        &short,
        Some(labels(&y, device)),
    ));
    assert_close(tol.backend, "unet euler samples", &got, &want, tol.trained);
    let want = host(one_step_generate(
        &reference,
        tensor(&z, [n, dim], &d0),
        80.0,
        Some(labels(&y, &d0)),
    ));
    let got = host(one_step_generate(
        &net,
        tensor(&z, [n, dim], device),
        80.0,
        Some(labels(&y, device)),
    ));
    assert_close(tol.backend, "unet one-step", &got, &want, tol.forward);
}

// ---------------------------------------------------------------------------------------
// Training steps: each runs on the reference and on `B` from the same weights and the same
// RNG seed, then compares every step's metrics and the whole checkpoint (weights, EMA
// weights, AdamW moments and step counts).

fn teacher_config<F: Family>(family: &F) -> TeacherConfig {
    TeacherConfig {
        steps: 2,
        batch_size: family.batch(),
        lr: 1e-3,
        ..TeacherConfig::default()
    }
}

/// Two EDM teacher steps on backend `X` from the weights in `weights`; the checkpoint goes to
/// `out`. Returns the steps' metrics.
fn run_teacher<X, F>(family: &F, weights: &Path, device: &X::Device, out: &Path) -> Vec<Value>
where
    X: AutodiffBackend,
    F: Family,
    F::Net<X>: AutodiffModule<X>,
{
    let (net, _) = read_weights::<X, F>(family, weights, device);
    let data = family.data();
    let mut teacher = EdmTeacher::<X, F::Net<X>>::new(net, &data, &teacher_config(family), device)
        .expect("a valid teacher set-up");
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let metrics = (1..=2)
        .map(|step| {
            let m = teacher.step(step, &mut rng).expect("a finite step");
            serde_json::to_value(m).expect("serialises")
        })
        .collect();
    teacher.save(out).expect("the checkpoint is written");
    metrics
}

/// Two EDM teacher steps (AdamW, EMA) of the family's network: losses, weights, EMA weights
/// and optimiser state against the reference's.
pub fn teacher_steps<B, F>(family: F, device: &B::Device, tol: Tolerances)
where
    B: AutodiffBackend,
    F: Family,
    F::Net<B>: AutodiffModule<B>,
    F::Net<Reference>: AutodiffModule<Reference>,
{
    let (weights, want_dir, got_dir) = (scratch(), scratch(), scratch());
    write_weights(&family, 31, weights.path());
    let want = run_teacher::<Reference, F>(
        &family,
        weights.path(),
        &Default::default(),
        want_dir.path(),
    );
    let got = run_teacher::<B, F>(&family, weights.path(), device, got_dir.path());
    let what = format!("{} teacher metrics", family.name());
    assert_json_close(
        tol.backend,
        &what,
        &Value::from(got),
        &Value::from(want),
        tol.trained,
    );
    assert_checkpoints_close(tol.backend, got_dir.path(), want_dir.path(), tol.trained);
}

fn distill_config<F: Family>(family: &F) -> DistillConfig {
    DistillConfig {
        batch_size: family.batch(),
        critic_steps: 1,
        ..DistillConfig::toy()
    }
}

/// Two f-distill cycles (critic, generator, critic, generator) on backend `X`; the
/// checkpoint goes to `out`. Returns each step's metrics and one-step samples of the EMA
/// generator.
fn run_fdistill<X, F>(
    family: &F,
    weights: &Path,
    device: &X::Device,
    out: &Path,
) -> (Vec<Value>, Vec<f32>)
where
    X: AutodiffBackend,
    F: Family,
    F::Net<X>: AutodiffModule<X>,
    <F::Net<X> as AutodiffModule<X>>::InnerModule: Denoiser<X::InnerBackend>,
    F::Head<X>: AutodiffModule<X> + LearnedRatioEstimator<X>,
{
    fdistill::link_registrations();
    let (net, head) = read_weights::<X, F>(family, weights, device);
    let config = distill_config(family);
    let mut method = FDistill::new(
        config,
        net.clone().no_grad(),
        net,
        Critic::Learned(head),
        family.data(),
        device,
    )
    .expect("a valid f-distill set-up");
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let metrics = (1..=4)
        .map(|step| {
            let m = method.step(step, &mut rng).expect("a step");
            serde_json::to_value(m).expect("serialises")
        })
        .collect();
    method.save(out).expect("the checkpoint is written");
    let n = 4;
    let dim = method.generator().dim();
    let dev = device.clone();
    let latents = tensor::<X::InnerBackend, 2>(&normal(n * dim, 23), [n, dim], &dev);
    let y = family
        .labels(n)
        .map(|y| labels::<X::InnerBackend>(&y, &dev));
    (metrics, host(method.generate(latents, y)))
}

/// Two f-distill cycles with a learned discriminator (Jensen–Shannon, the `toy` preset at
/// K = 1): both phases' losses, log-ratio and weight summaries and gradient norms, then the
/// generator, EMA generator, fake score, discriminator and all three AdamW states, and
/// one-step samples of the EMA generator.
pub fn fdistill_cycles<B, F>(family: F, device: &B::Device, tol: Tolerances)
where
    B: AutodiffBackend,
    F: Family,
    F::Net<B>: AutodiffModule<B>,
    <F::Net<B> as AutodiffModule<B>>::InnerModule: Denoiser<B::InnerBackend>,
    F::Head<B>: AutodiffModule<B> + LearnedRatioEstimator<B>,
    F::Net<Reference>: AutodiffModule<Reference>,
    <F::Net<Reference> as AutodiffModule<Reference>>::InnerModule:
        Denoiser<<Reference as AutodiffBackend>::InnerBackend>,
    F::Head<Reference>: AutodiffModule<Reference> + LearnedRatioEstimator<Reference>,
{
    let (weights, want_dir, got_dir) = (scratch(), scratch(), scratch());
    write_weights(&family, 32, weights.path());
    let (want, want_x) = run_fdistill::<Reference, F>(
        &family,
        weights.path(),
        &Default::default(),
        want_dir.path(),
    );
    let (got, got_x) = run_fdistill::<B, F>(&family, weights.path(), device, got_dir.path());
    let name = family.name();
    assert_json_close(
        tol.backend,
        &format!("{name} f-distill metrics"),
        &Value::from(got),
        &Value::from(want),
        tol.trained,
    );
    assert_checkpoints_close(tol.backend, got_dir.path(), want_dir.path(), tol.trained);
    assert!(
        got_dir.path().join(GENERATOR_EMA_FILE).exists(),
        "the EMA generator is in the checkpoint"
    );
    assert_close(
        tol.backend,
        &format!("{name} f-distill one-step samples"),
        &got_x,
        &want_x,
        tol.trained,
    );
}

fn vardiu_config() -> VarDiuConfig {
    VarDiuConfig {
        batch_size: 32,
        sigma_min: Some(0.01),
        sigma_max: Some(2.0),
        sigma_init: Some(8.0),
        lr_generator: 1e-3,
        lr_posterior: 1e-3,
        driver: DriverConfig {
            steps: 2,
            checkpoint_every: 2,
            log_every: 1,
            seed: 0,
        },
        ..VarDiuConfig::data_scale()
    }
}

/// Two VarDiU steps on backend `X` (MLP teacher and generator, Gaussian posterior).
fn run_vardiu<X: AutodiffBackend>(
    weights: &Path,
    device: &X::Device,
    out: &Path,
) -> (Vec<Value>, Vec<f32>) {
    let (net, _) = read_weights::<X, Mlp>(&Mlp, weights, device);
    let posterior: GaussianPosterior<X> = load_module::<X, _>(
        posterior_config().init::<X>(device),
        &weights.join("posterior.safetensors"),
    )
    .expect("the reference's weights load");
    let mut method = VarDiU::new(
        vardiu_config(),
        net.clone().no_grad(),
        net,
        posterior,
        device,
    )
    .expect("a valid VarDiU set-up");
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let metrics = (1..=2)
        .map(|step| {
            let m = method.step(step, &mut rng).expect("a step");
            serde_json::to_value(m).expect("serialises")
        })
        .collect();
    method.save(out).expect("the checkpoint is written");
    let n = 8;
    let latents = tensor::<X::InnerBackend, 2>(&normal(2 * n, 25), [n, 2], device);
    (metrics, host(method.generate(latents, None)))
}

/// Two VarDiU steps: the bound's terms, gradient norms, generator, posterior and their AdamW
/// states, and one-step samples.
pub fn vardiu_steps<B: AutodiffBackend>(device: &B::Device, tol: Tolerances) {
    let (weights, want_dir, got_dir) = (scratch(), scratch(), scratch());
    write_weights(&Mlp, 33, weights.path());
    let posterior = seeded(34, |d: &RefDevice| posterior_config().init::<Reference>(d));
    fdistill::train::checkpoint::save_module::<Reference, _>(
        &posterior,
        &weights.path().join("posterior.safetensors"),
    )
    .expect("written");
    let (want, want_x) =
        run_vardiu::<Reference>(weights.path(), &Default::default(), want_dir.path());
    let (got, got_x) = run_vardiu::<B>(weights.path(), device, got_dir.path());
    assert_json_close(
        tol.backend,
        "vardiu metrics",
        &Value::from(got),
        &Value::from(want),
        tol.trained,
    );
    assert_checkpoints_close(tol.backend, got_dir.path(), want_dir.path(), tol.trained);
    assert_close(
        tol.backend,
        "vardiu one-step samples",
        &got_x,
        &want_x,
        tol.trained,
    );
}

// ---------------------------------------------------------------------------------------
// Checkpoints across backends.

/// A whole teacher checkpoint (weights, EMA, AdamW moments and step counts) written on `B`
/// loads on the reference and back, bit for bit: `B → flex → file` equals `B → file`, and
/// `flex → B → file` equals `flex → file`.
pub fn checkpoints_cross_load<B: AutodiffBackend>(device: &B::Device, tol: Tolerances) {
    let (weights, on_b, on_ref, b_via_ref, ref_via_b) =
        (scratch(), scratch(), scratch(), scratch(), scratch());
    write_weights(&Mlp, 35, weights.path());
    run_teacher::<B, Mlp>(&Mlp, weights.path(), device, on_b.path());
    let d0: RefDevice = Default::default();
    run_teacher::<Reference, Mlp>(&Mlp, weights.path(), &d0, on_ref.path());
    let data = Mlp.data();
    let config = teacher_config(&Mlp);
    // B's checkpoint through the reference
    let mut t = EdmTeacher::<Reference, _>::new(Mlp.net::<Reference>(&d0), &data, &config, &d0)
        .expect("set-up");
    t.load(on_b.path())
        .expect("a checkpoint written on another backend loads");
    t.save(b_via_ref.path()).expect("written");
    // the reference's checkpoint through B
    let mut t =
        EdmTeacher::<B, _>::new(Mlp.net::<B>(device), &data, &config, device).expect("set-up");
    t.load(on_ref.path())
        .expect("a checkpoint written on another backend loads");
    t.save(ref_via_b.path()).expect("written");
    let exact = Tolerance {
        atol: 0.0,
        rtol: 0.0,
    };
    for (a, b) in [(&b_via_ref, &on_b), (&ref_via_b, &on_ref)] {
        assert_checkpoints_close(tol.backend, a.path(), b.path(), exact);
    }
}

/// The comparison can fail: the forward tolerance is no looser than
/// [`Tolerance::TF32_FORWARD`], and a change of one input coordinate of the MLP by 20× its
/// absolute part is caught at it (a check whose tolerance swallowed real differences would
/// pass it).
pub fn tolerance_catches_a_real_difference<B: AutodiffBackend>(
    device: &B::Device,
    tol: Tolerances,
) {
    let dir = scratch();
    let cfg = mlp_config(None);
    let reference = seeded(36, |d: &RefDevice| cfg.init::<Reference>(d));
    let net = transfer::<Reference, B, _, _>(&reference, cfg.init::<B>(device), dir.path(), "mlp");
    let n = 8;
    let (x, s) = (normal(2 * n, 37), vec![0.5; n]);
    let d0: RefDevice = Default::default();
    let want = host(reference.denoise(tensor(&x, [n, 2], &d0), tensor(&s, [n], &d0), None));
    // no backend's forward tolerance may exceed TF32's (cuda), the loosest we accept
    let loosest = Tolerance::TF32_FORWARD;
    assert!(
        tol.forward.atol <= loosest.atol && tol.forward.rtol <= loosest.rtol,
        "the {} forward tolerance {:?} is looser than {loosest:?}",
        tol.backend,
        tol.forward
    );
    // 20× the absolute forward tolerance (2e-3 on flex and wgpu, 2e-2 on cuda): the denoiser
    // passes at least c_skip(0.5) = 1/2 of it straight to the output
    let nudge = 20.0 * f64::from(tol.forward.atol);
    let mut nudged = x.clone();
    nudged[3] += nudge;
    let got = host(net.denoise(
        tensor(&nudged, [n, 2], device),
        tensor(&s, [n], device),
        None,
    ));
    assert!(
        crate::compare("nudged", &got, &want, tol.forward).is_err(),
        "a {nudge:.0e} input change passed the {} forward tolerance",
        tol.backend
    );
    let same = host(net.denoise(tensor(&x, [n, 2], device), tensor(&s, [n], device), None));
    crate::compare("same", &same, &want, tol.forward).expect("the unchanged input agrees");
}
