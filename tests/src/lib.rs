//! Cross-crate integration tests of fdistill live in `tests/tests/`.
