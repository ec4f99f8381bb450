//! # fdistill-train
//!
//! Training loops of fdistill, generic over any burn autodiff backend:
//!
//! - [`distill`]: the distillation driver ([`distill::run_distillation`]: checkpoints, exact
//!   resume, metrics) and the methods it runs — f-distill ([`distill::FDistill`], which with
//!   reverse KL is DMD/DMD2/Diff-Instruct) and VarDiU ([`distill::vardiu`]);
//! - [`teacher`]: the EDM teacher trainer;
//! - [`checkpoint`]: run directories and atomic checkpoints;
//! - [`guard`]: one writer per run directory (advisory lock, refusal of an existing run).
//!
//! See `SPEC.md` §2–§5, §7.

pub mod checkpoint;
pub mod distill;
pub mod guard;
pub mod teacher;
