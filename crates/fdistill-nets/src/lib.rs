//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP and UNet denoisers, the convolutional
//! discriminator heads, and the Fashion-MNIST classifier used as the image metric network
//! (the VarDiU posterior follows).

pub mod classifier;
pub mod conv_disc;
pub mod edm;
pub mod embedding;
#[cfg(test)]
pub(crate) mod grad_check;
pub mod mlp;
pub mod unet;

pub use classifier::{Classifier, ClassifierConfig};
pub use conv_disc::{ConvDiscriminator, ConvDiscriminatorConfig};
pub use mlp::{MlpDenoiser, MlpDenoiserConfig};
pub use unet::{UNet, UNetConfig};
