//! `redis-server` processes that warroom starts and owns: for drills, tests and
//! benchmarks on one machine.
//!
//! A [`RedisNode`] is a real `redis-server` on a free loopback port with its own
//! working directory. It can be paused (`SIGSTOP`, what a long GC pause looks
//! like from the outside), resumed, killed (`SIGKILL`, a lost node) and
//! restarted on the same port and directory (so an append-only file, when
//! enabled, is replayed). Dropping the node kills the process and removes its
//! directory.
//!
//! Passwords given to a node never appear in its `Debug` output or in its
//! errors (which quote the server's log): both go through the redactor.
//!
//! This module knows nothing about locks; it only runs servers.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the `redis-server` binary (default: from `PATH`).
pub const SERVER_BIN_ENV: &str = "WARROOM_REDIS_SERVER";

/// How long to wait for a started server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The `redis-server` binary could not be run.
    #[error("cannot run {bin}: {source} (is redis-server installed and on PATH?)")]
    Spawn {
        /// The binary that was tried.
        bin: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The server exited or never became ready.
    #[error("redis-server on port {port} did not become ready: {detail}")]
    NotReady {
        /// The port it was started on.
        port: u16,
        /// The end of its log, or the reason.
        detail: String,
    },
    /// A file-system or signal operation failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// TLS material for a node that listens with TLS only.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA certificate used to verify clients (PEM); clients are not required to
    /// present certificates.
    pub ca: PathBuf,
}

/// How to start a node. Its `Debug` shows the password (and secret-looking
/// extra arguments) redacted.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// Turn on the append-only file with `appendfsync always`, so that data
    /// (fencing counters in particular) survives a `SIGKILL` and restart.
    pub append_only: bool,
    /// Require this password (`requirepass`).
    pub password: Option<String>,
    /// Listen with TLS only, using these files.
    pub tls: Option<TlsFiles>,
    /// Value for `notify-keyspace-events`, if any.
    pub keyspace_events: Option<String>,
    /// Extra `--name value` arguments passed to the server as they are.
    pub extra_args: Vec<(String, String)>,
    /// Create the node's working directory under this one (and keep it
    /// when the node is dropped) instead of a fresh one in the temporary
    /// directory that is removed with the node.
    pub parent_dir: Option<PathBuf>,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra_args: Vec<(String, String)> = self
            .extra_args
            .iter()
            .map(|(name, value)| {
                let shown = crate::redact::redact_text(&format!("--{name} {value}"))
                    .trim_start_matches(&format!("--{name} "))
                    .to_string();
                (name.clone(), shown)
            })
            .collect();
        f.debug_struct("NodeOptions")
            .field("append_only", &self.append_only)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::redact::REDACTED),
            )
            .field("tls", &self.tls)
            .field("keyspace_events", &self.keyspace_events)
            .field("extra_args", &extra_args)
            .field("parent_dir", &self.parent_dir)
            .finish()
    }
}

/// A running (or stopped) `redis-server` process owned by this value.
#[derive(Debug)]
pub struct RedisNode {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: NodeOptions,
    starts: usize,
}

impl RedisNode {
    /// Starts a node with default options on a free loopback port.
    pub fn start() -> Result<Self, NodeError> {
        Self::start_with(NodeOptions::default())
    }

    /// Starts a node with the given options on a free loopback port.
    pub fn start_with(options: NodeOptions) -> Result<Self, NodeError> {
        let mut last_error = None;
        // A port found free can be taken before the server binds it; try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let dir = match &options.parent_dir {
                Some(parent) => parent.join(format!("redis-{port}")),
                None => std::env::temp_dir().join(format!(
                    "warroom-redis-{}-{port}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                )),
            };
            fs::create_dir_all(&dir)?;
            let mut node = RedisNode {
                child: None,
                port,
                dir,
                options: options.clone(),
                starts: 0,
            };
            match node.spawn() {
                Ok(()) => return Ok(node),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| NodeError::NotReady {
            port: 0,
            detail: "no free port".into(),
        }))
    }

    /// The port the node listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's working directory (append-only files, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for this node, with password and scheme as configured
    /// (`rediss://…/#insecure` for TLS nodes: the test certificate is self-signed).
    pub fn url(&self) -> String {
        let auth = match &self.options.password {
            Some(p) => format!(":{p}@"),
            None => String::new(),
        };
        if self.options.tls.is_some() {
            format!("rediss://{auth}127.0.0.1:{}/#insecure", self.port)
        } else {
            format!("redis://{auth}127.0.0.1:{}", self.port)
        }
    }

    /// The process id, while the process exists.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the process with `SIGSTOP`: it keeps its sockets but answers
    /// nothing, as during a long stop-the-world pause.
    pub fn pause(&self) -> Result<(), NodeError> {
        self.signal(libc::SIGSTOP)
    }

    /// Resumes a paused process with `SIGCONT`.
    pub fn resume(&self) -> Result<(), NodeError> {
        self.signal(libc::SIGCONT)
    }

    /// Kills the process with `SIGKILL` (a lost node) and reaps it.
    pub fn kill(&mut self) -> Result<(), NodeError> {
        if let Some(mut child) = self.child.take() {
            // A stopped process still dies on SIGKILL.
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the process again on the same port and directory. With
    /// `append_only`, the data written before the kill is loaded back.
    pub fn restart(&mut self) -> Result<(), NodeError> {
        self.kill()?;
        // The old socket may linger briefly; retry binding for a while.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("restart of port {} not ready yet: {e}", self.port);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the process is running (not killed and not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn signal(&self, signal: libc::c_int) -> Result<(), NodeError> {
        let pid = self.pid().ok_or_else(|| {
            NodeError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                "the node is not running",
            ))
        })?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(NodeError::Io(io::Error::last_os_error()))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), NodeError> {
        let bin = std::env::var(SERVER_BIN_ENV).unwrap_or_else(|_| "redis-server".to_string());
        let log = self.log_path();
        // Readiness is read from the log, so start each run with an empty one.
        let _ = fs::remove_file(&log);
        let mut cmd = Command::new(&bin);
        let port = self.port.to_string();
        cmd.arg("--bind").arg("127.0.0.1");
        match &self.options.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port]);
                cmd.arg("--tls-cert-file").arg(&tls.cert);
                cmd.arg("--tls-key-file").arg(&tls.key);
                cmd.arg("--tls-ca-cert-file").arg(&tls.ca);
                cmd.args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.args(["--port", &port]);
            }
        }
        cmd.arg("--dir").arg(&self.dir);
        cmd.arg("--logfile").arg(&log);
        cmd.args(["--save", "", "--daemonize", "no", "--protected-mode", "no"]);
        if self.options.append_only {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.options.password {
            cmd.args(["--requirepass", password]);
        }
        if let Some(events) = &self.options.keyspace_events {
            cmd.args(["--notify-keyspace-events", events]);
        }
        for (name, value) in &self.options.extra_args {
            cmd.arg(format!("--{name}")).arg(value);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| NodeError::Spawn {
            bin: bin.clone(),
            source,
        })?;
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), NodeError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(NodeError::NotReady {
                    port: self.port,
                    detail: format!("exited with {status}: {}", self.log_tail()),
                });
            }
            let log = fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.contains("Ready to accept connections") && self.accepts_tcp() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.kill();
                return Err(NodeError::NotReady {
                    port: self.port,
                    detail: format!("timed out: {}", self.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn accepts_tcp(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        if self.options.tls.is_some() {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        // +PONG, or -NOAUTH when a password is set: either way it answers.
        matches!(stream.read(&mut buf), Ok(n) if n > 0)
    }

    /// The last lines of the server's log, redacted (a configuration error
    /// quotes the offending directive, which may be `requirepass`).
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        crate::redact::redact_text(&lines[lines.len().saturating_sub(5)..].join(" | ")).into_owned()
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        let _ = self.signal(libc::SIGCONT);
        let _ = self.kill();
        if self.options.parent_dir.is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Makes the process `cmd` starts die (`SIGKILL`) when the thread that
/// starts it ends, the owning process included, even when that process is
/// itself killed with `SIGKILL` and can clean nothing up (Linux
/// `PR_SET_PDEATHSIG`). A child whose parent is already gone by the time
/// it runs refuses to start.
///
/// The signal follows the starting *thread*: start long-lived children from
/// a thread that lives as long as they should (the main thread, a runtime
/// worker), not from a short-lived helper thread.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe; read here, before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls prctl and getppid, both
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("the parent process is gone"));
            }
            Ok(())
        });
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
