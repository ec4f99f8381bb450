//! A branch-free `exp` for `f32` that the compiler vectorises, for the logistic function
//! inside the CPU kernels ([`super::silu()`], [`super::group_norm()`]).
//!
//! Cody–Waite range reduction and the Cephes `expf` polynomial:
//!
//! $$ n = \operatorname{round}(x \log_2 e),\qquad r = x - n \ln 2 \in [-\tfrac{\ln 2}{2}, \tfrac{\ln 2}{2}],
//!    \qquad e^x = 2^n\\,\big(1 + r + r^2 P(r)\big), $$
//!
//! with `ln 2` split into a part exact in `f32` and a correction, `round` done by adding and
//! subtracting `1.5·2²³`, and `2ⁿ` built from its exponent bits. Relative error below
//! `3·10⁻⁷` (about 2 ulp) on `[-87, 88]`, tested against `f64::exp`.
//!
//! **Why.** libm's `expf` is a scalar call per element: on the MLP networks, whose SiLU is
//! burn-flex's `sigmoid` through `expf`, that call and its loop were 49 % of a toy teacher
//! step (`perf`, docs/performance.md). The loops that call [`exp`] have no branches and no
//! calls, so LLVM emits SIMD for them.
//!
//! **Range.** `x` is clamped to `[-87, 88]` before the reduction, so that `2ⁿ` stays a normal
//! number: below, the result is `e⁻⁸⁷ ≈ 1.6·10⁻³⁸` instead of something smaller; above,
//! `e⁸⁸ ≈ 1.7·10³⁸` instead of something larger or `+∞`. That is the right behaviour for the
//! logistic `1/(1 + e^{-x})` (an absolute error below `10⁻³⁸`), and why this is not a general
//! `exp`. `NaN` stays `NaN` (the clamp compares, it does not use `max`/`min`).

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2 = C1 + C2`, `C1` exact in 9 bits so that `n·C1` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5·2²³`: adding and subtracting it rounds to the nearest integer, and the sum's low
/// mantissa bits hold that integer.
const ROUND: f32 = 12_582_912.0;
const LO: f32 = -87.0;
const HI: f32 = 88.0;

/// `e^x` for `x ∈ [-87, 88]`, clamped outside (module docs); `NaN` in, `NaN` out.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // NaN fails both comparisons and passes through.
    let x = if x < LO { LO } else { x };
    let x = if x > HI { HI } else { x };
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001e-1, which is 0.5 in f32
    let e_r = p * r * r + r + 1.0;
    // t's bits are those of 1.5·2²³ plus n (|n| < 2²²): the exponent field of 2ⁿ is n + 127.
    let two_n = f32::from_bits(
        t.to_bits()
            .wrapping_sub(ROUND.to_bits())
            .wrapping_add(127)
            .wrapping_shl(23),
    );
    e_r * two_n
}

/// The logistic function `σ(x) = 1/(1 + e^{-x})` through [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel_err(got: f32, want: f64) -> f64 {
        ((got as f64 - want) / want).abs()
    }

    #[test]
    fn exp_is_within_2e_7_relative_of_f64_exp_on_its_range() {
        // 2·10⁶ points across [-87, 88], plus every power-of-two boundary region.
        let n = 2_000_000;
        let mut worst = (0.0f64, 0.0f32);
        for i in 0..=n {
            let x = LO + (HI - LO) * (i as f32 / n as f32);
            let e = rel_err(exp(x), (x as f64).exp());
            if e > worst.0 {
                worst = (e, x);
            }
        }
        for k in -125..=126 {
            let x0 = k as f32 * std::f32::consts::LN_2;
            for dx in [-1e-3f32, -1e-6, 0.0, 1e-6, 1e-3] {
                let x = x0 + dx;
                let e = rel_err(exp(x), (x as f64).exp());
                if e > worst.0 {
                    worst = (e, x);
                }
            }
        }
        assert!(
            worst.0 < 3e-7,
            "worst relative error {} at x = {}",
            worst.0,
            worst.1
        );
    }

    #[test]
    fn exp_clamps_outside_its_range_and_keeps_nan() {
        assert_eq!(exp(-1000.0), exp(LO));
        assert_eq!(exp(f32::NEG_INFINITY), exp(LO));
        assert_eq!(exp(1000.0), exp(HI));
        assert_eq!(exp(f32::INFINITY), exp(HI));
        assert!(exp(LO) > 0.0 && exp(LO).is_normal());
        assert!(exp(HI).is_finite());
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn sigmoid_matches_the_f64_logistic_everywhere() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.01; // [-200, 200]
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid(x) as f64;
            assert!(
                (got - want).abs() <= 3e-7 * want.max(1e-30) + 1e-38,
                "σ({x}) = {got}, want {want}"
            );
        }
        assert!(sigmoid(f32::NAN).is_nan());
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
    }
}
