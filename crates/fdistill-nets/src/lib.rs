//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP denoiser, the MLP discriminator head,
//! the VarDiU posterior (UNet and conv heads follow).

pub mod edm;
pub mod embedding;
pub mod mlp;
pub mod mlp_disc;
pub mod posterior;

pub use mlp::{MlpDenoiser, MlpDenoiserConfig};
pub use mlp_disc::{MlpDiscriminator, MlpDiscriminatorConfig};
pub use posterior::{GaussianPosterior, GaussianPosteriorConfig};
