//! The collision exporter against real `redis-server` processes and real
//! HTTP scrapes: the PM-003 schedule with the legacy and the fenced lock,
//! Redis restarts, and arbitrary bytes as events.
//!
//! The PM-003 schedule: 200 ms leases, every 4th grant stalls 300 ms (a GC
//! pause) while holding, more clients than keys.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use redis::AsyncCommands;
use warroom::bench::lock::{BenchMode, LockBench, LockBenchReport, PauseSchedule};
use warroom::exporter::{Exporter, ExporterConfig, KeyspaceEvents, Readers, StartFrom};
use warroom::lock::event::{DEFAULT_STREAM, EventKind, LockEvent};
use warroom::lock::{EventSink, EventStream, FencedLock, LockOptions};
use warroom::redis_node::{NodeOptions, RedisNode};

/// Generous bound for the exporter to catch up; not a speed assertion.
const CATCH_UP: Duration = Duration::from_secs(30);

struct Running {
    exporter: Exporter,
    addr: SocketAddr,
    _readers: Readers,
    _server: tokio::task::JoinHandle<()>,
}

async fn start_exporter(url: &str) -> Running {
    let config = ExporterConfig {
        keyspace_events: KeyspaceEvents::Allow,
        start: StartFrom::Beginning,
        ..ExporterConfig::new(url)
    };
    let exporter = Exporter::new(config).unwrap();
    let (addr, server) = exporter.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let readers = exporter.spawn();
    Running {
        exporter,
        addr,
        _readers: readers,
        _server: server,
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    body
}

/// The value of one sample (`name` or `name{labels}`) in a scrape.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

async fn stream_len(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    conn.xlen(DEFAULT_STREAM).await.unwrap()
}

/// Waits until the exporter has read the whole stream; its length.
async fn caught_up(running: &Running, url: &str) -> u64 {
    common::wait_until_async(
        "the exporter to read the whole stream",
        CATCH_UP,
        || async {
            let len = stream_len(url).await;
            (running.exporter.snapshot().events_processed >= len).then_some(len)
        },
    )
    .await
}

async fn stream_events(url: &str) -> Vec<LockEvent> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(DEFAULT_STREAM).await.unwrap();
    reply
        .ids
        .iter()
        .filter_map(|entry| {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = entry
                .map
                .iter()
                .filter_map(|(k, v)| {
                    let v: Vec<u8> = redis::from_redis_value_ref(v).ok()?;
                    Some((k.as_bytes().to_vec(), v))
                })
                .collect();
            LockEvent::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).ok()
        })
        .collect()
}

async fn pm003(url: &str, mode: BenchMode) -> LockBenchReport {
    LockBench {
        nodes: vec![url.to_string()],
        mode,
        clients: 8,
        keys: 2,
        duration: Duration::from_secs(3),
        ttl: Duration::from_millis(200),
        pauses: Some(PauseSchedule {
            every: 4,
            pause: Duration::from_millis(300),
        }),
        events: true,
        compare: None,
        colocated: true,
        connections: 2,
    }
    .run()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_lock_under_gc_pauses_raises_the_collision_counter() {
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let running = start_exporter(&url).await;
    let report = pm003(&url, BenchMode::Legacy).await;
    assert!(report.double_grants > 0, "the legacy lock granted twice");

    let len = caught_up(&running, &url).await;
    let body = scrape(running.addr).await;
    assert_eq!(
        sample(&body, "warroom_events_processed_total"),
        Some(len as f64)
    );
    let collisions = sample(&body, "warroom_lock_collisions_total{mode=\"legacy\"}").unwrap();
    assert!(collisions > 0.0, "collisions seen: {collisions}\n{body}");
    assert!(
        sample(&body, "warroom_lock_lease_overruns_total{mode=\"legacy\"}").unwrap() > 0.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "warroom_keyspace_notifications_enabled"),
        Some(1.0)
    );
    let grants = stream_events(&url)
        .await
        .iter()
        .filter(|e| e.kind == EventKind::Acquired)
        .count();
    assert_eq!(
        sample(&body, "warroom_lock_grants_total{mode=\"legacy\"}"),
        Some(grants as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_lock_under_gc_pauses_shows_overruns_and_rejections_but_no_stale_write() {
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let running = start_exporter(&url).await;
    let report = pm003(&url, BenchMode::Fenced).await;
    assert_eq!(
        report.stale_writes_accepted, 0,
        "the fence took a stale write"
    );
    assert_eq!(report.run.lost_updates, 0);

    let len = caught_up(&running, &url).await;
    let body = scrape(running.addr).await;
    assert_eq!(
        sample(&body, "warroom_events_processed_total"),
        Some(len as f64)
    );
    let overruns = sample(&body, "warroom_lock_lease_overruns_total{mode=\"fenced\"}").unwrap();
    assert!(overruns > 0.0, "{body}");
    let rejected_in_stream = stream_events(&url)
        .await
        .iter()
        .filter(|e| e.kind == EventKind::Rejected)
        .count();
    assert!(
        rejected_in_stream > 0,
        "the paused holders' writes were refused"
    );
    assert_eq!(
        sample(&body, "warroom_fencing_rejections_total{mode=\"fenced\"}"),
        Some(rejected_in_stream as f64)
    );
    assert_eq!(
        sample(&body, "warroom_lock_collisions_total{mode=\"fenced\"}"),
        Some(0.0),
        "a fenced successor is granted only after the lease ran out: no second believer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_neither_loses_nor_double_counts_and_metrics_stay_served() {
    let mut node = RedisNode::start_with(NodeOptions {
        append_only: true,
        ..NodeOptions::default()
    })
    .unwrap();
    let url = node.url();
    let running = start_exporter(&url).await;

    // Order services taking and giving back fenced leases the whole time,
    // counting the cycles that went through and those Redis did not answer.
    let stop = Arc::new(AtomicBool::new(false));
    let released = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let lock = FencedLock::connect(
            &url,
            LockOptions::new(Duration::from_secs(2), format!("pod-{w}")),
        )
        .await
        .unwrap();
        let (stop, released, failed) = (stop.clone(), released.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut cycles = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("lock:order:{}", cycles % 3);
                match lock.acquire(&key, Duration::from_millis(200)).await {
                    Ok(lease) => {
                        if lease.release().await.is_ok() {
                            released.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // A worker backs off before trying again.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                cycles += 1;
            }
        }));
    }
    let before = common::wait_until_async("the exporter to count events", CATCH_UP, || async {
        let processed = running.exporter.snapshot().events_processed;
        (processed >= 20).then_some(processed)
    })
    .await;

    node.kill().unwrap();
    // Redis is gone: /metrics is still served and says so.
    let down = common::wait_until_async("/metrics to say Redis is down", CATCH_UP, || async {
        let body = scrape(running.addr).await;
        (sample(&body, "warroom_redis_connected{connection=\"stream\"}") == Some(0.0))
            .then_some(body)
    })
    .await;
    assert_eq!(
        sample(&down, "warroom_redis_connected{connection=\"stream\"}"),
        Some(0.0),
        "{down}"
    );
    let health = reqwest::get(format!("http://{}/healthz", running.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.text().await.unwrap().contains("redis down"));

    // The workers have run into the outage before Redis comes back.
    let failed_before = failed.load(Ordering::Relaxed);
    common::wait_until_async("the workers to hit the outage", CATCH_UP, || async {
        (failed.load(Ordering::Relaxed) >= failed_before + 4).then_some(())
    })
    .await;
    node.restart().unwrap();
    // Back up: the exporter reads again and the workers write new events.
    let released_at_restart = released.load(Ordering::Relaxed);
    common::wait_until_async(
        "the exporter to reconnect and the workers to cycle again",
        CATCH_UP,
        || async {
            (running.exporter.snapshot().stream_connected
                && released.load(Ordering::Relaxed) >= released_at_restart + 20)
                .then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let len = caught_up(&running, &url).await;
    let snapshot = running.exporter.snapshot();
    assert!(
        snapshot.stream_connected,
        "reading resumed after the restart"
    );
    assert!(
        len > before,
        "events were written after the restart ({len} in the stream, {before} before)"
    );
    assert_eq!(
        snapshot.events_processed, len,
        "every entry in the stream counted exactly once"
    );
    let body = scrape(running.addr).await;
    assert_eq!(
        sample(&body, "warroom_redis_connected{connection=\"stream\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "warroom_events_processed_total"),
        Some(len as f64)
    );
    // The restarted Redis forgot CONFIG SET; the exporter turns it on again.
    common::wait_until_async("keyspace notifications back on", CATCH_UP, || async {
        running.exporter.snapshot().keyspace_enabled.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_and_garbage_in_the_stream_are_counted() {
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let running = start_exporter(&url).await;
    let sink = EventSink::connect(&url, EventStream::default())
        .await
        .unwrap();
    for i in 0..60 {
        sink.publish(LockEvent::app_error(
            "POST /v2/orders/fulfill",
            format!("order-svc-{}", i % 2),
            "503 from inventory",
        ));
    }
    assert!(sink.flush(Duration::from_secs(5)).await);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let garbage: [&[(&[u8], &[u8])]; 3] = [
        &[(b"v", b"2"), (b"kind", b"acquired")],
        &[(b"\xff\xfe", b"\x00\x01")],
        &[
            (b"v", b"1"),
            (b"kind", b"acquired"),
            (b"mode", b"fenced"),
            (b"key", b"k"),
            (b"holder", b"h"),
            (b"token", b"-1"),
        ],
    ];
    for fields in garbage {
        let _: String = conn.xadd(DEFAULT_STREAM, "*", fields).await.unwrap();
    }
    let len = caught_up(&running, &url).await;
    assert_eq!(len, 63);
    let body = scrape(running.addr).await;
    assert_eq!(sample(&body, "warroom_events_processed_total"), Some(63.0));
    assert_eq!(
        sample(&body, "warroom_app_errors_total{service=\"order-svc-0\"}"),
        Some(30.0)
    );
    assert_eq!(sample(&body, "warroom_app_errors_last_minute"), Some(60.0));
    assert_eq!(
        sample(&body, "warroom_bad_events_total{reason=\"version\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&body, "warroom_bad_events_total{reason=\"not_a_number\"}"),
        Some(1.0)
    );
}

fn field_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"v".to_vec()),
        Just(b"kind".to_vec()),
        Just(b"mode".to_vec()),
        Just(b"key".to_vec()),
        Just(b"holder".to_vec()),
        Just(b"token".to_vec()),
        Just(b"ttl_ms".to_vec()),
        Just(b"fence".to_vec()),
        Just(b"reason".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"1".to_vec()),
        Just(b"acquired".to_vec()),
        Just(b"released".to_vec()),
        Just(b"lost".to_vec()),
        Just(b"error".to_vec()),
        Just(b"legacy".to_vec()),
        Just(b"fenced".to_vec()),
        Just(b"lock:a".to_vec()),
        Just(b"18446744073709551615".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        prop::collection::vec(any::<u8>(), 0..1500),
    ]
}

/// A stream entry: its ID and its raw fields.
type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

fn entry() -> impl Strategy<Value = RawEntry> {
    (
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| format!("{ms}-{seq}")),
            ".{0,12}",
        ],
        prop::collection::vec((field_name(), field_value()), 0..10),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes and field values as stream entries: no panic, every
    /// entry processed, every invalid one counted as bad.
    #[test]
    fn arbitrary_entries_never_panic_and_bad_ones_are_counted(
        entries in prop::collection::vec(entry(), 1..40)
    ) {
        let exporter = Exporter::new(ExporterConfig::new("redis://127.0.0.1:1")).unwrap();
        let mut bad = 0u64;
        for (id, fields) in &entries {
            let pairs = || fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
            let id_ok = id
                .split_once('-')
                .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
            if !id_ok || LockEvent::from_fields(pairs()).is_err() {
                bad += 1;
            }
            exporter.apply_entry(id, pairs());
        }
        let snapshot = exporter.snapshot();
        prop_assert_eq!(snapshot.events_processed, entries.len() as u64);
        prop_assert_eq!(snapshot.bad_events, bad);
        let body = exporter.render();
        prop_assert!(body.ends_with("# EOF\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_to_expire_is_an_overrun_seen_from_the_expiry_notice() {
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let lock = FencedLock::connect(&url, LockOptions::new(Duration::from_millis(100), "pod-7f"))
        .await
        .unwrap();

    // Notifications off on the server and not allowed: the exporter says so
    // and changes nothing.
    let off = Exporter::new(ExporterConfig {
        keyspace_events: KeyspaceEvents::Off,
        start: StartFrom::Beginning,
        ..ExporterConfig::new(&url)
    })
    .unwrap();
    let _off_readers = off.spawn();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // The keyspace reader looks at the server's configuration when it
    // starts and every two seconds after: once it has looked twice, it has
    // decided (and would have changed the configuration if it were going to).
    common::wait_until_async(
        "the exporter to read the configuration twice",
        CATCH_UP,
        || async {
            (off.snapshot().stream_connected && config_reads(&mut conn.clone()).await >= 2)
                .then_some(())
        },
    )
    .await;
    assert!(!off.snapshot().keyspace_enabled);
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(flags[1], "", "--keyspace-events off left the server alone");

    // Allowed: the exporter turns them on and subscribes.
    let running = start_exporter(&url).await;
    common::wait_until_async(
        "the exporter to turn notifications on",
        CATCH_UP,
        || async { running.exporter.snapshot().keyspace_enabled.then_some(()) },
    )
    .await;

    // pod-7f takes the lock and stalls forever: no later event arrives, only
    // the key's expiry can tell.
    let lease = lock.try_acquire("lock:ord-9927431").await.unwrap().unwrap();
    common::wait_until_async("the expiry to show as an overrun", CATCH_UP, || async {
        (running.exporter.snapshot().lease_overruns > 0).then_some(())
    })
    .await;
    let body = scrape(running.addr).await;
    assert_eq!(
        sample(&body, "warroom_lock_lease_overruns_total{mode=\"fenced\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "warroom_lock_key_expirations_total"),
        Some(1.0)
    );
    assert_eq!(sample(&body, "warroom_lock_keys_held"), Some(0.0));
    drop(lease);
}

/// How many `CONFIG GET` the server has answered.
async fn config_reads(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_config|get:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// The Redis user the exporter reads as in the reconnect tests, so the test
/// can shut the exporter out (`ACL SETUSER … off`, `CLIENT KILL USER`) while
/// writers on the default user go on.
const READER: &str = "exporter-reader";

/// Creates the reader user on `node` and returns its URL and an admin
/// connection (default user).
async fn reader_url(node: &RedisNode) -> (String, redis::aio::MultiplexedConnection) {
    let client = redis::Client::open(node.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(READER)
        .arg("on")
        .arg(">reader-secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://{READER}:reader-secret@127.0.0.1:{}", node.port());
    (url, admin)
}

/// Waits until the exporter's stream connection is `up`.
async fn stream_connected(exporter: &Exporter, up: bool) {
    common::wait_until_async("the stream connection to change", CATCH_UP, || async {
        (exporter.snapshot().stream_connected == up).then_some(())
    })
    .await;
}

/// Drops the exporter's stream connection and keeps it out until
/// `while_out` has run, then lets it back in and waits until it is back.
async fn outage<F: std::future::Future<Output = ()>>(
    admin: &mut redis::aio::MultiplexedConnection,
    exporter: &Exporter,
    while_out: F,
) {
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(READER)
        .arg("off")
        .query_async(admin)
        .await
        .unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(READER)
        .query_async(admin)
        .await
        .unwrap();
    assert!(killed > 0, "the exporter's connection was dropped");
    stream_connected(exporter, false).await;
    while_out.await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(READER)
        .arg("on")
        .query_async(admin)
        .await
        .unwrap();
    stream_connected(exporter, true).await;
}

async fn newest_id(conn: &mut redis::aio::MultiplexedConnection) -> String {
    let reply: redis::streams::StreamRangeReply = conn
        .xrevrange_count(DEFAULT_STREAM, "+", "-", 1)
        .await
        .unwrap();
    reply.ids[0].id.clone()
}

/// Waits until the exporter has processed the stream's newest entry.
async fn read_up_to_newest(exporter: &Exporter, conn: &mut redis::aio::MultiplexedConnection) {
    let newest = newest_id(conn).await;
    common::wait_until_async(
        "the exporter to read the newest entry",
        CATCH_UP,
        || async {
            (exporter.snapshot().last_id.as_deref() == Some(newest.as_str())).then_some(())
        },
    )
    .await;
}

fn app_error(i: usize) -> LockEvent {
    LockEvent::app_error("POST /v2/orders/fulfill", format!("order-svc-{i}"), "503")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_latest_events_written_before_the_first_entry_is_read_are_not_skipped() {
    let node = RedisNode::start_with(NodeOptions {
        append_only: true,
        ..NodeOptions::default()
    })
    .unwrap();
    let (url, mut admin) = reader_url(&node).await;
    let sink = EventSink::connect(&node.url(), EventStream::default())
        .await
        .unwrap();
    // Already in the stream at start-up: reading from the latest skips them.
    const OLD: u64 = 5;
    for i in 0..OLD as usize {
        sink.publish(app_error(i));
    }
    assert!(sink.flush(Duration::from_secs(5)).await);

    let exporter = Exporter::new(ExporterConfig {
        start: StartFrom::Latest,
        ..ExporterConfig::new(&url)
    })
    .unwrap();
    let _readers = exporter.spawn_stream_only();
    stream_connected(&exporter, true).await;

    // The connection drops before any entry was read; events are written
    // while it is down.
    const DURING: u64 = 20;
    outage(&mut admin, &exporter, async {
        for i in 0..DURING as usize {
            sink.publish(app_error(i));
        }
        assert!(sink.flush(Duration::from_secs(5)).await);
    })
    .await;
    // One more after it is back, to know when reading has caught up.
    sink.publish(app_error(0));
    assert!(sink.flush(Duration::from_secs(5)).await);
    read_up_to_newest(&exporter, &mut admin).await;

    let len: u64 = admin.xlen(DEFAULT_STREAM).await.unwrap();
    assert_eq!(len, OLD + DURING + 1);
    let snapshot = exporter.snapshot();
    assert_eq!(
        snapshot.events_processed,
        DURING + 1,
        "every event written after start-up counted once, none from before"
    );
    assert_eq!(snapshot.app_errors, DURING + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_read_before_a_reconnect_is_counted_once() {
    let node = RedisNode::start().unwrap();
    let (url, mut admin) = reader_url(&node).await;
    const GARBAGE: u64 = 7;
    for i in 0..GARBAGE {
        let _: String = admin
            .xadd(DEFAULT_STREAM, "*", &[("v", "2"), ("n", &i.to_string())])
            .await
            .unwrap();
    }
    let exporter = Exporter::new(ExporterConfig {
        start: StartFrom::Beginning,
        ..ExporterConfig::new(&url)
    })
    .unwrap();
    let _readers = exporter.spawn_stream_only();
    read_up_to_newest(&exporter, &mut admin).await;
    assert_eq!(exporter.snapshot().bad_events, GARBAGE);

    outage(&mut admin, &exporter, async {}).await;
    let sink = EventSink::connect(&node.url(), EventStream::default())
        .await
        .unwrap();
    sink.publish(app_error(0));
    assert!(sink.flush(Duration::from_secs(5)).await);
    read_up_to_newest(&exporter, &mut admin).await;

    let snapshot = exporter.snapshot();
    assert_eq!(
        snapshot.bad_events, GARBAGE,
        "nothing re-read after the reconnect"
    );
    assert_eq!(snapshot.events_processed, GARBAGE + 1);
}
