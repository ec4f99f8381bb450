//! Checkpoint atomicity and the driver's resume refusals, with a tiny deterministic
//! [`Trainable`] (a random walk whose state is one number): a crash between writing
//! `checkpoint.tmp/` and the swap, a crash mid-save, a stale `checkpoint.tmp/` of an earlier
//! run, and the refusals (another method's checkpoint, a checkpoint at or past `--steps`,
//! an existing checkpoint without `--resume`, nothing to resume).

use std::path::Path;

use fdistill_train::checkpoint::{CheckpointError, RunDir, read_json, write_json};
use fdistill_train::distill::driver::{DriverState, latest_checkpoint};
use fdistill_train::distill::{DistillError, DriverConfig, StepMetrics, Trainable, run_training};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
struct Walk {
    value: f64,
}

impl StepMetrics for Walk {
    fn non_finite(&self) -> Option<(String, f64)> {
        None
    }
}

/// `x ← 0.9 x + u`, `u ~ U(0, 1)`; saves `walk.json` then `walk_extra.json`. With
/// `fail_save_at = Some(s)`, the save of step `s` writes `walk.json` and then fails, like a
/// process killed between two files.
struct RandomWalk {
    name: &'static str,
    x: f64,
    step: usize,
    fail_save_at: Option<usize>,
}

impl RandomWalk {
    fn new() -> Self {
        RandomWalk {
            name: "walk",
            x: 0.0,
            step: 0,
            fail_save_at: None,
        }
    }
}

impl Trainable for RandomWalk {
    type Metrics = Walk;
    fn name(&self) -> &'static str {
        self.name
    }
    fn step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<Walk, DistillError> {
        self.x = 0.9 * self.x + rng.random::<f64>();
        self.step = step;
        Ok(Walk { value: self.x })
    }
    fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        write_json(&dir.join("walk.json"), &(self.x, self.step))?;
        if self.fail_save_at == Some(self.step) {
            return Err(CheckpointError::Io {
                path: dir.join("walk_extra.json"),
                source: std::io::Error::other("simulated crash mid-save"),
            });
        }
        write_json(&dir.join("walk_extra.json"), &self.step)
    }
    fn load(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        (self.x, self.step) = read_json(&dir.join("walk.json"))?;
        let extra: usize = read_json(&dir.join("walk_extra.json"))?;
        assert_eq!(extra, self.step, "a checkpoint mixes two steps");
        Ok(())
    }
}

fn config(steps: usize) -> DriverConfig {
    DriverConfig {
        steps,
        checkpoint_every: 4,
        log_every: 1,
        seed: 11,
    }
}

fn run(m: &mut RandomWalk, dir: &Path, steps: usize, resume: bool) -> Result<usize, DistillError> {
    let run = RunDir::create(dir).unwrap();
    run_training(m, &config(steps), &run, resume, |_| Ok(())).map(|s| s.first_step)
}

fn metrics(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap()
}

/// The reference: 12 uninterrupted steps.
fn reference(tmp: &Path) -> String {
    let dir = tmp.join("reference");
    run(&mut RandomWalk::new(), &dir, 12, false).unwrap();
    metrics(&dir)
}

fn step_of(dir: &Path) -> usize {
    let s: DriverState = read_json(&dir.join("driver.json")).unwrap();
    s.step
}

/// A save that fails half-way (the new `walk.json` written, `walk_extra.json` not) leaves the
/// previous checkpoint whole: resume continues from it and ends byte-identical to an
/// uninterrupted run. (A driver writing straight into `checkpoint/` fails here.)
#[test]
fn a_crash_mid_save_keeps_the_previous_checkpoint_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let expect = reference(tmp.path());
    let dir = tmp.path().join("run");
    let mut m = RandomWalk::new();
    m.fail_save_at = Some(8);
    let e = run(&mut m, &dir, 12, false).unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
    let runs = RunDir::at(&dir);
    let latest = latest_checkpoint(&runs).unwrap();
    assert_eq!(latest, runs.checkpoint_dir());
    assert_eq!(step_of(&latest), 4);
    let (x, step): (f64, usize) = read_json(&latest.join("walk.json")).unwrap();
    assert_eq!(
        step, 4,
        "checkpoint/walk.json is from step {step} (x = {x})"
    );
    assert_eq!(run(&mut RandomWalk::new(), &dir, 12, true).unwrap(), 5);
    assert_eq!(metrics(&dir), expect);
}

/// A crash between the two renames of the swap (`checkpoint/` moved to `checkpoint.old/`,
/// the complete `checkpoint.tmp/` not yet renamed): resume loads `checkpoint.old/`, and the
/// next checkpoint replaces the leftover `checkpoint.tmp/` instead of mixing with it.
#[test]
fn a_crash_between_the_renames_resumes_from_checkpoint_old() {
    let tmp = tempfile::tempdir().unwrap();
    let expect = reference(tmp.path());
    let dir = tmp.path().join("run");
    run(&mut RandomWalk::new(), &dir, 6, false).unwrap();
    // State after `checkpoint/ → checkpoint.old/`, with a half-written tmp of a later step
    // (walk.json only) and a file no save writes.
    let runs = RunDir::at(&dir);
    assert_eq!(step_of(&runs.checkpoint_dir()), 6);
    std::fs::rename(runs.checkpoint_dir(), dir.join("checkpoint.old")).unwrap();
    let stale = dir.join("checkpoint.tmp");
    std::fs::create_dir_all(&stale).unwrap();
    write_json(&stale.join("walk.json"), &(123.0f64, 8usize)).unwrap();
    std::fs::write(stale.join("stale.bin"), b"from an earlier run").unwrap();

    let latest = latest_checkpoint(&runs).unwrap();
    assert_eq!(latest, dir.join("checkpoint.old"));
    assert_eq!(run(&mut RandomWalk::new(), &dir, 12, true).unwrap(), 7);
    assert_eq!(metrics(&dir), expect);
    // The swap finished cleanly: one complete checkpoint, no leftovers.
    assert_eq!(step_of(&runs.checkpoint_dir()), 12);
    assert!(!runs.checkpoint_dir().join("stale.bin").exists());
    assert!(!dir.join("checkpoint.tmp").exists());
    assert!(!dir.join("checkpoint.old").exists());
}

/// A stale `checkpoint.tmp/` next to a good `checkpoint/` (an earlier run crashed while
/// writing) is ignored by resume and never leaks into the next checkpoint.
#[test]
fn a_stale_checkpoint_tmp_is_ignored_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let expect = reference(tmp.path());
    let dir = tmp.path().join("run");
    run(&mut RandomWalk::new(), &dir, 4, false).unwrap();
    let stale = dir.join("checkpoint.tmp");
    std::fs::create_dir_all(&stale).unwrap();
    write_json(
        &stale.join("driver.json"),
        &serde_json::json!({"method": "walk", "step": 9}),
    )
    .unwrap();
    std::fs::write(stale.join("stale.bin"), b"x").unwrap();
    let runs = RunDir::at(&dir);
    assert_eq!(latest_checkpoint(&runs).unwrap(), runs.checkpoint_dir());
    assert_eq!(run(&mut RandomWalk::new(), &dir, 12, true).unwrap(), 5);
    assert_eq!(metrics(&dir), expect);
    assert!(!runs.checkpoint_dir().join("stale.bin").exists());
    assert!(!stale.exists());
}

/// The driver's refusals, each naming the problem and the fix.
#[test]
fn resume_refusals_name_the_problem_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing to resume.
    let empty = tmp.path().join("empty");
    let e = run(&mut RandomWalk::new(), &empty, 4, true).unwrap_err();
    assert!(
        matches!(
            &e,
            DistillError::Checkpoint(CheckpointError::Missing { .. })
        ) && e.to_string().contains("--overwrite"),
        "{e}"
    );
    let dir = tmp.path().join("run");
    run(&mut RandomWalk::new(), &dir, 4, false).unwrap();
    // An existing checkpoint without --resume.
    let e = run(&mut RandomWalk::new(), &dir, 8, false).unwrap_err();
    assert!(
        matches!(&e, DistillError::Resume(_)) && e.to_string().contains("--resume"),
        "{e}"
    );
    // Another method's checkpoint.
    let mut other = RandomWalk::new();
    other.name = "other";
    let e = run(&mut other, &dir, 8, true).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, DistillError::Resume(_)) && msg.contains("`walk`") && msg.contains("`other`"),
        "{msg}"
    );
    // A checkpoint at (or past) the requested steps.
    for steps in [4, 3] {
        let e = run(&mut RandomWalk::new(), &dir, steps, true).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, DistillError::Resume(_))
                && msg.contains("at step 4")
                && msg.contains("larger --steps"),
            "{msg}"
        );
    }
    // None of the refusals touched the checkpoint or the metrics.
    assert_eq!(step_of(&RunDir::at(&dir).checkpoint_dir()), 4);
    assert_eq!(metrics(&dir).lines().count(), 4);
    assert_eq!(run(&mut RandomWalk::new(), &dir, 5, true).unwrap(), 5);
}
