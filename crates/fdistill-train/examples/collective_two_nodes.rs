//! The smallest multi-node use of burn-collective 0.21, with nothing of fdistill: two
//! processes on loopback, one device each, one all-reduce (mean) of a 4-element tensor.
//! Node 0 also serves the global orchestrator. Each node prints what it reached.
//!
//! ```sh
//! cargo run -p fdistill-train --features collective --example collective_two_nodes -- 0 &
//! cargo run -p fdistill-train --features collective --example collective_two_nodes -- 1
//! ```
//!
//! Expected: every all-reduce prints 1.5 (the mean of 1 and 2) on both nodes, then both exit.
//! A third argument lists the sizes of successive all-reduces (`-- 0 3100 4,4,4`);
//! `STRATEGY=tree|centralized` replaces the global ring all-reduce (the default). What
//! happens is recorded in `docs/performance.md` (section "Upstream").

use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::collective::{
    AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation, all_reduce, finish_collective,
    register,
};
use burn::tensor::{Tensor, TensorPrimitive};

fn main() {
    let mut args = std::env::args().skip(1);
    let rank: u32 = args
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|r| *r < 2)
        .unwrap_or_else(|| {
            eprintln!(
                "usage: collective_two_nodes RANK (0 or 1) [BASE_PORT, default 3100] \
                 [SIZES, comma-separated element counts, one all-reduce each, default 4]"
            );
            std::process::exit(2)
        });
    let base: u16 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3100);
    let sizes: Vec<usize> = args
        .next()
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![4]);
    let t0 = Instant::now();
    let say = |what: &str| eprintln!("[{:6.2} s] node {rank}: {what}", t0.elapsed().as_secs_f64());
    if rank == 0 {
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(burn_collective::start_global_orchestrator(base))
        });
        std::thread::sleep(Duration::from_millis(300));
        say(&format!("orchestrator on ws://127.0.0.1:{base}"));
    }
    let port = base + 1 + rank as u16;
    let address = |p: u16| {
        format!("ws://127.0.0.1:{p}")
            .parse::<burn_communication::Address>()
            .expect("an address")
    };
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(2)
        .with_global_address(address(base))
        .with_node_address(address(port))
        .with_data_service_port(port)
        .with_global_all_reduce_strategy(match std::env::var("STRATEGY").as_deref() {
            Ok("tree") => AllReduceStrategy::Tree(2),
            Ok("centralized") => AllReduceStrategy::Centralized,
            _ => AllReduceStrategy::Ring,
        });
    let device = Default::default();
    let peer = PeerId::from(rank);
    register::<Flex>(peer, device, config).expect("register");
    say("registered");
    for (i, &n) in sizes.iter().enumerate() {
        let t = Tensor::<Flex, 1>::full([n], rank as f32 + 1.0, &device);
        let r = all_reduce::<Flex>(peer, t.into_primitive().tensor(), ReduceOperation::Mean)
            .expect("all-reduce");
        let r = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(r));
        let v = r.into_data().to_vec::<f32>().unwrap();
        say(&format!(
            "all-reduce #{i} of {n} elements: {:?}",
            &v[..n.min(4)]
        ));
    }
    finish_collective::<Flex>(peer).expect("finish");
    say("finished");
}
