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
    train_ring8(dir, TINY, 20)
}

/// `teacher train` on ring8-unbalanced with `config` (JSON) for `steps` steps, into `dir/run`.
fn train_ring8(dir: &Path, config: &str, steps: u32) -> std::path::PathBuf {
    let cfg = dir.join("teacher.json");
    std::fs::write(&cfg, config).unwrap();
    let run = dir.join("run");
    let steps = steps.to_string();
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "ring8-unbalanced",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        &steps,
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
    let rows: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [5, 10, 15, 20], "one row every log_every steps");
    for r in &rows {
        // The EDM loss of an untrained denoiser is ≈ 1 (unit-variance target); a few steps
        // leave it of that order, positive and finite.
        let loss = r["loss"].as_f64().unwrap();
        assert!(loss > 0.0 && loss < 10.0, "{r}");
    }
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
    let samples = fdistill::data::load_npy(&out).unwrap();
    assert_eq!((samples.len(), samples.dim), (200, 2));
    assert!(samples.values.iter().all(|v| v.is_finite()));
    // --seed fixes the samples: the same seed gives the same bytes, another seed others.
    let with_seed = |seed: &str, file: &str| {
        let path = dir.path().join(file);
        let o = fdistill(&[
            "sample",
            "--checkpoint",
            run.to_str().unwrap(),
            "--n",
            "200",
            "--nfe",
            "7",
            "--seed",
            seed,
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(path).unwrap()
    };
    let seed0 = with_seed("0", "seed0.npy");
    assert_eq!(seed0, std::fs::read(&out).unwrap(), "0 is the default seed");
    assert_eq!(seed0, with_seed("0", "seed0-again.npy"));
    assert_ne!(seed0, with_seed("1", "seed1.npy"));
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
            "0",
            "--out",
            s,
        ]),
        "use ≥ 1",
    );
    // One Euler evaluation is allowed: the teacher's one-step prediction D(σ_max z).
    let one = fdistill(&[
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
    ]);
    assert!(
        one.status.success(),
        "euler --nfe 1 failed: {}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert!(String::from_utf8_lossy(&one.stderr).contains("Euler, 1 NFE"));
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

/// A seeded 300-step run on ring8 (batch 256, lr 10⁻², width 32) logs every step, numbered
/// 1..=300, and its loss falls: the mean of the last 20 steps is below 0.85× the mean of the
/// first 20 (runs give ≈ 0.75; a teacher that does not learn stays at ≈ 1).
#[test]
fn a_seeded_teacher_run_logs_every_step_and_its_loss_falls() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_ring8(
        dir.path(),
        r#"{"teacher": {"batch_size": 256, "checkpoint_every": 100, "log_every": 1, "lr": 1e-2,
                        "seed": 2},
            "net": {"hidden": 32, "depth": 2, "embedding_size": 8}}"#,
        300,
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=300).collect::<Vec<u64>>());
    let loss: Vec<f64> = rows.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    let first = loss[..20].iter().sum::<f64>() / 20.0;
    let last = loss[280..].iter().sum::<f64>() / 20.0;
    assert!(
        (0.8..1.2).contains(&first),
        "an untrained EDM denoiser's loss is ≈ 1: {first}"
    );
    assert!(
        last < 0.85 * first,
        "the loss did not fall: {first} → {last}"
    );
}

/// `eval` by value: 1000 exact ring8 samples cover all 8 modes with each mode's share ≈
/// its weight × P(‖z‖ ≤ 3) = π_k (1 − e^{−9/2}) and a small MMD²; every sample on mode 0's mean
/// covers mode 0 only, with share 1, the log-density of that point, and a far larger MMD².
#[test]
fn eval_reports_coverage_masses_and_distances_by_value() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let g = fdistill::core::targets::ring8_unbalanced();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
    let exact = g.sample(1000, &mut rng);
    let write = |name: &str, values: &[f64]| {
        let path = dir.path().join(name);
        let text: String = values
            .chunks(2)
            .map(|r| format!("{},{}\n", r[0], r[1]))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let eval = |path: &Path| {
        let o = fdistill(&[
            "eval",
            "--samples",
            path.to_str().unwrap(),
            "--target",
            "ring8-unbalanced",
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let v = eval(&write("exact.csv", &exact));
    assert_eq!(v["modes_covered"], 8, "{v}");
    let within = 1.0 - (-4.5f64).exp();
    for (k, (m, w)) in v["per_mode_mass"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g.weights())
        .enumerate()
    {
        let m = m.as_f64().unwrap();
        // 1000 samples: the binomial std is ≤ 0.016, so 0.05 is over 3 std.
        assert!(
            (m - w * within).abs() < 0.05,
            "mode {k}: {m} vs {}",
            w * within
        );
    }
    // In all, the share within 3 std of some mode: 1 − e^{−9/2} (binomial std 0.0033).
    let total: f64 = v["per_mode_mass"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .sum();
    assert!((total - within).abs() < 0.01, "{total} vs {within}");
    for (e, w) in v["per_mode_expected"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g.weights())
    {
        assert!((e.as_f64().unwrap() - w * within).abs() < 1e-12, "{v}");
    }
    let mmd_exact = v["mmd2"].as_f64().unwrap();
    // Two 1000-point sets of one mixture: MMD² is the estimator's bias, ≈ 0.007 here.
    assert!(mmd_exact.abs() < 0.02, "{v}");

    let mode0 = g.means()[0].clone();
    let collapsed: Vec<f64> = (0..1000).flat_map(|_| mode0.clone()).collect();
    let c = eval(&write("collapsed.csv", &collapsed));
    assert_eq!(c["modes_covered"], 1, "{c}");
    let masses: Vec<f64> = c["per_mode_mass"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    assert_eq!(masses[0], 1.0, "{c}");
    assert!(masses[1..].iter().all(|&m| m == 0.0), "{c}");
    let log_p = g.log_density(&mode0, 0.0);
    let got = c["mean_log_density"].as_f64().unwrap();
    assert!((got - log_p).abs() < 1e-6 * log_p.abs(), "{got} vs {log_p}");
    let mmd_collapsed = c["mmd2"].as_f64().unwrap();
    assert!(
        mmd_collapsed > 0.1 && mmd_collapsed > 50.0 * mmd_exact.abs(),
        "{mmd_collapsed} vs {mmd_exact}"
    );
    for key in ["energy_distance", "sliced_wasserstein"] {
        let (e, c) = (v[key].as_f64().unwrap(), c[key].as_f64().unwrap());
        assert!(c > 10.0 * e.abs(), "{key}: collapsed {c} vs exact {e}");
    }
}
