//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP and UNet denoisers, the MLP and
//! convolutional discriminator heads, the VarDiU Gaussian posterior, and the Fashion-MNIST
//! classifier used as the image metric network.

pub mod classifier;
pub mod conv_disc;
pub mod edm;
pub mod embedding;
#[cfg(test)]
mod fdistill_images_tests;
#[cfg(test)]
pub(crate) mod grad_check;
pub mod mlp;
pub mod mlp_disc;
pub mod ops;
pub mod posterior;
pub mod unet;

pub use classifier::{Classifier, ClassifierConfig};
pub use conv_disc::{ConvDiscriminator, ConvDiscriminatorConfig};
pub use mlp::{MlpDenoiser, MlpDenoiserConfig};
pub use mlp_disc::{MlpDiscriminator, MlpDiscriminatorConfig};
pub use posterior::{GaussianPosterior, GaussianPosteriorConfig};
pub use unet::{UNet, UNetConfig};
