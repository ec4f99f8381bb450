//! The IDX format (MNIST, Fashion-MNIST): raw or gzip-compressed.
//!
//! Layout: magic `[0, 0, type, ndim]`, then `ndim` big-endian `u32` dimensions, then the
//! items row-major. Only `type = 0x08` (unsigned byte) is used by image datasets and only it is
//! read here. Every size is validated against the file before anything is allocated, and a
//! cap refuses absurd headers, so a malformed file gives an error, never a panic or an
//! out-of-memory abort.

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Largest decoded payload accepted (256 MiB, 1 GiB once scaled to `f32`): Fashion-MNIST's
/// training images are 47 MB.
pub const MAX_IDX_BYTES: u64 = 1 << 28;

/// IDX reading errors; each names the file and what is wrong.
#[derive(Debug, Error)]
pub enum IdxError {
    /// The file could not be opened or read.
    #[error("cannot read IDX file {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The header is not an IDX header.
    #[error("{path} is not an IDX file: {reason}")]
    BadHeader {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The header promises more (or fewer) bytes than the file holds.
    #[error(
        "{path}: header says {expected} bytes of data ({dims:?}) but the file has {actual}; \
         the file is truncated or the header is wrong"
    )]
    SizeMismatch {
        /// File.
        path: PathBuf,
        /// Dimensions from the header.
        dims: Vec<u32>,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// Images and labels disagree.
    #[error(
        "{images} holds {n_images} images but {labels} holds {n_labels} labels; use matching files"
    )]
    CountMismatch {
        /// Image file.
        images: PathBuf,
        /// Image count.
        n_images: usize,
        /// Label file.
        labels: PathBuf,
        /// Label count.
        n_labels: usize,
    },
}

/// A decoded unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[n, 28, 28]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// Row-major bytes.
    pub data: Vec<u8>,
}

/// `raw` as read from a file, gunzipped if it starts with the gzip magic `1f 8b`; the decoded
/// size is capped at [`MAX_IDX_BYTES`] (plus header) while decoding. `path` only names the
/// file in errors.
pub fn decode_maybe_gzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>, IdxError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(MAX_IDX_BYTES + 1024)
        .read_to_end(&mut out)
        .map_err(|source| IdxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}

/// Parses an unsigned-byte IDX file (raw or gzip).
pub fn read_idx_u8(path: &Path) -> Result<IdxArray, IdxError> {
    let raw = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_idx_u8(&decode_maybe_gzip(raw, path)?, path)
}

/// Parses IDX bytes; `path` only names the source in errors.
pub fn parse_idx_u8(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    let bad = |reason: String| IdxError::BadHeader {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(bad(format!(
            "only {} bytes, shorter than the 4-byte magic",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic starts with {:02x} {:02x}, expected 00 00",
            bytes[0], bytes[1]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type 0x{:02x}; only unsigned bytes (0x08) are supported",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || ndim > 4 {
        return Err(bad(format!("{ndim} dimensions; expected 1 to 4")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(format!(
            "header needs {header} bytes for {ndim} dimensions but the file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<u32> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")))
        .collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let actual = (bytes.len() - header) as u64;
    match expected {
        Some(e) if e <= MAX_IDX_BYTES && e == actual => Ok(IdxArray {
            dims: dims.iter().map(|&d| d as usize).collect(),
            data: bytes[header..].to_vec(),
        }),
        Some(e) => Err(IdxError::SizeMismatch {
            path: path.to_path_buf(),
            dims,
            expected: e,
            actual,
        }),
        None => Err(bad(format!("dimensions {dims:?} overflow"))),
    }
}

/// Images `[n, h, w]` and labels `[n]` from a pair of IDX files, pixels scaled to `[−1, 1]`.
#[derive(Debug, Clone)]
pub struct LabelledImages {
    /// Number of images.
    pub n: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Row-major pixels in `[−1, 1]`, `n · height · width`.
    pub pixels: Vec<f32>,
    /// Class of each image.
    pub labels: Vec<u8>,
}

/// Loads an image file (`[n, h, w]`) and a label file (`[n]`), checking that they match.
pub fn load_idx_images(images: &Path, labels: &Path) -> Result<LabelledImages, IdxError> {
    labelled_images(read_idx_u8(images)?, images, read_idx_u8(labels)?, labels)
}

/// Images `[n, h, w]` and labels `[n]` from two parsed arrays (paths name them in errors):
/// the dimensions are checked (three and one, `n ≥ 1`, `h, w ≥ 1`, equal counts).
pub fn labelled_images(
    im: IdxArray,
    images: &Path,
    lb: IdxArray,
    labels: &Path,
) -> Result<LabelledImages, IdxError> {
    if im.dims.len() != 3 || im.dims.contains(&0) {
        return Err(IdxError::BadHeader {
            path: images.to_path_buf(),
            reason: format!(
                "images must have 3 nonzero dimensions [n, h, w], found {:?}",
                im.dims
            ),
        });
    }
    if lb.dims.len() != 1 {
        return Err(IdxError::BadHeader {
            path: labels.to_path_buf(),
            reason: format!("labels must have 1 dimension [n], found {:?}", lb.dims),
        });
    }
    if im.dims[0] != lb.dims[0] {
        return Err(IdxError::CountMismatch {
            images: images.to_path_buf(),
            n_images: im.dims[0],
            labels: labels.to_path_buf(),
            n_labels: lb.dims[0],
        });
    }
    Ok(LabelledImages {
        n: im.dims[0],
        height: im.dims[1],
        width: im.dims[2],
        pixels: im.data.iter().map(|&p| p as f32 / 127.5 - 1.0).collect(),
        labels: lb.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/fashion-mnist-t10k-first1000")
            .join(name)
    }

    fn header(dims: &[u32]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    /// A path inside a fresh `tempfile` directory, removed when this value drops.
    struct Scratch(#[allow(dead_code)] tempfile::TempDir, std::path::PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.1
        }
    }

    impl AsRef<std::path::Path> for Scratch {
        fn as_ref(&self) -> &std::path::Path {
            &self.1
        }
    }

    fn write_tmp(name: &str, bytes: &[u8]) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        Scratch(dir, p)
    }

    #[test]
    fn fixture_loads_with_the_documented_counts() {
        let d = load_idx_images(
            &fixture("t10k-images-idx3-ubyte-first1000.gz"),
            &fixture("t10k-labels-idx1-ubyte-first1000.gz"),
        )
        .unwrap();
        assert_eq!((d.n, d.height, d.width), (1000, 28, 28));
        let mut counts = [0usize; 10];
        for &l in &d.labels {
            counts[l as usize] += 1;
        }
        // From the fixture's README.
        assert_eq!(counts, [107, 105, 111, 93, 115, 87, 97, 95, 95, 95]);
        assert!(d.pixels.iter().all(|p| (-1.0..=1.0).contains(p)));
        assert!(d.pixels.contains(&1.0) && d.pixels.contains(&-1.0));
    }

    #[test]
    fn raw_and_gzip_decode_the_same() {
        let mut bytes = header(&[2, 2, 3]);
        bytes.extend(0..12u8);
        let raw = write_tmp("raw.idx", &bytes);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&bytes).unwrap();
        let gzp = write_tmp("gz.idx.gz", &gz.finish().unwrap());
        let a = read_idx_u8(&raw).unwrap();
        assert_eq!(a, read_idx_u8(&gzp).unwrap());
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 11);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let p = Path::new("x.idx");
        // Wrong magic.
        let e = parse_idx_u8(&[1, 0, 8, 1, 0, 0, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("magic"), "{e}");
        // Unsupported element type.
        let e = parse_idx_u8(&[0, 0, 0x0d, 1, 0, 0, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element type"), "{e}");
        // Header longer than the file.
        let e = parse_idx_u8(&[0, 0, 8, 3, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("header needs"), "{e}");
        // Truncated payload.
        let mut b = header(&[10, 28, 28]);
        b.extend(vec![0u8; 100]);
        let e = parse_idx_u8(&b, p).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // Absurd header: refused without allocating.
        let mut b = header(&[u32::MAX, u32::MAX, u32::MAX]);
        b.push(0);
        assert!(parse_idx_u8(&b, p).is_err());
        // Empty.
        assert!(parse_idx_u8(&[], p).is_err());
    }

    #[test]
    fn image_and_label_counts_must_match() {
        let mut im = header(&[3, 2, 2]);
        im.extend(vec![0u8; 12]);
        let mut lb = header(&[2]);
        lb.extend([1u8, 2]);
        let e = load_idx_images(&write_tmp("im3.idx", &im), &write_tmp("lb2.idx", &lb))
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 images") && e.contains("2 labels"), "{e}");
        // Truncated gzip fixture (cut in half) is an error too.
        let bytes = std::fs::read(fixture("t10k-labels-idx1-ubyte-first1000.gz")).unwrap();
        let cut = write_tmp("cut.gz", &bytes[..bytes.len() / 2]);
        assert!(read_idx_u8(&cut).is_err());
    }
}
