//! End-to-end on the 1000-image Fashion-MNIST fixture at 16×16 with tiny networks and a few
//! steps: `classifier train` → `teacher train --net unet` → `sample --grid` →
//! `eval --images`, and bad image input answered with exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn fixture() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fashion-mnist-t10k-first1000");
    format!(
        "idx:{},{}@16",
        dir.join("t10k-images-idx3-ubyte-first1000.gz").display(),
        dir.join("t10k-labels-idx1-ubyte-first1000.gz").display()
    )
}

/// Test accuracy of the seeded three-epoch classifier must exceed this (chance is 0.1).
const ACCURACY_FLOOR: f64 = 0.3;

/// A 16×16 DDPM++ with 8 base channels, two levels, attention only at the bottleneck.
const TINY_UNET: &str = r#"{
  "teacher": {"batch_size": 8, "checkpoint_every": 3, "log_every": 1, "lr": 1e-3},
  "unet": {"resolution": 16, "channels": 1, "n_classes": null, "sigma_data": 0.5,
           "arch": {"song_unet": {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1,
                    "attn_resolutions": [], "dropout": 0.0, "embedding_type": "positional",
                    "channel_mult_noise": 1, "encoder_type": "standard",
                    "decoder_type": "standard", "resample_filter": [1, 1]}}}
}"#;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn classifier_teacher_sample_eval_on_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture();

    // 1. the metric network: three epochs on 1000 images, tested on the same fixture
    let clf = dir.path().join("clf");
    let o = fdistill(&[
        "classifier",
        "train",
        "--data",
        &data,
        "--test",
        &data,
        "--out",
        p(&clf),
        "--epochs",
        "3",
        "--batch-size",
        "25",
        "--lr",
        "5e-3",
        "--widths",
        "8,16",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("test accuracy"), "{}", text(&o));
    for f in ["config.json", "result.json", "checkpoint/model.safetensors"] {
        assert!(clf.join(f).is_file(), "{f} missing");
    }
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clf.join("result.json")).unwrap()).unwrap();
    // Seeded (--seed 0 fixes the init and the shuffling): 120 batches lift the accuracy on
    // the fixture well above chance (10 classes: 0.1; seeds 0–3 give 0.44–0.52).
    let acc = result["test_accuracy"].as_f64().unwrap();
    assert!(acc > ACCURACY_FLOOR && acc <= 1.0, "{acc}");

    // 2. a class-conditional UNet teacher, 3 steps
    let cfg = dir.path().join("unet.json");
    std::fs::write(&cfg, TINY_UNET).unwrap();
    let run = dir.path().join("teacher");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        &data,
        "--net",
        "unet",
        "--config",
        p(&cfg),
        "--out",
        p(&run),
        "--steps",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["net"]["n_classes"], 10, "labels make it conditional");
    assert_eq!(config["net"]["resolution"], 16);

    // 3. 20 class-balanced samples at 3 NFE, as NPY and a PNG grid
    let npy = dir.path().join("s.npy");
    let png = dir.path().join("grid.png");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&run),
        "--n",
        "20",
        "--nfe",
        "3",
        "--out",
        p(&npy),
        "--grid",
        p(&png),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let grid = std::fs::read(&png).unwrap();
    assert_eq!(&grid[1..4], b"PNG");
    // 20 flattened 1×16×16 images, finite.
    let samples = fdistill::data::load_npy(&npy).unwrap();
    assert_eq!((samples.len(), samples.dim), (20, 256));
    assert!(samples.values.iter().all(|v| v.is_finite()));
    // Two rows of 10 cells of 16 px, 1-px borders.
    let grid = image::load_from_memory(&grid).unwrap();
    assert_eq!((grid.width(), grid.height()), (10 * 17 + 1, 2 * 17 + 1));

    // 4. image metrics with their real-vs-real floors
    let eval_json = |npy: &Path| {
        let o = fdistill(&[
            "eval",
            "--images",
            p(npy),
            "--classifier",
            p(&clf),
            "--reference",
            &data,
            "--json",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let report = eval_json(&npy);
    assert_eq!(report["samples"], 20);
    for key in [
        "frechet_distance",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "class_coverage",
        "class_kl_to_uniform",
    ] {
        assert!(report["metrics"][key].is_number(), "{key}: {report}");
        assert!(report["floor"][key].is_number(), "{key}: {report}");
    }
    let o = fdistill(&[
        "eval",
        "--images",
        p(&npy),
        "--classifier",
        p(&clf),
        "--reference",
        &data,
    ]);
    assert!(
        text(&o).contains("Fréchet distance (classifier features)"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("FID"));

    // 4b. the metrics by value. `eval --images` compares the samples with A, m = min(n, 500)
    // reference images drawn by shuffling the reference with ChaCha8(--seed, default 1), and
    // the floor compares the next m images with A. Samples that are A itself: Fréchet
    // distance ≈ 0, precision = recall = coverage = 1, below the floor. A brightened:
    // larger than the floor.
    let real = fdistill::data::load_image_source(&data).unwrap();
    let mut idx: Vec<usize> = (0..real.n).collect();
    {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    }
    let m = real.n / 2;
    let dim = real.dim();
    let set_a: Vec<f64> = idx[..m]
        .iter()
        .flat_map(|&i| {
            real.pixels[i * dim..(i + 1) * dim]
                .iter()
                .map(|&v| v as f64)
        })
        .collect();
    let same = dir.path().join("same.npy");
    fdistill::data::save_npy(&same, &set_a, dim).unwrap();
    let r = eval_json(&same);
    assert_eq!(r["samples"], m);
    assert_eq!(r["reference_images"], m);
    let num = |r: &serde_json::Value, set: &str, key: &str| r[set][key].as_f64().unwrap();
    let floor_fd = num(&r, "floor", "frechet_distance");
    assert!(floor_fd > 0.0, "{r}");
    assert!(
        num(&r, "metrics", "frechet_distance").abs() < 1e-3 * floor_fd,
        "the reference against itself: {r}"
    );
    for key in ["precision", "recall", "coverage"] {
        assert_eq!(num(&r, "metrics", key), 1.0, "{key}: {r}");
    }
    let brighter: Vec<f64> = set_a.iter().map(|v| (v + 0.6).min(1.0)).collect();
    let shifted = dir.path().join("shifted.npy");
    fdistill::data::save_npy(&shifted, &brighter, dim).unwrap();
    let r2 = eval_json(&shifted);
    assert_eq!(
        r2["floor"], r["floor"],
        "the floor depends on the reference and seed only"
    );
    assert!(
        num(&r2, "metrics", "frechet_distance") > 2.0 * floor_fd,
        "a brightened set is further than the floor: {r2}"
    );
    assert!(
        num(&r2, "metrics", "kid") > num(&r2, "floor", "kid"),
        "{r2}"
    );

    // 5. f-distill on images through the same `distill` command: UNet generator and fake
    // score, convolutional heads on the teacher's taps; 4 iterations, then resumed to 6
    let student = dir.path().join("student");
    let overrides = dir.path().join("tiny.json");
    std::fs::write(
        &overrides,
        r#"{"batch_size": 4, "critic_steps": 1, "driver": {"checkpoint_every": 2, "log_every": 1}}"#,
    )
    .unwrap();
    let distill = |steps: &str, resume: bool| {
        let mut args = vec!["distill", "--out", p(&student), "--steps", steps];
        if resume {
            args.push("--resume");
        } else {
            args.extend([
                "--teacher",
                p(&run),
                "--divergence",
                "jensen-shannon",
                "--config",
                p(&overrides),
            ]);
        }
        fdistill(&args)
    };
    // Extra generator latent inputs are for MLP generators: refused for a UNet, with the fix.
    let wide = dir.path().join("wide.json");
    std::fs::write(&wide, r#"{"generator_latent_extra": 2}"#).unwrap();
    let o = fdistill(&[
        "distill",
        "--teacher",
        p(&run),
        "--out",
        p(&dir.path().join("wide")),
        "--config",
        p(&wide),
        "--dry-run",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("generator_latent_extra = 2")
            && text(&o).contains("MLP generators")
            && text(&o).contains("drop the key"),
        "{}",
        text(&o)
    );
    ablation_configs_change_one_setting_each(&run, dir.path());

    let o = distill("4", false);
    assert!(o.status.success(), "{}", text(&o));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(student.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["net"]["resolution"], 16);
    // No --preset: a UNet teacher gets the image preset (σ_init 80, SPEC's noise grid).
    assert_eq!(config["distill"]["preset"], "cifar10");
    assert_eq!(config["distill"]["sigma_init"], 80.0);
    assert_eq!(config["distill"]["noise"]["type"], "karras-grid");
    let taps = config["discriminator"]["taps"].as_array().unwrap();
    assert_eq!(taps.len(), 2, "one conv head per UNet level: {config}");
    let o = distill("6", true);
    assert!(o.status.success(), "{}", text(&o));
    let lines = std::fs::read_to_string(student.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    assert!(lines.contains("loss_discriminator"));

    let npy = dir.path().join("student.npy");
    let png = dir.path().join("student.png");
    let o = fdistill(&[
        "sample",
        "--checkpoint",
        p(&student),
        "--n",
        "20",
        "--out",
        p(&npy),
        "--grid",
        p(&png),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("one-step samples"), "{}", text(&o));
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    let report = eval_json(&npy);
    assert!(
        report["metrics"]["frechet_distance"].is_number(),
        "{report}"
    );
}

fn assert_usage_error(o: &Output, needle: &str) {
    let e = text(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
}

#[test]
fn bad_image_input_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("x");
    // A truncated IDX file.
    let bad = dir.path().join("bad-images");
    std::fs::write(
        &bad,
        [0u8, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2],
    )
    .unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, [0u8, 0, 8, 1, 0, 0, 0, 5, 0, 1, 2, 3, 4]).unwrap();
    let spec = format!("idx:{},{}", p(&bad), p(&labels));
    let o = fdistill(&["classifier", "train", "--data", &spec, "--out", p(&out)]);
    assert_usage_error(&o, "truncated");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        &spec,
        "--net",
        "unet",
        "--out",
        p(&out),
    ]);
    assert_usage_error(&o, "truncated");
    // A missing data directory names the Debian package.
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "fashion-mnist:/nonexistent",
        "--net",
        "unet",
        "--out",
        p(&out),
    ]);
    assert_usage_error(&o, "dataset-fashion-mnist");
    // Images with the MLP, vectors with the UNet, unknown presets.
    let o = fdistill(&["teacher", "train", "--data", &fixture(), "--out", p(&out)]);
    assert_usage_error(&o, "use --net unet");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        "two-moons",
        "--net",
        "unet",
        "--out",
        p(&out),
    ]);
    assert_usage_error(&o, "needs images");
    let o = fdistill(&[
        "teacher",
        "train",
        "--data",
        &fixture(),
        "--net",
        "unet:huge",
        "--out",
        p(&out),
        "--dry-run",
    ]);
    assert_usage_error(&o, "unknown UNet preset");
    // eval --images with a directory that is not a classifier run.
    let npy = dir.path().join("s.npy");
    std::fs::write(&npy, b"not npy").unwrap();
    let o = fdistill(&["eval", "--images", p(&npy), "--classifier", p(dir.path())]);
    assert_usage_error(&o, "config.json");
}

/// `jq -s '.[0] * .[1]'`, as `tools/image_study16.sh ablate` layers a change over the base.
fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Every committed ablation of the 16×16 study (docs/configs/fashion-mnist-16-ablation/, each
/// layered over fashion-mnist-16-distill-cpu.json) is a valid image config for a UNet teacher,
/// and its resolved trainer config differs from the base's in exactly the keys it names.
fn ablation_configs_change_one_setting_each(teacher: &Path, dir: &Path) {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configs");
    let read = |path: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let base = read(&configs.join("fashion-mnist-16-distill-cpu.json"));
    let resolve = |patch: &serde_json::Value| -> serde_json::Value {
        let mut config = base.clone();
        merge(&mut config, patch);
        let file = dir.join("ablation.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let o = fdistill(&[
            "distill",
            "--teacher",
            p(teacher),
            "--out",
            p(&dir.join("ablation")),
            "--divergence",
            "jensen-shannon",
            "--preset",
            "cifar10",
            "--config",
            p(&file),
            "--dry-run",
        ]);
        assert!(o.status.success(), "{patch}: {}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["distill"].clone()
    };
    let reference = resolve(&serde_json::json!({}));
    let mut n = 0;
    for entry in std::fs::read_dir(configs.join("fashion-mnist-16-ablation")).unwrap() {
        let path = entry.unwrap().path();
        let patch = read(&path);
        let resolved = resolve(&patch);
        let (a, b) = (
            reference.as_object().unwrap(),
            resolved.as_object().unwrap(),
        );
        let mut changed: Vec<&String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .collect();
        changed.sort();
        changed.dedup();
        let mut named: Vec<&String> = patch.as_object().unwrap().keys().collect();
        named.sort();
        assert_eq!(changed, named, "{}: {resolved}", path.display());
        n += 1;
    }
    assert!(n >= 10, "{n} ablation files");
}
