//! The CLI's help text is committed under `docs/cli/`; this test keeps it current.
//! Regenerate with `FDISTILL_UPDATE_DOCS=1 cargo test -p fdistill-cli --test cli_help_docs`.

use std::path::PathBuf;
use std::process::Command;

fn help(path: &[String]) -> String {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = Command::new(env!("CARGO_BIN_EXE_fdistill"))
        .args(&args)
        .output()
        .expect("fdistill runs");
    assert!(out.status.success(), "fdistill {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Subcommand names listed under "Commands:" in a help text (except `help`).
fn subcommands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[test]
fn committed_help_matches_the_binary() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli");
    let update = std::env::var_os("FDISTILL_UPDATE_DOCS").is_some();
    let mut stack: Vec<Vec<String>> = vec![vec![]];
    let mut stale = Vec::new();
    while let Some(path) = stack.pop() {
        let text = help(&path);
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            stack.push(p);
        }
        let file = docs.join(if path.is_empty() {
            "fdistill.txt".to_string()
        } else {
            format!("fdistill-{}.txt", path.join("-"))
        });
        if update {
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(&file, &text).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            stale.push(file.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "CLI help changed; regenerate with FDISTILL_UPDATE_DOCS=1 cargo test -p fdistill-cli --test cli_help_docs: {stale:?}"
    );
}
