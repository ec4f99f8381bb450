//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP denoiser (UNet, discriminator heads
//! and the VarDiU posterior follow).

pub mod edm;
pub mod embedding;
pub mod mlp;

pub use mlp::{MlpDenoiser, MlpDenoiserConfig};
