//! The estimator recovers a closed-form log ratio, drives a distillation, and the printed
//! summary is pinned (seeded end to end).

#[test]
fn learnt_log_ratio_matches_the_closed_form() {
    // Independent check: logistic regression on quadratic features is exact for two
    // Gaussians; 600 Adam steps on 512-sample batches get within a few hundredths.
    let err = custom_ratio_estimator::check_against_closed_form(0);
    assert!(err < 0.1, "max |ℓ − ℓ*| = {err}");
}

#[test]
fn summary_is_pinned() {
    let summary = custom_ratio_estimator::run(0);
    assert!(summary.student.modes >= 4, "{summary}");
    insta::assert_snapshot!(summary.to_string());
}
