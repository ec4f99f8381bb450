//! Studies: reproducible experiments that write tables and figures into a directory.
//!
//! - [`exact`]: mode coverage of the exact Gaussian-mixture student under every divergence.

pub mod exact;
