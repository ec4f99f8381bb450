//! End-to-end: `fdistill distill --method vardiu` on the analytic MoG-40 teacher and on a
//! tiny MLP teacher run, `--dry-run`, `--resume`, then `sample` and `eval` on its run
//! directory; bad input exits 2 with the fix in the message.

use std::path::{Path, PathBuf};
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// VarDiuConfig overrides for a tiny run.
fn tiny_config(dir: &Path) -> PathBuf {
    let path = dir.join("vardiu.json");
    std::fs::write(
        &path,
        r#"{"batch_size": 16, "lr_generator": 1e-3, "lr_posterior": 1e-3,
            "driver": {"checkpoint_every": 3, "log_every": 1, "seed": 4}}"#,
    )
    .unwrap();
    path
}

fn metric_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn dry_run_states_the_noise_range_and_its_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = fdistill(&[
        "distill",
        "--method",
        "vardiu",
        "--target",
        "mog40",
        "--out",
        p(&out),
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("from the data's scale"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["kind"], "student");
    assert_eq!(v["method"], "vardiu");
    assert_eq!(v["teacher"]["type"], "analytic");
    // σ_max = σ_data (MoG-40's std ≈ 23), σ_min = σ_max/200, σ_init = 4σ_max.
    let sigma_data = v["net"]["sigma_data"].as_f64().unwrap();
    assert!((20.0..26.0).contains(&sigma_data), "{sigma_data}");
    assert_eq!(v["vardiu"]["sigma_max"].as_f64().unwrap(), sigma_data);
    assert_eq!(
        v["vardiu"]["sigma_min"].as_f64().unwrap(),
        sigma_data / 200.0
    );
    assert_eq!(
        v["vardiu"]["sigma_init"].as_f64().unwrap(),
        4.0 * sigma_data
    );
    assert_eq!(v["vardiu"]["weight"], "sigma2");
    // The fresh generator and the posterior: the library's MLP, 128 × 3.
    for net in ["net", "posterior"] {
        assert_eq!(
            (v[net]["hidden"].as_u64(), v[net]["depth"].as_u64()),
            (Some(128), Some(3)),
            "{net}"
        );
    }
    assert!(!out.exists(), "a dry run writes nothing");
    // --hidden/--depth size both (with --target only).
    let sized = |extra: &[&str]| {
        let mut a = vec![
            "distill",
            "--method",
            "vardiu",
            "--out",
            p(&out),
            "--dry-run",
        ];
        a.extend_from_slice(extra);
        fdistill(&a)
    };
    let o = sized(&["--target", "mog40", "--hidden", "256", "--depth", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for net in ["net", "posterior"] {
        assert_eq!(
            (v[net]["hidden"].as_u64(), v[net]["depth"].as_u64()),
            (Some(256), Some(4)),
            "{net}"
        );
    }
    let o = sized(&["--target", "mog40", "--hidden", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("hidden (0)"), "{}", stderr(&o));
    let o = sized(&["--teacher", p(&out), "--hidden", "128"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--target"), "{}", stderr(&o));

    // The reference preset keeps its own range.
    let o = fdistill(&[
        "distill",
        "--method",
        "vardiu",
        "--target",
        "mog40",
        "--preset",
        "mog40-reference",
        "--out",
        p(&out),
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["vardiu"]["sigma_min"], 0.1);
    assert_eq!(v["vardiu"]["sigma_max"], 20.0);
    assert_eq!(v["vardiu"]["batch_size"], 1024);
    assert_eq!(v["vardiu"]["pow"]["period"], 1000);
    assert!(!stderr(&o).contains("from the data's scale"));
}

#[test]
fn analytic_teacher_run_resumes_samples_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = tiny_config(tmp.path());
    let analytic = |steps: &str, out: &std::path::Path| {
        let o = fdistill(&[
            "distill",
            "--method",
            "vardiu",
            "--target",
            "mog40",
            "--config",
            p(&cfg),
            "--steps",
            steps,
            "--out",
            p(out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = analytic("6", &run);
    assert!(
        stderr(&o).contains("VarDiU: 6 generator updates"),
        "{}",
        stderr(&o)
    );
    assert_eq!(metric_lines(&run), 6);
    assert!(run.join("checkpoint/generator_ema.safetensors").is_file());
    assert!(run.join("checkpoint/posterior.safetensors").is_file());
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(first["neg_log_q"].as_f64().unwrap().is_finite());

    // A second start on the same directory is refused; --resume (without --method) extends.
    let o = fdistill(&[
        "distill",
        "--method",
        "vardiu",
        "--target",
        "mog40",
        "--out",
        p(&run),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = fdistill(&["distill", "--out", p(&run), "--resume", "--steps", "9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("(7 → 9)"), "{}", stderr(&o));
    assert_eq!(metric_lines(&run), 9);
    // Exact resume: 6 + 3 steps write the same metrics bytes (no wall times in them) and the
    // same weights as 9 steps at once.
    let straight = tmp.path().join("straight");
    analytic("9", &straight);
    let bytes = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert!(
        bytes(&run, "metrics.jsonl") == bytes(&straight, "metrics.jsonl"),
        "metrics.jsonl differs between 6 + 3 steps and 9 at once"
    );
    for f in ["generator.safetensors", "posterior.safetensors"] {
        let f = format!("checkpoint/{f}");
        assert!(bytes(&run, &f) == bytes(&straight, &f), "{f} differs");
    }
    assert!(run.join("timing.jsonl").is_file());

    // sample and eval on the run directory, as for an f-distill student.
    let samples = tmp.path().join("s.csv");
    let plot = tmp.path().join("s.png");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&run),
        "--n",
        "300",
        "--out",
        p(&samples),
        "--plot",
        p(&plot),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("VarDiU"), "{}", stderr(&o));
    let rows = std::fs::read_to_string(&samples).unwrap();
    let values: Vec<f64> = rows
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(','))
        .flat_map(|l| l.split(',').map(|v| v.trim().parse::<f64>().unwrap()))
        .collect();
    assert_eq!(values.len(), 600, "{rows}");
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(std::fs::metadata(&plot).unwrap().len() > 1000);
    let o = fdistill(&[
        "eval",
        "--samples",
        p(&samples),
        "--target",
        "mog40",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["modes_total"], 40);
    assert!(v["mmd2"].as_f64().unwrap().is_finite());
}

#[test]
fn mlp_teacher_run_directory_works() {
    let tmp = tempfile::tempdir().unwrap();
    let tcfg = tmp.path().join("teacher.json");
    std::fs::write(
        &tcfg,
        r#"{"teacher": {"batch_size": 64, "checkpoint_every": 10, "log_every": 5},
            "net": {"hidden": 16, "depth": 2, "embedding_size": 8}}"#,
    )
    .unwrap();
    let teacher = tmp.path().join("teacher");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "ring8-unbalanced",
        "--out",
        p(&teacher),
        "--steps",
        "20",
        "--config",
        p(&tcfg),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = tmp.path().join("student");
    let cfg = tiny_config(tmp.path());
    let o = fdistill(&[
        "distill",
        "--method",
        "vardiu",
        "--teacher",
        p(&teacher),
        "--config",
        p(&cfg),
        "--steps",
        "4",
        "--out",
        p(&run),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["teacher"]["type"], "network");
    // The generator is the teacher's network; σ_max is the teacher's σ_data.
    assert_eq!(config["net"]["hidden"], 16);
    assert_eq!(
        config["vardiu"]["sigma_max"], config["net"]["sigma_data"],
        "{config}"
    );
    let samples = tmp.path().join("s.npy");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&run),
        "--n",
        "50",
        "--out",
        p(&samples),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_input_exits_2_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cases: [(&[&str], &str); 6] = [
        (&["--method", "vardiu"], "--target NAME"),
        (
            &["--teacher", "t", "--depth", "3"],
            "--method vardiu --target",
        ),
        (
            &["--method", "vardiu", "--target", "two-moons"],
            "built-in Gaussian mixture",
        ),
        (&["--target", "mog40"], "--method vardiu"),
        (
            &[
                "--method",
                "vardiu",
                "--target",
                "mog40",
                "--divergence",
                "reverse-kl",
            ],
            "no divergence",
        ),
        (
            &[
                "--method", "vardiu", "--target", "mog40", "--preset", "cifar10",
            ],
            "data-scale, mog40-reference",
        ),
    ];
    for (args, hint) in cases {
        let mut all = vec!["distill", "--out", p(&out), "--dry-run"];
        all.extend_from_slice(args);
        let o = fdistill(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(hint), "{args:?}: {}", stderr(&o));
    }
    // A bad σ range in --config names the field.
    let cfg = tmp.path().join("bad.json");
    std::fs::write(&cfg, r#"{"sigma_min": 30.0, "sigma_max": 20.0}"#).unwrap();
    let o = fdistill(&[
        "distill",
        "--method",
        "vardiu",
        "--target",
        "mog40",
        "--config",
        p(&cfg),
        "--out",
        p(&out),
        "--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sigma_min < sigma_max"),
        "{}",
        stderr(&o)
    );
}
