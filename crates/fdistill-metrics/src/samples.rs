//! Offline sample metrics (SPEC §8): sample-set distances against a reference set, and
//! mode statistics against a known Gaussian mixture.
//!
//! Sample sets are row-major `&[f64]` of `n · dim` values. Every statistic here is a
//! V-statistic (all pairs, the diagonal included), so identical sets give exactly 0 and two
//! independent sets of the same distribution give a small positive *floor*; report numbers
//! next to the floor of two exact sample sets of the same sizes.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use fdistill_core::gmm::GaussianMixture;

/// The fixed RBF bandwidths of [`mmd2`]: VarDiU's range 0.25–4, in octaves.
pub const MMD_BANDWIDTHS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// Number of fixed projection directions of [`sliced_wasserstein`].
pub const SW_DIRECTIONS: usize = 128;

/// Seed of the fixed projection directions of [`sliced_wasserstein`].
pub const SW_SEED: u64 = 0x5eed;

/// Squared Euclidean distance between two points.
fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The multi-bandwidth RBF kernel of [`mmd2`]:
///
/// $$ k(x, y) = \sum_{h \in H} \exp\\!\Big(-\frac{\lVert x - y\rVert^2}{2h^2}\Big),
///    \quad H = \\{0.25, 0.5, 1, 2, 4\\}. $$
pub fn rbf_kernel(sq_distance: f64) -> f64 {
    MMD_BANDWIDTHS
        .iter()
        .map(|h| (-sq_distance / (2.0 * h * h)).exp())
        .sum()
}

/// Mean of `g(‖x_i − y_j‖²)` over all pairs (i, j).
fn mean_pairwise(x: &[f64], y: &[f64], dim: usize, g: impl Fn(f64) -> f64) -> f64 {
    let (n, m) = (x.len() / dim, y.len() / dim);
    let mut total = 0.0;
    for a in x.chunks_exact(dim) {
        let mut row = 0.0;
        for b in y.chunks_exact(dim) {
            row += g(sq_dist(a, b));
        }
        total += row;
    }
    total / (n * m) as f64
}

fn check_sets(x: &[f64], y: &[f64], dim: usize) {
    assert!(dim > 0, "dim must be ≥ 1");
    assert!(
        x.len().is_multiple_of(dim)
            && y.len().is_multiple_of(dim)
            && !x.is_empty()
            && !y.is_empty(),
        "sample sets must be non-empty with n · dim values"
    );
}

/// Biased (V-statistic) squared maximum mean discrepancy with the fixed kernel [`rbf_kernel`]:
///
/// $$ \widehat{\mathrm{MMD}}^2 = \tfrac{1}{n^2}\sum_{i,i'} k(x_i, x_{i'})
///    + \tfrac{1}{m^2}\sum_{j,j'} k(y_j, y_{j'}) - \tfrac{2}{nm}\sum_{i,j} k(x_i, y_j) \\;\ge 0. $$
///
/// Its expectation exceeds the population MMD² by
/// `(k(0) − E k(x, x'))/n + (k(0) − E k(y, y'))/m` (the floor). `O(n m)` time.
///
/// # Panics
/// If a set is empty or its length is not a multiple of `dim` (callers check shapes first).
pub fn mmd2(x: &[f64], y: &[f64], dim: usize) -> f64 {
    check_sets(x, y, dim);
    let kxx = mean_pairwise(x, x, dim, rbf_kernel);
    let kyy = mean_pairwise(y, y, dim, rbf_kernel);
    let kxy = mean_pairwise(x, y, dim, rbf_kernel);
    (kxx + kyy - 2.0 * kxy).max(0.0)
}

/// [`mmd2`] averaged over the bandwidths instead of summed (VarDiU's "MMD averaged over RBF
/// bandwidths 0.25–4"):
///
/// $$ \overline{\mathrm{MMD}^2} = \frac{1}{|H|}\sum_{h \in H} \widehat{\mathrm{MMD}}{}^2_h
///    = \widehat{\mathrm{MMD}}{}^2 / |H|, $$
///
/// since the V-statistic is linear in the kernel and [`rbf_kernel`] is the sum of the
/// single-bandwidth kernels.
///
/// # Panics
/// As [`mmd2`].
pub fn mmd2_bandwidth_mean(x: &[f64], y: &[f64], dim: usize) -> f64 {
    mmd2(x, y, dim) / MMD_BANDWIDTHS.len() as f64
}

/// Energy distance (V-statistic), `ℰ = 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ ≥ 0`:
///
/// $$ \hat{\mathcal E} = \tfrac{2}{nm}\sum_{i,j}\lVert x_i - y_j\rVert
///    - \tfrac{1}{n^2}\sum_{i,i'}\lVert x_i - x_{i'}\rVert - \tfrac{1}{m^2}\sum_{j,j'}\lVert y_j - y_{j'}\rVert. $$
///
/// # Panics
/// As [`mmd2`].
pub fn energy_distance(x: &[f64], y: &[f64], dim: usize) -> f64 {
    check_sets(x, y, dim);
    let dxy = mean_pairwise(x, y, dim, f64::sqrt);
    let dxx = mean_pairwise(x, x, dim, f64::sqrt);
    let dyy = mean_pairwise(y, y, dim, f64::sqrt);
    (2.0 * dxy - dxx - dyy).max(0.0)
}

/// The fixed unit directions of [`sliced_wasserstein`]: [`SW_DIRECTIONS`] Gaussian vectors,
/// normalised, from ChaCha8 seeded with [`SW_SEED`]; row-major `SW_DIRECTIONS · dim`.
pub fn sw_directions(dim: usize) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SW_SEED);
    let mut out = Vec::with_capacity(SW_DIRECTIONS * dim);
    for _ in 0..SW_DIRECTIONS {
        let v: Vec<f64> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        out.extend(v.iter().map(|a| a / norm));
    }
    out
}

/// Exact `W_p^p` between two 1-D empirical distributions (any sizes): the integral over
/// `u ∈ (0, 1)` of `|F⁻¹(u) − G⁻¹(u)|^p`, walking the merged quantile breakpoints.
/// Both inputs are sorted in place.
pub fn wasserstein_1d_pow(a: &mut [f64], b: &mut [f64], p: f64) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len(), b.len());
    let (mut i, mut j) = (0usize, 0usize);
    let mut u = 0.0;
    let mut total = 0.0;
    while i < n && j < m {
        // Next breakpoint: the smaller of (i+1)/n and (j+1)/m.
        let (ua, ub) = ((i + 1) as f64 / n as f64, (j + 1) as f64 / m as f64);
        let next = ua.min(ub);
        total += (next - u) * (a[i] - b[j]).abs().powf(p);
        u = next;
        if ua <= ub {
            i += 1;
        }
        if ub <= ua {
            j += 1;
        }
    }
    total
}

/// Sliced 2-Wasserstein distance over the fixed directions θ_k of [`sw_directions`]:
///
/// $$ \mathrm{SW}_2 = \Big(\tfrac{1}{K}\sum_{k=1}^{K} W_2^2\big(\theta_k^\top X,\ \theta_k^\top Y\big)\Big)^{1/2}. $$
///
/// In 1-D every direction is ±1 and SW₂ is the exact empirical W₂.
///
/// # Panics
/// As [`mmd2`].
pub fn sliced_wasserstein(x: &[f64], y: &[f64], dim: usize) -> f64 {
    check_sets(x, y, dim);
    let dirs = sw_directions(dim);
    let project = |s: &[f64], t: &[f64]| -> Vec<f64> {
        s.chunks_exact(dim)
            .map(|p| p.iter().zip(t).map(|(a, b)| a * b).sum())
            .collect()
    };
    let total: f64 = dirs
        .chunks_exact(dim)
        .map(|t| wasserstein_1d_pow(&mut project(x, t), &mut project(y, t), 2.0))
        .sum();
    (total / SW_DIRECTIONS as f64).sqrt()
}

/// `P(‖z‖ ≤ 3)` for `z ~ N(0, I_d)`: the mass of a `d`-dimensional standard Gaussian within
/// 3 standard deviations, i.e. the χ²_d CDF at 9. Even `d`: `1 − e^{−x} Σ_{k<d/2} x^k/k!`
/// with `x = 9/2`; odd `d`: from `erf(3/√2)` by `P_{d+2} = P_d − x^{d/2} e^{−x} / Γ(d/2 + 1)`.
pub fn mass_within_3_std(dim: usize) -> f64 {
    const ERF_3_OVER_SQRT2: f64 = 0.997_300_203_936_739_8;
    let x: f64 = 4.5;
    if dim.is_multiple_of(2) {
        let mut term = 1.0;
        let mut sum = 0.0;
        for k in 0..dim / 2 {
            if k > 0 {
                term *= x / k as f64;
            }
            sum += term;
        }
        1.0 - (-x).exp() * sum
    } else {
        let mut p = ERF_3_OVER_SQRT2;
        // Γ(d/2 + 1) for d = 1: Γ(3/2) = √π / 2.
        let mut gamma = std::f64::consts::PI.sqrt() / 2.0;
        let mut d = 1usize;
        while d < dim {
            let a = d as f64 / 2.0;
            p -= x.powf(a) * (-x).exp() / gamma;
            gamma *= a + 1.0;
            d += 2;
        }
        p
    }
}

/// Mode statistics of a sample set against a known Gaussian mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeReport {
    /// Components holding at least half their expected mass (see [`mode_report`]).
    pub modes_covered: usize,
    /// Number of components.
    pub modes_total: usize,
    /// Observed share of samples assigned to each component (within 3 std of it).
    pub per_mode_mass: Vec<f64>,
    /// Expected share: `π_k · P(‖z‖ ≤ 3)`.
    pub expected_mass: Vec<f64>,
}

impl ModeReport {
    /// Per-mode mass error `Σ_k |m_k − e_k|` (observed against expected share, the
    /// [`per_mode_mass`](Self::per_mode_mass) and [`expected_mass`](Self::expected_mass)):
    /// 0 for a sampler that puts every mode's weight on it; a dropped mode of weight `π`
    /// adds about `0.99 π` and the mass it went to as much again.
    pub fn mass_error(&self) -> f64 {
        self.per_mode_mass
            .iter()
            .zip(&self.expected_mass)
            .map(|(m, e)| (m - e).abs())
            .sum()
    }

    /// The worst-served mode's share of its expected mass, $\min_k m_k / e_k$: about 1 for
    /// exact samples, 0 when a mode is dropped. A mode is covered when its ratio is at least
    /// ½ ([`mode_report`]), so every mode is covered exactly when this is ≥ ½; unlike the
    /// count it says how far a run is from covering (or from dropping) its lightest mode.
    pub fn worst_mode_ratio(&self) -> f64 {
        self.per_mode_mass
            .iter()
            .zip(&self.expected_mass)
            .map(|(m, e)| m / e)
            .fold(f64::INFINITY, f64::min)
    }

    /// Off-mode mass $1 − \sum_k m_k$: the share of samples farther than 3 std from every
    /// component — samples on bridges and streaks between modes, or outside them. For exact
    /// samples of a mixture whose 3-std balls do not overlap it is $1 − P(‖z‖ ≤ 3)$
    /// ($e^{-9/2} ≈ 0.011$ in 2-D).
    pub fn off_mode_mass(&self) -> f64 {
        1.0 - self.per_mode_mass.iter().sum::<f64>()
    }
}

/// Which component a point belongs to: the one with the smallest standardised distance
/// `‖(x − μ_k)/s_k‖`, if that distance is ≤ 3; otherwise none.
pub fn assign_mode(gmm: &GaussianMixture, x: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (k, (m, s)) in gmm.means().iter().zip(gmm.stds()).enumerate() {
        let d2: f64 = x
            .iter()
            .zip(m.iter().zip(s))
            .map(|(xi, (mi, si))| ((xi - mi) / si).powi(2))
            .sum();
        if best.is_none_or(|(_, b)| d2 < b) {
            best = Some((k, d2));
        }
    }
    best.filter(|(_, d2)| *d2 <= 9.0).map(|(k, _)| k)
}

/// Mode coverage: a sample is assigned to a component by [`assign_mode`]; component k's
/// observed mass is the share of samples assigned to it; it is *covered* when that share is
/// at least half its expected mass `π_k · P(‖z‖ ≤ 3)` ([`mass_within_3_std`]).
///
/// # Panics
/// If `samples.len()` is not a positive multiple of `gmm.dim()`.
pub fn mode_report(gmm: &GaussianMixture, samples: &[f64]) -> ModeReport {
    let dim = gmm.dim();
    assert!(
        !samples.is_empty() && samples.len().is_multiple_of(dim),
        "samples must be n · dim values"
    );
    let n = samples.len() / dim;
    let mut counts = vec![0usize; gmm.n_components()];
    for x in samples.chunks_exact(dim) {
        if let Some(k) = assign_mode(gmm, x) {
            counts[k] += 1;
        }
    }
    let inside = mass_within_3_std(dim);
    let per_mode_mass: Vec<f64> = counts.iter().map(|c| *c as f64 / n as f64).collect();
    let expected_mass: Vec<f64> = gmm.weights().iter().map(|w| w * inside).collect();
    let modes_covered = per_mode_mass
        .iter()
        .zip(&expected_mass)
        .filter(|(o, e)| **o >= 0.5 * **e)
        .count();
    ModeReport {
        modes_covered,
        modes_total: gmm.n_components(),
        per_mode_mass,
        expected_mass,
    }
}

/// Mean clean log-density `(1/n) Σ_i log p(x_i)` of the samples under the mixture.
///
/// # Panics
/// As [`mode_report`].
pub fn mean_log_density(gmm: &GaussianMixture, samples: &[f64]) -> f64 {
    let dim = gmm.dim();
    assert!(
        !samples.is_empty() && samples.len().is_multiple_of(dim),
        "samples must be n · dim values"
    );
    let n = samples.len() / dim;
    samples
        .chunks_exact(dim)
        .map(|x| gmm.log_density(x, 0.0))
        .sum::<f64>()
        / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdistill_core::targets;

    fn gaussian_1d(n: usize, mean: f64, std: f64, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                mean + std * z
            })
            .collect::<Vec<f64>>()
    }

    /// Independent: one V-statistic per bandwidth with a single Gaussian kernel, averaged.
    #[test]
    fn bandwidth_mean_is_the_average_of_single_bandwidth_mmds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let x = targets::ring8_unbalanced().sample(120, &mut rng);
        let y = targets::grid25().sample(90, &mut rng);
        let single = |h: f64| {
            let k = |a: &[f64], b: &[f64]| {
                let d2: f64 = a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum();
                (-d2 / (2.0 * h * h)).exp()
            };
            let mean = |s: &[f64], t: &[f64]| {
                let mut tot = 0.0;
                for a in s.chunks(2) {
                    for b in t.chunks(2) {
                        tot += k(a, b);
                    }
                }
                tot / ((s.len() / 2) * (t.len() / 2)) as f64
            };
            mean(&x, &x) + mean(&y, &y) - 2.0 * mean(&x, &y)
        };
        let expect = MMD_BANDWIDTHS.iter().map(|h| single(*h)).sum::<f64>() / 5.0;
        let got = mmd2_bandwidth_mean(&x, &y, 2);
        assert!(expect > 0.01, "{expect}");
        assert!((got - expect).abs() < 1e-12, "{got} vs {expect}");
    }

    #[test]
    fn identical_sets_give_zero() {
        let x =
            targets::ring8_unbalanced().sample(300, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert!(mmd2(&x, &x, 2).abs() < 1e-12);
        assert!(energy_distance(&x, &x, 2).abs() < 1e-12);
        assert_eq!(sliced_wasserstein(&x, &x, 2), 0.0);
    }

    /// `E k_h(x, y)` for independent `x ~ N(a, s²)`, `y ~ N(b, t²)` in 1-D:
    /// `h / √(h² + s² + t²) · exp(−(a − b)² / (2(h² + s² + t²)))`.
    fn expected_rbf(a: f64, s: f64, b: f64, t: f64) -> f64 {
        MMD_BANDWIDTHS
            .iter()
            .map(|h| {
                let v = h * h + s * s + t * t;
                h / v.sqrt() * (-(a - b).powi(2) / (2.0 * v)).exp()
            })
            .sum()
    }

    #[test]
    fn mmd2_of_shifted_gaussians_matches_closed_form() {
        let (n, delta) = (2000, 1.0);
        let x = gaussian_1d(n, 0.0, 1.0, 11);
        let y = gaussian_1d(n, delta, 1.0, 12);
        let k0 = MMD_BANDWIDTHS.len() as f64;
        let exx = expected_rbf(0.0, 1.0, 0.0, 1.0);
        let exy = expected_rbf(0.0, 1.0, delta, 1.0);
        // Population MMD² plus the V-statistic bias 2 (k(0) − E k(x, x')) / n.
        let population = 2.0 * exx - 2.0 * exy;
        let expect = population + 2.0 * (k0 - exx) / n as f64;
        let got = mmd2(&x, &y, 1);
        assert!(population > 0.3, "{population}");
        assert!((got - expect).abs() < 0.1 * population, "{got} vs {expect}");
    }

    /// `E|Z|` for `Z ~ N(δ, v)`, by midpoint quadrature (independent of any closed form).
    fn mean_abs_normal(delta: f64, v: f64) -> f64 {
        let s = v.sqrt();
        let (lo, hi, steps) = (delta - 12.0 * s, delta + 12.0 * s, 200_000);
        let h = (hi - lo) / steps as f64;
        (0..steps)
            .map(|i| {
                let z = lo + (i as f64 + 0.5) * h;
                z.abs() * (-(z - delta).powi(2) / (2.0 * v)).exp()
            })
            .sum::<f64>()
            * h
            / (2.0 * std::f64::consts::PI * v).sqrt()
    }

    #[test]
    fn energy_distance_of_shifted_gaussians_matches_closed_form() {
        let (n, delta) = (2000, 1.5);
        let x = gaussian_1d(n, 0.0, 1.0, 21);
        let y = gaussian_1d(n, delta, 1.0, 22);
        // 2E|X − Y| − E|X − X'| − E|Y − Y'|; X − Y ~ N(−δ, 2); E|X − X'| = 2/√π,
        // times (1 − 1/n) for the V-statistic's zero diagonal.
        let population = 2.0 * mean_abs_normal(delta, 2.0) - 2.0 * mean_abs_normal(0.0, 2.0);
        let expect = population + 2.0 * mean_abs_normal(0.0, 2.0) / n as f64;
        assert!((mean_abs_normal(0.0, 2.0) - 2.0 / std::f64::consts::PI.sqrt()).abs() < 1e-9);
        let got = energy_distance(&x, &y, 1);
        assert!((got - expect).abs() < 0.1 * population, "{got} vs {expect}");
    }

    #[test]
    fn sliced_wasserstein_of_a_shifted_copy_is_exact() {
        // 1-D: W₂ of a shifted copy is the shift.
        let x = gaussian_1d(500, 0.0, 1.0, 31);
        let y: Vec<f64> = x.iter().map(|v| v + 0.7).collect();
        assert!((sliced_wasserstein(&x, &y, 1) - 0.7).abs() < 1e-12);
        // 2-D: every projection is shifted by θ·v, so SW₂² = mean_k (θ_k·v)².
        let x2 = targets::grid25().sample(400, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
        let v = [0.3, -1.1];
        let y2: Vec<f64> = x2
            .chunks(2)
            .flat_map(|p| [p[0] + v[0], p[1] + v[1]])
            .collect();
        let expect = sw_directions(2)
            .chunks(2)
            .map(|t| (t[0] * v[0] + t[1] * v[1]).powi(2))
            .sum::<f64>()
            / SW_DIRECTIONS as f64;
        let got = sliced_wasserstein(&x2, &y2, 2);
        assert!((got * got - expect).abs() < 1e-9, "{got} vs {expect}");
    }

    #[test]
    fn wasserstein_1d_handles_unequal_sizes() {
        // {0, 1} against {0, 0.5, 1}: quantile functions differ on (1/3, 1/2) by 0.5
        // and on (1/2, 2/3) by 0.5 → W₁ = 1/6 · 0.5 · 2 = 1/6.
        let w = wasserstein_1d_pow(&mut [1.0, 0.0], &mut [0.5, 0.0, 1.0], 1.0);
        assert!((w - 1.0 / 6.0).abs() < 1e-12, "{w}");
    }

    #[test]
    fn mass_within_3_std_matches_closed_forms() {
        assert!((mass_within_3_std(1) - 0.997_300_203_936_739_8).abs() < 1e-15);
        assert!((mass_within_3_std(2) - (1.0 - (-4.5f64).exp())).abs() < 1e-15);
        // d = 3: erf(3/√2) − √(2/π) · 3 · e^{−9/2}.
        let d3 =
            0.997_300_203_936_739_8 - (2.0 / std::f64::consts::PI).sqrt() * 3.0 * (-4.5f64).exp();
        assert!((mass_within_3_std(3) - d3).abs() < 1e-14);
        assert!(mass_within_3_std(4) < mass_within_3_std(3));
    }

    /// The 2-D points of `x` whose component (from `sample_with_components`) is not `k`.
    fn without_component(x: &[f64], comps: &[usize], k: usize) -> Vec<f64> {
        x.chunks(2)
            .zip(comps)
            .filter(|(_, c)| **c != k)
            .flat_map(|(p, _)| p.to_vec())
            .collect()
    }

    #[test]
    fn exact_samples_cover_all_modes_and_a_dropped_mode_is_detected() {
        let g = targets::ring8_unbalanced();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (x, comps) = g.sample_with_components(20_000, &mut rng);
        let r = mode_report(&g, &x);
        assert_eq!((r.modes_covered, r.modes_total), (8, 8));
        for (o, e) in r.per_mode_mass.iter().zip(&r.expected_mass) {
            assert!((o - e).abs() < 0.01, "{o} vs {e}");
        }
        // Drop mode 7 (weight 0.02): 7/8.
        let kept = without_component(&x, &comps, 7);
        let exact_error = mode_report(&g, &x).mass_error();
        assert!(exact_error < 0.02, "{exact_error}");
        let r = mode_report(&g, &kept);
        assert_eq!(r.modes_covered, 7);
        assert_eq!(r.per_mode_mass[7], 0.0);
        // Mode 7's 2 % is missing and spread over the others in proportion: the error is its
        // expected share on mode 7 plus the same total excess on the rest, ≈ 2 × 0.02 × 0.989.
        let inside = mass_within_3_std(2);
        let dropped = mass_within_3_std(2) * 0.02;
        assert!((r.expected_mass[7] - dropped).abs() < 1e-12);
        let error = r.mass_error();
        // the exact samples' own sampling error moves it by at most about as much again
        assert!(
            (error - 2.0 * 0.02 * inside).abs() <= exact_error + 0.005,
            "{error} vs {} ± {exact_error}",
            2.0 * 0.02 * inside
        );
        // Mean log-density of exact samples ≈ −entropy; points far away are much lower.
        let lp = mean_log_density(&g, &x);
        let far: Vec<f64> = vec![0.0; 200];
        assert!(lp > mean_log_density(&g, &far) + 10.0, "{lp}");
    }

    #[test]
    fn worst_mode_ratio_and_off_mode_mass_match_exact_and_constructed_samples() {
        let g = targets::ring8_unbalanced();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let n = 40_000;
        let (x, comps) = g.sample_with_components(n, &mut rng);
        let r = mode_report(&g, &x);
        // ring8's 3-std balls (radius 0.75) are 3.06 apart: off-mode mass is e^{-9/2}, to 4
        // binomial standard errors
        let p = 1.0 - mass_within_3_std(2);
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (r.off_mode_mass() - p).abs() < 4.0 * se,
            "{} vs {p}",
            r.off_mode_mass()
        );
        // the lightest mode (2 %, 800 samples) holds its share to within ~4 standard errors
        let w = r.worst_mode_ratio();
        assert!((0.85..=1.15).contains(&w), "{w}");
        // a dropped mode: ratio 0, and the count agrees (covered ⇔ ratio ≥ ½)
        let kept = without_component(&x, &comps, 7);
        let r = mode_report(&g, &kept);
        assert_eq!(r.worst_mode_ratio(), 0.0);
        assert!(r.worst_mode_ratio() < 0.5 && r.modes_covered < r.modes_total);
        // points midway between modes 0 and 1 are on no mode
        let mid = [2.0 + 2.0 * 0.5f64.sqrt(), 2.0 * 0.5f64.sqrt()];
        let bridge: Vec<f64> = (0..100).flat_map(|_| mid).collect();
        assert_eq!(mode_report(&g, &bridge).off_mode_mass(), 1.0);
        // a constructed report: ratios 0.6 and 0.4
        let r = ModeReport {
            modes_covered: 1,
            modes_total: 2,
            per_mode_mass: vec![0.3, 0.004],
            expected_mass: vec![0.5, 0.01],
        };
        assert!((r.worst_mode_ratio() - 0.4).abs() < 1e-15);
        assert!((r.off_mode_mass() - 0.696).abs() < 1e-15);
    }

    #[test]
    fn mean_log_density_of_a_gaussian_is_minus_its_entropy() {
        let g = GaussianMixture::isotropic(vec![1.0], vec![vec![0.0]], vec![2.0]).unwrap();
        let x = gaussian_1d(50_000, 0.0, 2.0, 41);
        let entropy = 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * 4.0).ln();
        // std of log p(x) is 1/√2 for a Gaussian; 5 standard errors.
        assert!((mean_log_density(&g, &x) + entropy).abs() < 5.0 * 0.71 / 50_000f64.sqrt());
    }
}
