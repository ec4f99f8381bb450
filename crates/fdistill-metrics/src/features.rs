//! Offline image-quality metrics in a feature space (SPEC §8).
//!
//! All take feature sets as row-major `f64` slices with their dimension. The features come
//! from a classifier the project trains on the dataset — **not** Inception — so the Fréchet
//! number here is a "Fréchet distance in classifier features", never "FID".

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// Row `i` of a row-major set.
fn row(x: &[f64], dim: usize, i: usize) -> &[f64] {
    &x[i * dim..(i + 1) * dim]
}

fn n_rows(x: &[f64], dim: usize) -> usize {
    assert!(
        dim > 0 && x.len().is_multiple_of(dim),
        "feature set length {} is not a multiple of dim {dim}",
        x.len()
    );
    x.len() / dim
}

/// Sample mean and unbiased covariance (`1/(n−1)`) of a feature set.
pub fn mean_and_covariance(x: &[f64], dim: usize) -> (DVector<f64>, DMatrix<f64>) {
    let n = n_rows(x, dim);
    assert!(n >= 2, "need at least 2 samples for a covariance, got {n}");
    let m = DMatrix::from_row_slice(n, dim, x);
    let mu = m.row_mean().transpose();
    let centred = DMatrix::from_fn(n, dim, |i, j| m[(i, j)] - mu[j]);
    let cov = centred.transpose() * &centred / (n as f64 - 1.0);
    (mu, cov)
}

/// Square root of a symmetric positive semi-definite matrix by eigendecomposition,
/// `A^{1/2} = V diag(√max(λ, 0)) Vᵀ`. Eigenvalues below zero can only come from rounding
/// (|λ| ≲ 1e−12 ‖A‖); they are projected to 0, which is the nearest PSD matrix.
pub fn sqrtm_psd(a: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (a + a.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let d = DMatrix::from_diagonal(&eig.eigenvalues.map(|l| l.max(0.0).sqrt()));
    &eig.eigenvectors * d * eig.eigenvectors.transpose()
}

/// Fréchet distance between `N(μ₁, Σ₁)` and `N(μ₂, Σ₂)`:
///
/// $$ d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\Sigma_1 + \operatorname{Tr}\Sigma_2
///        - 2\operatorname{Tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}. $$
///
/// Computed in `f64` with the symmetric form `Σ₁^{1/2} Σ₂ Σ₁^{1/2}` (PSD, so its square root
/// is real and stable, unlike `sqrtm(Σ₁Σ₂)`).
pub fn frechet_distance(
    mu1: &DVector<f64>,
    s1: &DMatrix<f64>,
    mu2: &DVector<f64>,
    s2: &DMatrix<f64>,
) -> f64 {
    let r1 = sqrtm_psd(s1);
    let m = &r1 * s2 * &r1;
    let sym = (&m + m.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(sym)
        .eigenvalues
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    let diff = mu1 - mu2;
    diff.dot(&diff) + s1.trace() + s2.trace() - 2.0 * tr_sqrt
}

/// Fréchet distance between the Gaussian fits of two feature sets.
pub fn frechet_distance_of_sets(a: &[f64], b: &[f64], dim: usize) -> f64 {
    let (m1, s1) = mean_and_covariance(a, dim);
    let (m2, s2) = mean_and_covariance(b, dim);
    frechet_distance(&m1, &s1, &m2, &s2)
}

/// Cubic polynomial kernel of KID, `k(x, y) = (xᵀy / d + 1)³`.
fn cubic_kernel(x: &[f64], y: &[f64]) -> f64 {
    let d = x.len() as f64;
    let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    (dot / d + 1.0).powi(3)
}

/// Unbiased MMD² with the cubic kernel between two equal-size subsets.
fn mmd2_unbiased_cubic(a: &[&[f64]], b: &[&[f64]]) -> f64 {
    let m = a.len() as f64;
    let mut kxx = 0.0;
    let mut kyy = 0.0;
    let mut kxy = 0.0;
    for i in 0..a.len() {
        for j in 0..a.len() {
            if i != j {
                kxx += cubic_kernel(a[i], a[j]);
                kyy += cubic_kernel(b[i], b[j]);
            }
            kxy += cubic_kernel(a[i], b[j]);
        }
    }
    kxx / (m * (m - 1.0)) + kyy / (m * (m - 1.0)) - 2.0 * kxy / (m * m)
}

/// Kernel Inception-style distance in classifier features (KID; Bińkowski et al. 2018):
/// the unbiased MMD² with kernel `(xᵀy/d + 1)³`, averaged over `n_subsets` random subsets of
/// `subset_size` from each set (fixed `seed`). Returns `(mean, standard deviation)` over
/// subsets. Unbiased, so it can be slightly negative when the sets match.
pub fn kid(
    a: &[f64],
    b: &[f64],
    dim: usize,
    subset_size: usize,
    n_subsets: usize,
    seed: u64,
) -> (f64, f64) {
    let (na, nb) = (n_rows(a, dim), n_rows(b, dim));
    let m = subset_size.min(na).min(nb);
    assert!(
        m >= 2 && n_subsets >= 1,
        "KID needs subsets of at least 2 samples"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut ia: Vec<usize> = (0..na).collect();
    let mut ib: Vec<usize> = (0..nb).collect();
    let values: Vec<f64> = (0..n_subsets)
        .map(|_| {
            ia.shuffle(&mut rng);
            ib.shuffle(&mut rng);
            let sa: Vec<&[f64]> = ia[..m].iter().map(|&i| row(a, dim, i)).collect();
            let sb: Vec<&[f64]> = ib[..m].iter().map(|&i| row(b, dim, i)).collect();
            mmd2_unbiased_cubic(&sa, &sb)
        })
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>()
        / values.len().max(2).saturating_sub(1) as f64;
    (mean, var.sqrt())
}

fn sq_dist(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// Squared distance from each point of `x` to its `k`-th nearest neighbour in `x` (itself
/// excluded).
fn kth_nn_sq_radius(x: &[f64], dim: usize, k: usize) -> Vec<f64> {
    let n = n_rows(x, dim);
    assert!(n > k, "need more than k = {k} samples, got {n}");
    (0..n)
        .map(|i| {
            let mut d: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| sq_dist(row(x, dim, i), row(x, dim, j)))
                .collect();
            let (_, kth, _) = d.select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b));
            *kth
        })
        .collect()
}

/// How many of the balls `B(x_i, r_i)` contain `y`.
fn balls_containing(y: &[f64], centres: &[f64], dim: usize, sq_radii: &[f64]) -> usize {
    sq_radii
        .iter()
        .enumerate()
        .filter(|&(i, &r2)| sq_dist(y, row(centres, dim, i)) <= r2)
        .count()
}

/// Improved precision and recall (Kynkäänniemi et al. 2019) with `k`-NN manifolds:
/// precision = share of fake samples inside the real manifold (the union of balls around each
/// real sample with radius its `k`-th-NN distance); recall = share of real samples inside the
/// fake manifold. SPEC §8 uses `k = 3`.
pub fn precision_recall(real: &[f64], fake: &[f64], dim: usize, k: usize) -> (f64, f64) {
    let rr = kth_nn_sq_radius(real, dim, k);
    let rf = kth_nn_sq_radius(fake, dim, k);
    let (nr, nf) = (n_rows(real, dim), n_rows(fake, dim));
    let precision = (0..nf)
        .filter(|&j| balls_containing(row(fake, dim, j), real, dim, &rr) > 0)
        .count() as f64
        / nf as f64;
    let recall = (0..nr)
        .filter(|&i| balls_containing(row(real, dim, i), fake, dim, &rf) > 0)
        .count() as f64
        / nr as f64;
    (precision, recall)
}

/// Density and coverage (Naeem et al. 2020) with `k`-NN balls around the real samples:
///
/// $$ \text{density} = \frac{1}{kM}\sum_{j=1}^{M}\sum_{i=1}^{N} \mathbb 1[Y_j \in B(X_i, \mathrm{NND}_k(X_i))],\qquad
///    \text{coverage} = \frac1N\sum_{i=1}^{N} \mathbb 1[\exists j: Y_j \in B(X_i, \mathrm{NND}_k(X_i))]. $$
///
/// SPEC §8 uses `k = 5`.
pub fn density_coverage(real: &[f64], fake: &[f64], dim: usize, k: usize) -> (f64, f64) {
    let rr = kth_nn_sq_radius(real, dim, k);
    let (nr, nf) = (n_rows(real, dim), n_rows(fake, dim));
    let mut hits = 0usize;
    let mut covered = vec![false; nr];
    for j in 0..nf {
        let y = row(fake, dim, j);
        for (i, (&r2, c)) in rr.iter().zip(covered.iter_mut()).enumerate() {
            if sq_dist(y, row(real, dim, i)) <= r2 {
                hits += 1;
                *c = true;
            }
        }
    }
    let density = hits as f64 / (k as f64 * nf as f64);
    let coverage = covered.iter().filter(|&&c| c).count() as f64 / nr as f64;
    (density, coverage)
}

/// Class histogram of predicted labels, as shares.
pub fn class_shares(labels: &[usize], n_classes: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n_classes];
    for &l in labels {
        assert!(
            l < n_classes,
            "label {l} out of range for {n_classes} classes"
        );
        counts[l] += 1;
    }
    counts
        .iter()
        .map(|&c| c as f64 / labels.len().max(1) as f64)
        .collect()
}

/// Share of classes holding at least half of their uniform share `1/C` of the predicted
/// labels (the image analogue of "modes covered").
pub fn class_coverage(labels: &[usize], n_classes: usize) -> f64 {
    let shares = class_shares(labels, n_classes);
    let threshold = 0.5 / n_classes as f64;
    shares.iter().filter(|&&s| s >= threshold).count() as f64 / n_classes as f64
}

/// `KL(p̂ ‖ uniform) = Σ_c p̂_c log(C p̂_c)` of the predicted-class histogram (0 when the
/// classes are balanced, `log C` when one class takes everything).
pub fn class_kl_to_uniform(labels: &[usize], n_classes: usize) -> f64 {
    class_shares(labels, n_classes)
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p * (p * n_classes as f64).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian_set(n: usize, dim: usize, shift: f64, scale: f64, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                shift + scale * z
            })
            .collect()
    }

    #[test]
    fn frechet_of_diagonal_gaussians_matches_closed_form() {
        // Diagonal covariances commute: d² = |Δμ|² + Σ (√a − √b)².
        let mu1 = DVector::from_vec(vec![0.0, 1.0, -2.0]);
        let mu2 = DVector::from_vec(vec![0.5, 1.0, 0.0]);
        let a: [f64; 3] = [1.0, 4.0, 0.25];
        let b: [f64; 3] = [2.0, 1.0, 0.25];
        let s1 = DMatrix::from_diagonal(&DVector::from_row_slice(&a));
        let s2 = DMatrix::from_diagonal(&DVector::from_row_slice(&b));
        let expect = 0.25
            + 4.0
            + a.iter()
                .zip(&b)
                .map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2))
                .sum::<f64>();
        assert!((frechet_distance(&mu1, &s1, &mu2, &s2) - expect).abs() < 1e-10);
    }

    #[test]
    fn frechet_of_non_commuting_2x2_matches_closed_form() {
        // For 2×2 PSD M: Tr √M = √(Tr M + 2√det M); M = Σ₁^{1/2} Σ₂ Σ₁^{1/2} has
        // Tr M = Tr(Σ₁Σ₂), det M = det Σ₁ det Σ₂.
        let s1 = DMatrix::from_row_slice(2, 2, &[2.0, 0.8, 0.8, 1.0]);
        let s2 = DMatrix::from_row_slice(2, 2, &[1.0, -0.3, -0.3, 0.5]);
        let tr = (&s1 * &s2).trace();
        let det = s1.determinant() * s2.determinant();
        let tr_sqrt = (tr + 2.0 * f64::sqrt(det)).sqrt();
        let expect = s1.trace() + s2.trace() - 2.0 * tr_sqrt;
        let zero = DVector::zeros(2);
        assert!((frechet_distance(&zero, &s1, &zero, &s2) - expect).abs() < 1e-10);
        assert!(frechet_distance(&zero, &s1, &zero, &s1).abs() < 1e-10);
    }

    #[test]
    fn frechet_of_sets_grows_with_shift_and_is_near_zero_for_the_same_law() {
        let a = gaussian_set(4000, 4, 0.0, 1.0, 1);
        let b = gaussian_set(4000, 4, 0.0, 1.0, 2);
        let c = gaussian_set(4000, 4, 1.0, 1.0, 3);
        let same = frechet_distance_of_sets(&a, &b, 4);
        let shifted = frechet_distance_of_sets(&a, &c, 4);
        assert!(same < 0.02, "{same}");
        assert!(
            (shifted - 4.0).abs() < 0.2,
            "shift 1 in 4 dims → ≈ 4, got {shifted}"
        );
    }

    #[test]
    fn kid_is_unbiased_near_zero_and_positive_under_shift() {
        let a = gaussian_set(600, 8, 0.0, 1.0, 4);
        let b = gaussian_set(600, 8, 0.0, 1.0, 5);
        let c = gaussian_set(600, 8, 0.5, 1.0, 6);
        let (same, sd) = kid(&a, &b, 8, 200, 20, 0);
        let (shift, _) = kid(&a, &c, 8, 200, 20, 0);
        assert!(same.abs() < 3.0 * sd.max(1e-3), "{same} ± {sd}");
        assert!(shift > 10.0 * sd.max(1e-3) && shift > same, "{shift}");
    }

    #[test]
    fn kid_subset_matches_a_direct_double_sum() {
        // One subset covering both whole sets: KID equals the unbiased MMD² written out.
        let a = [0.0, 1.0, 2.0];
        let b = [0.5, 1.5, 3.0];
        let (v, _) = kid(&a, &b, 1, 3, 1, 0);
        let k = |x: f64, y: f64| (x * y + 1.0).powi(3);
        let mut kxx = 0.0;
        let mut kyy = 0.0;
        let mut kxy = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    kxx += k(a[i], a[j]);
                    kyy += k(b[i], b[j]);
                }
                kxy += k(a[i], b[j]);
            }
        }
        let expect = kxx / 6.0 + kyy / 6.0 - 2.0 * kxy / 9.0;
        assert!((v - expect).abs() < 1e-9, "{v} vs {expect}");
    }

    #[test]
    fn precision_recall_density_coverage_on_hand_counted_sets() {
        // Real: 0,1,2,3,4 on a line; k = 1 → every radius is 1.
        let real = [0.0, 1.0, 2.0, 3.0, 4.0];
        // Fake: 0.5 (inside balls of 0 and 1), 10 (outside), 4.2 (inside ball of 4 and 3? |4.2−3| = 1.2 > 1: only 4).
        let fake = [0.5, 10.0, 4.2];
        let (p, _) = precision_recall(&real, &fake, 1, 1);
        assert!((p - 2.0 / 3.0).abs() < 1e-12);
        let (d, c) = density_coverage(&real, &fake, 1, 1);
        // Hits: 0.5 → 2 balls, 10 → 0, 4.2 → 1: density = 3 / (1 · 3) = 1.
        assert!((d - 1.0).abs() < 1e-12);
        // Covered real points: 0, 1, 4 → 3/5.
        assert!((c - 0.6).abs() < 1e-12);
        // Identical sets: everything inside.
        let (p, r) = precision_recall(&real, &real, 1, 3);
        assert_eq!((p, r), (1.0, 1.0));
        let (_, c) = density_coverage(&real, &real, 1, 3);
        assert_eq!(c, 1.0);
        // A far-away fake set: zero everywhere.
        let far: Vec<f64> = real.iter().map(|x| x + 100.0).collect();
        assert_eq!(precision_recall(&real, &far, 1, 3), (0.0, 0.0));
        assert_eq!(density_coverage(&real, &far, 1, 3), (0.0, 0.0));
    }

    #[test]
    fn class_histogram_metrics() {
        let balanced: Vec<usize> = (0..100).map(|i| i % 10).collect();
        assert_eq!(class_coverage(&balanced, 10), 1.0);
        assert!(class_kl_to_uniform(&balanced, 10).abs() < 1e-12);
        let collapsed = vec![3usize; 50];
        assert_eq!(class_coverage(&collapsed, 10), 0.1);
        assert!((class_kl_to_uniform(&collapsed, 10) - 10f64.ln()).abs() < 1e-12);
        // Two classes of four: p = (½, ½, 0, 0) → KL = log 2.
        let half = vec![0, 1, 0, 1];
        assert!((class_kl_to_uniform(&half, 4) - 2f64.ln()).abs() < 1e-12);
    }
}
