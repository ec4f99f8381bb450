//! The loaders' guards must not refuse valid files: every PyTorch seed (written by PyTorch
//! itself, `tools/fuzz_state_dict_seeds.py`: zip and legacy formats, f16/bf16/f32/f64, nested
//! dicts, views) reads, while the fuzzing findings kept in `regressions/state-dict/` are
//! refused with an error that names the corrupt length.

use fdistill_nets::state_dict::StateDict;

fn dir(kind: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join("state-dict")
}

#[test]
fn every_pytorch_seed_reads() {
    let mut n = 0;
    for e in std::fs::read_dir(dir("seeds")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "pt") {
            let sd = StateDict::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!sd.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 7, "expected the 7 PyTorch seeds, found {n}");
}

#[test]
fn the_forged_lengths_found_by_fuzzing_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, says) in [
        ("legacy-pickle-string-length.bin", "claims"),
        ("zip-entry-size.bin", "states"),
    ] {
        let path = tmp.path().join(file).with_extension("pt");
        std::fs::copy(dir("regressions").join(file), &path).unwrap();
        let err = StateDict::read(&path).unwrap_err().to_string();
        assert!(
            err.contains(says) && err.contains("corrupt"),
            "{file}: {err}"
        );
    }
}
