//! `cargo bench -p fdistill --bench distill_speed`: one run that prints
//!
//! 1. samples/second of the one-step student vs the Heun-35 teacher at equal batch (the same
//!    MLP, so the ratio is the NFE ratio minus overheads; the limit is 35×), and
//! 2. distillation iterations/second of the `toy` preset with the time split by phase.
//!
//! CPU (burn-flex); the networks are the demo's (width 128, depth 3), randomly initialised —
//! speed does not depend on the weights.

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use fdistill::core::random::standard_normal;
use fdistill::core::sampler::{SamplerKind, sample};
use fdistill::core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill::core::targets::ring8_unbalanced;
use fdistill::data::TrainingData;
use fdistill::nets::{MlpDenoiserConfig, MlpDiscriminatorConfig};
use fdistill::train::checkpoint::RunDir;
use fdistill::train::distill::fdistill::{FDistillMetrics, Phase, PhaseTimes};
use fdistill::train::distill::{
    Critic, DistillConfig, FDistill, one_step_generate, run_distillation,
};
use rand::SeedableRng;

type A = Autodiff<Flex>;
type I = <A as AutodiffBackend>::InnerBackend;

const BATCH: usize = 2000;
const REPEATS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    fdistill::link_registrations();
    let device = Default::default();
    let net_cfg = MlpDenoiserConfig::new(2, 2.5);
    let net = net_cfg.init::<I>(&device);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let z = standard_normal(BATCH * 2, &mut rng);
    let latents = || {
        Tensor::<I, 2>::from_data(
            TensorData::new(z.clone(), [BATCH, 2]).convert::<f32>(),
            &device,
        )
    };

    // 1. sampling: Heun 35 NFE vs one step, same network and batch
    let sigmas = karras_sigmas(18, SIGMA_MIN, SIGMA_MAX, RHO).unwrap();
    let time = |f: &dyn Fn() -> Tensor<I, 2>| {
        let _ = f().into_data(); // warm-up
        median(
            (0..REPEATS)
                .map(|_| {
                    let t = Instant::now();
                    let _ = f().into_data();
                    BATCH as f64 / t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let teacher_rate = time(&|| sample(SamplerKind::Heun, &net, latents(), &sigmas, None));
    let student_rate = time(&|| one_step_generate(&net, latents(), 80.0, None));
    println!("sampling at batch {BATCH} (median of {REPEATS}):");
    println!("  teacher, Heun 35 NFE   {teacher_rate:>12.0} samples/s");
    println!("  student, 1 NFE         {student_rate:>12.0} samples/s");
    println!(
        "  ratio                  {:>12.1}×  (limit 35×)",
        student_rate / teacher_rate
    );

    // 2. distillation iterations/s, split by phase
    let steps = 300;
    let config = DistillConfig {
        driver: fdistill::train::distill::DriverConfig {
            steps,
            checkpoint_every: steps,
            log_every: steps,
            seed: 0,
        },
        ..DistillConfig::toy()
    };
    let teacher = net_cfg.init::<A>(&device);
    let head = MlpDiscriminatorConfig::new(vec![net_cfg.hidden]).init::<A>(&device);
    let mut method = FDistill::new(
        config.clone(),
        burn::module::Module::no_grad(teacher.clone()),
        teacher,
        Critic::Learned(head),
        TrainingData::Mixture(ring8_unbalanced()),
        &device,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("fdistill-bench-{}", std::process::id()));
    let run = RunDir::create(&dir).unwrap();
    let mut totals: [(PhaseTimes, usize); 2] =
        [(PhaseTimes::default(), 0), (PhaseTimes::default(), 0)];
    let start = Instant::now();
    run_distillation(&mut method, &config.driver, &run, false, |r| {
        let m: &FDistillMetrics = r.metrics;
        let k = usize::from(m.phase == Phase::Generator);
        let (t, n) = &mut totals[k];
        t.sample_s += m.time.sample_s;
        t.forward_s += m.time.forward_s;
        t.backward_s += m.time.backward_s;
        t.update_s += m.time.update_s;
        t.ema_s += m.time.ema_s;
        *n += 1;
        Ok(())
    })
    .unwrap();
    let wall = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\ndistillation, `toy` preset (batch {}, K = {}): {steps} iterations in {wall:.2} s = {:.1} it/s",
        config.batch_size,
        config.critic_steps,
        steps as f64 / wall
    );
    println!("  phase       steps   sample   forward  backward   update      ema   (ms per step)");
    for (name, (t, n)) in ["critic", "generator"].iter().zip(&totals) {
        let ms = |s: f64| 1e3 * s / (*n).max(1) as f64;
        println!(
            "  {name:<10} {n:>6} {:>8.3} {:>9.3} {:>9.3} {:>8.3} {:>8.3}",
            ms(t.sample_s),
            ms(t.forward_s),
            ms(t.backward_s),
            ms(t.update_s),
            ms(t.ema_s)
        );
    }
    let accounted: f64 = totals
        .iter()
        .map(|(t, _)| t.sample_s + t.forward_s + t.backward_s + t.update_s + t.ema_s)
        .sum();
    println!(
        "  driver overhead (metrics, checkpoint, observer): {:.1} %",
        100.0 * (1.0 - accounted / wall)
    );
}
