//! Studies: reproducible experiments that write tables and figures into a directory.
//!
//! - [`exact`]: mode coverage of the exact Gaussian-mixture student under every divergence.
//! - [`mog40`]: VarDiU against Diff-Instruct, DMD2 and f-distill on VarDiU's MoG-40 benchmark.

pub mod exact;
pub mod mog40;
