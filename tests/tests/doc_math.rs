//! Formulas in doc comments render with KaTeX (docs/katex-header.html), but only after
//! Markdown has read them, and Markdown drops the backslash of `\,`, `\|`, `\{`, `\!`, `\_`
//! (a backslash before ASCII punctuation is a Markdown escape). Such a formula renders wrong
//! without a warning from rustdoc, so this test reads every doc comment of the workspace and
//! asks for the doubled form (`\\,`) inside `$…$` and `$$…$$`.

use std::path::{Path, PathBuf};

/// `(line number, offending text)` for each math span with a single backslash before ASCII
/// punctuation, in one file's doc comments.
fn single_escapes(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_display = false;
    for (no, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(body) = trimmed
            .strip_prefix("///")
            .or_else(|| trimmed.strip_prefix("//!"))
        else {
            in_display = false;
            continue;
        };
        for (j, part) in body.split("$$").enumerate() {
            if j > 0 {
                in_display = !in_display;
            }
            let spans: Vec<&str> = if in_display {
                vec![part]
            } else {
                // odd-indexed pieces between single dollars are inline math
                part.split('$').skip(1).step_by(2).collect()
            };
            for span in spans {
                if has_single_punct_escape(span) {
                    found.push((no + 1, span.trim().to_string()));
                }
            }
        }
    }
    found
}

fn has_single_punct_escape(math: &str) -> bool {
    let b = math.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\\' {
            if b[i + 1] == b'\\' {
                i += 2; // a doubled backslash: Markdown leaves one, as intended
                continue;
            }
            if b[i + 1].is_ascii_punctuation() {
                return true;
            }
        }
        i += 1;
    }
    false
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_checker_finds_a_single_escape_and_accepts_the_doubled_one() {
    assert_eq!(single_escapes("/// $$ D(p\\,\\|\\,q) $$").len(), 1);
    assert_eq!(single_escapes("//! $x \\{0\\}$ and $y$").len(), 1);
    assert!(single_escapes("/// $$ D(p\\\\,\\\\|\\\\,q) $$").is_empty());
    // a display formula over several lines is still math on its middle line
    assert_eq!(single_escapes("/// $$ a\n/// b \\, c\n/// $$").len(), 1);
    // outside math and outside doc comments, escapes are not this test's business
    assert!(single_escapes("/// a \\, b\nlet s = \"$\\,$\";").is_empty());
}

#[test]
fn doc_comment_formulas_survive_markdown() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["crates", "plugins", "examples", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (line, span) in single_escapes(&text) {
            bad.push(format!("{}:{line}: {span}", f.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "write a backslash before punctuation twice inside doc-comment math (`\\\\,` renders as `\\,`):\n{}",
        bad.join("\n")
    );
}
