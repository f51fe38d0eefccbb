//! The network of a partition test: one network namespace per Redis node and
//! per client, all joined by a bridge in a namespace of their own, with links
//! cut by blackhole routes on both ends.
//!
//! Nothing is created in the host's own namespace: each run has its own
//! switch namespace, so every run can use the same addresses (10.77.0.0/24)
//! without meeting another run's traffic. Names are unique per run
//! (`warroom-partition-<pid>-<process start time>-<n>-<member>`), so runs in
//! parallel and the leftovers of a crashed run never collide; a new lab
//! removes the namespaces, processes and log directories of runs whose
//! process is gone. Dropping a [`Lab`] (also while a failing test unwinds)
//! kills whatever still runs in its namespaces and deletes them, which also
//! destroys their veth pairs.
//!
//! The lab knows addresses and links, not what runs over them.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every namespace and directory of a partition run starts with this.
pub const PREFIX: &str = "warroom-partition-";

/// Where `ip netns` keeps the named namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// The bridge inside the switch namespace.
const BRIDGE: &str = "br0";

/// One namespace on the bridge: a Redis node, the store, or a client.
#[derive(Debug, Clone)]
pub struct Member {
    /// The namespace name.
    pub namespace: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
}

/// The namespaces, links and cuts of one run.
pub struct Lab {
    run: String,
    switch: String,
    members: Vec<Member>,
    cuts: BTreeSet<(String, String)>,
    dir: PathBuf,
}

impl Lab {
    /// Whether this machine can run partition tests: `ip` on PATH, root, and
    /// `ip netns add` working. When it cannot, says why; under CI (`CI` set)
    /// that is a failure, elsewhere the test is skipped (`None`).
    pub fn available() -> Option<()> {
        crate::common::require_tool("ip", "iproute2")?;
        crate::common::require_tool("redis-server", "redis-server")?;
        let problem = if euid() != 0 {
            Some(format!(
                "network namespaces need root (`ip netns add` needs CAP_SYS_ADMIN), and this test runs as uid {}; run it as root",
                euid()
            ))
        } else {
            let probe = format!("{}probe", run_name());
            match ip(&["netns", "add", &probe]) {
                Ok(()) => {
                    let _ = ip(&["netns", "del", &probe]);
                    None
                }
                Err(e) => Some(format!(
                    "cannot create a network namespace ({e}); the kernel or container does not allow it"
                )),
            }
        };
        let Some(problem) = problem else {
            return Some(());
        };
        let message = format!("network namespaces are not available: {problem}");
        if crate::common::under_ci() {
            panic!("{message}; CI requires them for the partition tests");
        }
        eprintln!("SKIPPED: {message}");
        None
    }

    /// Removes what crashed runs left, then creates this run's switch.
    pub fn new() -> Self {
        remove_leftovers();
        let run = run_name();
        let dir = std::env::temp_dir().join(&run);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let switch = format!("{run}-switch");
        let lab = Lab {
            run,
            switch: switch.clone(),
            members: Vec::new(),
            cuts: BTreeSet::new(),
            dir,
        };
        // From here on the lab owns the switch, so a failure below is cleaned up.
        must(&["netns", "add", &switch]);
        must(&["-n", &switch, "link", "set", "lo", "up"]);
        must(&["-n", &switch, "link", "add", BRIDGE, "type", "bridge"]);
        must(&["-n", &switch, "link", "set", BRIDGE, "up"]);
        lab
    }

    /// This run's name (every namespace of the run starts with it).
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The directory for this run's logs (kept when a test fails, removed
    /// otherwise, and by the next run once this process is gone).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds a namespace for `role`, plugged into the bridge with the next
    /// address.
    pub fn join(&mut self, role: &str) -> Member {
        let index = self.members.len();
        let address = Ipv4Addr::new(10, 77, 0, 10 + u8::try_from(index).expect("few members"));
        let namespace = format!("{}-{role}", self.run);
        let port = format!("v{index}");
        must(&["netns", "add", &namespace]);
        let member = Member {
            namespace: namespace.clone(),
            address,
        };
        self.members.push(member.clone());
        must(&["-n", &namespace, "link", "set", "lo", "up"]);
        must(&[
            "-n",
            &namespace,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ]);
        must(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        must(&["-n", &namespace, "link", "set", "eth0", "up"]);
        must(&["-n", &self.switch, "link", "set", &port, "master", BRIDGE]);
        must(&["-n", &self.switch, "link", "set", &port, "up"]);
        member
    }

    /// Cuts the link between `a` and `b`: each drops what it would send to
    /// the other (a blackhole route on both ends), so packets already in
    /// flight are lost and nothing reaches the other side by another way.
    pub fn cut(&mut self, a: &Member, b: &Member) {
        for (from, to) in [(a, b), (b, a)] {
            must(&[
                "-n",
                &from.namespace,
                "route",
                "add",
                "blackhole",
                &format!("{}/32", to.address),
            ]);
        }
        self.cuts.insert(ordered(a, b));
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&mut self, a: &Member, b: &Member) {
        for (from, to) in [(a, b), (b, a)] {
            must(&[
                "-n",
                &from.namespace,
                "route",
                "del",
                "blackhole",
                &format!("{}/32", to.address),
            ]);
        }
        self.cuts.remove(&ordered(a, b));
    }

    /// Restores every cut link.
    pub fn heal_all(&mut self) {
        let cuts: Vec<(String, String)> = self.cuts.iter().cloned().collect();
        for (a, b) in cuts {
            let a = self.member(&a);
            let b = self.member(&b);
            self.heal(&a, &b);
        }
    }

    fn member(&self, namespace: &str) -> Member {
        self.members
            .iter()
            .find(|m| m.namespace == namespace)
            .cloned()
            .expect("a member of this lab")
    }

    /// Runs `f` on a thread that has entered `member`'s network namespace:
    /// sockets it opens and processes it starts live there. Only that thread
    /// moves; the rest of the test process stays where it is.
    pub fn run_in<T: Send>(&self, member: &Member, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new(NETNS_DIR).join(&member.namespace);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(&path);
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for member in self.members.iter().rev() {
            remove_namespace(&member.namespace);
        }
        remove_namespace(&self.switch);
        if std::thread::panicking() {
            eprintln!(
                "partition run {}: namespaces removed; client logs kept in {}",
                self.run,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `(a, b)` with the smaller name first, so a link has one name.
fn ordered(a: &Member, b: &Member) -> (String, String) {
    if a.namespace <= b.namespace {
        (a.namespace.clone(), b.namespace.clone())
    } else {
        (b.namespace.clone(), a.namespace.clone())
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &Path) {
    let ns = File::open(path)
        .unwrap_or_else(|e| panic!("cannot open network namespace {}: {e}", path.display()));
    // SAFETY: setns(2) with a file descriptor we own, for CLONE_NEWNET only:
    // it changes the network namespace of the calling thread and nothing else.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        panic!(
            "cannot enter network namespace {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// A fresh run name: this process, its start time (so that a reused pid is
/// not mistaken for a live run) and a counter for tests in parallel.
fn run_name() -> String {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let pid = std::process::id();
    let started = process_start(pid).unwrap_or(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{pid}-{started}-{n}")
}

/// The start time of process `pid` (clock ticks after boot), if it runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may contain spaces, so count from
    // the closing parenthesis (field 3 onwards).
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the run that owns `name` (a namespace or directory name) is gone.
fn owner_is_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let mut parts = rest.split('-');
    let (Some(Ok(pid)), Some(Ok(started))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        // Not a name this lab makes: leave it alone.
        return false;
    };
    process_start(pid) != Some(started)
}

/// Held while leftovers are removed, across processes: a test that makes a
/// run look crashed holds it until that run is complete.
pub struct CleanupLock {
    _file: File,
}

/// Waits for and takes the [`CleanupLock`].
pub fn cleanup_lock() -> CleanupLock {
    let path = std::env::temp_dir().join("warroom-partitions.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    // SAFETY: flock(2) on a descriptor we own; released when it closes.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        panic!(
            "cannot lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    CleanupLock { _file: file }
}

/// Kills what still runs in the namespaces of runs whose process is gone,
/// deletes those namespaces and their log directories.
pub fn remove_leftovers() {
    let _lock = cleanup_lock();
    for namespace in namespaces() {
        if owner_is_gone(&namespace) {
            eprintln!("removing network namespace {namespace} left by a run that is gone");
            remove_namespace(&namespace);
        }
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if owner_is_gone(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The names `ip netns list` shows.
pub fn namespaces() -> Vec<String> {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Process ids whose network namespace is `namespace`.
pub fn pids_in(namespace: &str) -> Vec<u32> {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .filter(|&pid| pid != std::process::id())
        .collect()
}

/// Kills every process in `namespace`, then deletes it (which destroys its
/// interfaces once the last process has gone). Failures are reported, not
/// raised: this runs on every exit path, also while a test unwinds.
fn remove_namespace(namespace: &str) {
    for pid in pids_in(namespace) {
        // SAFETY: kill(2) of a process found in a namespace this run owns.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    if let Err(e) = ip(&["netns", "del", namespace])
        && Path::new(NETNS_DIR).join(namespace).exists()
    {
        eprintln!("could not delete network namespace {namespace}: {e}");
    }
}

/// Runs `ip ARGS`; the error carries the command and what `ip` said.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// [`ip`], panicking on failure (setting up the lab cannot go on without it).
fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}
