//! `--devices` / `--nodes` (issue 18): bad flags are usage errors that say why, and with
//! burn-collective in the build, `--devices flex,flex` trains the teacher and distils to the
//! same weights as `--device flex` (same global batch; differences are float rounding of the
//! gradient mean: ‖Δθ‖₂/‖θ‖₂ ≤ 1e-5 per network, 1e-4 for AdamW's moments — see
//! `tests/tests/parallel.rs` for the reasoning and the library-level checks).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fdistill::train::checkpoint::compare_checkpoints;

fn fdistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_usage_error(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn bad_device_lists_and_node_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t");
    let base = [
        "teacher",
        "train",
        "--data",
        "ring8-unbalanced",
        "--out",
        p(&out),
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        fdistill(&a)
    };
    assert_usage_error(
        &with(&["--devices", "flex,cuda:0"]),
        "mixes `flex` and `cuda:0`",
    );
    assert_usage_error(&with(&["--devices", "flex,,flex"]), "empty entry");
    assert_usage_error(&with(&["--devices", "flex,tpu"]), "unknown device `tpu`");
    assert_usage_error(&with(&["--nodes", "2"]), "--orchestrator ws://HOST:PORT");
    assert_usage_error(
        &with(&["--nodes", "2", "--node-rank", "2"]),
        "--node-rank 2 with --nodes 2",
    );
    assert_usage_error(
        &with(&[
            "--nodes",
            "2",
            "--orchestrator",
            "localhost:3000",
            "--node-address",
            "ws://127.0.0.1:3001",
        ]),
        "not a WebSocket address",
    );
    assert_usage_error(
        &with(&["--orchestrator", "ws://127.0.0.1:3000"]),
        "for --nodes > 1",
    );
    // --device and --devices together: clap refuses the pair.
    let o = with(&["--device", "flex", "--devices", "flex,flex"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // Nothing was written by any of them.
    assert!(!out.exists());
}

/// Whether this binary was built with burn-collective (else `--devices a,b` must say which
/// feature to enable, and the equality checks below cannot run).
fn collective_built(dir: &Path) -> bool {
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "ring8-unbalanced",
        "--out",
        p(&dir.join("probe")),
        "--devices",
        "flex,flex",
        "--dry-run",
    ]);
    if o.status.success() {
        return true;
    }
    assert_usage_error(&o, "--features collective");
    eprintln!("this build has no burn-collective: the two-device checks are skipped");
    false
}

fn assert_close_runs(a: &Path, b: &Path, files: &[&str], what: &str) {
    for f in files {
        let d = compare_checkpoints(&a.join("checkpoint").join(f), &b.join("checkpoint").join(f))
            .unwrap();
        let (l2, worst) = (d.relative_l2, d.worst_tensor);
        println!(
            "{what} {f}: --devices flex,flex vs --device flex: relative L2 {l2:.3e}, largest per \
             tensor {worst:.3e}"
        );
        let bound = if f.starts_with("optim") { 1e-4 } else { 1e-5 };
        assert!(l2 <= bound, "{what} {f}: {l2:e} > {bound:e}");
    }
}

/// Runs `command` for 6 steps with the config file `cfg` into `out` on `devices`; it must
/// succeed. Returns `out`.
fn succeed(command: &[&str], cfg: &Path, out: &Path, devices: &[&str]) -> PathBuf {
    let mut args = command.to_vec();
    args.extend_from_slice(&["--out", p(out), "--steps", "6", "--config", p(cfg)]);
    args.extend_from_slice(devices);
    let o = fdistill(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    out.to_path_buf()
}

const TEACHER: &str = r#"{"teacher": {"batch_size": 64, "checkpoint_every": 6, "log_every": 1, "seed": 4},
                         "net": {"hidden": 16, "depth": 2, "embedding_size": 8}}"#;

fn teacher(dir: &Path, name: &str, devices: &[&str]) -> PathBuf {
    let cfg = dir.join("teacher.json");
    std::fs::write(&cfg, TEACHER).unwrap();
    let args = ["teacher", "train", "--data", "ring8-unbalanced"];
    succeed(&args, &cfg, &dir.join(name), devices)
}

#[test]
fn two_cpu_devices_train_and_distil_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    if !collective_built(dir) {
        return;
    }
    let one = teacher(dir, "t1", &["--device", "flex"]);
    let two = teacher(dir, "t2", &["--devices", "flex,flex"]);
    assert_close_runs(
        &one,
        &two,
        &["model.safetensors", "ema.safetensors", "optim.safetensors"],
        "teacher",
    );

    // f-distill with the learned ratio, time bins and weight normalisation (global-batch
    // normalisers), from the one-device teacher.
    let cfg = dir.join("distill.json");
    std::fs::write(
        &cfg,
        r#"{"batch_size": 64, "critic_steps": 1, "time_bins": {"bins": 4, "beta": 0.5},
            "driver": {"checkpoint_every": 6, "log_every": 1, "seed": 2}}"#,
    )
    .unwrap();
    let distill = |name: &str, devices: &[&str]| {
        let args = [
            "distill",
            "--teacher",
            p(&one),
            "--divergence",
            "forward-kl",
        ];
        succeed(&args, &cfg, &dir.join(name), devices)
    };
    let s1 = distill("s1", &["--device", "flex"]);
    let s2 = distill("s2", &["--devices", "flex,flex"]);
    assert_close_runs(
        &s1,
        &s2,
        &[
            "generator.safetensors",
            "generator_ema.safetensors",
            "fake_score.safetensors",
            "discriminator.safetensors",
            "optim_generator.safetensors",
            "optim_fake_score.safetensors",
            "optim_discriminator.safetensors",
        ],
        "f-distill",
    );
    // A batch that does not split over the devices is refused before anything is trained.
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&one),
        "--out",
        p(&dir.join("s3")),
        "--steps",
        "2",
        "--devices",
        "flex,flex,flex",
        "--config",
        p(&cfg),
    ]);
    assert_usage_error(&o, "multiple of the number of workers (3)");
}

/// VarDiU (`--method vardiu`, the analytic teacher of ring8-unbalanced) on two CPU devices:
/// the same generator, EMA, posterior and AdamW states as on one device; a batch that does not
/// split is refused, and so is a new run in a directory that holds one (the run guard).
#[test]
fn two_cpu_devices_run_vardiu_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    if !collective_built(dir) {
        return;
    }
    let cfg = dir.join("vardiu.json");
    std::fs::write(
        &cfg,
        r#"{"batch_size": 64, "lr_generator": 0.005, "lr_posterior": 0.005, "ema_beta": 0.9,
            "driver": {"checkpoint_every": 6, "log_every": 1, "seed": 3}}"#,
    )
    .unwrap();
    let vardiu = |name: &str, devices: &[&str]| {
        let args = [
            "distill",
            "--method",
            "vardiu",
            "--target",
            "ring8-unbalanced",
        ];
        succeed(&args, &cfg, &dir.join(name), devices)
    };
    let v1 = vardiu("v1", &["--device", "flex"]);
    let v2 = vardiu("v2", &["--devices", "flex,flex"]);
    assert_close_runs(
        &v1,
        &v2,
        &[
            "generator.safetensors",
            "generator_ema.safetensors",
            "posterior.safetensors",
            "optim_generator.mpk",
            "optim_posterior.mpk",
        ],
        "vardiu",
    );
    // 64 rows do not split over 3 devices: refused before anything is trained.
    let o = fdistill(&[
        "distill",
        "--method",
        "vardiu",
        "--target",
        "ring8-unbalanced",
        "--out",
        p(&dir.join("v3")),
        "--steps",
        "2",
        "--devices",
        "flex,flex,flex",
        "--config",
        p(&cfg),
    ]);
    assert_usage_error(&o, "multiple of the number of workers (3)");
    assert!(!dir.join("v3/checkpoint").exists());
    // A finished run is not overwritten by a new one without --overwrite.
    let o = fdistill(&[
        "distill",
        "--method",
        "vardiu",
        "--target",
        "ring8-unbalanced",
        "--out",
        p(&v1),
        "--steps",
        "2",
    ]);
    assert_usage_error(&o, "--resume");
}

/// A free TCP port on loopback (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two processes on loopback, one device each, joined by burn-collective's orchestrator:
/// the same weights as one device with the same global batch.
#[test]
#[ignore = "burn-collective 0.21: the second global all-reduce of a multi-node session never \
            completes (examples/collective_two_nodes.rs; docs/performance.md, Upstream item 8); \
            run with --ignored to retry after an upgrade"]
fn two_processes_on_loopback_train_as_one_device() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    if !collective_built(dir) {
        return;
    }
    let one = teacher(dir, "t1", &["--device", "flex"]);
    let (po, p0, p1) = (free_port(), free_port(), free_port());
    let orch = format!("ws://127.0.0.1:{po}");
    let cfg = dir.join("teacher.json");
    let spawn = |rank: usize, port: u16, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_fdistill"))
            .args([
                "teacher",
                "train",
                "--data",
                "ring8-unbalanced",
                "--out",
                p(out),
                "--steps",
                "6",
                "--config",
                p(&cfg),
                "--devices",
                "flex",
                "--nodes",
                "2",
                "--node-rank",
                &rank.to_string(),
                "--orchestrator",
                &orch,
                "--node-address",
                &format!("ws://127.0.0.1:{port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let node0 = dir.join("n0");
    let mut children = vec![spawn(0, p0, &node0), spawn(1, p1, &dir.join("n1"))];
    let start = Instant::now();
    loop {
        let done = children.iter_mut().all(|c| c.try_wait().unwrap().is_some());
        if done {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("the two nodes did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_close_runs(
        &one,
        &node0,
        &["model.safetensors", "ema.safetensors", "optim.safetensors"],
        "teacher on 2 nodes",
    );
    assert!(!dir.join("n1/checkpoint").exists(), "node 1 writes nothing");
}
