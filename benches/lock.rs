//! `cargo bench --bench lock`: the lock throughput ratios on redis-server
//! processes started for the run (one node, then three), each measured in one
//! run against rslock. Prints the reports; asserts nothing.

use std::time::Duration;

use warroom::bench::lock::{BenchMode, LockBench, Peer};
use warroom::redis_node::RedisNode;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let nodes: Vec<RedisNode> = (0..3)
        .map(|_| RedisNode::start().expect("redis-server on PATH"))
        .collect();
    let urls: Vec<String> = nodes.iter().map(RedisNode::url).collect();
    let seconds = std::env::var("WARROOM_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    for (mode, nodes) in [
        (BenchMode::Fenced, vec![urls[0].clone()]),
        (BenchMode::Redlock, urls.clone()),
    ] {
        let bench = LockBench {
            nodes,
            mode,
            clients: 32,
            keys: 1024,
            duration: Duration::from_secs_f64(seconds),
            ttl: Duration::from_millis(200),
            pauses: None,
            events: true,
            compare: Some(Peer::Rslock),
            colocated: true,
            connections: 2,
        };
        let report = runtime.block_on(bench.run()).expect("benchmark runs");
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    }
}
