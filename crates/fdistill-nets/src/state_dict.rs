//! EDM state dicts: read `.safetensors` and PyTorch `.pt`/`.pth` files (zip or legacy pickle,
//! through burn-store's reader — no Python), write safetensors, and move weights between a
//! state dict and fdistill's EDM networks under EDM's parameter names.
//!
//! ```text
//! file key = prefix + name      name as EDM's networks call it: `map_layer0.weight`,
//!                               `enc.32x32_block0.conv0.weight`, `dec.16x16_in0.qkv.bias`, …
//! prefix   = "model."           EDMPrecond.state_dict() (EDM, FastGen; what fdistill writes)
//!          | "ema.model."        …  or any other wrapper's prefix
//!          | ""                 a bare SongUNet / DhariwalUNet state dict
//! ```
//!
//! [`KeyPrefix::Auto`] finds the prefix from the unique key ending in `map_layer0.weight`.
//! Loading checks every tensor before replacing any: all missing, unexpected and mis-shaped
//! tensors (with both shapes) and every `resample_filter` buffer whose values differ from the
//! configuration's filter are reported in one [`WeightsError::Mismatch`].
//!
//! [`StateDict::write_pytorch`] writes what `torch.save(state_dict, path)` writes (the zip
//! format: `archive/data.pkl`, one `archive/data/N` file per tensor, `archive/version`), with
//! a pickle of only the globals `torch.load(..., weights_only=True)` allows; burn-store reads
//! but cannot write `.pt` files (its `PytorchStore` refuses to save), hence this small writer.
//! [`StateDict::write_safetensors`] writes the same tensors for `safetensors.torch.load_file`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use thiserror::Error;

/// One tensor of a state dict: shape and `f32` values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

impl StateTensor {
    /// A tensor of `shape` holding `values`.
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        StateTensor { shape, values }
    }

    /// As a burn tensor on `device`.
    ///
    /// # Panics
    /// If `D` differs from the number of dimensions.
    pub fn to_tensor<B: Backend, const D: usize>(&self, device: &B::Device) -> Tensor<B, D> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), self.shape.clone()),
            device,
        )
    }

    /// From a burn tensor.
    pub fn from_tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("converted to f32");
        StateTensor { shape, values }
    }
}

/// Errors of state-dict reading, writing and loading.
#[derive(Debug, Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Neither `.safetensors` nor `.pt`/`.pth`.
    #[error(
        "`{path}`: unknown weight format; use a .safetensors file or a PyTorch .pt/.pth state dict \
         (EDM's .pkl network pickles: convert them with tools/edm_pickle_to_safetensors.py)"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be decoded.
    #[error("`{path}` is not a readable {format} file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// `safetensors` or `PyTorch`.
        format: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// A tensor of an element type that is not a float.
    #[error(
        "`{path}`: tensor '{name}' has element type {dtype}; only float tensors (f16, bf16, f32, f64) are weights"
    )]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its element type.
        dtype: String,
    },
    /// The prefix of the network's keys could not be determined.
    #[error("{0}")]
    Prefix(String),
    /// Names, shapes or buffers differ from the network's.
    #[error("{0}")]
    Mismatch(Box<MismatchReport>),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A state dict: tensor name → tensor, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    /// The tensors.
    pub tensors: BTreeMap<String, StateTensor>,
    /// Where it came from (a path, or a description), for error messages.
    pub source: String,
}

impl StateDict {
    /// Reads a `.safetensors` or PyTorch `.pt`/`.pth` file (by extension).
    pub fn read(path: &Path) -> Result<Self, WeightsError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Self::read_safetensors(path),
            Some("pt" | "pth") => Self::read_pytorch(path),
            _ => Err(WeightsError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    /// Reads a safetensors file; f16, bf16 and f64 tensors are converted to f32.
    pub fn read_safetensors(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: "safetensors",
            reason: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let values = decode(&view).ok_or_else(|| WeightsError::Dtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            tensors.insert(name, StateTensor::new(view.shape().to_vec(), values));
        }
        Ok(StateDict {
            tensors,
            source: path.display().to_string(),
        })
    }

    /// Reads a PyTorch state dict saved with `torch.save` (zip or legacy format; tensors
    /// nested in dicts get dotted names). Needs no Python: burn-store's reader decodes the
    /// pickle's tensor references only.
    pub fn read_pytorch(path: &Path) -> Result<Self, WeightsError> {
        if !path.exists() {
            return Err(WeightsError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let corrupt = |reason: String| WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: "PyTorch",
            reason,
        };
        let file_len = std::fs::metadata(path).map_err(io_err(path))?.len();
        // burn-store allocates the lengths the pickle states before reading them: walk the
        // stream first so a forged length is an error, not a multi-gigabyte allocation.
        crate::pickle_bounds::check_pytorch_file(path).map_err(corrupt)?;
        let reader =
            burn_store::pytorch::PytorchReader::new(path).map_err(|e| corrupt(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, snap) in reader.into_tensors() {
            if !snap.dtype.is_float() {
                return Err(WeightsError::Dtype {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{:?}", snap.dtype),
                });
            }
            // The pickle states shapes; the data must be in the file (stored uncompressed in
            // both formats). Checked before materialising, so a forged shape is an error,
            // not an allocation of what the header merely claims (found by fuzzing).
            let dims: Vec<usize> = snap.shape.iter().map(|d| d.to_owned()).collect();
            let claimed = dims
                .iter()
                .try_fold(snap.dtype.size(), |acc, &d| acc.checked_mul(d));
            if claimed.is_none_or(|b| b as u64 > file_len) {
                return Err(corrupt(format!(
                    "tensor '{name}' of shape {dims:?} needs more bytes than the whole file \
                     ({file_len} bytes)"
                )));
            }
            let data = snap
                .to_data()
                .map_err(|e| corrupt(format!("tensor '{name}': {e:?}")))?;
            let shape = data.shape.to_vec();
            let values = data
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| corrupt(format!("tensor '{name}': {e:?}")))?;
            tensors.insert(name, StateTensor::new(shape, values));
        }
        Ok(StateDict {
            tensors,
            source: path.display().to_string(),
        })
    }

    /// Writes all tensors as f32 safetensors (names sorted).
    pub fn write_safetensors(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes: Vec<(&String, &StateTensor, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n,
                    t,
                    t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, t, b)| {
                let view = TensorView::new(Dtype::F32, t.shape.clone(), b)
                    .expect("shape matches the data");
                ((*n).clone(), view)
            })
            .collect();
        let encoded = safetensors::serialize(views, None).map_err(|e| WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: "safetensors",
            reason: format!("cannot encode: {e}"),
        })?;
        std::fs::write(path, encoded).map_err(io_err(path))
    }

    /// Writes all tensors as a PyTorch state dict in `torch.save`'s zip format (f32, names
    /// sorted), loadable with `torch.load(path, weights_only=True)` and
    /// `module.load_state_dict(...)`. The pickle (protocol 2) is a `dict` of
    /// `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, each
    /// storage a `torch.FloatStorage` in `archive/data/{i}` (64-byte aligned, as torch writes).
    pub fn write_pytorch(&self, path: &Path) -> Result<(), WeightsError> {
        use std::io::Write as _;
        let corrupt = |reason: String| WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: "PyTorch",
            reason,
        };
        let file = std::fs::File::create(path).map_err(io_err(path))?;
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .with_alignment(64)
            .large_file(true);
        let mut put = |name: &str, bytes: &[u8]| -> Result<(), WeightsError> {
            zip.start_file(format!("archive/{name}"), options)
                .map_err(|e| corrupt(format!("cannot write `{name}`: {e}")))?;
            zip.write_all(bytes).map_err(io_err(path))
        };
        let mut pickle = Pickle::default();
        pickle.0.extend_from_slice(&[0x80, 2, b'}', b'(']); // PROTO 2, EMPTY_DICT, MARK
        for (i, (name, t)) in self.tensors.iter().enumerate() {
            let numel = t.values.len();
            if numel > i32::MAX as usize || t.shape.iter().any(|&d| d > i32::MAX as usize) {
                return Err(corrupt(format!(
                    "tensor '{name}' is too large for this writer"
                )));
            }
            pickle.unicode(name);
            pickle.global("torch._utils", "_rebuild_tensor_v2");
            pickle.0.push(b'('); // MARK: the arguments
            pickle.0.push(b'('); // MARK: the persistent id
            pickle.unicode("storage");
            pickle.global("torch", "FloatStorage");
            pickle.unicode(&i.to_string());
            pickle.unicode("cpu");
            pickle.int(numel);
            pickle.0.extend_from_slice(b"tQ"); // TUPLE, BINPERSID
            pickle.int(0); // storage offset
            pickle.ints(&t.shape);
            let mut stride = vec![1usize; t.shape.len()];
            for d in (0..t.shape.len().saturating_sub(1)).rev() {
                stride[d] = stride[d + 1] * t.shape[d + 1];
            }
            pickle.ints(&stride);
            pickle.0.push(0x89); // NEWFALSE: requires_grad
            pickle.global("collections", "OrderedDict");
            pickle.0.extend_from_slice(b")R"); // EMPTY_TUPLE, REDUCE: backward hooks
            pickle.0.extend_from_slice(b"tR"); // TUPLE, REDUCE
            let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            put(&format!("data/{i}"), &bytes)?;
        }
        pickle.0.extend_from_slice(b"u."); // SETITEMS, STOP
        put("data.pkl", &pickle.0)?;
        put("byteorder", b"little")?;
        put("version", b"3\n")?;
        zip.finish()
            .map_err(|e| corrupt(format!("cannot finish the zip: {e}")))?
            .flush()
            .map_err(io_err(path))
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&StateTensor> {
        self.tensors.get(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Resolves `prefix` against this dict's keys; see [`KeyPrefix`].
    pub fn resolve_prefix(&self, prefix: &KeyPrefix) -> Result<String, WeightsError> {
        const ANCHOR: &str = "map_layer0.weight";
        match prefix {
            KeyPrefix::Exact(p) => Ok(p.clone()),
            KeyPrefix::Auto => {
                let found: Vec<&str> = self
                    .tensors
                    .keys()
                    .filter_map(|k| k.strip_suffix(ANCHOR))
                    .filter(|p| p.is_empty() || p.ends_with('.'))
                    .collect();
                match found.as_slice() {
                    [one] => Ok(one.to_string()),
                    [] => Err(WeightsError::Prefix(format!(
                        "`{}` has no tensor named `…{ANCHOR}`: it is not the state dict of an EDM \
                         SongUNet/DhariwalUNet (EDMPrecond). Keys start with: {}",
                        self.source,
                        self.key_sample()
                    ))),
                    many => Err(WeightsError::Prefix(format!(
                        "`{}` holds several networks (prefixes {}); choose one explicitly, e.g. \
                         `ema.model.` for the EMA weights",
                        self.source,
                        many.iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                }
            }
        }
    }

    fn key_sample(&self) -> String {
        let keys: Vec<&str> = self.tensors.keys().take(5).map(String::as_str).collect();
        if keys.is_empty() {
            "(no tensors)".into()
        } else {
            format!("{}, …", keys.join(", "))
        }
    }
}

/// The pickle opcodes [`StateDict::write_pytorch`] needs (protocol 2).
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    /// BINUNICODE: a `str`.
    fn unicode(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    /// GLOBAL `module.name`.
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        for part in [module, name] {
            self.0.extend_from_slice(part.as_bytes());
            self.0.push(b'\n');
        }
    }
    /// BININT: a signed 32-bit `int` (callers keep values below 2³¹).
    fn int(&mut self, v: usize) {
        self.0.push(b'J');
        self.0.extend_from_slice(&(v as i32).to_le_bytes());
    }
    /// A tuple of ints: MARK, the ints, TUPLE.
    fn ints(&mut self, vs: &[usize]) {
        self.0.push(b'(');
        for &v in vs {
            self.int(v);
        }
        self.0.push(b't');
    }
}

fn decode(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let d = view.data();
    Some(match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Which keys of a file hold the network: `prefix + name`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyPrefix {
    /// The unique prefix in front of `map_layer0.weight` (`model.` for EDM's state dicts).
    #[default]
    Auto,
    /// Exactly this prefix (`"model."`, `"ema.model."`, `""`, …).
    Exact(String),
}

impl std::str::FromStr for KeyPrefix {
    type Err = std::convert::Infallible;

    /// `auto` → [`KeyPrefix::Auto`], `none` → `""`, anything else verbatim.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => KeyPrefix::Auto,
            "none" => KeyPrefix::Exact(String::new()),
            p => KeyPrefix::Exact(p.to_string()),
        })
    }
}

/// Whether a state-dict entry is a trained parameter or a fixed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A parameter (EDM's `named_parameters`).
    Parameter,
    /// A buffer (`resample_filter`; NCSN++'s `map_noise.freqs`).
    Buffer,
}

/// One state-dict entry of a network: name (without prefix), shape, kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// EDM's name, e.g. `enc.32x32_block0.conv0.weight`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Parameter or buffer.
    pub kind: EntryKind,
}

/// Every way a state dict failed to match a network, for one error message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MismatchReport {
    /// Where the state dict came from.
    pub source: String,
    /// The prefix used.
    pub prefix: String,
    /// Expected but absent: `(key, expected shape)`.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Present under the prefix but not part of the network: `(key, shape)`.
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// Same key, different shape: `(key, file shape, network shape)`.
    pub mis_shaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// `resample_filter` buffers whose values differ from the configured filter.
    pub wrong_buffers: Vec<String>,
}

impl MismatchReport {
    /// Whether nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mis_shaped.is_empty()
            && self.wrong_buffers.is_empty()
    }
}

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "state dict `{}` (prefix `{}`) does not match the network: {} missing, {} unexpected, \
             {} mis-shaped tensors, {} buffers with other values",
            self.source,
            self.prefix,
            self.missing.len(),
            self.unexpected.len(),
            self.mis_shaped.len(),
            self.wrong_buffers.len()
        )?;
        for (k, s) in &self.missing {
            writeln!(f, "  missing     {k} {s:?}")?;
        }
        for (k, s) in &self.unexpected {
            writeln!(f, "  unexpected  {k} {s:?}")?;
        }
        for (k, file, net) in &self.mis_shaped {
            writeln!(f, "  mis-shaped  {k}: file {file:?}, network {net:?}")?;
        }
        for k in &self.wrong_buffers {
            writeln!(
                f,
                "  buffer      {k}: values differ from the configured resample_filter"
            )?;
        }
        write!(
            f,
            "check the architecture (model_channels, channel_mult, num_blocks, attn_resolutions, \
             label_dim, augment_dim, embedding/encoder/decoder type, resample_filter) and the key \
             prefix (`model.` for EDMPrecond, `ema.model.` for an EMA copy, `none` for a bare UNet)"
        )
    }
}

/// Joins a module path and a field: `sub_name("enc.8x8_block0", "conv0")`.
pub fn sub_name(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

/// Receives every tensor of an EDM network under its EDM name, and may replace parameters.
pub trait EdmMapper<B: Backend> {
    /// A parameter; returns it (replaced or not).
    fn param<const D: usize>(&mut self, name: &str, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>>;
    /// A fixed buffer with its value (from the configuration).
    fn buffer(&mut self, name: &str, value: StateTensor);
    /// A buffer that is stored as a non-trainable parameter (NCSN++'s `map_noise.freqs`):
    /// loaded and saved like a parameter, listed as a buffer.
    fn stored_buffer<const D: usize>(
        &mut self,
        name: &str,
        p: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        self.param(name, p)
    }
}

/// A module whose tensors have EDM names.
pub trait EdmNamed<B: Backend>: Sized {
    /// Passes every parameter and buffer, named `name.field…`, through `m`.
    fn map_edm<M: EdmMapper<B>>(self, name: &str, m: &mut M) -> Self;
}

/// Lists names and shapes without materialising lazily initialised parameters.
pub(crate) struct SpecCollector<B>(pub Vec<EntrySpec>, pub PhantomData<B>);

impl<B: Backend> EdmMapper<B> for SpecCollector<B> {
    fn param<const D: usize>(&mut self, name: &str, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape = p.lazy_shape().to_vec();
        self.0.push(EntrySpec {
            name: name.to_string(),
            shape,
            kind: EntryKind::Parameter,
        });
        p
    }
    fn buffer(&mut self, name: &str, value: StateTensor) {
        self.0.push(EntrySpec {
            name: name.to_string(),
            shape: value.shape,
            kind: EntryKind::Buffer,
        });
    }
    fn stored_buffer<const D: usize>(
        &mut self,
        name: &str,
        p: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        self.0.push(EntrySpec {
            name: name.to_string(),
            shape: p.lazy_shape().to_vec(),
            kind: EntryKind::Buffer,
        });
        p
    }
}

/// Copies every tensor into a [`StateDict`] under `prefix + name`.
pub(crate) struct Exporter<B> {
    pub prefix: String,
    pub out: BTreeMap<String, StateTensor>,
    pub _b: PhantomData<B>,
}

impl<B: Backend> EdmMapper<B> for Exporter<B> {
    fn param<const D: usize>(&mut self, name: &str, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.out.insert(
            format!("{}{name}", self.prefix),
            StateTensor::from_tensor(p.val()),
        );
        p
    }
    fn buffer(&mut self, name: &str, value: StateTensor) {
        self.out.insert(format!("{}{name}", self.prefix), value);
    }
}

/// Checks every tensor against a state dict (first pass), then replaces them (second pass).
pub(crate) struct Importer<'a, B> {
    pub sd: &'a StateDict,
    pub prefix: String,
    pub report: MismatchReport,
    pub used: std::collections::BTreeSet<String>,
    /// Replace parameters (second pass) or only check (first pass).
    pub apply: bool,
    pub _b: PhantomData<B>,
}

impl<'a, B: Backend> Importer<'a, B> {
    pub fn new(sd: &'a StateDict, prefix: String, apply: bool) -> Self {
        Importer {
            sd,
            report: MismatchReport {
                source: sd.source.clone(),
                prefix: prefix.clone(),
                ..Default::default()
            },
            prefix,
            used: Default::default(),
            apply,
            _b: PhantomData,
        }
    }

    /// The file's tensor for `name` if it has the expected shape; records the problem else.
    fn lookup(&mut self, name: &str, expected: &[usize]) -> Option<&'a StateTensor> {
        let key = format!("{}{name}", self.prefix);
        match self.sd.get(&key) {
            None => {
                self.report.missing.push((key, expected.to_vec()));
                None
            }
            Some(t) => {
                self.used.insert(key.clone());
                if t.shape != expected {
                    self.report
                        .mis_shaped
                        .push((key, t.shape.clone(), expected.to_vec()));
                    None
                } else {
                    Some(t)
                }
            }
        }
    }

    /// Records the keys under the prefix that no tensor of the network claimed.
    pub fn finish(mut self) -> MismatchReport {
        for (k, t) in &self.sd.tensors {
            if k.starts_with(&self.prefix) && !self.used.contains(k) {
                self.report.unexpected.push((k.clone(), t.shape.clone()));
            }
        }
        self.report
    }
}

impl<B: Backend> EdmMapper<B> for Importer<'_, B> {
    fn param<const D: usize>(&mut self, name: &str, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let expected = p.lazy_shape().to_vec();
        let Some(t) = self.lookup(name, &expected) else {
            return p;
        };
        if !self.apply {
            return p;
        }
        // Keeps the id, device and gradient requirement without materialising the old value.
        let id = p.id;
        let value = t.to_tensor::<B, D>(&p.lazy_device());
        p.transform_for_load(value, id)
    }

    fn buffer(&mut self, name: &str, value: StateTensor) {
        if let Some(t) = self.lookup(name, &value.shape)
            && t.values
                .iter()
                .zip(&value.values)
                .any(|(a, b)| (a - b).abs() > 1e-6)
        {
            let key = format!("{}{name}", self.prefix);
            self.report.wrong_buffers.push(key);
        }
    }
}
