//! Nothing leaks: one password, unique to the test run, is planted in every
//! input of every subcommand (Redis URLs with userinfo and `?password=`,
//! notes, `--param` values, playbook fields, a kubeconfig bearer token, the
//! `REDIS_URL` environment variable, stream entries the exporter reads), the
//! real binary runs, and every byte it wrote is searched: standard output,
//! standard error, every file it created or changed in its directory, the
//! exporter's `/metrics`, and the local cluster server's objects and request
//! log. The password must be nowhere, also not split across wrapped lines.
//!
//! The same runs check the error paths an operator meets at 3 a.m.
//! (unreachable host, wrong password, unparsable URL, TLS to a plain port,
//! Redis killed or frozen mid-run): the documented exit status, never a
//! panic (101), never a hang.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use warroom::cluster::ClusterServer;
use warroom::lock::event::{EventKind, LockEvent, LockMode};
use warroom::redis_node::{NodeOptions, RedisNode};

/// Longest any one command may take; a hang fails the test.
const DEADLINE: Duration = Duration::from_secs(120);

/// A password nobody else would write: letters and digits, unique per call.
fn planted_password() -> String {
    format!("Pw{:016x}Zq", rand::random::<u64>())
}

/// What a finished command printed.
struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "warroom {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    fn stderr_says(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "warroom {:?}: stderr does not say {text:?}:\n{}",
            self.args,
            self.stderr
        );
        self
    }
}

/// Fails if `password` is in `bytes`, also with whitespace and the box
/// characters of wrapped reports taken out (a password split by a line
/// wrap is still a leak).
fn assert_nowhere(password: &str, what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(
        !text.contains(password),
        "the password reached {what}:\n{text}"
    );
    let squeezed: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '│' | '╰' | '╭' | '─' | '┬' | '·'))
        .collect();
    assert!(
        !squeezed.contains(password),
        "the password reached {what}, split across lines:\n{text}"
    );
}

/// A directory a command runs in: its working directory and `$HOME`, with
/// `REDIS_URL` carrying the password in its environment.
struct Sandbox {
    dir: tempfile::TempDir,
    password: String,
}

impl Sandbox {
    fn new(password: &str) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            password: password.to_string(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an input file (inputs may hold the password; only what the
    /// command creates or changes is searched).
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write input");
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warroom"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env(
                "REDIS_URL",
                format!("redis://:{}@redis-0.shop:6379/0", self.password),
            )
            .env_remove("KUBECONFIG")
            .env_remove("WARROOM_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.insert(path, bytes);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// Runs `warroom ARGS` to its end (killed and failed after
    /// [`DEADLINE`]), then searches everything it wrote.
    fn run(&self, args: &[&str]) -> Run {
        let before = self.files();
        let mut child = Spawned::start(self.command(args), args);
        let status = child.wait(DEADLINE);
        let run = child.finish(status);
        self.check(&run, &before);
        run
    }

    /// Searches a finished command's output and the files it created or
    /// changed.
    fn check(&self, run: &Run, before: &BTreeMap<PathBuf, Vec<u8>>) {
        let label = format!("warroom {:?}", run.args);
        assert_ne!(run.code, Some(101), "{label} panicked:\n{}", run.stderr);
        assert_nowhere(
            &self.password,
            &format!("stdout of {label}"),
            run.stdout.as_bytes(),
        );
        assert_nowhere(
            &self.password,
            &format!("stderr of {label}"),
            run.stderr.as_bytes(),
        );
        for (path, bytes) in self.files() {
            if before.get(&path) != Some(&bytes) {
                assert_nowhere(
                    &self.password,
                    &format!("{} (written by {label})", path.display()),
                    &bytes,
                );
            }
        }
    }
}

/// A running `warroom` whose output is collected as it comes.
struct Spawned {
    args: Vec<String>,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    drains: Vec<std::thread::JoinHandle<()>>,
}

impl Spawned {
    fn start(mut command: Command, args: &[&str]) -> Self {
        let mut child = command.spawn().expect("warroom starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let drain = |mut pipe: Box<dyn Read + Send>, into: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
            })
        };
        let drains = vec![
            drain(
                Box::new(child.stdout.take().expect("piped")),
                stdout.clone(),
            ),
            drain(
                Box::new(child.stderr.take().expect("piped")),
                stderr.clone(),
            ),
        ];
        Self {
            args: args.iter().map(|a| a.to_string()).collect(),
            child,
            stdout,
            stderr,
            drains,
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until standard error holds `text`.
    fn wait_for_stderr(&self, text: &str) -> String {
        common::wait_until(
            &format!("warroom {:?} to print {text:?}", self.args),
            Duration::from_secs(30),
            || {
                let stderr = self.stderr();
                stderr.contains(text).then_some(stderr)
            },
        )
    }

    /// Asks it to stop as Ctrl-C does.
    fn interrupt(&self) {
        // SAFETY: kill(2) on the pid of a child this test spawned and has
        // not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
    }

    fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "warroom {:?} did not finish within {deadline:?}\n--- stderr\n{}",
                    self.args,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self, status: ExitStatus) -> Run {
        for drain in self.drains {
            let _ = drain.join();
        }
        let stdout = String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        Run {
            args: self.args,
            code: status.code(),
            stdout,
            stderr,
        }
    }
}

fn redis_server() -> bool {
    common::require_tool("redis-server", "redis-server").is_some()
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    warroom::redis_node::free_port().expect("a free port")
}

fn node_with_password(password: &str) -> RedisNode {
    RedisNode::start_with(NodeOptions {
        password: Some(password.to_string()),
        ..NodeOptions::default()
    })
    .expect("redis-server starts")
}

#[test]
fn bench_lock_never_shows_the_password_and_fails_with_the_documented_status() {
    if !redis_server() {
        return;
    }
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    let dead = dead_port();
    let wrong = node_with_password("another-password-entirely");
    let right = node_with_password(&pw);
    for (url, code, says) in [
        (
            format!("redis://:{pw}@127.0.0.1:{dead}"),
            4,
            "Connection refused",
        ),
        (
            format!("redis://orders:{pw}@127.0.0.1:{dead}/0"),
            4,
            "127.0.0.1",
        ),
        (
            format!("redis://127.0.0.1:{dead}/0?password={pw}"),
            4,
            "password=[REDACTED]",
        ),
        (
            format!("redis://:{pw}/x#y@127.0.0.1:{dead}"),
            2,
            "percent-encoded",
        ),
        (format!("redis://:{pw}"), 2, "not a usable Redis URL"),
        (format!("notaurl:{pw}"), 2, "not a usable Redis URL"),
        (
            format!("redis://:{pw}@127.0.0.1:{}", wrong.port()),
            4,
            "user name or password",
        ),
        (
            format!("rediss://:{pw}@127.0.0.1:{}", right.port()),
            4,
            "TLS",
        ),
    ] {
        sandbox
            .run(&["bench", "lock", "--redis", &url, "--duration", "0.2"])
            .expect_code(code)
            .stderr_says(says);
    }
    let url = format!("redis://:{pw}@127.0.0.1:{}", right.port());
    for extra in [
        &["--mode", "fenced"][..],
        &["--mode", "legacy", "--output", "json"],
    ] {
        let mut args = vec![
            "bench",
            "lock",
            "--redis",
            &url,
            "--duration",
            "0.3",
            "--clients",
            "2",
            "--keys",
            "8",
        ];
        args.extend_from_slice(extra);
        sandbox.run(&args).expect_code(0);
    }
}

/// Kills or freezes the node a second into a `bench lock` run: the run ends
/// with exit 4 and a message naming the node without its password.
#[test]
fn bench_lock_ends_with_exit_4_when_redis_is_killed_or_frozen_mid_run() {
    if !redis_server() {
        return;
    }
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    for (mode, freeze) in [("fenced", false), ("watch", false), ("fenced", true)] {
        let mut node = node_with_password(&pw);
        let url = format!("redis://:{pw}@127.0.0.1:{}", node.port());
        let before = sandbox.files();
        let args = [
            "bench",
            "lock",
            "--redis",
            &url,
            "--mode",
            mode,
            "--duration",
            "3",
        ];
        let mut running = Spawned::start(sandbox.command(&args), &args);
        std::thread::sleep(Duration::from_millis(800));
        if freeze {
            node.pause().expect("SIGSTOP");
        } else {
            node.kill().expect("SIGKILL");
        }
        let status = running.wait(DEADLINE);
        let run = running.finish(status);
        sandbox.check(&run, &before);
        run.expect_code(4).stderr_says("during the run");
        let _ = node.resume();
    }
}

#[test]
fn bench_exporter_never_shows_the_password_and_fails_with_the_documented_status() {
    if !redis_server() {
        return;
    }
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    let dead = dead_port();
    let wrong = node_with_password("another-password-entirely");
    let right = node_with_password(&pw);
    let small = [
        "--trials",
        "2",
        "--events",
        "2000",
        "--keys",
        "100",
        "--held",
        "10",
        "--sample-every",
        "1000",
    ];
    for (url, code) in [
        (format!("redis://:{pw}@127.0.0.1:{dead}"), 4),
        (format!("redis://:{pw}/x#y@127.0.0.1:{dead}"), 2),
        (format!("redis://:{pw}@127.0.0.1:{}", wrong.port()), 4),
        (format!("redis://:{pw}@127.0.0.1:{}", right.port()), 0),
    ] {
        let mut args = vec!["bench", "exporter", "--redis", &url];
        args.extend_from_slice(&small);
        sandbox.run(&args).expect_code(code);
    }
}

/// Appends lock events whose keys, holders and reasons carry the password in
/// secret-looking shapes, and one entry that is not an event.
async fn plant_stream_entries(url: &str, pw: &str) {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = format!("order:9927431?token={pw}");
    let mut events = vec![
        LockEvent::new(EventKind::Acquired, LockMode::Legacy, &key, "pod-7f"),
        LockEvent::new(
            EventKind::Acquired,
            LockMode::Legacy,
            &key,
            format!("pod-3c --password {pw}"),
        ),
        LockEvent::app_error(
            "checkout",
            format!("payments password={pw}"),
            format!("AUTH {pw}"),
        ),
    ];
    events[0].ttl_ms = Some(30_000);
    events[1].ttl_ms = Some(30_000);
    for event in events {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(warroom::lock::event::DEFAULT_STREAM).arg("*");
        for (field, value) in event.to_fields() {
            cmd.arg(field).arg(value);
        }
        cmd.query_async::<String>(&mut conn).await.expect("XADD");
    }
    redis::cmd("XADD")
        .arg(warroom::lock::event::DEFAULT_STREAM)
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("kind")
        .arg(format!("token={pw}"))
        .arg("mode")
        .arg("legacy")
        .arg("key")
        .arg(format!("redis://:{pw}@redis-0:6379"))
        .arg("holder")
        .arg("pod-1")
        .query_async::<String>(&mut conn)
        .await
        .expect("XADD");
}

/// The exporter keeps serving whatever happens to Redis (documented), so it
/// is stopped with Ctrl-C (exit 0) after its warnings, `/metrics` and
/// `/healthz` have been searched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_never_shows_the_password_in_messages_logs_or_metrics() {
    if !redis_server() {
        return;
    }
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    let unparsable = format!("redis://:{pw}/x#y@127.0.0.1:1");
    sandbox
        .run(&[
            "exporter",
            "--redis",
            &unparsable,
            "--listen",
            "127.0.0.1:0",
        ])
        .expect_code(2);

    let dead = dead_port();
    let wrong = node_with_password("another-password-entirely");
    let right = node_with_password(&pw);
    let right_url = format!("redis://:{pw}@127.0.0.1:{}", right.port());
    plant_stream_entries(&right_url, &pw).await;
    // `once`: a warning both readers (stream and keyspace) meet, or that
    // the command line and a reader both know, said once.
    // `says`: lines to wait for (each reader has met the trouble).
    let both_readers = [
        "DEBUG warroom::exporter: keyspace notifications: ",
        "DEBUG warroom::exporter: cannot read the lock event stream",
    ];
    for (url, says, events, once) in [
        (
            format!("redis://:{pw}@127.0.0.1:{dead}"),
            &both_readers[..],
            0,
            "Connection refused (os error 111); nothing",
        ),
        (
            format!("redis://default:{pw}@127.0.0.1:{}", wrong.port()),
            &both_readers[..],
            0,
            "user name or password",
        ),
        (
            right_url.clone(),
            &["bad lock event", "notify-keyspace-events is"][..],
            4,
            "lease overruns are seen only",
        ),
    ] {
        let before = sandbox.files();
        let args = [
            "exporter",
            "--redis",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--from-start",
            "--log",
            "info,warroom::exporter=debug",
        ];
        let running = Spawned::start(sandbox.command(&args), &args);
        let stderr = running.wait_for_stderr("/metrics");
        let addr = stderr
            .split("serving http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("the serving address")
            .to_string();
        for line in says {
            running.wait_for_stderr(line);
        }
        let metrics = common::wait_until_async(
            "the planted events to be read",
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move {
                    let body = reqwest::get(format!("http://{addr}/metrics"))
                        .await
                        .ok()?
                        .text()
                        .await
                        .ok()?;
                    body.contains(&format!("warroom_events_processed_total {events}"))
                        .then_some(body)
                }
            },
        )
        .await;
        assert_nowhere(&pw, "/metrics", metrics.as_bytes());
        if events > 0 {
            assert!(
                metrics.contains("warroom_lock_holders{key=\"order:9927431?token=[REDACTED]\"} 2"),
                "the key is labelled, redacted:\n{metrics}"
            );
        }
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .expect("healthz")
            .text()
            .await
            .expect("body");
        assert_nowhere(&pw, "/healthz", health.as_bytes());
        running.interrupt();
        let mut running = running;
        let status = tokio::task::spawn_blocking(move || {
            let status = running.wait(DEADLINE);
            running.finish(status)
        })
        .await
        .expect("joined");
        sandbox.check(&status, &before);
        status.expect_code(0);
        let warnings = status.stderr.matches(" WARN ").count();
        let distinct: std::collections::HashSet<&str> = status
            .stderr
            .lines()
            .filter(|l| l.contains(" WARN "))
            .filter_map(|l| l.split_once(" WARN "))
            .map(|(_, message)| message)
            .collect();
        assert_eq!(
            warnings,
            distinct.len(),
            "each warning is printed once:\n{}",
            status.stderr
        );
        assert_eq!(
            status.stderr.matches(once).count(),
            1,
            "{once:?} is said once:\n{}",
            status.stderr
        );
        assert!(
            !status.stderr.contains('\x1b'),
            "no colour codes in a pipe:\n{}",
            status.stderr
        );
    }
}

#[test]
fn invalid_arguments_are_refused_without_echoing_the_password() {
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    for args in [
        vec![
            "exporter",
            "--listen",
            &*format!("redis://:{pw}@10.0.0.5:9464"),
        ],
        vec!["cluster", "--listen", &*format!("token={pw}")],
        vec!["bench", "lock", "--ttl-ms", &*format!("password={pw}")],
        vec![
            "timeline",
            "export",
            "x.jsonl",
            "--format",
            &*format!("AUTH {pw}"),
        ],
        vec![
            "--log",
            &*format!("password={pw}"),
            "timeline",
            "export",
            "x.jsonl",
        ],
    ] {
        let args: Vec<&str> = args.iter().map(|s| &**s).collect();
        sandbox.run(&args).expect_code(2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_never_shows_the_password() {
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    let before = sandbox.files();
    let args = [
        "cluster",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig-out",
        "local.kubeconfig",
    ];
    let running = Spawned::start(sandbox.command(&args), &args);
    common::wait_until("the cluster to serve", Duration::from_secs(30), || {
        String::from_utf8_lossy(&running.stdout.lock().unwrap())
            .contains("press Ctrl-C")
            .then_some(())
    });
    running.interrupt();
    let mut running = running;
    let run = tokio::task::spawn_blocking(move || {
        let status = running.wait(DEADLINE);
        running.finish(status)
    })
    .await
    .expect("joined");
    sandbox.check(&run, &before);
    run.expect_code(0);
}

/// A playbook whose fields carry the password in secret-looking shapes.
fn playbook(pw: &str, extra_step_field: &str) -> String {
    format!(
        r#"name: announce-rotation
description: "Point the order service at redis://:{pw}@redis-0.shop:6379"
parameters:
  namespace:
    type: string
    default: orders
  detail:
    type: string
    default: "all clear"
steps:
  - name: scale-down
    scale:
      deployment: order-service
      replicas: 2
  - name: announce
    note: "rotated the Redis password: redis-cli -a {pw} CONFIG SET requirepass {pw}; ${{detail}}"{extra_step_field}
"#
    )
}

#[test]
fn validate_never_shows_the_password() {
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    sandbox.write("good.yaml", &playbook(&pw, ""));
    sandbox.write(
        "bad.yaml",
        &playbook(&pw, &format!("\n    note-typo: \"token={pw}\"")),
    );
    sandbox.run(&["validate", "good.yaml"]).expect_code(0);
    sandbox
        .run(&["validate", "bad.yaml", "good.yaml"])
        .expect_code(2)
        .stderr_says("bad.yaml");
    // A parameter whose default is a secret is refused, and not quoted.
    sandbox.write(
        "secret-default.yaml",
        &playbook(&pw, "").replace(
            "default: \"all clear\"",
            &format!("default: \"password={pw}\""),
        ),
    );
    sandbox
        .run(&["validate", "secret-default.yaml"])
        .expect_code(2)
        .stderr_says("looks like a secret");
}

/// Every object of every kind the local cluster serves, and its request log.
fn cluster_contents(server: &ClusterServer) -> String {
    let store = server.store();
    let mut out = String::new();
    for (api_version, kind) in [
        ("v1", "Namespace"),
        ("v1", "Pod"),
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("networking.k8s.io/v1", "Ingress"),
        ("coordination.k8s.io/v1", "Lease"),
        ("configuration.konghq.com/v1", "KongPlugin"),
        ("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy"),
    ] {
        for object in store.list(api_version, kind, None) {
            out.push_str(&object.to_string());
            out.push('\n');
        }
    }
    out.push_str(&format!("{:?}", server.requests().entries()));
    out
}

/// A kubeconfig for `server` whose bearer token is the password.
fn kubeconfig_with_token(server: &ClusterServer, pw: &str) -> String {
    let original = server.kubeconfig();
    let token_line = original
        .lines()
        .find(|l| l.trim_start().starts_with("token:"))
        .expect("the kubeconfig has a token");
    original.replace(token_line, &format!("      token: {pw}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_undo_never_show_or_store_the_password() {
    let pw = planted_password();
    let sandbox = Arc::new(Sandbox::new(&pw));
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .expect("cluster server");
    sandbox.write("kubeconfig", &kubeconfig_with_token(&server, &pw));
    sandbox.write("announce.yaml", &playbook(&pw, ""));
    let detail = format!("--param=detail=token={pw}");
    let runs: Vec<(Vec<String>, i32)> = vec![
        // A secret given as a parameter is refused before anything is read.
        (
            vec![
                "run",
                "announce.yaml",
                "--kubeconfig",
                "kubeconfig",
                &detail,
                "--dry-run",
            ],
            2,
        ),
        (
            vec![
                "run",
                "announce.yaml",
                "--kubeconfig",
                "kubeconfig",
                "--dry-run",
            ],
            0,
        ),
        (
            vec![
                "run",
                "announce.yaml",
                "--kubeconfig",
                "kubeconfig",
                "--yes",
                "--timeline",
                "incidents/PM-004.jsonl",
            ],
            0,
        ),
        (
            vec![
                "undo",
                "--last",
                "--kubeconfig",
                "kubeconfig",
                "--yes",
                "--timeline",
                "incidents/PM-004.jsonl",
            ],
            0,
        ),
        (
            vec![
                "run",
                "announce.yaml",
                "--kubeconfig",
                "kubeconfig",
                "--yes",
                "--output",
                "json",
            ],
            0,
        ),
        (
            vec![
                "undo",
                "--last",
                "--kubeconfig",
                "kubeconfig",
                "--yes",
                "--output",
                "json",
            ],
            0,
        ),
        // Not even a refusal quotes it: no confirmation possible without --yes.
        (
            vec!["run", "announce.yaml", "--kubeconfig", "kubeconfig"],
            3,
        ),
    ]
    .into_iter()
    .map(|(args, code)| (args.into_iter().map(str::to_string).collect(), code))
    .collect();
    for (args, code) in runs {
        let sandbox = sandbox.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sandbox.run(&args).expect_code(code);
        })
        .await
        .expect("joined");
    }
    assert_nowhere(
        &pw,
        "the cluster's objects",
        cluster_contents(&server).as_bytes(),
    );
    for format in ["md", "json", "html"] {
        let sandbox = sandbox.clone();
        tokio::task::spawn_blocking(move || {
            sandbox
                .run(&[
                    "timeline",
                    "export",
                    "incidents/PM-004.jsonl",
                    "--format",
                    format,
                ])
                .expect_code(0);
        })
        .await
        .expect("joined");
    }
    server.stop().await;
}

/// Writing a secret-looking value into the cluster is refused by the engine,
/// so that no ConfigMap, annotation or run record ever holds one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_secret_looking_config_value_is_refused_and_never_stored() {
    let pw = planted_password();
    let sandbox = Arc::new(Sandbox::new(&pw));
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .expect("cluster server");
    sandbox.write("kubeconfig", &kubeconfig_with_token(&server, &pw));
    sandbox.write(
        "set-url.yaml",
        r#"name: set-redis-url
description: Point the order service at another Redis.
parameters:
  namespace: {type: string, default: orders}
  url: {type: string}
steps:
  - name: set-url
    set-config:
      configmap: order-service-lock
      key: REDIS_URL
      value: ${url}
  - name: patch-url
    patch:
      apiVersion: v1
      kind: ConfigMap
      name: order-service-lock
      merge: {data: {REDIS_ENDPOINT: "${url}"}}
"#,
    );
    // A change to a key named like a secret is refused where it is written.
    sandbox.write(
        "set-password.yaml",
        r#"name: set-redis-password
description: Change the order service's Redis password.
parameters:
  password: {type: string}
steps:
  - name: patch-password
    patch:
      apiVersion: v1
      kind: ConfigMap
      name: order-service-lock
      merge: {data: {REDIS_PASSWORD: "${password}"}}
"#,
    );
    let sandbox_for_key = sandbox.clone();
    tokio::task::spawn_blocking(move || {
        sandbox_for_key
            .run(&["validate", "set-password.yaml"])
            .expect_code(2)
            .stderr_says("names a secret");
    })
    .await
    .expect("joined");
    // A valid playbook: what refuses the runs below is the value.
    let sandbox_for_validate = sandbox.clone();
    tokio::task::spawn_blocking(move || {
        sandbox_for_validate
            .run(&["validate", "set-url.yaml"])
            .expect_code(0);
    })
    .await
    .expect("joined");
    let url = format!("--param=url=redis://:{pw}@redis-0.shop:6379");
    for extra in [
        &["--dry-run"][..],
        &["--yes"],
        &["--yes", "--output", "json"],
    ] {
        let mut args: Vec<String> = ["run", "set-url.yaml", "--kubeconfig", "kubeconfig", &url]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let sandbox = sandbox.clone();
        let run = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sandbox.run(&args)
        })
        .await
        .expect("joined");
        assert!(
            matches!(run.code, Some(2 | 3)),
            "a secret value is refused: {:?}\n{}\n{}",
            run.code,
            run.stdout,
            run.stderr
        );
    }
    assert_nowhere(
        &pw,
        "the cluster's objects",
        cluster_contents(&server).as_bytes(),
    );
    server.stop().await;
}

#[test]
fn timeline_commands_and_exports_never_show_the_password() {
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    let journal = "incidents/PM-004.jsonl";
    let step = serde_json::json!({
        "playbook": "rotate",
        "run_id": "r1",
        "step": "set-url",
        "kind": "set-config",
        "phase": "applied",
        "target": {"api_version": "v1", "kind": "ConfigMap", "namespace": "orders", "name": "order-service-lock"},
        "before": {"data": {"REDIS_URL": format!("redis://:{pw}@redis-0:6379")}},
        "after": {"data": {"REDIS_PASSWORD": pw.clone(), "note": format!("AUTH {pw}")}},
        "message": format!("export REDIS_PASSWORD={pw}"),
    })
    .to_string();
    let runs: Vec<(Vec<String>, i32)> = vec![
        (
            vec![
                "timeline".into(),
                "new".into(),
                journal.into(),
                "--id".into(),
                "PM-004".into(),
                "--severity".into(),
                "SEV-1".into(),
                "--title".into(),
                format!("redis://:{pw}@redis-0 refused"),
                "--actor".into(),
                format!("ops token={pw}"),
                "--started".into(),
                "2026-11-26T09:00:00Z".into(),
            ],
            0,
        ),
        (
            vec![
                "timeline".into(),
                "note".into(),
                journal.into(),
                format!(
                    "PASSWORD = {pw}; \"password\" : \"{pw} x\"; redis-cli -a {pw}; AUTH {pw}; \
                     CONFIG SET requirepass {pw}; AWS_SECRET_ACCESS_KEY {pw}"
                ),
            ],
            0,
        ),
        (
            vec![
                "timeline".into(),
                "mark".into(),
                journal.into(),
                "detected".into(),
                "--actor".into(),
                format!("ops --password {pw}"),
                "--at".into(),
                "2026-11-26T09:14:00Z".into(),
            ],
            0,
        ),
        (
            vec![
                "timeline".into(),
                "severity".into(),
                journal.into(),
                format!("SEV-2 token={pw}"),
            ],
            0,
        ),
        (
            vec![
                "timeline".into(),
                "alert".into(),
                journal.into(),
                format!("LockConcurrentHolders password={pw}"),
                "--state".into(),
                "fired".into(),
                "--value".into(),
                "2".into(),
                "--label".into(),
                format!("token={pw}"),
                "--label".into(),
                format!("source=redis://:{pw}@redis-0:6379"),
            ],
            0,
        ),
        (
            vec!["timeline".into(), "step".into(), journal.into(), step],
            0,
        ),
        // Refused input is not echoed either.
        (
            vec![
                "timeline".into(),
                "mark".into(),
                journal.into(),
                format!("token={pw}"),
            ],
            2,
        ),
        (
            vec![
                "timeline".into(),
                "note".into(),
                journal.into(),
                "x".into(),
                "--at".into(),
                format!("password={pw}"),
            ],
            2,
        ),
        (
            vec![
                "timeline".into(),
                "export".into(),
                journal.into(),
                "--format".into(),
                "md".into(),
            ],
            0,
        ),
        (
            vec![
                "timeline".into(),
                "export".into(),
                journal.into(),
                "--format".into(),
                "json".into(),
            ],
            0,
        ),
        (
            vec![
                "timeline".into(),
                "export".into(),
                journal.into(),
                "--format".into(),
                "html".into(),
                "-o".into(),
                "PM-004.html".into(),
            ],
            0,
        ),
    ];
    for (args, code) in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sandbox.run(&args).expect_code(code);
    }
    let journal = std::fs::read(sandbox.path(journal)).expect("journal");
    assert_nowhere(&pw, "the journal", &journal);
    let json: Value = serde_json::from_str(
        &sandbox
            .run(&[
                "timeline",
                "export",
                "incidents/PM-004.jsonl",
                "--format",
                "json",
            ])
            .stdout,
    )
    .expect("the JSON export parses");
    assert!(json.is_object());
}

/// On a terminal, log lines are coloured unless `NO_COLOR` is set; in a pipe
/// (the other tests) they never are. The terminal is `script`'s
/// pseudo-terminal; the exporter logs its warning at once and is stopped
/// with SIGINT by `timeout`.
#[test]
fn colour_only_on_a_terminal_without_no_color() {
    if common::require_tool("script", "util-linux").is_none() {
        return;
    }
    let pw = planted_password();
    let sandbox = Sandbox::new(&pw);
    let dead = dead_port();
    let exporter = format!(
        "timeout -s INT 5 {} exporter --redis redis://:{pw}@127.0.0.1:{dead} --listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_warroom")
    );
    for no_color in [false, true] {
        let mut command = Command::new("script");
        command
            .args(["-qefc", &exporter, "/dev/null"])
            .current_dir(sandbox.path("."))
            .env("HOME", sandbox.path("."))
            .env_remove("WARROOM_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if no_color {
            command.env("NO_COLOR", "1");
        } else {
            command.env_remove("NO_COLOR");
        }
        let mut running = Spawned::start(command, &["(in script)", "exporter"]);
        let status = running.wait(DEADLINE);
        let run = running.finish(status);
        assert_nowhere(&pw, "the terminal", run.stdout.as_bytes());
        assert!(
            run.stdout.contains("Redis at"),
            "the warning is shown:\n{}",
            run.stdout
        );
        assert_eq!(
            run.stdout.contains('\x1b'),
            !no_color,
            "NO_COLOR={no_color}: colour codes only on a terminal without NO_COLOR:\n{:?}",
            run.stdout
        );
    }
}
