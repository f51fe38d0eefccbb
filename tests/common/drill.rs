//! A `warroom drill` run through the real binary for end-to-end tests: its
//! output collected as it comes, in a fresh parent directory (`--dir`) that
//! everything the drill starts names, killed on drop if still running.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A drill must start (Redis, cluster, exporter, Prometheus) well within this.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running `warroom drill`.
pub struct Drill {
    /// The drill process.
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    /// The directory given as `--dir` (the drill makes its own inside).
    pub parent: tempfile::TempDir,
}

impl Drill {
    /// Starts `warroom drill --dir <fresh> ARGS` with stdin closed and
    /// `WARROOM_REDIS_SERVER` unset; `adjust` may change the command first.
    pub fn start_with(args: &[&str], adjust: impl FnOnce(&mut Command)) -> Drill {
        let parent = tempfile::tempdir().expect("a temporary directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_warroom"));
        command
            .arg("drill")
            .arg("--dir")
            .arg(parent.path())
            .args(args)
            .env_remove("WARROOM_REDIS_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("warroom starts");
        let mut readers = Vec::new();
        let mut collect = |pipe: Box<dyn std::io::Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut text = sink.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            }));
            text
        };
        let stdout = collect(Box::new(child.stdout.take().expect("piped")));
        let stderr = collect(Box::new(child.stderr.take().expect("piped")));
        Drill {
            child,
            stdout,
            stderr,
            readers,
            parent,
        }
    }

    /// Standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the drill says it runs; returns its kubeconfig path.
    pub fn wait_started(&mut self) -> PathBuf {
        let start = Instant::now();
        loop {
            let stderr = self.stderr();
            if let Some(line) = stderr.lines().find_map(|l| l.strip_prefix("kubeconfig: "))
                && stderr.contains("pod logs: ")
            {
                return PathBuf::from(line.trim());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the drill ended ({status}) before it started:\n{stderr}\n{}",
                    self.stdout()
                );
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "the drill did not start within {START_DEADLINE:?}:\n{stderr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the drill process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} delivered");
    }

    /// Waits for the drill to exit (killed and failed after `deadline`),
    /// then for its output to be read to the end (2 s at most: a process
    /// it started may still hold the pipes).
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waits") {
                break status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the drill did not end within {deadline:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let drained = Instant::now();
        while !self.readers.iter().all(JoinHandle::is_finished)
            && drained.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }

    /// Standard output as the JSON report of `--report json`.
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| {
            panic!("a JSON report ({e}):\n{}\n{}", self.stdout(), self.stderr())
        })
    }

    /// The drill directory (the only directory in the parent).
    pub fn dir(&self) -> PathBuf {
        std::fs::read_dir(self.parent.path())
            .expect("the parent exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.is_dir())
            .expect("a drill directory")
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
