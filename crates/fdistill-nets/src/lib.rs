//! # fdistill-nets
//!
//! Networks of fdistill: EDM preconditioning, the MLP denoiser, EDM's image networks
//! (SongUNet — DDPM++, NCSN++ — and DhariwalUNet — ADM — inside `EdmPrecond`, with EDM's
//! parameter names and state-dict import/export), the MLP and convolutional discriminator
//! heads, the VarDiU Gaussian posterior, and the Fashion-MNIST classifier used as the image
//! metric network. CPU kernels with hand-written backwards (fused GroupNorm, convolution
//! gradients) live in [`ops`].
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
pub mod dhariwal_unet;
pub mod edm;
pub mod edm_block;
pub mod edm_layers;
pub mod edm_precond;
pub mod embedding;
#[cfg(test)]
mod fdistill_images_tests;
#[cfg(test)]
pub(crate) mod grad_check;
pub mod init;
pub mod mlp;
pub mod mlp_disc;
pub mod ops;
mod pickle_bounds;
pub mod posterior;
pub mod song_unet;
pub mod state_dict;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod unet_plan;

pub use classifier::{Classifier, ClassifierConfig};
pub use conv_disc::{ConvDiscriminator, ConvDiscriminatorConfig};
pub use dhariwal_unet::{DhariwalUNet, DhariwalUNetConfig};
pub use edm_precond::{
    EdmArch, EdmKwargs, EdmPrecond, EdmPrecondConfig, TapShape, UNetConfigError,
};
pub use init::init_now;
pub use mlp::{MlpDenoiser, MlpDenoiserConfig};
pub use mlp_disc::{MlpDiscriminator, MlpDiscriminatorConfig};
pub use posterior::{GaussianPosterior, GaussianPosteriorConfig};
pub use song_unet::{SongUNet, SongUNetConfig};
pub use state_dict::{KeyPrefix, MismatchReport, StateDict, StateTensor, WeightsError};

/// fdistill's image denoiser: [`EdmPrecond`] (the name the trainers and the CLI use).
pub type UNet<B> = EdmPrecond<B>;
/// Configuration of [`UNet`]: [`EdmPrecondConfig`].
pub type UNetConfig = EdmPrecondConfig;
