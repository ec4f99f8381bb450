//! Fast building blocks for the networks, usable by any UNet family (DDPM++/SongUNet, ADM)
//! and the MLPs: each is a standalone module or function with a plain tensor-op reference it is
//! tested against (values and gradients). See `docs/performance.md`.

pub mod conv;
#[cfg(feature = "flex")]
pub mod conv_gemm;
pub mod fast_exp;
pub mod group_norm;
pub mod silu;

pub use conv::{conv2d, conv2d_with};
pub use group_norm::{GroupNorm, GroupNormConfig, group_norm, group_norm_reference};
pub use silu::silu;

/// `T` as `U` when they are the same type (the caller compared their `TypeId`s): how the ops
/// pick their CPU kernels without a trait bound on the backend.
#[cfg(feature = "flex")]
fn same<T: std::any::Any, U: std::any::Any>(t: T) -> U {
    let boxed: Box<dyn std::any::Any> = Box::new(t);
    *boxed
        .downcast::<U>()
        .expect("the caller compared the TypeIds")
}

/// Contiguous f32 values of a flex tensor (copied only if it is a strided view): how the CPU
/// kernels read their inputs.
#[cfg(feature = "flex")]
fn values(t: &burn::backend::flex::FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous")
                .to_vec(),
        ),
    }
}

/// A flex tensor of `shape` holding `values` (row-major): how the CPU kernels return results.
#[cfg(feature = "flex")]
fn flex_tensor(values: Vec<f32>, shape: Vec<usize>) -> burn::backend::flex::FlexTensor {
    burn::backend::flex::FlexTensor::from_data(burn::tensor::TensorData::new(values, shape))
}
