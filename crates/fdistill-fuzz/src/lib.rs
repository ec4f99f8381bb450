//! Fuzz targets for fdistill's loaders, and the mutator of the stable harness.
//!
//! Every target takes arbitrary bytes and feeds them to one loader the way the command line
//! does; it may return an error (that is the loader's job) but must never panic, hang or
//! allocate more than the input can justify. The runner (`src/main.rs`) mutates the seed
//! files in `seeds/<target>/` and enforces all three; `tests/replay.rs` replays the seeds and
//! every past finding in `regressions/<target>/`.
//!
//! | target | loader |
//! |---|---|
//! | `idx` | IDX images (raw) → labelled images → padding and `@16` downsampling |
//! | `idx-gz` | the same from gzip-compressed IDX (decompression capped) |
//! | `npy` | NPY sample files |
//! | `csv` | CSV sample files (separator detection, headers) |
//! | `png-folder` | a folder of PNGs (flat or class subfolders) → padding, `@16` |
//! | `safetensors` | checkpoint weights against a network's names and shapes |
//! | `optim-state` | a checkpoint's AdamW state, then one optimiser step with it |
//! | `config-json` | JSON configs: `DistillConfig`, `TeacherConfig`, `MlpDenoiserConfig` (each with `check()`), checkpoint state files |
//! | `config-toml` | TOML distillation configs, as `--config x.toml` reads them |
//! | `state-dict` | EDM state dicts: the bytes as a PyTorch `.pt` (zip or legacy pickle) and as a `.safetensors` file, then the key-prefix search |
//!
//! The `.pt` seeds of `state-dict` come from PyTorch (`tools/fuzz_state_dict_seeds.py`); its
//! safetensors seeds, like every other target's seeds, from [`write_seeds`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use fdistill_core::Denoiser;
use fdistill_data::idx::{IdxArray, decode_maybe_gzip, labelled_images, parse_idx_u8};
use fdistill_data::images::{ImageSet, load_png_folder};
use fdistill_data::{parse_csv, parse_npy, pooled_std, prepare_images};
use fdistill_nets::state_dict::{KeyPrefix, StateDict, StateTensor};
use fdistill_nets::{MlpDenoiser, MlpDenoiserConfig};
use fdistill_train::checkpoint::{parameter_shapes, read_tensors};
use fdistill_train::distill::DistillConfig;
use fdistill_train::distill::driver::{DriverState, adamw, load_adamw, save_adamw};
use fdistill_train::teacher::{TeacherCheckpointState, TeacherConfig};
use rand::{Rng, RngExt};

/// The autodiff backend of the optimiser-state target.
pub type A = Autodiff<Flex>;

/// One fuzz target.
pub struct Target {
    /// Name (also the folder of its seeds and regressions).
    pub name: &'static str,
    /// What it loads.
    pub what: &'static str,
    /// The target: any bytes, no panic.
    pub run: fn(&[u8]),
    /// Text format: text mutations (numbers, nesting) apply too.
    pub text: bool,
}

/// Every target, in the order the runner takes them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "idx",
        what: "IDX images (raw) and the image-source pipeline",
        run: idx,
        text: false,
    },
    Target {
        name: "idx-gz",
        what: "gzip-compressed IDX images",
        run: idx,
        text: false,
    },
    Target {
        name: "npy",
        what: "NPY sample files",
        run: npy,
        text: false,
    },
    Target {
        name: "csv",
        what: "CSV sample files",
        run: csv,
        text: true,
    },
    Target {
        name: "png-folder",
        what: "PNG folders",
        run: png_folder,
        text: false,
    },
    Target {
        name: "safetensors",
        what: "safetensors checkpoint weights",
        run: safetensors,
        text: false,
    },
    Target {
        name: "optim-state",
        what: "AdamW checkpoint state, then one optimiser step",
        run: optim_state,
        text: false,
    },
    Target {
        name: "config-json",
        what: "JSON configs and checkpoint state files",
        run: config_json,
        text: true,
    },
    Target {
        name: "config-toml",
        what: "TOML distillation configs",
        run: config_toml,
        text: true,
    },
    Target {
        name: "state-dict",
        what: "PyTorch .pt and safetensors state dicts",
        run: state_dict,
        text: false,
    },
];

/// Registers the built-in divergences (so `DistillConfig::check` resolves names); call
/// before running targets.
pub fn link() {
    fdistill_divergences::link();
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Where the crate's seeds and regressions live.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `crate_dir()/kind/target`, sorted (`kind` is `seeds` or `regressions`).
pub fn corpus(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = crate_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect()
}

/// A scratch directory for the targets that need files, one per process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        // tmpfs when there is one: the folder target writes files on every input.
        let base = Path::new("/dev/shm");
        if base.is_dir() {
            tempfile::Builder::new()
                .prefix("fdistill-fuzz")
                .tempdir_in(base)
                .or_else(|_| tempfile::tempdir())
        } else {
            tempfile::tempdir()
        }
        .expect("a scratch directory")
    })
    .path()
}

fn image_pipeline(set: ImageSet) {
    if let Ok(s) = prepare_images(set.clone(), Some(16)) {
        assert_eq!(s.pixels.len(), s.n * s.channels * 16 * 16);
    }
    if let Ok(s) = prepare_images(set, None) {
        assert_eq!(s.pixels.len(), s.n * s.channels * s.height * s.width);
    }
}

/// IDX bytes (raw or gzip): decoded, parsed, and for a 3-D array paired with labels and sent
/// through padding and downsampling as `--data idx:…@16` does.
pub fn idx(data: &[u8]) {
    let path = Path::new("fuzz.idx");
    let Ok(bytes) = decode_maybe_gzip(data.to_vec(), path) else {
        return;
    };
    let Ok(arr) = parse_idx_u8(&bytes, path) else {
        return;
    };
    let n = arr.dims[0];
    // Labels can only be as many as the data holds (an image has ≥ 1 byte).
    if arr.dims.len() == 3 && n <= arr.data.len() {
        let labels = IdxArray {
            dims: vec![n],
            data: (0..n).map(|i| (i % 10) as u8).collect(),
        };
        if let Ok(l) = labelled_images(arr, path, labels, Path::new("labels.idx")) {
            assert_eq!(l.pixels.len(), l.n * l.height * l.width);
            image_pipeline(ImageSet::from(l));
        }
    }
}

/// NPY bytes, then the pooled std (σ_data) of the samples.
pub fn npy(data: &[u8]) {
    if let Ok(d) = parse_npy(data, Path::new("fuzz.npy")) {
        assert_eq!(d.values.len() % d.dim, 0);
        let s = pooled_std(&d.values, d.dim);
        assert!(s.is_finite() || d.values.iter().any(|v| v.abs() > 1e150));
    }
}

/// CSV text, then the pooled std of the samples.
pub fn csv(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_csv(text, Path::new("fuzz.csv")) {
        assert!(d.dim > 0 && d.values.len().is_multiple_of(d.dim));
        let _ = pooled_std(&d.values, d.dim);
    }
}

/// Separates the PNG files of one `png-folder` input.
pub const PNG_SEPARATOR: &[u8] = b"--next-png--";

/// A PNG folder: the input is `layout byte ‖ file ‖ SEP ‖ file ‖ …`; an odd layout byte puts
/// the files into two class subfolders. The folder is loaded, padded and downsampled.
pub fn png_folder(data: &[u8]) {
    let Some((&layout, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch().join("png");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let mut files = Vec::new();
    let mut start = 0;
    while let Some(i) = find(&rest[start..], PNG_SEPARATOR) {
        files.push(&rest[start..start + i]);
        start += i + PNG_SEPARATOR.len();
    }
    files.push(&rest[start..]);
    for (k, bytes) in files.iter().take(8).enumerate() {
        let sub = if layout % 2 == 1 {
            dir.join(format!("class{}", k % 2))
        } else {
            dir.clone()
        };
        std::fs::create_dir_all(&sub).expect("scratch folder");
        std::fs::File::create(sub.join(format!("{k}.png")))
            .and_then(|mut f| f.write_all(bytes))
            .expect("scratch file");
    }
    if let Ok(set) = load_png_folder(&dir) {
        assert_eq!(set.pixels.len(), set.n * set.dim());
        image_pipeline(set);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The tiny network whose checkpoints seed the `safetensors` and `optim-mpk` targets.
pub fn tiny_net_config() -> MlpDenoiserConfig {
    let mut c = MlpDenoiserConfig::new(2, 1.0);
    c.hidden = 8;
    c.depth = 2;
    c.embedding_size = 4;
    c
}

fn tiny_net() -> MlpDenoiser<A> {
    let device = Default::default();
    let net = tiny_net_config().init::<A>(&device);
    // Constant weights: no draw from the backend's shared RNG.
    net.map(&mut ConstParams)
}

struct ConstParams;

impl burn::module::ModuleMapper<A> for ConstParams {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<A, D>>,
    ) -> burn::module::Param<Tensor<A, D>> {
        let (id, t, mapper) = param.consume();
        let t = t.zeros_like().add_scalar(0.1).detach().require_grad();
        burn::module::Param::from_mapped_value(id, t, mapper)
    }
}

/// Safetensors bytes checked against the tiny network's tensor names and shapes.
pub fn safetensors(data: &[u8]) {
    static EXPECTED: OnceLock<Vec<(String, Vec<usize>)>> = OnceLock::new();
    let expected = EXPECTED.get_or_init(|| {
        parameter_shapes::<Flex, _>(&tiny_net_config().init::<Flex>(&Default::default()))
    });
    if let Ok(t) = read_tensors(data, Path::new("fuzz.safetensors"), expected) {
        for (name, shape) in expected {
            let (s, v) = &t[name];
            assert_eq!(s, shape);
            assert_eq!(v.len(), shape.iter().product::<usize>());
        }
    }
}

/// An AdamW state file loaded onto the tiny network, then one optimiser step with it (a
/// state that loads must also work).
pub fn optim_state(data: &[u8]) {
    let path = scratch().join("optim.safetensors");
    std::fs::write(&path, data).expect("scratch file");
    let device = Default::default();
    let net = tiny_net();
    let Ok(mut optim) = load_adamw(adamw::<A, MlpDenoiser<A>>(0.0), &net, &path, &device) else {
        return;
    };
    let x = Tensor::<A, 2>::from_data(
        TensorData::new(vec![0.5f32, -0.5, 1.0, 0.0], [2, 2]),
        &device,
    );
    let sigma = Tensor::<A, 1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &device);
    let loss = net.denoise(x, sigma, None).powi_scalar(2).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    let net = optim.step(1e-3, net, grads);
    let _ = net.valid();
}

/// JSON as every JSON file fdistill reads: distillation, teacher and network configs (each
/// then validated), and checkpoint state files.
pub fn config_json(data: &[u8]) {
    if let Ok(c) = serde_json::from_slice::<DistillConfig>(data) {
        let _ = c.check();
    }
    if let Ok(c) = serde_json::from_slice::<TeacherConfig>(data) {
        let _ = c.check();
    }
    if let Ok(c) = serde_json::from_slice::<MlpDenoiserConfig>(data) {
        let _ = c.check();
    }
    let _ = serde_json::from_slice::<DriverState>(data);
    let _ = serde_json::from_slice::<TeacherCheckpointState>(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(c) = serde_json::from_value::<DistillConfig>(v)
    {
        let _ = c.check();
    }
}

/// TOML as `fdistill distill --config x.toml` reads it (to a JSON value, then the config), and
/// straight into the config; both validated.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = toml::from_str::<serde_json::Value>(text)
        && let Ok(c) = serde_json::from_value::<DistillConfig>(v)
    {
        let _ = c.check();
    }
    if let Ok(c) = toml::from_str::<DistillConfig>(text) {
        let _ = c.check();
    }
}

/// A state dict read from the bytes twice, as `x.pt` (burn-store's PyTorch reader) and as
/// `x.safetensors`, the way `StateDict::read` picks the reader by extension; what reads must
/// be whole (values match shapes) and survive the key-prefix search.
pub fn state_dict(data: &[u8]) {
    for name in ["x.pt", "x.safetensors"] {
        let path = scratch().join(name);
        std::fs::write(&path, data).expect("scratch file");
        if let Ok(sd) = StateDict::read(&path) {
            for t in sd.tensors.values() {
                assert_eq!(t.values.len(), t.shape.iter().product::<usize>());
            }
            let _ = sd.resolve_prefix(&KeyPrefix::Auto);
        }
    }
}

/// Integers that break size arithmetic, as 8 bytes (the mutator writes 1, 2, 4 or 8 of them,
/// little- or big-endian).
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Numbers that break parsers and sizes, for text formats.
const TEXT_NUMBERS: [&str; 16] = [
    "0",
    "-1",
    "-0",
    "1e308",
    "1e400",
    "-1e400",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "1e-400",
    "99999999999999999999999999",
];

/// Tokens to splice into text and headers: dtypes, keywords, nesting.
const TOKENS: [&str; 16] = [
    "<f8", "<f4", ">f8", "<i8", "|u1", "<f2", "<c16", "|O", "True", "False", "(2,)", "()", "{",
    "[", ";", "\t",
];

/// Largest input the mutator makes.
pub const MAX_INPUT: usize = 1 << 16;

/// A mutation of `input` (1 to 8 stacked edits): bit flips, interesting bytes and integers
/// (both endians), truncation, extension, chunk duplication and deletion, splices from
/// `others`, and for text inputs number and token replacements and deep nesting.
pub fn mutate<R: Rng>(input: &[u8], others: &[Vec<u8>], text: bool, rng: &mut R) -> Vec<u8> {
    let mut out = input.to_vec();
    let edits = 1 + rng.random_range(0..8);
    for _ in 0..edits {
        let choices = if text { 14 } else { 11 };
        match rng.random_range(0..choices) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] = rng.random();
            }
            2 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] = INTERESTING[rng.random_range(0..6)] as u8;
            }
            3 | 4 if !out.is_empty() => {
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let v = if rng.random_range(0..4) == 0 {
                    v.wrapping_neg()
                } else {
                    v
                };
                let bytes = if rng.random() {
                    v.to_le_bytes()[..width].to_vec()
                } else {
                    v.to_be_bytes()[8 - width..].to_vec()
                };
                let i = rng.random_range(0..out.len());
                let end = (i + width).min(out.len());
                out[i..end].copy_from_slice(&bytes[..end - i]);
            }
            5 if !out.is_empty() => {
                let cut = rng.random_range(0..out.len());
                out.truncate(cut);
            }
            6 => {
                let n = rng.random_range(1..64);
                out.extend((0..n).map(|_| rng.random::<u8>()));
            }
            7 if !out.is_empty() => {
                let a = rng.random_range(0..out.len());
                let b = (a + rng.random_range(1..256)).min(out.len());
                let chunk = out[a..b].to_vec();
                let at = rng.random_range(0..=out.len());
                out.splice(at..at, chunk);
            }
            8 if !out.is_empty() => {
                let a = rng.random_range(0..out.len());
                let b = (a + rng.random_range(1..256)).min(out.len());
                out.drain(a..b);
            }
            9 | 10 if !others.is_empty() => {
                let other = &others[rng.random_range(0..others.len())];
                if !other.is_empty() {
                    let a = rng.random_range(0..other.len());
                    let b = (a + rng.random_range(1..512)).min(other.len());
                    let at = rng.random_range(0..=out.len());
                    if rng.random() {
                        out.splice(at.., other[a..b].iter().copied());
                    } else {
                        out.splice(at..at, other[a..b].iter().copied());
                    }
                }
            }
            11 => replace_number(&mut out, rng),
            12 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                let at = rng.random_range(0..=out.len());
                out.splice(at..at, token.iter().copied());
            }
            13 => {
                // Deep nesting: parsers must refuse it, not overflow the stack.
                let open = [b"[".as_slice(), b"{\"a\":", b"[[", b"a=["][rng.random_range(0..4)];
                let depth = rng.random_range(1..5000);
                let at = rng.random_range(0..=out.len());
                let nest: Vec<u8> = open
                    .iter()
                    .copied()
                    .cycle()
                    .take(open.len() * depth)
                    .collect();
                out.splice(at..at, nest);
            }
            _ => {}
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// Replaces a run of ASCII digits (or, without one, a random spot) by a troublesome number.
fn replace_number<R: Rng>(out: &mut Vec<u8>, rng: &mut R) {
    let number = TEXT_NUMBERS[rng.random_range(0..TEXT_NUMBERS.len())].as_bytes();
    let digits: Vec<usize> = (0..out.len())
        .filter(|&i| out[i].is_ascii_digit())
        .collect();
    if digits.is_empty() {
        let at = rng.random_range(0..=out.len());
        out.splice(at..at, number.iter().copied());
        return;
    }
    let start = digits[rng.random_range(0..digits.len())];
    let mut end = start;
    while end < out.len() && (out[end].is_ascii_digit() || out[end] == b'.') {
        end += 1;
    }
    out.splice(start..end, number.iter().copied());
}

/// Writes the seed corpus (valid, small files made by fdistill's own writers) into
/// `dir/<target>/`.
pub fn write_seeds(dir: &Path) -> std::io::Result<()> {
    let put = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)
    };
    // IDX: images [3, 4, 5], [1, 28, 28] (one padded to 32), labels [3], and 1-D/2-D arrays.
    let idx = |dims: &[u32], fill: u8| {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        let n: u32 = dims.iter().product();
        b.extend((0..n).map(|i| (i as u8).wrapping_mul(fill)));
        b
    };
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("in memory");
        e.finish().expect("in memory")
    };
    for (name, bytes) in [
        ("images-3x4x5.idx", idx(&[3, 4, 5], 7)),
        ("image-1x28x28.idx", idx(&[1, 28, 28], 3)),
        ("images-2x16x16.idx", idx(&[2, 16, 16], 1)),
        ("labels-3.idx", idx(&[3], 1)),
        ("matrix-2x3.idx", idx(&[2, 3], 5)),
    ] {
        put("idx", name, &bytes)?;
        put("idx-gz", &format!("{name}.gz"), &gz(&bytes))?;
    }
    // NPY: f8 and f4, versions 1 and 2.
    let tmp = tempfile::tempdir()?;
    let npy_path = tmp.path().join("a.npy");
    fdistill_data::save_npy(&npy_path, &[1.0, -2.5, 3.25, 0.0, 7.0, 1e-3], 2)
        .map_err(std::io::Error::other)?;
    put("npy", "f8-3x2.npy", &std::fs::read(&npy_path)?)?;
    fdistill_data::save_npy(&npy_path, &[0.5], 1).map_err(std::io::Error::other)?;
    put("npy", "f8-1x1.npy", &std::fs::read(&npy_path)?)?;
    let mut f4 = b"\x93NUMPY".to_vec();
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n";
    f4.extend_from_slice(&[2, 0]);
    f4.extend_from_slice(&(header.len() as u32).to_le_bytes());
    f4.extend_from_slice(header.as_bytes());
    for v in [1.5f32, -2.0, 0.25, 8.0] {
        f4.extend_from_slice(&v.to_le_bytes());
    }
    put("npy", "f4-2x2-v2.npy", &f4)?;
    // CSV: separators, header, blank lines.
    for (name, text) in [
        ("comma.csv", "1,2\n3.5,-4\n\n5e-3,6\n"),
        ("header.csv", "x,y,z\n1,2,3\n4,5,6\n"),
        ("semicolon.csv", "x;y\n1;2\n3;4\n"),
        ("tab.csv", "1\t2\n3\t4\n"),
        ("spaces.csv", "1 2 3\n4 5 6\n"),
        ("one-column.csv", "1\n2\n3\n"),
    ] {
        put("csv", name, text.as_bytes())?;
    }
    // PNG folders: grey and RGB images, flat and in classes.
    let png = |img: image::DynamicImage| {
        let mut b = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
            .expect("in memory");
        b
    };
    let grey = png(image::DynamicImage::ImageLuma8(
        image::ImageBuffer::from_fn(6, 5, |x, y| image::Luma([(x * 40 + y * 7) as u8])),
    ));
    let grey2 = png(image::DynamicImage::ImageLuma8(
        image::ImageBuffer::from_fn(6, 5, |x, _| image::Luma([(x * 30) as u8])),
    ));
    let rgb = png(image::DynamicImage::ImageRgb8(image::ImageBuffer::from_fn(
        4,
        4,
        |x, y| image::Rgb([(x * 60) as u8, (y * 60) as u8, 128]),
    )));
    let join = |layout: u8, files: &[&[u8]]| {
        let mut b = vec![layout];
        for (i, f) in files.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(PNG_SEPARATOR);
            }
            b.extend_from_slice(f);
        }
        b
    };
    put("png-folder", "flat-grey.bin", &join(0, &[&grey, &grey2]))?;
    put(
        "png-folder",
        "classes-grey.bin",
        &join(1, &[&grey, &grey2, &grey]),
    )?;
    put("png-folder", "flat-rgb.bin", &join(0, &[&rgb]))?;
    // Checkpoints of the tiny network: weights and an AdamW state after one step.
    let net = tiny_net();
    let w = tmp.path().join("w.safetensors");
    fdistill_train::checkpoint::save_module::<A, _>(&net, &w).map_err(std::io::Error::other)?;
    put("safetensors", "tiny-mlp.safetensors", &std::fs::read(&w)?)?;
    let device = Default::default();
    let mut optim = adamw::<A, MlpDenoiser<A>>(0.0);
    let x = Tensor::<A, 2>::from_data(TensorData::new(vec![0.5f32, -0.5], [1, 2]), &device);
    let sigma = Tensor::<A, 1>::from_data(TensorData::new(vec![1.0f32], [1]), &device);
    let loss = net.denoise(x, sigma, None).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    let net = optim.step(1e-3, net, grads);
    let o = tmp.path().join("o.safetensors");
    save_adamw(&optim, &net, &o).map_err(std::io::Error::other)?;
    put(
        "optim-state",
        "tiny-mlp-adamw.safetensors",
        &std::fs::read(&o)?,
    )?;
    // Two states: one step, then a second network's worth of state on the same shapes.
    let fresh = adamw::<A, MlpDenoiser<A>>(0.0);
    save_adamw(&fresh, &net, &o).map_err(std::io::Error::other)?;
    put(
        "optim-state",
        "tiny-mlp-adamw-empty.safetensors",
        &std::fs::read(&o)?,
    )?;
    // State dicts (safetensors; the .pt seeds come from tools/fuzz_state_dict_seeds.py).
    let mut sd = StateDict::default();
    sd.tensors.insert(
        "model.map_layer0.weight".into(),
        StateTensor::new(vec![4, 2], (0..8).map(|i| i as f32 * 0.5).collect()),
    );
    sd.tensors.insert(
        "model.map_layer0.bias".into(),
        StateTensor::new(vec![4], vec![0.0, -1.0, 2.5, 1e-3]),
    );
    sd.tensors.insert(
        "model.enc.8x8_conv.weight".into(),
        StateTensor::new(vec![2, 1, 3, 3], (0..18).map(|i| i as f32).collect()),
    );
    let p = tmp.path().join("sd.safetensors");
    sd.write_safetensors(&p).map_err(std::io::Error::other)?;
    put("state-dict", "edm-like.safetensors", &std::fs::read(&p)?)?;
    // Configs.
    for name in ["toy", "cifar10", "dmd2-no-gan", "diff-instruct"] {
        let c = DistillConfig::preset(name).map_err(std::io::Error::other)?;
        put(
            "config-json",
            &format!("distill-{name}.json"),
            serde_json::to_string_pretty(&c)?.as_bytes(),
        )?;
        put(
            "config-toml",
            &format!("distill-{name}.toml"),
            toml::to_string(&c)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
    }
    put(
        "config-json",
        "teacher.json",
        serde_json::to_string_pretty(&TeacherConfig::default())?.as_bytes(),
    )?;
    put(
        "config-json",
        "mlp.json",
        serde_json::to_string_pretty(&tiny_net_config())?.as_bytes(),
    )?;
    put(
        "config-json",
        "teacher-state.json",
        br#"{"step": 20, "ema_beta": 0.6666, "loss": 0.5}"#,
    )?;
    put(
        "config-toml",
        "partial.toml",
        b"batch_size = 32\nlambda_gan = 0.1\n[driver]\nsteps = 9\ncheckpoint_every = 3\n[noise]\ntype = \"log-normal\"\np_mean = -0.5\np_std = 1.0\n",
    )?;
    Ok(())
}
