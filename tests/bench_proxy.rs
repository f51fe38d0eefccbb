//! The delaying proxy of `warroom bench lock --node-delay-ms` against real
//! `redis-server` processes: it delays each direction, passes bytes intact
//! and in order, keeps a paced stream flowing, counts requests; and the
//! benchmark prints its report with the per-cycle counts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use warroom::bench::proxy::{DelayProxy, RequestCounter};
use warroom::redis_node::RedisNode;

fn redis_available() -> bool {
    common::require_tool("redis-server", "redis-server").is_some()
}

fn proxy_to(node: &RedisNode, delay: Duration) -> DelayProxy {
    DelayProxy::start(&format!("127.0.0.1:{}", node.port()), delay).expect("proxy starts")
}

/// Reads until `expected` bytes have arrived or `deadline` passes.
fn read_exactly(stream: &mut TcpStream, expected: usize, deadline: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::with_capacity(expected);
    let mut buf = [0u8; 4096];
    while got.len() < expected {
        let left = deadline.checked_sub(start.elapsed()).unwrap_or_else(|| {
            panic!("only {} of {expected} bytes within {deadline:?}", got.len())
        });
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => panic!("connection closed after {} of {expected} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if start.elapsed() >= deadline => {
                panic!(
                    "only {} of {expected} bytes within {deadline:?}: {e}",
                    got.len()
                )
            }
            Err(_) => {}
        }
    }
    got
}

#[test]
fn a_ping_through_a_50_ms_proxy_takes_at_least_two_delays() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().expect("redis-server starts");
    let proxy = proxy_to(&node, Duration::from_millis(50));
    let mut stream = TcpStream::connect(proxy.local_addr()).expect("connect to the proxy");
    stream.set_nodelay(true).expect("nodelay");
    for _ in 0..3 {
        let sent = Instant::now();
        stream.write_all(b"PING\r\n").expect("write");
        let reply = read_exactly(&mut stream, 7, Duration::from_secs(5));
        let round_trip = sent.elapsed();
        assert_eq!(reply, b"+PONG\r\n");
        assert!(
            round_trip >= Duration::from_millis(100),
            "a round trip through a 50 ms proxy took only {round_trip:?}"
        );
    }
    // The same node answers directly without the delay being added.
    let mut direct = TcpStream::connect(("127.0.0.1", node.port())).expect("connect to the node");
    direct.write_all(b"PING\r\n").expect("write");
    assert_eq!(
        read_exactly(&mut direct, 7, Duration::from_secs(5)),
        b"+PONG\r\n"
    );
}

#[tokio::test]
async fn data_passes_intact_and_in_order_both_ways() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().expect("redis-server starts");
    let proxy = proxy_to(&node, Duration::from_millis(5));
    let url = format!("redis://{}", proxy.local_addr());
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect through the proxy");

    // 1 MiB of every byte value, both ways.
    let value: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _: () = redis::cmd("SET")
        .arg("blob")
        .arg(&value)
        .query_async(&mut conn)
        .await
        .expect("SET through the proxy");
    let back: Vec<u8> = redis::cmd("GET")
        .arg("blob")
        .query_async(&mut conn)
        .await
        .expect("GET through the proxy");
    assert_eq!(back.len(), value.len());
    assert!(back == value, "the value came back altered");

    // A pipeline of increments: replies in the order the requests went.
    let mut pipe = redis::pipe();
    for _ in 0..2_000 {
        pipe.cmd("INCR").arg("counter");
    }
    let counts: Vec<u64> = pipe.query_async(&mut conn).await.expect("pipeline");
    assert_eq!(counts, (1..=2_000).collect::<Vec<u64>>());
}

#[test]
fn chunks_sent_apart_are_each_delayed_once_not_queued_behind_each_other() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().expect("redis-server starts");
    let delay = Duration::from_millis(50);
    let proxy = proxy_to(&node, delay);
    let mut stream = TcpStream::connect(proxy.local_addr()).expect("connect to the proxy");
    stream.set_nodelay(true).expect("nodelay");
    // 40 requests, written 5 ms apart: separate chunks. Each is delayed
    // 50 ms each way, so the last reply comes about 200 ms + 100 ms after
    // the first write; a proxy that forwarded one chunk per delay would need
    // 40 × 100 ms = 4 s.
    let start = Instant::now();
    for _ in 0..40 {
        stream.write_all(b"PING\r\n").expect("write");
        std::thread::sleep(Duration::from_millis(5));
    }
    let replies = read_exactly(&mut stream, 40 * 7, Duration::from_secs(10));
    let took = start.elapsed();
    assert_eq!(replies, b"+PONG\r\n".repeat(40));
    assert!(
        took >= 2 * delay,
        "replies came in {took:?}, before the delay"
    );
    assert!(
        took < Duration::from_millis(2_000),
        "40 paced requests took {took:?}: chunks wait for one another"
    );
}

#[test]
fn the_proxy_counts_requests_and_script_calls_sent_through_it() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().expect("redis-server starts");
    let proxy = proxy_to(&node, Duration::ZERO);
    let mut stream = TcpStream::connect(proxy.local_addr()).expect("connect to the proxy");
    let before = proxy.traffic();
    // Three commands and one script, in one write; then an inline command.
    stream
        .write_all(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n\
              *2\r\n$3\r\nGET\r\n$1\r\nk\r\n\
              *3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n\
              *2\r\n$4\r\nINCR\r\n$1\r\nn\r\n",
        )
        .expect("write");
    let replies = read_exactly(&mut stream, 5 + 7 + 4 + 4, Duration::from_secs(5));
    assert_eq!(replies, b"+OK\r\n$1\r\nv\r\n:1\r\n:1\r\n");
    stream.write_all(b"PING\r\n").expect("write");
    assert_eq!(
        read_exactly(&mut stream, 7, Duration::from_secs(5)),
        b"+PONG\r\n"
    );
    let sent = proxy.traffic().since(&before);
    assert_eq!(sent.requests, 5);
    assert_eq!(sent.scripts, 1);
    assert!(sent.bytes_to_node > 0 && sent.bytes_to_client == 27);
}

#[test]
fn the_request_counter_follows_requests_split_anywhere() {
    let stream: &[u8] = b"*3\r\n$7\r\nevalsha\r\n$2\r\nab\r\n$1\r\n0\r\n\
        *1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$-1\r\nPING\r\n\
        *2\r\n$8\r\nFCALL_RO\r\n$12\r\nline\r\nbreaks\r\n";
    for split in 0..stream.len() {
        let mut counter = RequestCounter::default();
        let (a, b) = stream.split_at(split);
        let (r1, s1) = counter.feed(a);
        let (r2, s2) = counter.feed(b);
        assert_eq!((r1 + r2, s1 + s2), (5, 2), "split at {split}");
    }
    // Byte by byte.
    let mut counter = RequestCounter::default();
    let (mut requests, mut scripts) = (0, 0);
    for byte in stream {
        let (r, s) = counter.feed(std::slice::from_ref(byte));
        requests += r;
        scripts += s;
    }
    assert_eq!((requests, scripts), (5, 2));
}

fn bench(args: &[&str]) -> std::process::Output {
    common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom"))
            .args(["bench", "lock"])
            .args(args),
        Duration::from_secs(120),
    )
}

#[test]
fn the_bench_reports_counts_per_cycle_for_both_sides_behind_proxies() {
    if !redis_available() {
        return;
    }
    let out = bench(&[
        "--nodes",
        "3",
        "--mode",
        "redlock",
        "--node-delay-ms",
        "2",
        "--duration",
        "1",
        "--clients",
        "8",
        "--keys",
        "64",
        "--compare",
        "rslock",
        "--output",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON report");
    assert_eq!(report["node_delay_ms"], 2);
    let round_trip = report["node_round_trip_ms"].as_f64().expect("a round trip");
    assert!(
        round_trip >= 4.0,
        "PING through 2 ms proxies took {round_trip} ms"
    );
    assert_eq!(report["nodes"], 3);
    for run in [&report["run"], &report["compare"]["run"]] {
        let name = run["name"].as_str().expect("a name");
        let counts = &run["per_cycle"];
        let number = |field: &str| {
            counts[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {field} missing in {counts}"))
        };
        assert!(
            run["cycles"].as_u64().expect("cycles") > 0,
            "{name}: no cycle"
        );
        let sent = number("requests_sent");
        let run_on_nodes = number("commands_run");
        // Every cycle takes the lock on a quorum (2 of 3 nodes), reads,
        // writes and releases: at least 5 requests, whichever library.
        assert!(sent >= 5.0, "{name}: {sent} requests per cycle");
        // The nodes run every request sent, and more inside scripts.
        assert!(
            run_on_nodes >= sent * 0.95,
            "{name}: ran {run_on_nodes}, sent {sent}"
        );
        // Script calls counted on the wire and on the nodes agree.
        let (scripts_sent, scripts_run) = (number("scripts_sent"), number("scripts_run"));
        assert!(scripts_sent > 0.0, "{name}: no script call");
        assert!(
            (scripts_sent - scripts_run).abs() <= scripts_run * 0.05,
            "{name}: {scripts_sent} scripts sent, {scripts_run} run"
        );
        assert!(
            counts["by_command"]["set"].as_f64().unwrap_or(0.0) >= 2.0,
            "{name}: SET on a quorum every cycle: {counts}"
        );
        assert_eq!(run["double_grants"], 0, "{name}");
        assert_eq!(run["lost_updates"], 0, "{name}");
    }
}

#[test]
fn the_bench_prints_the_counts_in_its_text_report() {
    if !redis_available() {
        return;
    }
    let out = bench(&[
        "--nodes",
        "1",
        "--node-delay-ms",
        "1",
        "--duration",
        "0.5",
        "--clients",
        "4",
        "--compare",
        "rslock",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("behind 1 ms proxies"), "{stdout}");
    for label in ["requests sent/cycle", "commands run/cycle"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} row in\n{stdout}"));
        let values: Vec<f64> = line[label.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{v:?} in {line:?}")))
            .collect();
        assert_eq!(values.len(), 2, "fenced and rslock in {line:?}");
        assert!(values.iter().all(|&v| v > 0.0), "{line:?}");
    }
    assert!(
        stdout.contains("  fenced: ") && stdout.contains("  rslock: "),
        "{stdout}"
    );
}

#[test]
fn out_of_range_node_options_are_refused() {
    for args in [
        &["--node-delay-ms", "1001"][..],
        &["--node-delay-ms", "-1"],
        &["--nodes", "0"],
        &["--nodes", "10"],
        &["--nodes", "1", "--redis", "redis://127.0.0.1:1"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn an_unreachable_node_behind_the_proxy_ends_the_run_with_exit_4_and_no_password() {
    let port = warroom::redis_node::free_port().expect("a free port");
    let url = format!("redis://:hunter2secret@127.0.0.1:{port}");
    let out = bench(&["--redis", &url, "--node-delay-ms", "1", "--duration", "0.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2secret"));
}
