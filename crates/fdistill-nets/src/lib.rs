//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP denoiser (UNet, discriminator heads
//! follow) and the VarDiU posterior.

pub mod edm;
pub mod embedding;
pub mod mlp;
pub mod posterior;

pub use mlp::{MlpDenoiser, MlpDenoiserConfig};
pub use posterior::{GaussianPosterior, GaussianPosteriorConfig};
