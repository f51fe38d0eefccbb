//! An order-service worker as its own process inside a network namespace,
//! so that workers see the network differently: the test binary started
//! again (`ip netns exec NS <test binary> worker_process --exact --ignored`)
//! with its plan in [`PLAN_ENV`].
//!
//! A worker loops until its standard input closes (the test closes it to
//! stop the worker; a test that dies closes it too): take the Redlock lease
//! on an order, claim the order's record in the fenced store with the
//! lease's token, work (or stall past the TTL, a GC pause), write the record
//! (the chain of entries read at the claim, plus `worker:token`), release.
//! Every step goes to a JSON Lines log, one flushed line per step, with
//! times on the machine's monotonic clock (shared by every process and
//! namespace), which the test reads back.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warroom::fence::{Claim, FencedStore, WriteOutcome};
use warroom::lock::{LockError, LockOptions, Redlock};

use crate::lab::{Lab, Member};

/// Names the environment variable holding a worker's plan (JSON).
pub const PLAN_ENV: &str = "WARROOM_PARTITION_WORKER";

/// What one worker does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    /// Holder name (`pod-a`).
    pub name: String,
    /// `redis://` URLs of the three lock nodes, as this worker reaches them.
    pub lock_nodes: Vec<String>,
    /// `redis://` URL of the fenced order store.
    pub store: String,
    /// Lock keys, taken in turn.
    pub keys: Vec<String>,
    /// Lease TTL.
    pub ttl_ms: u64,
    /// Per-node request timeout.
    pub node_timeout_ms: u64,
    /// How long one `acquire` may wait.
    pub wait_ms: u64,
    /// Work between claim and write.
    pub work_ms: u64,
    /// Every `stall_every`-th grant stalls `stall_ms` instead of working.
    pub stall_every: Option<u32>,
    /// Length of a stall (longer than the TTL: the lease lapses meanwhile).
    pub stall_ms: u64,
    /// Stall by stopping the whole process (`SIGSTOP` to itself, a
    /// stop-the-world pause) until the test resumes it, instead of sleeping.
    pub freeze: bool,
    /// Stop taking leases after this many grants.
    pub grants: Option<u32>,
    /// Where the JSON Lines log goes.
    pub log: PathBuf,
}

/// One line of a worker's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// Connected to the lock nodes and the store.
    Ready {
        /// When.
        at_ns: u64,
    },
    /// `acquire` returned a lease.
    Granted {
        /// Lock key.
        key: String,
        /// Fencing token.
        token: u64,
        /// Just before `acquire` was called.
        started_ns: u64,
        /// Just after it returned.
        granted_ns: u64,
    },
    /// `acquire` gave up.
    Refused {
        /// Lock key.
        key: String,
        /// Just before `acquire` was called.
        started_ns: u64,
        /// Just after it returned.
        ended_ns: u64,
        /// Nodes that answered the last attempt, when too few did (no quorum).
        no_quorum_answered: Option<usize>,
        /// The error as shown to a person.
        message: String,
    },
    /// The record was claimed for the lease's token.
    Claimed {
        /// Lock key.
        key: String,
        /// Fencing token.
        token: u64,
    },
    /// The claim was refused: a newer holder had claimed the record.
    ClaimRefused {
        /// Lock key.
        key: String,
        /// Fencing token.
        token: u64,
        /// The record's fence.
        fence: u64,
    },
    /// The store answered the write.
    Wrote {
        /// Lock key.
        key: String,
        /// Fencing token.
        token: u64,
        /// Whether the store took it.
        accepted: bool,
        /// The record's fence before the write (accepted) or the fence the
        /// token was below (refused).
        fence: u64,
        /// Whether the lease was still valid when the write was sent.
        lease_valid: bool,
        /// Whether this grant stalled past its TTL.
        stalled: bool,
        /// The entry this write appends to the record's chain.
        entry: String,
        /// Just after the store answered.
        at_ns: u64,
    },
    /// The store failed (it is never cut, so this should not happen).
    StoreFailed {
        /// Lock key.
        key: String,
        /// Fencing token.
        token: u64,
        /// The entry of the write, if the failure was a write (it may have
        /// been applied).
        entry: Option<String>,
        /// The error.
        message: String,
    },
    /// The lease was given back.
    Released {
        /// Lock key.
        key: String,
        /// Fencing token.
        token: u64,
        /// Whether the lease was still held (false: it had lapsed or was
        /// taken over, or the nodes could not be reached).
        held: bool,
    },
}

/// The order record a lock key guards (`lock:ord-1` guards `order:ord-1`).
pub fn record_of(key: &str) -> String {
    format!("order:{}", key.strip_prefix("lock:").unwrap_or(key))
}

/// The machine's monotonic clock in nanoseconds: the same for every process
/// and every network namespace, so times from different workers compare.
pub fn now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available on Linux");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Runs the worker in this process if [`PLAN_ENV`] is set; returns whether
/// it was.
pub fn run_from_env() -> bool {
    let Ok(plan) = std::env::var(PLAN_ENV) else {
        return false;
    };
    let plan: WorkerPlan = serde_json::from_str(&plan)
        .unwrap_or_else(|e| panic!("{PLAN_ENV} does not hold a worker plan: {e}"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        // Standard input closes when the test stops this worker or dies.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stop.send(true);
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(contend(plan, stopped));
    true
}

/// The worker's log file: one JSON object per line, flushed per line so a
/// killed worker leaves every complete step behind.
struct Log(File);

impl Log {
    fn append(&mut self, entry: &Entry) {
        let mut line = serde_json::to_vec(entry).expect("entries serialize");
        line.push(b'\n');
        self.0
            .write_all(&line)
            .and_then(|()| self.0.flush())
            .expect("the worker log is writable");
    }
}

async fn contend(plan: WorkerPlan, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut log = Log(File::create(&plan.log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", plan.log.display())));
    let ms = Duration::from_millis;
    let options = LockOptions {
        node_timeout: Some(ms(plan.node_timeout_ms)),
        ..LockOptions::new(ms(plan.ttl_ms), &plan.name).without_events()
    };
    let lock = Redlock::connect(&plan.lock_nodes, options)
        .await
        .unwrap_or_else(|e| panic!("{}: cannot set up the lock: {e}", plan.name));
    let store = FencedStore::connect(&plan.store, &plan.name, None)
        .await
        .unwrap_or_else(|e| panic!("{}: cannot reach the store {}: {e}", plan.name, plan.store));
    log.append(&Entry::Ready { at_ns: now_ns() });

    let mut grants = 0u32;
    let mut turn = 0usize;
    while !*stop.borrow() && plan.grants.is_none_or(|limit| grants < limit) {
        let key = plan.keys[turn % plan.keys.len()].clone();
        turn += 1;
        let started_ns = now_ns();
        let lease = match lock.acquire(&key, ms(plan.wait_ms)).await {
            Ok(lease) => lease,
            Err(e) => {
                let no_quorum_answered = match &e {
                    LockError::NoQuorum { answered, .. } => Some(*answered),
                    _ => None,
                };
                log.append(&Entry::Refused {
                    key,
                    started_ns,
                    ended_ns: now_ns(),
                    no_quorum_answered,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let granted_ns = now_ns();
        grants += 1;
        let token = lease.token();
        log.append(&Entry::Granted {
            key: key.clone(),
            token: token.get(),
            started_ns,
            granted_ns,
        });
        let record = record_of(&key);
        match store.read_for_update(&record, token).await {
            Ok(Claim::Claimed { value, .. }) => {
                log.append(&Entry::Claimed {
                    key: key.clone(),
                    token: token.get(),
                });
                let stalled = plan
                    .stall_every
                    .is_some_and(|every| grants.is_multiple_of(every));
                if stalled && plan.freeze {
                    // SAFETY: raise(2) stops this process until SIGCONT.
                    unsafe {
                        libc::raise(libc::SIGSTOP);
                    }
                } else {
                    let hold = if stalled { plan.stall_ms } else { plan.work_ms };
                    tokio::time::sleep(ms(hold)).await;
                }
                let entry = format!("{}:{}", plan.name, token.get());
                let chain = match value {
                    Some(chain) if !chain.is_empty() => format!("{chain} {entry}"),
                    _ => entry.clone(),
                };
                let lease_valid = lease.is_valid();
                match store.write(&record, token, &chain).await {
                    Ok(outcome) => {
                        let (accepted, fence) = match outcome {
                            WriteOutcome::Accepted { previous_fence } => (true, previous_fence),
                            WriteOutcome::Rejected { fence } => (false, fence),
                        };
                        log.append(&Entry::Wrote {
                            key: key.clone(),
                            token: token.get(),
                            accepted,
                            fence,
                            lease_valid,
                            stalled,
                            entry,
                            at_ns: now_ns(),
                        });
                    }
                    Err(e) => log.append(&Entry::StoreFailed {
                        key: key.clone(),
                        token: token.get(),
                        entry: Some(entry),
                        message: e.to_string(),
                    }),
                }
            }
            Ok(Claim::Rejected { fence }) => log.append(&Entry::ClaimRefused {
                key: key.clone(),
                token: token.get(),
                fence,
            }),
            Err(e) => log.append(&Entry::StoreFailed {
                key: key.clone(),
                token: token.get(),
                entry: None,
                message: e.to_string(),
            }),
        }
        let held = matches!(lease.release().await, Ok(warroom::lock::Release::Released));
        log.append(&Entry::Released {
            key,
            token: token.get(),
            held,
        });
    }
    // Done early (a grant limit): stay until the test stops the worker.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// A worker process the test started, and its log.
pub struct WorkerProcess {
    /// Holder name.
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    output: PathBuf,
}

impl WorkerProcess {
    /// Starts `plan` inside `member`'s namespace.
    pub fn start(lab: &Lab, member: &Member, plan: &WorkerPlan) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let output = lab.dir().join(format!("{}.out", plan.name));
        let out = File::create(&output)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", output.display()));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &member.namespace])
            .arg(exe)
            .args([
                "worker_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ])
            .env(
                PLAN_ENV,
                serde_json::to_string(plan).expect("plans serialize"),
            )
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("a second handle on the output file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start worker {}: {e}", plan.name));
        let stdin = child.stdin.take();
        Self {
            name: plan.name.clone(),
            child,
            stdin,
            log: plan.log.clone(),
            output,
        }
    }

    /// Every complete line of the log so far.
    pub fn entries(&self) -> Vec<Entry> {
        let Ok(file) = File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    /// Whether the worker has stopped itself (a frozen stall).
    pub fn is_frozen(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                let rest = &stat[stat.rfind(')')? + 1..];
                rest.split_whitespace().next().map(|state| state == "T")
            })
            .unwrap_or(false)
    }

    /// Resumes a frozen worker (`SIGCONT`).
    pub fn resume(&self) {
        // SAFETY: kill(2) of our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        assert_eq!(
            rc,
            0,
            "cannot resume worker {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Panics with the worker's output if it has exited (it only exits when
    /// stopped, or when it fails).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "worker {} exited with {status}:\n{}",
                self.name,
                self.output_tail()
            );
        }
    }

    /// Closes the worker's input (it finishes its current step and exits)
    /// and waits for it; panics with its output if it failed.
    pub fn stop(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        let status = crate::common::wait_until(
            &format!("worker {} to finish its step and exit", self.name),
            Duration::from_secs(10),
            || self.child.try_wait().ok().flatten(),
        );
        assert!(
            status.success(),
            "worker {} exited with {status}:\n{}",
            self.name,
            self.output_tail()
        );
        status
    }

    fn output_tail(&self) -> String {
        let output = std::fs::read_to_string(&self.output).unwrap_or_default();
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
