//! Every rejection branch of `DistillConfig::check` through the binary: exit code 2 and a
//! message that names the field, for a `--config` holding one bad value each, before any
//! tensor exists (`--dry-run`, nothing written). Plus the `distill` CLI's own refusals:
//! `--resume` with `--config`/`--divergence`, a missing `--teacher`, `ratio = "exact"` on a
//! network student, an existing run without `--resume`, fewer `--steps` on resume, a
//! config.json whose discriminator heads do not fit its network.

use std::path::Path;
use std::process::{Command, Output};

fn fdistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .env_remove("FDISTILL_LOG")
        .env_remove("FDISTILL_PROGRESS_SECS")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[track_caller]
fn assert_usage_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    assert!(!e.contains("panicked"), "{e}");
    for needle in needles {
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
    }
}

fn tiny_teacher(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("teacher.json");
    std::fs::write(
        &cfg,
        r#"{"teacher": {"batch_size": 32, "checkpoint_every": 10, "log_every": 5},
            "net": {"hidden": 8, "depth": 1, "embedding_size": 8}}"#,
    )
    .unwrap();
    let run = dir.join("teacher");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "ring8-unbalanced",
        "--out",
        p(&run),
        "--steps",
        "2",
        "--config",
        p(&cfg),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    run
}

/// One bad value per branch of `DistillConfig::check` (and of the noise sampler it calls),
/// with what the message must say.
const CASES: &[(&str, &[&str])] = &[
    (r#"{"driver": {"steps": 0}}"#, &["driver.steps must be ≥ 1"]),
    (
        r#"{"driver": {"checkpoint_every": 0}}"#,
        &["driver.checkpoint_every"],
    ),
    (r#"{"driver": {"log_every": 0}}"#, &["driver.log_every"]),
    (
        r#"{"divergence": "no-such"}"#,
        &["unknown divergence `no-such`", "jensen-shannon"],
    ),
    (
        r#"{"batch_size": 1}"#,
        &["batch_size must be in [2, 65536]", "got 1"],
    ),
    (
        r#"{"batch_size": 70000}"#,
        &["batch_size must be in [2, 65536]", "got 70000"],
    ),
    (r#"{"critic_steps": 0}"#, &["critic_steps (K) must be ≥ 1"]),
    (
        r#"{"lambda_gan": -0.5}"#,
        &["lambda_gan must be ≥ 0, got -0.5"],
    ),
    (
        r#"{"divergence": "reverse-kl", "ratio": "none"}"#,
        &[
            "lambda_gan = 0.3 needs a discriminator",
            "ratio = \"discriminator\"",
        ],
    ),
    (
        r#"{"ratio": "none", "lambda_gan": 0.0}"#,
        &[
            "`jensen-shannon` weights samples by h(r)",
            "needs a density ratio",
        ],
    ),
    (
        r#"{"logit_clamp": 0.0}"#,
        &["logit_clamp must be > 0, got 0"],
    ),
    (
        r#"{"ratio_clip": [0.5, 0.9]}"#,
        &["ratio_clip must satisfy 0 < lo < 1 < hi", "[0.5, 0.9]"],
    ),
    (
        r#"{"ratio_clip": [0.0, 20.0]}"#,
        &["ratio_clip must satisfy 0 < lo < 1 < hi"],
    ),
    (
        r#"{"noise": {"type": "log-normal", "p_mean": -0.7, "p_std": 0.0}}"#,
        &["noise: log-normal needs a finite p_mean and p_std > 0"],
    ),
    (
        r#"{"noise": {"type": "karras-grid", "points": 2000000, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "lo": 0.0, "hi": 1.0}}"#,
        &["noise: a Karras grid of 2000000 points is larger than"],
    ),
    (
        r#"{"noise": {"type": "karras-grid", "points": 10, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "lo": 0.6, "hi": 0.2}}"#,
        &["noise: need 0 ≤ lo < hi ≤ 1", "lo = 0.6, hi = 0.2"],
    ),
    (
        r#"{"noise": {"type": "karras-grid", "points": 10, "sigma_min": 5.0, "sigma_max": 1.0, "rho": 7.0, "lo": 0.0, "hi": 1.0}}"#,
        &["noise: "],
    ),
    (
        r#"{"noise": {"type": "power", "sigma_min": 0.0, "sigma_max": 20.0, "pow": {"start": 0.1, "end": 2.0, "increment": 0.01, "period": 1000}}}"#,
        &["noise: the power law needs 0 < sigma_min < sigma_max"],
    ),
    (
        r#"{"noise": {"type": "power", "sigma_min": 0.1, "sigma_max": 20.0, "pow": {"start": 0.1, "end": 2.0, "increment": 0.01, "period": 0}}}"#,
        &["noise: the pow schedule needs increment ≥ 0 and period ≥ 1"],
    ),
    (
        r#"{"vardiu_weight": "sigma2"}"#,
        &[
            "vardiu_weight needs VarDiU's noise law",
            "noise.type = \"power\"",
        ],
    ),
    (
        r#"{"time_bins": {"bins": 0, "beta": 0.0}}"#,
        &["time_bins needs bins in [1, 10000]", "bins = 0"],
    ),
    (
        r#"{"time_bins": {"bins": 10, "beta": 1.0}}"#,
        &["time_bins needs", "beta = 1"],
    ),
    (r#"{"sigma_init": 0.0}"#, &["sigma_init must be > 0, got 0"]),
    (
        r#"{"lr_generator": 0.0}"#,
        &["lr_generator must be a positive number"],
    ),
    (
        r#"{"lr_fake_score": -1e-3}"#,
        &["lr_fake_score must be a positive number"],
    ),
    (
        r#"{"lr_discriminator": 0.0}"#,
        &["lr_discriminator must be a positive number"],
    ),
    (
        r#"{"weight_decay": -0.01}"#,
        &["weight_decay must be ≥ 0, got -0.01"],
    ),
    (
        r#"{"grad_clip_generator": 0.0}"#,
        &["grad_clip_generator must be > 0"],
    ),
    (
        r#"{"ema_beta": 1.0}"#,
        &["ema_beta must be in [0, 1), got 1"],
    ),
];

#[test]
fn every_config_rejection_exits_2_and_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = tiny_teacher(tmp.path());
    let out = tmp.path().join("student");
    let cfg = tmp.path().join("bad.json");
    // The base is valid: each case differs from it in one value.
    std::fs::write(&cfg, "{}").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["distill", "--teacher", p(&teacher), "--out", p(&out)];
        args.extend_from_slice(extra);
        fdistill(&args)
    };
    let o = run(&["--config", p(&cfg), "--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (json, needles) in CASES {
        std::fs::write(&cfg, json).unwrap();
        let o = run(&["--config", p(&cfg), "--dry-run"]);
        assert_usage_error(&o, needles);
    }
    assert!(!out.exists(), "a rejected config wrote nothing");

    // ratio = "exact" on a network student: refused with the reason.
    std::fs::write(&cfg, r#"{"ratio": "exact", "lambda_gan": 0.0}"#).unwrap();
    let o = run(&["--config", p(&cfg), "--dry-run"]);
    assert_usage_error(
        &o,
        &["ratio = \"exact\" needs a closed-form student density"],
    );

    // No --teacher.
    let o = fdistill(&["distill", "--out", p(&out), "--dry-run"]);
    assert_usage_error(&o, &["--teacher DIR is required"]);

    // A finished run: no --resume refuses, --resume with --config or --divergence refuses.
    std::fs::write(
        &cfg,
        r#"{"batch_size": 8, "driver": {"steps": 3, "checkpoint_every": 3, "log_every": 1}}"#,
    )
    .unwrap();
    let o = run(&["--config", p(&cfg)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["--config", p(&cfg)]);
    assert_usage_error(&o, &["--resume"]);
    for extra in [["--config", p(&cfg)], ["--divergence", "forward-kl"]] {
        let mut args = vec!["distill", "--out", p(&out), "--resume", "--steps", "6"];
        args.extend_from_slice(&extra);
        let o = fdistill(&args);
        assert_usage_error(&o, &["drop --config/--divergence"]);
    }
    // Fewer (or as many) --steps than the checkpoint on resume.
    let o = fdistill(&["distill", "--out", p(&out), "--resume", "--steps", "2"]);
    assert_usage_error(&o, &["at step 3", "larger --steps"]);

    // A config.json that pairs the MLP with convolutional heads (edited by hand): refused
    // with the fix before any step, the checkpoint untouched.
    let config_path = out.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert!(config["discriminator"]["taps"].is_array(), "{config}");
    config["discriminator"] = serde_json::json!({
        "taps": [{"channels": 8, "resolution": 4}],
        "width": 32
    });
    std::fs::write(&config_path, config.to_string()).unwrap();
    let driver = out.join("checkpoint/driver.json");
    let before = std::fs::read(&driver).unwrap();
    let o = fdistill(&["distill", "--out", p(&out), "--resume", "--steps", "6"]);
    assert_usage_error(
        &o,
        &[
            "pairs a MLP network with conv discriminator heads",
            "remove the `discriminator` entry",
        ],
    );
    assert_eq!(std::fs::read(&driver).unwrap(), before);
}
