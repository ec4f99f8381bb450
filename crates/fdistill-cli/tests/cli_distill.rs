//! End-to-end: `teacher train` → `distill` → `sample` with tiny configurations; presets
//! validate with the real registry; bad input is refused before any tensor exists.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fdistill::train::distill::DistillConfig;
use fdistill::train::distill::config::PRESETS;

fn fdistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tiny_teacher(dir: &Path) -> PathBuf {
    let cfg = dir.join("teacher.json");
    std::fs::write(
        &cfg,
        r#"{"teacher": {"batch_size": 64, "checkpoint_every": 10, "log_every": 5},
            "net": {"hidden": 16, "depth": 2, "embedding_size": 8}}"#,
    )
    .unwrap();
    let run = dir.join("teacher");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "ring8-unbalanced",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "20",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    run
}

const TINY_TOML: &str = r#"
batch_size = 32
[driver]
steps = 9
checkpoint_every = 3
log_every = 1
seed = 5
"#;

#[test]
fn every_preset_validates_with_the_builtin_divergences() {
    fdistill::link_registrations();
    fdistill_plugin_example::link();
    for name in PRESETS {
        let c = DistillConfig::preset(name).unwrap();
        c.clone().check().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Paper hyperparameters (SPEC §4).
    let c = DistillConfig::cifar10();
    assert_eq!(
        (c.batch_size, c.critic_steps, c.lambda_gan, c.lr_generator),
        (2048, 5, 1e-3, 1e-4)
    );
    let i = DistillConfig::imagenet64();
    assert_eq!(
        (i.batch_size, i.critic_steps, i.lambda_gan, i.lr_generator),
        (512, 5, 3e-3, 2e-6)
    );
    assert_eq!(i.time_bins.unwrap().beta, 0.5);
    let d = DistillConfig::dmd2_no_gan();
    assert_eq!((d.divergence.as_str(), d.lambda_gan), ("reverse-kl", 0.0));
    // JS without a ratio estimate is refused with the reason.
    let e = DistillConfig {
        divergence: "jensen-shannon".into(),
        ..DistillConfig::dmd2_no_gan()
    }
    .check()
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs a density ratio"), "{e}");
    // A plugin divergence resolves too.
    DistillConfig {
        divergence: "triangular".into(),
        ..DistillConfig::toy()
    }
    .check()
    .unwrap();
}

#[test]
fn distill_sample_and_resume_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_teacher(dir.path());
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, TINY_TOML).unwrap();
    let out = dir.path().join("student");
    let args = |steps: &str| {
        vec![
            "distill".to_string(),
            "--teacher".into(),
            teacher.to_str().unwrap().into(),
            "--divergence".into(),
            "jensen-shannon".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--config".into(),
            cfg.to_str().unwrap().into(),
            "--steps".into(),
            steps.into(),
        ]
    };
    // --dry-run prints the resolved config and writes nothing.
    let mut dry = args("9");
    dry.push("--dry-run".into());
    let o = fdistill(&dry.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed["distill"]["divergence"], "jensen-shannon");
    assert_eq!(printed["distill"]["batch_size"], 32);
    assert!(!out.exists());

    // 6 iterations, then resume to 9.
    let o = fdistill(&args("6").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fdistill(&[
        "distill",
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--steps",
        "9",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 9, "{lines}");
    for f in [
        "generator_ema.safetensors",
        "optim_generator.safetensors",
        "discriminator.safetensors",
        "driver.json",
    ] {
        assert!(out.join("checkpoint").join(f).is_file(), "{f}");
    }

    // One-step samples from the student.
    let s = dir.path().join("s.csv");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        out.to_str().unwrap(),
        "--n",
        "50",
        "--out",
        s.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("NFE 1"), "{}", stderr(&o));
    let rows = std::fs::read_to_string(&s).unwrap();
    // Exactly --n rows of two finite coordinates each, no header.
    let parsed: Vec<Vec<f64>> = rows
        .lines()
        .map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()).collect())
        .collect();
    assert_eq!(parsed.len(), 50, "{rows}");
    assert!(
        parsed
            .iter()
            .all(|r| r.len() == 2 && r.iter().all(|v| v.is_finite())),
        "{rows}"
    );
    // A student on ring8 (radius 4): samples are spread, not collapsed to one point.
    let spread = parsed
        .iter()
        .map(|r| (r[0] - parsed[0][0]).abs() + (r[1] - parsed[0][1]).abs())
        .fold(0.0, f64::max);
    assert!(spread > 0.1, "{rows}");
}

#[test]
fn bad_input_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_teacher(dir.path());
    let out = dir.path().join("s");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "distill",
            "--teacher",
            teacher.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        fdistill(&a)
    };
    let o = run(&["--divergence", "no-such"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("known divergences:") && stderr(&o).contains("jensen-shannon"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--preset", "cifar-10"]);
    assert!(stderr(&o).contains("known presets"), "{}", stderr(&o));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"lr_generatr": 1e-3}"#).unwrap();
    let o = run(&["--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lr_generatr"), "{}", stderr(&o));
    let o = run(&["--steps", "0"]);
    assert!(
        stderr(&o).contains("driver.steps must be ≥ 1"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("config.json").exists());
    let o = fdistill(&[
        "distill",
        "--out",
        dir.path().join("none").to_str().unwrap(),
        "--resume",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
