//! The drill's order side with real parts: `warroom drill worker` processes
//! against a real `redis-server`, frozen with SIGSTOP past the lock TTL as
//! PM-003's GC pause froze `pod-7f`; `warroom reconcile` run as a process;
//! the gateway and the lock mode mirror against a real cluster store.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Commands;
use warroom::cluster::Store;
use warroom::cluster::seed::{DRILL_INGRESS, DRILL_LOCK_CONFIGMAP, DRILL_NAMESPACE, drill_objects};
use warroom::drill::gateway::{Gateway, GatewayConfig, LIMIT_RPS_ANNOTATION};
use warroom::drill::load::LoadCurve;
use warroom::drill::lock_mode::LockModeMirror;
use warroom::drill::orders::keys;
use warroom::drill::stats;
use warroom::redis_node::RedisNode;

const ORDER: &str = "ord-9927431";
const DEADLINE: Duration = Duration::from_secs(10);

/// A worker process and the lines it has printed.
struct Worker {
    child: Child,
    pod: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(url: &str, pod: &str, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warroom"));
        command
            .args(["drill", "worker"])
            .args(args)
            .env("WARROOM_REDIS_URL", url)
            .env("WARROOM_POD_NAME", pod)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("starts warroom drill worker");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let worker = Worker {
            child,
            pod: pod.to_string(),
            lines,
        };
        common::wait_until(&format!("{pod} ready"), DEADLINE, || {
            worker.has("worker ready").then_some(())
        });
        worker
    }

    fn has(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child this test owns.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to {}", self.pod);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_node() -> Option<RedisNode> {
    common::require_tool("redis-server", "redis-server")?;
    Some(RedisNode::start().expect("redis-server starts"))
}

fn connection(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

fn offer(conn: &mut redis::Connection, order: &str) {
    let _: String = redis::cmd("XADD")
        .arg(keys::ORDERS_STREAM)
        .arg("*")
        .arg("order")
        .arg(order)
        .arg("offered_us")
        .arg(warroom::drill::orders::now_us())
        .query(conn)
        .unwrap();
}

fn reconcile(url: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom"))
            .args(["reconcile", "--output", "json"])
            .args(extra)
            .env("WARROOM_REDIS_URL", url),
        Duration::from_secs(30),
    );
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reconcile printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// Everything a repair could change, to compare before and after.
fn snapshot(conn: &mut redis::Connection, order: &str) -> Vec<String> {
    let mut out = Vec::new();
    let order_hash: Vec<(String, String)> = conn.hgetall(keys::order(order)).unwrap();
    out.push(format!("{order_hash:?}"));
    let res: Vec<String> = conn.lrange(keys::reservations(order), 0, -1).unwrap();
    out.push(format!("{res:?}"));
    let ful: Vec<String> = conn.lrange(keys::fulfillments(order), 0, -1).unwrap();
    out.push(format!("{ful:?}"));
    let audit: usize = conn.xlen(keys::audit(order)).unwrap();
    out.push(format!("audit {audit}"));
    let mut stock: Vec<(String, i64)> = conn.hgetall(keys::LOT_STOCK).unwrap();
    stock.sort();
    out.push(format!("{stock:?}"));
    out
}

const PAUSE_ARGS: &[&str] = &[
    "--lock-ttl-ms",
    "200",
    "--claim-idle-ms",
    "150",
    "--work-ms",
    "50",
    "--concurrency",
    "2",
];

/// PM-003's schedule on one order: two workers; the one that takes the
/// lock is frozen right after (a GC pause); past the TTL the other takes
/// the order over (redelivery) and the lock; then the frozen one wakes,
/// still believing it holds the lock. Returns the two workers (the frozen
/// one first) once both are done with the order.
fn pause_holder_past_ttl(url: &str, mode: &str, env: &[(&str, &str)]) -> (Worker, Worker) {
    let mut conn = connection(url);
    let _: () = conn.set(keys::LOCK_MODE, mode).unwrap();
    let a = Worker::start(url, "order-service-6b9d-7f", PAUSE_ARGS, env);
    let b = Worker::start(url, "order-service-6b9d-3c", PAUSE_ARGS, env);
    offer(&mut conn, ORDER);
    let acquired = format!("LOCK ACQUIRED order_id={ORDER}");
    let first = common::wait_until("a worker takes the lock", DEADLINE, || {
        if a.has(&acquired) {
            Some(0)
        } else if b.has(&acquired) {
            Some(1)
        } else {
            None
        }
    });
    let (frozen, other) = if first == 0 { (a, b) } else { (b, a) };
    frozen.signal(libc::SIGSTOP);
    common::wait_until("the other worker takes the order over", DEADLINE, || {
        other.has(&acquired).then_some(())
    });
    frozen.signal(libc::SIGCONT);
    common::wait_until("both workers are done with the order", DEADLINE, || {
        let done = |w: &Worker| {
            w.has(&format!("LOCK RELEASED order_id={ORDER}"))
                || w.has(&format!("LOCK LOST order_id={ORDER}"))
        };
        (done(&frozen) && done(&other)).then_some(())
    });
    (frozen, other)
}

#[test]
fn legacy_lock_lets_a_paused_holder_corrupt_the_order_and_reconcile_repairs_it() {
    let Some(node) = redis_node() else { return };
    let url = node.url();
    let (frozen, other) = pause_holder_past_ttl(&url, "legacy", &[]);
    // PM-003's log: two workers hold the lock on one order.
    assert!(
        frozen.has(&format!("LOCK ACQUIRED order_id={ORDER} worker=pod-7f"))
            || frozen.has(&format!("LOCK ACQUIRED order_id={ORDER} worker=pod-3c"))
    );
    assert!(!frozen.has("FENCE REJECTED") && !other.has("FENCE REJECTED"));

    let (code, found) = reconcile(&url, &[]);
    assert_eq!(code, 1, "inconsistencies found: exit 1; {found}");
    assert!(found["inconsistent"].as_u64().unwrap() >= 1, "{found}");
    let finding = &found["orders"][0];
    assert_eq!(finding["order"], ORDER);
    let problems = finding["problems"].to_string();
    assert!(
        problems.contains("two_lots") || problems.contains("two_fulfillments"),
        "{problems}\n{}\n{}",
        frozen.log(),
        other.log()
    );

    let (code, repaired) = reconcile(&url, &["--repair"]);
    assert_eq!(code, 0, "{repaired}");
    assert_eq!(repaired["repaired"], 1, "{repaired}");
    let mut conn = connection(&url);
    let lots: Vec<String> = conn.lrange(keys::reservations(ORDER), 0, -1).unwrap();
    assert_eq!(lots.len(), 1);
    let audit: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(keys::audit(ORDER))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert!(
        format!("{audit:?}").contains("repairs"),
        "repairs are in the audit log"
    );

    let before = snapshot(&mut conn, ORDER);
    let (code, again) = reconcile(&url, &["--repair"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["inconsistent"], 0, "{again}");
    assert_eq!(again["repaired"], 0, "{again}");
    assert_eq!(
        snapshot(&mut conn, ORDER),
        before,
        "a second repair changes nothing"
    );
}

fn fenced_mode_refuses_the_paused_holder(mode: &str, env: &[(&str, &str)]) {
    let Some(node) = redis_node() else { return };
    let url = node.url();
    let (frozen, _other) = pause_holder_past_ttl(&url, mode, env);
    assert!(frozen.has(&format!("mode={mode}")), "{}", frozen.log());
    common::wait_until("the stale holder's write is refused", DEADLINE, || {
        frozen
            .has(&format!("FENCE REJECTED order_id={ORDER}"))
            .then_some(())
    });
    let mut conn = connection(&url);
    let rejections: u64 = conn.get(stats::FENCE_REJECTIONS).unwrap();
    assert!(rejections >= 1);
    let (code, found) = reconcile(&url, &[]);
    assert_eq!(code, 0, "{found}");
    assert_eq!(found["inconsistent"], 0, "{found}");
    let lots: Vec<String> = conn.lrange(keys::reservations(ORDER), 0, -1).unwrap();
    assert_eq!(lots.len(), 1, "one lot reserved");
    let status: String = conn.hget(keys::order(ORDER), "status").unwrap();
    assert_eq!(status, "FULFILLED");
}

#[test]
fn fenced_lock_refuses_the_paused_holder_and_nothing_is_corrupted() {
    fenced_mode_refuses_the_paused_holder("fenced", &[]);
}

#[test]
fn redlock_refuses_the_paused_holder_and_nothing_is_corrupted() {
    let Some(_) = common::require_tool("redis-server", "redis-server") else {
        return;
    };
    let nodes: Vec<RedisNode> = (0..3).map(|_| RedisNode::start().unwrap()).collect();
    let urls = nodes
        .iter()
        .map(RedisNode::url)
        .collect::<Vec<_>>()
        .join(",");
    fenced_mode_refuses_the_paused_holder("redlock", &[("WARROOM_REDLOCK_URLS", &urls)]);
}

#[test]
fn sigterm_finishes_the_order_and_releases_its_lock() {
    let Some(node) = redis_node() else { return };
    let url = node.url();
    let mut conn = connection(&url);
    let _: () = conn.set(keys::LOCK_MODE, "fenced").unwrap();
    let mut worker = Worker::start(
        &url,
        "order-service-6b9d-7f",
        &["--lock-ttl-ms", "10000", "--work-ms", "300"],
        &[],
    );
    offer(&mut conn, ORDER);
    common::wait_until("the worker takes the lock", DEADLINE, || {
        worker.has("LOCK ACQUIRED").then_some(())
    });
    worker.signal(libc::SIGTERM);
    let status = common::wait_until("the worker exits", DEADLINE, || {
        worker.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}\n{}", worker.log());
    assert!(
        worker.has(&format!("LOCK RELEASED order_id={ORDER}")),
        "{}",
        worker.log()
    );
    let held: bool = conn.exists(keys::lock(ORDER)).unwrap();
    assert!(!held, "the lock key is gone");
    let status: String = conn.hget(keys::order(ORDER), "status").unwrap();
    assert_eq!(status, "FULFILLED");
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(keys::ORDERS_STREAM)
        .arg(keys::CONSUMER_GROUP)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        pending.first(),
        Some(&redis::Value::Int(0)),
        "the order was acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_mode_follows_the_configmap_live() {
    let Some(node) = redis_node() else { return };
    let url = node.url();
    let store = Store::new();
    for object in drill_objects() {
        store.put(object).unwrap();
    }
    let conn = warroom::lock::connect(&url, None, false).await.unwrap();
    let mirror = LockModeMirror::start(store.clone(), conn);
    let mut sync = connection(&url);
    common::wait_until_async("the mode reaches Redis", DEADLINE, || {
        let mode: Option<String> = sync.get(keys::LOCK_MODE).unwrap();
        async move { (mode.as_deref() == Some("legacy")).then_some(()) }
    })
    .await;
    let url2 = url.clone();
    let worker = tokio::task::spawn_blocking(move || {
        Worker::start(&url2, "order-service-6b9d-7f", &["--work-ms", "0"], &[])
    })
    .await
    .unwrap();
    offer(&mut sync, "ord-1000001");
    common::wait_until_async("an order under the legacy lock", DEADLINE, || {
        let ok = worker.has("order_id=ord-1000001 worker=pod-7f mode=legacy");
        async move { ok.then_some(()) }
    })
    .await;

    // What the playbook's step does: patch the ConfigMap.
    let mut cm = store
        .get(
            "v1",
            "ConfigMap",
            Some(DRILL_NAMESPACE),
            DRILL_LOCK_CONFIGMAP,
        )
        .unwrap();
    cm["data"]["LOCK_MODE"] = "fenced".into();
    store.put(cm).unwrap();
    common::wait_until_async("the worker logs the switch", DEADLINE, || {
        let ok = worker.has("LOCK MODE legacy -> fenced worker=pod-7f");
        async move { ok.then_some(()) }
    })
    .await;
    offer(&mut sync, "ord-1000002");
    common::wait_until_async("the next order under the fenced lock", DEADLINE, || {
        let ok = worker.has("order_id=ord-1000002 worker=pod-7f mode=fenced");
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(
        mirror.history(),
        vec![
            warroom::lock::LockMode::Legacy,
            warroom::lock::LockMode::Fenced
        ]
    );

    // An unknown mode leaves the workers where they are.
    let mut cm = store
        .get(
            "v1",
            "ConfigMap",
            Some(DRILL_NAMESPACE),
            DRILL_LOCK_CONFIGMAP,
        )
        .unwrap();
    cm["data"]["LOCK_MODE"] = "zookeeper".into();
    store.put(cm).unwrap();
    offer(&mut sync, "ord-1000003");
    common::wait_until_async("an order after the bad value", DEADLINE, || {
        let ok = worker.has("order_id=ord-1000003 worker=pod-7f mode=fenced");
        async move { ok.then_some(()) }
    })
    .await;
    let mode: String = sync.get(keys::LOCK_MODE).unwrap();
    assert_eq!(mode, "fenced");
    let modes = stats::read(&mut warroom::lock::connect(&url, None, false).await.unwrap())
        .await
        .unwrap()
        .lock_modes;
    assert_eq!(modes, vec!["legacy", "fenced"]);
    mirror.stop();
}

fn annotate(store: &Store, limit: Option<&str>) {
    let mut ingress = store
        .get(
            "networking.k8s.io/v1",
            "Ingress",
            Some(DRILL_NAMESPACE),
            DRILL_INGRESS,
        )
        .unwrap();
    match limit {
        Some(v) => {
            ingress["metadata"]["annotations"] = serde_json::json!({ LIMIT_RPS_ANNOTATION: v })
        }
        None => {
            if let Some(m) = ingress["metadata"].as_object_mut() {
                m.remove("annotations");
            }
        }
    }
    store.put(ingress).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limit_rejects_and_counts_every_order() {
    let Some(node) = redis_node() else { return };
    let url = node.url();
    let store = Store::new();
    for object in drill_objects() {
        store.put(object).unwrap();
    }
    annotate(&store, Some("10"));
    let conn = warroom::lock::connect(&url, None, false).await.unwrap();
    // At the peak from the start: 4,200 orders/min = 70/s against 10/s.
    let curve = LoadCurve::new(10.0, 1e9, 1);
    let gateway = Gateway::start(conn, Some(store.clone()), GatewayConfig::new(curve, 1));
    common::wait_until_async("orders over the limit are rejected", DEADLINE, || {
        let s = gateway.stats();
        async move { (s.rejected >= 50 && s.limit_rps == Some(10)).then_some(()) }
    })
    .await;
    // The limit is lifted live: everything offered is received again.
    annotate(&store, None);
    let rejected = common::wait_until_async("the limit is lifted", DEADLINE, || {
        let s = gateway.stats();
        async move { s.limit_rps.is_none().then_some(s.rejected) }
    })
    .await;
    let received = gateway.stats().received;
    common::wait_until_async("orders flow unlimited", DEADLINE, || {
        let s = gateway.stats();
        async move { (s.received >= received + 100).then_some(()) }
    })
    .await;
    let stats = gateway.stop().await;
    assert_eq!(
        stats.rejected, rejected,
        "no rejections without a limit: {stats:?}"
    );
    assert_eq!(stats.failed, 0);
    assert_eq!(
        stats.offered,
        stats.received + stats.rejected + stats.failed,
        "{stats:?}"
    );
    let mut sync = connection(&url);
    let len: u64 = sync.xlen(keys::ORDERS_STREAM).unwrap();
    assert_eq!(len, stats.received, "every received order is in the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_offers_spike_times_the_baseline_wall_clock_rate_at_the_peak() {
    let Some(node) = redis_node() else { return };
    let url = node.url();
    let conn = warroom::lock::connect(&url, None, false).await.unwrap();
    // Speed so high that the 40-minute ramp is over at once: the peak.
    let curve = LoadCurve::new(10.0, 1e9, 4);
    let gateway = Gateway::start(conn, None, GatewayConfig::new(curve.clone(), 4));
    let started = gateway.started();
    common::wait_until_async("a few hundred orders", DEADLINE, || {
        let s = gateway.stats();
        async move { (s.offered >= 300).then_some(()) }
    })
    .await;
    let stats = gateway.stop().await;
    let elapsed = started.elapsed().as_secs_f64();
    // Offers follow the integral of the rate over the gateway's own clock:
    // at most one tick's worth behind when it stopped, never ahead.
    let expected = 4_200.0 / 60.0 * elapsed;
    assert!(
        stats.offered as f64 <= expected + 1.0 && stats.offered as f64 >= expected - 70.0 * 0.2,
        "offered {} in {elapsed:.2}s, expected {expected:.0}",
        stats.offered
    );
    assert_eq!(stats.rejected, 0);
    assert_eq!(stats.received, stats.offered);
}

/// The drill's pause target for worker processes the test owns.
struct Processes {
    pods: Vec<(String, u32)>,
}

impl warroom::drill::pauses::PauseTarget for Processes {
    fn pods(&self) -> Vec<String> {
        self.pods.iter().map(|(name, _)| name.clone()).collect()
    }

    async fn pause(&self, pod: &str, length: Duration) {
        let Some((_, pid)) = self.pods.iter().find(|(name, _)| name == pod) else {
            return;
        };
        let pid = *pid as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child this test owns.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        tokio::time::sleep(length).await;
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
}

/// A short drill at the 10x peak with GC pauses: the gateway, three
/// workers and the pause schedule, until `done` holds for the reconcile
/// scan and the workers' numbers, or the deadline.
async fn peak_with_gc_pauses(
    mode: &str,
    done: impl Fn(&warroom::drill::reconcile::ReconcileReport, &stats::OrderStats) -> bool,
) -> (
    warroom::drill::reconcile::ReconcileReport,
    stats::OrderStats,
) {
    let node = redis_node().expect("checked by the caller");
    let url = node.url();
    let mut sync = connection(&url);
    let _: () = sync.set(keys::LOCK_MODE, mode).unwrap();
    let mut workers = Vec::new();
    for pod in [
        "order-service-6b9d-7f",
        "order-service-6b9d-3c",
        "order-service-6b9d-a1",
    ] {
        let url = url.clone();
        workers.push(
            tokio::task::spawn_blocking(move || Worker::start(&url, pod, &[], &[]))
                .await
                .unwrap(),
        );
    }
    let target = Arc::new(Processes {
        pods: workers
            .iter()
            .map(|w| (w.pod.clone(), w.child.id()))
            .collect(),
    });
    let curve = LoadCurve::new(10.0, 1e9, 11);
    let mut conn = warroom::lock::connect(&url, None, false).await.unwrap();
    let gateway = Gateway::start(conn.clone(), None, GatewayConfig::new(curve.clone(), 11));
    let pauser = warroom::drill::pauses::Pauser::start(
        target,
        warroom::drill::pauses::PauseSchedule::new(curve, 11),
    );
    let result = common::wait_until_async("the drill's outcome", Duration::from_secs(40), || {
        let mut conn = conn.clone();
        let done = &done;
        async move {
            let report = warroom::drill::reconcile::scan(&mut conn).await.unwrap();
            let numbers = stats::read(&mut conn).await.unwrap();
            done(&report, &numbers).then_some((report, numbers))
        }
    })
    .await;
    let paused = pauser.stop().await;
    assert!(paused.paused > 0 && paused.longest_ms >= 280, "{paused:?}");
    gateway.stop().await;
    // Every worker was resumed: none is left stopped.
    for w in &workers {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.child.id())).unwrap();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        assert_ne!(state, "T", "{} left stopped", w.pod);
    }
    let final_scan = warroom::drill::reconcile::scan(&mut conn).await.unwrap();
    drop(workers);
    (final_scan.max_by_inconsistent(result.0), result.1)
}

trait MaxByInconsistent {
    fn max_by_inconsistent(self, other: Self) -> Self;
}

impl MaxByInconsistent for warroom::drill::reconcile::ReconcileReport {
    fn max_by_inconsistent(self, other: Self) -> Self {
        if other.inconsistent > self.inconsistent {
            other
        } else {
            self
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_drill_at_the_peak_with_gc_pauses_corrupts_orders() {
    if common::require_tool("redis-server", "redis-server").is_none() {
        return;
    }
    let (report, numbers) =
        peak_with_gc_pauses("legacy", |r, n| r.inconsistent >= 1 && n.processed >= 200).await;
    assert!(report.inconsistent >= 1, "{report:?}");
    assert_eq!(numbers.fencing_rejections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_drill_at_the_peak_with_gc_pauses_corrupts_nothing() {
    if common::require_tool("redis-server", "redis-server").is_none() {
        return;
    }
    let (report, numbers) = peak_with_gc_pauses("fenced", |r, n| {
        r.inconsistent > 0 || (n.fencing_rejections >= 1 && n.processed >= 200)
    })
    .await;
    assert_eq!(report.inconsistent, 0, "{report:?}");
    assert!(numbers.fencing_rejections >= 1, "{numbers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_drill_at_the_peak_with_gc_pauses_corrupts_nothing() {
    if common::require_tool("redis-server", "redis-server").is_none() {
        return;
    }
    let (report, numbers) = peak_with_gc_pauses("watch", |r, n| {
        r.inconsistent > 0 || (n.processed >= 300 && n.latency_ms.count >= 300)
    })
    .await;
    assert_eq!(report.inconsistent, 0, "{report:?}");
    assert_eq!(numbers.lock_modes, vec!["watch"]);
    assert!(numbers.latency_ms.p50 > 0.0 && numbers.latency_ms.p99 >= numbers.latency_ms.p50);
}

#[test]
fn bad_worker_environment_is_refused_with_the_documented_codes() {
    let run = |env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warroom"));
        command
            .args(["drill", "worker"])
            .env_remove("WARROOM_REDIS_URL");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = common::output_within(&mut command, Duration::from_secs(30));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("WARROOM_REDIS_URL is not set"), "{err}");
    let (code, err) = run(&[("WARROOM_REDIS_URL", "http://nope")]);
    assert_eq!(code, Some(2), "{err}");
    // Nothing listens on port 1; the password never shows.
    let (code, err) = run(&[("WARROOM_REDIS_URL", "redis://:hunter2secret@127.0.0.1:1")]);
    assert_eq!(code, Some(4), "{err}");
    assert!(!err.contains("hunter2secret"), "{err}");
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom")).args(["drill", "worker", "--concurrency", "0"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn reconcile_refuses_bad_urls_and_unreachable_redis() {
    let run = |url: &str| {
        let out = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_warroom")).args(["reconcile", "--redis", url]),
            Duration::from_secs(30),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("postgres://db");
    assert_eq!(code, Some(2), "{err}");
    let (code, err) = run("redis://:hunter2secret@127.0.0.1:1");
    assert_eq!(code, Some(4), "{err}");
    assert!(!err.contains("hunter2secret"), "{err}");
}

/// Writes an order's records and audit log as the pipeline would have.
fn write_order(
    conn: &mut redis::Connection,
    order: &str,
    status: &str,
    lots: &[&str],
    fulfillments: &[(&str, &str)],
    audit: &[(&str, &str, &str, &str)],
) {
    let _: () = conn.sadd(keys::ORDER_INDEX, order).unwrap();
    let _: () = conn
        .hset_multiple(
            keys::order(order),
            &[
                ("status", status),
                ("lot", lots.last().copied().unwrap_or("")),
                ("fulfillment", fulfillments.last().map_or("", |f| f.0)),
            ],
        )
        .unwrap();
    for lot in lots {
        let _: () = conn.rpush(keys::reservations(order), *lot).unwrap();
        let _: i64 = conn.hincr(keys::LOT_STOCK, *lot, -1).unwrap();
    }
    for (fid, lot) in fulfillments {
        let _: () = conn.rpush(keys::fulfillments(order), *fid).unwrap();
        let _: () = conn
            .hset_multiple(
                keys::fulfillment(fid),
                &[("order", order), ("lot", lot), ("state", "active")],
            )
            .unwrap();
    }
    for (table, event, value, holder) in audit {
        let _: String = conn
            .xadd(
                keys::audit(order),
                "*",
                &[
                    ("table", *table),
                    ("event", *event),
                    ("value", *value),
                    ("holder", *holder),
                    ("token", ""),
                ],
            )
            .unwrap();
    }
}

#[test]
fn reconcile_repairs_the_unambiguous_and_lists_what_a_person_must_decide() {
    let Some(node) = redis_node() else { return };
    let url = node.url();
    let mut conn = connection(&url);
    for n in 0..4 {
        let lot = format!("lot-000{n}");
        let _: () = conn.hset(keys::LOT_INITIAL, &lot, 100).unwrap();
        let _: () = conn.hset(keys::LOT_STOCK, &lot, 100).unwrap();
    }
    // PM-003: pod-3c completed first; pod-7f woke from its pause and wrote again.
    write_order(
        &mut conn,
        "ord-9927431",
        "FULFILLED",
        &["lot-0001", "lot-0002"],
        &[("ful-b", "lot-0001"), ("ful-a", "lot-0002")],
        &[
            ("order_events", "status", "PROCESSING", "pod-7f"),
            ("order_events", "status", "PROCESSING", "pod-3c"),
            ("inventory_events", "reserve", "lot-0001", "pod-3c"),
            ("fulfillment_events", "fulfill", "ful-b", "pod-3c"),
            ("order_events", "status", "FULFILLED", "pod-3c"),
            ("inventory_events", "reserve", "lot-0002", "pod-7f"),
            ("fulfillment_events", "fulfill", "ful-a", "pod-7f"),
            ("order_events", "status", "FULFILLED", "pod-7f"),
        ],
    );
    // Two writers, neither finished: which lot ships is a person's call.
    write_order(
        &mut conn,
        "ord-9927432",
        "PROCESSING",
        &["lot-0003", "lot-0000"],
        &[("ful-c", "lot-0003"), ("ful-d", "lot-0000")],
        &[
            ("order_events", "status", "PROCESSING", "pod-7f"),
            ("inventory_events", "reserve", "lot-0003", "pod-7f"),
            ("order_events", "status", "PROCESSING", "pod-3c"),
            ("inventory_events", "reserve", "lot-0000", "pod-3c"),
            ("fulfillment_events", "fulfill", "ful-c", "pod-7f"),
            ("fulfillment_events", "fulfill", "ful-d", "pod-3c"),
        ],
    );
    // Three units of lot-0000 left the shelf with no reservation to show.
    let _: i64 = conn.hincr(keys::LOT_STOCK, "lot-0000", -3).unwrap();

    let (code, found) = reconcile(&url, &[]);
    assert_eq!(code, 1, "{found}");
    assert_eq!(found["inconsistent"], 2, "{found}");
    assert_eq!(found["repairable"], 1, "{found}");
    assert_eq!(found["ambiguous"], 1, "{found}");
    assert_eq!(found["lots_mismatched"], 1, "{found}");
    assert_eq!(found["lots"][0]["lot"], "lot-0000");

    let (code, repaired) = reconcile(&url, &["--repair"]);
    assert_eq!(
        code, 1,
        "the ambiguous order and the lot remain: {repaired}"
    );
    assert_eq!(repaired["repaired"], 1, "{repaired}");
    let by_order = |report: &serde_json::Value, order: &str| {
        report["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["order"] == order)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    let ambiguous = by_order(&repaired, "ord-9927432");
    assert_eq!(ambiguous["action"], "ambiguous");
    assert!(
        ambiguous["decide"]
            .as_str()
            .unwrap()
            .contains("no worker completed")
    );
    // The kept chain is pod-3c's, the first to reach FULFILLED.
    let lots: Vec<String> = conn
        .lrange(keys::reservations("ord-9927431"), 0, -1)
        .unwrap();
    assert_eq!(lots, vec!["lot-0001"]);
    let stock: i64 = conn.hget(keys::LOT_STOCK, "lot-0002").unwrap();
    assert_eq!(stock, 100, "the released reservation is restocked");
    let state: String = conn.hget(keys::fulfillment("ful-a"), "state").unwrap();
    assert_eq!(state, "cancelled");
    let kept: String = conn
        .hget(keys::order("ord-9927431"), "fulfillment")
        .unwrap();
    assert_eq!(kept, "ful-b");

    let before = [
        snapshot(&mut conn, "ord-9927431"),
        snapshot(&mut conn, "ord-9927432"),
    ];
    let (code, again) = reconcile(&url, &["--repair"]);
    assert_eq!(code, 1, "{again}");
    assert_eq!(again["repaired"], 0, "{again}");
    assert_eq!(
        again["inconsistent"], 1,
        "only the ambiguous order: {again}"
    );
    let after = [
        snapshot(&mut conn, "ord-9927431"),
        snapshot(&mut conn, "ord-9927432"),
    ];
    assert_eq!(after, before, "a second repair changes nothing");
}
