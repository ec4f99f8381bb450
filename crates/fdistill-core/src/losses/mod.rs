//! Losses and surrogates, one file each.

pub mod edm;
pub mod inject_gradient;
pub mod inner_product;
pub mod logistic;

pub use inject_gradient::inject_gradient;
pub use inner_product::inner_product_surrogate;
pub use logistic::{discriminator_loss, gan_generator_loss, softplus_stable};
