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
    /// `--devices` with no device in it.
    #[error("--devices `{0}` names no device; write e.g. cuda:0,cuda:1 or flex,flex")]
    NoDevices(String),
    /// `--devices` with an empty entry (`flex,,flex`).
    #[error("--devices `{0}` has an empty entry; remove the extra comma")]
    EmptyEntry(String),
    /// `--devices` mixing backends: one run's replicas share one backend type.
    #[error(
        "--devices mixes `{first}` and `{other}`; every device of a run must be of one backend \
         (e.g. cuda:0,cuda:1 or flex,flex)"
    )]
    MixedBackends {
        /// The first device.
        first: String,
        /// The first device of another backend.
        other: String,
    },
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

/// Parses a `--devices` list: comma-separated device strings of one backend, one worker
/// each (`flex,flex`, `cuda:0,cuda:1`; `cuda:0,cuda:0` puts two workers on one GPU). An
/// empty list or item, an unknown device or a mix of backends is an error that says so.
pub fn parse_devices(list: &str) -> Result<Vec<DeviceSpec>, DeviceError> {
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.iter().all(|s| s.is_empty()) {
        return Err(DeviceError::NoDevices(list.to_string()));
    }
    let mut specs = Vec::with_capacity(items.len());
    for item in items {
        if item.is_empty() {
            return Err(DeviceError::EmptyEntry(list.to_string()));
        }
        let spec: DeviceSpec = item.parse()?;
        if let Some(first) = specs.first()
            && std::mem::discriminant(first) != std::mem::discriminant(&spec)
        {
            return Err(DeviceError::MixedBackends {
                first: first.to_string(),
                other: spec.to_string(),
            });
        }
        specs.push(spec);
    }
    Ok(specs)
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
    /// The operating system refused the threads of a pool.
    #[error("cannot start a CPU thread pool: {0}")]
    Spawn(String),
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
        .stack_size(CPU_THREAD_STACK)
        .build_global()
        .map_err(|_| ThreadsError::AlreadySet(rayon::current_num_threads()))
}

/// Threads of the CPU pool (`--threads`, else `RAYON_NUM_THREADS`, else the core count).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f` with the CPU tensor work it does on a pool of its own with `n` threads (instead
/// of the process's pool of [`set_cpu_threads`]): how several small trainings share the
/// cores, one pool each, when one training cannot keep two cores busy (the 2-D demo's
/// students). GPU backends ignore it.
pub fn with_cpu_threads<R: Send>(
    n: usize,
    f: impl FnOnce() -> R + Send,
) -> Result<R, ThreadsError> {
    if n == 0 {
        return Err(ThreadsError::Zero);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(CPU_THREAD_STACK)
        .build()
        .map_err(|e| ThreadsError::Spawn(e.to_string()))?;
    Ok(pool.install(f))
}

/// Runs `f` on a worker thread of the CPU pool (at once if the caller is one already).
///
/// Why: a parallel kernel started from a thread outside the pool is handed to the pool and
/// the caller sleeps until a worker wakes, takes it, and a second worker wakes to share it;
/// started from a worker, the caller works on its half at once and the other worker joins when
/// it wakes. A CPU step starts a few hundred such kernels (docs/performance.md, change 11).
///
/// The work then runs on a pool thread, so the pool's threads get the main thread's stack
/// size ([`CPU_THREAD_STACK`]) rather than rayon's 2 MiB default: if no pool was built yet
/// (no `--threads`), it is built here with the default thread count (`RAYON_NUM_THREADS`, else
/// one per core).
///
/// Thread-local state of the caller (a progress group, for one) is not visible to `f`: set it
/// inside `f`.
pub fn on_cpu_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // an error means the pool exists already (from `set_cpu_threads`, or rayon's default)
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(CPU_THREAD_STACK)
        .build_global();
    rayon::scope(|_| f())
}

/// Stack size of the CPU pool's threads: the whole of a CPU command runs on one of them
/// ([`on_cpu_pool`]); 8 MiB as Linux gives a main thread.
pub const CPU_THREAD_STACK: usize = 8 << 20;

/// Work generic over the autodiff backend; [`dispatch`] monomorphises it.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs on backend `B`, device `device`.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Work on several devices of one backend (data-parallel training): [`dispatch_devices`]
/// monomorphises it.
pub trait DevicesTask {
    /// What the work returns.
    type Output;
    /// Runs on backend `B` with one device per worker.
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Runs `task` on the backend of `specs` (from [`parse_devices`]: non-empty, one backend),
/// with one device of that backend per entry.
pub fn dispatch_devices<T: DevicesTask>(
    specs: &[DeviceSpec],
    task: T,
) -> Result<T::Output, DeviceError> {
    let Some(first) = specs.first() else {
        return Err(DeviceError::NoDevices(String::new()));
    };
    if let Some(other) = specs
        .iter()
        .find(|s| std::mem::discriminant(*s) != std::mem::discriminant(first))
    {
        return Err(DeviceError::MixedBackends {
            first: first.to_string(),
            other: other.to_string(),
        });
    }
    if !first.is_compiled() {
        return Err(DeviceError::NotCompiled {
            spec: first.to_string(),
            feature: first.feature(),
        });
    }
    let n = specs.len();
    #[allow(unreachable_patterns)]
    match *first {
        #[cfg(feature = "flex")]
        DeviceSpec::Flex => {
            Ok(task
                .run::<burn::backend::Autodiff<burn::backend::Flex>>(vec![Default::default(); n]))
        }
        #[cfg(feature = "candle")]
        DeviceSpec::Candle => Ok(task.run::<burn::backend::Autodiff<burn::backend::Candle>>(
            vec![burn::backend::candle::CandleDevice::Cpu; n],
        )),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => Ok(task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
            specs
                .iter()
                .map(|s| match s {
                    DeviceSpec::Cuda(index) => burn::backend::cuda::CudaDevice { index: *index },
                    _ => unreachable!("one backend, checked above"),
                })
                .collect(),
        )),
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu => {
            Ok(task
                .run::<burn::backend::Autodiff<burn::backend::Wgpu>>(vec![Default::default(); n]))
        }
        _ => unreachable!("is_compiled() returned true for {first}"),
    }
}

/// The CPU backend tests and examples use: `Autodiff<Flex>`.
#[cfg(feature = "flex")]
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// Runs `task` on the backend `spec` names. On flex the task runs on a thread of the CPU pool
/// ([`on_cpu_pool`]), which is why it and its output must be `Send`.
pub fn dispatch<T: BackendTask + Send>(spec: &DeviceSpec, task: T) -> Result<T::Output, DeviceError>
where
    T::Output: Send,
{
    if !spec.is_compiled() {
        return Err(DeviceError::NotCompiled {
            spec: spec.to_string(),
            feature: spec.feature(),
        });
    }
    #[allow(unreachable_patterns)]
    match *spec {
        #[cfg(feature = "flex")]
        DeviceSpec::Flex => Ok(on_cpu_pool(|| {
            task.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default())
        })),
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

    /// The work of a flex dispatch runs on a thread of the CPU pool with the stated stack (a
    /// recursion of 2,800 frames of over 1 KiB would overflow rayon's 2 MiB default), and a call from a pool
    /// thread runs where it is.
    #[cfg(feature = "flex")]
    #[test]
    fn cpu_work_runs_on_a_pool_thread_with_a_main_sized_stack() {
        fn depth(n: usize) -> usize {
            let pad = std::hint::black_box([0u8; 1024]);
            if n == 0 {
                pad[0] as usize
            } else {
                1 + depth(n - 1) + pad[n % 1024] as usize
            }
        }
        let (index, deep) = on_cpu_pool(|| (rayon::current_thread_index(), depth(2800)));
        assert!(index.is_some(), "ran outside the pool");
        assert_eq!(deep, 2800);
        let inner = on_cpu_pool(|| {
            let here = rayon::current_thread_index();
            on_cpu_pool(move || rayon::current_thread_index() == here)
        });
        assert!(inner, "a nested call moved threads");
        struct Where;
        impl BackendTask for Where {
            type Output = bool;
            fn run<B: AutodiffBackend>(self, _: B::Device) -> bool {
                rayon::current_thread_index().is_some()
            }
        }
        assert!(dispatch(&DeviceSpec::Flex, Where).unwrap());
    }

    #[test]
    fn zero_threads_is_refused_with_the_fix() {
        let e = set_cpu_threads(0).unwrap_err().to_string();
        assert!(e.contains("≥ 1") && e.contains("omit it"), "{e}");
    }

    #[test]
    fn device_lists_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_devices("flex,flex").unwrap(),
            vec![DeviceSpec::Flex, DeviceSpec::Flex]
        );
        assert_eq!(
            parse_devices(" cuda:0 , cuda:1 ").unwrap(),
            vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]
        );
        assert_eq!(parse_devices("cuda").unwrap(), vec![DeviceSpec::Cuda(0)]);
        let e = parse_devices("").unwrap_err().to_string();
        assert!(e.contains("names no device"), "{e}");
        let e = parse_devices("flex,,flex").unwrap_err().to_string();
        assert!(e.contains("empty entry"), "{e}");
        let e = parse_devices("cuda:0,flex").unwrap_err().to_string();
        assert!(e.contains("mixes `cuda:0` and `flex`"), "{e}");
        let e = parse_devices("flex,tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device `tpu`"), "{e}");
        let e = parse_devices("cuda:0,cuda:x").unwrap_err().to_string();
        assert!(e.contains("cuda:x"), "{e}");
    }

    struct Count;
    impl DevicesTask for Count {
        type Output = usize;
        fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> usize {
            devices.len()
        }
    }

    #[test]
    fn dispatch_devices_gives_one_device_per_entry() {
        let specs = parse_devices("flex,flex,flex").unwrap();
        assert_eq!(dispatch_devices(&specs, Count).unwrap(), 3);
        assert!(matches!(
            dispatch_devices(&[], Count),
            Err(DeviceError::NoDevices(_))
        ));
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
