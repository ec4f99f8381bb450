//! Run directories and checkpoints.
//!
//! ```text
//! RUN/
//!   config.json              the resolved configuration (written before training starts)
//!   metrics.jsonl            one JSON object per logged step, appended; no wall-clock times, so
//!                            the same seed gives the same bytes (and so does a resumed run)
//!   timing.jsonl             wall-clock times of the logged steps (elapsed, per phase)
//!   .fdistill.lock           the writer's advisory lock (see [`crate::guard`])
//!   checkpoint/
//!     model.safetensors      the trained weights (f32, tensor names = module paths)
//!     ema.safetensors        the EMA weights: what sampling and distillation use
//!     optim.safetensors      the AdamW state (step counts, moments)
//!     state.json             step and other training state
//!     driver.json            the loop's step and RNG (see [`crate::distill::driver`])
//! ```
//!
//! Every file is written atomically (a temporary file in the same directory, then a
//! rename), so a crash leaves the previous version intact. Loading checks every tensor's
//! name and shape against the module it is loaded into and names the first one that differs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Run-directory and checkpoint errors.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A file or directory could not be read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A required file is absent.
    #[error("`{path}` does not exist; {hint}")]
    Missing {
        /// The path.
        path: PathBuf,
        /// What to do.
        hint: String,
    },
    /// The file exists but cannot be decoded (truncated, not safetensors, bad JSON).
    #[error("`{path}` is corrupt or truncated: {reason}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// The module has a tensor the checkpoint lacks.
    #[error(
        "`{path}` has no tensor '{name}' that the model expects; was it saved from a different network?"
    )]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// The checkpoint has a tensor the module lacks.
    #[error(
        "`{path}` has a tensor '{name}' that the model does not have; was it saved from a different network?"
    )]
    UnexpectedTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// Same name, different shape.
    #[error("`{path}`: tensor '{name}': checkpoint has {found:?}, model expects {expected:?}")]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape of the module's parameter.
        expected: Vec<usize>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// A training run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root`, creating and checking nothing (a [`crate::guard::RunGuard`]
    /// has done both).
    pub fn at(root: &Path) -> RunDir {
        RunDir {
            root: root.to_path_buf(),
        }
    }

    /// Creates (or reuses) `root` and its `checkpoint/` subdirectory.
    pub fn create(root: &Path) -> Result<RunDir, CheckpointError> {
        let run = RunDir {
            root: root.to_path_buf(),
        };
        std::fs::create_dir_all(run.checkpoint_dir()).map_err(io_err(root))?;
        Ok(run)
    }

    /// Opens an existing run directory; it must hold `config.json`.
    pub fn open(root: &Path) -> Result<RunDir, CheckpointError> {
        let run = RunDir {
            root: root.to_path_buf(),
        };
        if !root.is_dir() {
            return Err(CheckpointError::Missing {
                path: root.to_path_buf(),
                hint: "no such run directory; pass the --out directory of an earlier run".into(),
            });
        }
        if !run.config_path().is_file() {
            return Err(CheckpointError::Missing {
                path: run.config_path(),
                hint: "this is not a run directory (no config.json)".into(),
            });
        }
        Ok(run)
    }

    /// The run's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `RUN/config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }

    /// `RUN/metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `RUN/timing.jsonl`.
    pub fn timing_path(&self) -> PathBuf {
        self.root.join("timing.jsonl")
    }

    /// `RUN/checkpoint/`.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    /// `RUN/checkpoint/<name>`.
    pub fn checkpoint_file(&self, name: &str) -> PathBuf {
        self.checkpoint_dir().join(name)
    }

    /// Writes `config.json` (pretty JSON, atomically).
    pub fn write_config<T: Serialize>(&self, config: &T) -> Result<(), CheckpointError> {
        write_json(&self.config_path(), config)
    }

    /// Reads `config.json`.
    pub fn read_config<T: DeserializeOwned>(&self) -> Result<T, CheckpointError> {
        read_json(&self.config_path())
    }

    /// Appends one JSON line to `metrics.jsonl`.
    pub fn append_metrics<T: Serialize>(&self, record: &T) -> Result<(), CheckpointError> {
        append_json_line(&self.metrics_path(), record)
    }

    /// Appends one JSON line to `timing.jsonl`.
    pub fn append_timing<T: Serialize>(&self, record: &T) -> Result<(), CheckpointError> {
        append_json_line(&self.timing_path(), record)
    }
}

/// Appends `record` as one JSON line with a single `write` (a line is never split between
/// two writes, so an abrupt exit leaves whole lines, or a last line without its newline).
fn append_json_line<T: Serialize>(path: &Path, record: &T) -> Result<(), CheckpointError> {
    let mut line = serde_json::to_string(record).expect("metrics serialise");
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(line.as_bytes()).map_err(io_err(path))
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    let mut text = serde_json::to_string_pretty(value).expect("value serialises");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads JSON; a missing file is [`CheckpointError::Missing`], a bad one
/// [`CheckpointError::Corrupt`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let text = read_existing(path)?;
    serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn read_existing(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    if !path.exists() {
        return Err(CheckpointError::Missing {
            path: path.to_path_buf(),
            hint:
                "the run has no checkpoint yet; train it (or let it reach a checkpoint step) first"
                    .into(),
        });
    }
    std::fs::read(path).map_err(io_err(path))
}

/// Joins the module path stack into a tensor name such as `hidden.0.weight`.
#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn name(&self) -> String {
        self.0.join(".")
    }
}

/// One float parameter: name, shape and f32 values.
type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Visits a module's float parameters, recording name, shape and (optionally) values.
struct Collector<B: Backend> {
    path: PathStack,
    with_values: bool,
    out: Vec<NamedTensor>,
    _b: PhantomData<B>,
}

impl<B: Backend> ModuleVisitor<B> for Collector<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let values = if self.with_values {
            t.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("converted to f32")
        } else {
            Vec::new()
        };
        self.out.push((self.path.name(), shape, values));
    }
}

fn collect<B: Backend, M: Module<B>>(module: &M, with_values: bool) -> Vec<NamedTensor> {
    let mut c = Collector::<B> {
        path: PathStack::default(),
        with_values,
        out: Vec::new(),
        _b: PhantomData,
    };
    module.visit(&mut c);
    c.out
}

/// Names and shapes of a module's float parameters, in visiting order.
pub fn parameter_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    collect::<B, M>(module, false)
        .into_iter()
        .map(|(n, s, _)| (n, s))
        .collect()
}

/// Saves a module's float parameters as safetensors (f32, names = module paths), atomically.
pub fn save_module<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
) -> Result<(), CheckpointError> {
    let tensors = collect::<B, M>(module, true);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("shape matches data"),
            )
        })
        .collect();
    let encoded = safetensors::serialize(views, None).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("cannot encode: {e}"),
    })?;
    write_atomic(path, &encoded)
}

/// Replaces parameters by name from a validated map.
struct Loader<B: Backend> {
    path: PathStack,
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    _b: PhantomData<B>,
}

impl<B: Backend> ModuleMapper<B> for Loader<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, old, mapper) = param.consume();
        let (shape, values) = self
            .tensors
            .remove(&self.path.name())
            .expect("names validated before loading");
        let mut new = Tensor::<B, D>::from_data(TensorData::new(values, shape), &old.device());
        if old.is_require_grad() {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Tensors read from a safetensors file: name → (shape, `f32` values).
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads exactly the tensors `expected` (names and shapes) from safetensors `bytes`: every
/// name must be present with its shape and an `F32` or `F64` dtype, and no other tensor may
/// be. The first difference is the error; `path` names the file in it. Values are only
/// converted after their tensor passed the checks, so the output is bounded by the file.
pub fn read_tensors(
    bytes: &[u8],
    path: &Path,
    expected: &[(String, Vec<usize>)],
) -> Result<TensorMap, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{e}; the file is truncated or not a safetensors file"),
    })?;
    let mut tensors = BTreeMap::new();
    for (name, shape) in expected {
        let view = st
            .tensor(name)
            .map_err(|_| CheckpointError::MissingTensor {
                path: path.to_path_buf(),
                name: name.clone(),
            })?;
        if view.shape() != shape.as_slice() {
            return Err(CheckpointError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                found: view.shape().to_vec(),
                expected: shape.clone(),
            });
        }
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(CheckpointError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("tensor '{name}' has dtype {other:?}; expected F32 or F64"),
                });
            }
        };
        let n: usize = shape.iter().product();
        if values.len() != n {
            return Err(CheckpointError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "tensor '{name}' holds {} values for shape {shape:?} ({n} values)",
                    values.len()
                ),
            });
        }
        tensors.insert(name.clone(), (shape.clone(), values));
    }
    if let Some(extra) = st.names().into_iter().find(|n| !tensors.contains_key(*n)) {
        return Err(CheckpointError::UnexpectedTensor {
            path: path.to_path_buf(),
            name: extra.to_string(),
        });
    }
    Ok(tensors)
}

/// How far apart two checkpoint files of the same network (or of its optimiser's state) are,
/// over their `F32` tensors: what the data-parallel and resume tests bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// $\lVert a - b\rVert_2 / \lVert a\rVert_2$ over every value of every tensor.
    pub relative_l2: f64,
    /// The largest $\max|a - b| / \max|a|$ of any one tensor.
    pub worst_tensor: f64,
}

/// Compares two safetensors files tensor by tensor ([`Difference`]). Both must hold the same
/// `F32` tensor names with the same shapes (other dtypes, such as an optimiser's step counts,
/// are left out); the first difference in names or shapes is the error.
pub fn compare_checkpoints(a: &Path, b: &Path) -> Result<Difference, CheckpointError> {
    let read = |path: &Path| -> Result<TensorMap, CheckpointError> {
        let bytes = read_existing(path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{e}; the file is truncated or not a safetensors file"),
        })?;
        let expected: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .filter(|(_, v)| v.dtype() == Dtype::F32)
            .map(|(name, v)| (name, v.shape().to_vec()))
            .collect();
        let others: Vec<String> = st
            .tensors()
            .into_iter()
            .filter(|(_, v)| v.dtype() != Dtype::F32)
            .map(|(name, _)| name)
            .collect();
        // read_tensors refuses names it was not asked for: ask for the F32 ones and drop the
        // rest from a copy of the file that holds only those.
        if others.is_empty() {
            return read_tensors(&bytes, path, &expected);
        }
        let views: Vec<(String, TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .filter(|(_, v)| v.dtype() == Dtype::F32)
            .collect();
        let only = safetensors::serialize(views, None).map_err(|e| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        read_tensors(&only, path, &expected)
    };
    let (ta, tb) = (read(a)?, read(b)?);
    if let Some(name) = tb.keys().find(|n| !ta.contains_key(*n)) {
        return Err(CheckpointError::UnexpectedTensor {
            path: a.to_path_buf(),
            name: name.clone(),
        });
    }
    let (mut num, mut den, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for (name, (shape, va)) in &ta {
        let Some((shape_b, vb)) = tb.get(name) else {
            return Err(CheckpointError::MissingTensor {
                path: b.to_path_buf(),
                name: name.clone(),
            });
        };
        if shape != shape_b {
            return Err(CheckpointError::ShapeMismatch {
                path: b.to_path_buf(),
                name: name.clone(),
                found: shape_b.clone(),
                expected: shape.clone(),
            });
        }
        let (mut diff, mut scale) = (0.0f64, 0.0f64);
        for (x, y) in va.iter().zip(vb) {
            let (x, y) = (f64::from(*x), f64::from(*y));
            num += (x - y).powi(2);
            den += x * x;
            diff = diff.max((x - y).abs());
            scale = scale.max(x.abs());
        }
        worst = worst.max(diff / scale.max(1e-30));
    }
    Ok(Difference {
        relative_l2: (num / den.max(1e-300)).sqrt(),
        worst_tensor: worst,
    })
}

/// Loads a module's float parameters from a safetensors file written by [`save_module`].
/// Every name and shape is checked before any parameter is replaced ([`read_tensors`]); the
/// error names the first tensor that differs and both shapes.
pub fn load_module<B: Backend, M: Module<B>>(module: M, path: &Path) -> Result<M, CheckpointError> {
    let bytes = read_existing(path)?;
    let expected = parameter_shapes::<B, M>(&module);
    let tensors = read_tensors(&bytes, path, &expected)?;
    let mut loader = Loader::<B> {
        path: PathStack::default(),
        tensors,
        _b: PhantomData,
    };
    Ok(module.map(&mut loader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::{Linear, LinearConfig};

    type B = Flex;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        layers: Vec<Linear<B>>,
        out: Linear<B>,
    }

    fn tiny(d_in: usize) -> Tiny<B> {
        let device = Default::default();
        Tiny {
            layers: vec![LinearConfig::new(d_in, 4).init(&device)],
            out: LinearConfig::new(4, 2).init(&device),
        }
    }

    fn values(m: &Tiny<B>) -> Vec<NamedTensor> {
        collect::<B, _>(m, true)
    }

    /// `compare_checkpoints` against the sums written out: two tensors, one of them changed
    /// in one entry; an `I64` tensor (an optimiser's step counts) is left out; other names or
    /// shapes are errors.
    #[test]
    fn checkpoint_differences_are_the_norms_written_out() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, w: &[f32], v: &[f32], shape_v: Vec<usize>| {
            let bytes = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|f| f.to_le_bytes()).collect() };
            let (bw, bv, bt) = (bytes(w), bytes(v), 7i64.to_le_bytes().to_vec());
            let views = vec![
                (
                    "w".to_string(),
                    TensorView::new(Dtype::F32, vec![2, 2], &bw).unwrap(),
                ),
                (
                    "v".to_string(),
                    TensorView::new(Dtype::F32, shape_v, &bv).unwrap(),
                ),
                (
                    "time".to_string(),
                    TensorView::new(Dtype::I64, vec![1], &bt).unwrap(),
                ),
            ];
            let p = dir.path().join(name);
            std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
            p
        };
        let a = write("a", &[1.0, -2.0, 3.0, 4.0], &[0.5, 0.5], vec![2]);
        let b = write("b", &[1.0, -2.0, 3.5, 4.0], &[0.5, 0.5], vec![2]);
        let d = compare_checkpoints(&a, &b).unwrap();
        // ‖Δ‖² = 0.25, ‖a‖² = 1 + 4 + 9 + 16 + 0.25 + 0.25 = 30.5; worst: w, 0.5 / 4.
        assert!(
            (d.relative_l2 - (0.25f64 / 30.5).sqrt()).abs() < 1e-12,
            "{d:?}"
        );
        assert!((d.worst_tensor - 0.125).abs() < 1e-12, "{d:?}");
        assert_eq!(compare_checkpoints(&a, &a).unwrap().relative_l2, 0.0);
        let c = write("c", &[1.0, -2.0, 3.0, 4.0], &[0.5, 0.5], vec![1, 2]);
        assert!(matches!(
            compare_checkpoints(&a, &c),
            Err(CheckpointError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            compare_checkpoints(&a, &dir.path().join("none")),
            Err(CheckpointError::Missing { .. })
        ));
    }

    /// Checkpointed f64 state (the time-bin means `b_k`, EMA statistics, driver state) goes
    /// through `write_json`/`read_json`: every value must come back bit for bit, or a resumed
    /// run drifts from one that ran through. serde_json's default float parser is not
    /// correctly rounded (about one value in a few hundred came back 1 ulp off); the
    /// workspace enables its `float_roundtrip` feature, without which this test fails.
    #[test]
    fn json_state_round_trips_every_f64_bit_for_bit() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        // Values of every scale, as running means and losses take, plus edge cases.
        let mut values: Vec<f64> = (0..20_000)
            .map(|_| {
                let mantissa: f64 = rng.random::<f64>() + 0.5;
                let exponent = rng.random_range(-30..30);
                let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
                sign * mantissa * 10f64.powi(exponent)
            })
            .collect();
        values.extend([
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
            0.1,
            1.0 / 3.0,
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_json(&path, &values).unwrap();
        let back: Vec<f64> = read_json(&path).unwrap();
        assert_eq!(back.len(), values.len());
        let off: Vec<(f64, f64)> = values
            .iter()
            .zip(&back)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .map(|(a, b)| (*a, *b))
            .take(5)
            .collect();
        assert!(off.is_empty(), "values changed on the round trip: {off:?}");
    }

    #[test]
    fn round_trip_restores_every_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let a = tiny(3);
        save_module::<B, _>(&a, &p).unwrap();
        let b = load_module::<B, _>(tiny(3), &p).unwrap();
        assert_eq!(values(&a), values(&b));
        let names: Vec<String> = values(&a).into_iter().map(|t| t.0).collect();
        assert_eq!(
            names,
            ["layers.0.weight", "layers.0.bias", "out.weight", "out.bias"]
        );
        // A fresh init differs, so the test above can fail.
        assert_ne!(values(&a), values(&tiny(3)));
    }

    #[test]
    fn shape_mismatch_names_the_tensor_and_both_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        save_module::<B, _>(&tiny(2), &p).unwrap();
        let e = load_module::<B, _>(tiny(3), &p).unwrap_err().to_string();
        assert!(
            e.contains("tensor 'layers.0.weight': checkpoint has [2, 4], model expects [3, 4]"),
            "{e}"
        );
    }

    #[test]
    fn truncated_missing_and_foreign_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        save_module::<B, _>(&tiny(3), &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = load_module::<B, _>(tiny(3), &p).unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = load_module::<B, _>(tiny(3), &dir.path().join("none.safetensors")).unwrap_err();
        assert!(matches!(e, CheckpointError::Missing { .. }), "{e}");
        let e = RunDir::open(&dir.path().join("no_such_run"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no_such_run") && e.contains("does not exist"),
            "{e}"
        );
        // A different network: a tensor the model lacks.
        #[derive(Module, Debug)]
        struct Other<B: Backend> {
            layers: Vec<Linear<B>>,
        }
        let q = dir.path().join("other.safetensors");
        save_module::<B, _>(&tiny(3), &q).unwrap();
        let other = Other::<B> {
            layers: vec![LinearConfig::new(3, 4).init(&Default::default())],
        };
        let e = load_module::<B, _>(other, &q).unwrap_err().to_string();
        assert!(e.contains("'out."), "{e}");
    }

    #[test]
    fn run_dir_files_are_written_atomically_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(&dir.path().join("run")).unwrap();
        run.write_config(&serde_json::json!({"a": 1})).unwrap();
        run.write_config(&serde_json::json!({"a": 2})).unwrap();
        let v: serde_json::Value = RunDir::open(run.root()).unwrap().read_config().unwrap();
        assert_eq!(v["a"], 2);
        run.append_metrics(&serde_json::json!({"step": 1})).unwrap();
        run.append_metrics(&serde_json::json!({"step": 2})).unwrap();
        let text = std::fs::read_to_string(run.metrics_path()).unwrap();
        assert_eq!(text, "{\"step\":1}\n{\"step\":2}\n");
        // No temporary files left behind.
        let leftovers: Vec<_> = std::fs::read_dir(run.root())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::write(run.config_path(), "{not json").unwrap();
        let e = run.read_config::<serde_json::Value>().unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }));
    }
}
