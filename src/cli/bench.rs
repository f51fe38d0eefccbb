//! `warroom bench …`: benchmarks that print numbers.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use warroom::bench::lock::{
    BenchError, BenchMode, LockBench, LockBenchReport, PauseSchedule, Peer, PerCycle, RunReport,
};

use super::numbers::{seconds, whole};
use super::{CommandResult, Exit, Failure};

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Lock contention benchmark and correctness checker: throughput, latency,
    /// double grants and stale writes, optionally against a peer library.
    Lock(LockArgs),
    /// Requests per second and latency of the local cluster server (get,
    /// merge patch, scale) through kube-rs over loopback HTTP.
    Cluster(ClusterBenchArgs),
    /// Time from `warroom run PLAYBOOK --yes` to every step verified,
    /// against a local cluster server (target < 2 s excluding waits).
    Playbook(super::playbook::BenchArgs),
    /// Incident journal: durable appends/s (one writer, many writers) and the
    /// time to export a large journal to md, json and html.
    Timeline(super::timeline::BenchArgs),
    /// Collision exporter: detection latency (second grant to /metrics),
    /// events/s on one core, memory over many keys.
    Exporter(ExporterArgs),
    /// Console: render time per frame at 200x60 with 100k timeline events
    /// and an hour of samples; with tmux and redis-server, the live
    /// console's collision-to-screen time, idle CPU and resident memory.
    Console(ConsoleBenchArgs),
    /// Fenced against unguarded units of work in PostgreSQL: units/s of
    /// each, their ratio (target >= 0.9), latency, and the stale writes of
    /// paused holders each lets through. Runs in a scratch database it
    /// creates on the server and drops.
    Fence(FenceBenchArgs),
}

/// `warroom bench fence` arguments.
#[derive(Args)]
pub struct FenceBenchArgs {
    /// A PostgreSQL URL (postgres://user[:password]@host[:port]/db). Its
    /// database is not written: a scratch database warroom_bench_<pid> is
    /// created on the same server (the user needs CREATEDB) and dropped at
    /// the end.
    #[arg(long, env = "WARROOM_BENCH_DATABASE", value_name = "URL")]
    database: String,
    /// Concurrent writers, one connection each, 1 to 64 (PostgreSQL's
    /// default max_connections is 100).
    #[arg(long, default_value_t = 16, value_parser = whole::<usize>(1..=64), allow_negative_numbers = true)]
    concurrency: usize,
    /// Distinct orders the writers pick from, 1 to 1,000,000 (fewer orders,
    /// more contention on each row).
    #[arg(long, default_value_t = 10_000, value_parser = whole::<usize>(1..=1_000_000), allow_negative_numbers = true)]
    orders: usize,
    /// Seconds each path (fenced, unguarded) runs in the throughput phase,
    /// 0.2 to 3600.
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = seconds(0.2, MAX_BENCH_SECONDS), allow_hyphen_values = true)]
    duration: Duration,
    /// Paused holders per path in the second phase, 0 to 10,000.
    #[arg(long, default_value_t = 64, value_parser = whole::<usize>(0..=10_000), allow_negative_numbers = true)]
    pauses: usize,
    /// Length of each pause in milliseconds, 1 to 60,000 (PM-003: 280-400).
    #[arg(long, default_value_t = 300, value_parser = whole::<u64>(1..=60_000), allow_negative_numbers = true)]
    pause_ms: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// `warroom bench console` arguments.
#[derive(Args)]
pub struct ConsoleBenchArgs {
    /// Frames drawn per chart window, 10 to 100,000.
    #[arg(long, default_value_t = 300, value_parser = whole::<usize>(10..=100_000), allow_negative_numbers = true)]
    frames: usize,
    /// Collision-to-screen trials against the live console, 0 to 100.
    #[arg(long, default_value_t = 10, value_parser = whole::<usize>(0..=100), allow_negative_numbers = true)]
    trials: usize,
    /// Seconds the idle CPU is measured over, 2 to 600.
    #[arg(long, default_value_t = 10, value_parser = whole::<u64>(2..=600), allow_negative_numbers = true)]
    idle_seconds: u64,
    /// Playbook folder the live console lists.
    #[arg(long, default_value = "playbooks")]
    playbooks: std::path::PathBuf,
}

/// `warroom bench exporter` arguments.
#[derive(Args)]
pub struct ExporterArgs {
    /// Redis to use (default: start a redis-server of its own).
    #[arg(long)]
    redis: Option<String>,
    /// Detection-latency trials, 1 to 10,000 (each waits out a 20 ms lease).
    #[arg(long, default_value_t = 300, value_parser = whole::<usize>(1..=10_000), allow_negative_numbers = true)]
    trials: usize,
    /// Events in the pre-filled stream, 1 to 10,000,000 (about 100 bytes of
    /// Redis memory each).
    #[arg(long, default_value_t = 1_000_000, value_parser = whole::<u64>(1..=10_000_000), allow_negative_numbers = true)]
    events: u64,
    /// Distinct lock keys among them, 1 to 10,000,000.
    #[arg(long, default_value_t = 100_000, value_parser = whole::<u64>(1..=10_000_000), allow_negative_numbers = true)]
    keys: u64,
    /// Keys held at once in the pre-filled stream (grants of this many keys,
    /// then their releases), 1 to 100,000 and at most --keys (the exporter
    /// tracks each held key: about 1 KiB apiece).
    #[arg(long, default_value_t = 500, value_parser = whole::<u64>(1..=100_000), allow_negative_numbers = true)]
    held: u64,
    /// Sample memory every this many events read, 1,000 to 10,000,000.
    #[arg(long, default_value_t = 100_000, value_parser = whole::<u64>(1_000..=10_000_000), allow_negative_numbers = true)]
    sample_every: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// Output format.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// A table for people.
    Text,
    /// One JSON object.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// PM-003's lock (GET then SET NX, unconditional DEL, unfenced writes).
    Legacy,
    /// Single-node fenced lock and fenced store.
    Fenced,
    /// Fenced Redlock over every --redis node; the store is on the first.
    Redlock,
    /// Optimistic WATCH/MULTI/EXEC updates, no lock.
    Watch,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PeerArg {
    /// The rslock crate (no fencing tokens).
    Rslock,
}

// Ranges: what a contention test on one machine or a small Redlock
// deployment can use, with room to spare; far beyond them a value only
// exhausts memory, threads or connections (100,000 clients took 5 GB).
/// Longest run a benchmark takes, in seconds: an hour.
const MAX_BENCH_SECONDS: f64 = 3600.0;

/// `warroom bench lock` arguments.
#[derive(Args)]
pub struct LockArgs {
    /// Redis URL(s), comma-separated; redlock uses them all, other modes one.
    #[arg(long, value_delimiter = ',', default_value = "redis://127.0.0.1:6379")]
    redis: Vec<String>,
    /// Start this many redis-server processes of its own on loopback ports
    /// (1 to 9; needs redis-server on PATH) and use them instead of --redis.
    // Redlock deployments use 3 or 5 nodes; 9 leaves room and still fits
    // on one machine.
    #[arg(long, conflicts_with = "redis", value_parser = whole::<usize>(1..=9), allow_negative_numbers = true)]
    nodes: Option<usize>,
    /// Put every node behind a TCP proxy that delays each direction by this
    /// many milliseconds (0 to 1,000), for the peer library too: nodes as if
    /// on other hosts. The report then also counts requests sent per cycle.
    // A second each way makes every cycle take seconds; beyond it only the
    // acquire waits time out.
    #[arg(long, value_name = "MS", value_parser = whole::<u64>(0..=1_000), allow_negative_numbers = true)]
    node_delay_ms: Option<u64>,
    /// Which lock the clients use.
    #[arg(long, value_enum, default_value = "fenced")]
    mode: ModeArg,
    /// Concurrent clients, 1 to 1,000 (watch mode opens a connection per
    /// client).
    #[arg(long, default_value_t = 32, value_parser = whole::<usize>(1..=1_000), allow_negative_numbers = true)]
    clients: usize,
    /// Distinct lock keys, 1 to 1,000,000.
    // The referee keeps a slot per key and the run reads every record back.
    #[arg(long, default_value_t = 1024, value_parser = whole::<usize>(1..=1_000_000), allow_negative_numbers = true)]
    keys: usize,
    /// Seconds during which clients start new cycles, 0.1 to 3600.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = seconds(0.1, MAX_BENCH_SECONDS), allow_hyphen_values = true)]
    duration: Duration,
    /// Lock TTL in milliseconds, 10 to 600,000 (PM-003: 200).
    #[arg(long, default_value_t = 200, value_parser = whole::<u64>(10..=600_000), allow_negative_numbers = true)]
    ttl_ms: u64,
    /// Every Nth grant stalls while holding (a GC pause), N from 1 to
    /// 1,000,000.
    // Beyond a million a stall would practically never come.
    #[arg(long, value_parser = whole::<u64>(1..=1_000_000), allow_negative_numbers = true)]
    pause_every: Option<u64>,
    /// Length of the stall in milliseconds, 1 to 60,000 (PM-003: 280–400);
    /// needs --pause-every. The run ends when the last stalled client does.
    // Real GC pauses last up to seconds; a minute is far past any TTL here.
    #[arg(long, default_value_t = 300, requires = "pause_every", value_parser = whole::<u64>(1..=60_000), allow_negative_numbers = true)]
    pause_ms: u64,
    /// Also run the same benchmark against a peer library.
    #[arg(long, value_enum)]
    compare: Option<PeerArg>,
    /// Do not publish lock events.
    #[arg(long)]
    no_events: bool,
    /// Fenced mode: acquire, claim, write and release as four calls instead
    /// of two scripts on the lock's node (lock-and-claim, write-and-release).
    #[arg(long)]
    separate_calls: bool,
    /// Connections per node, shared by the clients (as worker tasks share a
    /// service's connections), 1 to 64.
    #[arg(long, default_value_t = 2, value_parser = whole::<usize>(1..=64), allow_negative_numbers = true)]
    connections: usize,
    /// Client runtime threads, 1 to 256 (1 leaves the other core to
    /// redis-server).
    // More runtime threads than cores only adds contention; 256 covers the
    // largest machines.
    #[arg(long, default_value_t = 1, value_parser = whole::<usize>(1..=256), allow_negative_numbers = true)]
    threads: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// Runs a benchmark command.
pub fn run(cmd: BenchCommand) -> CommandResult {
    match cmd {
        BenchCommand::Lock(args) => lock(args),
        BenchCommand::Cluster(args) => cluster(args),
        BenchCommand::Playbook(args) => super::playbook::bench(args),
        BenchCommand::Timeline(args) => super::timeline::bench(args),
        BenchCommand::Exporter(args) => exporter(args),
        BenchCommand::Console(args) => console(args),
        BenchCommand::Fence(args) => fence(args),
    }
}

fn fence(args: FenceBenchArgs) -> CommandResult {
    use warroom::bench::fence::{FenceBench, FenceBenchError};
    let bench = FenceBench {
        database: args.database,
        concurrency: args.concurrency,
        orders: args.orders,
        duration: args.duration,
        pauses: args.pauses,
        pause: Duration::from_millis(args.pause_ms),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(bench.run()).map_err(|e| match e {
        FenceBenchError::Invalid(_) => Failure::msg(Exit::Invalid, e),
        FenceBenchError::Database(_) => Failure::msg(Exit::Unreachable, e),
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        ),
        Output::Text => {
            println!(
                "scratch database {} on {} (created for this run, dropped at its end); \
                 {} writers, {} orders",
                report.scratch_database, report.server, report.concurrency, report.orders
            );
            println!(
                "unit of work: set an order's status + append its order_events row, one transaction"
            );
            for p in &report.throughput {
                println!(
                    "  {:<12}  {:>9.0} units/s  p50 {:>7.3} ms  p99 {:>7.3} ms  \
                     ({} committed, {} refused by the fence, {:.1} s)",
                    p.path, p.units_per_sec, p.p50_ms, p.p99_ms, p.units, p.refused, p.seconds
                );
            }
            println!(
                "  fenced / unguarded = {:.3} (target >= 0.9); fenced-begin / unguarded = {:.3}",
                report.ratio, report.ratio_begin
            );
            println!(
                "pauses: a holder pauses {} ms past its lease, the next holder writes, the paused one wakes and writes",
                report.pause_ms
            );
            for p in &report.pauses {
                println!(
                    "  {:<9}  {} paused holders: {} stale writes accepted, {} found in the tables",
                    p.path, p.paused_holders, p.accepted_by_store, p.stale_writes_in_tables
                );
            }
        }
    }
    Ok(Exit::Done)
}

fn console(args: ConsoleBenchArgs) -> CommandResult {
    use warroom::console::bench;
    for window in [300, 3_600] {
        let n = bench::render(args.frames, window).map_err(|e| Failure::msg(Exit::Failed, e))?;
        println!(
            "render 200x60, 100000 timeline events, 1 h of 1 s samples, {} s window: \
             p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms per frame over {} frames (target <= 2 ms)",
            n.window_s, n.p50_ms, n.p99_ms, n.mean_ms, n.frames
        );
        println!(
            "  CPU time of the drawing thread (without the time other processes had the core): \
             p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms per frame",
            n.cpu_p50_ms, n.cpu_p99_ms, n.cpu_mean_ms
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    match runtime.block_on(bench::live(args.trials, args.idle_seconds, &args.playbooks)) {
        Err(e) => Err(Failure::msg(Exit::Failed, e)),
        Ok(Err(skipped)) => {
            println!("live console: not measured ({skipped})");
            Ok(Exit::Done)
        }
        Ok(Ok(live)) => {
            let mut ms = live.collision_to_screen_ms.clone();
            ms.sort_by(f64::total_cmp);
            if let (Some(first), Some(last)) = (ms.first(), ms.last()) {
                println!(
                    "collision in Redis -> alert on the live console (1 s poll), {} trials: \
                     median {:.0} ms, min {:.0} ms, max {:.0} ms (target < 1000 ms)",
                    ms.len(),
                    ms[ms.len() / 2],
                    first,
                    last
                );
            }
            println!(
                "live console idle (data polled every 1 s, {} journal events): CPU {:.2} % of \
                 one core over {} s (target <= 2 %), resident memory {:.1} MB (target <= 50 MB)",
                live.journal_events, live.idle_cpu_percent, live.idle_seconds, live.resident_mb
            );
            Ok(Exit::Done)
        }
    }
}

fn exporter(args: ExporterArgs) -> CommandResult {
    use warroom::bench::exporter::{ExporterBench, ExporterBenchError};
    let bench = ExporterBench {
        redis: args.redis,
        trials: args.trials,
        events: args.events,
        keys: args.keys,
        held: args.held,
        sample_every: args.sample_every,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(bench.run()).map_err(|e| match e {
        ExporterBenchError::Invalid(_) => Failure::msg(Exit::Invalid, e),
        ExporterBenchError::Redis(_) => Failure::msg(Exit::Unreachable, e),
        _ => Failure::msg(Exit::Failed, e),
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        ),
        Output::Text => {
            let d = &report.detection;
            let t = &report.throughput;
            println!(
                "detection latency (second grant -> /metrics shows the collision), {} trials: \
                 p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                d.trials, d.p50_ms, d.p99_ms, d.max_ms
            );
            println!(
                "throughput (pre-filled stream, reader on one core): {} events over {} keys \
                 ({} held at once) in {:.2} s = {:.0} events/s; keys tracked at the end: {}",
                t.events, t.keys, t.held, t.seconds, t.events_per_sec, t.keys_tracked_at_end
            );
            println!("resident memory while reading:");
            for sample in &report.rss {
                println!("  {:>9} events  {:>8} KiB", sample.events, sample.rss_kib);
            }
        }
    }
    Ok(Exit::Done)
}

fn lock(args: LockArgs) -> CommandResult {
    let duration = args.duration;
    // Nodes started for the run live until it has been reported.
    let started = match args.nodes {
        Some(n) => (0..n)
            .map(|_| warroom::redis_node::RedisNode::start())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Failure::msg(
                    Exit::Failed,
                    format!("cannot start redis-server for --nodes (is it on PATH?): {e}"),
                )
            })?,
        None => Vec::new(),
    };
    let nodes: Vec<String> = if started.is_empty() {
        args.redis
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    } else {
        started
            .iter()
            .map(warroom::redis_node::RedisNode::url)
            .collect()
    };
    let bench = LockBench {
        nodes,
        mode: match args.mode {
            ModeArg::Legacy => BenchMode::Legacy,
            ModeArg::Fenced => BenchMode::Fenced,
            ModeArg::Redlock => BenchMode::Redlock,
            ModeArg::Watch => BenchMode::Watch,
        },
        clients: args.clients,
        keys: args.keys,
        duration,
        ttl: Duration::from_millis(args.ttl_ms),
        pauses: args.pause_every.map(|every| PauseSchedule {
            every,
            pause: Duration::from_millis(args.pause_ms),
        }),
        events: !args.no_events,
        compare: args.compare.map(|PeerArg::Rslock| Peer::Rslock),
        colocated: !args.separate_calls,
        connections: args.connections,
    };
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let delay = args.node_delay_ms.map(Duration::from_millis);
    let report = runtime
        .block_on(async {
            match delay {
                Some(delay) => bench.run_across(delay).await,
                None => bench.run().await,
            }
        })
        .map_err(|e| match e {
            BenchError::Invalid(_) => Failure::msg(Exit::Invalid, e),
            BenchError::Setup { .. } | BenchError::Stalled(_) => Failure::msg(Exit::Unreachable, e),
        })?;
    drop(runtime);
    drop(started);
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        ),
        Output::Text => print!("{}", render(&report)),
    }
    Ok(Exit::Done)
}

fn render(r: &LockBenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let pauses = match (r.pause_every, r.pause_ms) {
        (Some(every), Some(ms)) => format!(", every {every}th grant stalls {ms} ms"),
        _ => String::new(),
    };
    let delay = match (r.node_delay_ms, r.node_round_trip_ms) {
        (Some(ms), Some(rtt)) => {
            format!(" behind {ms} ms proxies (each way; PING round trip {rtt:.2} ms)")
        }
        (Some(ms), None) => format!(" behind {ms} ms proxies (each way)"),
        (None, _) => String::new(),
    };
    let _ = writeln!(
        out,
        "{} clients, {} keys, {} node(s){delay}, ttl {} ms{pauses}, events {}",
        r.clients,
        r.keys,
        r.nodes,
        r.ttl_ms,
        if r.events { "on" } else { "off" }
    );
    let mut runs = vec![&r.run];
    if let Some(peer) = &r.compare {
        runs.push(&peer.run);
    }
    let _ = write!(out, "{:<24}", "");
    for run in &runs {
        let _ = write!(out, "{:>14}", run.name);
    }
    out.push('\n');
    type Row = (&'static str, fn(&RunReport) -> String);
    let rows: [Row; 13] = [
        ("cycles", |r| r.cycles.to_string()),
        ("cycles/s", |r| format!("{:.0}", r.cycles_per_sec)),
        ("latency p50 ms", |r| format!("{:.3}", r.latency_ms.p50)),
        ("latency p99 ms", |r| format!("{:.3}", r.latency_ms.p99)),
        ("double grants", |r| r.double_grants.to_string()),
        ("stale writes accepted", |r| {
            r.stale_writes_accepted.to_string()
        }),
        ("stale writes rejected", |r| {
            r.stale_writes_rejected.to_string()
        }),
        ("claims rejected", |r| r.claims_rejected.to_string()),
        ("lost updates", |r| r.lost_updates.to_string()),
        ("writes accepted", |r| r.writes_accepted.to_string()),
        ("pauses", |r| r.pauses.to_string()),
        ("acquire failures", |r| r.acquire_failures.to_string()),
        ("errors", |r| r.errors.to_string()),
    ];
    for (label, value) in rows {
        let _ = write!(out, "{label:<24}");
        for run in &runs {
            let _ = write!(out, "{:>14}", value(run));
        }
        out.push('\n');
    }
    if let Some(ratio) = r.ratio {
        let _ = writeln!(out, "{:<24}{:>14.2}", "throughput ratio", ratio);
    }
    let per_cycle = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"));
    type CountRow = (&'static str, fn(&PerCycle) -> Option<f64>);
    let counts: [CountRow; 7] = [
        ("round trips (p50/RTT)", |p| p.round_trips_p50),
        ("requests sent/cycle", |p| p.requests_sent),
        ("  of which scripts", |p| p.scripts_sent),
        ("commands run/cycle", |p| p.commands_run),
        ("  of which scripts", |p| p.scripts_run),
        ("redis CPU us/cycle", |p| p.redis_cpu_us),
        ("client CPU us/cycle", |p| p.client_cpu_us),
    ];
    let _ = writeln!(
        out,
        "per completed cycle (round trips: median latency / PING round trip; requests: at \
         the proxies; commands: INFO commandstats, including those run inside scripts; \
         CPU: INFO cpu of the nodes, getrusage of this process)"
    );
    for (label, value) in counts {
        let _ = write!(out, "{label:<24}");
        for run in &runs {
            let _ = write!(out, "{:>14}", per_cycle(value(&run.per_cycle)));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<24}", "other CPU, cores");
    for run in &runs {
        let shown = run
            .other_cpu_cores
            .map_or_else(|| "n/a".to_string(), |c| format!("{c:.2}"));
        let _ = write!(out, "{shown:>14}");
    }
    out.push('\n');
    for run in &runs {
        let by: Vec<String> = run
            .per_cycle
            .by_command
            .iter()
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        if !by.is_empty() {
            let _ = writeln!(out, "  {}: {}", run.name, by.join(", "));
        }
    }
    // Clients and nodes share this machine's cores: other work changes how
    // requests batch, and not equally for every client (measured on 2
    // cores: one busy loop took rslock from 43k to 72k cycles/s and the
    // fenced lock from 53k to 50k).
    if let Some(note) = busy_machine_note(runs.iter().map(|run| run.other_cpu_cores)) {
        let _ = writeln!(out, "{note}");
    }
    out
}

/// Other processes' CPU, in cores, from which a lock comparison is flagged.
const BUSY_MACHINE_CORES: f64 = 0.25;

/// The warning for runs during which other processes used
/// [`BUSY_MACHINE_CORES`] or more (unknown counts as idle).
fn busy_machine_note(other_cpu_cores: impl Iterator<Item = Option<f64>>) -> Option<String> {
    let busiest = other_cpu_cores
        .flatten()
        .reduce(f64::max)
        .filter(|&cores| cores >= BUSY_MACHINE_CORES)?;
    Some(format!(
        "note: other processes used up to {busiest:.2} cores during the runs; clients and \
         nodes share this machine, so the comparison moves with that work: compare on an \
         idle machine"
    ))
}

/// `warroom bench cluster` arguments.
#[derive(Args)]
pub struct ClusterBenchArgs {
    /// Concurrent clients per operation, 1 to 1,000.
    #[arg(long, default_value_t = 8, value_parser = whole::<usize>(1..=1_000), allow_negative_numbers = true)]
    clients: usize,
    /// Seconds per operation, 0.1 to 3600.
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = seconds(0.1, MAX_BENCH_SECONDS), allow_hyphen_values = true)]
    duration: Duration,
    /// Runtime threads shared by the server and the clients, 1 to 256.
    #[arg(long, default_value_t = 2, value_parser = whole::<usize>(1..=256), allow_negative_numbers = true)]
    threads: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

fn cluster(args: ClusterBenchArgs) -> CommandResult {
    use warroom::bench::cluster::{ClusterBench, ClusterBenchError, render};
    let bench = ClusterBench {
        clients: args.clients,
        duration: args.duration,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(bench.run()).map_err(|e| match e {
        ClusterBenchError::Invalid(_) => Failure::msg(Exit::Invalid, e),
        ClusterBenchError::Setup(_) => Failure::msg(Exit::Failed, e),
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        ),
        Output::Text => print!("{}", render(&report)),
    }
    Ok(Exit::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comparison_beside_other_work_says_so_and_an_idle_one_does_not() {
        let note = busy_machine_note([Some(0.0), Some(0.98)].into_iter()).unwrap();
        assert!(note.contains("up to 0.98 cores"), "{note}");
        assert!(note.contains("compare on an idle machine"), "{note}");
        assert_eq!(busy_machine_note([Some(0.0), Some(0.24)].into_iter()), None);
        assert_eq!(busy_machine_note([None, None].into_iter()), None);
        assert!(busy_machine_note([None, Some(0.25)].into_iter()).is_some());
    }
}
