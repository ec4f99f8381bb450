//! `Divergence::mode()` against the asymptotics of `h` (issue 19, item 6). The label is a
//! claim about how `h(r)` weights regions the student misses (`r = p/q → ∞`) and regions it
//! over-covers (`r → 0`); this test measures both power-law exponents of every registered
//! divergence from `log_h` alone,
//!
//! `k₀ = lim_{ℓ→−∞} d log h/dℓ`,  `k∞ = lim_{ℓ→+∞} d log h/dℓ`  (`h ~ r^k`),
//!
//! and requires the label to follow from them:
//!
//! - `strongly-seeking` ⇔ `k₀ < 0`: `h` blows up where the student over-covers (Neyman χ²,
//!   α < 0), so those samples dominate and missing modes are dropped hardest;
//! - otherwise `covering` ⇔ `k∞ > ½`: `h` grows at least like `r^{½+}` into missing modes
//!   (forward KL, Jeffreys, Pearson χ², α > ½);
//! - otherwise `balanced` ⇔ `k∞ = ½` (squared Hellinger, α = ½), or `h` rises from 0 and
//!   saturates (`k₀ > 0`, `k∞ = 0`: Jensen–Shannon);
//! - otherwise `seeking`: `h` constant or decaying into missing modes (reverse KL, softened
//!   reverse KL, 0 < α < ½, and the triangular plugin: `h ≈ 8r²` as `r → 0` but `≈ 8/r` as
//!   `r → ∞`, so it ignores the modes the student has not found).

use fdistill::Divergence;
use fdistill::divergence::{ModeBehaviour, registry};

/// Exponent of `h ~ r^k` at `ℓ`, by a central difference of `log_h` over `ℓ ± 1`.
fn exponent(d: &dyn Divergence, l: f64) -> f64 {
    (d.log_h(l + 1.0) - d.log_h(l - 1.0)) / 2.0
}

/// The label the rule of the module docs derives from `(k₀, k∞)`.
fn derived(k0: f64, kinf: f64) -> ModeBehaviour {
    let tol = 1e-3;
    if k0 < -tol {
        ModeBehaviour::StronglySeeking
    } else if kinf > 0.5 + tol {
        ModeBehaviour::Covering
    } else if (kinf - 0.5).abs() <= tol || (k0 > tol && kinf.abs() <= tol) {
        ModeBehaviour::Balanced
    } else {
        ModeBehaviour::Seeking
    }
}

#[test]
fn mode_labels_follow_from_the_asymptotics_of_h() {
    fdistill::link_registrations();
    fdistill_plugin_example::link();
    let mut divs = Vec::new();
    for info in registry::list().unwrap() {
        if info.params.is_empty() {
            divs.push(registry::resolve(info.name).unwrap());
        } else {
            for a in ["-1", "-0.5", "0.25", "0.5", "0.75", "1.5", "2"] {
                divs.push(registry::resolve(&format!("{}:{a}", info.name)).unwrap());
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &divs {
        let (k0, kinf) = (exponent(d.as_ref(), -40.0), exponent(d.as_ref(), 40.0));
        let want = derived(k0, kinf);
        assert_eq!(
            d.mode(),
            want,
            "{}: labelled {} but h ~ r^{k0:.3} as r → 0 and r^{kinf:.3} as r → ∞ give {}",
            d.label(),
            d.mode(),
            want
        );
        seen.insert(want.label());
    }
    // Every label occurs, so each branch of the rule is exercised.
    assert_eq!(seen.len(), 4, "{seen:?}");
    // The rule itself on the closed forms it was written from.
    assert_eq!(derived(-1.0, -1.0), ModeBehaviour::StronglySeeking);
    assert_eq!(derived(0.0, 0.0), ModeBehaviour::Seeking);
    assert_eq!(derived(2.0, -1.0), ModeBehaviour::Seeking);
    assert_eq!(derived(1.0, 0.0), ModeBehaviour::Balanced);
    assert_eq!(derived(0.5, 0.5), ModeBehaviour::Balanced);
    assert_eq!(derived(0.0, 1.0), ModeBehaviour::Covering);
}
