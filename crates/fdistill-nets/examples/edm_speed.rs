//! Times the full-size EDM CIFAR-10 DDPM++ (55.7 M parameters) on the CPU (burn's Flex
//! backend): one forward pass without gradients, and one forward + backward of the EDM loss
//! (a training step without the optimizer), at batch `B` (default 4), `REPS` timed repetitions
//! after one warm-up each. One JSON line per measurement, in the format of
//! `tools/edm_twin.py bench`; `tools/edm_speed.sh` alternates the two and reports medians.
//!
//! ```sh
//! cargo run --release -p fdistill-nets --example edm_speed -- 4 3
//! ```

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use fdistill_core::losses::edm::edm_loss;
use fdistill_nets::EdmPrecondConfig;

type A = Autodiff<Flex>;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: edm_speed [BATCH] [REPS]"))
        .collect();
    let b = args.first().copied().unwrap_or(4);
    let reps = args.get(1).copied().unwrap_or(3);
    let device = Default::default();
    <A as Backend>::seed(&device, 0);
    let cfg = EdmPrecondConfig::edm_ddpmpp_cifar10();
    let net = cfg.init::<A>(&device);
    let x = Tensor::<A, 2>::random([b, cfg.dim()], Distribution::Normal(0.0, 0.5), &device);
    let noise = Tensor::<A, 2>::random([b, cfg.dim()], Distribution::Normal(0.0, 1.0), &device);
    let sigma = Tensor::<A, 1>::random([b], Distribution::Normal(-1.2, 1.2), &device).exp();
    let labels: Vec<i64> = (0..b as i64).map(|i| i % 10).collect();
    let y = Tensor::<A, 1, Int>::from_data(TensorData::new(labels, [b]), &device);

    let inner = net.valid(); // the inference copy (its own weights; only the time matters)
    let fwd = || {
        let d = inner.forward(
            x.clone().inner(),
            sigma.clone().inner(),
            Some(y.clone().inner()),
        );
        let _ = d.into_data(); // wait for the result
    };
    let train = || {
        let loss = edm_loss(
            &net,
            x.clone(),
            sigma.clone(),
            noise.clone(),
            0.5,
            Some(y.clone()),
        );
        let grads = loss.backward();
        drop(grads);
    };
    for (what, f) in [
        ("forward", &fwd as &dyn Fn()),
        ("forward+backward", &train as &dyn Fn()),
    ] {
        f(); // warm-up (also initialises the lazily created weights)
        let seconds: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect();
        println!(
            "{{\"impl\": \"fdistill\", \"what\": \"{what}\", \"batch\": {b}, \"seconds\": {seconds:?}}}"
        );
    }
}
