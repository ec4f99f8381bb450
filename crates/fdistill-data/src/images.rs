//! Image sets: a PNG-folder loader, conversion from IDX, and PNG sample grids.
//!
//! Pixels are `f32` in `[−1, 1]`, laid out `[n, channels, height, width]` row-major, the
//! layout the image networks reshape the flat `[batch, dim]` samples into.

use std::path::{Path, PathBuf};

use image::{ImageBuffer, Luma, Rgb};
use thiserror::Error;

use crate::idx::LabelledImages;

/// Errors while reading or writing images; each names the file.
#[derive(Debug, Error)]
pub enum ImageError {
    /// File-system failure.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A PNG that does not decode.
    #[error("cannot decode {path} as PNG: {reason}")]
    Decode {
        /// Path.
        path: PathBuf,
        /// Decoder message.
        reason: String,
    },
    /// Images of different sizes in one folder.
    #[error(
        "{path} is {found:?} (w, h) but earlier images are {expected:?}; all images must have one size"
    )]
    SizeMismatch {
        /// Path.
        path: PathBuf,
        /// Size of this image.
        found: (u32, u32),
        /// Size of the first image.
        expected: (u32, u32),
    },
    /// No PNG found.
    #[error("no .png files in {0} (or in its class subfolders)")]
    Empty(PathBuf),
    /// An image or the whole folder is larger than the loader accepts.
    #[error("{path}: {reason}")]
    TooLarge {
        /// The file (or folder).
        path: PathBuf,
        /// The size and the limit.
        reason: String,
    },
    /// Writing a PNG failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// Path.
        path: PathBuf,
        /// Cause.
        reason: String,
    },
}

/// A set of same-size images with optional class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Number of images.
    pub n: usize,
    /// Channels (1 grey, 3 RGB).
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// `[n, channels, height, width]` pixels in `[−1, 1]`.
    pub pixels: Vec<f32>,
    /// Class index per image, if known.
    pub labels: Option<Vec<u32>>,
    /// Class names (subfolder names of a PNG folder, or digits for IDX).
    pub class_names: Vec<String>,
}

impl ImageSet {
    /// Flattened dimension `channels · height · width`.
    pub fn dim(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl From<LabelledImages> for ImageSet {
    fn from(d: LabelledImages) -> Self {
        let n_classes = d.labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        ImageSet {
            n: d.n,
            channels: 1,
            height: d.height,
            width: d.width,
            pixels: d.pixels,
            labels: Some(d.labels.iter().map(|&l| l as u32).collect()),
            class_names: (0..n_classes).map(|c| c.to_string()).collect(),
        }
    }
}

fn png_files(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let io = |source| ImageError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    Ok(files)
}

/// Largest side of one image (pixels) a PNG folder may hold.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// Largest number of values (`n · channels · height · width`) a PNG folder may load: 2²⁸
/// `f32`s, 1 GiB (Fashion-MNIST's 60 000 images, padded to 32×32, are 6.1 · 10⁷).
pub const MAX_FOLDER_VALUES: usize = 1 << 28;

/// Largest ratio of decoded bytes to file bytes a PNG can reach: deflate's limit is 1032:1.
const MAX_PNG_EXPANSION: u64 = 1100;

/// Decodes one PNG from memory; `path` only names it in errors. Before any pixel buffer is
/// allocated, the header's size is checked against [`MAX_IMAGE_SIDE`] and against what the
/// file can hold (a tiny file claiming a huge image is truncated or corrupt).
pub fn decode_png(bytes: &[u8], path: &Path) -> Result<image::DynamicImage, ImageError> {
    use image::ImageDecoder;
    let decode = |reason: String| ImageError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| decode(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            reason: format!(
                "the image is {w}×{h}; accepted sides are 1 to {MAX_IMAGE_SIDE} pixels"
            ),
        });
    }
    let need = decoder.total_bytes();
    let can_hold = MAX_PNG_EXPANSION * bytes.len() as u64 + 4096;
    if need > can_hold {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            reason: format!(
                "the header claims {w}×{h} pixels ({need} bytes decoded) but the file has only {} \
                 bytes; it is truncated or corrupt",
                bytes.len()
            ),
        });
    }
    image::DynamicImage::from_decoder(decoder).map_err(|e| decode(e.to_string()))
}

/// Loads PNGs from `dir`: either `dir/*.png` (unlabelled) or `dir/<class>/*.png` (labelled by
/// the sorted subfolder names). Grey images give 1 channel; anything else is converted to RGB.
/// Every image is decoded by [`decode_png`]; the folder's total is capped at
/// [`MAX_FOLDER_VALUES`] before each image is added.
pub fn load_png_folder(dir: &Path) -> Result<ImageSet, ImageError> {
    let io = |source| ImageError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    let mut files: Vec<(PathBuf, Option<u32>)> =
        png_files(dir)?.into_iter().map(|p| (p, None)).collect();
    let mut class_names = Vec::new();
    if files.is_empty() {
        for sub in &subdirs {
            let pngs = png_files(sub)?;
            if pngs.is_empty() {
                continue;
            }
            class_names.push(
                sub.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
            );
            let label = (class_names.len() - 1) as u32;
            files.extend(pngs.into_iter().map(|p| (p, Some(label))));
        }
    }
    if files.is_empty() {
        return Err(ImageError::Empty(dir.to_path_buf()));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut size = None;
    let mut channels = 0;
    for (path, label) in &files {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
            path: path.clone(),
            source,
        })?;
        let img = decode_png(&bytes, path)?;
        let dims = (img.width(), img.height());
        match size {
            None => {
                size = Some(dims);
                channels = if img.color().has_color() { 3 } else { 1 };
            }
            Some(expected) if expected != dims => {
                return Err(ImageError::SizeMismatch {
                    path: path.clone(),
                    found: dims,
                    expected,
                });
            }
            _ => {}
        }
        let per_image = channels * dims.0 as usize * dims.1 as usize;
        if pixels.len() + per_image > MAX_FOLDER_VALUES {
            return Err(ImageError::TooLarge {
                path: dir.to_path_buf(),
                reason: format!(
                    "the folder holds more than {MAX_FOLDER_VALUES} pixel values; use a smaller \
                     set (or downsample the images first)"
                ),
            });
        }
        if channels == 1 {
            pixels.extend(img.to_luma8().pixels().map(|p| p.0[0] as f32 / 127.5 - 1.0));
        } else {
            let rgb = img.to_rgb8();
            for c in 0..3 {
                pixels.extend(rgb.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
            }
        }
        if let Some(l) = label {
            labels.push(*l);
        }
    }
    let (w, h) = size.expect("at least one file");
    Ok(ImageSet {
        n: files.len(),
        channels,
        height: h as usize,
        width: w as usize,
        pixels,
        labels: if class_names.is_empty() {
            None
        } else {
            Some(labels)
        },
        class_names,
    })
}

fn to_byte(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Writes the first `rows · cols` images of a `[n, c, h, w]` buffer in `[−1, 1]` as one PNG
/// grid with a 1-pixel border. Values outside `[−1, 1]` are clamped for display only.
pub fn save_image_grid(
    path: &Path,
    pixels: &[f32],
    (channels, height, width): (usize, usize, usize),
    rows: usize,
    cols: usize,
) -> Result<(), ImageError> {
    let per = channels * height * width;
    let n = (pixels.len() / per).min(rows * cols);
    let (gw, gh) = (
        (cols * (width + 1) + 1) as u32,
        (rows * (height + 1) + 1) as u32,
    );
    let at = |i: usize, c: usize, y: usize, x: usize| {
        pixels[i * per + c * height * width + y * width + x]
    };
    let result = if channels == 1 {
        let mut img: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(gw, gh, Luma([64]));
        for i in 0..n {
            let (r, c) = (i / cols, i % cols);
            for y in 0..height {
                for x in 0..width {
                    let (px, py) = (
                        (c * (width + 1) + 1 + x) as u32,
                        (r * (height + 1) + 1 + y) as u32,
                    );
                    img.put_pixel(px, py, Luma([to_byte(at(i, 0, y, x))]));
                }
            }
        }
        img.save(path)
    } else {
        let mut img: ImageBuffer<Rgb<u8>, Vec<u8>> =
            ImageBuffer::from_pixel(gw, gh, Rgb([64, 64, 64]));
        for i in 0..n {
            let (r, c) = (i / cols, i % cols);
            for y in 0..height {
                for x in 0..width {
                    let (px, py) = (
                        (c * (width + 1) + 1 + x) as u32,
                        (r * (height + 1) + 1 + y) as u32,
                    );
                    let v = [0, 1, 2].map(|ch| to_byte(at(i, ch.min(channels - 1), y, x)));
                    img.put_pixel(px, py, Rgb(v));
                }
            }
        }
        img.save(path)
    };
    result.map_err(|e| ImageError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn tmp(name: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(dir, d)
    }

    #[test]
    fn class_folders_round_trip_through_a_grid_writer() {
        let dir = tmp("classes");
        for (class, value) in [("a", 0u8), ("b", 255u8)] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for k in 0..2 {
                let img: ImageBuffer<Luma<u8>, Vec<u8>> =
                    ImageBuffer::from_pixel(4, 3, Luma([value]));
                img.save(dir.join(class).join(format!("{k}.png"))).unwrap();
            }
        }
        let set = load_png_folder(&dir).unwrap();
        assert_eq!((set.n, set.channels, set.height, set.width), (4, 1, 3, 4));
        assert_eq!(set.labels.as_deref(), Some(&[0, 0, 1, 1][..]));
        assert_eq!(set.class_names, vec!["a", "b"]);
        assert!(set.pixels[..24].iter().all(|&p| p == -1.0));
        assert!(set.pixels[24..].iter().all(|&p| p == 1.0));
        // Grid: 2×2 images of 4×3 with borders → 11 × 9 pixels.
        let grid = dir.join("grid.png");
        save_image_grid(&grid, &set.pixels, (1, 3, 4), 2, 2).unwrap();
        let back = image::open(&grid).unwrap().to_luma8();
        assert_eq!(back.dimensions(), (11, 9));
        assert_eq!(back.get_pixel(1, 1).0[0], 0);
        assert_eq!(back.get_pixel(1, 5).0[0], 255);
    }

    #[test]
    fn bad_folders_give_errors_naming_the_file() {
        let dir = tmp("bad");
        assert!(matches!(load_png_folder(&dir), Err(ImageError::Empty(_))));
        std::fs::write(dir.join("broken.png"), b"not a png").unwrap();
        let e = load_png_folder(&dir).unwrap_err().to_string();
        assert!(e.contains("broken.png"), "{e}");
        let dir = tmp("sizes");
        ImageBuffer::<Luma<u8>, Vec<u8>>::new(4, 4)
            .save(dir.join("a.png"))
            .unwrap();
        ImageBuffer::<Luma<u8>, Vec<u8>>::new(5, 4)
            .save(dir.join("b.png"))
            .unwrap();
        let e = load_png_folder(&dir).unwrap_err().to_string();
        assert!(e.contains("b.png") && e.contains("one size"), "{e}");
        assert!(load_png_folder(Path::new("/nonexistent/fdistill")).is_err());
    }

    /// A PNG header claiming more pixels than its file can hold is refused before decoding.
    #[test]
    fn a_small_file_claiming_a_huge_image_is_refused_before_allocating() {
        let mut bytes = Vec::new();
        ImageBuffer::<Luma<u8>, Vec<u8>>::new(4, 4)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        // IHDR width and height (big-endian, bytes 16..24) → 8000 × 8000; fix the CRC so
        // the header itself is valid.
        bytes[16..20].copy_from_slice(&8000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&8000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode_png(&bytes, Path::new("huge.png"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("8000×8000") && e.contains("truncated or corrupt"),
            "{e}"
        );
        bytes[16..20].copy_from_slice(&9000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode_png(&bytes, Path::new("wide.png"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 to 8192"), "{e}");
    }

    /// CRC-32 (IEEE) of PNG chunks, bit by bit.
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
}
