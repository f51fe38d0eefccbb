//! Property: whatever the interleaving of acquire, pause, expiry, claim,
//! write and release among holders, the writes a fenced record accepts carry
//! strictly increasing fencing tokens — for the single-node lock and Redlock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use redis::AsyncCommands;
use warroom::fence::{FencedStore, WriteOutcome};
use warroom::lock::{FencedLock, Lease, LockOptions, Redlock};
use warroom::redis_node::RedisNode;

const HOLDERS: usize = 3;
const TTL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    /// The holder stalls past its TTL (a GC pause).
    Pause,
    /// The lock key vanishes from every node (expiry, as seen by Redis).
    Expire,
    Claim(usize),
    Write(usize),
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..HOLDERS;
    prop_oneof![
        4 => h.clone().prop_map(Op::Acquire),
        1 => Just(Op::Pause),
        2 => Just(Op::Expire),
        3 => h.clone().prop_map(Op::Claim),
        4 => h.clone().prop_map(Op::Write),
        2 => h.prop_map(Op::Release),
    ]
}

enum Locks {
    Single(Vec<FencedLock>),
    Redlock(Vec<Redlock>),
}

impl Locks {
    /// A grant, or nothing: contention and too few answering nodes (a slow
    /// machine can exceed a per-node timeout) both mean no lease.
    async fn try_acquire(&self, holder: usize, key: &str) -> Option<Lease> {
        let attempt = match self {
            Locks::Single(l) => l[holder].try_acquire(key).await,
            Locks::Redlock(l) => l[holder].try_acquire(key).await,
        };
        match attempt {
            Ok(lease) => lease,
            Err(e) if e.is_unreachable() => None,
            Err(e) => panic!("acquire failed: {e}"),
        }
    }
}

struct World {
    runtime: tokio::runtime::Runtime,
    urls: Vec<String>,
    locks: Locks,
    store: FencedStore,
    case: AtomicU64,
    rejected: AtomicU64,
    multi_writer_cases: AtomicU64,
    _nodes: Vec<RedisNode>,
}

impl World {
    fn new(nodes: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let nodes: Vec<RedisNode> = (0..nodes).map(|_| RedisNode::start().unwrap()).collect();
        let urls: Vec<String> = nodes.iter().map(RedisNode::url).collect();
        let (locks, store) = runtime.block_on(async {
            let mut single = Vec::new();
            let mut redlock = Vec::new();
            for h in 0..HOLDERS {
                let options = LockOptions::new(TTL, format!("pod-{h}")).without_events();
                if urls.len() == 1 {
                    single.push(FencedLock::connect(&urls[0], options).await.unwrap());
                } else {
                    redlock.push(Redlock::connect(&urls, options).await.unwrap());
                }
            }
            let locks = if urls.len() == 1 {
                Locks::Single(single)
            } else {
                Locks::Redlock(redlock)
            };
            (
                locks,
                FencedStore::connect(&urls[0], "order-svc", None)
                    .await
                    .unwrap(),
            )
        });
        Self {
            runtime,
            urls,
            locks,
            store,
            case: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            multi_writer_cases: AtomicU64::new(0),
            _nodes: nodes,
        }
    }

    /// Runs one interleaving; returns the tokens of the accepted writes in
    /// the order the store accepted them.
    fn run(&self, ops: &[Op]) -> Vec<u64> {
        let case = self.case.fetch_add(1, Ordering::Relaxed);
        let key = format!("lock:order:{case}");
        let record = format!("order:{case}");
        self.runtime.block_on(async {
            let mut leases: Vec<Option<(Lease, bool)>> = (0..HOLDERS).map(|_| None).collect();
            let mut accepted = Vec::new();
            for op in ops {
                match *op {
                    Op::Acquire(h) => {
                        if leases[h].is_none() {
                            leases[h] = self
                                .locks
                                .try_acquire(h, &key)
                                .await
                                .map(|lease| (lease, false));
                        }
                    }
                    Op::Pause => tokio::time::sleep(TTL + Duration::from_millis(10)).await,
                    Op::Expire => {
                        for url in &self.urls {
                            let mut c = redis::Client::open(url.as_str())
                                .unwrap()
                                .get_multiplexed_async_connection()
                                .await
                                .unwrap();
                            let _: i64 = c.del(&key).await.unwrap();
                        }
                    }
                    Op::Claim(h) => {
                        if let Some((lease, _)) = &leases[h] {
                            self.store
                                .read_for_update(&record, lease.token())
                                .await
                                .unwrap();
                        }
                    }
                    Op::Write(h) => {
                        if let Some((lease, written)) = &mut leases[h]
                            && !*written
                        {
                            *written = true;
                            let outcome = self
                                .store
                                .write(&record, lease.token(), &format!("by pod-{h}"))
                                .await
                                .unwrap();
                            match outcome {
                                WriteOutcome::Accepted { .. } => accepted.push(lease.token().get()),
                                WriteOutcome::Rejected { .. } => {
                                    self.rejected.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Op::Release(h) => {
                        if let Some((lease, _)) = leases[h].take() {
                            lease.release().await.unwrap();
                        }
                    }
                }
            }
            if accepted.len() > 1 {
                self.multi_writer_cases.fetch_add(1, Ordering::Relaxed);
            }
            accepted
        })
    }
}

/// The interleavings must have exercised the fence, or the property says nothing.
fn assert_exercised(world: &World) {
    assert!(
        world.rejected.load(Ordering::Relaxed) > 0,
        "no stale write was ever refused"
    );
    assert!(
        world.multi_writer_cases.load(Ordering::Relaxed) > 0,
        "no interleaving had two accepted writers"
    );
}

fn strictly_increasing(tokens: &[u64]) -> bool {
    tokens.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn fenced_lock_accepted_writes_carry_increasing_tokens() {
    let world = World::new(1);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(96));
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let accepted = world.run(&ops);
            prop_assert!(
                strictly_increasing(&accepted),
                "accepted tokens {accepted:?}"
            );
            Ok(())
        })
        .unwrap();
    assert_exercised(&world);
}

#[test]
fn redlock_accepted_writes_carry_increasing_tokens() {
    let world = World::new(3);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            let accepted = world.run(&ops);
            prop_assert!(
                strictly_increasing(&accepted),
                "accepted tokens {accepted:?}"
            );
            Ok(())
        })
        .unwrap();
    assert_exercised(&world);
}
