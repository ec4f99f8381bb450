//! The EDM samplers on the exact Gaussian-mixture teacher, judged by the sample metrics
//! (a cross-crate test: `fdistill-core` samples, `fdistill-metrics` measures).

use burn::backend::Flex;
use burn::tensor::TensorData;
use burn::tensor::{Int, Tensor};
use fdistill::core::Denoiser;
use fdistill::core::gmm::GaussianMixture;
use fdistill::core::sampler::{euler_sample, heun_sample};
use fdistill::core::schedule::{RHO, SIGMA_MAX, SIGMA_MIN, karras_sigmas};
use fdistill::core::targets;
use fdistill::metrics::samples as metrics;
use rand::SeedableRng;
use std::cell::Cell;

type B = Flex;

/// The exact Tweedie denoiser of a mixture, counting its evaluations.
struct Analytic(GaussianMixture, Cell<usize>);

impl Denoiser<B> for Analytic {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn denoise(
        &self,
        x: Tensor<B, 2>,
        sigma: Tensor<B, 1>,
        _labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 2> {
        self.1.set(self.1.get() + 1);
        let [n, d] = x.dims();
        let xs = x.into_data().convert::<f64>().to_vec::<f64>().unwrap();
        let ss = sigma.into_data().convert::<f64>().to_vec::<f64>().unwrap();
        let out: Vec<f64> = xs
            .chunks(d)
            .zip(&ss)
            .flat_map(|(p, s)| self.0.denoise(p, *s))
            .collect();
        Tensor::from_data(
            TensorData::new(out, [n, d]).convert::<f32>(),
            &Default::default(),
        )
    }
}

fn latents(n: usize, d: usize, seed: u64) -> Tensor<B, 2> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let z = fdistill::core::random::standard_normal(n * d, &mut rng);
    Tensor::from_data(
        TensorData::new(z, [n, d]).convert::<f32>(),
        &Default::default(),
    )
}

fn to_vec(x: Tensor<B, 2>) -> Vec<f64> {
    x.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

#[test]
fn heun_on_the_analytic_teacher_reproduces_ring8() {
    let g = targets::ring8_unbalanced();
    let teacher = Analytic(g.clone(), Cell::new(0));
    let n = 1500;
    let sigmas = karras_sigmas(18, SIGMA_MIN, SIGMA_MAX, RHO).unwrap();
    let x = to_vec(heun_sample(&teacher, latents(n, 2, 1), &sigmas, None));
    assert_eq!(teacher.1.get(), 35, "NFE = 2N − 1");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let exact_a = g.sample(n, &mut rng);
    let exact_b = g.sample(n, &mut rng);
    let floor = metrics::mmd2(&exact_a, &exact_b, 2);
    let got = metrics::mmd2(&x, &exact_a, 2);
    assert!(got < 2.0 * floor, "Heun MMD² {got} vs floor {floor}");
    assert_eq!(metrics::mode_report(&g, &x).modes_covered, 8);
    // Euler with few steps is visibly worse than Heun with the same grid: a test that
    // the metric and the samplers can tell them apart.
    let coarse = karras_sigmas(4, SIGMA_MIN, SIGMA_MAX, RHO).unwrap();
    let e = to_vec(euler_sample(&teacher, latents(n, 2, 1), &coarse, None));
    assert!(metrics::mmd2(&e, &exact_a, 2) > 2.0 * floor);
}
