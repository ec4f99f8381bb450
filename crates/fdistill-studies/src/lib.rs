//! Studies: reproducible experiments that write tables and figures into a directory.
//!
//! - [`exact`]: mode coverage of the exact Gaussian-mixture student under every divergence.
//! - [`mog40`]: VarDiU against Diff-Instruct, DMD2 and f-distill on VarDiU's MoG-40 benchmark.
//! - [`ring8`]: the 2-D toy pipeline's pieces (seeded teacher, 35-NFE samples, scores).
//!
//! ```
//! use fdistill_studies::exact::{ExactStudyConfig, run_study};
//!
//! fdistill_divergences::link();
//! let study = ExactStudyConfig {
//!     target: "bimodal-1d".into(),
//!     divergences: vec!["reverse-kl".into(), "forward-kl".into()],
//!     seeds: 1,
//!     steps: 20,
//!     eval_samples: 500,
//!     ..ExactStudyConfig::default()
//! }
//! .check()
//! .unwrap();
//! let result = run_study(&study, &mut |_| {}).unwrap();
//! assert_eq!(result.runs.len(), 2); // one run per divergence and seed
//! ```

#![warn(missing_docs)]

pub mod exact;
pub mod mog40;
pub mod ring8;
