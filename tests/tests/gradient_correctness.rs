//! The library's definition of a correct gradient (issue #3, SPEC §1 and §6).
//!
//! A parametric mixture student `q_θ` (learnable means and log-stds, reparametrised), an exact
//! teacher `p`, exact scores and the exact ratio. For every registered divergence, σ ∈
//! {0.1, 0.5, 2}, in 1-D and 2-D, the Monte-Carlo f-distill gradient
//! `−mean[h(r)(s_p − s_q)ᵀ ∂x_t/∂θ]` (normalisations off, `h` unnormalised) must agree with
//! `∇_θ D_f(p_σ‖q_σ)` computed independently: `D_f = ∫ q_σ f(p_σ/q_σ)` by grid quadrature (only
//! `f`, never `h` or a score), differentiated by central finite differences in θ.
//!
//! Tolerance, per component `j`: `|ĝ_j − g_j| ≤ 3·SE_j + 0.02·‖g‖`, `SE_j` the Monte-Carlo
//! standard error. The draws and path terms are shared by all divergences of one (dim, σ) case.
//! A deliberately wrong weight must fail the same comparison.

use fdistill::Divergence;
use fdistill::core::gmm::GaussianMixture;
use fdistill::core::student::{MixtureStudent, PathTerms, f_distill_gradient, path_terms};
use fdistill::divergence::registry;
use fdistill::divergence::weights::normalised_weights;
use rand::SeedableRng;

const SIGMAS: [f64; 3] = [0.1, 0.5, 2.0];
/// Monte-Carlo draws per (dim, σ) case, shared by every divergence.
const DRAWS: usize = 200_000;
/// Finite-difference step in θ.
const FD_STEP: f64 = 1e-4;

/// Every registered divergence, families at chosen parameters; a family this test does not
/// know is an error telling the author to add parameters here.
fn divergences() -> Vec<Box<dyn Divergence>> {
    fdistill::link_registrations();
    fdistill_plugin_example::link();
    let mut out = Vec::new();
    for info in registry::list().unwrap() {
        match (info.name, info.params.is_empty()) {
            (_, true) => out.push(registry::resolve(info.name).unwrap()),
            ("alpha", false) => {
                out.push(registry::resolve("alpha:0.5").unwrap());
                out.push(registry::resolve("alpha:-0.5").unwrap());
            }
            (name, false) => panic!("add parameter values for family `{name}` to this test"),
        }
    }
    assert!(
        out.iter().any(|d| d.name() == "triangular"),
        "plugin linked"
    );
    out
}

/// One test case: teacher, student, σ.
struct Case {
    p: GaussianMixture,
    student: MixtureStudent,
    sigma: f64,
}

/// 1-D: `p = 0.7 N(−1, 0.4²) + 0.3 N(1.5, 0.5²)`, student `½ N(−0.7, 0.45²) + ½ N(1.2, 0.55²)`.
/// The student's components are a little wider than the teacher's so that every divergence
/// (χ² included) and its estimator's variance are finite.
fn case_1d(sigma: f64) -> Case {
    let p = GaussianMixture::isotropic(vec![0.7, 0.3], vec![vec![-1.0], vec![1.5]], vec![0.4, 0.5])
        .unwrap();
    let q = GaussianMixture::isotropic(
        vec![0.5, 0.5],
        vec![vec![-0.7], vec![1.2]],
        vec![0.45, 0.55],
    )
    .unwrap();
    Case {
        p,
        student: MixtureStudent::from_mixture(&q),
        sigma,
    }
}

/// 2-D: two well-separated diagonal components each.
fn case_2d(sigma: f64) -> Case {
    let p = GaussianMixture::new(
        vec![0.6, 0.4],
        vec![vec![-1.5, 0.0], vec![1.5, 0.5]],
        vec![vec![0.5, 0.4], vec![0.4, 0.6]],
    )
    .unwrap();
    let q = GaussianMixture::new(
        vec![0.5, 0.5],
        vec![vec![-1.2, 0.3], vec![1.2, 0.2]],
        vec![vec![0.55, 0.45], vec![0.45, 0.65]],
    )
    .unwrap();
    Case {
        p,
        student: MixtureStudent::from_mixture(&q),
        sigma,
    }
}

/// `(log p_σ, log q_σ)` on a uniform grid covering both mixtures, with the cell volume.
/// Half-width: largest |mean| + 9 noisy stds; spacing: smallest noisy std / 6 (a Riemann sum
/// of a smooth, rapidly decaying integrand at that spacing is accurate far beyond 1e−8).
struct Grid {
    log_p: Vec<f64>,
    points: Vec<Vec<f64>>,
    cell: f64,
}

fn grid(case: &Case) -> Grid {
    let q = case.student.mixture().unwrap();
    let d = case.p.dim();
    let stds = case.p.stds().iter().chain(q.stds()).flatten();
    let (s_min, s_max) = stds.fold((f64::INFINITY, 0.0f64), |(a, b), s| {
        let v = (s * s + case.sigma * case.sigma).sqrt();
        (a.min(v), b.max(v))
    });
    let m_max = case
        .p
        .means()
        .iter()
        .chain(q.means())
        .flatten()
        .fold(0.0f64, |a, m| a.max(m.abs()));
    let half = m_max + 9.0 * s_max;
    let n = (2.0 * half / (s_min / 6.0)).ceil() as usize + 1;
    let h = 2.0 * half / (n - 1) as f64;
    let axis: Vec<f64> = (0..n).map(|i| -half + i as f64 * h).collect();
    let points: Vec<Vec<f64>> = if d == 1 {
        axis.iter().map(|&x| vec![x]).collect()
    } else {
        axis.iter()
            .flat_map(|&x| axis.iter().map(move |&y| vec![x, y]))
            .collect()
    };
    let log_p = points
        .iter()
        .map(|x| case.p.log_density(x, case.sigma))
        .collect();
    Grid {
        log_p,
        points,
        cell: h.powi(d as i32),
    }
}

/// `D_f(p_σ‖q_σ) = Σ_grid q f(p/q) · cell` for each divergence, at student parameters θ.
fn divergence_values(
    case: &Case,
    g: &Grid,
    theta: &[f64],
    divs: &[Box<dyn Divergence>],
) -> Vec<f64> {
    let q = case.student.with_params(theta).mixture().unwrap();
    let mut out = vec![0.0; divs.len()];
    for (x, lp) in g.points.iter().zip(&g.log_p) {
        let lq = q.log_density(x, case.sigma);
        let (qv, r) = (lq.exp(), (lp - lq).exp());
        for (o, d) in out.iter_mut().zip(divs) {
            *o += qv * d.f(r) * g.cell;
        }
    }
    out
}

/// `∇_θ D_f` by central differences of the quadrature, one vector per divergence.
fn reference_gradients(case: &Case, divs: &[Box<dyn Divergence>]) -> Vec<Vec<f64>> {
    let g = grid(case);
    let theta = case.student.params().to_vec();
    let mut grads = vec![vec![0.0; theta.len()]; divs.len()];
    for i in 0..theta.len() {
        let (mut plus, mut minus) = (theta.clone(), theta.clone());
        plus[i] += FD_STEP;
        minus[i] -= FD_STEP;
        let fp = divergence_values(case, &g, &plus, divs);
        let fm = divergence_values(case, &g, &minus, divs);
        for (k, grad) in grads.iter_mut().enumerate() {
            grad[i] = (fp[k] - fm[k]) / (2.0 * FD_STEP);
        }
    }
    grads
}

/// Exact per-draw terms at the case's θ, from a fixed seed.
fn monte_carlo_terms(case: &Case, seed: u64) -> Vec<PathTerms> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let draws = case.student.draw(DRAWS, |_| case.sigma, &mut rng);
    let q = case.student.mixture().unwrap();
    path_terms(&case.student, &q, &case.p, &draws)
}

/// Monte-Carlo mean and standard error per component of `w_i · pullback_i`.
fn estimate(weights: &[f64], terms: &[PathTerms]) -> (Vec<f64>, Vec<f64>) {
    let mean = f_distill_gradient(weights, terms);
    let n = terms.len() as f64;
    let mut var = vec![0.0; mean.len()];
    for (w, t) in weights.iter().zip(terms) {
        for ((v, m), x) in var.iter_mut().zip(&mean).zip(&t.score_pullback) {
            *v += (w * x - m).powi(2) / (n - 1.0);
        }
    }
    (mean, var.iter().map(|v| (v / n).sqrt()).collect())
}

/// The comparison: `Ok(worst |err|/SE)` or `Err(description)`.
fn compare(mc: &[f64], se: &[f64], exact: &[f64]) -> Result<(f64, f64), String> {
    let norm = exact.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut worst_se = 0.0f64;
    let mut worst_rel = 0.0f64;
    for j in 0..mc.len() {
        let err = (mc[j] - exact[j]).abs();
        worst_se = worst_se.max(err / se[j]);
        worst_rel = worst_rel.max(err / norm);
        let tol = 3.0 * se[j] + 0.02 * norm;
        if err.is_nan() || err > tol {
            return Err(format!(
                "θ_{j}: MC {:.6} ± {:.2e} vs exact {:.6} (|err| {err:.2e} > tol {tol:.2e}, ‖g‖ {norm:.3e})",
                mc[j], se[j], exact[j]
            ));
        }
    }
    Ok((worst_se, worst_rel))
}

/// Unnormalised weights `h(r_i) = exp(log h(ℓ_i))` (stage-2 normalisation off).
fn h_weights(d: &dyn Divergence, terms: &[PathTerms]) -> Vec<f64> {
    terms.iter().map(|t| d.log_h(t.log_ratio).exp()).collect()
}

fn cases() -> Vec<(String, Case)> {
    let mut out = Vec::new();
    for &s in &SIGMAS {
        out.push((format!("1-D σ={s}"), case_1d(s)));
        out.push((format!("2-D σ={s}"), case_2d(s)));
    }
    out
}

#[test]
fn monte_carlo_f_distill_gradient_matches_quadrature_finite_differences() {
    let divs = divergences();
    let mut failures = Vec::new();
    for (seed, (label, case)) in cases().into_iter().enumerate() {
        let exact = reference_gradients(&case, &divs);
        let terms = monte_carlo_terms(&case, 1000 + seed as u64);
        for (d, g) in divs.iter().zip(&exact) {
            let (mc, se) = estimate(&h_weights(d.as_ref(), &terms), &terms);
            match compare(&mc, &se, g) {
                Ok((worst_se, worst_rel)) => println!(
                    "{label:<10} {:<22} max |err|/SE {worst_se:5.2}  max |err|/‖g‖ {:6.3}%",
                    d.label(),
                    100.0 * worst_rel
                ),
                Err(e) => failures.push(format!("{label} {}: {e}", d.label())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "gradient mismatches:\n{}",
        failures.join("\n")
    );
}

/// The comparison has power: a weight that is wrong by a factor `r` (`h(r)·r`, the weight of
/// the α-divergence one step up) is caught for every divergence at σ = 0.5 in 1-D and 2-D,
/// and so is an inverted ratio (`h(1/r)`) for forward KL.
#[test]
fn wrong_weights_are_detected() {
    let divs = divergences();
    for (seed, case) in [case_1d(0.5), case_2d(0.5)].into_iter().enumerate() {
        let exact = reference_gradients(&case, &divs);
        let terms = monte_carlo_terms(&case, 77 + seed as u64);
        for (d, g) in divs.iter().zip(&exact) {
            let wrong: Vec<f64> = terms
                .iter()
                .map(|t| (d.log_h(t.log_ratio) + t.log_ratio).exp())
                .collect();
            let (mc, se) = estimate(&wrong, &terms);
            assert!(
                compare(&mc, &se, g).is_err(),
                "{}: h·r not detected",
                d.label()
            );
        }
        let fkl = registry::resolve("forward-kl").unwrap();
        let k = divs.iter().position(|d| d.name() == "forward-kl").unwrap();
        let inverted: Vec<f64> = terms
            .iter()
            .map(|t| fkl.log_h(-t.log_ratio).exp())
            .collect();
        let (mc, se) = estimate(&inverted, &terms);
        assert!(
            compare(&mc, &se, &exact[k]).is_err(),
            "inverted ratio not detected"
        );
    }
}

/// With every `h` normalised to mean 1 (stage 2 on) the reverse-KL estimate is unchanged
/// (its `h ≡ 1`), as SPEC §3 says: the normalisation matches reverse-KL's scale.
#[test]
fn stage_two_normalisation_leaves_reverse_kl_unchanged() {
    fdistill::link_registrations();
    fdistill_plugin_example::link();
    let case = case_1d(0.5);
    let terms = monte_carlo_terms(&case, 5);
    let rkl = registry::resolve("reverse-kl").unwrap();
    let l: Vec<f64> = terms.iter().map(|t| t.log_ratio).collect();
    let w = normalised_weights(rkl.as_ref(), &l, 0.0);
    let a = f_distill_gradient(&w, &terms);
    let b = f_distill_gradient(&h_weights(rkl.as_ref(), &terms), &terms);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-12 * (1.0 + y.abs()));
    }
}

/// `E_q[h(r)] = Σ_grid q_σ h(p_σ/q_σ) · cell` by quadrature (from `log_h`, independent of
/// any batch statistic).
fn expected_h(case: &Case, g: &Grid, d: &dyn Divergence) -> f64 {
    let q = case.student.mixture().unwrap();
    g.points
        .iter()
        .zip(&g.log_p)
        .map(|(x, lp)| {
            let lq = q.log_density(x, case.sigma);
            lq.exp() * d.log_h(lp - lq).exp() * g.cell
        })
        .sum()
}

/// Stage-2 normalisation with a non-constant `h` (SPEC §3): dividing every `h_i` by the batch
/// mean turns the estimate into `∇_θ D_f / E_q[h]`, with `∇_θ D_f` from quadrature and finite
/// differences and `E_q[h]` from quadrature. Only divergences whose `E_q[h]` is away from 1
/// count (for forward KL `E_q[r] = 1`, where normalising changes nothing in expectation);
/// the un-normalised estimate must then fail the same comparison.
#[test]
fn normalised_gradient_is_the_exact_gradient_over_the_mean_weight() {
    let divs = divergences();
    for (seed, case) in [case_1d(0.5), case_2d(0.5)].into_iter().enumerate() {
        let g = grid(&case);
        let exact = reference_gradients(&case, &divs);
        let terms = monte_carlo_terms(&case, 300 + seed as u64);
        let l: Vec<f64> = terms.iter().map(|t| t.log_ratio).collect();
        let mut checked = Vec::new();
        for (d, grad) in divs.iter().zip(&exact) {
            let mean_h = expected_h(&case, &g, d.as_ref());
            if (mean_h - 1.0).abs() < 0.15 {
                continue;
            }
            let target: Vec<f64> = grad.iter().map(|x| x / mean_h).collect();
            let w = normalised_weights(d.as_ref(), &l, 0.0);
            let (mc, se) = estimate(&w, &terms);
            if let Err(e) = compare(&mc, &se, &target) {
                panic!("{} (E_q[h] = {mean_h:.4}): {e}", d.label());
            }
            let (raw, raw_se) = estimate(&h_weights(d.as_ref(), &terms), &terms);
            assert!(
                compare(&raw, &raw_se, &target).is_err(),
                "{}: un-normalised weights also pass; E_q[h] = {mean_h} does not matter",
                d.label()
            );
            checked.push(format!("{} E_q[h]={mean_h:.3}", d.label()));
        }
        println!("case {seed}: {}", checked.join(", "));
        assert!(
            checked.iter().any(|c| c.starts_with("jensen-shannon")),
            "JS has E_q[h] ≈ ½, away from 1: {checked:?}"
        );
    }
}
