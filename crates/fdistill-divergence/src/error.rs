//! Errors of the divergence registry.

use thiserror::Error;

/// Registry errors: unknown names, duplicates, bad parameters.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RegistryError {
    /// No divergence of that name is linked in.
    #[error(
        "unknown divergence `{name}`; known divergences: {known}. \
         (A plugin's divergences appear only if the binary links the plugin crate.)"
    )]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every registered name, sorted, comma-separated.
        known: String,
    },
    /// Two crates registered the same name.
    #[error(
        "divergence `{name}` is registered more than once (by {crates}); \
         rename one of them so every name is unique"
    )]
    Duplicate {
        /// The duplicated name.
        name: String,
        /// The registering crates.
        crates: String,
    },
    /// The parameters do not build a valid member of the family.
    #[error("invalid parameters for divergence `{name}`: {reason}")]
    InvalidParams {
        /// Registry name.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}
