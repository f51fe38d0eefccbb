//! The lock client and the fenced store against real `redis-server` processes.
//!
//! The PM-003 schedule: a holder takes a 200 ms lease, stalls for 300 ms (a GC
//! pause) while holding it, then writes.

mod common;

use std::time::Duration;

use redis::AsyncCommands;
use warroom::fence::{Claim, FencedStore, WriteOutcome};
use warroom::lock::event::{EventKind, LockEvent};
use warroom::lock::legacy::LegacyLock;
use warroom::lock::{
    EventStream, FencedLock, FencingToken, LockError, LockOptions, Redlock, Release, WatchSession,
};
use warroom::redis_node::{NodeOptions, RedisNode};

const TTL: Duration = Duration::from_millis(200);
const GC_PAUSE: Duration = Duration::from_millis(300);

fn opts(holder: &str) -> LockOptions {
    LockOptions::new(TTL, holder)
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn events(url: &str) -> Vec<LockEvent> {
    let mut c = conn(url).await;
    let reply: redis::streams::StreamRangeReply = c
        .xrange_all(warroom::lock::event::DEFAULT_STREAM)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = entry
                .map
                .iter()
                .map(|(k, v)| {
                    let v: Vec<u8> = redis::from_redis_value_ref(v).unwrap();
                    (k.as_bytes().to_vec(), v)
                })
                .collect();
            LockEvent::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn fenced_lock_grants_one_holder_and_tokens_increase() {
    let node = RedisNode::start().unwrap();
    let a = FencedLock::connect(&node.url(), opts("pod-7f"))
        .await
        .unwrap();
    let b = FencedLock::connect(&node.url(), opts("pod-3c"))
        .await
        .unwrap();

    let first = a
        .try_acquire("lock:order:1")
        .await
        .unwrap()
        .expect("free key");
    let first_token = first.token().get();
    assert!(b.try_acquire("lock:order:1").await.unwrap().is_none());
    assert!(first.is_valid());
    assert!(first.remaining() <= TTL);
    assert_eq!(first.release().await.unwrap(), Release::Released);

    let second = b
        .try_acquire("lock:order:1")
        .await
        .unwrap()
        .expect("released key");
    let second_token = second.token().get();
    // The refused attempt in between burned a number: tokens are strictly
    // increasing, not dense.
    assert!(
        second_token > first_token,
        "{second_token} after {first_token}"
    );
    second.release().await.unwrap();

    let kinds: Vec<(EventKind, String, Option<u64>)> = events(&node.url())
        .await
        .into_iter()
        .map(|e| (e.kind, e.holder, e.token))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Acquired, "pod-7f".into(), Some(first_token)),
            (EventKind::Released, "pod-7f".into(), Some(first_token)),
            (EventKind::Acquired, "pod-3c".into(), Some(second_token)),
            (EventKind::Released, "pod-3c".into(), Some(second_token)),
        ]
    );
}

#[tokio::test]
async fn acquire_waits_with_backoff_and_times_out() {
    let node = RedisNode::start().unwrap();
    let a = FencedLock::connect(&node.url(), opts("pod-7f"))
        .await
        .unwrap();
    let b = FencedLock::connect(&node.url(), opts("pod-3c"))
        .await
        .unwrap();
    let held = a
        .acquire("lock:order:2", Duration::from_secs(1))
        .await
        .unwrap();
    // The holder's key expires after its TTL, so a patient waiter gets it.
    let next = b
        .acquire("lock:order:2", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(next.token() > held.token());
    assert!(!held.is_valid());
    assert!(matches!(held.check(), Err(LockError::LeaseLost { .. })));
    // An impatient waiter does not.
    let err = a
        .acquire("lock:order:2", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn legacy_lock_grants_twice_during_gc_pause() {
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let store = FencedStore::connect(&url, "order-svc", None).await.unwrap();
    let pod_7f = LegacyLock::connect(&url, opts("pod-7f")).await.unwrap();
    let pod_3c = LegacyLock::connect(&url, opts("pod-3c")).await.unwrap();
    let pod_9a = LegacyLock::connect(&url, opts("pod-9a")).await.unwrap();

    let first = pod_7f
        .try_acquire("lock:ord-9927431")
        .await
        .unwrap()
        .expect("free");
    // pod-7f stalls while it believes it holds the lock: the pause is what is
    // under test.
    tokio::time::sleep(GC_PAUSE).await;
    let second = pod_3c
        .try_acquire("lock:ord-9927431")
        .await
        .unwrap()
        .expect("the key expired under pod-7f, so pod-3c is granted too");
    store
        .write_unfenced("order:ord-9927431", "FULFILLED by pod-3c")
        .await
        .unwrap();
    // pod-7f wakes up and writes: nothing stops it.
    store
        .write_unfenced("order:ord-9927431", "PROCESSING by pod-7f")
        .await
        .unwrap();
    assert_eq!(
        store
            .read("order:ord-9927431")
            .await
            .unwrap()
            .value
            .as_deref(),
        Some("PROCESSING by pod-7f"),
        "the stale holder's write landed over the current holder's"
    );
    // Its unconditional DEL removes pod-3c's lock, and a third holder enters.
    pod_7f.release(first).await.unwrap();
    assert!(
        pod_9a
            .try_acquire("lock:ord-9927431")
            .await
            .unwrap()
            .is_some()
    );
    pod_3c.release(second).await.unwrap();
}

#[tokio::test]
async fn fenced_store_rejects_stale_holder() {
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let events_on = Some(EventStream::default());
    let store_7f = FencedStore::connect(&url, "pod-7f", events_on.clone())
        .await
        .unwrap();
    let store_3c = FencedStore::connect(&url, "pod-3c", events_on)
        .await
        .unwrap();
    let pod_7f = FencedLock::connect(&url, opts("pod-7f")).await.unwrap();
    let pod_3c = FencedLock::connect(&url, opts("pod-3c")).await.unwrap();
    let record = "order:ord-9927431";

    let first = pod_7f
        .try_acquire("lock:ord-9927431")
        .await
        .unwrap()
        .unwrap();
    let (first_token, second_token);
    first_token = first.token();
    assert!(matches!(
        store_7f
            .read_for_update(record, first.token())
            .await
            .unwrap(),
        Claim::Claimed { value: None, .. }
    ));
    // pod-7f stalls past its TTL while it believes it holds the lock: the
    // pause is what is under test.
    tokio::time::sleep(GC_PAUSE).await;
    assert!(!first.is_valid(), "the lease knows its deadline passed");

    let second = pod_3c
        .try_acquire("lock:ord-9927431")
        .await
        .unwrap()
        .unwrap();
    second_token = second.token();
    assert!(second.token() > first.token());
    assert!(matches!(
        store_3c
            .read_for_update(record, second.token())
            .await
            .unwrap(),
        Claim::Claimed { .. }
    ));
    // A claim with the old token is refused too.
    assert_eq!(
        store_7f
            .read_for_update(record, first.token())
            .await
            .unwrap(),
        Claim::Rejected {
            fence: second.token().get()
        }
    );
    // pod-7f ignores its deadline (it was paused between check and write):
    // the store refuses it even before pod-3c has written anything.
    assert_eq!(
        store_7f
            .write(record, first.token(), "PROCESSING")
            .await
            .unwrap(),
        WriteOutcome::Rejected {
            fence: second.token().get()
        }
    );
    assert!(
        store_3c
            .write(record, second.token(), "FULFILLED")
            .await
            .unwrap()
            .is_accepted()
    );
    // A holder may write again under the same lease.
    assert!(
        store_3c
            .write(record, second.token(), "FULFILLED+email")
            .await
            .unwrap()
            .is_accepted()
    );
    // The stale holder's release does not delete the successor's key.
    assert_eq!(first.release().await.unwrap(), Release::AlreadyLost);
    assert!(
        pod_7f
            .try_acquire("lock:ord-9927431")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(second.release().await.unwrap(), Release::Released);

    let record_now = store_3c.read(record).await.unwrap();
    assert_eq!(record_now.value.as_deref(), Some("FULFILLED+email"));
    let rejected: Vec<LockEvent> = events(&url)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::Rejected)
        .collect();
    assert_eq!(rejected.len(), 2, "the refused claim and the refused write");
    assert_eq!(rejected[0].holder, "pod-7f");
    assert_eq!(rejected[0].token, Some(first_token.get()));
    assert_eq!(rejected[0].fence, Some(second_token.get()));
}

#[tokio::test]
async fn watchdog_keeps_a_lease_alive_past_its_ttl() {
    let node = RedisNode::start().unwrap();
    let a = FencedLock::connect(&node.url(), opts("pod-7f"))
        .await
        .unwrap();
    let b = FencedLock::connect(&node.url(), opts("pod-3c"))
        .await
        .unwrap();
    let mut lease = a.try_acquire("lock:long-job").await.unwrap().unwrap();
    lease.keep_alive();
    // Three TTLs go by with the holder doing nothing: outliving its TTL is
    // what the watchdog is for, so the wait is what is under test.
    tokio::time::sleep(TTL * 3).await;
    assert!(lease.is_valid());
    assert!(b.try_acquire("lock:long-job").await.unwrap().is_none());
    // Someone deletes the key behind the holder's back: the watchdog notices.
    let mut c = conn(&node.url()).await;
    let _: i64 = c.del("lock:long-job").await.unwrap();
    // Its next extension finds the key gone and reports the lease lost.
    let url = node.url();
    common::wait_until_async(
        "the watchdog to report the lease lost",
        Duration::from_secs(10),
        || async {
            events(&url)
                .await
                .iter()
                .any(|e| e.kind == EventKind::Lost)
                .then_some(())
        },
    )
    .await;
    assert!(!lease.is_valid());
    assert_eq!(lease.release().await.unwrap(), Release::AlreadyLost);
    let kinds: Vec<EventKind> = events(&node.url())
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&EventKind::Extended));
    assert!(kinds.contains(&EventKind::Lost));
}

/// Tests that are not about the GC pause use a longer TTL (for Redlock, a
/// 100 ms per-node timeout) to stay
/// clear of scheduling noise on a loaded machine; the GC-pause tests
/// keep PM-003's 200 ms.
fn patient_opts(holder: &str) -> LockOptions {
    LockOptions::new(Duration::from_secs(1), holder)
}

async fn three_nodes(options: NodeOptions) -> (Vec<RedisNode>, Vec<String>) {
    let nodes: Vec<RedisNode> = (0..3)
        .map(|_| RedisNode::start_with(options.clone()).unwrap())
        .collect();
    let urls = nodes.iter().map(RedisNode::url).collect();
    (nodes, urls)
}

#[tokio::test]
async fn redlock_grants_with_one_node_lost_and_nothing_with_two() {
    let (mut nodes, urls) = three_nodes(NodeOptions::default()).await;
    let a = Redlock::connect(&urls, patient_opts("pod-7f"))
        .await
        .unwrap();
    let b = Redlock::connect(&urls, patient_opts("pod-3c"))
        .await
        .unwrap();
    assert_eq!(a.quorum(), 2);

    let lease = a
        .try_acquire("lock:order:7")
        .await
        .unwrap()
        .expect("all nodes up");
    assert!(b.try_acquire("lock:order:7").await.unwrap().is_none());
    lease.release().await.unwrap();

    nodes[2].kill().unwrap();
    let lease = a
        .try_acquire("lock:order:7")
        .await
        .unwrap()
        .expect("2 of 3 is a quorum");
    assert!(b.try_acquire("lock:order:7").await.unwrap().is_none());
    let token_with_two = lease.token();
    lease.release().await.unwrap();

    nodes[1].kill().unwrap();
    let err = a.try_acquire("lock:order:7").await.unwrap_err();
    assert!(
        matches!(
            err,
            LockError::NoQuorum {
                answered: 1,
                nodes: 3,
                quorum: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = a
        .acquire("lock:order:7", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err}");

    nodes[1].restart().unwrap();
    let lease = a
        .acquire("lock:order:7", Duration::from_secs(5))
        .await
        .expect("quorum is back");
    assert!(lease.token() > token_with_two);
}

#[tokio::test]
async fn redlock_grants_while_one_node_is_paused() {
    let (nodes, urls) = three_nodes(NodeOptions::default()).await;
    let a = Redlock::connect(&urls, patient_opts("pod-7f"))
        .await
        .unwrap();
    nodes[0].pause().unwrap();
    let lease = a
        .acquire("lock:order:8", Duration::from_secs(2))
        .await
        .expect("a frozen node costs only its timeout");
    assert!(lease.is_valid());
    nodes[0].resume().unwrap();
    lease.release().await.unwrap();
}

#[tokio::test]
async fn redlock_tokens_increase_across_changing_quorums() {
    let aof = NodeOptions {
        append_only: true,
        ..NodeOptions::default()
    };
    let (mut nodes, urls) = three_nodes(aof).await;
    let key = "lock:order:9";
    let fence = warroom::lock::fence_counter_key(key);
    // Counters that have drifted apart: taking the maximum of per-node INCRs
    // would give a later quorum {B, C} a token below an earlier {A, B}'s.
    for (url, value) in urls.iter().zip([5, 1, 1]) {
        let _: () = conn(url).await.set(&fence, value).await.unwrap();
    }
    let lock = Redlock::connect(&urls, patient_opts("pod-7f").without_events())
        .await
        .unwrap();

    nodes[2].kill().unwrap(); // quorum {A, B}
    let first = lock.acquire(key, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.token(), FencingToken::new(6));
    first.release().await.unwrap();

    nodes[2].restart().unwrap();
    nodes[0].kill().unwrap(); // quorum {B, C}
    let second = lock.acquire(key, Duration::from_secs(2)).await.unwrap();
    assert!(
        second.token() > FencingToken::new(6),
        "got {}",
        second.token()
    );
    let mut last = second.token();
    second.release().await.unwrap();

    // Every node restarts from its append-only file: counters survive.
    for round in 0..3 {
        for node in nodes.iter_mut() {
            node.restart().unwrap();
        }
        nodes[round].kill().unwrap();
        let lease = lock.acquire(key, Duration::from_secs(5)).await.unwrap();
        assert!(
            lease.token() > last,
            "round {round}: {} after {last}",
            lease.token()
        );
        last = lease.token();
        lease.release().await.unwrap();
    }
}

#[tokio::test]
async fn single_node_tokens_survive_a_restart_with_aof() {
    let mut node = RedisNode::start_with(NodeOptions {
        append_only: true,
        ..NodeOptions::default()
    })
    .unwrap();
    let lock = FencedLock::connect(&node.url(), patient_opts("pod-7f"))
        .await
        .unwrap();
    let before = lock
        .acquire("lock:order:10", Duration::from_secs(1))
        .await
        .unwrap();
    let before_token = before.token();
    before.release().await.unwrap();
    node.kill().unwrap();
    node.restart().unwrap();
    let after = lock
        .acquire("lock:order:10", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(after.token() > before_token);
}

#[tokio::test]
async fn watch_mode_loses_no_update_under_contention() {
    let node = RedisNode::start().unwrap();
    const WORKERS: usize = 8;
    const UPDATES: usize = 200;
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let url = node.url();
        tasks.push(tokio::spawn(async move {
            let mut session = WatchSession::connect(&url)
                .await
                .unwrap()
                .with_max_attempts(1000);
            let mut conflicts = 0;
            for _ in 0..UPDATES {
                let outcome = session
                    .update("order:counter", async |current: Option<String>| {
                        let n: u64 = current.and_then(|v| v.parse().ok()).unwrap_or(0);
                        tokio::task::yield_now().await; // let others interleave
                        Some((n + 1).to_string())
                    })
                    .await
                    .unwrap();
                assert!(outcome.written);
                conflicts += outcome.attempts - 1;
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let total: u64 = conn(&node.url()).await.get("order:counter").await.unwrap();
    assert_eq!(total, (WORKERS * UPDATES) as u64);
    assert!(conflicts > 0, "the test must actually contend");
}

#[tokio::test]
async fn watch_mode_retries_when_a_write_slips_in_during_a_pause() {
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let mut session = WatchSession::connect(&url).await.unwrap();
    let mut other = conn(&url).await;
    let mut first_attempt = true;
    let outcome = session
        .update("order:status", async |current: Option<String>| {
            if first_attempt {
                first_attempt = false;
                let _: () = other.set("order:status", "FULFILLED").await.unwrap();
            }
            Some(format!("{}+1", current.unwrap_or_default()))
        })
        .await
        .unwrap();
    assert_eq!(outcome.attempts, 2);
    let value: String = other.get("order:status").await.unwrap();
    assert_eq!(value, "FULFILLED+1");
}

#[tokio::test]
async fn password_in_the_url_authenticates() {
    let node = RedisNode::start_with(NodeOptions {
        password: Some("s3cret-pass".into()),
        ..NodeOptions::default()
    })
    .unwrap();
    let lock = FencedLock::connect(&node.url(), patient_opts("pod-7f"))
        .await
        .unwrap();
    let lease = lock.try_acquire("lock:order:11").await.unwrap().unwrap();
    lease.release().await.unwrap();
    let wrong = format!("redis://:wrong@127.0.0.1:{}", node.port());
    let err = FencedLock::connect(&wrong, patient_opts("pod-7f"))
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains("wrong"),
        "no password in messages: {err}"
    );
}

#[tokio::test]
async fn tls_url_connects_to_a_tls_node() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed for this test (apt-get install -y openssl)");
    assert!(status.success());
    let node = RedisNode::start_with(NodeOptions {
        tls: Some(warroom::redis_node::TlsFiles {
            cert: cert.clone(),
            key,
            ca: cert,
        }),
        password: Some("tls-pass".into()),
        ..NodeOptions::default()
    })
    .unwrap();
    assert!(node.url().starts_with("rediss://"));
    let lock = FencedLock::connect(&node.url(), patient_opts("pod-7f"))
        .await
        .unwrap();
    let lease = lock.try_acquire("lock:order:12").await.unwrap().unwrap();
    assert_eq!(lease.release().await.unwrap(), Release::Released);
}
