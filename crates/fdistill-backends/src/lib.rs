//! # fdistill-backends
//!
//! The one place that maps a `--device` string to a monomorphised burn backend.
//!
//! Networks and trainers are generic over `B: AutodiffBackend`. A caller packages its work as
//! a [`BackendTask`] and [`dispatch`] runs it with the backend the device string names:
//!
//! | `--device` | backend | cargo feature |
//! |---|---|---|
//! | `flex` (default) | `Autodiff<Flex>`, pure-Rust CPU | `flex` (default) |
//! | `candle` | `Autodiff<Candle>`, CPU (deprecated upstream) | `candle` |
//! | `cuda` / `cuda:N` | `Autodiff<Cuda>`, NVIDIA GPU `N` | `cuda` |
//! | `wgpu` | `Autodiff<Wgpu>`, default WebGPU adapter | `wgpu` |
//!
//! A backend that was not compiled in is answered with [`DeviceError::NotCompiled`], which
//! names the cargo feature to enable.
//!
//! ```
//! use burn::tensor::{Tensor, backend::AutodiffBackend};
//! use fdistill_backends::{BackendTask, DeviceSpec, dispatch};
//!
//! struct SumOnes;
//! impl BackendTask for SumOnes {
//!     type Output = f32;
//!     fn run<B: AutodiffBackend>(self, device: B::Device) -> f32 {
//!         Tensor::<B, 1>::ones([3], &device).sum().into_scalar().elem::<f32>()
//!     }
//! }
//! # use burn::tensor::ElementConversion;
//! let spec: DeviceSpec = "flex".parse().unwrap();
//! assert_eq!(dispatch(&spec, SumOnes).unwrap(), 3.0);
//! ```

#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;
use thiserror::Error;

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// Pure-Rust CPU backend (burn-flex).
    #[default]
    Flex,
    /// Candle CPU backend.
    Candle,
    /// CUDA GPU with this index.
    Cuda(usize),
    /// WebGPU default adapter.
    Wgpu,
}

impl DeviceSpec {
    /// The cargo feature that compiles this backend in.
    pub fn feature(&self) -> &'static str {
        match self {
            DeviceSpec::Flex => "flex",
            DeviceSpec::Candle => "candle",
            DeviceSpec::Cuda(_) => "cuda",
            DeviceSpec::Wgpu => "wgpu",
        }
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(&self) -> bool {
        match self {
            DeviceSpec::Flex => cfg!(feature = "flex"),
            DeviceSpec::Candle => cfg!(feature = "candle"),
            DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
            DeviceSpec::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Flex => f.write_str("flex"),
            DeviceSpec::Candle => f.write_str("candle"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
        }
    }
}

/// Device selection errors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// The string names no backend.
    #[error("unknown device `{0}`; use one of: flex, candle, cuda, cuda:N, wgpu")]
    Unknown(String),
    /// `cuda:N` with a bad N.
    #[error("bad CUDA device index in `{0}`; write cuda:0, cuda:1, ...")]
    BadIndex(String),
    /// The backend exists but this binary was built without it.
    #[error(
        "device `{spec}` needs the `{feature}` backend, which this build does not include; \
         rebuild with `cargo build --release -p fdistill-cli --features {feature}`"
    )]
    NotCompiled {
        /// The device asked for.
        spec: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "flex" | "cpu" => Ok(DeviceSpec::Flex),
            "candle" => Ok(DeviceSpec::Candle),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "wgpu" => Ok(DeviceSpec::Wgpu),
            _ => match s.strip_prefix("cuda:") {
                Some(i) => i
                    .parse()
                    .map(DeviceSpec::Cuda)
                    .map_err(|_| DeviceError::BadIndex(s.to_string())),
                None => Err(DeviceError::Unknown(s.to_string())),
            },
        }
    }
}

/// `--threads N` errors.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ThreadsError {
    /// `N = 0`.
    #[error("--threads must be ≥ 1 (got 0); omit it to use one thread per core")]
    Zero,
    /// The pool was already built (threads can be set once per process).
    #[error(
        "the CPU thread pool is already running with {0} threads; set --threads before any tensor work"
    )]
    AlreadySet(usize),
}

/// Sizes the CPU thread pool to `n` threads: the rayon pool that burn-flex's element-wise
/// kernels, reductions, convolutions and GEMM share. Call once, before any tensor work.
/// Without it the pool follows `RAYON_NUM_THREADS`, else one thread per core. GPU backends
/// ignore it.
pub fn set_cpu_threads(n: usize) -> Result<(), ThreadsError> {
    if n == 0 {
        return Err(ThreadsError::Zero);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|_| ThreadsError::AlreadySet(rayon::current_num_threads()))
}

/// Threads of the CPU pool (`--threads`, else `RAYON_NUM_THREADS`, else the core count).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// Work generic over the autodiff backend; [`dispatch`] monomorphises it.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs on backend `B`, device `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// The CPU backend tests and examples use: `Autodiff<Flex>`.
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// Runs `task` on the backend `spec` names.
pub fn dispatch<T: BackendTask>(spec: &DeviceSpec, task: T) -> Result<T::Output, DeviceError> {
    if !spec.is_compiled() {
        return Err(DeviceError::NotCompiled {
            spec: spec.to_string(),
            feature: spec.feature(),
        });
    }
    #[allow(unreachable_patterns)]
    match *spec {
        #[cfg(feature = "flex")]
        DeviceSpec::Flex => {
            Ok(task.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default()))
        }
        #[cfg(feature = "candle")]
        DeviceSpec::Candle => Ok(task.run::<burn::backend::Autodiff<burn::backend::Candle>>(
            burn::backend::candle::CandleDevice::Cpu,
        )),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(index) => Ok(task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
            burn::backend::cuda::CudaDevice { index },
        )),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu => {
            Ok(task.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(Default::default()))
        }
        _ => unreachable!("is_compiled() returned true for {spec}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!("flex".parse::<DeviceSpec>().unwrap(), DeviceSpec::Flex);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("wgpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Wgpu);
        assert_eq!("candle".parse::<DeviceSpec>().unwrap(), DeviceSpec::Candle);
        assert!(matches!(
            "cuda:x".parse::<DeviceSpec>(),
            Err(DeviceError::BadIndex(_))
        ));
        let e = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains("flex, candle, cuda"), "{e}");
    }

    struct Probe;
    impl BackendTask for Probe {
        type Output = usize;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> usize {
            burn::tensor::Tensor::<B, 2>::zeros([2, 3], &device).dims()[1]
        }
    }

    #[test]
    fn zero_threads_is_refused_with_the_fix() {
        let e = set_cpu_threads(0).unwrap_err().to_string();
        assert!(e.contains("≥ 1") && e.contains("omit it"), "{e}");
    }

    #[test]
    fn dispatch_runs_on_flex() {
        assert_eq!(dispatch(&DeviceSpec::Flex, Probe).unwrap(), 3);
    }

    #[test]
    fn missing_backend_names_the_feature() {
        for spec in [DeviceSpec::Cuda(0), DeviceSpec::Wgpu, DeviceSpec::Candle] {
            if spec.is_compiled() {
                continue;
            }
            let e = dispatch(&spec, Probe).unwrap_err().to_string();
            assert!(e.contains(&format!("--features {}", spec.feature())), "{e}");
        }
    }
}
