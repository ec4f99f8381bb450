//! Data-parallel training (issue 18) through burn-collective, on CPU devices (`flex`).
//!
//! The claim: with the global batch drawn once and sharded ([`fdistill::train::parallel`]),
//! two workers with global batch B take the same steps as one device with batch B. The
//! reference is the ordinary single-device loop (`run_training` / `run_distillation`), not
//! the parallel code with one worker, so every piece of the parallel path (sharding, the
//! gradient mean, the gathered normalisers, rank 0's weights on every replica, writes by rank
//! 0 only) is checked against an independent computation.
//!
//! **Tolerance.** Two workers sum the gradient in another order than one device (the mean of
//! two half-batch means instead of one mean), so the parameters differ by float rounding:
//! f32 has a relative precision of 6e-8, AdamW turns a gradient difference of a few ulps into
//! an update difference of the same relative size, and a few steps add a few of them. The
//! bound is 1e-5 of each tensor's largest magnitude for weights (the target; measured
//! ≤ 4.1e-7) and 5e-5 for AdamW's moments (measured ≤ 4.6e-6; see [`MOMENT_TOLERANCE`]);
//! the measured differences are printed. A wrong reduction moves them by far more (the
//! mutations recorded in the commit that added this file).

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use fdistill::core::targets::ring8_unbalanced;
use fdistill::data::TrainingData;
use fdistill::nets::{MlpDenoiser, MlpDenoiserConfig, MlpDiscriminatorConfig};
use fdistill::studies::ring8::seeded;
use fdistill::train::checkpoint::RunDir;
use fdistill::train::distill::config::TimeBins;
use fdistill::train::distill::{
    Critic, DistillConfig, DistillError, FDistill, run_distillation, run_training,
};
use fdistill::train::parallel::{Cluster, run_distillation_on, run_training_on};
use fdistill::train::teacher::{EdmTeacher, TeacherConfig};

type B = Autodiff<Flex>;

/// Every parameter initialised now, inside the seeded section (burn initialises lazily, on
/// first use, which could happen on another thread outside it).
fn materialised<M: Module<B>>(m: M) -> M {
    struct Touch;
    impl ModuleMapper<B> for Touch {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, t, mapper) = p.consume();
            Param::from_mapped_value(id, t, mapper)
        }
    }
    m.map(&mut Touch)
}

fn net_config() -> MlpDenoiserConfig {
    MlpDenoiserConfig {
        hidden: 32,
        ..MlpDenoiserConfig::new(2, 1.0)
    }
}

/// A network with weights from `seed` (the backend RNG, one caller at a time).
fn net(seed: u64) -> MlpDenoiser<B> {
    let device = Default::default();
    seeded::<B, _>(&device, seed, || {
        materialised(net_config().init::<B>(&device))
    })
}

/// `name → f32 values` of a safetensors file.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect()
}

/// The largest difference between the same tensor of two checkpoint files, relative to the
/// tensor's largest magnitude, over every tensor of the files.
fn max_relative_difference(a: &Path, b: &Path) -> f64 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{} and {} hold other tensors",
        a.display(),
        b.display()
    );
    let mut worst = 0.0f64;
    for (name, va) in &ta {
        let vb = &tb[name];
        assert_eq!(va.len(), vb.len(), "{name}");
        let scale = va
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs() as f64))
            .max(1e-30);
        let diff = va
            .iter()
            .zip(vb)
            .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
        worst = worst.max(diff / scale);
    }
    worst
}

/// `loss`-like numbers of every metrics line, for a loose cross-check of what rank 0 wrote.
fn metric_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn teacher_config() -> TeacherConfig {
    TeacherConfig {
        steps: 6,
        batch_size: 64,
        lr: 5e-3,
        checkpoint_every: 6,
        log_every: 1,
        seed: 3,
        ..TeacherConfig::default()
    }
}

fn data() -> TrainingData {
    TrainingData::Mixture(ring8_unbalanced())
}

/// Parameters (weights, EMA weights): measured ≤ 4.1e-7 (teacher and f-distill).
const TOLERANCE: f64 = 1e-5;
/// AdamW moments: they hold the gradient and its square, whose small entries carry the
/// reduction-order rounding at a larger relative size (measured ≤ 4.6e-6).
const MOMENT_TOLERANCE: f64 = 5e-5;

/// The bound for a checkpoint file: moments for optimiser states, parameters otherwise.
fn tolerance(file: &str) -> f64 {
    if file.starts_with("optim") {
        MOMENT_TOLERANCE
    } else {
        TOLERANCE
    }
}

#[test]
fn two_workers_train_the_teacher_as_one_device() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, solo) = (
        tmp.path().join("one"),
        tmp.path().join("two"),
        tmp.path().join("solo"),
    );
    let config = teacher_config();
    let data = data();
    let device = Default::default();

    // One device, the ordinary loop.
    let mut teacher = EdmTeacher::new(net(7), &data, &config, &device).unwrap();
    run_training(
        &mut teacher,
        &config.driver(),
        &RunDir::create(&one).unwrap(),
        false,
        |_| Ok(()),
    )
    .unwrap();

    // Two workers; replica 1 starts from other weights, which rank 0's must replace.
    let make = |rank: usize, d: &FlexDevice| {
        EdmTeacher::new(net(7 + 1000 * rank as u64), &data, &config, d)
            .map_err(|e| DistillError::Setup(e.to_string()))
    };
    let mut seen = 0;
    run_training_on::<B, _, _, _>(
        &[device, device],
        &Cluster::single(),
        &config.driver(),
        &RunDir::create(&two).unwrap(),
        false,
        make,
        |_| {
            seen += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(seen, config.steps, "rank 0's observer sees every step once");

    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        let d = max_relative_difference(
            &one.join("checkpoint").join(f),
            &two.join("checkpoint").join(f),
        );
        println!("teacher {f}: max relative difference 2 workers vs 1 device = {d:.3e}");
        assert!(d <= tolerance(f), "teacher {f}: {d:e} > {:e}", tolerance(f));
    }
    // Training moved the weights: the comparison is not between two initialisations.
    let start = tmp.path().join("start.safetensors");
    fdistill::train::checkpoint::save_module::<B, _>(&net(7), &start).unwrap();
    let moved = max_relative_difference(&start, &one.join("checkpoint/model.safetensors"));
    assert!(moved > 1e-3, "training moved the weights by only {moved:e}");
    // The losses rank 0 logged are the global batch's.
    for (a, b) in metric_lines(&one).iter().zip(metric_lines(&two)) {
        let (a, b) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-5 * a.abs(), "loss {a} vs {b}");
    }

    // One worker through the parallel path is the single-device loop, bit for bit (no
    // reduction reorders anything).
    let make_one = |_: usize, d: &FlexDevice| {
        EdmTeacher::new(net(7), &data, &config, d).map_err(|e| DistillError::Setup(e.to_string()))
    };
    run_training_on::<B, _, _, _>(
        &[device],
        &Cluster::single(),
        &config.driver(),
        &RunDir::create(&solo).unwrap(),
        false,
        make_one,
        |_| Ok(()),
    )
    .unwrap();
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        let f = format!("checkpoint/{f}");
        assert_eq!(
            std::fs::read(one.join(&f)).unwrap(),
            std::fs::read(solo.join(&f)).unwrap(),
            "{f}"
        );
    }
}

/// f-distill with a learned ratio, time-bin normalisation and stage-2 weight normalisation
/// (the normalisers need the global batch), forward KL (`h = r`, so the normalisers weigh).
fn distill_config() -> DistillConfig {
    fdistill::link_registrations();
    let mut c = DistillConfig::toy();
    c.divergence = "forward-kl".into();
    c.batch_size = 64;
    c.critic_steps = 1;
    c.time_bins = Some(TimeBins { bins: 4, beta: 0.5 });
    c.lr_generator = 5e-3;
    c.driver.steps = 8;
    c.driver.checkpoint_every = 8;
    c.driver.log_every = 1;
    c.driver.seed = 5;
    c.check().unwrap()
}

type Method = FDistill<B, MlpDenoiser<B>, MlpDenoiser<B>, fdistill::nets::MlpDiscriminator<B>>;

/// The teacher (seed 11, the same on every replica: it is loaded, not trained) and a head
/// from `head_seed`.
fn method(head_seed: u64, device: &FlexDevice) -> Result<Method, DistillError> {
    let teacher = net(11);
    let head = seeded::<B, _>(device, head_seed, || {
        let mut h = MlpDiscriminatorConfig::new(vec![net_config().hidden]);
        h.hidden = 16;
        materialised(h.init::<B>(device))
    });
    FDistill::new(
        distill_config(),
        teacher.clone().no_grad(),
        teacher,
        Critic::Learned(head),
        data(),
        device,
    )
}

const DISTILL_FILES: [&str; 7] = [
    "generator.safetensors",
    "generator_ema.safetensors",
    "fake_score.safetensors",
    "discriminator.safetensors",
    "optim_generator.safetensors",
    "optim_fake_score.safetensors",
    "optim_discriminator.safetensors",
];

#[test]
fn two_workers_distil_as_one_device() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let config = distill_config();
    let device = Default::default();

    let mut m = method(21, &device).unwrap();
    run_distillation(
        &mut m,
        &config.driver,
        &RunDir::create(&one).unwrap(),
        false,
        |_| Ok(()),
    )
    .unwrap();

    run_distillation_on::<B, _, _, _>(
        &[device, device],
        &Cluster::single(),
        &config.driver,
        &RunDir::create(&two).unwrap(),
        false,
        |rank, d| method(21 + 1000 * rank as u64, d),
        |_| Ok(()),
    )
    .unwrap();

    for f in DISTILL_FILES {
        let d = max_relative_difference(
            &one.join("checkpoint").join(f),
            &two.join("checkpoint").join(f),
        );
        println!("f-distill {f}: max relative difference 2 workers vs 1 device = {d:.3e}");
        assert!(
            d <= tolerance(f),
            "f-distill {f}: {d:e} > {:e}",
            tolerance(f)
        );
    }

    // The normalisers' running state (time-bin means) is the global batch's: the gathered
    // log ratios are the single device's to f32 rounding of the head's logits.
    let state = |d: &Path| -> Vec<f64> {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(d.join("checkpoint/fdistill.json")).unwrap(),
        )
        .unwrap();
        v["normaliser"]["b"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (b1, b2) = (state(&one), state(&two));
    assert_eq!(b1.len(), 4);
    for (x, y) in b1.iter().zip(&b2) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "time-bin means {b1:?} vs {b2:?}"
        );
    }
    // Rank 0's metrics: the weight summary over the global batch, and the losses.
    let (l1, l2) = (metric_lines(&one), metric_lines(&two));
    assert_eq!(l1.len(), l2.len());
    for (a, b) in l1.iter().zip(&l2) {
        for key in ["loss_generator", "loss_dsm", "loss_discriminator"] {
            if let (Some(x), Some(y)) = (a[key].as_f64(), b[key].as_f64()) {
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
                    "{key}: {x} vs {y}"
                );
            }
        }
        if let (Some(x), Some(y)) = (a["weight"]["max"].as_f64(), b["weight"]["max"].as_f64()) {
            assert!((x - y).abs() <= 1e-4 * x.abs(), "weight max {x} vs {y}");
        }
    }
}

#[test]
fn a_batch_that_does_not_split_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let config = TeacherConfig {
        batch_size: 63,
        ..teacher_config()
    };
    let data = data();
    let device = Default::default();
    let e = run_training_on::<B, _, _, _>(
        &[device, device],
        &Cluster::single(),
        &config.driver(),
        &RunDir::create(&tmp.path().join("odd")).unwrap(),
        false,
        |_, d| {
            EdmTeacher::new(net(7), &data, &config, d)
                .map_err(|e| DistillError::Setup(e.to_string()))
        },
        |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("multiple of the number of workers (2)") && e.contains("64"),
        "{e}"
    );
    assert!(!tmp.path().join("odd/checkpoint/driver.json").exists());
    assert!(!tmp.path().join("odd/metrics.jsonl").exists());
}

#[test]
fn a_failing_replica_stops_the_others_with_its_error() {
    // Replica 1 cannot be built: no replica may wait forever for it.
    let tmp = tempfile::tempdir().unwrap();
    let config = teacher_config();
    let data = data();
    let device = Default::default();
    let e = run_training_on::<B, _, _, _>(
        &[device, device],
        &Cluster::single(),
        &config.driver(),
        &RunDir::create(&tmp.path().join("fail")).unwrap(),
        false,
        |rank, d| {
            if rank == 1 {
                return Err(DistillError::Setup("replica 1 has no memory left".into()));
            }
            EdmTeacher::new(net(7), &data, &config, d)
                .map_err(|e| DistillError::Setup(e.to_string()))
        },
        |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("replica 1 has no memory left"), "{e}");
}
