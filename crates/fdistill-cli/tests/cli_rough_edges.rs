//! What a new user hit (issue 20), each through the binary with its exit code and message:
//! run directories are never silently overwritten, data paths survive a change of directory,
//! `--resume --steps` is recorded, `--plot` is checked before anything is written, CSV
//! separators are detected, and the messages name the problem and the fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fdistill"));
    c.env_remove("FDISTILL_LOG")
        .env_remove("FDISTILL_PROGRESS_SECS");
    c
}

fn fdistill(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts exit code 2, no panic, and that stderr contains every needle.
#[track_caller]
fn assert_usage_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    assert!(!e.contains("panicked"), "{e}");
    for needle in needles {
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
    }
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

const TINY: &str = r#"{"teacher": {"batch_size": 32, "checkpoint_every": 10, "log_every": 5},
                      "net": {"hidden": 16, "depth": 2, "embedding_size": 8}}"#;

fn tiny_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("tiny.json");
    std::fs::write(&cfg, TINY).unwrap();
    cfg
}

fn train(data: &str, out: &Path, cfg: &Path, steps: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "teacher",
        "train",
        "--data",
        data,
        "--out",
        p(out),
        "--steps",
        steps,
        "--config",
        p(cfg),
    ];
    args.extend_from_slice(extra);
    fdistill(&args)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&read(path)).unwrap()
}

/// Bug 1: a second `teacher train` into a finished run is refused and changes nothing;
/// `--overwrite` starts clean; `--resume --steps` extends the run and config.json says so
/// (bug 3).
#[test]
fn existing_runs_are_refused_overwritten_or_resumed_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path());
    let run = tmp.path().join("t");
    assert_ok(&train("ring8-unbalanced", &run, &cfg, "30", &[]));
    let before: Vec<Vec<u8>> = ["config.json", "metrics.jsonl", "checkpoint/ema.safetensors"]
        .iter()
        .map(|f| read(&run.join(f)))
        .collect();
    let o = train("ring8-unbalanced", &run, &cfg, "10", &[]);
    assert_usage_error(&o, &["already holds a run", "--resume", "--overwrite"]);
    let after: Vec<Vec<u8>> = ["config.json", "metrics.jsonl", "checkpoint/ema.safetensors"]
        .iter()
        .map(|f| read(&run.join(f)))
        .collect();
    assert!(
        before == after,
        "a refused run must not touch the directory"
    );
    // distill and classifier refuse the same way.
    let s = tmp.path().join("s");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("config.json"), "{}").unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&run),
        "--out",
        p(&s),
        "--steps",
        "3",
    ]);
    assert_usage_error(&o, &["already holds a run"]);
    let o = fdistill(&["distill", "--out", p(&s), "--resume", "--overwrite"]);
    assert_usage_error(&o, &["cannot be used with"]);

    // --overwrite: a clean 10-step run.
    assert_ok(&train(
        "ring8-unbalanced",
        &run,
        &cfg,
        "10",
        &["--overwrite"],
    ));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}"); // steps 5 and 10 only
    assert_eq!(json(&run.join("config.json"))["teacher"]["steps"], 10);

    // --resume --steps 20: config.json records 20 (bug 3), metrics continue.
    let o = fdistill(&[
        "teacher",
        "train",
        "--out",
        p(&run),
        "--resume",
        "--steps",
        "20",
    ]);
    assert_ok(&o);
    assert_eq!(json(&run.join("config.json"))["teacher"]["steps"], 20);
    assert_eq!(json(&run.join("checkpoint/state.json"))["step"], 20);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    // --resume takes the run's own data and network.
    let o = fdistill(&[
        "teacher",
        "train",
        "--out",
        p(&run),
        "--resume",
        "--data",
        "grid25",
    ]);
    assert_usage_error(&o, &["cannot be used with"]);
}

/// Bug 2: a relative `--data` path is stored absolute, so distillation from another working
/// directory finds it; when the file is gone, the error names the config.json it came from.
#[test]
fn data_paths_are_absolute_and_a_missing_one_names_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_config(tmp.path());
    let mut csv = String::new();
    for i in 0..300 {
        let t = i as f64 * 0.1;
        csv.push_str(&format!("{},{}\n", t.cos() * 2.0, t.sin() * 2.0));
    }
    std::fs::write(tmp.path().join("mog3.csv"), csv).unwrap();
    let run = tmp.path().join("t");
    let o = bin()
        .current_dir(tmp.path())
        .args([
            "teacher",
            "train",
            "--data",
            "mog3.csv",
            "--out",
            "t",
            "--steps",
            "10",
            "--config",
            "tiny.json",
        ])
        .output()
        .unwrap();
    assert_ok(&o);
    let source = json(&run.join("config.json"))["data"]["source"]
        .as_str()
        .unwrap()
        .to_string();
    let abs = std::fs::canonicalize(tmp.path().join("mog3.csv")).unwrap();
    assert_eq!(Path::new(&source), abs);
    // From another directory (the tests' cwd), distillation finds the data.
    let out = tmp.path().join("s");
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&run),
        "--out",
        p(&out),
        "--dry-run",
    ]);
    assert_ok(&o);
    std::fs::rename(tmp.path().join("mog3.csv"), tmp.path().join("moved.csv")).unwrap();
    let o = fdistill(&["distill", "--teacher", p(&run), "--out", p(&out)]);
    let config_json = run.join("config.json");
    assert_usage_error(
        &o,
        &["mog3.csv", "is recorded in", p(&config_json), "data.source"],
    );
    assert!(!out.exists());
}

/// Bug 4: `--plot` on data that is not 2-D is refused before anything is written.
/// Output: `--out -` writes CSV to stdout; a CSV-trained teacher plots over its data.
#[test]
fn plot_is_checked_first_and_samples_go_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path());
    let d3 = tmp.path().join("d3.csv");
    std::fs::write(&d3, "1,2,3\n2,3,4\n0,1,0\n1,1,1\n").unwrap();
    let run = tmp.path().join("t3");
    assert_ok(&train(p(&d3), &run, &cfg, "5", &[]));
    let out = tmp.path().join("s.csv");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&run),
        "--n",
        "5",
        "--nfe",
        "3",
        "--out",
        p(&out),
        "--plot",
        p(&tmp.path().join("s.png")),
    ]);
    assert_usage_error(&o, &["--plot needs 2-D samples", "dimension 3"]);
    assert!(!out.exists(), "nothing is written before the refusal");

    // A 2-D CSV teacher: samples on stdout, a scatter over the training data.
    let d2 = tmp.path().join("d2.csv");
    std::fs::write(&d2, "x;y\n1;2\n2;3\n0;1\n1;1\n").unwrap();
    let run2 = tmp.path().join("t2");
    assert_ok(&train(p(&d2), &run2, &cfg, "5", &[]));
    let png = tmp.path().join("s2.png");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&run2),
        "--n",
        "7",
        "--nfe",
        "3",
        "--out",
        "-",
        "--plot",
        p(&png),
    ]);
    assert_ok(&o);
    let rows: Vec<Vec<f64>> = String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 7);
    assert!(rows.iter().all(|r| r.len() == 2));
    assert!(stderr(&o).contains("to stdout"), "{}", stderr(&o));
    assert!(png.is_file());
    // The title names the model and what is behind the samples (the pixels of the grey data
    // are checked in fdistill-plot's `data_is_drawn_grey_behind_the_points`).
    assert!(
        stderr(&o).contains("titled \"teacher, Heun 3 NFE: 7 samples, ")
            && stderr(&o).contains("(grey: data)"),
        "{}",
        stderr(&o)
    );

    // A student of a built-in mixture: its divergence in the title, the density behind.
    let teacher = tmp.path().join("t8");
    assert_ok(&train("ring8-unbalanced", &teacher, &cfg, "5", &[]));
    let dcfg = tmp.path().join("d.toml");
    std::fs::write(
        &dcfg,
        "batch_size = 16\n[driver]\nsteps = 3\ncheckpoint_every = 3\n",
    )
    .unwrap();
    let student = tmp.path().join("s8");
    assert_ok(&fdistill(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--divergence",
        "forward-kl",
        "--out",
        p(&student),
        "--config",
        p(&dcfg),
    ]));
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&student),
        "--n",
        "9",
        "--out",
        "-",
        "--plot",
        p(&tmp.path().join("s8.png")),
    ]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains(
            "titled \"student (forward-kl), 1 NFE: 9 samples, ring8-unbalanced (density)\""
        ),
        "{}",
        stderr(&o)
    );
}

/// Bug 5: a semicolon-separated file keeps its first row (and the net sees 2-D data); a
/// decimal-comma file is refused with the fix.
#[test]
fn csv_separators_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let semi = tmp.path().join("semi.csv");
    std::fs::write(&semi, "1;2\n3;4\n5;6\n").unwrap();
    let out = tmp.path().join("t");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        p(&semi),
        "--out",
        p(&out),
        "--dry-run",
    ]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["data"]["dim"], 2);
    // σ_data of all three rows (pooled std of {1,3,5} and {2,4,6}): √(8/3) = 1.63.
    assert_eq!(v["net"]["sigma_data"], 1.63);
    let euro = tmp.path().join("euro.csv");
    std::fs::write(&euro, "1,5;2,5\n3,5;4,5\n").unwrap();
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        p(&euro),
        "--out",
        p(&out),
        "--dry-run",
    ]);
    assert_usage_error(&o, &["decimal commas", "decimal point"]);
}

/// Messages that misled: a student run as --teacher, --resume of a missing run, eval with
/// --samples alone, the config keys, and image presets on 2-D data.
#[test]
fn messages_name_the_problem_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path());
    let teacher = tmp.path().join("t");
    assert_ok(&train("ring8-unbalanced", &teacher, &cfg, "10", &[]));
    let student = tmp.path().join("s");
    let dcfg = tmp.path().join("d.toml");
    std::fs::write(
        &dcfg,
        "batch_size = 16\n[driver]\nsteps = 3\ncheckpoint_every = 3\n",
    )
    .unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--out",
        p(&student),
        "--config",
        p(&dcfg),
    ]);
    assert_ok(&o);

    // A student run given as --teacher.
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&student),
        "--out",
        p(&tmp.path().join("x")),
    ]);
    assert_usage_error(&o, &["is a student run", "fdistill teacher train"]);
    assert!(!stderr(&o).contains("corrupt"), "{}", stderr(&o));

    // --resume of a run that does not exist names what --resume continues.
    let o = fdistill(&["distill", "--out", p(&tmp.path().join("nope")), "--resume"]);
    assert_usage_error(&o, &["does not exist", "earlier `fdistill distill`"]);
    assert!(!stderr(&o).contains("teacher train"), "{}", stderr(&o));

    // eval with --samples alone mentions both options.
    let s = tmp.path().join("s.csv");
    std::fs::write(&s, "1,2\n3,4\n").unwrap();
    let o = fdistill(&["eval", "--samples", p(&s)]);
    assert_usage_error(&o, &["--target", "--reference"]);

    // The list of config keys holds no test hooks.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"lr_generatr": 1e-3}"#).unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--out",
        p(&tmp.path().join("y")),
        "--config",
        p(&bad),
    ]);
    assert_usage_error(&o, &["lr_generatr", "lr_generator"]);
    assert!(!stderr(&o).contains("inject_nan"), "{}", stderr(&o));
    let hook = tmp.path().join("hook.json");
    std::fs::write(&hook, r#"{"inject_nan_at_step": 3}"#).unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--out",
        p(&tmp.path().join("y")),
        "--config",
        p(&hook),
        "--dry-run",
    ]);
    assert_usage_error(&o, &["unknown field `inject_nan_at_step`"]);
    // The same for VarDiU's config (`--method vardiu`), whose hook was a file key once.
    for (file, needles) in [
        (&bad, &["lr_generatr", "lr_generator"][..]),
        (&hook, &["unknown field `inject_nan_at_step`"][..]),
    ] {
        let o = fdistill(&[
            "distill",
            "--method",
            "vardiu",
            "--target",
            "mog40",
            "--out",
            p(&tmp.path().join("v")),
            "--config",
            p(file),
            "--dry-run",
        ]);
        assert_usage_error(&o, needles);
        if file == &bad {
            assert!(!stderr(&o).contains("inject_nan"), "{}", stderr(&o));
        }
    }

    // An image preset on 2-D data warns with the resolved values; toy does not.
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--out",
        p(&tmp.path().join("z")),
        "--preset",
        "dmd2-no-gan",
        "--dry-run",
    ]);
    assert_ok(&o);
    let e = stderr(&o);
    assert!(
        e.contains("warning: preset `dmd2-no-gan`")
            && e.contains("300000 iterations")
            && e.contains("sigma_init 80")
            && e.contains("--preset toy"),
        "{e}"
    );
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--out",
        p(&tmp.path().join("z")),
        "--dry-run",
    ]);
    assert_ok(&o);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

/// Output: progress lines when stderr is not a terminal (step, it/s, ETA, loss); `-v` adds
/// checkpoint and lock lines; eval prints the coverage rule and the per-mode weights.
#[test]
fn progress_lines_verbosity_and_eval_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path());
    let run = tmp.path().join("t");
    let o = bin()
        .env("FDISTILL_PROGRESS_SECS", "0")
        .args([
            "teacher",
            "train",
            "--data",
            "ring8-unbalanced",
            "--out",
            p(&run),
            "--steps",
            "20",
            "--config",
            p(&cfg),
        ])
        .output()
        .unwrap();
    assert_ok(&o);
    let e = stderr(&o);
    let lines: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("[teacher] step "))
        .collect();
    assert!(lines.len() >= 20, "{e}");
    assert!(lines[0].starts_with("[teacher] step 1/20 (5%), "), "{e}");
    for l in &lines {
        assert!(l.contains(" it/s, ETA ") && l.contains(", loss "), "{l}");
    }
    assert!(!e.contains("checkpoint at step"), "{e}");
    // -v: the checkpoints (every 10 steps and the last) and the lock.
    let o = bin()
        .args([
            "-v",
            "teacher",
            "train",
            "--data",
            "ring8-unbalanced",
            "--out",
            p(&run),
            "--steps",
            "20",
            "--config",
            p(&cfg),
            "--overwrite",
        ])
        .output()
        .unwrap();
    assert_ok(&o);
    let e = stderr(&o);
    assert_eq!(e.matches("checkpoint at step").count(), 2, "{e}");
    assert!(
        e.contains("holding the write lock") && e.contains(".fdistill.lock"),
        "{e}"
    );

    // eval: the rule and the weights next to the masses.
    let samples = tmp.path().join("s.csv");
    assert_ok(&fdistill(&[
        "sample",
        "--checkpoint",
        p(&run),
        "--n",
        "200",
        "--nfe",
        "5",
        "--out",
        p(&samples),
    ]));
    let o = fdistill(&[
        "eval",
        "--samples",
        p(&samples),
        "--target",
        "ring8-unbalanced",
    ]);
    assert_ok(&o);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("at least 50 % of its expected mass"),
        "{text}"
    );
    assert!(
        text.contains("per-mode weight     [0.400, "),
        "the weights of ring8-unbalanced start at 0.40: {text}"
    );
    let o = fdistill(&[
        "eval",
        "--samples",
        p(&samples),
        "--target",
        "ring8-unbalanced",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let w: f64 = v["per_mode_weight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!((w - 1.0).abs() < 1e-12, "{v}");
    assert!(v["coverage_rule"].as_str().unwrap().contains("3 std"));
}
