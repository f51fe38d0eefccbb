//! Redlock under network partitions, Jepsen style: three Redis lock nodes,
//! the order store and each worker in a network namespace of its own, links
//! cut and healed while the workers contend for the same orders.
//!
//! **Topology.** Every namespace has one veth into a bridge that lives in a
//! switch namespace of the run (see `lab`). A link is cut by blackhole
//! routes on both of its ends, so packets are dropped (an established
//! connection just stops answering, as across a real partition) and cannot
//! leave by another route. Cuts are per pair, so two workers can see the
//! network differently at the same moment (one on the minority side, one on
//! the majority side). Nodes run with `appendonly yes` and `appendfsync
//! always`; a node is killed with `SIGKILL` and restarted from its AOF inside
//! its namespace.
//!
//! **Workers.** Each worker is this test binary started again inside its
//! namespace (`worker`), looping: Redlock lease on an order, claim of the
//! order's record in the fenced store with the lease's token
//! (`read_for_update`), work, write, release. Some workers stall past the
//! TTL before writing (a GC pause): by sleeping, or by stopping their whole
//! process (`SIGSTOP` to themselves) until the test resumes them. Each step
//! is logged with times on the machine's monotonic clock.
//!
//! **The store.** The order records live on a fourth Redis node that every
//! worker always reaches: partitions are between workers and lock nodes, as
//! when a worker loses the lock's nodes but not its database. Each write
//! stores the chain of entries read at the claim plus its own
//! `worker:token`, so the final record shows every write it kept, in order.
//!
//! **What must hold.**
//! - A worker cut off from two of three nodes is granted nothing while cut,
//!   and each `acquire` gives up with "no quorum" within its wait plus two
//!   per-node timeouts (the attempt in flight at the deadline: its round one
//!   and its release) plus scheduling slack.
//! - Fencing tokens are strictly increasing in grant order, per key: no
//!   token is granted twice, and a grant that returned before another
//!   grant's `acquire` began carries the lower token. (Grants whose acquire
//!   calls overlap in time have no order a client could observe; Redlock
//!   still orders them, and distinct tokens are checked for them too.)
//! - No stale write is accepted: every write the store accepted is in the
//!   record's final chain (a write accepted after a newer holder's claim
//!   would be overwritten by that holder, who read the record before it),
//!   the chain's tokens strictly increase, and it holds nothing the store
//!   did not accept.
//!
//! Without the token write-back of Redlock (round two) every token is the
//! same, and all three properties fail.
//!
//! Where network namespaces are not available (no `ip`, not root, or a
//! container that forbids them) the tests say so and skip; under CI they
//! fail.

mod common;
#[path = "partition/lab.rs"]
mod lab;
#[path = "partition/worker.rs"]
mod worker;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::process::Command;
use std::time::Duration;

use lab::{Lab, Member};
use warroom::redis_node::{NodeOptions, RedisNode};
use worker::{Entry, WorkerPlan, WorkerProcess, now_ns, record_of};

/// Lease TTL of every worker.
const TTL_MS: u64 = 400;
/// Per-node request timeout (Redlock's default for this TTL: TTL / 10).
const NODE_TIMEOUT_MS: u64 = 40;
/// How long one `acquire` may wait.
const WAIT_MS: u64 = 300;
/// Work between claim and write.
const WORK_MS: u64 = 10;
/// A stall: longer than the TTL, so the lease lapses and another worker
/// takes the order meanwhile.
const STALL_MS: u64 = 2 * TTL_MS;
/// Scheduling slack for the give-up bound (two shared cores, workers and
/// servers all busy).
const GIVE_UP_SLACK_MS: u64 = 150;
/// How long a partition lasts.
const PARTITION: Duration = Duration::from_millis(1500);
/// Deadline for progress after a heal: connections that were cut resume at
/// their next TCP retransmission, which backs off while the link is down.
const RECOVERY: Duration = Duration::from_secs(15);
/// The orders the workers contend for.
const KEYS: [&str; 2] = ["lock:ord-9927431", "lock:ord-9927432"];

const N1: usize = 0;
const N2: usize = 1;
const N3: usize = 2;

/// The worker process the scenarios start inside a namespace; it does
/// nothing when run directly.
#[test]
#[ignore = "a worker process of the partition tests, started by them inside a network namespace"]
fn worker_process() {
    worker::run_from_env();
}

/// One worker of a scenario.
#[derive(Clone)]
struct Worker {
    name: &'static str,
    stall_every: Option<u32>,
    freeze: bool,
    grants: Option<u32>,
}

impl Worker {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            stall_every: None,
            freeze: false,
            grants: None,
        }
    }

    /// Stalls for [`STALL_MS`] on every `every`-th grant.
    fn stalling(mut self, every: u32) -> Self {
        self.stall_every = Some(every);
        self
    }

    /// Freezes the whole process after claiming, until the test resumes it.
    fn freezing(mut self) -> Self {
        self.stall_every = Some(1);
        self.freeze = true;
        self
    }

    /// Takes one lease only.
    fn once(mut self) -> Self {
        self.grants = Some(1);
        self
    }
}

/// A Redis server inside its namespace.
struct Node {
    member: Member,
    server: RedisNode,
}

impl Node {
    fn start(lab: &Lab, member: Member) -> Self {
        let options = NodeOptions {
            append_only: true,
            // Loopback (for the readiness probe) and the bridge address; the
            // later `bind` wins over the node's default.
            extra_args: vec![("bind".into(), "0.0.0.0".into())],
            ..NodeOptions::default()
        };
        let server = lab
            .run_in(&member, || RedisNode::start_with(options))
            .unwrap_or_else(|e| panic!("redis-server in {}: {e}", member.namespace));
        Self { member, server }
    }

    /// The URL other namespaces use.
    fn url(&self) -> String {
        format!("redis://{}:{}", self.member.address, self.server.port())
    }
}

/// Everything still recorded when the workers have stopped.
struct Outcome {
    logs: Vec<(String, Vec<Entry>)>,
    records: HashMap<String, Option<String>>,
    origin_ns: u64,
}

/// Three lock nodes, the order store and the workers, in one lab. Fields
/// drop in order: workers, servers, then the namespaces.
struct OrderSystem {
    workers: Vec<WorkerProcess>,
    nodes: Vec<Node>,
    store: Node,
    worker_members: Vec<Member>,
    lab: Lab,
    origin_ns: u64,
}

impl OrderSystem {
    /// Starts the nodes, the store and `workers`, each worker connected;
    /// `None` where network namespaces are not available.
    fn start(workers: &[Worker]) -> Option<Self> {
        Lab::available()?;
        let origin_ns = now_ns();
        let mut lab = Lab::new();
        let nodes: Vec<Node> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|role| {
                let member = lab.join(role);
                Node::start(&lab, member)
            })
            .collect();
        let member = lab.join("store");
        let store = Node::start(&lab, member);
        let mut system = Self {
            workers: Vec::new(),
            nodes,
            store,
            worker_members: Vec::new(),
            lab,
            origin_ns,
        };
        for worker in workers {
            system.add_worker(worker);
        }
        Some(system)
    }

    /// Starts one more worker in a namespace of its own and waits until it
    /// has connected.
    fn add_worker(&mut self, worker: &Worker) {
        let member = self.lab.join(worker.name);
        let plan = WorkerPlan {
            name: worker.name.to_string(),
            lock_nodes: self.nodes.iter().map(Node::url).collect(),
            store: self.store.url(),
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            ttl_ms: TTL_MS,
            node_timeout_ms: NODE_TIMEOUT_MS,
            wait_ms: WAIT_MS,
            work_ms: WORK_MS,
            stall_every: worker.stall_every,
            stall_ms: STALL_MS,
            freeze: worker.freeze,
            grants: worker.grants,
            log: self.lab.dir().join(format!("{}.jsonl", worker.name)),
        };
        let mut process = WorkerProcess::start(&self.lab, &member, &plan);
        common::wait_until(
            &format!("worker {} to connect", worker.name),
            Duration::from_secs(10),
            || {
                process.assert_running();
                process
                    .entries()
                    .iter()
                    .any(|e| matches!(e, Entry::Ready { .. }))
                    .then_some(())
            },
        );
        self.workers.push(process);
        self.worker_members.push(member);
    }

    fn worker_index(&self, name: &str) -> usize {
        self.workers
            .iter()
            .position(|w| w.name == name)
            .unwrap_or_else(|| panic!("no worker {name}"))
    }

    /// Cuts worker `name` off from the given lock nodes.
    fn cut(&mut self, name: &str, nodes: &[usize]) {
        let worker = self.worker_members[self.worker_index(name)].clone();
        for &n in nodes {
            let node = self.nodes[n].member.clone();
            self.lab.cut(&worker, &node);
        }
    }

    fn heal_all(&mut self) {
        self.lab.heal_all();
    }

    /// Waits until every named worker has been granted a lease whose
    /// acquire began after `after_ns`.
    fn wait_for_grants(&mut self, names: &[&str], after_ns: u64, what: &str) {
        for name in names {
            let i = self.worker_index(name);
            let worker = &mut self.workers[i];
            common::wait_until(&format!("a lease for {name} {what}"), RECOVERY, || {
                worker.assert_running();
                let granted = |e: &Entry| matches!(e, Entry::Granted { started_ns, .. } if *started_ns > after_ns);
                worker.entries().iter().any(granted).then_some(())
            });
        }
    }

    /// The fence counters of [`KEYS`] on lock node `n`, read from the
    /// store's namespace (which no partition touches).
    fn fence_counters(&self, n: usize) -> Vec<u64> {
        let url = self.nodes[n].url();
        self.in_store_namespace(|| async move {
            let mut conn = connection(&url).await;
            let mut counters = Vec::new();
            for key in KEYS {
                let counter: Option<u64> = redis::cmd("GET")
                    .arg(warroom::lock::fence_counter_key(key))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cannot read the fence counter of {key} on {url}: {e}")
                    });
                counters.push(counter.unwrap_or(0));
            }
            counters
        })
    }

    /// Runs the future `f` makes on a thread inside the store's namespace,
    /// which reaches every node whatever the partition.
    fn in_store_namespace<T: Send, Fut: Future<Output = T>>(
        &self,
        f: impl FnOnce() -> Fut + Send,
    ) -> T {
        self.lab.run_in(&self.store.member, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(f())
        })
    }

    /// Kills lock node `n` with SIGKILL.
    fn kill_node(&mut self, n: usize) {
        self.nodes[n]
            .server
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill lock node n{}: {e}", n + 1));
    }

    /// Starts lock node `n` again, in its namespace, from its AOF.
    fn restart_node(&mut self, n: usize) {
        let Node { member, server } = &mut self.nodes[n];
        self.lab
            .run_in(member, || server.restart())
            .unwrap_or_else(|e| panic!("cannot restart lock node n{}: {e}", n + 1));
    }

    /// Stops every worker and reads the logs and the order records.
    fn finish(mut self) -> Outcome {
        for worker in &mut self.workers {
            worker.stop();
        }
        let logs = self
            .workers
            .iter()
            .map(|w| (w.name.clone(), w.entries()))
            .collect();
        let url = self.store.url();
        let records = self.in_store_namespace(|| async move {
            let mut conn = connection(&url).await;
            let mut records = HashMap::new();
            for key in KEYS {
                let record = record_of(key);
                let value: Option<String> = redis::cmd("HGET")
                    .arg(&record)
                    .arg("value")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("cannot read {record} from the store: {e}"));
                records.insert(record, value);
            }
            records
        });
        Outcome {
            logs,
            records,
            origin_ns: self.origin_ns,
        }
    }
}

/// A connection to `url` from the calling thread's namespace.
async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot reach {url}: {e}"))
}

/// Lets a partition (or an outage) last: its duration is what is tested.
fn hold(duration: Duration) {
    std::thread::sleep(duration);
}

fn secs(origin_ns: u64, at_ns: u64) -> String {
    format!("+{:.3} s", at_ns.saturating_sub(origin_ns) as f64 / 1e9)
}

/// A grant as a worker logged it.
#[derive(Debug, Clone, Copy)]
struct Grant<'a> {
    worker: &'a str,
    key: &'a str,
    token: u64,
    started_ns: u64,
    granted_ns: u64,
}

fn grants(logs: &[(String, Vec<Entry>)]) -> Vec<Grant<'_>> {
    logs.iter()
        .flat_map(|(worker, entries)| {
            entries.iter().filter_map(move |e| match e {
                Entry::Granted {
                    key,
                    token,
                    started_ns,
                    granted_ns,
                } => Some(Grant {
                    worker,
                    key,
                    token: *token,
                    started_ns: *started_ns,
                    granted_ns: *granted_ns,
                }),
                _ => None,
            })
        })
        .collect()
}

/// Fencing tokens are strictly increasing in grant order, per key (see the
/// top of this file). Returns how many grants were checked.
fn assert_tokens_increase_in_grant_order(outcome: &Outcome) -> usize {
    let all = grants(&outcome.logs);
    let at = |ns| secs(outcome.origin_ns, ns);
    for key in KEYS {
        let mut by_token: Vec<Grant> = all.iter().copied().filter(|g| g.key == key).collect();
        by_token.sort_by_key(|g| g.token);
        for pair in by_token.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.token != b.token,
                "{key}: fencing token {} was granted twice: to {} (acquire {}..{}) and to {} (acquire {}..{})",
                a.token,
                a.worker,
                at(a.started_ns),
                at(a.granted_ns),
                b.worker,
                at(b.started_ns),
                at(b.granted_ns),
            );
        }
        let mut by_time = by_token;
        by_time.sort_by_key(|g| g.granted_ns);
        // highest[i]: the grant with the highest token among by_time[..=i].
        let mut highest: Vec<Grant> = Vec::with_capacity(by_time.len());
        for g in &by_time {
            let top = match highest.last() {
                Some(h) if h.token > g.token => *h,
                _ => *g,
            };
            highest.push(top);
        }
        for later in &by_time {
            let before = by_time.partition_point(|g| g.granted_ns < later.started_ns);
            if before == 0 {
                continue;
            }
            let earlier = highest[before - 1];
            assert!(
                earlier.token < later.token,
                "{key}: token {} went to {} at {}, after token {} had gone to {} at {} \
                 (before {}'s acquire began at {}): tokens went backwards",
                later.token,
                later.worker,
                at(later.granted_ns),
                earlier.token,
                earlier.worker,
                at(earlier.granted_ns),
                later.worker,
                at(later.started_ns),
            );
        }
    }
    all.len()
}

/// No stale write was accepted (see the top of this file). Returns the
/// writes accepted and refused.
fn assert_no_stale_write_accepted(outcome: &Outcome) -> (usize, usize) {
    let (mut accepted_total, mut refused_total) = (0, 0);
    for key in KEYS {
        let record = record_of(key);
        let mut accepted = HashSet::new();
        let mut maybe_applied = HashSet::new();
        for (worker, entries) in &outcome.logs {
            for e in entries {
                match e {
                    Entry::Wrote {
                        key: k,
                        entry,
                        accepted: true,
                        ..
                    } if k == key => {
                        accepted.insert(entry.clone());
                    }
                    Entry::Wrote {
                        key: k,
                        token,
                        accepted: false,
                        fence,
                        ..
                    } if k == key => {
                        assert!(
                            token < fence,
                            "{record}: {worker}'s write with token {token} was refused, yet the record's fence was {fence}"
                        );
                        refused_total += 1;
                    }
                    Entry::StoreFailed {
                        key: k,
                        entry: Some(entry),
                        ..
                    } if k == key => {
                        maybe_applied.insert(entry.clone());
                    }
                    _ => {}
                }
            }
        }
        accepted_total += accepted.len();
        let value = outcome
            .records
            .get(&record)
            .cloned()
            .flatten()
            .unwrap_or_default();
        let chain: Vec<&str> = value.split_whitespace().collect();
        let token_of = |entry: &str| -> u64 {
            entry
                .rsplit(':')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("{record}: malformed chain entry {entry:?}"))
        };
        for pair in chain.windows(2) {
            assert!(
                token_of(pair[0]) < token_of(pair[1]),
                "{record}: write {} follows write {} in the record although its token is not higher: a stale write was accepted",
                pair[1],
                pair[0]
            );
        }
        let kept: HashSet<&str> = chain.iter().copied().collect();
        let mut lost: Vec<&String> = accepted
            .iter()
            .filter(|e| !kept.contains(e.as_str()))
            .collect();
        lost.sort();
        assert!(
            lost.is_empty(),
            "{record}: the store accepted {lost:?}, then lost them: a holder that had claimed the record \
             before those writes overwrote them, so each was a stale write accepted after a newer claim \
             (the record ends with {:?})",
            &chain[chain.len().saturating_sub(8)..]
        );
        for entry in &chain {
            assert!(
                accepted.contains(*entry) || maybe_applied.contains(*entry),
                "{record}: holds {entry}, a write no worker saw accepted"
            );
        }
    }
    (accepted_total, refused_total)
}

#[test]
fn minority_worker_is_granted_nothing_and_gives_up_within_its_deadline() {
    let Some(mut system) = OrderSystem::start(&[Worker::new("pod-a"), Worker::new("pod-b")]) else {
        return;
    };
    system.wait_for_grants(&["pod-a", "pod-b"], 0, "before the partition");

    // pod-a keeps n1 only; pod-b still reaches all three nodes.
    system.cut("pod-a", &[N2, N3]);
    let cut_ns = now_ns();
    hold(PARTITION * 2);
    let heal_ns = now_ns();
    system.heal_all();
    system.wait_for_grants(&["pod-a"], now_ns(), "after the heal");
    let outcome = system.finish();

    let at = |ns| secs(outcome.origin_ns, ns);
    let log = |name: &str| {
        &outcome
            .logs
            .iter()
            .find(|(w, _)| w == name)
            .expect("a log per worker")
            .1
    };
    let during_cut = |started: u64, ended: u64| started >= cut_ns && ended <= heal_ns;

    for e in log("pod-a") {
        if let Entry::Granted {
            token,
            started_ns,
            granted_ns,
            key,
        } = e
        {
            assert!(
                !during_cut(*started_ns, *granted_ns),
                "pod-a reached only n1 from {} to {}, yet was granted {key} with token {token} ({}..{})",
                at(cut_ns),
                at(heal_ns),
                at(*started_ns),
                at(*granted_ns),
            );
        }
    }
    let bound_ms = WAIT_MS + 2 * NODE_TIMEOUT_MS + GIVE_UP_SLACK_MS;
    let mut gave_up_ms = Vec::new();
    for e in log("pod-a") {
        if let Entry::Refused {
            started_ns,
            ended_ns,
            no_quorum_answered,
            message,
            ..
        } = e
            && during_cut(*started_ns, *ended_ns)
        {
            let took_ms = (ended_ns - started_ns) / 1_000_000;
            assert!(
                matches!(no_quorum_answered, Some(answered) if *answered <= 1),
                "pod-a, cut off from n2 and n3, gave up with {message:?} instead of \"no quorum\" with at most one node answering"
            );
            assert!(
                took_ms <= bound_ms,
                "pod-a's acquire (wait {WAIT_MS} ms) gave up only after {took_ms} ms (bound {bound_ms} ms: \
                 wait + 2 × node timeout {NODE_TIMEOUT_MS} ms + {GIVE_UP_SLACK_MS} ms slack), at {}",
                at(*started_ns)
            );
            gave_up_ms.push(took_ms);
        }
    }
    assert!(
        gave_up_ms.len() >= 3,
        "pod-a tried to acquire only {} times during a {:?} cut",
        gave_up_ms.len(),
        PARTITION * 2
    );
    let majority_grants = log("pod-b")
        .iter()
        .filter(|e| matches!(e, Entry::Granted { started_ns, granted_ns, .. } if during_cut(*started_ns, *granted_ns)))
        .count();
    assert!(
        majority_grants > 0,
        "pod-b reached all three nodes during the cut, yet was granted nothing"
    );
    let checked = assert_tokens_increase_in_grant_order(&outcome);
    let (accepted, refused) = assert_no_stale_write_accepted(&outcome);
    println!(
        "pod-a, cut off from n2 and n3 for {:?}: {} acquires, all refused for want of a quorum after {}–{} ms \
         (wait {WAIT_MS} ms, bound {bound_ms} ms); pod-b granted {majority_grants} leases meanwhile; \
         {checked} grants in token order; {accepted} writes accepted, {refused} refused",
        PARTITION * 2,
        gave_up_ms.len(),
        gave_up_ms.iter().min().expect("some"),
        gave_up_ms.iter().max().expect("some"),
    );
}

#[test]
fn tokens_increase_through_partitions_heals_and_an_aof_restart() {
    let all = ["pod-a", "pod-b", "pod-c"];
    let Some(mut system) = OrderSystem::start(&[
        Worker::new("pod-a"),
        Worker::new("pod-b"),
        Worker::new("pod-c").stalling(4),
    ]) else {
        return;
    };
    system.wait_for_grants(&all, 0, "before the first partition");

    // Different views at once: pod-a sees n1 only (minority), pod-b sees n2
    // and n3 (majority), pod-c sees everything.
    system.cut("pod-a", &[N2, N3]);
    system.cut("pod-b", &[N1]);
    hold(PARTITION);
    system.heal_all();
    system.wait_for_grants(&all, now_ns(), "after the first heal");

    // A bridge: n2 is the only node both sides reach. pod-a's quorums are
    // {n1, n2}, pod-b's and pod-c's {n2, n3}: they meet in n2 alone.
    system.cut("pod-a", &[N3]);
    system.cut("pod-b", &[N1]);
    system.cut("pod-c", &[N1]);
    hold(PARTITION);
    system.heal_all();
    system.wait_for_grants(&all, now_ns(), "after the bridge heals");

    // n2 dies (kill -9) while pod-a is cut off from n3: pod-a has n1 only,
    // the others have n1 and n3. n2 comes back from its AOF.
    let before = system.fence_counters(N2);
    system.cut("pod-a", &[N3]);
    system.kill_node(N2);
    hold(PARTITION);
    system.restart_node(N2);
    let after = system.fence_counters(N2);
    for ((key, before), after) in KEYS.iter().zip(&before).zip(&after) {
        assert!(
            after >= before,
            "n2's fence counter of {key} was {before} before the kill and {after} after the restart: the AOF lost it"
        );
    }
    system.wait_for_grants(&["pod-a"], now_ns(), "from n1 and the restarted n2");
    system.heal_all();
    system.wait_for_grants(&all, now_ns(), "after the last heal");
    let outcome = system.finish();

    let checked = assert_tokens_increase_in_grant_order(&outcome);
    let (accepted, refused) = assert_no_stale_write_accepted(&outcome);
    assert!(
        refused > 0,
        "pod-c stalled past its TTL every fourth lease, yet no stale write reached the store to be refused"
    );
    println!(
        "{checked} grants in token order through two partitions, a kill -9 and an AOF restart \
         (n2's counters {before:?} -> {after:?}); {accepted} writes accepted, {refused} stale writes refused"
    );
}

#[test]
fn stale_holder_cut_off_from_the_lock_is_refused_by_the_store() {
    let Some(mut system) = OrderSystem::start(&[Worker::new("pod-7f").freezing().once()]) else {
        return;
    };
    // pod-7f takes the lease, claims the order and freezes (a stop-the-world
    // pause) before writing; meanwhile it loses every lock node but keeps
    // the store, and pod-3c takes the order over.
    let stale = system.worker_index("pod-7f");
    common::wait_until("pod-7f to freeze after its claim", RECOVERY, || {
        system.workers[stale].assert_running();
        system.workers[stale].is_frozen().then_some(())
    });
    let stale_token = system.workers[stale]
        .entries()
        .iter()
        .find_map(|e| match e {
            Entry::Claimed { token, .. } => Some(*token),
            _ => None,
        })
        .expect("pod-7f froze after its claim");
    system.cut("pod-7f", &[N1, N2, N3]);
    system.add_worker(&Worker::new("pod-3c"));
    let successor = system.worker_index("pod-3c");
    let successor_token = common::wait_until("pod-3c to claim the order", RECOVERY, || {
        system.workers[successor].assert_running();
        system.workers[successor]
            .entries()
            .iter()
            .find_map(|e| match e {
                Entry::Claimed { key, token } if key == KEYS[0] => Some(*token),
                _ => None,
            })
    });
    system.workers[stale].resume();
    common::wait_until("pod-7f's write after its pause", RECOVERY, || {
        system.workers[stale].assert_running();
        system.workers[stale]
            .entries()
            .iter()
            .any(|e| matches!(e, Entry::Wrote { .. }))
            .then_some(())
    });
    system.heal_all();
    let outcome = system.finish();

    let (token, accepted, fence, lease_valid) = outcome
        .logs
        .iter()
        .find(|(w, _)| w == "pod-7f")
        .expect("a log per worker")
        .1
        .iter()
        .find_map(|e| match e {
            Entry::Wrote {
                token,
                accepted,
                fence,
                lease_valid,
                ..
            } => Some((*token, *accepted, *fence, *lease_valid)),
            _ => None,
        })
        .expect("pod-7f wrote");
    assert_eq!(token, stale_token);
    assert!(
        !lease_valid,
        "pod-7f's lease (TTL {TTL_MS} ms) should have lapsed before pod-3c was granted the order"
    );
    assert!(
        !accepted,
        "the store accepted pod-7f's write with token {token} after its lease lapsed and pod-3c \
         claimed the order with token {successor_token}"
    );
    assert!(
        fence >= successor_token && successor_token > token,
        "pod-7f's write (token {token}) was refused with fence {fence}; pod-3c claimed with token {successor_token}"
    );
    assert_tokens_increase_in_grant_order(&outcome);
    assert_no_stale_write_accepted(&outcome);
    println!(
        "pod-7f's write with token {token} refused after its pause; pod-3c had claimed the order with token {successor_token}, the record's fence was {fence}"
    );
}

/// The namespaces of `run` that still exist.
fn run_namespaces(run: &str) -> Vec<String> {
    lab::namespaces()
        .into_iter()
        .filter(|ns| ns.starts_with(run))
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

#[test]
fn a_failing_scenario_leaves_no_namespace_or_process_behind() {
    if Lab::available().is_none() {
        return;
    }
    let (report, seen) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let mut lab = Lab::new();
        let member = lab.join("n1");
        let node = Node::start(&lab, member.clone());
        // A process nothing else owns: only the lab can remove it.
        let stray = Command::new("ip")
            .args(["netns", "exec", &member.namespace, "sleep", "600"])
            .spawn()
            .expect("sleep in the namespace");
        report
            .send((
                lab.run().to_string(),
                node.server.pid().expect("running"),
                stray.id(),
            ))
            .expect("the test is listening");
        std::mem::forget(stray);
        panic!("a scenario fails halfway");
    })
    .join();
    assert!(failed.is_err(), "the scenario thread should have failed");
    let (run, server, stray) = seen.recv().expect("the scenario reported its run");
    assert_eq!(run_namespaces(&run), Vec::<String>::new());
    let logs = std::env::temp_dir().join(&run);
    assert!(
        logs.is_dir(),
        "a failed run keeps its logs in {}",
        logs.display()
    );
    std::fs::remove_dir_all(&logs).expect("the kept logs can be removed");
    assert!(
        !is_running(server),
        "redis-server {server} survived its run"
    );
    common::wait_until(
        &format!("the stray process {stray} to be killed"),
        Duration::from_secs(5),
        || (!is_running(stray)).then_some(()),
    );
}

#[test]
fn leftovers_of_a_crashed_run_are_removed() {
    if Lab::available().is_none() {
        return;
    }
    // A run whose process is gone: a pid that has exited, and a start time
    // no process has. No other run may remove it before it is complete.
    let lock = lab::cleanup_lock();
    let mut exited = Command::new("true").spawn().expect("true");
    exited.wait().expect("true exits");
    let crashed = format!("{}{}-0-0", lab::PREFIX, exited.id());
    let namespace = format!("{crashed}-n1");
    let status = Command::new("ip")
        .args(["netns", "add", &namespace])
        .status()
        .expect("ip");
    assert!(status.success(), "cannot create {namespace}");
    let mut survivor = Command::new("ip")
        .args(["netns", "exec", &namespace, "sleep", "600"])
        .spawn()
        .expect("sleep in the namespace");
    common::wait_until(
        "the crashed run's process to be in its namespace",
        Duration::from_secs(5),
        || {
            lab::pids_in(&namespace)
                .contains(&survivor.id())
                .then_some(())
        },
    );
    let dir = std::env::temp_dir().join(&crashed);
    std::fs::create_dir_all(&dir).expect("a log directory");
    drop(lock);

    let lab = Lab::new();

    assert!(
        !lab::namespaces().contains(&namespace),
        "the crashed run's namespace {namespace} is still there"
    );
    let status = common::wait_until(
        "the crashed run's process to be killed",
        Duration::from_secs(5),
        || survivor.try_wait().ok().flatten(),
    );
    assert!(
        !status.success(),
        "the process in {namespace} should have been killed"
    );
    assert!(
        !dir.exists(),
        "the crashed run's directory {} is still there",
        dir.display()
    );
    // The live run is untouched.
    assert!(!run_namespaces(lab.run()).is_empty());
}

#[test]
fn missing_namespaces_are_reported_and_fail_under_ci() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let empty = tempfile::tempdir().expect("a temporary directory");
    let scenario = "minority_worker_is_granted_nothing_and_gives_up_within_its_deadline";
    let run_as = |user: Option<&str>, ci: bool, path: &std::ffi::OsStr| {
        let mut cmd = match user {
            // setpriv drops root for the test binary, keeping the environment.
            Some(uid) => {
                let mut cmd = Command::new("setpriv");
                cmd.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                ])
                .arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        cmd.args([scenario, "--exact", "--nocapture", "--test-threads=1"])
            .env("PATH", path)
            .env_remove("CI");
        if ci {
            cmd.env("CI", "1");
        }
        let output = cmd.output().expect("the test binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status, text)
    };

    // No `ip` on PATH.
    let (status, text) = run_as(None, false, empty.path().as_os_str());
    assert!(status.success(), "without CI the test is skipped:\n{text}");
    assert!(text.contains("SKIPPED: `ip` is not on PATH"), "{text}");
    let (status, text) = run_as(None, true, empty.path().as_os_str());
    assert_eq!(status.code(), Some(101), "under CI the test fails:\n{text}");
    assert!(
        text.contains("`ip` is not on PATH") && text.contains("CI requires it"),
        "{text}"
    );

    // `ip` is there but the test does not run as root (only checkable from root).
    let path = std::env::var_os("PATH").unwrap_or_default();
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || common::which("setpriv").is_none() || common::which("ip").is_none() {
        eprintln!("not checked: the run without root (needs root, setpriv and ip)");
        return;
    }
    let nobody = Some("65534");
    let (status, text) = run_as(nobody, false, &path);
    assert!(status.success(), "without CI the test is skipped:\n{text}");
    assert!(
        text.contains("SKIPPED: network namespaces are not available")
            && text.contains("need root"),
        "{text}"
    );
    let (status, text) = run_as(nobody, true, &path);
    assert_eq!(status.code(), Some(101), "under CI the test fails:\n{text}");
    assert!(
        text.contains("network namespaces are not available") && text.contains("CI requires them"),
        "{text}"
    );
}
