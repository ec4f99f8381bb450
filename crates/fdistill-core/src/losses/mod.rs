//! Losses and surrogates, one file each.

pub mod edm;
pub mod inject_gradient;

pub use inject_gradient::inject_gradient;
