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
    // log_every = 1: one row per iteration, numbered on across the resume.
    let rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=9).collect::<Vec<u64>>(), "{lines}");
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

    // --seed fixes the student's samples: the same seed gives the same bytes, another seed
    // others (the default is 0).
    let with_seed = |seed: &str| {
        let path = dir.path().join(format!("seed{seed}.csv"));
        let o = fdistill(&[
            "sample",
            "--checkpoint",
            out.to_str().unwrap(),
            "--n",
            "50",
            "--seed",
            seed,
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(path).unwrap()
    };
    assert_eq!(with_seed("0"), rows.as_bytes());
    assert_ne!(with_seed("1"), rows.as_bytes());

    // The driver's seed reaches the run: seed 6 instead of 5 gives other metrics from the
    // first iteration on (the same seed giving the same bytes is cli_reliability's test).
    let other = dir.path().join("other-seed");
    let cfg6 = dir.path().join("seed6.toml");
    std::fs::write(&cfg6, TINY_TOML.replace("seed = 5", "seed = 6")).unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--divergence",
        "jensen-shannon",
        "--out",
        other.to_str().unwrap(),
        "--config",
        cfg6.to_str().unwrap(),
        "--steps",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let seed6 = std::fs::read_to_string(other.join("metrics.jsonl")).unwrap();
    for (a, b) in seed6.lines().zip(lines.lines()) {
        assert_ne!(a, b, "seeds 5 and 6 gave the same iteration");
    }
}

/// The `[name]` tensor of a safetensors file as f32 values, with its shape.
fn safetensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[name];
    assert_eq!(t["dtype"], "F32", "{name} in {header}");
    let shape = t["shape"].as_array().unwrap();
    let shape = shape.iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let off = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    let values = bytes[8 + n + a..8 + n + b]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, values)
}

/// `generator_latent_extra = 3`: the student's generator takes a 2 + 3 wide latent. The run
/// records it in its net config, trains its `W_z` away from zero, resumes, samples, and a
/// config whose two records disagree is refused, as is a teacher with extra inputs.
#[test]
fn a_generator_with_extra_latent_inputs_trains_resumes_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = tiny_teacher(dir.path());
    let cfg = dir.path().join("wide.toml");
    std::fs::write(&cfg, format!("generator_latent_extra = 3\n{TINY_TOML}")).unwrap();
    let out = dir.path().join("student");
    let o = fdistill(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--steps",
        "6",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config_path = out.join("config.json");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    assert_eq!(config["net"]["latent_extra"], 3, "{config}");
    assert_eq!(config["distill"]["generator_latent_extra"], 3, "{config}");
    // W_z: 3 → 16 (burn stores a Linear's weight as [in, out]), trained away from its zero
    // start; the fake score has none.
    let checkpoint = out.join("checkpoint");
    let (shape, w_z) = safetensor(&checkpoint.join("generator.safetensors"), "latent.weight");
    assert_eq!(shape, vec![3, 16]);
    assert!(w_z.iter().any(|v| *v != 0.0), "W_z did not train");
    let fake = std::fs::read(checkpoint.join("fake_score.safetensors")).unwrap();
    assert!(!String::from_utf8_lossy(&fake).contains("latent.weight"));

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

    let s = dir.path().join("s.csv");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        out.to_str().unwrap(),
        "--n",
        "40",
        "--out",
        s.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = std::fs::read_to_string(&s).unwrap();
    let parsed: Vec<Vec<f64>> = rows
        .lines()
        .map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()).collect())
        .collect();
    assert_eq!(parsed.len(), 40);
    assert!(
        parsed
            .iter()
            .all(|r| r.len() == 2 && r.iter().all(|v| v.is_finite()))
    );

    // The two records of the latent width disagree: refused, naming both keys.
    let mut edited = config.clone();
    edited["distill"]["generator_latent_extra"] = 2.into();
    std::fs::write(&config_path, edited.to_string()).unwrap();
    let o = fdistill(&[
        "distill",
        "--out",
        out.to_str().unwrap(),
        "--resume",
        "--steps",
        "12",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("net.latent_extra") && e.contains("generator_latent_extra is 2"),
        "{e}"
    );

    // A teacher with extra latent inputs (a hand-edited config.json) is refused, with the fix.
    let teacher_config = teacher.join("config.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&teacher_config).unwrap()).unwrap();
    t["net"]["latent_extra"] = 2.into();
    std::fs::write(&teacher_config, t.to_string()).unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        teacher.to_str().unwrap(),
        "--out",
        dir.path().join("from-bad-teacher").to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("a teacher has no extra latent inputs") && e.contains("generator_latent_extra"),
        "{e}"
    );
}

/// `fdistill demo` itself on a tiny setting (20 teacher steps, 4 student iterations at batch
/// 32): three students in order, the teacher at 35 NFE and the students at 1, every metric in
/// range, every model worse than the exact-vs-exact MMD² floor (none is trained), the
/// figures and summary written; the students, trained concurrently (one CPU thread each),
/// equal a student trained alone with the same settings; run again, it reuses every finished
/// run and reports the same metrics.
#[test]
fn demo_runs_end_to_end_on_a_tiny_setting_and_reuses_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.json");
    std::fs::write(
        &cfg,
        r#"{"batch_size": 32, "driver": {"checkpoint_every": 2, "log_every": 1}}"#,
    )
    .unwrap();
    let out = dir.path().join("demo");
    let demo = || {
        let o = fdistill(&[
            "--threads",
            "3",
            "demo",
            "--out",
            out.to_str().unwrap(),
            "--teacher-steps",
            "20",
            "--steps",
            "4",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        (o, summary)
    };
    let (o, s) = demo();
    let md = String::from_utf8_lossy(&o.stdout);
    let floor = s["mmd2_floor"].as_f64().unwrap();
    // Two 2000-point exact sets: MMD² is estimator noise, small and nearly zero.
    assert!(floor.abs() < 5e-3, "{s}");
    assert_eq!(s["teacher"]["nfe"], 35);
    let students = s["students"].as_array().unwrap();
    let names: Vec<&str> = students
        .iter()
        .map(|m| m["divergence"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["reverse-kl", "jensen-shannon", "forward-kl"]);
    for m in students.iter().chain([&s["teacher"]]) {
        let modes = m["modes_covered"].as_u64().unwrap();
        assert!(modes <= 8, "{m}");
        let mmd = m["mmd2"].as_f64().unwrap();
        assert!(mmd > floor, "an untrained model beat the exact floor: {m}");
        assert!(m["mean_log_density"].as_f64().unwrap().is_finite(), "{m}");
        // Σ_k |observed − expected share| lies in [0, 2]
        let mass_error = m["mass_error"].as_f64().unwrap();
        assert!((0.0..=2.0).contains(&mass_error), "{m}");
        assert!(m["samples_per_sec"].as_f64().unwrap() > 0.0, "{m}");
    }
    for m in students {
        assert_eq!(m["nfe"], 1, "{m}");
        assert!(m["train_s"].as_f64().unwrap() > 0.0, "{m}");
        let run = out.join("students").join(m["divergence"].as_str().unwrap());
        let rows = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        assert_eq!(rows.lines().count(), 4, "--steps reaches every student");
    }
    assert!(
        stderr(&o).contains("concurrently, 1 CPU thread(s) each"),
        "{}",
        stderr(&o)
    );
    assert!(md.contains("(`toy` preset, 4 iterations)"), "{md}");
    // The demo's own schedule (DEMO_HOLD_FRACTION) over the preset's; the rest of the
    // preset as it is, --config on top.
    let run_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("students/jensen-shannon/config.json")).unwrap(),
    )
    .unwrap();
    let d = &run_config["distill"];
    assert_eq!(
        d["lr_schedule"],
        serde_json::json!({"type": "cosine", "final_fraction": 0.05, "hold_fraction": 0.75}),
        "{d}"
    );
    assert_eq!(
        (d["batch_size"].clone(), d["preset"].clone()),
        (32.into(), "toy".into())
    );
    // A student trained concurrently with the others equals one trained alone: the same
    // metrics, line for line, and the same weights (given the demo's schedule).
    let alone_cfg = dir.path().join("alone.json");
    std::fs::write(
        &alone_cfg,
        r#"{"batch_size": 32, "driver": {"checkpoint_every": 2, "log_every": 1},
            "lr_schedule": {"hold_fraction": 0.75}}"#,
    )
    .unwrap();
    let alone = dir.path().join("alone");
    let o = fdistill(&[
        "--threads",
        "1",
        "distill",
        "--teacher",
        out.join("teacher").to_str().unwrap(),
        "--divergence",
        "jensen-shannon",
        "--out",
        alone.to_str().unwrap(),
        "--steps",
        "4",
        "--config",
        alone_cfg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let demo_js = out.join("students/jensen-shannon");
    for f in ["metrics.jsonl", "checkpoint/generator.safetensors"] {
        assert!(
            std::fs::read(demo_js.join(f)).unwrap() == std::fs::read(alone.join(f)).unwrap(),
            "{f} of the demo's concurrent student differs from the same student trained alone"
        );
    }
    let teacher_rows = std::fs::read_to_string(out.join("teacher/metrics.jsonl")).unwrap();
    let last: serde_json::Value =
        serde_json::from_str(teacher_rows.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 20, "--teacher-steps reaches the teacher");
    assert!(md.contains("| teacher (Heun) | 35 |"), "{md}");
    assert!(md.contains("| mass error |"), "{md}");
    assert!(md.contains("| student, forward-kl | 1 |"), "{md}");
    assert_eq!(
        std::fs::read_to_string(out.join("summary.md"))
            .unwrap()
            .trim_end(),
        md.trim_end()
    );
    for f in [
        "scatter_teacher.png",
        "scatter_student_reverse-kl.png",
        "scatter_student_jensen-shannon.png",
        "scatter_student_forward-kl.png",
        "loss_discriminator.png",
        "loss_dsm.png",
        "loss_gan.png",
    ] {
        let png = image::open(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(png.width() > 100, "{f}");
    }

    // Again: every run is finished, so nothing trains and the metrics repeat.
    let (o, again) = demo();
    let e = stderr(&o);
    assert!(e.contains("reusing the teacher"), "{e}");
    assert_eq!(e.matches("reusing the student").count(), 3, "{e}");
    for key in ["mmd2", "modes_covered", "mass_error", "mean_log_density"] {
        assert_eq!(again["teacher"][key], s["teacher"][key], "{key}");
        for i in 0..3 {
            assert_eq!(again["students"][i][key], s["students"][i][key], "{key}");
        }
    }
    assert!(again["students"][0].get("train_s").is_none(), "{again}");
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

/// The `toy` preset's length scales follow the teacher's σ_data (`at_data_scale`): on data
/// about ten times wider than ring8 the resolved σ_init and log-normal p_mean are scaled by
/// `c = σ_data / 2.53`, and a --config value still wins.
#[test]
fn toy_preset_scales_with_the_teachers_sigma_data() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("wide.csv");
    let rows: String = (0..200)
        .map(|i| {
            let a = i as f64 * 0.7;
            format!("{:.4},{:.4}\n", 30.0 * a.cos(), 20.0 * (1.3 * a).sin())
        })
        .collect();
    std::fs::write(&csv, rows).unwrap();
    let cfg = dir.path().join("teacher.json");
    std::fs::write(
        &cfg,
        r#"{"teacher": {"batch_size": 32}, "net": {"hidden": 16, "depth": 2, "embedding_size": 8}}"#,
    )
    .unwrap();
    let teacher = dir.path().join("teacher");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--out",
        teacher.to_str().unwrap(),
        "--steps",
        "2",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(teacher.join("config.json")).unwrap())
            .unwrap();
    let sigma_data = tc["net"]["sigma_data"].as_f64().unwrap();
    assert!(sigma_data > 15.0, "{sigma_data}");
    let c = sigma_data / 2.53;
    let dry = |extra: &[&str]| -> serde_json::Value {
        let out = dir.path().join("student");
        let mut args = vec![
            "distill",
            "--teacher",
            teacher.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--dry-run",
        ];
        args.extend_from_slice(extra);
        let o = fdistill(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let d = &dry(&[])["distill"];
    let toy = DistillConfig::toy();
    assert!(
        (d["sigma_init"].as_f64().unwrap() - toy.sigma_init * c).abs() < 1e-9,
        "{d}"
    );
    let p_mean = d["noise"]["p_mean"].as_f64().unwrap();
    assert!((p_mean - (-0.7 + c.ln())).abs() < 1e-9, "{d}");
    // The user's --config wins over the scaled preset.
    let user = dir.path().join("user.json");
    std::fs::write(&user, r#"{"sigma_init": 7.0}"#).unwrap();
    let d = &dry(&["--config", user.to_str().unwrap()])["distill"];
    assert_eq!(d["sigma_init"].as_f64(), Some(7.0));

    // The preset's learning-rate schedule, and overrides of it: a cosine override merges
    // field by field (the hold stays unless set), a `constant` one replaces it whole.
    let schedule = |extra: &[&str]| dry(extra)["distill"]["lr_schedule"].clone();
    assert_eq!(
        schedule(&[]),
        serde_json::json!({"type": "cosine", "final_fraction": 0.05, "hold_fraction": 0.5})
    );
    assert_eq!(dry(&[])["distill"]["driver"]["steps"], 24000);
    std::fs::write(
        &user,
        r#"{"lr_schedule": {"type": "cosine", "final_fraction": 0.1}}"#,
    )
    .unwrap();
    assert_eq!(
        schedule(&["--config", user.to_str().unwrap()]),
        serde_json::json!({"type": "cosine", "final_fraction": 0.1, "hold_fraction": 0.5})
    );

    // Every committed 2-D study candidate is a valid override of this preset and pins what
    // it ran with, so the recorded rows reproduce under today's preset: those recorded
    // before the preset decayed pin the constant rate (and run with `--steps`), the cosine
    // ones their hold and 12 000 iterations, and those screened on the preset of 12 000
    // iterations held for 75 % (docs/results.md, "Why the 2 % mode drops") pin that.
    const ON_HELD_PRESET: [&str; 5] = [
        "gan-0.1.json",
        "noise-mean-minus-0.3.json",
        "noise-mean-plus-0.1.json",
        "noise-std-1.5.json",
        "steps-24000.json",
    ];
    let configs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configs/fidelity2d");
    let mut n = 0;
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("teacher-") {
            continue;
        }
        let d = &dry(&["--config", path.to_str().unwrap()])["distill"];
        n += 1;
        let s = &d["lr_schedule"];
        // a cosine candidate names its hold (`cosine-hold-0.5.json`, `steps-24000-hold-0.5.json`)
        if name.starts_with("cosine") || name.contains("-hold-") {
            assert_eq!(s["type"], "cosine", "{name}: {d}");
            let hold = s
                .get("hold_fraction")
                .and_then(|h| h.as_f64())
                .unwrap_or(0.0);
            let want = if name == "cosine.json" {
                0.0
            } else {
                let (_, hold) = name.rsplit_once("hold-").unwrap();
                hold.trim_end_matches(".json").parse::<f64>().unwrap()
            };
            assert_eq!(hold, want, "{name}: {d}");
            let steps = if name.starts_with("steps-24000") {
                24000
            } else {
                12000
            };
            assert_eq!(d["driver"]["steps"], steps, "{name}: {d}");
        } else if ON_HELD_PRESET.contains(&name.as_str()) {
            assert_eq!(
                *s,
                serde_json::json!({"type": "cosine", "final_fraction": 0.05, "hold_fraction": 0.75}),
                "{name}: {d}"
            );
            let steps = if name.starts_with("steps-") {
                24000
            } else {
                12000
            };
            assert_eq!(d["driver"]["steps"], steps, "{name}: {d}");
        } else {
            // Constant: omitted from the resolved config.
            assert!(s.is_null(), "{name}: {d}");
        }
    }
    assert!(n >= 15, "{n} candidate files in {}", configs.display());
}
