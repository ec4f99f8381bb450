//! Pretrained EDM networks through the command line: `teacher import` of the PyTorch twin's
//! fixtures (outputs equal to 1e−4), import → `sample` at 35 NFE → `distill` (with
//! classifier-free guidance) → `export` → import round trips bit for bit, the one error that
//! lists every mismatch, and — when PyTorch is installed — an exported `.pt` loaded by the
//! PyTorch twin (`tools/edm_twin.py`) with the same outputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::backend::Flex;
use fdistill::nets::{EdmKwargs, EdmPrecondConfig, KeyPrefix, StateDict, StateTensor, UNet};
use fdistill::train::checkpoint::load_module;

type B = Flex;

fn fdistill(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn edm_fixtures() -> PathBuf {
    root().join("tests/fixtures/edm")
}

/// The 1000-image Fashion-MNIST fixture at 8×8 (grey, 10 classes).
fn fashion8() -> String {
    let dir = root().join("tests/fixtures/fashion-mnist-t10k-first1000");
    format!(
        "idx:{},{}@8",
        dir.join("t10k-images-idx3-ubyte-first1000.gz").display(),
        dir.join("t10k-labels-idx1-ubyte-first1000.gz").display()
    )
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn kwargs(path: &Path) -> EdmKwargs {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The teacher in a run directory, loaded as `sample` and `distill` load it.
fn load_run_net(run: &Path, file: &str, cfg: &EdmPrecondConfig) -> UNet<B> {
    load_module::<B, _>(cfg.init(&Default::default()), &run.join(file)).unwrap()
}

/// `D(x; σ, y, a)` on a fixture's inputs.
fn outputs(net: &UNet<B>, io: &StateDict) -> Vec<f32> {
    let device = Default::default();
    let x = io.get("x").unwrap().to_tensor::<B, 4>(&device);
    let sigma = io.get("sigma").unwrap().to_tensor::<B, 1>(&device);
    let y = io.get("class_labels").map(|t| t.to_tensor::<B, 2>(&device));
    let a = io
        .get("augment_labels")
        .map(|t| t.to_tensor::<B, 2>(&device));
    let (d, _) = net.forward_images(x, sigma, y, a);
    d.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn every_twin_fixture_imports_with_the_pytorch_outputs() {
    let dir = tempfile::tempdir().unwrap();
    for (name, weights, prefix) in [
        ("ddpmpp", "ddpmpp.safetensors", "model."),
        ("ncsnpp", "ncsnpp.safetensors", "auto"),
        ("songunet-skip", "songunet-skip.safetensors", "auto"),
        ("adm", "adm.pt", "model."),
    ] {
        let run = dir.path().join(name);
        let json = edm_fixtures().join(format!("{name}.json"));
        let o = fdistill(&[
            "teacher",
            "import",
            "--weights",
            p(&edm_fixtures().join(weights)),
            "--config",
            p(&json),
            "--prefix",
            prefix,
            "--out",
            p(&run),
        ]);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["kind"], "teacher");
        assert_eq!(config["imported"]["prefix"], "model.");
        assert_eq!(config["data"]["source"], "none");
        let cfg = EdmPrecondConfig::from_edm_kwargs(&kwargs(&json)).unwrap();
        let net = load_run_net(&run, "checkpoint/ema.safetensors", &cfg);
        let io = StateDict::read(&edm_fixtures().join(format!("{name}.io.safetensors"))).unwrap();
        let err = max_abs(&outputs(&net, &io), &io.get("D").unwrap().values);
        println!("{name}: imported through the CLI, max |D − D_torch| = {err:.2e}");
        assert!(err <= 1e-4, "{name}: {err}");
    }
}

/// A tiny class-conditional DDPM++ for 8×8 grey images with 10 classes (the Fashion-MNIST
/// fixture at 8×8), as EDMPrecond keyword arguments.
const TINY_KWARGS: &str = r#"{
  "img_resolution": 8, "img_channels": 1, "label_dim": 10, "model_type": "SongUNet",
  "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4],
  "dropout": 0.0
}"#;

/// Seeded values for every parameter (buffers kept), so that every tensor matters.
fn randomised(sd: &StateDict, seed: u64) -> StateDict {
    use rand::SeedableRng;
    use rand_distr::{Distribution as _, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = sd.clone();
    for (k, t) in out.tensors.iter_mut() {
        if k.ends_with("resample_filter") {
            continue;
        }
        let fan_in: usize = t.shape.iter().skip(1).product::<usize>().max(1);
        for v in t.values.iter_mut() {
            let n: f32 = StandardNormal.sample(&mut rng);
            *v = if k.contains("norm") && k.ends_with("weight") {
                1.0 + 0.2 * n
            } else if k.ends_with("bias") || k.contains("norm") {
                0.2 * n
            } else {
                n / (fan_in as f32).sqrt()
            };
        }
    }
    out
}

/// The Python interpreter with torch and safetensors: `FDISTILL_PYTHON`, the shared venv, or
/// `python3`.
fn python_with_torch() -> Option<String> {
    let candidates = [
        std::env::var("FDISTILL_PYTHON").ok(),
        Some("/work/venv-torch/bin/python".to_string()),
        Some("python3".to_string()),
    ];
    candidates.into_iter().flatten().find(|py| {
        Command::new(py)
            .args(["-c", "import torch, safetensors"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn import_sample_distill_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let kw_path = dir.path().join("tiny.json");
    std::fs::write(&kw_path, TINY_KWARGS).unwrap();
    let cfg = EdmPrecondConfig::from_edm_kwargs(&kwargs(&kw_path)).unwrap();
    // The "pretrained" weights: seeded random values, written as torch.save would (.pt).
    let sd = randomised(&cfg.init::<B>(&device).to_state_dict(), 7);
    let weights = dir.path().join("teacher.pt");
    sd.write_pytorch(&weights).unwrap();
    assert_eq!(StateDict::read(&weights).unwrap().tensors, sd.tensors);

    // 1. import with the data it models
    let data = fashion8();
    let teacher = dir.path().join("teacher");
    let import = |weights: &Path, kwargs: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "teacher",
            "import",
            "--weights",
            p(weights),
            "--config",
            p(kwargs),
            "--out",
            p(out),
        ];
        args.extend_from_slice(extra);
        fdistill(&args)
    };
    let o = import(&weights, &kw_path, &teacher, &["--data", &data]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("imported SongUNet (10 classes, 1×8×8)"),
        "{}",
        text(&o)
    );
    // An existing run is refused without --overwrite, replaced with it.
    let o = import(&weights, &kw_path, &teacher, &["--data", &data]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already holds a run"), "{}", text(&o));
    let o = import(
        &weights,
        &kw_path,
        &teacher,
        &["--data", &data, "--overwrite"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // What sample and distill load is the file's weights, exactly.
    let net = load_run_net(&teacher, "checkpoint/ema.safetensors", &cfg);
    assert_eq!(net.to_state_dict().tensors, {
        let mut t = sd.tensors.clone();
        t.retain(|k, _| k.starts_with("model."));
        t
    });

    // 2. 35-NFE Heun samples from the imported teacher
    let npy = dir.path().join("teacher.npy");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&teacher),
        "--n",
        "4",
        "--nfe",
        "35",
        "--out",
        p(&npy),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("35 NFE"), "{}", text(&o));
    let samples = fdistill::data::load_npy(&npy).unwrap();
    assert_eq!((samples.values.len(), samples.dim), (4 * 64, 64));
    assert!(samples.values.iter().all(|v| v.is_finite()));

    // 3. distillation, 2 iterations, with classifier-free guidance of the teacher
    let student = dir.path().join("student");
    let overrides = dir.path().join("distill.json");
    std::fs::write(
        &overrides,
        r#"{"batch_size": 4, "critic_steps": 1, "teacher_guidance": 1.5,
            "driver": {"checkpoint_every": 2, "log_every": 1}}"#,
    )
    .unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&teacher),
        "--out",
        p(&student),
        "--steps",
        "2",
        "--config",
        p(&overrides),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let metrics = std::fs::read_to_string(student.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(student.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["distill"]["teacher_guidance"], 1.5);

    // 4. export the student (both formats) and import it again: bit for bit
    let st = dir.path().join("student.safetensors");
    let pt = dir.path().join("student.pt");
    let kw_out = dir.path().join("student.kwargs.json");
    let o = fdistill(&[
        "export",
        "--checkpoint",
        p(&student),
        "--format",
        "edm-safetensors",
        "--out",
        p(&st),
        "--kwargs",
        p(&kw_out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("σ_init = 80"), "{}", text(&o));
    let o = fdistill(&[
        "export",
        "--checkpoint",
        p(&student),
        "--format",
        "pytorch-state-dict",
        "--out",
        p(&pt),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let exported = StateDict::read(&st).unwrap();
    assert_eq!(StateDict::read(&pt).unwrap().tensors, exported.tensors);
    assert_eq!(exported.len(), cfg.init::<B>(&device).state_spec().len());
    assert_eq!(
        EdmPrecondConfig::from_edm_kwargs(&kwargs(&kw_out)).unwrap(),
        cfg,
        "the kwargs rebuild the same network"
    );
    for (file, name) in [(&st, "again-st"), (&pt, "again-pt")] {
        let again = dir.path().join(name);
        let o = import(file, &kw_out, &again, &[]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            std::fs::read(again.join("checkpoint/ema.safetensors")).unwrap(),
            std::fs::read(student.join("checkpoint/generator_ema.safetensors")).unwrap(),
            "{name}: export → import is not bit-exact"
        );
    }
    // A teacher exports too, with the weights it was imported from.
    let tt = dir.path().join("teacher-again.safetensors");
    let o = fdistill(&[
        "export",
        "--checkpoint",
        p(&teacher),
        "--format",
        "edm-safetensors",
        "--out",
        p(&tt),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(StateDict::read(&tt).unwrap().tensors, sd.tensors);

    // 5. the exported .pt in the PyTorch twin: torch.load + load_state_dict(strict) + forward
    let Some(py) = python_with_torch() else {
        eprintln!(
            "skipped the PyTorch check: no Python with torch and safetensors (set \
             FDISTILL_PYTHON)"
        );
        return;
    };
    let b = 3;
    let x: Vec<f32> = (0..b * 64)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let mut y = vec![0f32; b * 10];
    for (i, c) in [2usize, 7, 9].iter().enumerate() {
        y[i * 10 + c] = 1.0;
    }
    let mut io = StateDict::default();
    for (k, t) in [
        ("x", StateTensor::new(vec![b, 1, 8, 8], x)),
        ("sigma", StateTensor::new(vec![b], vec![0.05, 1.0, 20.0])),
        ("class_labels", StateTensor::new(vec![b, 10], y)),
    ] {
        io.tensors.insert(k.into(), t);
    }
    let inputs = dir.path().join("io.safetensors");
    io.write_safetensors(&inputs).unwrap();
    let out = dir.path().join("torch.safetensors");
    let status = Command::new(&py)
        .arg(root().join("tools/edm_twin.py"))
        .args(["forward", "--kwargs", p(&kw_out), "--weights", p(&pt)])
        .args(["--inputs", p(&inputs), "--out", p(&out)])
        .status()
        .unwrap();
    assert!(status.success(), "the twin failed on the exported .pt");
    let torch = StateDict::read(&out).unwrap();
    let net = cfg
        .init::<B>(&device)
        .load_state_dict(&exported, &KeyPrefix::Auto)
        .unwrap();
    let ours = outputs(&net, &io);
    let err = max_abs(&ours, &torch.get("D").unwrap().values);
    println!("exported student in PyTorch: max |D − D_torch| = {err:.2e}");
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn one_import_error_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDict::read(&edm_fixtures().join("ddpmpp.safetensors")).unwrap();
    let conv0 = sd
        .tensors
        .remove("model.enc.8x8_block0.conv0.weight")
        .unwrap();
    sd.tensors.insert(
        "model.enc.8x8_block0.extra.weight".into(),
        StateTensor::new(vec![2], vec![0.0, 1.0]),
    );
    let bias = sd.tensors.get_mut("model.map_layer0.bias").unwrap();
    let n = bias.values.len();
    *bias = StateTensor::new(vec![n + 1], vec![0.0; n + 1]);
    let bad = dir.path().join("bad.safetensors");
    sd.write_safetensors(&bad).unwrap();
    let out = dir.path().join("run");
    let o = fdistill(&[
        "teacher",
        "import",
        "--weights",
        p(&bad),
        "--config",
        p(&edm_fixtures().join("ddpmpp.json")),
        "--out",
        p(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("1 missing, 1 unexpected, 1 mis-shaped tensors"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "missing     model.enc.8x8_block0.conv0.weight {:?}",
            conv0.shape
        )),
        "{t}"
    );
    assert!(
        t.contains("unexpected  model.enc.8x8_block0.extra.weight [2]"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "mis-shaped  model.map_layer0.bias: file [{}], network [{n}]",
            n + 1
        )),
        "{t}"
    );
    assert!(!out.exists(), "nothing is written for a failed import");

    // The wrong architecture: every difference in the one message, exit code 2.
    let o = fdistill(&[
        "teacher",
        "import",
        "--weights",
        p(&edm_fixtures().join("ddpmpp.safetensors")),
        "--arch",
        "edm-ddpmpp-cifar10",
        "--out",
        p(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("mis-shaped  model.map_layer0.weight"),
        "{}",
        text(&o)
    );
    let o = fdistill(&[
        "teacher",
        "import",
        "--weights",
        p(&edm_fixtures().join("ddpmpp.safetensors")),
        "--arch",
        "edm-ddpmpp-celeba",
        "--out",
        p(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("use one of edm-ddpmpp-cifar10"),
        "{}",
        text(&o)
    );

    // Data that does not fit the network, and distillation of a teacher without data.
    let run = dir.path().join("teacher");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "teacher".to_string(),
            "import".into(),
            "--weights".into(),
            p(&edm_fixtures().join("ddpmpp.safetensors")).into(),
            "--config".into(),
            p(&edm_fixtures().join("ddpmpp.json")).into(),
            "--out".into(),
            p(&run).into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let o = Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args(&["--data", &fashion8()]))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("holds 1×8×8 images"), "{}", text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(args(&[]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&run),
        "--out",
        p(&dir.path().join("student")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("imported without --data"), "{}", text(&o));
    let o = fdistill(&["teacher", "train", "--out", p(&run), "--resume"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no training state"), "{}", text(&o));
}
