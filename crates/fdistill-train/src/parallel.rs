//! Data-parallel training: one replica of every network per device, each computing its
//! share of the global batch, gradients all-reduced before every optimiser step (SPEC §4's
//! update on a global batch, as FastGen's DDP runs).
//!
//! **What is the same as on one device.** Every replica holds the same RNG and draws the
//! *whole* global batch (latents, σ, noise, data rows), then keeps its rows
//! `[rank·B/W, (rank+1)·B/W)` ([`Shard::rows`]). The global batch therefore does not depend on
//! the number of workers `W`; every loss is a mean over rows, so the mean over workers of the
//! per-replica gradients is the gradient of the global batch, and the replicas take the same
//! optimiser step. The f-distill normalisers (time-bin means of `r`, batch mean of `h`) need
//! the whole batch: the replicas gather the batch's log ratios ([`Shard::gather`], an all-reduce
//! of zero-padded shards, exact in floating point) and compute both normalisers on the global
//! batch, as one device does (FastGen all-reduces the bins' sums and counts, which gives the
//! same means). What differs from one device is only the order of float sums in the gradient
//! mean, so parameters agree to rounding, not bit for bit (`tests/tests/parallel.rs` and
//! `crates/fdistill-cli/tests/cli_parallel.rs`: `‖Δθ‖₂/‖θ‖₂ ≤ 1e-5` per network, measured
//! ≤ 3.4e-6; one worker through this path is the single-device loop byte for byte).
//!
//! **Communication.** [`Shard`] talks through a [`Reducer`]: with the cargo feature
//! `collective`, burn-collective's all-reduce between the devices of one process and, through
//! its global orchestrator, between processes (`CollectiveReducer`, [`run_training_on`]).
//! Every replica must issue the same collective calls in the same order; every decision that
//! could differ between replicas (a non-finite loss, the gradient-norm clip) is taken on
//! all-reduced values, which are identical on every replica.
//!
//! **Writes.** Rank 0 writes `metrics.jsonl`, `timing.jsonl` and checkpoints; the other ranks
//! run the same loop without writing ([`run_replica`](crate::distill::driver::run_replica)).
//! A resumed run loads the same checkpoint on every replica, so resume needs the same number
//! of workers only for bitwise equality of later steps (the batch does not depend on it).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::distill::DistillError;

/// How an all-reduce combines the replicas' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Element-wise sum.
    Sum,
    /// Element-wise mean over the workers.
    Mean,
}

/// The replicas' communication: an all-reduce over every worker of a run.
///
/// Every worker must call it the same number of times, with tensors of the same shape, in
/// the same order; every worker receives the same result.
pub trait Reducer<B: Backend>: Send + Sync {
    /// `op` of `t` over all workers.
    ///
    /// # Shapes
    /// - `t`: `[n]`, the same `n` on every worker; returns `[n]`
    fn all_reduce(&self, t: Tensor<B, 1>, op: Reduce) -> Result<Tensor<B, 1>, DistillError>;
}

/// One replica's place in a data-parallel run: its rank, the number of workers, and the
/// [`Reducer`] that connects it to the others. `B` is the inner (non-autodiff) backend: the
/// gradients' backend.
#[derive(Clone)]
pub struct Shard<B: Backend> {
    rank: usize,
    world: usize,
    reducer: Arc<dyn Reducer<B>>,
    /// Nanoseconds spent in all-reduces since the last [`take_comm_seconds`](Self::take_comm_seconds).
    comm_ns: Arc<AtomicU64>,
}

impl<B: Backend> std::fmt::Debug for Shard<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shard {{ rank: {}, world: {} }}", self.rank, self.world)
    }
}

impl<B: Backend> Shard<B> {
    /// Replica `rank` of `world` workers (`rank < world`).
    pub fn new(
        rank: usize,
        world: usize,
        reducer: Arc<dyn Reducer<B>>,
    ) -> Result<Self, DistillError> {
        if world == 0 || rank >= world {
            return Err(DistillError::Config(format!(
                "replica rank {rank} of {world} workers: need 0 ≤ rank < workers"
            )));
        }
        Ok(Shard {
            rank,
            world,
            reducer,
            comm_ns: Arc::new(AtomicU64::new(0)),
        })
    }

    /// This replica's rank (0 writes checkpoints and metrics).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of workers.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Checks that a global batch of `batch` rows splits evenly over the workers.
    pub fn check_batch(&self, batch: usize, what: &str) -> Result<(), DistillError> {
        if !batch.is_multiple_of(self.world) {
            return Err(DistillError::Config(format!(
                "{what} ({batch}) must be a multiple of the number of workers ({}), so every \
                 device takes the same share of the global batch; use {} or {}",
                self.world,
                (batch / self.world).max(1) * self.world,
                (batch / self.world + 1) * self.world
            )));
        }
        Ok(())
    }

    /// This replica's rows of a global batch of `batch` rows (checked by
    /// [`check_batch`](Self::check_batch)).
    pub fn rows(&self, batch: usize) -> Range<usize> {
        let per = batch / self.world;
        self.rank * per..(self.rank + 1) * per
    }

    /// This replica's rows of a row-major `[batch, cols]` host array.
    pub fn take_rows<T: Copy>(&self, values: &[T], cols: usize) -> Vec<T> {
        let batch = values.len() / cols.max(1);
        let r = self.rows(batch);
        values[r.start * cols..r.end * cols].to_vec()
    }

    /// `op` over the workers of a one-dimensional tensor.
    pub fn all_reduce(&self, t: Tensor<B, 1>, op: Reduce) -> Result<Tensor<B, 1>, DistillError> {
        let start = Instant::now();
        let out = self.reducer.all_reduce(t, op);
        let ns = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.comm_ns.fetch_add(ns, Ordering::Relaxed);
        out
    }

    /// Seconds this replica spent in all-reduces (communication and waiting for the slowest
    /// replica) since the last call; steps report it in `timing.jsonl` as `allreduce_s`.
    pub fn take_comm_seconds(&self) -> f64 {
        self.comm_ns.swap(0, Ordering::Relaxed) as f64 * 1e-9
    }

    /// The global batch's values from every replica's rows: each replica writes its `local`
    /// values into a zero vector of `batch` elements and the vectors are summed. Adding zeros
    /// is exact, so the result is every replica's `f32` values, bit for bit (the log ratios
    /// gathered here are read from `f32` tensors).
    pub fn gather(
        &self,
        local: &[f64],
        batch: usize,
        device: &B::Device,
    ) -> Result<Vec<f64>, DistillError> {
        let r = self.rows(batch);
        debug_assert_eq!(local.len(), r.len());
        let mut full = vec![0.0f32; batch];
        for (slot, v) in full[r].iter_mut().zip(local) {
            *slot = *v as f32;
        }
        let t = Tensor::<B, 1>::from_data(TensorData::new(full, [batch]), device);
        let sum = self.all_reduce(t, Reduce::Sum)?;
        Ok(fdistill_core::host::read_values(sum))
    }

    /// Replaces each parameter gradient of `module` by its mean over the workers: the
    /// gradients of a module, in visiting order, flattened into one buffer, one all-reduce,
    /// split back. Parameters without a gradient are left out (the same on every replica,
    /// whose graphs are the same).
    pub fn mean_grads<A, M>(
        &self,
        module: &M,
        mut grads: GradientsParams,
    ) -> Result<GradientsParams, DistillError>
    where
        A: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<A>,
    {
        if self.world == 1 {
            return Ok(grads);
        }
        struct Take<'a, B: Backend> {
            grads: &'a mut GradientsParams,
            flat: Vec<Tensor<B, 1>>,
            ids: Vec<(ParamId, usize)>,
        }
        impl<A: AutodiffBackend> ModuleVisitor<A> for Take<'_, A::InnerBackend> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                if let Some(g) = self.grads.remove::<A::InnerBackend, D>(param.id) {
                    let n = g.shape().num_elements();
                    self.flat.push(g.reshape([n]));
                    self.ids.push((param.id, n));
                }
            }
        }
        let mut take = Take::<B> {
            grads: &mut grads,
            flat: Vec::new(),
            ids: Vec::new(),
        };
        module.visit(&mut take);
        let Take { flat, ids, .. } = take;
        if flat.is_empty() {
            return Ok(grads);
        }
        let mean = self.all_reduce(Tensor::cat(flat, 0), Reduce::Mean)?;
        struct Put<'a, B: Backend> {
            grads: &'a mut GradientsParams,
            mean: Tensor<B, 1>,
            ids: std::iter::Peekable<std::vec::IntoIter<(ParamId, usize)>>,
            offset: usize,
        }
        impl<A: AutodiffBackend> ModuleVisitor<A> for Put<'_, A::InnerBackend> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                let Some(&(id, n)) = self.ids.peek() else {
                    return;
                };
                if id != param.id {
                    return;
                }
                self.ids.next();
                let g = self
                    .mean
                    .clone()
                    .narrow(0, self.offset, n)
                    .reshape(param.val().dims());
                self.offset += n;
                self.grads.register::<A::InnerBackend, D>(id, g);
            }
        }
        module.visit(&mut Put::<B> {
            grads: &mut grads,
            mean,
            ids: ids.into_iter().peekable(),
            offset: 0,
        });
        Ok(grads)
    }

    /// `module` with rank 0's parameters on every replica (an all-reduce of the parameters,
    /// zeroed on every rank but 0; burn-collective has no global broadcast). Parameters
    /// keep their ids and their `require_grad` flag.
    pub fn broadcast_module<A, M>(&self, module: M) -> Result<M, DistillError>
    where
        A: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<A>,
    {
        if self.world == 1 {
            return Ok(module);
        }
        struct Copy0<'a, B: Backend> {
            shard: &'a Shard<B>,
            error: Option<DistillError>,
        }
        impl<A: AutodiffBackend> ModuleMapper<A> for Copy0<'_, A::InnerBackend> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<A, D>>,
            ) -> Param<Tensor<A, D>> {
                let (id, t, mapper) = param.consume();
                if self.error.is_some() {
                    return Param::from_mapped_value(id, t, mapper);
                }
                let grad = t.is_require_grad();
                match self.shard.rank0_values(t.clone().inner()) {
                    Ok(v) => Param::from_mapped_value(
                        id,
                        Tensor::from_inner(v).set_require_grad(grad),
                        mapper,
                    ),
                    Err(e) => {
                        self.error = Some(e);
                        Param::from_mapped_value(id, t, mapper)
                    }
                }
            }
        }
        let mut m = Copy0 {
            shard: self,
            error: None,
        };
        let module = module.map(&mut m);
        m.error.map_or(Ok(module), Err)
    }

    /// [`broadcast_module`](Self::broadcast_module) for a module of the inner backend (an EMA copy).
    pub fn broadcast_inner<M: Module<B>>(&self, module: M) -> Result<M, DistillError> {
        if self.world == 1 {
            return Ok(module);
        }
        struct Copy0<'a, B: Backend> {
            shard: &'a Shard<B>,
            error: Option<DistillError>,
        }
        impl<B: Backend> ModuleMapper<B> for Copy0<'_, B> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let (id, t, mapper) = param.consume();
                if self.error.is_some() {
                    return Param::from_mapped_value(id, t, mapper);
                }
                match self.shard.rank0_values(t.clone()) {
                    Ok(v) => Param::from_mapped_value(id, v, mapper),
                    Err(e) => {
                        self.error = Some(e);
                        Param::from_mapped_value(id, t, mapper)
                    }
                }
            }
        }
        let mut m = Copy0 {
            shard: self,
            error: None,
        };
        let module = module.map(&mut m);
        m.error.map_or(Ok(module), Err)
    }

    /// Rank 0's values of `t` on every replica: `Σ_r [r = 0] t_r` (exact: the other terms are
    /// zeros).
    fn rank0_values<const D: usize>(&self, t: Tensor<B, D>) -> Result<Tensor<B, D>, DistillError> {
        let dims = t.dims();
        let n = t.shape().num_elements();
        let flat = if self.rank == 0 {
            t.reshape([n])
        } else {
            Tensor::zeros([n], &t.device())
        };
        Ok(self.all_reduce(flat, Reduce::Sum)?.reshape(dims))
    }
}

/// A [`Trainable`](crate::distill::Trainable) or [`DistillMethod`](crate::distill::DistillMethod)
/// that can run as one replica of a data-parallel run.
pub trait DataParallel<B: AutodiffBackend> {
    /// Makes this replica compute only its rows of every global batch and average its
    /// gradients with the other replicas through `shard`; copies rank 0's weights onto this
    /// replica (call it on a freshly built method, before loading a checkpoint). Fails if the
    /// batch does not split evenly over the workers.
    fn set_shard(&mut self, shard: Shard<B::InnerBackend>) -> Result<(), DistillError>;
}

/// Where this process sits in a run over several machines (nodes). Every node runs the same
/// command with the same number of devices; node 0 also runs burn-collective's global
/// orchestrator on the port of [`orchestrator`](Self::orchestrator).
///
/// **burn-collective 0.21 limit:** its global all-reduce completes once per session; the
/// second never returns (`examples/collective_two_nodes.rs`, `docs/performance.md`), so a
/// multi-node run stops in its first step. Several devices of one node are not affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Number of nodes (processes), ≥ 1.
    pub nodes: usize,
    /// This node's rank in `[0, nodes)`; node 0's first device writes the run.
    pub node_rank: usize,
    /// The orchestrator's WebSocket address, `ws://HOST:PORT` (several nodes only).
    pub orchestrator: Option<String>,
    /// This node's own address, `ws://HOST:PORT`, where the others download its tensors
    /// (several nodes only; the port must be free).
    pub node_address: Option<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::single()
    }
}

/// The port of a `ws://HOST:PORT[/]` address.
pub(crate) fn port_of(what: &str, url: &str) -> Result<u16, DistillError> {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|_| url.starts_with("ws://"))
        .ok_or_else(|| {
            DistillError::Config(format!(
                "{what} `{url}` is not a WebSocket address with a port; write ws://HOST:PORT \
                 (e.g. ws://127.0.0.1:3000)"
            ))
        })
}

impl Cluster {
    /// One node: only the local devices.
    pub fn single() -> Self {
        Cluster {
            nodes: 1,
            node_rank: 0,
            orchestrator: None,
            node_address: None,
        }
    }

    /// Checks the settings before any tensor exists.
    pub fn check(&self) -> Result<(), DistillError> {
        if self.nodes == 0 || self.node_rank >= self.nodes {
            return Err(DistillError::Config(format!(
                "--node-rank {} with --nodes {}: need --nodes ≥ 1 and 0 ≤ --node-rank < --nodes",
                self.node_rank, self.nodes
            )));
        }
        if self.nodes == 1 {
            return Ok(());
        }
        let (Some(orch), Some(node)) = (&self.orchestrator, &self.node_address) else {
            return Err(DistillError::Config(format!(
                "--nodes {} needs --orchestrator ws://HOST:PORT (the same on every node; node 0 \
                 runs it) and --node-address ws://HOST:PORT (this node's own, a free port)",
                self.nodes
            )));
        };
        let (o, n) = (
            port_of("--orchestrator", orch)?,
            port_of("--node-address", node)?,
        );
        if self.node_rank == 0 && o == n && same_host(orch, node) {
            return Err(DistillError::Config(format!(
                "node 0 runs the orchestrator on port {o}; give --node-address another port"
            )));
        }
        Ok(())
    }
}

fn same_host(a: &str, b: &str) -> bool {
    let host = |s: &str| {
        s.split("://")
            .nth(1)
            .and_then(|r| r.rsplit_once(':').map(|(h, _)| h.to_string()))
    };
    host(a) == host(b)
}

/// Whether this build can run on several devices: the cargo feature `collective`
/// (burn-collective) of `fdistill-train`.
pub const COLLECTIVE: bool = cfg!(feature = "collective");

#[cfg(feature = "collective")]
mod collective;
#[cfg(feature = "collective")]
pub use collective::*;

#[cfg(not(feature = "collective"))]
mod disabled {
    use super::{Cluster, DataParallel};
    use crate::checkpoint::RunDir;
    use crate::distill::driver::{BoxError, DriverConfig, DriverSummary, StepReport, Trainable};
    use crate::distill::{DistillError, DistillMethod};
    use burn::tensor::backend::AutodiffBackend;

    fn needs_feature() -> DistillError {
        DistillError::Config(
            "several devices or nodes need the cargo feature `collective` (burn-collective), \
             which this build does not include; rebuild with \
             `cargo build --release -p fdistill-cli --features collective`"
                .into(),
        )
    }

    /// Without the feature `collective`: an error that names it.
    #[allow(clippy::too_many_arguments)]
    pub fn run_training_on<B, T, Mk, O>(
        _devices: &[B::Device],
        _cluster: &Cluster,
        _config: &DriverConfig,
        _run: &RunDir,
        _resume: bool,
        _make: Mk,
        _observe: O,
    ) -> Result<DriverSummary, DistillError>
    where
        B: AutodiffBackend,
        T: Trainable + DataParallel<B>,
        Mk: Fn(usize, &B::Device) -> Result<T, DistillError> + Sync,
        O: FnMut(&StepReport<'_, T::Metrics>) -> Result<(), BoxError> + Send,
    {
        Err(needs_feature())
    }

    /// Without the feature `collective`: an error that names it.
    #[allow(clippy::too_many_arguments)]
    pub fn run_distillation_on<B, D, Mk, O>(
        _devices: &[B::Device],
        _cluster: &Cluster,
        _config: &DriverConfig,
        _run: &RunDir,
        _resume: bool,
        _make: Mk,
        _observe: O,
    ) -> Result<DriverSummary, DistillError>
    where
        B: AutodiffBackend,
        D: DistillMethod<B> + DataParallel<B>,
        Mk: Fn(usize, &B::Device) -> Result<D, DistillError> + Sync,
        O: FnMut(&StepReport<'_, D::Metrics>) -> Result<(), BoxError> + Send,
    {
        Err(needs_feature())
    }
}
#[cfg(not(feature = "collective"))]
pub use disabled::*;
