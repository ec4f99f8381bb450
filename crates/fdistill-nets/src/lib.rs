//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP denoiser, the MLP discriminator head
//! (UNet, conv heads and the VarDiU posterior follow).

pub mod edm;
pub mod embedding;
pub mod mlp;
pub mod mlp_disc;

pub use mlp::{MlpDenoiser, MlpDenoiserConfig};
pub use mlp_disc::{MlpDiscriminator, MlpDiscriminatorConfig};
