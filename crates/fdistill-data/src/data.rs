//! Training and evaluation data: built-in targets (the Gaussian mixtures of [`targets`] and
//! `two-moons`), user files (CSV, NPY) and their writers, and image sets (Fashion-MNIST, IDX
//! pairs, PNG folders; see [`load_image_source`]).
//!
//! A [`Dataset`] holds flat row-major `f64` samples. Loaders never panic on bad input: every
//! [`DataError`] names the file and, where it applies, the line and field.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::{Rng, RngExt};
use rand_distr::{Distribution, Normal};
use thiserror::Error;

use crate::idx::{IdxError, load_idx_images};
use crate::images::{ImageError, ImageSet, load_png_folder};
use fdistill_core::gmm::GaussianMixture;
use fdistill_core::targets;

/// Names of every built-in target, sorted: the Gaussian mixtures and `two-moons`.
pub const BUILTIN_TARGETS: [&str; 5] = [
    "bimodal-1d",
    "grid25",
    "mog40",
    "ring8-unbalanced",
    "two-moons",
];

/// Data loading and saving errors.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no samples.
    #[error("`{path}` holds no samples; write one sample per row")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A CSV field is not a number.
    #[error("`{path}` line {line}, field {field}: `{text}` is not a number")]
    NotANumber {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based field.
        field: usize,
        /// The offending text.
        text: String,
    },
    /// A CSV row with a different number of fields than the first.
    #[error(
        "`{path}` line {line} has {got} fields but the first data row has {expected}; \
         every row must have the same number of {separator}-separated values"
    )]
    Ragged {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Fields of the first data row.
        expected: usize,
        /// Fields of this row.
        got: usize,
        /// The separator detected from the first line (`comma`, `semicolon`, ...).
        separator: &'static str,
    },
    /// A `;`- or tab-separated CSV with decimal commas.
    #[error(
        "`{path}` line {line} separates values with `;` or tabs and writes decimal commas \
         (`1,5`); write numbers with a decimal point (`1.5`), e.g. export the sheet with `.` as \
         the decimal separator"
    )]
    DecimalComma {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// A malformed or unsupported NPY file.
    #[error("`{path}` is not a supported NPY file: {reason}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong and what is supported.
        reason: String,
    },
    /// A non-finite value.
    #[error("`{path}` sample {row}, coordinate {col} is {value}; data must be finite")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// 1-based sample.
        row: usize,
        /// 1-based coordinate.
        col: usize,
        /// The value.
        value: f64,
    },
    /// Neither `.csv` nor `.npy`.
    #[error("`{path}`: unknown file type; use a `.csv` or `.npy` file")]
    UnknownExtension {
        /// The file.
        path: PathBuf,
    },
    /// An IDX file failed to load.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// A PNG folder failed to load.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A malformed image-source specification or an impossible resize.
    #[error("image source `{spec}`: {reason}")]
    ImageSpec {
        /// The `--data` value.
        spec: String,
        /// What is wrong and the accepted forms.
        reason: String,
    },
    /// Not a built-in target name and not an existing file.
    #[error("unknown target `{name}` (and no such file); built-in targets: {known}")]
    UnknownTarget {
        /// The name.
        name: String,
        /// The known names.
        known: String,
    },
}

/// Samples as flat row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `n · dim` values.
    pub values: Vec<f64>,
    /// Data dimension.
    pub dim: usize,
    /// Optional class labels, one per sample.
    pub labels: Option<Vec<u32>>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.values.len() / self.dim
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sample `i` as a slice of `dim` values.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_finite(path: &Path, values: &[f64], dim: usize) -> Result<(), DataError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(DataError::NonFinite {
            path: path.to_path_buf(),
            row: i / dim + 1,
            col: i % dim + 1,
            value: values[i],
        }),
        None => Ok(()),
    }
}

/// The field separator of a CSV file, detected from its first non-blank line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvSeparator {
    /// `,`
    Comma,
    /// `;` (spreadsheets in locales with a decimal comma)
    Semicolon,
    /// a tab
    Tab,
    /// runs of spaces
    Whitespace,
}

impl CsvSeparator {
    /// How the separator reads in messages.
    pub fn describe(self) -> &'static str {
        match self {
            CsvSeparator::Comma => "comma",
            CsvSeparator::Semicolon => "semicolon",
            CsvSeparator::Tab => "tab",
            CsvSeparator::Whitespace => "space",
        }
    }

    fn split(self, line: &str) -> Vec<&str> {
        match self {
            CsvSeparator::Comma => line.split(',').map(str::trim).collect(),
            CsvSeparator::Semicolon => line.split(';').map(str::trim).collect(),
            CsvSeparator::Tab => line.split('\t').map(str::trim).collect(),
            CsvSeparator::Whitespace => line.split_whitespace().collect(),
        }
    }
}

/// Detects the separator of `line` (the file's first non-blank line): `;` or a tab when
/// present, else `,` when present, else runs of spaces between several fields, else `,` (one
/// column). A `;`- or tab-separated line that also holds `,` writes decimal commas
/// (`1,5;2,5`): `None`, to be refused.
pub fn detect_csv_separator(line: &str) -> Option<CsvSeparator> {
    let line = line.trim();
    for (c, sep) in [(';', CsvSeparator::Semicolon), ('\t', CsvSeparator::Tab)] {
        if line.contains(c) {
            return (!line.contains(',')).then_some(sep);
        }
    }
    if line.contains(',') || line.split_whitespace().count() < 2 {
        Some(CsvSeparator::Comma)
    } else {
        Some(CsvSeparator::Whitespace)
    }
}

/// Loads a CSV file: one sample per row, numbers separated by `,` (or `;`, tabs or spaces,
/// detected from the first non-blank line; see [`detect_csv_separator`]). A first line none
/// of whose fields is a number is a header and is skipped; blank lines are skipped. Decimal
/// commas are refused with the fix.
pub fn load_csv(path: &Path) -> Result<Dataset, DataError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_csv(&text, path)
}

/// Parses CSV text as [`load_csv`] does; `path` only names the source in errors.
pub fn parse_csv(text: &str, path: &Path) -> Result<Dataset, DataError> {
    let mut values = Vec::new();
    let mut dim = 0usize;
    let mut sep = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let first_line = sep.is_none();
        let separator = match sep {
            Some(s) => s,
            None => {
                let s = detect_csv_separator(line).ok_or_else(|| DataError::DecimalComma {
                    path: path.to_path_buf(),
                    line: line_no,
                })?;
                sep = Some(s);
                s
            }
        };
        let fields = separator.split(line);
        if first_line && fields.iter().all(|f| f.parse::<f64>().is_err()) {
            continue; // header
        }
        if dim == 0 {
            dim = fields.len();
        } else if fields.len() != dim {
            return Err(DataError::Ragged {
                path: path.to_path_buf(),
                line: line_no,
                expected: dim,
                got: fields.len(),
                separator: separator.describe(),
            });
        }
        for (j, f) in fields.iter().enumerate() {
            let v = f.parse::<f64>().map_err(|_| DataError::NotANumber {
                path: path.to_path_buf(),
                line: line_no,
                field: j + 1,
                text: (*f).to_string(),
            })?;
            values.push(v);
        }
    }
    if values.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    check_finite(path, &values, dim)?;
    Ok(Dataset {
        values,
        dim,
        labels: None,
    })
}

/// Writes samples as CSV to `w`, one row per sample, no header (shortest round-trip decimals).
pub fn write_csv<W: std::io::Write>(w: &mut W, values: &[f64], dim: usize) -> std::io::Result<()> {
    let mut out = String::with_capacity(values.len() * 12);
    for row in values.chunks_exact(dim) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    w.write_all(out.as_bytes())
}

/// Writes samples as CSV, one row per sample, no header.
pub fn save_csv(path: &Path, values: &[f64], dim: usize) -> Result<(), DataError> {
    let mut out = Vec::with_capacity(values.len() * 12);
    write_csv(&mut out, values, dim).expect("writing to memory");
    std::fs::write(path, out).map_err(io_err(path))
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Writes samples as a version-1.0 NPY file of `<f8`, shape `(n, dim)`, C order.
pub fn save_npy(path: &Path, values: &[f64], dim: usize) -> Result<(), DataError> {
    let n = values.len() / dim;
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({n}, {dim}), }}");
    // Pad with spaces so magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + values.len() * 8);
    bytes.extend_from_slice(NPY_MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(io_err(path))
}

/// The value text of `'key': value` in an NPY header dict (up to the next `,` at depth 0 or `}`).
fn npy_header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Loads a 2-D NPY array (format version 1.0, 2.0 or 3.0; dtype `<f4` or `<f8`; C order).
pub fn load_npy(path: &Path) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_npy(&bytes, path)
}

/// Parses NPY bytes as [`load_npy`] does; `path` only names the source in errors. Sizes are
/// checked against the bytes present before anything is allocated.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Dataset, DataError> {
    let bad = |reason: String| DataError::Npy {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err(bad("missing the `\\x93NUMPY` magic string".into()));
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("file ends inside the header length".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("format version {v} (supported: 1, 2, 3)"))),
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        return Err(bad(format!(
            "header length {header_len} runs past the end of the file ({} bytes)",
            bytes.len()
        )));
    }
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| bad("header is not text".into()))?;
    let descr = npy_header_value(header, "descr")
        .ok_or_else(|| bad(format!("header has no 'descr': {header}")))?;
    let width = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f8" => 8,
        "<f4" => 4,
        other => {
            return Err(bad(format!(
                "dtype `{other}`; supported: little-endian float32 `<f4` and float64 `<f8`"
            )));
        }
    };
    match npy_header_value(header, "fortran_order") {
        Some("False") => {}
        Some(other) => {
            return Err(bad(format!(
                "fortran_order {other}; save C-ordered arrays (np.ascontiguousarray)"
            )));
        }
        None => return Err(bad(format!("header has no 'fortran_order': {header}"))),
    }
    let shape_text = npy_header_value(header, "shape")
        .ok_or_else(|| bad(format!("header has no 'shape': {header}")))?;
    let dims: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("cannot read shape `{shape_text}`")))?;
    let [n, dim] = dims[..] else {
        return Err(bad(format!(
            "shape {shape_text} is not 2-D; store samples as an (n, dim) array"
        )));
    };
    if n == 0 || dim == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let need = n
        .checked_mul(dim)
        .and_then(|c| c.checked_mul(width))
        .ok_or_else(|| bad(format!("shape {shape_text} is too large")))?;
    let data = &bytes[data_start..];
    if data.len() != need {
        return Err(bad(format!(
            "shape {shape_text} needs {need} data bytes but the file has {}; the file is \
             truncated or the header is wrong",
            data.len()
        )));
    }
    let values: Vec<f64> = if width == 8 {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect()
    };
    check_finite(path, &values, dim)?;
    Ok(Dataset {
        values,
        dim,
        labels: None,
    })
}

/// Loads a `.csv` or `.npy` file by extension.
pub fn load_file(path: &Path) -> Result<Dataset, DataError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => load_csv(path),
        Some(e) if e.eq_ignore_ascii_case("npy") => load_npy(path),
        _ => Err(DataError::UnknownExtension {
            path: path.to_path_buf(),
        }),
    }
}

/// Saves a `.csv` or `.npy` file by extension.
pub fn save_file(path: &Path, values: &[f64], dim: usize) -> Result<(), DataError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => save_csv(path, values, dim),
        Some(e) if e.eq_ignore_ascii_case("npy") => save_npy(path, values, dim),
        _ => Err(DataError::UnknownExtension {
            path: path.to_path_buf(),
        }),
    }
}

/// Noise std of the built-in `two-moons` target.
pub const TWO_MOONS_NOISE: f64 = 0.1;

/// `two-moons` (as scikit-learn's `make_moons`, with `t ~ U[0, π]` random rather than evenly
/// spaced): half the samples on the upper arc `(cos t, sin t)`, half on the lower arc
/// `(1 − cos t, 1/2 − sin t)`, plus isotropic Gaussian noise of std [`TWO_MOONS_NOISE`].
/// Row-major `n · 2`.
pub fn sample_two_moons<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<f64> {
    let noise = Normal::new(0.0, TWO_MOONS_NOISE).expect("valid std");
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let t: f64 = rng.random_range(0.0..std::f64::consts::PI);
        let (x, y) = if i % 2 == 0 {
            (t.cos(), t.sin())
        } else {
            (1.0 - t.cos(), 0.5 - t.sin())
        };
        out.push(x + noise.sample(rng));
        out.push(y + noise.sample(rng));
    }
    out
}

/// Where samples come from, as the user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A built-in target name ([`BUILTIN_TARGETS`]).
    Target(String),
    /// A `.csv` or `.npy` file.
    File(PathBuf),
    /// An image set named as [`load_image_source`] accepts (`fashion-mnist`, `idx:…`, `png:…`).
    Images(String),
}

impl DataSource {
    /// A built-in name if it is one, an image source if it has an image prefix
    /// ([`is_image_source`]), otherwise a file path.
    pub fn parse(s: &str) -> DataSource {
        if BUILTIN_TARGETS.contains(&s) {
            DataSource::Target(s.to_string())
        } else if is_image_source(s) {
            DataSource::Images(s.to_string())
        } else {
            DataSource::File(PathBuf::from(s))
        }
    }

    /// Resolves to a sampler; files are loaded here, so malformed data fails now.
    pub fn resolve(&self) -> Result<TrainingData, DataError> {
        match self {
            DataSource::Target(name) if name == "two-moons" => Ok(TrainingData::TwoMoons),
            DataSource::Target(name) => targets::gmm_target(name)
                .map(TrainingData::Mixture)
                .map_err(|_| unknown_target(name)),
            DataSource::File(path) => {
                let has_ext = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("npy")
                });
                if !has_ext && !path.exists() {
                    return Err(unknown_target(&path.to_string_lossy()));
                }
                load_file(path).map(TrainingData::Samples)
            }
            DataSource::Images(spec) => load_image_source(spec).map(TrainingData::Images),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Target(n) => f.write_str(n),
            DataSource::File(p) => write!(f, "{}", p.display()),
            DataSource::Images(spec) => f.write_str(spec),
        }
    }
}

/// `spec` with every file path in it made absolute and canonical, so that a run's
/// `config.json` still finds its data from any working directory: a `.csv`/`.npy` path,
/// `idx:IMAGES,LABELS`, `png:DIR` and `fashion-mnist[-test]:DIR` (keeping `@SIDE`). Built-in
/// names, `fashion-mnist` without a directory, and paths that do not exist (loading reports
/// them) are returned unchanged.
pub fn absolute_source(spec: &str) -> String {
    let abs = |p: &str| {
        std::fs::canonicalize(p)
            .map(|c| c.display().to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    match DataSource::parse(spec) {
        DataSource::Target(name) => name,
        DataSource::File(p) => abs(&p.to_string_lossy()),
        DataSource::Images(spec) => {
            let (base, side) = match spec.split_once('@') {
                Some((b, r)) => (b, format!("@{r}")),
                None => (spec.as_str(), String::new()),
            };
            let base = if let Some(rest) = base.strip_prefix("idx:") {
                match rest.split_once(',') {
                    Some((im, lb)) => format!("idx:{},{}", abs(im), abs(lb)),
                    None => base.to_string(),
                }
            } else if let Some(dir) = base.strip_prefix("png:") {
                format!("png:{}", abs(dir))
            } else if let Some((prefix, dir)) = base
                .split_once(':')
                .filter(|(p, _)| *p == "fashion-mnist" || *p == "fashion-mnist-test")
            {
                format!("{prefix}:{}", abs(dir))
            } else {
                base.to_string()
            };
            format!("{base}{side}")
        }
    }
}

/// Default directory of Fashion-MNIST: where the Debian package `dataset-fashion-mnist`
/// installs the four IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Environment variable that overrides [`FASHION_MNIST_DIR`] (a `fashion-mnist:DIR` source
/// overrides both).
pub const FASHION_MNIST_ENV: &str = "FDISTILL_FASHION_MNIST_DIR";

/// Whether `spec` names an image source: `fashion-mnist`, `fashion-mnist-test` (each
/// optionally `:DIR`), `idx:IMAGES,LABELS` or `png:DIR`, optionally followed by `@SIDE`.
pub fn is_image_source(spec: &str) -> bool {
    let base = spec.split('@').next().unwrap_or(spec);
    base == "fashion-mnist"
        || base == "fashion-mnist-test"
        || ["fashion-mnist:", "fashion-mnist-test:", "idx:", "png:"]
            .iter()
            .any(|p| base.starts_with(p))
}

/// The side images are padded to: the next multiple of 8 (28 → 32), so that three halvings
/// (a UNet's levels, the heads' "down to 8×8") stay integral.
pub fn padded_side(side: usize) -> usize {
    side.div_ceil(8) * 8
}

/// Pads every image to `side × side`, centred (extra row/column at the bottom/right), with the
/// background value −1 (black, as Fashion-MNIST's border).
pub fn pad_images(set: &ImageSet, side: usize) -> ImageSet {
    let (c, h, w) = (set.channels, set.height, set.width);
    let (top, left) = ((side - h) / 2, (side - w) / 2);
    let mut pixels = vec![-1.0f32; set.n * c * side * side];
    for i in 0..set.n {
        for ch in 0..c {
            for y in 0..h {
                let src = ((i * c + ch) * h + y) * w;
                let dst = ((i * c + ch) * side + top + y) * side + left;
                pixels[dst..dst + w].copy_from_slice(&set.pixels[src..src + w]);
            }
        }
    }
    ImageSet {
        pixels,
        height: side,
        width: side,
        ..set.clone()
    }
}

/// Box downsampling: each `factor × factor` block becomes its mean. `height` and `width` must
/// be multiples of `factor`.
pub fn downsample_images(set: &ImageSet, factor: usize) -> ImageSet {
    let (c, h, w) = (set.channels, set.height, set.width);
    let (oh, ow) = (h / factor, w / factor);
    let norm = (factor * factor) as f32;
    let mut pixels = Vec::with_capacity(set.n * c * oh * ow);
    for plane in set.pixels.chunks_exact(h * w) {
        for y in 0..oh {
            for x in 0..ow {
                let mut sum = 0.0f32;
                for dy in 0..factor {
                    let row = (y * factor + dy) * w + x * factor;
                    sum += plane[row..row + factor].iter().sum::<f32>();
                }
                pixels.push(sum / norm);
            }
        }
    }
    ImageSet {
        pixels,
        height: oh,
        width: ow,
        ..set.clone()
    }
}

/// Loads an image source, pads it to [`padded_side`] of its larger side, and with `@SIDE`
/// box-downsamples it to `SIDE × SIDE`. Forms:
///
/// - `fashion-mnist[:DIR]` — the 60 000 training images of Fashion-MNIST (IDX, gzip or raw)
///   from `DIR`, else `$FDISTILL_FASHION_MNIST_DIR`, else [`FASHION_MNIST_DIR`];
/// - `fashion-mnist-test[:DIR]` — its 10 000 test images;
/// - `idx:IMAGES,LABELS` — any IDX pair;
/// - `png:DIR` — `DIR/*.png` or `DIR/<class>/*.png`;
/// - any of these with `@SIDE`, e.g. `fashion-mnist@16` (28 → 32 padded → 16 by 2×2 means).
pub fn load_image_source(spec: &str) -> Result<ImageSet, DataError> {
    let bad = |reason: String| DataError::ImageSpec {
        spec: spec.to_string(),
        reason,
    };
    let (base, side) = match spec.split_once('@') {
        Some((b, r)) => {
            let r: usize = r
                .parse()
                .ok()
                .filter(|&r| r > 0)
                .ok_or_else(|| bad(format!("`@{r}` is not a positive image side")))?;
            (b, Some(r))
        }
        None => (spec, None),
    };
    let fm_dir = |d: Option<&str>| -> PathBuf {
        match d {
            Some(d) => PathBuf::from(d),
            None => std::env::var_os(FASHION_MNIST_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR)),
        }
    };
    let fashion = |dir: PathBuf, prefix: &str| -> Result<ImageSet, DataError> {
        let pick = |stem: &str| {
            let gz = dir.join(format!("{prefix}-{stem}.gz"));
            if gz.exists() {
                gz
            } else {
                dir.join(format!("{prefix}-{stem}"))
            }
        };
        let images = pick("images-idx3-ubyte");
        if !images.exists() {
            return Err(bad(format!(
                "no `{}`; install the Debian package `dataset-fashion-mnist` (apt-get install \
                 dataset-fashion-mnist), or point `fashion-mnist:DIR` or ${FASHION_MNIST_ENV} at \
                 a folder with the four IDX files",
                images.display()
            )));
        }
        Ok(load_idx_images(&images, &pick("labels-idx1-ubyte"))?.into())
    };
    let set: ImageSet = if let Some(rest) = base.strip_prefix("fashion-mnist-test") {
        fashion(fm_dir(rest.strip_prefix(':')), "t10k")?
    } else if let Some(rest) = base.strip_prefix("fashion-mnist") {
        fashion(fm_dir(rest.strip_prefix(':')), "train")?
    } else if let Some(rest) = base.strip_prefix("idx:") {
        let (im, lb) = rest
            .split_once(',')
            .ok_or_else(|| bad("use `idx:IMAGES,LABELS` (two files, comma-separated)".into()))?;
        load_idx_images(Path::new(im), Path::new(lb))?.into()
    } else if let Some(dir) = base.strip_prefix("png:") {
        load_png_folder(Path::new(dir))?
    } else {
        return Err(bad(
            "use fashion-mnist[:DIR], fashion-mnist-test[:DIR], idx:IMAGES,LABELS or png:DIR, \
             optionally with @SIDE"
                .into(),
        ));
    };
    prepare_images(set, side).map_err(bad)
}

/// What [`load_image_source`] does to a loaded set: pad to the square [`padded_side`] of its
/// larger side, then with `side` box-downsample to `side × side`. The padded size is checked
/// against [`MAX_FOLDER_VALUES`](crate::images::MAX_FOLDER_VALUES) before it is allocated;
/// the error is the reason (the caller names the source).
pub fn prepare_images(set: ImageSet, side: Option<usize>) -> Result<ImageSet, String> {
    let padded = padded_side(set.height.max(set.width));
    if set.height == 0 || set.width == 0 || set.channels == 0 {
        return Err(format!(
            "the images are {}×{} with {} channels; nothing to train on",
            set.height, set.width, set.channels
        ));
    }
    let values = [set.n, set.channels, padded, padded]
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .filter(|&v| v <= crate::images::MAX_FOLDER_VALUES);
    if values.is_none() {
        return Err(format!(
            "{} images padded to {padded}×{padded} exceed {} values; use fewer or smaller images",
            set.n,
            crate::images::MAX_FOLDER_VALUES
        ));
    }
    if let Some(r) = side
        && !(r <= padded && padded.is_multiple_of(r))
    {
        return Err(format!(
            "the padded images are {padded}×{padded}; @{r} must divide {padded}"
        ));
    }
    let set = if (set.height, set.width) == (padded, padded) {
        set
    } else {
        pad_images(&set, padded)
    };
    Ok(match side {
        None => set,
        Some(r) => downsample_images(&set, padded / r),
    })
}

fn unknown_target(name: &str) -> DataError {
    DataError::UnknownTarget {
        name: name.to_string(),
        known: BUILTIN_TARGETS.join(", "),
    }
}

/// A resolved source of training samples.
#[derive(Debug, Clone)]
pub enum TrainingData {
    /// A Gaussian mixture with its exact density: fresh samples every batch.
    Mixture(GaussianMixture),
    /// The `two-moons` sampler: fresh samples every batch.
    TwoMoons,
    /// A finite data set: rows drawn uniformly with replacement.
    Samples(Dataset),
    /// Images (flattened `[c, h, w]`, pixels in [−1, 1]) with optional class labels: rows
    /// drawn uniformly with replacement.
    Images(ImageSet),
}

impl TrainingData {
    /// Data dimension.
    pub fn dim(&self) -> usize {
        match self {
            TrainingData::Mixture(g) => g.dim(),
            TrainingData::TwoMoons => 2,
            TrainingData::Samples(d) => d.dim,
            TrainingData::Images(set) => set.dim(),
        }
    }

    /// Number of classes of labelled data (`None` for unlabelled data).
    pub fn n_classes(&self) -> Option<usize> {
        match self {
            TrainingData::Images(set) if set.labels.is_some() => Some(set.class_names.len()),
            TrainingData::Samples(d) => d
                .labels
                .as_ref()
                .and_then(|l| l.iter().max())
                .map(|&m| m as usize + 1),
            _ => None,
        }
    }

    /// `n` samples (row-major `n · dim`) and, for labelled data, the label of each. Consumes
    /// the RNG exactly as [`sample`](Self::sample), so unlabelled runs reproduce.
    pub fn sample_labelled<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> (Vec<f64>, Option<Vec<u32>>) {
        let draw = |len: usize, dim: usize, rng: &mut R, rows: &dyn Fn(usize) -> Vec<f64>| {
            let mut out = Vec::with_capacity(n * dim);
            let mut idx = Vec::with_capacity(n);
            for _ in 0..n {
                let i = rng.random_range(0..len);
                out.extend(rows(i));
                idx.push(i);
            }
            (out, idx)
        };
        match self {
            TrainingData::Samples(d) if d.labels.is_some() => {
                let (x, idx) = draw(d.len(), d.dim, rng, &|i| d.row(i).to_vec());
                let l = d.labels.as_ref().expect("checked");
                (x, Some(idx.iter().map(|&i| l[i]).collect()))
            }
            TrainingData::Images(set) => {
                let dim = set.dim();
                let (x, idx) = draw(set.n, dim, rng, &|i| {
                    set.pixels[i * dim..(i + 1) * dim]
                        .iter()
                        .map(|&v| v as f64)
                        .collect()
                });
                let labels = set
                    .labels
                    .as_ref()
                    .map(|l| idx.iter().map(|&i| l[i]).collect());
                (x, labels)
            }
            _ => (self.sample(n, rng), None),
        }
    }

    /// The exact density, where there is one.
    pub fn mixture(&self) -> Option<&GaussianMixture> {
        match self {
            TrainingData::Mixture(g) => Some(g),
            _ => None,
        }
    }

    /// `n` samples, row-major `n · dim`.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f64> {
        match self {
            TrainingData::Mixture(g) => g.sample(n, rng),
            TrainingData::TwoMoons => sample_two_moons(n, rng),
            TrainingData::Samples(d) => {
                let mut out = Vec::with_capacity(n * d.dim);
                for _ in 0..n {
                    let i = rng.random_range(0..d.len());
                    out.extend_from_slice(d.row(i));
                }
                out
            }
            TrainingData::Images(_) => self.sample_labelled(n, rng).0,
        }
    }

    /// The overall standard deviation of the data (all coordinates pooled about their
    /// per-coordinate means), estimated from `n` samples for samplers; EDM's σ_data.
    pub fn std<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let (values, dim) = match self {
            TrainingData::Samples(d) => (d.values.clone(), d.dim),
            TrainingData::Images(set) => {
                (set.pixels.iter().map(|&v| v as f64).collect(), set.dim())
            }
            _ => (self.sample(20_000, rng), self.dim()),
        };
        pooled_std(&values, dim)
    }
}

/// `√( (1/(n d)) Σ_{i,j} (x_ij − mean_j)² )`.
pub fn pooled_std(values: &[f64], dim: usize) -> f64 {
    let n = values.len() / dim;
    let mut mean = vec![0.0; dim];
    for row in values.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n as f64;
        }
    }
    let ss: f64 = values
        .chunks_exact(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| (v - m) * (v - m)))
        .sum();
    (ss / values.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdistill_core::targets::GMM_TARGETS;
    use rand::SeedableRng;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn csv_and_npy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let values = vec![1.0, -2.5, 3.25, 1e-3, 0.0, 7.0];
        for name in ["a.csv", "a.npy"] {
            let p = dir.path().join(name);
            save_file(&p, &values, 2).unwrap();
            let d = load_file(&p).unwrap();
            assert_eq!((d.dim, d.len()), (2, 3));
            assert_eq!(d.values, values);
        }
        // Header line and blank lines are skipped; f4 NPY loads.
        let p = write(dir.path(), "h.csv", b"x,y\n1,2\n\n3,4\n");
        assert_eq!(load_csv(&p).unwrap().values, vec![1.0, 2.0, 3.0, 4.0]);
        let mut f4 = NPY_MAGIC.to_vec();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }\n";
        f4.extend_from_slice(&[2, 0]);
        f4.extend_from_slice(&(header.len() as u32).to_le_bytes());
        f4.extend_from_slice(header.as_bytes());
        f4.extend_from_slice(&1.5f32.to_le_bytes());
        f4.extend_from_slice(&(-2.0f32).to_le_bytes());
        let p = write(dir.path(), "f4.npy", &f4);
        assert_eq!(load_npy(&p).unwrap().values, vec![1.5, -2.0]);
    }

    #[test]
    fn malformed_csv_errors_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "ragged.csv", b"1,2\n3,4\n5\n");
        let e = load_csv(&p).unwrap_err().to_string();
        assert!(
            e.contains("ragged.csv") && e.contains("line 3 has 1 fields"),
            "{e}"
        );
        let p = write(dir.path(), "nan.csv", b"1,2\n3,abc\n");
        let e = load_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2, field 2") && e.contains("`abc`"), "{e}");
        let p = write(dir.path(), "empty.csv", b"");
        assert!(matches!(load_csv(&p), Err(DataError::Empty { .. })));
        let p = write(dir.path(), "only_header.csv", b"x,y\n");
        assert!(matches!(load_csv(&p), Err(DataError::Empty { .. })));
        let p = write(dir.path(), "inf.csv", b"1,inf\n");
        assert!(matches!(
            load_csv(&p),
            Err(DataError::NonFinite { row: 1, col: 2, .. })
        ));
        let e = load_csv(&dir.path().join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.csv"), "{e}");
    }

    /// `bytes` with the first occurrence of `from` replaced by `to` (same length).
    fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let i = bytes.windows(from.len()).position(|w| w == from).unwrap();
        let mut out = bytes.to_vec();
        out[i..i + to.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn malformed_npy_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.npy");
        save_npy(&good, &[1.0, 2.0, 3.0, 4.0], 2).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty.npy", vec![], "no samples"),
            ("magic.npy", b"NOTNPY0000000000".to_vec(), "magic"),
            ("trunc.npy", bytes[..bytes.len() - 3].to_vec(), "truncated"),
            (
                "short_header.npy",
                {
                    let mut b = bytes[..10].to_vec();
                    b[8] = 200;
                    b
                },
                "runs past the end",
            ),
            ("dtype.npy", replace(&bytes, b"<f8", b"<i8"), "dtype"),
            (
                "fortran.npy",
                replace(&bytes, b"False", b"True "),
                "fortran_order",
            ),
            (
                "shape3.npy",
                replace(&bytes, b"(2, 2), }", b"(2,2,1),}"),
                "not 2-D",
            ),
        ];
        for (name, b, needle) in cases {
            let p = write(dir.path(), name, &b);
            let e = load_npy(&p).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
        }
        let p = write(dir.path(), "x.txt", b"1,2\n");
        assert!(matches!(
            load_file(&p),
            Err(DataError::UnknownExtension { .. })
        ));
    }

    #[test]
    fn sources_resolve_and_unknown_names_list_the_targets() {
        assert!(GMM_TARGETS.iter().all(|n| BUILTIN_TARGETS.contains(n)));
        assert_eq!(BUILTIN_TARGETS.len(), GMM_TARGETS.len() + 1);
        for name in BUILTIN_TARGETS {
            let d = DataSource::parse(name).resolve().unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            assert_eq!(d.sample(3, &mut rng).len(), 3 * d.dim());
        }
        let e = DataSource::parse("ring9")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains("ring9") && e.contains("two-moons"), "{e}");
    }

    #[test]
    fn two_moons_lies_on_its_arcs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let x = sample_two_moons(2000, &mut rng);
        for (i, p) in x.chunks(2).enumerate() {
            let (cx, cy) = if i % 2 == 0 { (0.0, 0.0) } else { (1.0, 0.5) };
            let r = ((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt();
            assert!((r - 1.0).abs() < 6.0 * TWO_MOONS_NOISE, "{p:?}");
        }
    }

    fn fixture_spec() -> String {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/fashion-mnist-t10k-first1000");
        format!(
            "idx:{},{}",
            dir.join("t10k-images-idx3-ubyte-first1000.gz").display(),
            dir.join("t10k-labels-idx1-ubyte-first1000.gz").display()
        )
    }

    fn tiny_set(pixels: Vec<f32>, h: usize, w: usize) -> ImageSet {
        ImageSet {
            n: 1,
            channels: 1,
            height: h,
            width: w,
            pixels,
            labels: Some(vec![1]),
            class_names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn padding_and_downsampling_by_hand() {
        assert_eq!([28, 32, 1, 8, 9].map(padded_side), [32, 32, 8, 8, 16]);
        // 2×1 image padded to 4×4: rows 1–2, columns 1–1, background −1.
        let p = pad_images(&tiny_set(vec![0.5, 0.25], 2, 1), 4);
        #[rustfmt::skip]
        let want = vec![
            -1.0, -1.0, -1.0, -1.0,
            -1.0,  0.5, -1.0, -1.0,
            -1.0, 0.25, -1.0, -1.0,
            -1.0, -1.0, -1.0, -1.0,
        ];
        assert_eq!((p.height, p.width, p.pixels.clone()), (4, 4, want));
        // 2×2 box means of that image.
        let d = downsample_images(&p, 2);
        assert_eq!((d.height, d.width), (2, 2));
        assert_eq!(d.pixels, vec![-0.625, -1.0, -0.6875, -1.0]);
    }

    #[test]
    fn image_sources_load_pad_and_label() {
        let spec = fixture_spec();
        assert!(is_image_source(&spec) && is_image_source("fashion-mnist@16"));
        assert!(!is_image_source("ring8-unbalanced") && !is_image_source("x.npy"));
        let set = load_image_source(&spec).unwrap();
        assert_eq!((set.n, set.height, set.width), (1000, 32, 32));
        assert!(set.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
        // The 2-pixel border is background.
        assert!(set.pixels[..64].iter().all(|&v| v == -1.0));
        let small = load_image_source(&format!("{spec}@16")).unwrap();
        assert_eq!((small.height, small.dim()), (16, 256));
        let data = DataSource::parse(&spec).resolve().unwrap();
        assert_eq!((data.dim(), data.n_classes()), (1024, Some(10)));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (x, labels) = data.sample_labelled(5, &mut rng);
        let labels = labels.unwrap();
        assert_eq!((x.len(), labels.len()), (5 * 1024, 5));
        // Each drawn row is the image of its label.
        let TrainingData::Images(all) = &data else {
            panic!()
        };
        for (k, l) in labels.iter().enumerate() {
            let row = &x[k * 1024..(k + 1) * 1024];
            let i = (0..all.n)
                .find(|&i| {
                    all.pixels[i * 1024..(i + 1) * 1024]
                        .iter()
                        .zip(row)
                        .all(|(a, b)| *a as f64 == *b)
                })
                .unwrap();
            assert_eq!(all.labels.as_ref().unwrap()[i], *l);
        }
        // Unlabelled 2-D data: the same draws as `sample`, no labels.
        let moons = TrainingData::TwoMoons;
        let a = moons.sample(4, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let b = moons.sample_labelled(4, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert_eq!((a, None), b);
    }

    #[test]
    fn bad_image_sources_are_errors() {
        let spec = fixture_spec();
        let cases = [
            (format!("{spec}@0"), "positive image side"),
            (format!("{spec}@12"), "must divide 32"),
            ("idx:only-one-file".to_string(), "IMAGES,LABELS"),
            (
                "fashion-mnist:/nonexistent".to_string(),
                "dataset-fashion-mnist",
            ),
            ("png:/nonexistent".to_string(), "/nonexistent"),
        ];
        for (s, needle) in cases {
            let e = load_image_source(&s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn csv_separators_are_detected_and_decimal_commas_refused() {
        let dir = tempfile::tempdir().unwrap();
        // The first line is data, not a header, whatever the separator.
        for (name, text) in [
            ("semi.csv", "1;2\n3;4\n"),
            ("tab.csv", "1\t2\n3\t4\n"),
            ("space.csv", "1  2\n 3 4\n"),
            ("comma.csv", "1, 2\n3,4\n"),
            ("header.csv", "x;y\n1;2\n3;4\n"),
        ] {
            let p = write(dir.path(), name, text.as_bytes());
            let d = load_csv(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (d.dim, d.values.clone()),
                (2, vec![1.0, 2.0, 3.0, 4.0]),
                "{name}"
            );
        }
        let p = write(dir.path(), "one.csv", b"1\n2\n");
        assert_eq!(load_csv(&p).unwrap().dim, 1);
        let p = write(dir.path(), "euro.csv", b"1,5;2,5\n3,0;4,0\n");
        let e = load_csv(&p).unwrap_err().to_string();
        assert!(
            e.contains("euro.csv` line 1") && e.contains("decimal point"),
            "{e}"
        );
        // A row with a different separator than the first is ragged, and says which one.
        let p = write(dir.path(), "mixed.csv", b"1;2\n3,4\n");
        let e = load_csv(&p).unwrap_err().to_string();
        assert!(
            e.contains("line 2 has 1 fields") && e.contains("semicolon-separated"),
            "{e}"
        );
    }

    #[test]
    fn sources_are_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "d.csv", b"1,2\n");
        let canon = std::fs::canonicalize(&f).unwrap().display().to_string();
        let cd = std::fs::canonicalize(dir.path())
            .unwrap()
            .display()
            .to_string();
        let old = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir.path()).unwrap();
        let got = [
            absolute_source("d.csv"),
            absolute_source("idx:d.csv,d.csv@16"),
            absolute_source("png:."),
            absolute_source("fashion-mnist:.@16"),
        ];
        std::env::set_current_dir(old).unwrap();
        assert_eq!(got[0], canon);
        assert_eq!(got[1], format!("idx:{canon},{canon}@16"));
        assert_eq!(got[2], format!("png:{cd}"));
        assert_eq!(got[3], format!("fashion-mnist:{cd}@16"));
        for same in ["ring8-unbalanced", "fashion-mnist@16", "missing.csv"] {
            assert_eq!(absolute_source(same), same);
        }
    }

    #[test]
    fn pooled_std_of_known_values() {
        // Coordinates {0, 2} and {1, 3}: deviations ±1 everywhere → std 1.
        assert!((pooled_std(&[0.0, 1.0, 2.0, 3.0], 2) - 1.0).abs() < 1e-15);
    }
}
