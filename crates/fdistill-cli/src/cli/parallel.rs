//! `--devices`, `--nodes`, `--node-rank`, `--orchestrator`, `--node-address`: data-parallel
//! `teacher train` and `distill` ([`fdistill::train::parallel`], burn-collective). The
//! global batch (`batch_size`) is split evenly over every device of every node.

use clap::Args;
use fdistill::backends::{DeviceSpec, parse_devices};
use fdistill::train::parallel::{COLLECTIVE, Cluster};

use super::CliError;

/// Flags of a data-parallel run.
#[derive(Debug, Args, Clone)]
pub struct ParallelArgs {
    /// Devices of this node, comma-separated, one worker each: `cuda:0,cuda:1`, or `flex,flex`
    /// (CPU, for testing). Replaces --device. The global batch (batch_size) is split evenly
    /// over every device of every node; rank 0 (node 0's first device) writes the run.
    /// Resume with the same devices and nodes.
    #[arg(long, conflicts_with = "device", value_name = "LIST")]
    pub devices: Option<String>,
    /// Number of nodes (processes, one per machine) of a multi-node run; every node runs the
    /// same command with its own --node-rank and --node-address, and the same devices count.
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub nodes: usize,
    /// This node's rank in [0, --nodes); node 0 writes the run and serves the orchestrator.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub node_rank: usize,
    /// The orchestrator's address, ws://HOST:PORT, the same on every node (node 0 starts it
    /// on PORT). Needed with --nodes > 1.
    #[arg(long, value_name = "URL")]
    pub orchestrator: Option<String>,
    /// This node's address, ws://HOST:PORT, reachable from the other nodes (PORT must be
    /// free: the node serves its tensors there). Needed with --nodes > 1.
    #[arg(long, value_name = "URL")]
    pub node_address: Option<String>,
}

impl Default for ParallelArgs {
    /// One device, one node (what the flags' defaults give).
    fn default() -> Self {
        ParallelArgs {
            devices: None,
            nodes: 1,
            node_rank: 0,
            orchestrator: None,
            node_address: None,
        }
    }
}

/// The devices and nodes of a data-parallel run.
#[derive(Debug, Clone)]
pub struct ParallelPlan {
    /// This node's devices, one worker each (one backend).
    pub devices: Vec<DeviceSpec>,
    /// The nodes.
    pub cluster: Cluster,
}

impl ParallelArgs {
    /// `None` for an ordinary one-device run (no --devices, one node); the plan of a
    /// data-parallel run otherwise, checked before anything is written. `device` is the
    /// `--device` value, the device of every node when --devices is absent.
    pub fn plan(&self, device: &str) -> Result<Option<ParallelPlan>, CliError> {
        let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
        if !self.given() {
            return Ok(None);
        }
        let devices =
            parse_devices(self.devices.as_deref().unwrap_or(device)).map_err(|e| usage(&e))?;
        let cluster = Cluster {
            nodes: self.nodes,
            node_rank: self.node_rank,
            orchestrator: self.orchestrator.clone(),
            node_address: self.node_address.clone(),
        };
        cluster.check().map_err(|e| usage(&e))?;
        if self.nodes == 1 && (self.orchestrator.is_some() || self.node_address.is_some()) {
            return Err(CliError::Usage(
                "--orchestrator and --node-address are for --nodes > 1".into(),
            ));
        }
        if devices.len() == 1 && self.nodes == 1 {
            // One device: the ordinary loop.
            return Ok(None);
        }
        if !COLLECTIVE {
            return Err(CliError::Usage(
                "--devices with several devices and --nodes > 1 need the cargo feature \
                 `collective` (burn-collective), which this build does not include; rebuild \
                 with `cargo build --release -p fdistill-cli --features collective`"
                    .into(),
            ));
        }
        Ok(Some(ParallelPlan { devices, cluster }))
    }

    /// Whether any of the flags differs from a one-device run's.
    pub fn given(&self) -> bool {
        self.devices.as_deref().is_some_and(|d| d.contains(','))
            || self.nodes != 1
            || self.node_rank != 0
            || self.orchestrator.is_some()
            || self.node_address.is_some()
    }

    /// Whether this process writes the run directory: every run but those of nodes other
    /// than 0 (they run the same steps and read checkpoints to resume, from a shared
    /// filesystem or a copy).
    pub fn writes(&self) -> bool {
        self.node_rank == 0
    }

    /// The device of an ordinary run (the first entry of --devices, else --device); a
    /// data-parallel run's list is checked by [`plan`](Self::plan).
    pub fn single_device<'a>(&'a self, device: &'a str) -> &'a str {
        self.devices
            .as_deref()
            .and_then(|d| d.split(',').next())
            .map(str::trim)
            .unwrap_or(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_say_what_is_wrong() {
        let none = ParallelArgs {
            nodes: 1,
            ..Default::default()
        };
        assert!(none.plan("flex").unwrap().is_none());
        let one = ParallelArgs {
            devices: Some("flex".into()),
            nodes: 1,
            ..Default::default()
        };
        assert!(one.plan("flex").unwrap().is_none());
        let bad = ParallelArgs {
            devices: Some("flex,cuda:0".into()),
            nodes: 1,
            ..Default::default()
        };
        let e = bad.plan("flex").unwrap_err().to_string();
        assert!(e.contains("mixes"), "{e}");
        let rank = ParallelArgs {
            nodes: 2,
            node_rank: 2,
            ..Default::default()
        };
        let e = rank.plan("flex").unwrap_err().to_string();
        assert!(e.contains("--node-rank 2 with --nodes 2"), "{e}");
        let no_orch = ParallelArgs {
            nodes: 2,
            ..Default::default()
        };
        let e = no_orch.plan("flex").unwrap_err().to_string();
        assert!(e.contains("--orchestrator ws://HOST:PORT"), "{e}");
        let bad_url = ParallelArgs {
            nodes: 2,
            orchestrator: Some("127.0.0.1:3000".into()),
            node_address: Some("ws://127.0.0.1:3001".into()),
            ..Default::default()
        };
        let e = bad_url.plan("flex").unwrap_err().to_string();
        assert!(e.contains("not a WebSocket address"), "{e}");
        let two = ParallelArgs {
            devices: Some("flex,flex".into()),
            nodes: 1,
            ..Default::default()
        };
        match two.plan("flex") {
            Ok(Some(p)) => assert_eq!(p.devices.len(), 2),
            Ok(None) => panic!("two devices are a parallel run"),
            Err(e) => assert!(!COLLECTIVE && e.to_string().contains("`collective`"), "{e}"),
        }
    }
}
