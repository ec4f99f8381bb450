//! A bounds check of the pickle streams in a PyTorch file, run before burn-store's reader.
//!
//! burn-store 0.21's pickle reader allocates the length a string, bytes or long opcode states
//! (`vec![0u8; len]`) before reading it, so a forged length in a 659-byte file asked for
//! 2.8 GB (found by fuzzing; the input is `crates/fdistill-fuzz/regressions/state-dict/`).
//! This walk reads each opcode's argument sizes — it builds no objects and runs no
//! instructions, it only steps over the stream — and refuses a length larger than what is left
//! of the stream, so every allocation the reader then makes is bounded by the file's size.
//!
//! Layouts walked (`torch/serialization.py`):
//!
//! ```text
//! zip (PyTorch ≥ 1.6)   <name>/data.pkl            one pickle, walked within the entry
//! legacy (0.1.10–1.5)   magic · protocol · sys info · object · storage keys   five pickles, then raw storages
//! plain pickle          one pickle
//! ```

use std::io::Read;

/// The legacy format's first 15 bytes: `PROTO 2`, `LONG1` of the magic number
/// 0x1950a86a20f9469cfc6c (little-endian), `STOP`.
const LEGACY_HEADER: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Pickles at the start of a legacy file.
const LEGACY_PICKLES: usize = 5;

/// Checks the pickle streams of a PyTorch file's bytes. `Err` names the opcode, its offset
/// and the length it claims.
pub(crate) fn check_pytorch_file(path: &std::path::Path) -> Result<(), String> {
    let mut head = [0u8; 15];
    let n = std::fs::File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|e| e.to_string())?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a valid zip: {e}"))?;
        let file_len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        check_zip_sizes(&mut zip, file_len)?;
        let name = zip
            .file_names()
            .find(|n| n.ends_with("data.pkl"))
            .map(str::to_owned)
            .ok_or("the zip has no data.pkl entry (not a torch.save file)")?;
        let mut pickle = Vec::new();
        let entry = zip.by_name(&name).map_err(|e| e.to_string())?;
        entry
            .take(file_len.saturating_mul(MAX_DEFLATE_RATIO))
            .read_to_end(&mut pickle)
            .map_err(|e| format!("{name}: {e}"))?;
        check_pickles(&pickle, 1).map(|_| ())
    } else {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let pickles = if bytes.starts_with(&LEGACY_HEADER) {
            LEGACY_PICKLES
        } else {
            1
        };
        check_pickles(&bytes, pickles).map(|_| ())
    }
}

/// Deflate expands at most 1032:1 (RFC 1951: 258 bytes from a 2-bit code, rounded up).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Every entry's stated size must be possible: a stored entry (what `torch.save` writes) no
/// larger than the file, a compressed one no larger than [`MAX_DEFLATE_RATIO`] times its
/// compressed bytes. burn-store reserves an entry's stated size before reading it
/// (`ZipSource::read_file`: `Vec::with_capacity(file.size())`; 1.9 GB from a 2 KB file, found
/// by fuzzing).
fn check_zip_sizes<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    file_len: u64,
) -> Result<(), String> {
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| e.to_string())?;
        let bound = match entry.compression() {
            zip::CompressionMethod::Stored => file_len,
            _ => entry.compressed_size().saturating_mul(MAX_DEFLATE_RATIO),
        };
        if entry.size() > bound {
            return Err(format!(
                "zip entry '{}' states {} bytes, more than a {file_len}-byte file can hold: \
                 the zip header is corrupt",
                entry.name(),
                entry.size()
            ));
        }
    }
    Ok(())
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// How an opcode's argument is laid out.
enum Arg {
    /// No argument.
    None,
    /// A fixed number of bytes.
    Fixed(usize),
    /// A little-endian length of this many bytes, then that many bytes.
    Counted(usize),
    /// This many newline-terminated lines.
    Lines(usize),
}

/// The argument layout of every opcode of pickle protocols 0–5 (`pickletools`), or `None` for
/// a byte that is no opcode.
fn arg_of(op: u8) -> Option<Arg> {
    Some(match op {
        // MARK STOP POP POP_MARK DUP NONE APPEND BUILD DICT EMPTY_DICT APPENDS LIST
        // EMPTY_LIST OBJ REDUCE SETITEM TUPLE EMPTY_TUPLE SETITEMS BINPERSID
        b'(' | b'.' | b'0' | b'1' | b'2' | b'N' | b'a' | b'b' | b'd' | b'}' | b'e' | b'l'
        | b']' | b'o' | b'R' | b's' | b't' | b')' | b'u' | b'Q' => Arg::None,
        // NEWOBJ TUPLE1 TUPLE2 TUPLE3 NEWTRUE NEWFALSE EMPTY_SET ADDITEMS FROZENSET
        // NEWOBJ_EX STACK_GLOBAL MEMOIZE NEXT_BUFFER READONLY_BUFFER
        0x81 | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | 0x8f | 0x90 | 0x91 | 0x92 | 0x93 | 0x94
        | 0x97 | 0x98 => Arg::None,
        // PROTO BININT1 BINGET BINPUT EXT1
        0x80 | b'K' | b'h' | b'q' | 0x82 => Arg::Fixed(1),
        // BININT2 EXT2
        b'M' | 0x83 => Arg::Fixed(2),
        // BININT LONG_BINGET LONG_BINPUT EXT4
        b'J' | b'j' | b'r' | 0x84 => Arg::Fixed(4),
        // BINFLOAT FRAME
        b'G' | 0x95 => Arg::Fixed(8),
        // LONG1 SHORT_BINSTRING SHORT_BINBYTES SHORT_BINUNICODE
        0x8a | b'U' | b'C' | 0x8c => Arg::Counted(1),
        // LONG4 BINSTRING BINUNICODE BINBYTES
        0x8b | b'T' | b'X' | b'B' => Arg::Counted(4),
        // BINUNICODE8 BINBYTES8 BYTEARRAY8
        0x8d | 0x8e | 0x96 => Arg::Counted(8),
        // INT LONG FLOAT STRING UNICODE PERSID GET PUT
        b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'g' | b'p' => Arg::Lines(1),
        // GLOBAL INST
        b'c' | b'i' => Arg::Lines(2),
        _ => return None,
    })
}

/// Walks `count` consecutive pickles from the start of `bytes`; every stated length must fit
/// in what is left of `bytes`. Returns the offset after the last `STOP`.
pub(crate) fn check_pickles(bytes: &[u8], count: usize) -> Result<usize, String> {
    let mut pos = 0usize;
    for _ in 0..count {
        loop {
            let at = pos;
            let op = *bytes.get(pos).ok_or_else(|| {
                format!("the pickle ends at byte {pos} without its STOP opcode (truncated file?)")
            })?;
            pos += 1;
            let rest = bytes.len() - pos;
            let arg = arg_of(op)
                .ok_or_else(|| format!("byte {op:#04x} at offset {at} is not a pickle opcode"))?;
            match arg {
                Arg::None => {}
                Arg::Fixed(n) => {
                    if n > rest {
                        return Err(format!(
                            "pickle opcode {op:#04x} at offset {at} needs {n} argument bytes; \
                             {rest} remain (truncated file?)"
                        ));
                    }
                    pos += n;
                }
                Arg::Counted(w) => {
                    if w > rest {
                        return Err(format!(
                            "pickle opcode {op:#04x} at offset {at}: its length field is cut off"
                        ));
                    }
                    let mut le = [0u8; 8];
                    le[..w].copy_from_slice(&bytes[pos..pos + w]);
                    let len = u64::from_le_bytes(le);
                    pos += w;
                    let rest = (bytes.len() - pos) as u64;
                    // BINSTRING's length is signed; a negative one reads as huge here and is
                    // refused like any other.
                    if len > rest {
                        return Err(format!(
                            "pickle opcode {op:#04x} at offset {at} claims {len} bytes, but only \
                             {rest} remain: the length is corrupt"
                        ));
                    }
                    pos += len as usize;
                }
                Arg::Lines(k) => {
                    for _ in 0..k {
                        let nl = bytes[pos..].iter().position(|&b| b == b'\n').ok_or_else(
                            || {
                                format!(
                                    "pickle opcode {op:#04x} at offset {at}: its text argument has \
                                 no end of line"
                                )
                            },
                        )?;
                        pos += nl + 1;
                    }
                }
            }
            if op == b'.' {
                break;
            }
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"w": "ab"}` in protocol 2, as Python's pickle writes it:
    /// `PROTO 2, EMPTY_DICT, BINPUT 0, BINUNICODE 'w', BINPUT 1, BINUNICODE 'ab', BINPUT 2,
    /// SETITEM, STOP` (the bytes of `pickle.dumps({'w': 'ab'}, 2)`).
    const SMALL: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01X\x02\x00\x00\x00abq\x02s.";

    #[test]
    fn walks_a_valid_pickle_to_its_stop() {
        assert_eq!(check_pickles(SMALL, 1), Ok(SMALL.len()));
    }

    #[test]
    fn refuses_a_length_longer_than_the_rest() {
        // The BINUNICODE at offset 5 claimed 1 byte; make it claim 0x7fff_ffff.
        let mut bad = SMALL.to_vec();
        bad[6..10].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let err = check_pickles(&bad, 1).unwrap_err();
        assert!(err.contains("claims 2147483647 bytes"), "{err}");
        assert!(err.contains("offset 5"), "{err}");
    }

    #[test]
    fn refuses_truncation_and_non_opcodes() {
        for cut in 0..SMALL.len() {
            assert!(check_pickles(&SMALL[..cut], 1).is_err(), "cut at {cut}");
        }
        let mut bad = SMALL.to_vec();
        bad[2] = 0xff;
        assert!(
            check_pickles(&bad, 1)
                .unwrap_err()
                .contains("not a pickle opcode")
        );
    }

    #[test]
    fn counts_consecutive_pickles() {
        let two = [SMALL, SMALL].concat();
        assert_eq!(check_pickles(&two, 2), Ok(two.len()));
        assert!(check_pickles(&two, 3).is_err());
    }

    /// A stored zip entry of 10 bytes whose headers are then made to state `stated` bytes.
    fn zip_stating(stated: u32) -> Vec<u8> {
        use std::io::Write;
        let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zw.start_file("archive/data/0", opts).unwrap();
        zw.write_all(&[7u8; 10]).unwrap();
        let mut bytes = zw.finish().unwrap().into_inner();
        // Uncompressed size: offset 22 of the local header, 24 of the central one (APPNOTE 4.3.7, 4.3.12).
        for (sig, off) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
            let at = bytes.windows(4).position(|w| w == sig).unwrap();
            bytes[at + off..at + off + 4].copy_from_slice(&stated.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn refuses_a_zip_entry_larger_than_the_file() {
        let ok = zip_stating(10);
        let len = ok.len() as u64;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(ok)).unwrap();
        assert_eq!(check_zip_sizes(&mut zip, len), Ok(()));
        let bad = zip_stating(0x7000_0000);
        let len = bad.len() as u64;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bad)).unwrap();
        let err = check_zip_sizes(&mut zip, len).unwrap_err();
        assert!(err.contains("states 1879048192 bytes"), "{err}");
    }

    #[test]
    fn newline_arguments_are_walked_line_by_line() {
        // GLOBAL 'torch\nFloatStorage\n', INT '7\n', STOP.
        let p = b"ctorch\nFloatStorage\nI7\n.";
        assert_eq!(check_pickles(p, 1), Ok(p.len()));
        assert!(check_pickles(b"ctorch\nFloat", 1).is_err());
    }
}
