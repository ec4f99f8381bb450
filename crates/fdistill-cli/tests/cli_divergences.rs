//! End-to-end tests of `fdistill divergences`.

use std::process::Command;

use serde_json::Value;

fn fdistill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args)
        .output()
        .expect("the fdistill binary runs")
}

const EXPECTED: [&str; 10] = [
    "alpha",
    "forward-kl",
    "jeffreys",
    "jensen-shannon",
    "neyman-chi2",
    "pearson-chi2",
    "reverse-kl",
    "softened-reverse-kl",
    "squared-hellinger",
    "triangular",
];

#[test]
fn json_listing_has_every_divergence_and_the_plugin_sorted() {
    let out = fdistill(&["divergences", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, EXPECTED);
    for o in v.as_array().unwrap() {
        assert!(o["summary"].is_string() && o["mode"].is_string(), "{o}");
    }
}

#[test]
fn table_lists_the_plugin() {
    let out = fdistill(&["divergences"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("NAME"));
    assert!(text.contains("triangular"));
}

#[test]
fn jensen_shannon_weight_is_the_sigmoid_of_the_log_ratio() {
    let out = fdistill(&[
        "divergences",
        "show",
        "jensen-shannon",
        "--log-ratio=-80,0,80",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "jensen-shannon");
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for p in points {
        let l = p["log_ratio"].as_f64().unwrap();
        let sigmoid = 1.0 / (1.0 + (-l).exp());
        let h = p["h"].as_f64().unwrap();
        assert!(
            (h - sigmoid).abs() <= 1e-12 * sigmoid.max(1e-300),
            "ℓ={l}: h={h}"
        );
        let log_h = p["log_h"].as_f64().unwrap();
        assert!((log_h - sigmoid.ln()).abs() < 1e-12, "ℓ={l}: log h={log_h}");
        for key in ["r", "f", "f_prime", "f_second"] {
            assert!(p[key].is_number(), "{key} missing at ℓ={l}");
        }
    }
}

#[test]
fn overflow_is_null_not_a_panic() {
    let out = fdistill(&[
        "divergences",
        "show",
        "pearson-chi2",
        "--log-ratio=800",
        "--json",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["points"][0]["h"].is_null());
    assert!(v["points"][0]["log_h"].is_number());
}

#[test]
fn unknown_name_exits_2_with_the_list() {
    let out = fdistill(&["divergences", "show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown divergence `nope`"), "{err}");
    for name in EXPECTED {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
}

#[test]
fn alpha_limits_point_to_the_named_divergences() {
    let out = fdistill(&["divergences", "show", "alpha:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("forward-kl")
    );
    let out = fdistill(&["divergences", "show", "alpha:0.5", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["label"], "alpha:0.5");
}

#[test]
fn threads_flag_is_accepted_and_zero_is_refused_with_the_fix() {
    let out = fdistill(&["--threads", "1", "divergences", "--json"]);
    assert!(out.status.success());
    let out = fdistill(&["divergences", "--threads", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--threads must be ≥ 1"), "{err}");
}
