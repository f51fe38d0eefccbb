//! Shared by the integration tests: outside tools and waiting on conditions.
//!
//! A test that needs an outside tool (kubectl, promtool, tmux, redis-server)
//! calls [`require_tool`]. Under CI (`CI` set, as `.ci/run` does) a missing
//! tool fails the test with the install command; elsewhere the skip is
//! printed and the test returns. Tests wait on conditions with a deadline
//! ([`wait_until`], [`wait_until_async`]), never on a fixed sleep.

#![allow(dead_code)]

pub mod drill;
pub mod kubectl;
pub mod postgres;
pub mod tmux;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// True when running under CI (`.ci/run` exports `CI=1`).
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Finds `tool` on `PATH`. Missing: panics under CI (with the Debian package
/// that provides it), otherwise prints why the test is skipped and returns
/// `None`.
pub fn require_tool(tool: &str, package: &str) -> Option<PathBuf> {
    if let Some(path) = which(tool) {
        return Some(path);
    }
    let message =
        format!("`{tool}` is not on PATH (install it with `apt-get install -y {package}`)");
    if under_ci() {
        panic!("{message}; CI requires it");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// The first executable called `tool` on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Runs `command` to its end and returns what it printed; kills it and
/// panics if it runs longer than `deadline` (a hang is a failure, not a
/// stuck test run).
pub fn output_within(
    command: &mut std::process::Command,
    deadline: Duration,
) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    // Drained on their own threads so that a chatty child cannot block on a
    // full pipe and look hung.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits for the child") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout drained"),
        stderr: stderr.join().expect("stderr drained"),
    }
}

/// Polls `condition` every 10 ms until it returns `Some`, or panics with
/// `what` after `deadline`.
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async [`wait_until`]: polls the future-returning `condition` every 10 ms.
pub async fn wait_until_async<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
