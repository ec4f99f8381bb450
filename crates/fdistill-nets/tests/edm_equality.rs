//! Proof that fdistill's EDM networks are EDM's: the fixtures under `tests/fixtures/edm/`
//! were written by `tools/edm_twin.py` (an independent PyTorch implementation with EDM's
//! parameter names) from seeded random weights — non-zero everywhere — and hold inputs
//! `x, σ, y, a` with the outputs `D(x; σ, y, a)` and the encoder taps. Each is loaded here
//! through the state-dict importer (three through safetensors, ADM through the PyTorch zip
//! reader) and must agree to 1e−4.
//!
//! Also: the full-size configurations' state-dict names, shapes and totals against the twin's
//! listing; export → import round trips bit for bit; one error lists every mismatch; and, when
//! PyTorch is installed, export → PyTorch twin → the same outputs.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use fdistill_nets::state_dict::EntryKind;
use fdistill_nets::{EdmKwargs, EdmPrecondConfig, KeyPrefix, StateDict, WeightsError};

type B = Flex;

/// An encoder tap read from a fixture: (level, shape, values).
type Tap = (usize, Vec<usize>, Vec<f32>);
/// A state-dict entry of a full-size spec: (kind, name, shape).
type Spec = (char, String, Vec<usize>);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/edm")
}

fn kwargs(name: &str) -> EdmKwargs {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Runs a network on a fixture's inputs; returns `(D, taps by resolution)`.
fn run(net: &fdistill_nets::EdmPrecond<B>, io: &StateDict) -> (Vec<f32>, Vec<Tap>) {
    let device = Default::default();
    let x = io.get("x").unwrap().to_tensor::<B, 4>(&device);
    let sigma = io.get("sigma").unwrap().to_tensor::<B, 1>(&device);
    let y = io.get("class_labels").map(|t| t.to_tensor::<B, 2>(&device));
    let a = io
        .get("augment_labels")
        .map(|t| t.to_tensor::<B, 2>(&device));
    let (d, taps) = net.forward_images(x, sigma, y, a);
    let taps = taps
        .into_iter()
        .map(|t| (t.dims()[3], t.dims().to_vec(), values(t)))
        .collect();
    (values(d), taps)
}

#[test]
fn fixtures_match_the_pytorch_twin() {
    let device = Default::default();
    for (name, weights) in [
        ("ddpmpp", "ddpmpp.safetensors"),
        ("ncsnpp", "ncsnpp.safetensors"),
        ("songunet-skip", "songunet-skip.safetensors"),
        ("adm", "adm.pt"),
    ] {
        let cfg = EdmPrecondConfig::from_edm_kwargs(&kwargs(name)).unwrap();
        let sd = StateDict::read(&fixtures().join(weights)).unwrap();
        let net = cfg
            .init::<B>(&device)
            .load_state_dict(&sd, &KeyPrefix::Auto)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let io = StateDict::read(&fixtures().join(format!("{name}.io.safetensors"))).unwrap();
        let (d, taps) = run(&net, &io);
        let want = &io.get("D").unwrap().values;
        let err = max_abs(&d, want);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("{name}: max |D − D_torch| = {err:.2e} (max |D| = {scale:.2})");
        assert!(err <= 1e-4, "{name}: D differs by {err}");
        assert_eq!(taps.len(), cfg.tap_shapes().len(), "{name}");
        for (res, shape, got) in taps {
            let want = io.get(&format!("tap.{res}")).unwrap();
            assert_eq!(shape, want.shape, "{name} tap {res}");
            let err = max_abs(&got, &want.values);
            println!("{name}: tap {res}×{res}: max error {err:.2e}");
            assert!(err <= 1e-4, "{name}: tap {res} differs by {err}");
        }
    }
}

#[test]
fn null_label_is_the_zero_vector() {
    // Row 2 of the fixtures' labels is all zeros: the integer-label path with `None` must give
    // the same D as the explicit zero vector.
    let device = Default::default();
    let cfg = EdmPrecondConfig::from_edm_kwargs(&kwargs("ncsnpp")).unwrap();
    let sd = StateDict::read(&fixtures().join("ncsnpp.safetensors")).unwrap();
    let net = cfg
        .init::<B>(&device)
        .load_state_dict(&sd, &KeyPrefix::Exact("model.".into()))
        .unwrap();
    let io = StateDict::read(&fixtures().join("ncsnpp.io.safetensors")).unwrap();
    let (d, _) = run(&net, &io);
    let x = io
        .get("x")
        .unwrap()
        .to_tensor::<B, 4>(&device)
        .narrow(0, 2, 1);
    let sigma = io
        .get("sigma")
        .unwrap()
        .to_tensor::<B, 1>(&device)
        .narrow(0, 2, 1);
    let flat = x.reshape([1, 128]);
    let d_none = values(net.forward(flat.clone(), sigma.clone(), None));
    assert!(max_abs(&d_none, &d[2 * 128..3 * 128]) <= 1e-5);
    // And a labelled row: class 0 through the integer path equals the one-hot row 0.
    let x0 = io
        .get("x")
        .unwrap()
        .to_tensor::<B, 4>(&device)
        .narrow(0, 0, 1);
    let s0 = io
        .get("sigma")
        .unwrap()
        .to_tensor::<B, 1>(&device)
        .narrow(0, 0, 1);
    let y0 = Tensor::<B, 1, Int>::from_data(TensorData::from([0i64]), &device);
    let d0 = values(net.forward(x0.reshape([1, 128]), s0, Some(y0)));
    assert!(max_abs(&d0, &d[0..128]) <= 1e-5);
}

/// The twin's listing of the full-size state dicts: `(name, [(kind, key, shape)])`.
fn full_specs() -> Vec<(String, Vec<Spec>)> {
    let text = std::fs::read_to_string(fixtures().join("full-size-specs.txt")).unwrap();
    let mut out: Vec<(String, Vec<Spec>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("# ") {
            out.push((name.to_string(), Vec::new()));
            continue;
        }
        let mut parts = line.split(' ');
        let kind = parts.next().unwrap().chars().next().unwrap();
        let key = parts.next().unwrap().to_string();
        let shape = parts
            .next()
            .unwrap()
            .split(',')
            .map(|d| d.parse().unwrap())
            .collect();
        out.last_mut().unwrap().1.push((kind, key, shape));
    }
    out
}

#[test]
fn full_size_state_dicts_match_edm_names_shapes_and_totals() {
    // Built lazily: listing the names allocates no weights (ADM would be 1.2 GB).
    let device = Default::default();
    let totals = [
        ("edm-ddpmpp-cifar10", 55_735_299usize, 419usize, 8usize),
        ("edm-ncsnpp-cifar10", 56_400_643, 423, 11),
        ("edm-adm-imagenet64", 295_899_267, 541, 12),
    ];
    let specs = full_specs();
    for (name, params, tensors, buffers) in totals {
        let net = EdmPrecondConfig::preset(name).unwrap().init::<B>(&device);
        let spec = net.state_spec();
        let p: Vec<_> = spec
            .iter()
            .filter(|e| e.kind == EntryKind::Parameter)
            .collect();
        let n: usize = p.iter().map(|e| e.shape.iter().product::<usize>()).sum();
        let nb = spec.len() - p.len();
        println!(
            "{name}: {n} parameters in {} tensors + {nb} buffers",
            p.len()
        );
        assert_eq!((n, p.len(), nb), (params, tensors, buffers), "{name}");
        let mut ours: Vec<(char, String, Vec<usize>)> = spec
            .into_iter()
            .map(|e| {
                let k = if e.kind == EntryKind::Parameter {
                    'P'
                } else {
                    'B'
                };
                (k, format!("model.{}", e.name), e.shape)
            })
            .collect();
        let mut twin = specs.iter().find(|(n, _)| n == name).unwrap().1.clone();
        ours.sort();
        twin.sort();
        assert_eq!(ours, twin, "{name}");
    }
}

fn small_configs() -> Vec<EdmPrecondConfig> {
    ["ddpmpp", "ncsnpp", "songunet-skip", "adm"]
        .into_iter()
        .map(|n| EdmPrecondConfig::from_edm_kwargs(&kwargs(n)).unwrap())
        .collect()
}

#[test]
fn export_then_import_round_trips_bit_exactly() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    for (i, cfg) in small_configs().into_iter().enumerate() {
        <B as burn::tensor::backend::Backend>::seed(&device, 10 + i as u64);
        let net = cfg.init::<B>(&device);
        let sd = net.to_state_dict();
        assert!(sd.tensors.keys().all(|k| k.starts_with("model.")));
        let path = dir.path().join(format!("{i}.safetensors"));
        sd.write_safetensors(&path).unwrap();
        let read = StateDict::read(&path).unwrap();
        <B as burn::tensor::backend::Backend>::seed(&device, 99);
        let other = cfg.init::<B>(&device);
        assert_ne!(
            other.to_state_dict().tensors,
            sd.tensors,
            "different seeds differ"
        );
        let loaded = other.load_state_dict(&read, &KeyPrefix::Auto).unwrap();
        let again = loaded.to_state_dict();
        assert_eq!(again.tensors.len(), sd.tensors.len());
        for (k, t) in &sd.tensors {
            let u = &again.tensors[k];
            assert_eq!(t.shape, u.shape, "{k}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&t.values), bits(&u.values), "{k}");
        }
        // Same weights, same function.
        let x = Tensor::<B, 2>::random([2, cfg.dim()], Distribution::Normal(0.0, 1.0), &device);
        let sigma = Tensor::<B, 1>::from_floats([0.3, 5.0], &device);
        let y = cfg
            .n_classes
            .map(|_| Tensor::<B, 1, Int>::from_data(TensorData::from([1i64, 0]), &device));
        assert_eq!(
            values(net.forward(x.clone(), sigma.clone(), y.clone())),
            values(loaded.forward(x, sigma, y))
        );
    }
}

#[test]
fn one_error_lists_every_missing_unexpected_and_mis_shaped_tensor() {
    let device = Default::default();
    let sd = StateDict::read(&fixtures().join("ddpmpp.safetensors")).unwrap();
    // The fixture has 2 blocks per level, augmentation labels and 3 classes; this net has one
    // block, no augmentation and 4 classes.
    let mut k = kwargs("ddpmpp");
    k.num_blocks = Some(1);
    k.augment_dim = 0;
    k.label_dim = 4;
    let cfg = EdmPrecondConfig::from_edm_kwargs(&k).unwrap();
    let err = cfg
        .init::<B>(&device)
        .load_state_dict(&sd, &KeyPrefix::Auto)
        .unwrap_err();
    let WeightsError::Mismatch(report) = &err else {
        panic!("{err}")
    };
    // With one block per level, the 4×4 decoder's attention moves from block2 to block1.
    assert!(
        report
            .missing
            .contains(&("model.dec.4x4_block1.norm2.weight".to_string(), vec![16])),
        "{err}"
    );
    assert!(
        report
            .unexpected
            .iter()
            .any(|(k, _)| k == "model.map_augment.weight"),
        "{err}"
    );
    assert!(
        report
            .unexpected
            .iter()
            .any(|(k, _)| k == "model.enc.8x8_block1.conv0.weight"),
        "{err}"
    );
    assert!(
        report
            .mis_shaped
            .contains(&("model.map_label.weight".to_string(), vec![8, 3], vec![8, 4])),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("mis-shaped  model.map_label.weight: file [8, 3], network [8, 4]"),
        "{msg}"
    );
    assert!(
        msg.contains("unexpected  model.map_augment.weight [8, 2]"),
        "{msg}"
    );
    assert!(
        msg.contains("missing     model.dec.4x4_block1.norm2.weight [16]"),
        "{msg}"
    );
    // A missing tensor and a resample filter of another family (NCSN++'s [1, 3, 3, 1] where
    // the config says [1, 1]).
    let mut sd2 = StateDict::read(&fixtures().join("ncsnpp.safetensors")).unwrap();
    sd2.tensors.remove("model.map_layer1.bias");
    let mut k = kwargs("ncsnpp");
    k.resample_filter = None; // EDM's default [1, 1]
    let cfg = EdmPrecondConfig::from_edm_kwargs(&k).unwrap();
    let err = cfg
        .init::<B>(&device)
        .load_state_dict(&sd2, &KeyPrefix::Auto)
        .unwrap_err();
    let WeightsError::Mismatch(report) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        report.missing,
        vec![("model.map_layer1.bias".to_string(), vec![32])],
        "{err}"
    );
    // [1, 1] filters are 2×2, the file's 4×4: mis-shaped buffers, both shapes named.
    assert!(
        report
            .mis_shaped
            .iter()
            .any(|(k, f, n)| k.ends_with("resample_filter")
                && f == &vec![1, 1, 4, 4]
                && n == &vec![1, 1, 2, 2]),
        "{err}"
    );
    // Same shape, other values: a filter the configuration does not describe.
    let mut sd3 = sd.clone();
    let key = "model.enc.4x4_down.conv0.resample_filter";
    sd3.tensors.get_mut(key).unwrap().values[0] = 0.5;
    let cfg = EdmPrecondConfig::from_edm_kwargs(&kwargs("ddpmpp")).unwrap();
    let err = cfg
        .init::<B>(&device)
        .load_state_dict(&sd3, &KeyPrefix::Auto)
        .unwrap_err();
    let WeightsError::Mismatch(report) = &err else {
        panic!("{err}")
    };
    assert_eq!(report.wrong_buffers, vec![key.to_string()], "{err}");
}

#[test]
fn prefixes_are_found_or_chosen() {
    let device = Default::default();
    let sd = StateDict::read(&fixtures().join("songunet-skip.safetensors")).unwrap();
    let cfg = EdmPrecondConfig::from_edm_kwargs(&kwargs("songunet-skip")).unwrap();
    // A training checkpoint with two copies: ambiguous until a prefix is chosen.
    let mut both = StateDict::default();
    for (k, t) in &sd.tensors {
        both.tensors.insert(format!("ema.{k}"), t.clone());
        both.tensors.insert(format!("net.{k}"), t.clone());
    }
    let err = cfg
        .init::<B>(&device)
        .load_state_dict(&both, &KeyPrefix::Auto)
        .unwrap_err();
    assert!(err.to_string().contains("`ema.model.`"), "{err}");
    cfg.init::<B>(&device)
        .load_state_dict(&both, &"ema.model.".parse().unwrap())
        .unwrap();
    // A bare UNet state dict (no prefix).
    let mut bare = StateDict::default();
    for (k, t) in &sd.tensors {
        bare.tensors
            .insert(k.strip_prefix("model.").unwrap().to_string(), t.clone());
    }
    assert_eq!(bare.resolve_prefix(&KeyPrefix::Auto).unwrap(), "");
    cfg.init::<B>(&device)
        .load_state_dict(&bare, &"none".parse().unwrap())
        .unwrap();
    // Not an EDM network at all.
    let io = StateDict::read(&fixtures().join("adm.io.safetensors")).unwrap();
    let err = io.resolve_prefix(&KeyPrefix::Auto).unwrap_err();
    assert!(
        err.to_string().contains("not the state dict of an EDM"),
        "{err}"
    );
    // Unknown extension.
    let err = StateDict::read(Path::new("weights.pkl")).unwrap_err();
    assert!(
        err.to_string().contains("edm_pickle_to_safetensors"),
        "{err}"
    );
}

/// Seeded values for every parameter (buffers kept): weights `N(0, 1/fan_in)`, biases and
/// GroupNorm shifts `N(0, 0.2²)`, GroupNorm scales `1 + N(0, 0.2²)`.
fn randomised(sd: &StateDict, seed: u64) -> StateDict {
    use rand::SeedableRng;
    use rand_distr::{Distribution as _, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = sd.clone();
    for (k, t) in out.tensors.iter_mut() {
        if k.ends_with("resample_filter") || k.ends_with("map_noise.freqs") {
            continue;
        }
        let norm = k.contains("norm");
        let fan_in: usize = t.shape.iter().skip(1).product::<usize>().max(1);
        for v in t.values.iter_mut() {
            let n: f32 = StandardNormal.sample(&mut rng);
            *v = if norm && k.ends_with("weight") {
                1.0 + 0.2 * n
            } else if k.ends_with("bias") || norm {
                0.2 * n
            } else {
                n / (fan_in as f32).sqrt()
            };
        }
    }
    out
}

/// The Python interpreter with torch: `FDISTILL_PYTHON` or `python3`.
fn python_with_torch() -> Option<String> {
    let py = std::env::var("FDISTILL_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import torch, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(py)
}

#[test]
fn export_loads_into_the_pytorch_twin_with_the_same_outputs() {
    let Some(py) = python_with_torch() else {
        eprintln!(
            "skipped: no Python with torch and safetensors (set FDISTILL_PYTHON to one, e.g. \
             /work/venv-torch/bin/python)"
        );
        return;
    };
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let twin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/edm_twin.py");
    for (i, cfg) in small_configs().into_iter().enumerate() {
        // fdistill's initialisation has (nearly) zero output convolutions; randomise every
        // parameter so that each one matters, load that into the net, then export.
        let net = cfg.init::<B>(&device);
        let random = randomised(&net.to_state_dict(), 1000 + i as u64);
        let net = net.load_state_dict(&random, &KeyPrefix::Auto).unwrap();
        let w = dir.path().join(format!("{i}.safetensors"));
        net.to_state_dict().write_safetensors(&w).unwrap();
        let k = dir.path().join(format!("{i}.json"));
        std::fs::write(&k, serde_json::to_string(&cfg.to_edm_kwargs()).unwrap()).unwrap();
        // Inputs: the fixture's of the same family.
        let name = ["ddpmpp", "ncsnpp", "songunet-skip", "adm"][i];
        let inputs = fixtures().join(format!("{name}.io.safetensors"));
        let out = dir.path().join(format!("{i}.out.safetensors"));
        let status = std::process::Command::new(&py)
            .arg(&twin)
            .args(["forward", "--kwargs"])
            .arg(&k)
            .arg("--weights")
            .arg(&w)
            .arg("--inputs")
            .arg(&inputs)
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "{name}: the twin failed");
        let torch = StateDict::read(&out).unwrap();
        let io = StateDict::read(&inputs).unwrap();
        let (d, taps) = run(&net, &io);
        let err = max_abs(&d, &torch.get("D").unwrap().values);
        println!("{name}: exported fdistill init, max |D − D_torch| = {err:.2e}");
        assert!(err <= 1e-4, "{name}: {err}");
        for (res, _, got) in taps {
            let err = max_abs(&got, &torch.get(&format!("tap.{res}")).unwrap().values);
            assert!(err <= 1e-4, "{name} tap {res}: {err}");
        }
    }
}
