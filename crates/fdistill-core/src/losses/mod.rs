//! Losses, one file each.

pub mod edm;
