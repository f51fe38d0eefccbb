//! Worker processes as the supervisor starts them: one child per pod, its
//! stdout and stderr appended to the pod's log file, tied to the drill's
//! life with `PR_SET_PDEATHSIG(SIGKILL)` so that it dies with the drill even
//! when the drill is SIGKILLed and cannot clean up.
//!
//! Each worker runs in its own process group, so a Ctrl-C at the drill's
//! terminal reaches the drill (which stops workers in order), not the workers.
//!
//! The death signal fires when the *thread* that forked the child exits, not
//! the process. Children are therefore forked from one long-lived thread
//! owned by [`Spawner`], which lives as long as the supervisor: a short-lived
//! runtime thread must never be a worker's parent.
//!
//! Signals go only to children that have not been reaped yet (a [`Worker`]
//! holds its [`Child`] until it has seen the exit status), so a pid can
//! never have been reused by the time it is signalled.
//!
//! This file knows processes and signals; it knows nothing about pods or the
//! cluster.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// What to run for each worker. Its `Debug` form names the environment
/// variables but never shows their values (the Redis URL may hold a
/// password).
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program (absolute path, or a name looked up on `PATH`).
    pub program: PathBuf,
    /// Its arguments (never a secret: `/proc/*/cmdline` is world-readable).
    pub args: Vec<String>,
    /// Extra environment, on top of the drill's own (secrets go here).
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for WorkerCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("WorkerCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &names)
            .finish()
    }
}

/// Why a worker process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be opened for appending.
    #[error("cannot open the worker log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The spawning thread is gone (the supervisor is shutting down).
    #[error("the worker spawner has stopped")]
    Stopped,
}

/// One running (or exited but not yet reaped) worker process.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    pid: u32,
    /// Size of the log file when this process started: where its output begins.
    pub log_start: u64,
    exited: Option<ExitStatus>,
}

impl Worker {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has ended (reaping it), else None.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Sends `signal` unless the process has already been reaped. Returns
    /// whether it was sent.
    pub fn signal(&mut self, signal: libc::c_int) -> bool {
        if self.exit_status().is_some() {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill(2) with a pid of our own unreaped child (checked just
        // above) and a valid signal number; it touches no memory of ours.
        unsafe { libc::kill(pid, signal) == 0 }
    }
}

type SpawnRequest = (WorkerSpec, mpsc::Sender<Result<Worker, ProcessError>>);

/// What one spawn needs: the command, the pod's extra env and the log file.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The command shared by every worker.
    pub command: WorkerCommand,
    /// Environment added for this worker (its pod name, …).
    pub env: Vec<(String, String)>,
    /// The file stdout and stderr are appended to.
    pub log: PathBuf,
}

/// The one thread that forks every worker (see the module comment).
/// Dropping it stops the thread once pending spawns are done.
#[derive(Debug)]
pub struct Spawner {
    requests: Option<mpsc::Sender<SpawnRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    /// Starts the spawning thread.
    pub fn start() -> std::io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("worker-spawner".into())
            .spawn(move || {
                for (spec, reply) in incoming {
                    let _ = reply.send(spawn_now(&spec));
                }
            })?;
        Ok(Spawner {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Starts one worker (blocking briefly while the spawning thread forks).
    pub fn spawn(&self, spec: WorkerSpec) -> Result<Worker, ProcessError> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or(ProcessError::Stopped)?
            .send((spec, reply))
            .map_err(|_| ProcessError::Stopped)?;
        answer.recv().map_err(|_| ProcessError::Stopped)?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_log(path: &Path) -> Result<std::fs::File, ProcessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ProcessError::Log {
            path: path.to_path_buf(),
            source,
        })
}

fn spawn_now(spec: &WorkerSpec) -> Result<Worker, ProcessError> {
    use std::os::unix::process::CommandExt;
    let stdout = open_log(&spec.log)?;
    let log_start = stdout.metadata().map(|m| m.len()).unwrap_or(0);
    let stderr = stdout.try_clone().map_err(|source| ProcessError::Log {
        path: spec.log.clone(),
        source,
    })?;
    let mut command = Command::new(&spec.command.program);
    command
        .args(&spec.command.args)
        .envs(spec.command.env.iter().map(|(k, v)| (k, v)))
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: getpid is async-signal-safe and runs before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (prctl, setpgid, getppid, _exit); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Its own process group: a Ctrl-C at the drill's terminal goes
            // to the drill, which stops workers in order (SIGTERM), and not
            // straight to every worker.
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the death signal was armed.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: spec.command.program.clone(),
        source,
    })?;
    Ok(Worker {
        pid: child.id(),
        child,
        log_start,
        exited: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn workers_write_to_their_log_and_can_be_stopped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spawner = Spawner::start().expect("spawner");
        let log = dir.path().join("pod-a.log");
        let mut worker = spawner
            .spawn(WorkerSpec {
                command: WorkerCommand {
                    program: "sh".into(),
                    args: vec![
                        "-c".into(),
                        "echo \"hello $WARROOM_POD_NAME\"; exec sleep 30".into(),
                    ],
                    env: vec![],
                },
                env: vec![("WARROOM_POD_NAME".into(), "pod-a".into())],
                log: log.clone(),
            })
            .expect("spawns");
        let start = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("hello pod-a")
        {
            assert!(start.elapsed() < Duration::from_secs(10), "no output");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(worker.signal(libc::SIGKILL));
        while worker.exit_status().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "not stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !worker.signal(libc::SIGTERM),
            "a reaped child is never signalled"
        );
    }

    #[test]
    fn debug_output_never_shows_environment_values() {
        let command = WorkerCommand {
            program: "warroom".into(),
            args: vec!["drill".into(), "worker".into()],
            env: vec![(
                "WARROOM_REDIS_URL".into(),
                "redis://:hunter2@127.0.0.1:6379".into(),
            )],
        };
        let shown = format!("{command:?}");
        assert!(shown.contains("WARROOM_REDIS_URL"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spawner = Spawner::start().expect("spawner");
        let err = spawner
            .spawn(WorkerSpec {
                command: WorkerCommand {
                    program: "/nonexistent/warroom-worker".into(),
                    args: vec![],
                    env: vec![],
                },
                env: vec![],
                log: dir.path().join("x.log"),
            })
            .expect_err("no such program");
        assert!(
            err.to_string().contains("/nonexistent/warroom-worker"),
            "{err}"
        );
    }
}
