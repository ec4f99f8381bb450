//! The conformance suite (`fdistill_conformance::suite`) on every backend of the build:
//! `flex` against itself (same kernels), `wgpu` against flex when an adapter exists (a GPU,
//! or Mesa's llvmpipe on the CPU; skipped with a message otherwise, an error with
//! `FDISTILL_REQUIRE_WGPU=1`), `cuda` with the `cuda` feature.
//!
//! Run one backend: `cargo test --workspace --test conformance wgpu::`.

use fdistill_conformance::{Tolerances, suite};

macro_rules! conformance {
    ($backend:ident, $B:ty, $device:expr, $tol:expr) => {
        mod $backend {
            use super::*;

            type B = $B;

            fn device() -> Option<burn::tensor::Device<B>> {
                $device
            }

            macro_rules! check {
                ($name:ident, $body:expr) => {
                    #[test]
                    fn $name() {
                        if let Some(device) = device() {
                            #[allow(clippy::redundant_closure_call)]
                            ($body)(&device);
                        }
                    }
                };
            }

            check!(mlp_forward, |d| suite::mlp_forward::<B>(d, $tol));
            check!(unet_forward, |d| suite::unet_forward::<B>(d, $tol));
            check!(heads_forward, |d| suite::heads_forward::<B>(d, $tol));
            check!(posterior_forward, |d| suite::posterior_forward::<B>(
                d, $tol
            ));
            check!(sampling, |d| suite::sampling::<B>(d, $tol));
            check!(teacher_steps_mlp, |d| suite::teacher_steps::<B, _>(
                suite::Mlp,
                d,
                $tol
            ));
            check!(teacher_steps_unet, |d| suite::teacher_steps::<B, _>(
                suite::TinyUNet,
                d,
                $tol
            ));
            check!(fdistill_cycles_mlp, |d| suite::fdistill_cycles::<B, _>(
                suite::Mlp,
                d,
                $tol
            ));
            check!(fdistill_cycles_unet, |d| suite::fdistill_cycles::<B, _>(
                suite::TinyUNet,
                d,
                $tol
            ));
            check!(vardiu_steps, |d| suite::vardiu_steps::<B>(d, $tol));
            check!(
                checkpoints_cross_load,
                |d| suite::checkpoints_cross_load::<B>(d, $tol)
            );
            check!(tolerance_catches_a_real_difference, |d| {
                suite::tolerance_catches_a_real_difference::<B>(d, $tol)
            });
        }
    };
}

conformance!(
    flex,
    burn::backend::Autodiff<burn::backend::Flex>,
    Some(Default::default()),
    Tolerances::FLEX
);

conformance!(
    wgpu,
    burn::backend::Autodiff<burn::backend::Wgpu>,
    fdistill_conformance::wgpu_device(),
    Tolerances::WGPU
);

#[cfg(feature = "cuda")]
conformance!(
    cuda,
    burn::backend::Autodiff<burn::backend::Cuda>,
    Some(Default::default()),
    Tolerances::CUDA
);

/// `cuda`'s TF32-sized tolerances still catch a real difference (checked on flex, so it runs
/// on every machine; the cuda group repeats it on the GPU).
#[test]
fn cuda_tolerances_catch_a_real_difference() {
    suite::tolerance_catches_a_real_difference::<burn::backend::Autodiff<burn::backend::Flex>>(
        &Default::default(),
        Tolerances::CUDA,
    );
}

/// A forward tolerance looser than TF32's is refused, whatever the nudge would show.
#[test]
#[should_panic(expected = "is looser than")]
fn a_looser_tolerance_than_tf32_is_refused() {
    let mut loose = Tolerances::CUDA;
    loose.forward.atol *= 2.0;
    suite::tolerance_catches_a_real_difference::<burn::backend::Autodiff<burn::backend::Flex>>(
        &Default::default(),
        loose,
    );
}
