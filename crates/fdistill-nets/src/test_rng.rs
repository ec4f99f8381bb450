//! Test support: flex draws every random number (network inits, `Tensor::random`, dropout)
//! from one process-wide generator, which the test threads of this binary share. A seed set
//! by one test is consumed by whichever test draws next, so a seed alone fixes nothing.
//! Every unit test of this crate that draws from that generator holds [`seeded`]'s guard
//! for its whole body: its draws then depend on its seed only, whatever runs beside it.

use std::sync::{Mutex, MutexGuard, PoisonError};

use burn::backend::Flex;
use burn::tensor::backend::Backend;

/// Held by every test that draws from flex's global generator.
static GLOBAL_RNG: Mutex<()> = Mutex::new(());

/// Locks flex's global generator for the caller and seeds it with `seed` (`Autodiff<Flex>`
/// shares it). Hold the guard until the test's last draw; do not call it twice in one test
/// (the lock is not reentrant).
#[must_use = "the generator is the caller's only while the guard lives"]
pub(crate) fn seeded(seed: u64) -> MutexGuard<'static, ()> {
    // A test that panicked while holding the lock leaves it poisoned; the generator is
    // reseeded here anyway.
    let guard = GLOBAL_RNG.lock().unwrap_or_else(PoisonError::into_inner);
    Flex::seed(&Default::default(), seed);
    guard
}
