//! `fdistill-bench WORK [--steps N] [--warmup N] [--threads N] [--device D] [--export DIR]`:
//! times one kind of step of fdistill and prints one JSON line (what `bench/run.sh` reads).
//!
//! | `WORK` | one step is |
//! |---|---|
//! | `toy` | one `toy`-preset distillation iteration (MLP 3×128, batch 256, K = 2), mean over K + 1 cycles |
//! | `teacher16` | one EDM teacher step (loss, backward, AdamW, EMA) of the `docs/configs/fashion-mnist-16-cpu.json` UNet, batch 32 |
//! | `teacher32` | the same for the `fashion-mnist-small` UNet at 32×32 |
//! | `distill16` | one image distillation iteration (`cifar10` preset + `docs/configs/fashion-mnist-16-distill-cpu.json`: conv heads, K = 2, batch 32), mean over K + 1 cycles |
//! | `distill32` | the same with the 32×32 `fashion-mnist-small` UNet |
//! | `sample16-1` | one-step generation of a batch of 32 with the 16×16 UNet |
//! | `sample16-heun35` | Heun sampling of a batch of 32, 35 denoiser evaluations, same UNet |
//!
//! Networks are randomly initialised (speed does not depend on the weights) from a fixed
//! seed; the data are random images in [−1, 1] with random labels. The PyTorch twin
//! (`bench/torch_twin.py`) builds the same networks; `--export DIR` writes this side's
//! networks (`DIR/WORK.*.safetensors`: the UNet as EDM's state dict with its constructor
//! kwargs, the heads and MLPs in `fdistill`'s checkpoint format) and a probe (inputs and
//! outputs of one forward pass) so that the twin can check every parameter name and shape and
//! reproduce the outputs.
//!
//! Threads: `--threads N` sizes rayon's global pool (what burn-flex and its GEMM use); without
//! it `RAYON_NUM_THREADS` applies, else one thread per core.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use fdistill::backends::{BackendTask, DeviceSpec, dispatch};
use fdistill::core::FeatureDenoiser;
use fdistill::core::ratio::DensityRatioEstimator;
use fdistill::core::ratio::RatioInput;
use fdistill::core::sampler::{SamplerKind, sample};
use fdistill::core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill::core::targets::ring8_unbalanced;
use fdistill::data::TrainingData;
use fdistill::data::images::ImageSet;
use fdistill::nets::{
    ConvDiscriminatorConfig, MlpDenoiserConfig, MlpDiscriminatorConfig, UNetConfig,
};
use fdistill::train::checkpoint::{RunDir, save_module};
use fdistill::train::distill::{
    Critic, DistillConfig, FDistill, one_step_generate, run_distillation,
};
use fdistill::train::teacher::{TeacherConfig, train_teacher};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The 16×16 teacher of `docs/configs/fashion-mnist-16-cpu.json`.
const TEACHER16_CONFIG: &str = include_str!("../../docs/configs/fashion-mnist-16-cpu.json");
/// The image distillation overrides of `docs/configs/fashion-mnist-16-distill-cpu.json`.
const DISTILL16_CONFIG: &str = include_str!("../../docs/configs/fashion-mnist-16-distill-cpu.json");
/// Hidden channels of the conv heads (the CLI's `CONV_HEAD_WIDTH`).
const CONV_HEAD_WIDTH: usize = 32;
/// Batch of the image steps.
const IMAGE_BATCH: usize = 32;

const WORKS: [&str; 7] = [
    "toy",
    "teacher16",
    "teacher32",
    "distill16",
    "distill32",
    "sample16-1",
    "sample16-heun35",
];

#[derive(Debug, Clone)]
struct Args {
    work: String,
    steps: usize,
    warmup: usize,
    threads: Option<usize>,
    device: DeviceSpec,
    export: Option<PathBuf>,
}

fn usage() -> String {
    format!(
        "usage: fdistill-bench WORK [--steps N] [--warmup N] [--threads N] [--device flex|cuda:N|wgpu|candle] [--export DIR]\n\
         WORK: {}",
        WORKS.join(", ")
    )
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let work = it.next().ok_or_else(|| anyhow!(usage()))?;
    if work == "-h" || work == "--help" {
        println!("{}", usage());
        std::process::exit(0);
    }
    if !WORKS.contains(&work.as_str()) {
        bail!("unknown WORK `{work}`\n{}", usage());
    }
    let cycle = if work.starts_with("distill") || work == "toy" {
        3
    } else {
        1
    };
    let mut args = Args {
        steps: if cycle == 3 { 12 } else { 10 },
        warmup: if cycle == 3 { 3 } else { 2 },
        work,
        threads: None,
        device: DeviceSpec::Flex,
        export: None,
    };
    if args.work == "toy" {
        args.steps = 300;
        args.warmup = 30;
    }
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{}", usage()))
        };
        match flag.as_str() {
            "--steps" => args.steps = value()?.parse().context("--steps")?,
            "--warmup" => args.warmup = value()?.parse().context("--warmup")?,
            "--threads" => args.threads = Some(value()?.parse().context("--threads")?),
            "--device" => args.device = value()?.parse().map_err(|e| anyhow!("{e}"))?,
            "--export" => args.export = Some(PathBuf::from(value()?)),
            other => bail!("unknown flag `{other}`\n{}", usage()),
        }
    }
    if args.steps == 0 || !args.steps.is_multiple_of(cycle) || !args.warmup.is_multiple_of(cycle) {
        bail!(
            "--steps must be ≥ 1 and --steps/--warmup multiples of {cycle} for `{}` (whole critic/generator cycles)",
            args.work
        );
    }
    Ok(args)
}

/// The UNet of a work: `docs/configs/fashion-mnist-16-cpu.json` at 16×16, the
/// `fashion-mnist-small` preset at 32×32.
fn unet_config(work: &str) -> UNetConfig {
    if work.contains("32") {
        UNetConfig::fashion_mnist_small()
    } else {
        let v: serde_json::Value = serde_json::from_str(TEACHER16_CONFIG).expect("valid JSON");
        serde_json::from_value(v["unet"].clone()).expect("a UNet config")
    }
}

/// `n` random images (uniform in [−1, 1]) with random labels out of 10 classes.
fn random_images(n: usize, cfg: &UNetConfig, rng: &mut ChaCha8Rng) -> TrainingData {
    let dim = cfg.dim();
    TrainingData::Images(ImageSet {
        n,
        channels: cfg.channels,
        height: cfg.resolution,
        width: cfg.resolution,
        pixels: (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect(),
        labels: Some((0..n).map(|_| rng.random_range(0..10u32)).collect()),
        class_names: (0..10).map(|i| i.to_string()).collect(),
    })
}

/// `base` with `patch`'s keys written over it (objects recursively).
fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// The image distillation configuration: `cifar10` preset, the docs file over it.
fn image_distill_config(steps: usize) -> DistillConfig {
    let mut v = serde_json::to_value(DistillConfig::cifar10()).expect("serialises");
    merge(
        &mut v,
        serde_json::from_str(DISTILL16_CONFIG).expect("valid JSON"),
    );
    let mut c: DistillConfig = serde_json::from_value(v).expect("a distill config");
    c.driver.steps = steps;
    c.driver.checkpoint_every = steps + 1;
    c.driver.log_every = steps + 1;
    c
}

/// Milliseconds between consecutive observer calls, after `warmup` of them.
struct Clock {
    last: Instant,
    laps: Vec<f64>,
}

impl Clock {
    fn new() -> Self {
        Clock {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }
    fn lap(&mut self) {
        let now = Instant::now();
        self.laps.push(1e3 * (now - self.last).as_secs_f64());
        self.last = now;
    }
}

struct Bench(Args);

impl BackendTask for Bench {
    type Output = Result<Vec<f64>>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Vec<f64>> {
        let args = self.0;
        let total = args.warmup + args.steps;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        B::seed(&device, 0);
        let mut clock = Clock::new();
        match args.work.as_str() {
            "toy" => {
                let net_cfg = MlpDenoiserConfig::new(2, 2.5);
                let teacher = net_cfg.init::<B>(&device);
                let head = MlpDiscriminatorConfig::new(vec![net_cfg.hidden]).init::<B>(&device);
                if let Some(dir) = &args.export {
                    export_mlp::<B>(dir, &teacher, &head, &device)?;
                }
                let mut config = DistillConfig::toy();
                config.driver.steps = total;
                config.driver.checkpoint_every = total + 1;
                config.driver.log_every = total + 1;
                let mut method = FDistill::new(
                    config.clone(),
                    teacher.clone().no_grad(),
                    teacher,
                    Critic::Learned(head),
                    TrainingData::Mixture(ring8_unbalanced()),
                    &device,
                )?;
                distill_laps(&mut method, &config, &mut clock)?;
            }
            w if w.starts_with("teacher") => {
                let cfg = unet_config(w);
                cfg.check()?;
                let net = cfg.init::<B>(&device);
                if let Some(dir) = &args.export {
                    export_unet::<B>(dir, w, &net, None, &device)?;
                }
                let data = random_images(512, &cfg, &mut rng);
                let config = TeacherConfig {
                    steps: total,
                    batch_size: IMAGE_BATCH,
                    lr: 2e-3,
                    ema_beta: 0.995,
                    checkpoint_every: total + 1,
                    log_every: total + 1,
                    ..TeacherConfig::default()
                };
                clock.last = Instant::now();
                train_teacher(net, &data, &config, &device, |_, _| {
                    clock.lap();
                    Ok(())
                })?;
            }
            w if w.starts_with("distill") => {
                let cfg = unet_config(w);
                cfg.check()?;
                let net = cfg.init::<B>(&device);
                let head = ConvDiscriminatorConfig::new(cfg.tap_shapes(), CONV_HEAD_WIDTH);
                head.check()?;
                let head = head.init::<B>(&device);
                if let Some(dir) = &args.export {
                    export_unet::<B>(dir, w, &net, Some(&head), &device)?;
                }
                let data = random_images(512, &cfg, &mut rng);
                let config = image_distill_config(total);
                let mut method = FDistill::new(
                    config.clone(),
                    net.clone().no_grad(),
                    net,
                    Critic::Learned(head),
                    data,
                    &device,
                )?;
                distill_laps(&mut method, &config, &mut clock)?;
            }
            w => {
                let cfg = unet_config(w);
                cfg.check()?;
                let net = cfg.init::<B>(&device);
                if let Some(dir) = &args.export {
                    export_unet::<B>(dir, w, &net, None, &device)?;
                }
                let net = net.valid();
                let dim = cfg.dim();
                let heun = w.ends_with("heun35");
                let sigmas = karras_sigmas(
                    SamplerKind::Heun.steps_for_nfe(35).expect("35 is odd"),
                    SIGMA_MIN,
                    SIGMA_MAX,
                    RHO,
                )?;
                clock.last = Instant::now();
                for _ in 0..total {
                    let z = Tensor::<B::InnerBackend, 2>::random(
                        [IMAGE_BATCH, dim],
                        Distribution::Normal(0.0, 1.0),
                        &device,
                    );
                    let labels = Tensor::<B::InnerBackend, 1, Int>::from_data(
                        TensorData::new(
                            (0..IMAGE_BATCH as i64).map(|i| i % 10).collect(),
                            [IMAGE_BATCH],
                        ),
                        &device,
                    );
                    let x = if heun {
                        sample(SamplerKind::Heun, &net, z, &sigmas, Some(labels))
                    } else {
                        one_step_generate(&net, z, SIGMA_MAX, Some(labels))
                    };
                    let _ = x.into_data(); // waits for the device
                    clock.lap();
                }
            }
        }
        Ok(clock.laps.split_off(args.warmup.min(clock.laps.len())))
    }
}

/// Runs `config.driver.steps` iterations of `method`, one lap per iteration.
fn distill_laps<B, M>(method: &mut M, config: &DistillConfig, clock: &mut Clock) -> Result<()>
where
    B: AutodiffBackend,
    M: fdistill::train::distill::DistillMethod<B>,
{
    let dir = std::env::temp_dir().join(format!("fdistill-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = RunDir::create(&dir)?;
    clock.last = Instant::now();
    let result = run_distillation(method, &config.driver, &run, false, |_| {
        clock.lap();
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    // the final checkpoint is written after the last observer call: not timed
    result?;
    Ok(())
}

/// Writes `tensors` (name, shape, f32 values) as one safetensors file.
fn write_probe(path: &Path, tensors: Vec<(&str, Vec<usize>, Vec<f32>)>) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::write(path, safetensors::serialize(views, None)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    (
        shape,
        t.into_data().convert::<f32>().to_vec::<f32>().expect("f32"),
    )
}

/// The probe inputs: 4 samples, σ from 0.05 to 30, labels 0, 3, 7, 9.
fn probe_inputs<B: Backend>(
    dim: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1, Int>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x: Vec<f32> = (0..4 * dim)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    (
        Tensor::from_data(TensorData::new(x, [4, dim]), device),
        Tensor::from_floats([0.05, 0.5, 2.0, 30.0], device),
        Tensor::from_data(TensorData::new(vec![0i64, 3, 7, 9], [4]), device),
    )
}

/// `DIR/WORK.net.safetensors` (the UNet as EDM's state dict), `DIR/WORK.kwargs.json` (its
/// EDM constructor kwargs), `DIR/WORK.head.safetensors` (the conv heads, fdistill's checkpoint
/// format, if any) and `DIR/WORK.probe.safetensors`: inputs, `D(x; σ, y)`, the taps and the
/// logits.
/// The UNet's output layer starts at zero, so the probe perturbs every parameter first
/// (a fixed pseudo-random offset) to make the outputs depend on all of them.
fn export_unet<B: AutodiffBackend>(
    dir: &Path,
    work: &str,
    net: &fdistill::nets::UNet<B>,
    head: Option<&fdistill::nets::ConvDiscriminator<B>>,
    device: &B::Device,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let net = perturb(net.valid());
    // EDM's state dict (names `model.…`, buffers included) and constructor kwargs: what the
    // twin builds `EDMPrecond(**kwargs)` from and loads strictly
    net.to_state_dict()
        .write_safetensors(&dir.join(format!("{work}.net.safetensors")))?;
    std::fs::write(
        dir.join(format!("{work}.kwargs.json")),
        serde_json::to_string_pretty(&net.config.to_edm_kwargs())?,
    )?;
    let (x, sigma, labels) = probe_inputs::<B::InnerBackend>(net.config.dim(), device);
    let (d, taps) = net.denoise_with_features(x.clone(), sigma.clone(), Some(labels.clone()));
    let labels_f = labels.clone().float();
    let mut probe = vec![
        ("x", host(x.clone())),
        ("sigma", host(sigma.clone())),
        ("labels", host(labels_f)),
        ("denoised", host(d)),
    ];
    let tap_names = ["tap0", "tap1", "tap2", "tap3"];
    for (name, t) in tap_names.into_iter().zip(&taps) {
        let fdistill::core::ratio::FeatureMap::Spatial(t) = t else {
            bail!("UNet taps are spatial");
        };
        probe.push((name, host(t.clone())));
    }
    if let Some(h) = head {
        let h = perturb(h.valid());
        save_module(&h, &dir.join(format!("{work}.head.safetensors")))?;
        let logits = h.log_ratio(&RatioInput {
            x_noisy: x,
            sigma,
            features: taps,
            labels: Some(labels),
        });
        probe.push(("logits", host(logits)));
    }
    write_probe(
        &dir.join(format!("{work}.probe.safetensors")),
        probe.into_iter().map(|(n, (s, v))| (n, s, v)).collect(),
    )
}

/// The toy's MLP denoiser and MLP head, and their probe.
fn export_mlp<B: AutodiffBackend>(
    dir: &Path,
    net: &fdistill::nets::MlpDenoiser<B>,
    head: &fdistill::nets::MlpDiscriminator<B>,
    device: &B::Device,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let net = perturb(net.valid());
    let head = perturb(head.valid());
    save_module(&net, &dir.join("toy.net.safetensors"))?;
    save_module(&head, &dir.join("toy.head.safetensors"))?;
    let (x, sigma, _) = probe_inputs::<B::InnerBackend>(2, device);
    let (d, taps) = net.denoise_with_features(x.clone(), sigma.clone(), None);
    let fdistill::core::ratio::FeatureMap::Flat(tap) = &taps[0] else {
        bail!("the MLP tap is flat");
    };
    let tap = tap.clone();
    let logits = head.log_ratio(&RatioInput {
        x_noisy: x.clone(),
        sigma: sigma.clone(),
        features: taps,
        labels: None,
    });
    write_probe(
        &dir.join("toy.probe.safetensors"),
        [
            ("x", host(x)),
            ("sigma", host(sigma)),
            ("denoised", host(d)),
            ("tap0", host(tap)),
            ("logits", host(logits)),
        ]
        .into_iter()
        .map(|(n, (s, v))| (n, s, v))
        .collect(),
    )
}

/// Adds `0.05 · u`, `u` uniform in [−1, 1] from a fixed seed, to every float parameter.
fn perturb<B: Backend, M: Module<B>>(m: M) -> M {
    struct Perturb(ChaCha8Rng);
    impl<B: Backend> burn::module::ModuleMapper<B> for Perturb {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<B, D>>,
        ) -> burn::module::Param<Tensor<B, D>> {
            let (id, t, mapper) = param.consume();
            let shape = t.dims();
            let n: usize = shape.iter().product();
            let u: Vec<f32> = (0..n)
                .map(|_| self.0.random_range(-0.05f32..0.05))
                .collect();
            let u = Tensor::<B, D>::from_data(TensorData::new(u, shape), &t.device());
            burn::module::Param::from_mapped_value(id, t + u, mapper)
        }
    }
    m.map(&mut Perturb(ChaCha8Rng::seed_from_u64(11)))
}

/// Errors print as one message (no backtrace) with exit code 2.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run() -> Result<()> {
    fdistill::link_registrations();
    let args = parse_args()?;
    if let Some(n) = args.threads {
        fdistill::backends::set_cpu_threads(n)?;
    }
    let threads = fdistill::backends::cpu_threads();
    let laps = dispatch(&args.device, Bench(args.clone()))??;
    let mut sorted = laps.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = laps.iter().sum::<f64>() / laps.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": "fdistill",
            "work": args.work,
            "device": args.device.to_string(),
            "threads": threads,
            "steps": laps.len(),
            "ms_per_step": mean,
            "ms_median": sorted[sorted.len() / 2],
            "ms_min": sorted[0],
        })
    );
    Ok(())
}
