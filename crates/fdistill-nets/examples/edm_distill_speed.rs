//! Times one f-distill iteration on the full-size EDM CIFAR-10 DDPM++ (55.7 M parameters per
//! network: frozen teacher, generator, fake score) on the CPU (burn's Flex backend), batch `B`
//! (default 4): one critic step (generator forward without gradients, the fake score's
//! denoising loss, backward, AdamW) and one generator step (generator forward, teacher and
//! fake score at `x_t`, the DMD direction through the inject-gradient surrogate, backward,
//! gradient clipping, AdamW, EMA). The `dmd2-no-gan` preset with K = 1 (no discriminator, so
//! that `tools/edm_twin.py bench-distill` can mirror it exactly). `REPS` timed repetitions of
//! each after one warm-up; one JSON line per measurement, as `tools/edm_twin.py`;
//! `tools/edm_distill_speed.sh` alternates the two and reports medians.
//!
//! ```sh
//! cargo run --release -p fdistill-nets --example edm_distill_speed -- 4 1
//! ```

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::backend::Backend;
use fdistill_data::TrainingData;
use fdistill_data::images::ImageSet;
use fdistill_nets::{ConvDiscriminator, EdmPrecond, EdmPrecondConfig};
use fdistill_train::distill::{Critic, DistillConfig, DistillMethod, FDistill};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

// Links the built-in divergences (the registry finds `reverse-kl`).
use fdistill_divergences as _;

type A = Autodiff<Flex>;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: edm_distill_speed [BATCH] [REPS]"))
        .collect();
    let b = args.first().copied().unwrap_or(4);
    let reps = args.get(1).copied().unwrap_or(1);
    let device = Default::default();
    <A as Backend>::seed(&device, 0);
    let cfg = EdmPrecondConfig::edm_ddpmpp_cifar10();
    let net: EdmPrecond<A> = cfg.init(&device);
    let teacher = net.clone().without_dropout();
    // 64 random "real" images with labels (only the critic's DSM target draws from them).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = 64;
    let pixels: Vec<f32> = (0..n * cfg.dim())
        .map(|_| {
            let v: f32 = StandardNormal.sample(&mut rng);
            (0.5 * v).clamp(-1.0, 1.0)
        })
        .collect();
    let data = TrainingData::Images(ImageSet {
        n,
        channels: 3,
        height: 32,
        width: 32,
        pixels,
        labels: Some((0..n as u32).map(|i| i % 10).collect()),
        class_names: (0..10).map(|i| i.to_string()).collect(),
    });
    let config = DistillConfig {
        batch_size: b,
        critic_steps: 1,
        ..DistillConfig::dmd2_no_gan()
    };
    let mut method = FDistill::<A, _, _, ConvDiscriminator<A>>::new(
        config,
        teacher.no_grad(),
        net,
        Critic::Unit,
        data,
        &device,
    )
    .expect("valid set-up");
    // K = 1: odd steps are critic steps, even steps generator steps.
    let mut step = 0usize;
    for (what, parity) in [
        ("distill critic step", 1usize),
        ("distill generator step", 0),
    ] {
        let mut time = |method: &mut FDistill<_, _, _, _>| {
            step += 1;
            if step % 2 != parity {
                step += 1;
            }
            let t = Instant::now();
            method.step(step, &mut rng).expect("finite step");
            t.elapsed().as_secs_f64()
        };
        time(&mut method); // warm-up
        let seconds: Vec<f64> = (0..reps).map(|_| time(&mut method)).collect();
        println!(
            "{{\"impl\": \"fdistill\", \"what\": \"{what}\", \"batch\": {b}, \"seconds\": {seconds:?}}}"
        );
    }
}
