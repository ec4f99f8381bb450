//! f-distill on images through the same trainer as the 2-D toys (issue 6, item 5): a tiny
//! class-conditional UNet is teacher, generator and fake score, convolutional heads read its
//! per-level taps, labels are drawn uniformly for generated samples and taken from the data for
//! real ones.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use fdistill_data::TrainingData;
use fdistill_data::images::ImageSet;
use fdistill_train::checkpoint::RunDir;
use fdistill_train::distill::config::FeatureSource;
use fdistill_train::distill::{
    Critic, DistillConfig, DistillMethod, DriverConfig, FDistill, run_distillation,
};
use fdistill_train::teacher::{TeacherConfig, train_teacher};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

// Links the built-in divergences into this test binary (their registry entries).
use fdistill_divergences as _;

use crate::grad_check::gradient_norms;
use crate::{ConvDiscriminator, ConvDiscriminatorConfig, UNet, UNetConfig};

type A = Autodiff<Flex>;
type Method = FDistill<A, UNet<A>, UNet<A>, ConvDiscriminator<A>>;

/// 8×8 grey images of 3 classes: class k is bright in rows 2k..2k+2, plus seeded noise.
fn images(n: usize) -> TrainingData {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut pixels = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = (i % 3) as u32;
        labels.push(k);
        for row in 0..8 {
            for _ in 0..8 {
                let base = if row / 2 == k as usize { 0.8 } else { -0.8 };
                pixels.push(base + 0.1 * (rng.random::<f32>() - 0.5));
            }
        }
    }
    TrainingData::Images(ImageSet {
        n,
        channels: 1,
        height: 8,
        width: 8,
        pixels,
        labels: Some(labels),
        class_names: vec!["a".into(), "b".into(), "c".into()],
    })
}

/// A few teacher steps, so that the zero-initialised output convolution is no longer zero
/// and gradients reach every layer.
/// The caller holds `crate::test_rng::seeded`'s lock.
fn teacher() -> UNet<A> {
    let device = Default::default();
    let net = UNetConfig::tiny().init::<A>(&device);
    let config = TeacherConfig {
        steps: 4,
        batch_size: 6,
        lr: 1e-2,
        ..TeacherConfig::default()
    };
    train_teacher(net, &images(30), &config, &device, |_, _| Ok(()))
        .unwrap()
        .model
}

fn config(feature_source: FeatureSource, steps: usize) -> DistillConfig {
    DistillConfig {
        batch_size: 4,
        critic_steps: 1,
        feature_source,
        driver: DriverConfig {
            steps,
            checkpoint_every: 2,
            log_every: 1,
            seed: 1,
        },
        ..DistillConfig::toy()
    }
}

fn method(net: &UNet<A>, feature_source: FeatureSource, steps: usize) -> Method {
    let device = Default::default();
    // The caller holds `crate::test_rng::seeded`'s lock: the head's init is seeded.
    let head = ConvDiscriminatorConfig::new(UNetConfig::tiny().tap_shapes(), 8).init::<A>(&device);
    FDistill::new(
        config(feature_source, steps),
        net.clone().no_grad(),
        net.clone(),
        Critic::Learned(head),
        images(30),
        &device,
    )
    .unwrap()
}

fn labels(l: &[i64]) -> Tensor<A, 1, Int> {
    Tensor::from_data(TensorData::new(l.to_vec(), [l.len()]), &Default::default())
}

fn host(values: Vec<f32>, shape: [usize; 2]) -> Tensor<A, 2> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// The generator's loss reaches its label embedding, output layer and nearly every other
/// parameter, and different labels give a different objective (the labels reach the networks).
#[test]
fn the_generator_objective_is_class_conditional_and_reaches_the_generator() {
    let _rng = crate::test_rng::seeded(9);
    let net = teacher();
    let mut m = method(&net, FeatureSource::TeacherFeatures, 4);
    assert_eq!(m.classes(), Some(3));
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let z: Vec<f32> = (0..4 * 64).map(|_| rng.random::<f32>() - 0.5).collect();
    let eps: Vec<f32> = (0..4 * 64).map(|_| rng.random::<f32>() - 0.5).collect();
    let sigma = [0.3, 0.8, 2.0, 5.0];
    let objective = |m: &mut Method, l: &[i64]| {
        m.generator_objective(
            host(z.clone(), [4, 64]),
            &sigma,
            host(eps.clone(), [4, 64]),
            Some(labels(l)),
        )
    };
    let a = objective(&mut m, &[0, 1, 2, 0]);
    let b = objective(&mut m, &[2, 2, 1, 1]);
    let (va, vb) = (
        a.loss.clone().into_scalar().elem::<f64>(),
        b.loss.into_scalar().elem::<f64>(),
    );
    assert!(va.is_finite() && vb.is_finite());
    assert!(
        (va - vb).abs() > 1e-9 * va.abs(),
        "labels changed nothing: {va} vs {vb}"
    );
    assert!(a.gan.is_some(), "the GAN term is on (λ_GAN > 0)");
    let grads = a.loss.backward();
    let g = gradient_norms(m.generator(), &grads);
    let find = |name: &str| {
        g.iter()
            .find(|(n, _)| n.contains(name))
            .unwrap_or_else(|| panic!("no parameter {name} in {g:?}"))
            .1
    };
    assert!(find("map_label") > 0.0, "{g:?}");
    assert!(find("aux_conv") > 0.0, "{g:?}");
    let reached = g.iter().filter(|(_, v)| *v > 0.0).count();
    assert!(
        reached * 10 >= g.len() * 9,
        "only {reached}/{} parameters",
        g.len()
    );
}

fn run(m: &mut Method, dir: &Path, resume: bool) {
    let run = RunDir::create(dir).unwrap();
    let driver = m.config().driver.clone();
    run_distillation(m, &driver, &run, resume, |_| Ok(())).unwrap();
}

/// Both feature sources train (critic and generator steps, finite metrics, a discriminator
/// loss), and a checkpoint reloads into a fresh method: same one-step samples per label.
#[test]
fn image_distillation_runs_and_its_checkpoint_round_trips() {
    let _rng = crate::test_rng::seeded(10);
    let device = Default::default();
    let net = teacher();
    for source in [
        FeatureSource::TeacherFeatures,
        FeatureSource::FakeScoreFeatures,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut m = method(&net, source, 4);
        run(&mut m, dir.path(), false);
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(dir.path().join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0]["loss_discriminator"].as_f64().unwrap().is_finite());
        assert!(lines[1]["loss_generator"].as_f64().unwrap().is_finite());

        let z =
            Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.3f32; 3 * 64], [3, 64]), &device);
        let l = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2], [3]), &device);
        let x = m.generate(z.clone(), Some(l.clone()));
        assert_eq!(x.dims(), [3, 64]);
        let mut fresh = method(&net, source, 4);
        fresh.load(&dir.path().join("checkpoint")).unwrap();
        let y = fresh.generate(z, Some(l));
        let (x, y) = (
            x.into_data().to_vec::<f32>().unwrap(),
            y.into_data().to_vec::<f32>().unwrap(),
        );
        assert!(x.iter().all(|v| v.is_finite()));
        let diff = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "reloaded generator differs by {diff}");
        // Same latent, three labels: three different images.
        assert!(
            x[..64]
                .iter()
                .zip(&x[64..128])
                .any(|(a, b)| (a - b).abs() > 1e-6)
        );
    }
}
