//! Host syncs per training iteration: every device→host read of the step path goes through
//! `fdistill_core::host` (checked on the sources below), which counts them; the counts per
//! f-distill critic and generator step, teacher step and VarDiU step are pinned here.
//!
//! Before issue 21 an f-distill step read 5 times (critic: DSM loss, discriminator loss,
//! total loss, two gradient norms; generator: log ratios, surrogate, GAN term, total loss,
//! gradient norm). Now the losses and squared gradient norms are stacked on the device and
//! read once after the backward pass: critic 1, generator 2 (the log ratios must come to
//! the host before the weights `h(r)`, which the divergence computes in `f64`). A VarDiU
//! step went from 5 reads to 2, a teacher step reads once (its loss).

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use fdistill::core::host;
use fdistill::train::distill::driver::DistillMethod;
use fdistill::train::distill::{Critic, DistillConfig, FDistill, VarDiU};
use fdistill::train::teacher::EdmTeacher;
use fdistill_conformance::suite::{Family, Mlp, TinyUNet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type A = Autodiff<Flex>;

/// Reads made by `f` on this thread.
fn reads_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = host::reads();
    let out = f();
    (out, host::reads() - before)
}

fn fdistill_step_reads<F: Family>(family: F, config: DistillConfig) -> Vec<(bool, usize)>
where
    F::Net<A>: burn::module::AutodiffModule<A>,
    <F::Net<A> as burn::module::AutodiffModule<A>>::InnerModule:
        fdistill::core::Denoiser<<A as burn::tensor::backend::AutodiffBackend>::InnerBackend>,
    F::Head<A>: burn::module::AutodiffModule<A> + fdistill::core::LearnedRatioEstimator<A>,
{
    fdistill::link_registrations();
    let device = Default::default();
    let net = family.net::<A>(&device);
    let head = family.head::<A>(&device);
    let mut method = FDistill::new(
        config.clone(),
        net.clone().no_grad(),
        net,
        Critic::Learned(head),
        family.data(),
        &device,
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (1..=2 * (config.critic_steps + 1))
        .map(|step| {
            let (m, n) = reads_of(|| method.step(step, &mut rng).unwrap());
            assert!(
                serde_json::to_value(&m).is_ok_and(|v| v.is_object()),
                "metrics of step {step}"
            );
            (config.is_generator_step(step), n)
        })
        .collect()
}

#[test]
fn an_fdistill_iteration_reads_the_device_once_per_critic_step_and_twice_per_generator_step() {
    for (name, counts) in [
        (
            "mlp",
            fdistill_step_reads(
                Mlp,
                DistillConfig {
                    batch_size: 32,
                    ..DistillConfig::toy()
                },
            ),
        ),
        (
            "unet",
            fdistill_step_reads(
                TinyUNet,
                DistillConfig {
                    batch_size: 4,
                    critic_steps: 1,
                    ..DistillConfig::toy()
                },
            ),
        ),
    ] {
        let critic: Vec<usize> = counts.iter().filter(|c| !c.0).map(|c| c.1).collect();
        let generator: Vec<usize> = counts.iter().filter(|c| c.0).map(|c| c.1).collect();
        eprintln!("host syncs per step, {name}: critic {critic:?}, generator {generator:?}");
        assert!(critic.iter().all(|&n| n == 1), "{name} critic: {critic:?}");
        assert!(
            generator.iter().all(|&n| n == 2),
            "{name} generator: {generator:?}"
        );
    }
}

#[test]
fn a_teacher_step_reads_once_and_a_vardiu_step_twice() {
    use fdistill::train::distill::driver::Trainable;
    let device = Default::default();
    let data = Mlp.data();
    let config = fdistill::train::teacher::TeacherConfig {
        batch_size: 32,
        ..Default::default()
    };
    let mut teacher =
        EdmTeacher::<A, _>::new(Mlp.net::<A>(&device), &data, &config, &device).expect("set-up");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for step in 1..=2 {
        let (_, n) = reads_of(|| teacher.step(step, &mut rng).unwrap());
        assert_eq!(n, 1, "teacher step {step}");
    }

    let net = Mlp.net::<A>(&device);
    let post = fdistill::nets::GaussianPosteriorConfig::new(2, 2, 0.5).init::<A>(&device);
    let config = fdistill::train::distill::VarDiuConfig {
        batch_size: 32,
        ..fdistill::train::distill::VarDiuConfig::data_scale().with_data_scale(0.5)
    };
    let mut vardiu = VarDiU::new(config, net.clone().no_grad(), net, post, &device).unwrap();
    for step in 1..=2 {
        let (_, n) = reads_of(|| vardiu.step(step, &mut rng).unwrap());
        // the bound's two reported terms; then the loss and both squared gradient norms
        assert_eq!(n, 2, "vardiu step {step}");
    }
}

/// Direct reads (`into_data`, `into_scalar`, `to_data`) in a file's code before its test
/// module, comment lines excepted.
fn direct_reads(path: &Path) -> Vec<usize> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    code.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| {
            [".into_data()", ".into_scalar()", ".to_data()"]
                .iter()
                .any(|p| l.contains(p))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn the_step_path_reads_the_device_only_through_the_counted_helper() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<std::path::PathBuf> = [
        "crates/fdistill-train/src/distill/fdistill.rs",
        "crates/fdistill-train/src/distill/vardiu.rs",
        "crates/fdistill-train/src/distill/mod.rs",
        "crates/fdistill-train/src/teacher.rs",
        "crates/fdistill-core/src/vardiu_bound.rs",
        "crates/fdistill-core/src/update.rs",
        "crates/fdistill-core/src/ratio.rs",
        "crates/fdistill-core/src/sampler.rs",
        "crates/fdistill-core/src/denoiser.rs",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    for dir in [
        "crates/fdistill-core/src/losses",
        "crates/fdistill-nets/src/ops",
    ] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    // every network's forward (not the classifier, state-dict export or test helpers)
    for f in [
        "mlp",
        "mlp_disc",
        "conv_disc",
        "posterior",
        "song_unet",
        "dhariwal_unet",
        "edm_block",
        "edm_layers",
        "edm_precond",
        "embedding",
        "unet_plan",
        "edm",
    ] {
        files.push(root.join(format!("crates/fdistill-nets/src/{f}.rs")));
    }
    let mut offenders = Vec::new();
    for f in &files {
        let lines = direct_reads(f);
        if !lines.is_empty() {
            offenders.push(format!("{}: lines {lines:?}", f.display()));
        }
    }
    // The driver's only direct read writes the AdamW moments into a checkpoint.
    let driver = direct_reads(&root.join("crates/fdistill-train/src/distill/driver.rs"));
    assert_eq!(driver.len(), 1, "driver.rs direct reads at {driver:?}");
    assert!(
        offenders.is_empty(),
        "device reads outside fdistill_core::host (uncounted host syncs): {offenders:#?}"
    );
    // the scan finds what it looks for
    assert_eq!(
        direct_reads(&root.join("crates/fdistill-core/src/host.rs")).len(),
        1
    );
}
