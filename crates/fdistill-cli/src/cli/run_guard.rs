//! The run-directory guard of every writing command (`teacher train`, `distill`, `study`,
//! `classifier train`, and any later importer): one writer per directory, and no silent
//! overwrite of an earlier run. The mechanism is [`fdistill::train::guard`]; this module
//! turns its errors into command-line errors (exit code 2 for what the user can fix) and
//! words the resume hint.

use std::path::Path;

use fdistill::train::checkpoint::CheckpointError;
use fdistill::train::distill::DistillError;
use fdistill::train::guard::{GuardError, RunGuard, WriteMode};

use super::CliError;

/// Locks `out` for a command in `mode` (from its `--resume` / `--overwrite` flags).
/// `extra` names files besides the run's usual ones that `--overwrite` deletes;
/// `resume_hint` says what `--resume` expects when `out` holds no run.
pub fn acquire(
    out: &Path,
    mode: WriteMode,
    extra: &[&str],
    resume_hint: &str,
) -> Result<RunGuard, CliError> {
    let guard = RunGuard::acquire(out, mode, extra, resume_hint).map_err(|e| match e {
        GuardError::Io { .. } => CliError::Runtime(e.into()),
        _ => CliError::Usage(e.to_string()),
    })?;
    tracing::info!(
        "holding the write lock {} ({mode:?})",
        guard.lock_path().display()
    );
    Ok(guard)
}

/// The lock of a training command (`teacher train`, `distill`), taken in two phases around
/// reading its configuration: [`start`](Self::start) locks at once when resuming (the run's
/// `config.json` is read next and must not change under it), [`run_dir`](Self::run_dir)
/// otherwise, once the configuration is resolved and checked (a refused configuration
/// creates nothing). A process that does not write (a node other than 0 of a multi-node run)
/// takes no lock. Dropping it releases the lock.
pub struct TrainingLock {
    guard: Option<RunGuard>,
    out: std::path::PathBuf,
    mode: WriteMode,
    writes: bool,
    hint: &'static str,
}

impl TrainingLock {
    /// Locks `out` now if `resume` (and not `dry_run`) and this process `writes`.
    pub fn start(
        out: &Path,
        (resume, overwrite, dry_run): (bool, bool, bool),
        writes: bool,
        hint: &'static str,
    ) -> Result<Self, CliError> {
        let mode = WriteMode::from_flags(resume, overwrite);
        let guard = if resume && !dry_run && writes {
            Some(acquire(out, mode, &[], hint)?)
        } else {
            None
        };
        Ok(TrainingLock {
            guard,
            out: out.to_path_buf(),
            mode,
            writes,
            hint,
        })
    }

    /// The run directory, locked (if this process writes and the lock is not held yet).
    pub fn run_dir(&mut self) -> Result<fdistill::train::checkpoint::RunDir, CliError> {
        if self.guard.is_none() && self.writes {
            self.guard = Some(acquire(&self.out, self.mode, &[], self.hint)?);
        }
        Ok(match &self.guard {
            Some(g) => g.run().clone(),
            None => fdistill::train::checkpoint::RunDir::at(&self.out),
        })
    }
}

/// `path` as a shell word: as is when it is plain, else single-quoted.
pub fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@+=,".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command-line error of a training loop's error: an interrupt becomes
/// [`CliError::Interrupted`] (exit code 130) with the command that resumes the run; a
/// failure to resume as asked is the user's to fix; anything else is a runtime error.
pub fn loop_error(e: DistillError, resume_command: &str) -> CliError {
    match e {
        DistillError::Interrupted {
            step,
            total_steps,
            checkpoint,
        } => CliError::Interrupted(format!(
            "interrupted: stopped after step {step} of {total_steps} and wrote a checkpoint to \
             {}; continue exactly where it stopped with\n  {resume_command}",
            checkpoint.display()
        )),
        DistillError::Resume(_)
        | DistillError::Config(_)
        | DistillError::Checkpoint(CheckpointError::Missing { .. }) => {
            CliError::Usage(e.to_string())
        }
        e => CliError::Runtime(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_only_when_needed() {
        assert_eq!(shell_word(Path::new("runs/t-1")), "runs/t-1");
        assert_eq!(shell_word(Path::new("my runs/t")), "'my runs/t'");
        assert_eq!(shell_word(Path::new("it's")), r"'it'\''s'");
    }
}
