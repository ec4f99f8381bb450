//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP and UNet denoisers, the MLP and
//! convolutional discriminator heads, the VarDiU Gaussian posterior, and the Fashion-MNIST
//! classifier used as the image metric network.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use fdistill_core::Denoiser;
//! use fdistill_nets::MlpDenoiserConfig;
//!
//! let device = Default::default();
//! let net = MlpDenoiserConfig::new(2, 0.5).init::<Flex>(&device); // EDM-preconditioned MLP
//! let x = Tensor::<Flex, 2>::zeros([8, 2], &device);              // [batch, dim]
//! let sigma = Tensor::<Flex, 1>::ones([8], &device);              // [batch]
//! assert_eq!(net.denoise(x, sigma, None).dims(), [8, 2]);
//! ```

#![warn(missing_docs)]

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
