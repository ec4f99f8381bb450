//! # fdistill-train
//!
//! Training loops of fdistill, generic over any burn autodiff backend:
//!
//! - [`distill`]: the distillation driver ([`distill::run_distillation`]: checkpoints, exact
//!   resume, metrics) and the methods it runs — f-distill ([`distill::FDistill`], which with
//!   reverse KL is DMD/DMD2/Diff-Instruct) and VarDiU ([`distill::vardiu`]);
//! - [`teacher`]: the EDM teacher trainer;
//! - [`checkpoint`]: run directories and atomic checkpoints;
//! - [`guard`]: one writer per run directory (advisory lock, refusal of an existing run);
//! - [`parallel`]: data-parallel training on several devices and machines (the all-reduce
//!   itself needs the cargo feature `collective`: burn-collective).
//!
//! See `SPEC.md` §2–§5, §7.
//!
//! ```
//! use fdistill_train::distill::DistillConfig;
//!
//! fdistill_divergences::link(); // the divergences a config may name
//! // Presets are named constructors; `check` validates once, before any tensor exists.
//! let config = DistillConfig::toy().check().unwrap();
//! assert_eq!((config.divergence.as_str(), config.critic_steps), ("jensen-shannon", 2));
//! let bad = DistillConfig { divergence: "no-such-divergence".into(), ..DistillConfig::toy() };
//! let message = bad.check().unwrap_err().to_string();
//! assert!(message.contains("jensen-shannon"), "the error lists the known names: {message}");
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod distill;
pub mod guard;
pub mod parallel;
pub mod teacher;
