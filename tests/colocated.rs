//! Records on the lock's own node, against a real `redis-server`: the grant
//! that reads the record in the same script, and write-and-release, keep
//! the fence: one holder at a time, increasing tokens, a stale holder
//! refused, events in order.

mod common;

use std::time::Duration;

use redis::AsyncCommands;
use warroom::fence::{WriteOutcome, colocated};
use warroom::lock::event::{DEFAULT_STREAM, EventKind, LockEvent};
use warroom::lock::{FencedLock, LockError, LockOptions, Release};
use warroom::redis_node::RedisNode;

const TTL: Duration = Duration::from_millis(200);

fn redis_available() -> bool {
    common::require_tool("redis-server", "redis-server").is_some()
}

async fn events(url: &str) -> Vec<(EventKind, String, Option<u64>)> {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(DEFAULT_STREAM).await.unwrap();
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
            let event =
                LockEvent::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                    .unwrap();
            (event.kind, event.holder, event.token)
        })
        .collect()
}

#[tokio::test]
async fn acquire_and_read_grants_one_holder_and_reads_the_record() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let a = FencedLock::connect(&url, LockOptions::new(TTL, "pod-7f"))
        .await
        .unwrap();
    let b = FencedLock::connect(&url, LockOptions::new(TTL, "pod-3c"))
        .await
        .unwrap();
    colocated::prepare(&a).await.unwrap();

    let (first, record) = colocated::try_acquire_and_read(&a, "lock:ord-1", "order:ord-1")
        .await
        .unwrap()
        .expect("free key");
    assert_eq!(record.value, None);
    assert_eq!(record.fence, 0);
    assert!(
        colocated::try_acquire_and_read(&b, "lock:ord-1", "order:ord-1")
            .await
            .unwrap()
            .is_none(),
        "a second holder while the first holds"
    );
    let first_token = first.token().get();
    let (outcome, release) = colocated::write_and_release(first, "order:ord-1", "PAID")
        .await
        .unwrap();
    assert!(outcome.is_accepted());
    assert_eq!(release, Release::Released);

    let (second, record) =
        colocated::acquire_and_read(&b, "lock:ord-1", "order:ord-1", Duration::from_secs(2))
            .await
            .unwrap();
    let second_token = second.token().get();
    assert_eq!(record.value.as_deref(), Some("PAID"));
    assert_eq!(record.fence, first_token);
    assert!(
        second_token > first_token,
        "{second_token} after {first_token}"
    );
    assert_eq!(second.release().await.unwrap(), Release::Released);

    assert_eq!(
        events(&url).await,
        vec![
            (EventKind::Acquired, "pod-7f".into(), Some(first_token)),
            (EventKind::Released, "pod-7f".into(), Some(first_token)),
            (EventKind::Acquired, "pod-3c".into(), Some(second_token)),
            (EventKind::Released, "pod-3c".into(), Some(second_token)),
        ]
    );
}

#[tokio::test]
async fn a_holder_paused_past_its_ttl_is_refused_after_the_next_grant() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let a = FencedLock::connect(&url, LockOptions::new(TTL, "pod-7f"))
        .await
        .unwrap();
    let b = FencedLock::connect(&url, LockOptions::new(TTL, "pod-3c"))
        .await
        .unwrap();

    let (stale, _) =
        colocated::acquire_and_read(&a, "lock:ord-2", "order:ord-2", Duration::from_secs(2))
            .await
            .unwrap();
    // b is granted once a's key has expired (a is "paused" meanwhile).
    let (fresh, record) =
        colocated::acquire_and_read(&b, "lock:ord-2", "order:ord-2", Duration::from_secs(5))
            .await
            .unwrap();
    assert!(!stale.is_valid(), "b was granted while a's lease was valid");
    assert_eq!(record.value, None);
    let (outcome, release) = colocated::write_and_release(stale, "order:ord-2", "STALE")
        .await
        .unwrap();
    assert!(
        matches!(outcome, WriteOutcome::Rejected { .. }),
        "{outcome:?}"
    );
    assert_eq!(release, Release::AlreadyLost);
    let (outcome, release) = colocated::write_and_release(fresh, "order:ord-2", "FRESH")
        .await
        .unwrap();
    assert!(outcome.is_accepted());
    assert_eq!(release, Release::Released);
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: Option<String> = conn.hget("order:ord-2", "value").await.unwrap();
    assert_eq!(value.as_deref(), Some("FRESH"));
}

#[tokio::test]
async fn without_events_acquire_and_read_publishes_nothing_and_times_out_when_held() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let quiet = LockOptions::new(TTL, "pod-7f").without_events();
    let a = FencedLock::connect(&url, quiet.clone()).await.unwrap();
    let b = FencedLock::connect(&url, LockOptions::new(Duration::from_secs(10), "pod-3c"))
        .await
        .unwrap();
    let held = b.try_acquire("lock:ord-3").await.unwrap().expect("free");
    let err =
        colocated::acquire_and_read(&a, "lock:ord-3", "order:ord-3", Duration::from_millis(150))
            .await
            .map(|_| ())
            .unwrap_err();
    assert!(matches!(err, LockError::Timeout { .. }), "{err}");
    held.release().await.unwrap();
    let (lease, _) =
        colocated::acquire_and_read(&a, "lock:ord-3", "order:ord-3", Duration::from_secs(2))
            .await
            .unwrap();
    assert!(lease.token().get() > 0);
    lease.release().await.unwrap();
    let kinds: Vec<EventKind> = events(&url).await.into_iter().map(|e| e.0).collect();
    // Only b's own events (it publishes); none from a.
    assert_eq!(kinds, vec![EventKind::Acquired, EventKind::Released]);
}

#[tokio::test]
async fn a_holder_is_not_refused_for_numbers_that_refused_attempts_burned() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().unwrap();
    let url = node.url();
    // Without events, an attempt is a MULTI of SET NX and INCR: a refused
    // attempt still raises the fence counter, past the holder's token.
    let quiet = LockOptions::new(Duration::from_secs(5), "pod-7f").without_events();
    let a = FencedLock::connect(&url, quiet.clone()).await.unwrap();
    let b = FencedLock::connect(&url, LockOptions::new(TTL, "pod-3c").without_events())
        .await
        .unwrap();
    let lease = a.try_acquire("lock:ord-4").await.unwrap().expect("free");
    for _ in 0..3 {
        assert!(b.try_acquire("lock:ord-4").await.unwrap().is_none());
    }
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let counter: u64 = conn
        .get(warroom::lock::fence_counter_key("lock:ord-4"))
        .await
        .unwrap();
    assert!(
        counter > lease.token().get(),
        "refused attempts should have burned numbers: counter {counter}, token {}",
        lease.token()
    );
    // The lease is still held: no newer grant exists, so the write stands.
    let outcome = colocated::write(&lease, "order:ord-4", "PAID")
        .await
        .unwrap();
    assert!(outcome.is_accepted(), "{outcome:?}");
    let (outcome, release) = colocated::write_and_release(lease, "order:ord-4", "SHIPPED")
        .await
        .unwrap();
    assert!(outcome.is_accepted(), "{outcome:?}");
    assert_eq!(release, Release::Released);
    // The next grant still gets a token above every number handed out.
    let fresh = b
        .try_acquire("lock:ord-4")
        .await
        .unwrap()
        .expect("released");
    assert!(fresh.token().get() > counter);
    let value: Option<String> = conn.hget("order:ord-4", "value").await.unwrap();
    assert_eq!(value.as_deref(), Some("SHIPPED"));
    fresh.release().await.unwrap();
}

#[tokio::test]
async fn large_tokens_and_values_with_spaces_come_back_exactly() {
    if !redis_available() {
        return;
    }
    let node = RedisNode::start().unwrap();
    let url = node.url();
    let lock = FencedLock::connect(&url, LockOptions::new(TTL, "pod-7f"))
        .await
        .unwrap();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Past what Lua prints without an exponent (1e14), below 2^53.
    let counter = 4_000_000_000_000_000_u64;
    let _: () = conn
        .set(warroom::lock::fence_counter_key("lock:big"), counter)
        .await
        .unwrap();
    let (lease, record) = colocated::try_acquire_and_read(&lock, "lock:big", "order:big")
        .await
        .unwrap()
        .expect("free key");
    assert_eq!(lease.token().get(), counter + 1);
    assert_eq!(record.value, None);
    let value = "  PAID by card 4 2  ";
    let (outcome, _) = colocated::write_and_release(lease, "order:big", value)
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Accepted { previous_fence: 0 });

    let (lease, record) = colocated::try_acquire_and_read(&lock, "lock:big", "order:big")
        .await
        .unwrap()
        .expect("free key");
    assert_eq!(record.value.as_deref(), Some(value));
    assert_eq!(record.fence, counter + 1);
    assert_eq!(lease.token().get(), counter + 2);
    let _: () = conn.hset("order:big", "value", "").await.unwrap();
    let (outcome, release) = colocated::write_and_release(lease, "order:big", "")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        WriteOutcome::Accepted {
            previous_fence: counter + 1
        }
    );
    assert_eq!(release, Release::Released);
    let (lease, record) = colocated::try_acquire_and_read(&lock, "lock:big", "order:big")
        .await
        .unwrap()
        .expect("free key");
    assert_eq!(
        record.value.as_deref(),
        Some(""),
        "an empty value is not absent"
    );
    lease.release().await.unwrap();
}
