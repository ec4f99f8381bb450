//! The custom method learns (its loss falls), resumes exactly through the driver (the
//! straight and the resumed run write the same metrics bytes), and the printed summary is
//! pinned.

#[test]
fn summary_is_pinned() {
    let summary = custom_method::run(0);
    assert!(summary.resume_is_exact, "{summary}");
    assert!(
        summary.loss_first_last.1 < 0.5 * summary.loss_first_last.0,
        "regression did not learn: {summary}"
    );
    insta::assert_snapshot!(summary.to_string());
}
