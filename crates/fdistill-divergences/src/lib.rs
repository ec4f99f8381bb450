//! # fdistill-divergences
//!
//! The built-in f-divergences, one file each, registered through the same `inventory` path
//! a plugin uses (SPEC §1.1). Resolve them by name with [`fdistill_divergence::registry::resolve`].
//!
//! ```
//! fdistill_divergences::link(); // make sure the registrations are linked
//! let js = fdistill_divergence::registry::resolve("jensen-shannon").unwrap();
//! assert!((js.h(1.0) - 0.5).abs() < 1e-12); // h(r) = r/(r+1)
//! let a = fdistill_divergence::registry::resolve("alpha:0.5").unwrap(); // a family member
//! assert!((a.h(4.0) - 2.0).abs() < 1e-12); // h(r) = r^α
//! ```

#![warn(missing_docs)]

mod alpha;
mod forward_kl;
mod jeffreys;
mod jensen_shannon;
mod neyman_chi2;
mod pearson_chi2;
mod reverse_kl;
mod softened_reverse_kl;
mod squared_hellinger;

pub use alpha::Alpha;
pub use forward_kl::ForwardKl;
pub use jeffreys::Jeffreys;
pub use jensen_shannon::JensenShannon;
pub use neyman_chi2::NeymanChi2;
pub use pearson_chi2::PearsonChi2;
pub use reverse_kl::ReverseKl;
pub use softened_reverse_kl::SoftenedReverseKl;
pub use squared_hellinger::SquaredHellinger;

/// The registry names of the built-ins, sorted.
pub const BUILT_IN_NAMES: [&str; 9] = [
    "alpha",
    "forward-kl",
    "jeffreys",
    "jensen-shannon",
    "neyman-chi2",
    "pearson-chi2",
    "reverse-kl",
    "softened-reverse-kl",
    "squared-hellinger",
];

/// Call from a binary to make sure this crate is linked (its registrations then exist).
pub fn link() {}

#[cfg(test)]
mod tests {
    use fdistill_divergence::registry;

    #[test]
    fn every_built_in_name_resolves() {
        let names = registry::global().names();
        for name in crate::BUILT_IN_NAMES {
            assert!(names.contains(&name), "{name} is not registered");
            let spec = if name == "alpha" { "alpha:0.5" } else { name };
            assert_eq!(registry::resolve(spec).unwrap().name(), name);
        }
        registry::global().check().unwrap();
    }

    #[test]
    fn listing_is_sorted() {
        let list = registry::list().unwrap();
        let names: Vec<&str> = list.iter().map(|i| i.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    /// `h` at two ratios against SPEC §1.1's table, computed by hand.
    #[test]
    fn h_matches_the_spec_table() {
        let cases: [(&str, f64, f64); 16] = [
            ("reverse-kl", 0.5, 1.0),
            ("reverse-kl", 4.0, 1.0),
            ("softened-reverse-kl", 0.5, 2.0 / 3.0),
            ("softened-reverse-kl", 4.0, 0.2),
            ("jensen-shannon", 0.5, 1.0 / 3.0),
            ("jensen-shannon", 4.0, 0.8),
            ("squared-hellinger", 4.0, 0.5),
            ("squared-hellinger", 0.25, 0.125),
            ("forward-kl", 0.5, 0.5),
            ("forward-kl", 4.0, 4.0),
            ("jeffreys", 0.5, 1.5),
            ("jeffreys", 4.0, 5.0),
            ("pearson-chi2", 0.5, 0.5),
            ("pearson-chi2", 4.0, 32.0),
            ("neyman-chi2", 0.5, 4.0),
            ("neyman-chi2", 4.0, 0.5),
        ];
        for (name, r, expect) in cases {
            let d = registry::resolve(name).unwrap();
            assert!(
                (d.h(r) - expect).abs() < 1e-12,
                "{name}: h({r}) = {}",
                d.h(r)
            );
        }
    }

    /// `D_f(p‖q) = ∫ q f(p/q)` by quadrature for `p = N(μ, 1)`, `q = N(0, 1)` against the
    /// closed forms: KL = μ²/2 both ways, Jeffreys μ², Pearson and Neyman χ² `e^{μ²} − 1`,
    /// squared Hellinger `1 − e^{−μ²/8}`.
    #[test]
    fn divergence_values_match_gaussian_closed_forms() {
        let mu: f64 = 0.7;
        let closed: [(&str, f64); 6] = [
            ("forward-kl", mu * mu / 2.0),
            ("reverse-kl", mu * mu / 2.0),
            ("jeffreys", mu * mu),
            ("pearson-chi2", (mu * mu).exp() - 1.0),
            ("neyman-chi2", (mu * mu).exp() - 1.0),
            ("squared-hellinger", 1.0 - (-mu * mu / 8.0).exp()),
        ];
        let pdf =
            |x: f64, m: f64| (-(x - m) * (x - m) / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let (lo, hi, n) = (-14.0, 14.0, 28_001);
        let dx = (hi - lo) / (n - 1) as f64;
        for (name, expect) in closed {
            let d = registry::resolve(name).unwrap();
            let mut total = 0.0;
            for i in 0..n {
                let x = lo + i as f64 * dx;
                let (p, q) = (pdf(x, mu), pdf(x, 0.0));
                let w = if i == 0 || i == n - 1 { 0.5 } else { 1.0 };
                total += w * q * d.f(p / q) * dx;
            }
            assert!(
                (total - expect).abs() < 1e-6,
                "{name}: quadrature {total}, closed form {expect}"
            );
        }
    }
}
