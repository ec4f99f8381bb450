//! One writer per run directory.
//!
//! Every command that writes a run directory (teacher training, distillation, studies, the
//! classifier, imports) takes a [`RunGuard`] on it first and holds it for the whole run:
//!
//! - an **advisory lock** on `RUN/.fdistill.lock` ([`RunLock`]; `flock` on Unix,
//!   `LockFileEx` on Windows, through [`std::fs::File::try_lock`]). A second writer is
//!   refused at once with the holder's pid ([`GuardError::Busy`]). The lock belongs to the
//!   open file, so the kernel releases it when the process ends, however it ends: a stale
//!   lock file left by `kill -9` never blocks the next writer.
//! - the **write mode** ([`WriteMode`]): a directory that already holds a run is refused
//!   unless the caller continues it ([`WriteMode::Resume`]) or asks to start afresh
//!   ([`WriteMode::Overwrite`], which deletes the previous run's files first).
//!
//! Readers (`sample`, `eval`) take no lock: checkpoints are written into `checkpoint.tmp/`
//! and renamed into place ([`crate::distill::driver`]), so a reader never sees a torn one.
//!
//! Both checks happen under the lock, in that order, so two writers started at the same
//! moment cannot both pass the "holds a run" test.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::checkpoint::RunDir;

/// Name of the lock file inside a run directory.
pub const LOCK_FILE: &str = ".fdistill.lock";

/// Entries whose presence means a directory holds a run (of any kind): the configuration,
/// the metrics and the checkpoints.
pub const RUN_MARKERS: [&str; 4] = [
    "config.json",
    "metrics.jsonl",
    "checkpoint",
    "checkpoint.old",
];

/// What [`WriteMode::Overwrite`] deletes in every run directory (besides a caller's extra
/// entries): everything a run writes, nothing else.
pub const RUN_ARTEFACTS: [&str; 6] = [
    "config.json",
    "metrics.jsonl",
    "timing.jsonl",
    "checkpoint",
    "checkpoint.old",
    "checkpoint.tmp",
];

/// Run-directory guard errors. [`Busy`](Self::Busy), [`Exists`](Self::Exists) and
/// [`NoRun`](Self::NoRun) are the user's to fix (the message says how); [`Io`](Self::Io) is
/// the file system's.
#[derive(Debug, Error)]
pub enum GuardError {
    /// Another process holds the lock.
    #[error(
        "`{dir}` is being written by another fdistill process ({holder}); wait for it to finish \
         (or stop it), or choose another --out"
    )]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// `pid N` (and the command, when recorded), or `pid unknown`.
        holder: String,
    },
    /// The directory already holds a run and the mode is [`WriteMode::New`].
    #[error(
        "`{dir}` already holds a run ({found}); continue it with --resume, start it afresh with \
         --overwrite (deletes its config.json, metrics and checkpoints), or choose a new --out"
    )]
    Exists {
        /// The run directory.
        dir: PathBuf,
        /// The entries found, e.g. `config.json, checkpoint/`.
        found: String,
    },
    /// [`WriteMode::Resume`] on a directory that holds no run.
    #[error("cannot resume: `{dir}` {reason}; {hint}")]
    NoRun {
        /// The directory.
        dir: PathBuf,
        /// `does not exist` or `holds no run (no config.json)`.
        reason: String,
        /// What `--resume` expects, from the caller.
        hint: String,
    },
    /// Creating the directory or the lock file, or deleting old files, failed.
    #[error("cannot prepare run directory `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GuardError + '_ {
    move |source| GuardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An advisory, exclusive lock on `DIR/.fdistill.lock`, held until dropped (or until the
/// process ends). The file records the holder's pid and command for the message of the
/// next writer.
#[derive(Debug)]
pub struct RunLock {
    // Never read: holding the open file holds the lock.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (which must exist) without waiting; a held lock is
    /// [`GuardError::Busy`] naming the holder.
    pub fn acquire(dir: &Path) -> Result<RunLock, GuardError> {
        let path = dir.join(LOCK_FILE);
        // No truncation on open: the holder's pid must survive until we hold the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(GuardError::Busy {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        let command: Vec<String> = std::env::args().take(3).collect();
        let record = format!("{}\n{}\n", std::process::id(), command.join(" "));
        (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(record.as_bytes())?;
            file.flush()
        })()
        .map_err(io(&path))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `pid N (command)` from a held lock file. The holder writes its pid right after taking
/// the lock, so an empty file is re-read for up to 200 ms before giving up.
fn read_holder(file: &mut File) -> String {
    let start = Instant::now();
    loop {
        let mut text = String::new();
        let ok = file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok();
        let mut lines = text.lines();
        if ok && let Some(pid) = lines.next().and_then(|l| l.trim().parse::<u32>().ok()) {
            return match lines.next().map(str::trim).filter(|c| !c.is_empty()) {
                Some(cmd) => format!("pid {pid}, `{cmd}`"),
                None => format!("pid {pid}"),
            };
        }
        if start.elapsed() > Duration::from_millis(200) {
            return "pid unknown".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a writing command treats an existing run in its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Start a run; refuse a directory that already holds one. The directory is created.
    New,
    /// Continue the run in the directory; it must exist and hold a run (`config.json`).
    Resume,
    /// Delete the previous run's files ([`RUN_ARTEFACTS`] and the caller's extras), then start
    /// a new run.
    Overwrite,
}

impl WriteMode {
    /// The mode of a command's `--resume` / `--overwrite` flags (at most one is set).
    pub fn from_flags(resume: bool, overwrite: bool) -> WriteMode {
        match (resume, overwrite) {
            (true, _) => WriteMode::Resume,
            (false, true) => WriteMode::Overwrite,
            (false, false) => WriteMode::New,
        }
    }
}

/// A locked run directory: the lock, held while the guard lives, and the [`RunDir`].
#[derive(Debug)]
pub struct RunGuard {
    lock: RunLock,
    run: RunDir,
}

/// The [`RUN_MARKERS`] present in `dir`, `checkpoint/` style for directories.
pub fn run_markers(dir: &Path) -> Vec<String> {
    RUN_MARKERS
        .iter()
        .filter_map(|m| {
            let p = dir.join(m);
            if p.is_dir() {
                // An empty `checkpoint/` (created up front by an earlier version) holds nothing.
                let empty = std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none());
                (!empty).then(|| format!("{m}/"))
            } else {
                p.exists().then(|| m.to_string())
            }
        })
        .collect()
}

/// Whether `dir` holds a run: any of [`RUN_MARKERS`].
pub fn holds_run(dir: &Path) -> bool {
    !run_markers(dir).is_empty()
}

impl RunGuard {
    /// Locks `dir` for writing in `mode`.
    ///
    /// - [`WriteMode::New`] / [`WriteMode::Overwrite`] create the directory (and parents);
    ///   `New` refuses a directory that holds a run ([`GuardError::Exists`]); `Overwrite`
    ///   first deletes [`RUN_ARTEFACTS`] and `extra_artefacts` (names relative to `dir`).
    /// - [`WriteMode::Resume`] creates nothing: a missing directory or one without
    ///   `config.json` is [`GuardError::NoRun`] with `resume_hint` appended.
    ///
    /// The lock is taken before the directory's content is examined.
    pub fn acquire(
        dir: &Path,
        mode: WriteMode,
        extra_artefacts: &[&str],
        resume_hint: &str,
    ) -> Result<RunGuard, GuardError> {
        let no_run = |reason: &str| GuardError::NoRun {
            dir: dir.to_path_buf(),
            reason: reason.into(),
            hint: resume_hint.into(),
        };
        if mode == WriteMode::Resume {
            if !dir.is_dir() {
                return Err(no_run("does not exist"));
            }
        } else {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock = RunLock::acquire(dir)?;
        match mode {
            WriteMode::New => {
                let found = run_markers(dir);
                if !found.is_empty() {
                    return Err(GuardError::Exists {
                        dir: dir.to_path_buf(),
                        found: found.join(", "),
                    });
                }
            }
            WriteMode::Resume => {
                if !dir.join("config.json").is_file() {
                    return Err(no_run("holds no run (no config.json)"));
                }
            }
            WriteMode::Overwrite => {
                for name in RUN_ARTEFACTS.iter().chain(extra_artefacts) {
                    let p = dir.join(name);
                    if p.is_dir() {
                        std::fs::remove_dir_all(&p).map_err(io(&p))?;
                    } else if p.exists() {
                        std::fs::remove_file(&p).map_err(io(&p))?;
                    }
                }
            }
        }
        Ok(RunGuard {
            lock,
            run: RunDir::at(dir),
        })
    }

    /// The run directory (valid while the guard lives).
    pub fn run(&self) -> &RunDir {
        &self.run
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_the_same_process_is_refused_with_the_pid() {
        // flock locks belong to the open file, so two opens conflict even in one process.
        let dir = tempfile::tempdir().unwrap();
        let held = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, GuardError::Busy { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        // Released on drop: the next writer gets it, and the stale file does not matter.
        let again = RunLock::acquire(dir.path()).unwrap();
        assert!(again.path().is_file());
    }

    #[test]
    fn modes_refuse_resume_and_overwrite_as_documented() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        // Resume of nothing creates nothing.
        let e = RunGuard::acquire(&dir, WriteMode::Resume, &[], "HINT").unwrap_err();
        assert!(
            e.to_string().contains("does not exist") && e.to_string().contains("HINT"),
            "{e}"
        );
        assert!(!dir.exists());
        // New on a fresh directory: created, no run yet.
        let g = RunGuard::acquire(&dir, WriteMode::New, &[], "").unwrap();
        g.run().write_config(&serde_json::json!({"a": 1})).unwrap();
        std::fs::create_dir_all(g.run().checkpoint_dir()).unwrap();
        std::fs::write(g.run().checkpoint_file("x"), b"1").unwrap();
        std::fs::write(dir.join("result.json"), b"{}").unwrap();
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        // While held, every mode is Busy.
        for mode in [WriteMode::New, WriteMode::Resume, WriteMode::Overwrite] {
            let e = RunGuard::acquire(&dir, mode, &[], "").unwrap_err();
            assert!(matches!(e, GuardError::Busy { .. }), "{mode:?}: {e}");
        }
        drop(g);
        let e = RunGuard::acquire(&dir, WriteMode::New, &[], "").unwrap_err();
        assert!(
            e.to_string().contains("config.json, checkpoint/")
                && e.to_string().contains("--overwrite"),
            "{e}"
        );
        drop(RunGuard::acquire(&dir, WriteMode::Resume, &[], "").unwrap());
        // Overwrite deletes the run's files and the extras, nothing else.
        let g = RunGuard::acquire(&dir, WriteMode::Overwrite, &["result.json"], "").unwrap();
        assert!(!holds_run(&dir));
        assert!(!dir.join("result.json").exists());
        assert_eq!(std::fs::read(dir.join("notes.txt")).unwrap(), b"mine");
        assert!(g.lock_path().is_file());
        drop(g);
        // A directory with unrelated files only is not a run; an empty checkpoint/ is not one.
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        drop(RunGuard::acquire(&dir, WriteMode::New, &[], "").unwrap());
        let e = RunGuard::acquire(&dir, WriteMode::Resume, &[], "").unwrap_err();
        assert!(e.to_string().contains("no config.json"), "{e}");
    }
}
