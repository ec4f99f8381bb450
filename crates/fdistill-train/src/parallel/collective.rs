//! burn-collective as the [`Reducer`] of a data-parallel run (cargo feature `collective`):
//! one worker thread per device, and for several machines burn-collective's global
//! orchestrator ([`Cluster`]).

use std::marker::PhantomData;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use burn::collective::{self as bc, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};
use rand_chacha::ChaCha8Rng;

use super::{Cluster, DataParallel, Reduce, Reducer, Shard, port_of};
use crate::checkpoint::{CheckpointError, RunDir};
use crate::distill::driver::{
    BoxError, DriverConfig, DriverSummary, StepReport, Trainable, run_replica,
};
use crate::distill::{DistillError, DistillMethod, run_training};

fn collective_error(what: &str, e: CollectiveError) -> DistillError {
    DistillError::Collective(format!("{what}: {e:?}"))
}

/// burn-collective's all-reduce for one registered peer (a worker thread and its device).
pub struct CollectiveReducer<B: Backend> {
    peer: PeerId,
    _backend: PhantomData<fn() -> B>,
}

impl<B: Backend> CollectiveReducer<B> {
    /// The reducer of peer `peer` (registered with [`burn::collective::register`]).
    pub fn new(peer: PeerId) -> Self {
        CollectiveReducer {
            peer,
            _backend: PhantomData,
        }
    }
}

impl<B: Backend> Reducer<B> for CollectiveReducer<B> {
    fn all_reduce(&self, t: Tensor<B, 1>, op: Reduce) -> Result<Tensor<B, 1>, DistillError> {
        let op = match op {
            Reduce::Sum => ReduceOperation::Sum,
            Reduce::Mean => ReduceOperation::Mean,
        };
        let out = bc::all_reduce::<B>(self.peer, t.into_primitive().tensor(), op)
            .map_err(|e| collective_error("all-reduce", e))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }
}

/// burn-collective's configuration for `devices` local devices of `cluster`.
fn collective_config(cluster: &Cluster, devices: usize) -> Result<CollectiveConfig, DistillError> {
    cluster.check()?;
    let config = CollectiveConfig::default().with_num_devices(devices);
    if cluster.nodes == 1 {
        return Ok(config);
    }
    let orch = cluster.orchestrator.as_deref().expect("checked");
    let node = cluster.node_address.as_deref().expect("checked");
    let address = |s: &str| {
        s.parse::<burn_communication::Address>()
            .map_err(|e| DistillError::Config(format!("address `{s}`: {e}")))
    };
    Ok(config
        .with_num_nodes(cluster.nodes as u32)
        .with_global_address(address(orch)?)
        .with_node_address(address(node)?)
        .with_data_service_port(port_of("--node-address", node)?))
}

/// Starts burn-collective's global orchestrator on `port` in a background thread, once per
/// process (node 0 of a multi-node run). It serves until the process exits.
fn start_orchestrator(port: u16) -> Result<(), DistillError> {
    static STARTED: OnceLock<u16> = OnceLock::new();
    if let Some(&p) = STARTED.get() {
        return if p == port {
            Ok(())
        } else {
            Err(DistillError::Config(format!(
                "this process already runs an orchestrator on port {p}"
            )))
        };
    }
    // Bind first, so a taken port is a clear error rather than a log line in a thread.
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        DistillError::Config(format!("cannot serve the orchestrator on port {port}: {e}"))
    })?;
    std::thread::Builder::new()
        .name("fdistill-orchestrator".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the orchestrator");
            rt.block_on(burn_collective::start_global_orchestrator(port));
        })
        .map_err(|e| DistillError::Collective(format!("cannot start the orchestrator: {e}")))?;
    let _ = STARTED.set(port);
    Ok(())
}

/// One collective run at a time per process: burn-collective keeps one server per backend.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Sends a worker's outcome to the supervisor, or a panic notice if it never got to.
struct Outcome<T> {
    tx: mpsc::Sender<(usize, Result<T, DistillError>)>,
    local: usize,
    sent: bool,
}

impl<T> Outcome<T> {
    fn send(mut self, r: Result<T, DistillError>) {
        self.sent = true;
        let _ = self.tx.send((self.local, r));
    }
}

impl<T> Drop for Outcome<T> {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.tx.send((
                self.local,
                Err(DistillError::Collective(format!(
                    "worker {} panicked (its message is above)",
                    self.local
                ))),
            ));
        }
    }
}

/// A gate every local worker passes once its replica is built: if one fails to build, the
/// others stop before registering (a registered peer would wait for it forever).
struct BuildGate {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
    n: usize,
}

impl BuildGate {
    fn pass(&self, ok: bool) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            s.0 += 1;
        } else {
            s.1 = true;
        }
        self.cv.notify_all();
        while !s.1 && s.0 < self.n {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.1
    }
}

/// The checkpointed loop ([`run_training`]) on several devices: one worker thread per device
/// in `devices` (all of backend `B`), each with its own replica built by `make(rank, device)`,
/// joined by burn-collective (and, with `cluster.nodes > 1`, by its orchestrator with the
/// other nodes). Global rank 0 writes `run` and calls `observe`; the others run the same steps
/// without writing. Returns rank 0's summary (on other nodes, the summary of this node's first
/// device).
///
/// A replica that fails (an error or a panic) stops the others: the first error is returned.
#[allow(clippy::too_many_arguments)]
pub fn run_training_on<B, T, Mk, O>(
    devices: &[B::Device],
    cluster: &Cluster,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
    make: Mk,
    observe: O,
) -> Result<DriverSummary, DistillError>
where
    B: AutodiffBackend,
    T: Trainable + DataParallel<B>,
    Mk: Fn(usize, &B::Device) -> Result<T, DistillError> + Sync,
    O: FnMut(&StepReport<'_, T::Metrics>) -> Result<(), BoxError> + Send,
{
    if devices.is_empty() {
        return Err(DistillError::Config("no device given".into()));
    }
    let config = config.clone().check()?;
    let n_local = devices.len();
    let collective = collective_config(cluster, n_local)?;
    let world = n_local * cluster.nodes;
    let _lock = RUN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if cluster.nodes > 1 && cluster.node_rank == 0 {
        let orch = cluster.orchestrator.as_deref().expect("checked");
        start_orchestrator(port_of("--orchestrator", orch)?)?;
    }
    bc::reset_collective::<B::InnerBackend>();
    let gate = BuildGate {
        state: Mutex::new((0, false)),
        cv: Condvar::new(),
        n: n_local,
    };
    let (tx, rx) = mpsc::channel::<(usize, Result<DriverSummary, DistillError>)>();
    let mut observe = Some(observe);
    let (make, gate, collective, config) = (&make, &gate, &collective, &config);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (local, device) in devices.iter().enumerate() {
            let rank = cluster.node_rank * n_local + local;
            let outcome = Outcome {
                tx: tx.clone(),
                local,
                sent: false,
            };
            let observe = if rank == 0 { observe.take() } else { None };
            let device = device.clone();
            let handle = std::thread::Builder::new()
                .name(format!("fdistill-rank{rank}"))
                .spawn_scoped(s, move || {
                    let r = replica::<B, T, _, _>(
                        rank, world, &device, collective, gate, make, config, run, resume, observe,
                    );
                    outcome.send(r);
                });
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // The workers already started wait at the gate: release them.
                    gate.pass(false);
                    let _ = tx.send((
                        local,
                        Err(DistillError::Collective(format!(
                            "cannot start a worker thread: {e}"
                        ))),
                    ));
                    break;
                }
            }
        }
        drop(tx);
        let mut first_error = None;
        let mut summary = None;
        for (local, r) in rx.iter() {
            match r {
                Ok(s) if local == 0 => summary = Some(s),
                Ok(_) => {}
                Err(e) => {
                    // A collective error is usually the consequence of another replica's
                    // failure: keep the first error, unless a root cause comes after it.
                    let replace = match &first_error {
                        None => true,
                        Some(DistillError::Collective(_)) => {
                            !matches!(e, DistillError::Collective(_))
                        }
                        Some(_) => false,
                    };
                    if first_error.is_none() {
                        // Unblock the replicas waiting in an all-reduce for the failed one.
                        bc::reset_collective::<B::InnerBackend>();
                    }
                    if replace {
                        first_error = Some(e);
                    }
                }
            }
        }
        for h in handles {
            let _ = h.join();
        }
        match (first_error, summary) {
            (Some(e), _) => Err(e),
            (None, Some(s)) => Ok(s),
            (None, None) => Err(DistillError::Collective("no worker reported".into())),
        }
    })
}

/// One worker: build the replica, register with the collective, share rank 0's weights,
/// then the loop (writing on rank 0 only).
#[allow(clippy::too_many_arguments)]
fn replica<B, T, Mk, O>(
    rank: usize,
    world: usize,
    device: &B::Device,
    collective: &CollectiveConfig,
    gate: &BuildGate,
    make: &Mk,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
    observe: Option<O>,
) -> Result<DriverSummary, DistillError>
where
    B: AutodiffBackend,
    T: Trainable + DataParallel<B>,
    Mk: Fn(usize, &B::Device) -> Result<T, DistillError>,
    O: FnMut(&StepReport<'_, T::Metrics>) -> Result<(), BoxError>,
{
    let built = make(rank, device);
    if !gate.pass(built.is_ok()) {
        return built.and(Err(DistillError::Collective(
            "another replica failed to build".into(),
        )));
    }
    let mut method = built?;
    let peer = PeerId::from(rank);
    bc::register::<B::InnerBackend>(peer, device.clone(), collective.clone())
        .map_err(|e| collective_error("register", e))?;
    let reducer: Arc<dyn Reducer<B::InnerBackend>> =
        Arc::new(CollectiveReducer::<B::InnerBackend>::new(peer));
    method.set_shard(Shard::new(rank, world, reducer)?)?;
    let summary = match observe {
        Some(observe) => run_training(&mut method, config, run, resume, observe)?,
        None => run_replica(&mut method, config, run, resume)?,
    };
    bc::finish_collective::<B::InnerBackend>(peer).map_err(|e| collective_error("finish", e))?;
    Ok(summary)
}

/// A [`DistillMethod`] owned by its worker, seen as a [`Trainable`].
struct OwnedMethod<B, D>(D, PhantomData<fn() -> B>);

impl<B: AutodiffBackend, D: DistillMethod<B>> Trainable for OwnedMethod<B, D> {
    type Metrics = D::Metrics;
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn step(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<Self::Metrics, DistillError> {
        self.0.step(step, rng)
    }
    fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        self.0.save(dir)
    }
    fn load(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        self.0.load(dir)
    }
}

impl<B: AutodiffBackend, D: DataParallel<B>> DataParallel<B> for OwnedMethod<B, D> {
    fn set_shard(&mut self, shard: Shard<B::InnerBackend>) -> Result<(), DistillError> {
        self.0.set_shard(shard)
    }
}

/// [`run_distillation`](crate::distill::run_distillation) on several devices (and nodes): see
/// [`run_training_on`]. `make(rank, device)` builds each replica's method.
#[allow(clippy::too_many_arguments)]
pub fn run_distillation_on<B, D, Mk, O>(
    devices: &[B::Device],
    cluster: &Cluster,
    config: &DriverConfig,
    run: &RunDir,
    resume: bool,
    make: Mk,
    observe: O,
) -> Result<DriverSummary, DistillError>
where
    B: AutodiffBackend,
    D: DistillMethod<B> + DataParallel<B>,
    Mk: Fn(usize, &B::Device) -> Result<D, DistillError> + Sync,
    O: FnMut(&StepReport<'_, D::Metrics>) -> Result<(), BoxError> + Send,
{
    run_training_on::<B, OwnedMethod<B, D>, _, _>(
        devices,
        cluster,
        config,
        run,
        resume,
        |rank, device| make(rank, device).map(|m| OwnedMethod(m, PhantomData)),
        observe,
    )
}
