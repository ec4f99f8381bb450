//! Fast building blocks for the networks, usable by any UNet family (DDPM++/SongUNet, ADM)
//! and the MLPs: each is a standalone module or function with a plain tensor-op reference it is
//! tested against (values and gradients). See `docs/performance.md`.

pub mod attention;
pub mod concat;
pub mod conv;
#[cfg(feature = "flex")]
pub mod conv_gemm;
pub mod fast_exp;
pub mod group_norm;
pub mod resample;
pub mod scaled_sum;
pub mod silu;
pub mod softmax;

pub use attention::{attention, attention_reference};
pub use concat::cat_channels;
pub use conv::{conv2d, conv2d_with};
pub use group_norm::{GroupNorm, GroupNormConfig, Modulation, group_norm, group_norm_reference};
pub use resample::{avg_pool2, upsample_nearest2};
pub use scaled_sum::scaled_sum;
pub use silu::silu;
pub use softmax::softmax_last;

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

/// `n` zeros, written by the rayon pool when it has more than one thread and `n` is large.
///
/// Why: `vec![0.0; n]` is `calloc`, which zeroes a reused heap block with one `memset` on the
/// calling thread; between the parallel kernels that thread is the only one running, so those
/// `memset`s (and the first-touch page faults) were serial time in a two-thread step
/// (docs/performance.md, change 11). Every kernel that fills its output by parallel chunks
/// allocates it here.
#[cfg(feature = "flex")]
fn par_zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const SERIAL_BELOW: usize = 1 << 15;
    const CHUNK: usize = 1 << 14;
    if n < SERIAL_BELOW || rayon::current_num_threads() == 1 {
        return vec![0.0; n];
    }
    let mut v = Vec::<f32>::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .for_each(|c| c.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the capacity is `n` and every one of the `n` elements was written just above
    unsafe { v.set_len(n) };
    v
}

/// A new vector of `n` values written by `f(start, chunk)` for consecutive chunks of `chunk`
/// values (the last may be shorter), split over the rayon pool when `n ≥ parallel_from`:
/// what the copy and element-wise kernels use instead of zeroing an output first.
///
/// `f` must write every element of the chunk it gets (`MaybeUninit::write`); the result is
/// then fully initialised.
#[cfg(feature = "flex")]
fn par_build(
    n: usize,
    chunk: usize,
    parallel_from: usize,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut y = Vec::<f32>::with_capacity(n);
    let out = &mut y.spare_capacity_mut()[..n];
    if n > 0 {
        let chunk = chunk.max(1);
        if n >= parallel_from {
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(k, c)| f(k * chunk, c));
        } else {
            out.chunks_mut(chunk)
                .enumerate()
                .for_each(|(k, c)| f(k * chunk, c));
        }
    }
    // SAFETY: the capacity is `n`, the chunks cover `0..n`, and `f` writes every element of
    // each (the contract above; every caller writes one value per element)
    unsafe { y.set_len(n) };
    y
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    #[test]
    fn par_build_writes_every_chunk_at_every_size_and_thread_count() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (n, chunk) in [
                (0, 4),
                (1, 4),
                (10, 3),
                (1 << 15, 1 << 13),
                ((1 << 15) + 5, 7),
            ] {
                let v = pool.install(|| {
                    super::par_build(n, chunk, 1 << 15, |start, c| {
                        for (i, x) in c.iter_mut().enumerate() {
                            x.write((start + i) as f32);
                        }
                    })
                });
                assert_eq!(v.len(), n);
                assert!(
                    v.iter().enumerate().all(|(i, &x)| x == i as f32),
                    "n {n}, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn par_zeros_is_all_zeros_at_every_size_and_thread_count() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for n in [0, 1, (1 << 15) - 1, 1 << 15, (1 << 16) + 7, 3 << 16] {
                let v = pool.install(|| super::par_zeros(n));
                assert_eq!(v.len(), n, "{threads} threads, n = {n}");
                assert!(
                    v.iter().all(|&x| x.to_bits() == 0),
                    "{threads} threads, n = {n}"
                );
            }
        }
    }
}
