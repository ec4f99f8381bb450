//! End-to-end: `teacher train` → `sample` → `eval` with a tiny configuration, and bad input
//! answered with exit code 2 and a message that names the problem.

use std::path::Path;
use std::process::{Command, Output};

fn fdistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit code 2, no panic, and that stderr contains `needle`.
fn assert_usage_error(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
}

const TINY: &str = r#"{"teacher": {"batch_size": 64, "checkpoint_every": 10, "log_every": 5},
                      "net": {"hidden": 16, "depth": 2, "embedding_size": 8}}"#;

fn train_tiny(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("tiny.json");
    std::fs::write(&cfg, TINY).unwrap();
    let run = dir.join("run");
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

#[test]
fn train_sample_eval_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_tiny(dir.path());
    for f in [
        "config.json",
        "metrics.jsonl",
        "checkpoint/model.safetensors",
        "checkpoint/ema.safetensors",
        "checkpoint/state.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}"); // steps 5, 10, 15, 20
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 20);

    let out = dir.path().join("s.npy");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        run.to_str().unwrap(),
        "--n",
        "200",
        "--nfe",
        "7",
        "--out",
        out.to_str().unwrap(),
        "--plot",
        dir.path().join("s.png").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = image::open(dir.path().join("s.png")).expect("the scatter plot is a PNG");
    assert!(png.width() > 100 && png.height() > 100);
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        run.to_str().unwrap(),
        "--n",
        "10",
        "--out",
        out.to_str().unwrap(),
        "--plot",
        "plot.jpg",
    ]);
    assert_usage_error(&o, "use a .png file name");
    let o = fdistill(&[
        "eval",
        "--samples",
        out.to_str().unwrap(),
        "--target",
        "ring8-unbalanced",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "modes_covered",
        "modes_total",
        "per_mode_mass",
        "mean_log_density",
        "mmd2",
        "energy_distance",
        "sliced_wasserstein",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["modes_total"], 8);
    assert_eq!(v["per_mode_mass"].as_array().unwrap().len(), 8);

    // Euler to CSV, then eval against a reference file: only the distances apply.
    let csv = dir.path().join("s.csv");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        run.to_str().unwrap(),
        "--n",
        "100",
        "--nfe",
        "4",
        "--sampler",
        "euler",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fdistill(&[
        "eval",
        "--samples",
        csv.to_str().unwrap(),
        "--reference",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v.get("modes_covered").is_none() && v["mmd2"].as_f64().unwrap() >= 0.0,
        "{v}"
    );

    // --dry-run prints the resolved config and trains nothing.
    let dry = dir.path().join("dry");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "two-moons",
        "--out",
        dry.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["net"]["dim"], 2);
    assert!(!dry.exists());

    // Bad input on an existing run.
    let r = run.to_str().unwrap();
    let s = out.to_str().unwrap();
    assert_usage_error(
        &fdistill(&[
            "sample",
            "--checkpoint",
            r,
            "--n",
            "5",
            "--nfe",
            "1",
            "--out",
            s,
        ]),
        "odd number ≥ 3",
    );
    assert_usage_error(
        &fdistill(&[
            "sample",
            "--checkpoint",
            r,
            "--n",
            "5",
            "--sigma-min",
            "0",
            "--out",
            s,
        ]),
        "0 < σ_min < σ_max",
    );
    assert_usage_error(
        &fdistill(&[
            "sample",
            "--checkpoint",
            r,
            "--n",
            "5",
            "--sampler",
            "euler",
            "--nfe",
            "1",
            "--out",
            s,
        ]),
        "use ≥ 2",
    );
    // A checkpoint whose config names a different data dimension.
    let cfg_path = run.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, text.replace("\"dim\": 2", "\"dim\": 3")).unwrap();
    assert_usage_error(
        &fdistill(&["sample", "--checkpoint", r, "--n", "5", "--out", s]),
        "tensor 'input.weight': checkpoint has [2, 16], model expects [3, 16]",
    );
    std::fs::write(&cfg_path, text).unwrap();
    // A truncated checkpoint.
    let ema = run.join("checkpoint/ema.safetensors");
    let bytes = std::fs::read(&ema).unwrap();
    std::fs::write(&ema, &bytes[..bytes.len() / 3]).unwrap();
    assert_usage_error(
        &fdistill(&["sample", "--checkpoint", r, "--n", "5", "--out", s]),
        "truncated",
    );
}

#[test]
fn bad_input_exits_2_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    assert_usage_error(
        &fdistill(&["teacher", "train", "--data", "ring9", "--out", o]),
        "unknown target `ring9`",
    );
    assert!(!out.exists(), "nothing is created for bad input");
    assert_usage_error(
        &fdistill(&[
            "teacher",
            "train",
            "--data",
            "ring8-unbalanced",
            "--out",
            o,
            "--steps",
            "0",
        ]),
        "steps (0)",
    );
    let cfg = dir.path().join("bad.json");
    std::fs::write(&cfg, r#"{"net": {"sigma_data": -1}}"#).unwrap();
    assert_usage_error(
        &fdistill(&[
            "teacher",
            "train",
            "--data",
            "ring8-unbalanced",
            "--out",
            o,
            "--config",
            cfg.to_str().unwrap(),
        ]),
        "sigma_data",
    );
    let ragged = dir.path().join("ragged.csv");
    std::fs::write(&ragged, "1,2\n3\n").unwrap();
    assert_usage_error(
        &fdistill(&[
            "teacher",
            "train",
            "--data",
            ragged.to_str().unwrap(),
            "--out",
            o,
        ]),
        "line 2",
    );
    assert!(!out.exists());
    // Missing checkpoint, unknown eval target, dimension mismatch in eval.
    let s = dir.path().join("s.csv");
    assert_usage_error(
        &fdistill(&[
            "sample",
            "--checkpoint",
            o,
            "--n",
            "5",
            "--out",
            s.to_str().unwrap(),
        ]),
        "does not exist",
    );
    std::fs::write(&s, "1,2,3\n4,5,6\n").unwrap();
    let sp = s.to_str().unwrap();
    assert_usage_error(
        &fdistill(&["eval", "--samples", sp, "--target", "ring9"]),
        "unknown target `ring9`",
    );
    assert_usage_error(
        &fdistill(&["eval", "--samples", sp, "--target", "ring8-unbalanced"]),
        "dimension 3 but target `ring8-unbalanced` has dimension 2",
    );
    assert_usage_error(
        &fdistill(&[
            "teacher", "train", "--data", "grid25", "--out", o, "--device", "tpu",
        ]),
        "unknown device",
    );
}
