//! Device→host reads, counted.
//!
//! On a GPU backend every read of a tensor's values waits for the device to finish all work
//! queued before it (a *host sync*), so the number of reads per training iteration bounds how
//! well the device is kept busy. The training steps read through these functions only; each
//! call is one read and adds one to a per-thread counter ([`reads`]), which the tests use to
//! pin the count per iteration (README, "Backends").
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use fdistill_core::host;
//!
//! let device = Default::default();
//! let before = host::reads();
//! let a = Tensor::<Flex, 1>::from_floats([1.0, 2.0], &device);
//! let b = Tensor::<Flex, 1>::from_floats([3.0], &device);
//! // two scalars, one read: stack them on the device first
//! let v = host::read_values(Tensor::cat(vec![a.sum(), b.sum()], 0));
//! assert_eq!(v, vec![3.0, 3.0]);
//! assert_eq!(host::reads() - before, 1);
//! ```

use std::cell::Cell;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

thread_local! {
    static READS: Cell<usize> = const { Cell::new(0) };
}

/// Device→host reads made through this module on the current thread since it started.
pub fn reads() -> usize {
    READS.with(|r| r.get())
}

/// All values of `t`, as `f64`, in one read.
pub fn read_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    READS.with(|r| r.set(r.get() + 1));
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("converted to f64")
}

/// The value of a one-element tensor, in one read.
pub fn read_scalar<B: Backend, const D: usize>(t: Tensor<B, D>) -> f64 {
    let v = read_values(t);
    debug_assert_eq!(v.len(), 1, "read_scalar of a tensor of {} values", v.len());
    v[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn each_read_is_counted_once_per_call_on_its_thread() {
        let device = Default::default();
        let t = Tensor::<Flex, 2>::from_floats([[1.0, -2.0], [0.5, 4.0]], &device);
        let before = reads();
        assert_eq!(read_values(t.clone()), vec![1.0, -2.0, 0.5, 4.0]);
        assert_eq!(read_scalar(t.clone().sum()), 3.5);
        assert_eq!(reads() - before, 2);
        // another thread's reads are its own
        std::thread::spawn(move || {
            let start = reads();
            read_scalar(t.sum());
            assert_eq!(reads() - start, 1);
        })
        .join()
        .unwrap();
        assert_eq!(reads() - before, 2);
    }
}
