//! `warroom drill` end to end, through the real binary with real
//! `redis-server`, worker processes, the local cluster server, `kubectl` and
//! (when on PATH) Prometheus: short compressed headless runs, bad input,
//! signals, and no process left behind after any exit.
//!
//! Every drill here runs with `--dir` in a fresh temporary directory, and
//! everything a drill starts names that directory (Redis by working in it,
//! Prometheus in its arguments, workers in their environment), so "nothing
//! left" is a scan of `/proc` for that directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::drill::Drill;

/// What the issue asks of children after the drill has gone.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(2);

impl Drill {
    fn start(args: &[&str]) -> Drill {
        Self::start_with(args, |_| {})
    }

    /// Processes other than this test naming the drill's directory.
    fn leftovers(&self) -> Vec<String> {
        processes_naming(self.parent.path())
    }

    /// Asserts that within [`ORPHAN_DEADLINE`] no process names the drill's
    /// directory.
    fn assert_nothing_left(&self) {
        let start = Instant::now();
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < ORPHAN_DEADLINE,
                "left running {ORPHAN_DEADLINE:?} after the drill: {left:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Live (not zombie) processes whose command line, environment or working
/// directory names `marker`, as `pid: command line` (Redis rewrites its
/// command line, but works in its `--dir`).
fn processes_naming(marker: &Path) -> Vec<String> {
    let marker = marker.as_os_str().as_encoded_bytes();
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let base = entry.path();
        let stat = std::fs::read_to_string(base.join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        if matches!(state, Some(Some('Z' | 'X')) | None) {
            continue;
        }
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(base.join("environ")).unwrap_or_default();
        let cwd = std::fs::read_link(base.join("cwd")).unwrap_or_default();
        let cwd = cwd.as_os_str().as_encoded_bytes();
        let names = |bytes: &[u8]| bytes.windows(marker.len()).any(|w| w == marker);
        if names(&cmdline) || names(&environ) || names(cwd) {
            let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{name}: {shown}"));
        }
    }
    found
}

/// A report's words on one line, without the frame miette wraps them in.
fn flat(report: &str) -> String {
    report
        .split_whitespace()
        .filter(|word| *word != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

fn redis_available() -> bool {
    common::require_tool("redis-server", "redis-server").is_some()
}

#[test]
fn an_unreachable_redis_is_exit_4_without_its_password_and_nothing_starts() {
    let closed = warroom::redis_node::free_port().expect("a free port");
    let url = format!("redis://:hunter2secret@127.0.0.1:{closed}");
    let mut drill = Drill::start(&["--headless", "--duration", "5", "--redis", &url]);
    let status = drill.wait_exit(Duration::from_secs(30));
    let stderr = drill.stderr();
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{closed}")), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
    assert!(!drill.stdout().contains("hunter2secret"));
    assert_eq!(
        std::fs::read_dir(drill.parent.path())
            .expect("exists")
            .count(),
        0,
        "no drill directory is made"
    );
    drill.assert_nothing_left();
}

#[test]
fn a_missing_redis_server_names_the_install_command_with_exit_4() {
    let empty = tempfile::tempdir().expect("a temporary directory");
    let mut drill = Drill::start_with(&["--headless", "--duration", "5"], |command| {
        command.env("PATH", empty.path());
    });
    let status = drill.wait_exit(Duration::from_secs(30));
    let stderr = drill.stderr();
    assert_eq!(status.code(), Some(4), "{stderr}");
    let message = flat(&stderr);
    assert!(message.contains("redis-server is not on PATH"), "{stderr}");
    assert!(
        message.contains("apt-get install -y redis-server"),
        "{stderr}"
    );
    drill.assert_nothing_left();
}

#[test]
fn a_listen_port_in_use_is_exit_2_and_what_started_is_stopped() {
    if !redis_available() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = taken.local_addr().expect("address").port();
    for flag in ["--cluster-listen", "--exporter-listen"] {
        let address = format!("127.0.0.1:{port}");
        let mut drill = Drill::start(&["--headless", "--duration", "5", flag, &address]);
        let status = drill.wait_exit(Duration::from_secs(60));
        let stderr = drill.stderr();
        assert_eq!(status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(&address), "{flag}: {stderr}");
        assert!(
            stderr.contains("Address already in use") || stderr.contains("in use"),
            "{flag}: {stderr}"
        );
        drill.assert_nothing_left();
    }
}

#[test]
fn a_playbook_that_does_not_validate_is_exit_2_before_anything_starts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let playbook = dir.path().join("broken.yaml");
    std::fs::write(&playbook, "name: broken\nsteps: [{name: x, scale: {}}]\n").expect("writes");
    let mut drill = Drill::start(&[
        "--headless",
        "--duration",
        "5",
        "--auto-mitigate",
        playbook.to_str().expect("utf-8"),
    ]);
    let status = drill.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{}", drill.stderr());
    assert!(drill.stderr().contains("broken.yaml"), "{}", drill.stderr());
    assert_eq!(
        std::fs::read_dir(drill.parent.path())
            .expect("exists")
            .count(),
        0,
        "no drill directory is made for a refused drill"
    );
    drill.assert_nothing_left();
}

/// Starts a long headless drill and waits until it runs.
fn running_drill() -> Option<(Drill, PathBuf)> {
    if !redis_available() {
        return None;
    }
    let mut drill = Drill::start(&[
        "--headless",
        "--duration",
        "600",
        "--replicas",
        "2",
        "--report",
        "json",
    ]);
    let kubeconfig = drill.wait_started();
    Some((drill, kubeconfig))
}

fn stops_cleanly_on(signal: libc::c_int) {
    let Some((mut drill, _)) = running_drill() else {
        return;
    };
    assert!(
        !drill.leftovers().is_empty(),
        "the running drill's children are visible to the scan"
    );
    drill.signal(signal);
    let status = drill.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", drill.stderr());
    let report: serde_json::Value = serde_json::from_str(&drill.stdout()).unwrap_or_else(|e| {
        panic!(
            "a JSON report ({e}):\n{}\n{}",
            drill.stdout(),
            drill.stderr()
        )
    });
    assert_eq!(report["ended"], "interrupted");
    let dir = drill.dir();
    assert!(dir.join("incident.md").is_file(), "the export is written");
    assert!(dir.join("incident.jsonl").is_file());
    assert_eq!(
        report["timeline"],
        dir.join("incident.jsonl").display().to_string()
    );
    drill.assert_nothing_left();
}

#[test]
fn sigint_stops_the_drill_cleanly_with_its_report_and_export() {
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn sigterm_stops_the_drill_cleanly_with_its_report_and_export() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn a_sigkilled_drill_leaves_no_process_behind() {
    let Some((mut drill, _)) = running_drill() else {
        return;
    };
    let before = drill.leftovers();
    assert!(
        before.iter().any(|p| p.contains("redis-server")),
        "the drill's Redis is seen: {before:#?}"
    );
    drill.signal(libc::SIGKILL);
    let status = drill.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), None, "killed by a signal");
    drill.assert_nothing_left();
}

/// Appends a lock event to the drill's stream, as a lock client would.
fn publish(conn: &mut redis::Connection, fields: &[(&str, &str)]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(warroom::lock::event::DEFAULT_STREAM)
        .arg("*")
        .arg("v")
        .arg("1");
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    let _: String = cmd.query(conn).expect("XADD");
}

#[test]
fn alerts_fire_from_the_exporter_counters_and_mark_detection() {
    if !redis_available() {
        return;
    }
    let prometheus = common::require_tool("prometheus", "prometheus").is_some();
    // 60 incident seconds per second: the error alert's minute is a second.
    let mut drill = Drill::start(&[
        "--headless",
        "--report",
        "json",
        "--lock",
        "fenced",
        "--replicas",
        "1",
        "--speed",
        "60",
        "--duration",
        "600",
    ]);
    drill.wait_started();
    let stderr = drill.stderr();
    let url = stderr
        .lines()
        .find_map(|l| l.strip_prefix("redis: "))
        .expect("the drill prints its Redis")
        .trim()
        .to_string();
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connects to the drill's Redis");
    // Two legacy holders of one key, neither released: a collision.
    for holder in ["pod-a", "pod-b"] {
        publish(
            &mut conn,
            &[
                ("kind", "acquired"),
                ("mode", "legacy"),
                ("key", "lock:test:collision"),
                ("holder", holder),
            ],
        );
    }
    common::wait_until("the collision alert", Duration::from_secs(20), || {
        drill
            .stderr()
            .contains("alert LockConcurrentHolders FIRING")
            .then_some(())
    });
    // More than 50 errors an incident minute, held for an incident minute.
    common::wait_until("the error alert", Duration::from_secs(30), || {
        for _ in 0..60 {
            publish(
                &mut conn,
                &[
                    ("kind", "error"),
                    ("mode", "app"),
                    ("key", "POST /test"),
                    ("holder", "test-service"),
                    ("reason", "injected"),
                ],
            );
        }
        drill
            .stderr()
            .contains("alert AppErrorsAbove50PerMinute FIRING")
            .then_some(())
    });
    let journal = drill.dir().join("incident.jsonl");
    if prometheus {
        common::wait_until(
            "Prometheus' collision alert",
            Duration::from_secs(30),
            || {
                let text = std::fs::read_to_string(&journal).unwrap_or_default();
                text.lines()
                    .any(|l| {
                        l.contains("\"source\":\"prometheus\"")
                            && l.contains("LockConcurrentHolders")
                    })
                    .then_some(())
            },
        );
    }
    drill.signal(libc::SIGINT);
    assert_eq!(drill.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let report: serde_json::Value = serde_json::from_str(&drill.stdout()).expect("a JSON report");
    assert!(report["double_grants"].as_u64() >= Some(1), "{report:#}");
    let ttd = report["ttd_ms"].as_u64().expect("a time to detect");
    assert!(
        ttd < 5_000,
        "detected within 5 s of the collision: {ttd} ms"
    );
    assert_eq!(report["prometheus"], prometheus);
    if prometheus {
        let ttd = report["ttd_prometheus_ms"]
            .as_u64()
            .expect("Prometheus' time");
        assert!(ttd < 30_000, "{ttd}");
    } else {
        assert!(report["ttd_prometheus_ms"].is_null());
    }
    let text = std::fs::read_to_string(&journal).expect("the journal");
    let detected = text
        .lines()
        .position(|l| l.contains("\"milestone\":\"detected\""))
        .expect("detected is marked");
    let alert = text
        .lines()
        .position(|l| l.contains("LockConcurrentHolders") && l.contains("\"fired\""))
        .expect("the alert is an event");
    assert!(alert < detected, "the alert comes first:\n{text}");
    assert!(text.contains("AppErrorsAbove50PerMinute"), "{text}");
    drill.assert_nothing_left();
}

/// Worker processes of the drill (by the directory in their environment).
fn workers(drill: &Drill) -> Vec<String> {
    drill
        .leftovers()
        .into_iter()
        .filter(|p| p.contains("drill worker"))
        .collect()
}

/// Runs a headless drill to its end; returns the report.
fn headless(args: &[&str], deadline: Duration) -> Option<(Drill, serde_json::Value)> {
    if !redis_available() {
        return None;
    }
    let mut all = vec!["--headless", "--report", "json"];
    all.extend_from_slice(args);
    let mut drill = Drill::start(&all);
    let status = drill.wait_exit(deadline);
    let report: serde_json::Value = serde_json::from_str(&drill.stdout()).unwrap_or_else(|e| {
        panic!(
            "a JSON report ({e}, {status}):\n{}\n{}",
            drill.stdout(),
            drill.stderr()
        )
    });
    Some((drill, report))
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a count: {report:#}"))
}

#[test]
fn legacy_without_mitigation_double_grants_and_corrupts_orders() {
    let Some((drill, report)) = headless(
        &[
            "--lock",
            "legacy",
            "--speed",
            "200",
            "--replicas",
            "4",
            "--duration",
            "20",
        ],
        Duration::from_secs(120),
    ) else {
        return;
    };
    assert_eq!(report["ended"], "completed", "{report:#}");
    assert!(count(&report, "orders_processed") > 0, "{report:#}");
    assert!(count(&report, "double_grants") > 0, "{report:#}");
    assert!(count(&report, "corrupted_orders") > 0, "{report:#}");
    assert!(
        report["ttd_ms"].is_u64(),
        "the collision alert fired: {report:#}"
    );
    assert!(report["ttm_ms"].is_null());
    assert_eq!(report["lock_modes"][0], "legacy");
    for field in [
        "orders_offered",
        "orders_received",
        "orders_rejected",
        "fencing_rejections",
        "corrupted_orders",
    ] {
        count(&report, field);
    }
    assert!(report["order_latency_ms"]["p99"].is_number());
    assert!(report["replicas"].as_array().is_some_and(|r| !r.is_empty()));
    let journal = std::fs::read_to_string(report["timeline"].as_str().unwrap()).unwrap();
    assert!(journal.contains("\"detected\""), "{journal}");
    assert!(journal.contains("LockConcurrentHolders"), "{journal}");
    drill.assert_nothing_left();
}

#[test]
fn fenced_at_ten_times_with_pauses_corrupts_nothing_and_rejects_stale_writes() {
    let Some((drill, report)) = headless(
        &[
            "--lock",
            "fenced",
            "--speed",
            "200",
            "--replicas",
            "4",
            "--duration",
            "20",
        ],
        Duration::from_secs(120),
    ) else {
        return;
    };
    assert_eq!(report["ended"], "completed", "{report:#}");
    assert!(count(&report, "orders_processed") > 0, "{report:#}");
    assert_eq!(count(&report, "corrupted_orders"), 0, "{report:#}");
    assert!(count(&report, "fencing_rejections") > 0, "{report:#}");
    assert_eq!(report["lock_modes"][0], "fenced");
    drill.assert_nothing_left();
}

#[test]
fn auto_mitigation_stops_the_collisions_and_leaves_one_worker() {
    if !redis_available() {
        return;
    }
    let playbook = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playbooks/lock-contention.yaml"
    );
    let mut drill = Drill::start(&[
        "--headless",
        "--report",
        "json",
        "--lock",
        "legacy",
        "--speed",
        "200",
        "--replicas",
        "4",
        "--duration",
        "30",
        "--auto-mitigate",
        playbook,
    ]);
    drill.wait_started();
    common::wait_until(
        "the mitigation to be verified",
        Duration::from_secs(90),
        || drill.stderr().contains("verified: mitigated").then_some(()),
    );
    // The scale step left one replica; the restart replaced it: one worker.
    let one = common::wait_until("exactly one worker", Duration::from_secs(10), || {
        let workers = workers(&drill);
        (workers.len() == 1).then_some(workers)
    });
    assert_eq!(one.len(), 1);
    let status = drill.wait_exit(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{}", drill.stderr());
    let report: serde_json::Value = serde_json::from_str(&drill.stdout()).expect("a JSON report");
    assert_eq!(
        count(&report, "collisions_after_mitigation"),
        0,
        "{report:#}"
    );
    assert!(report["ttd_ms"].is_u64(), "{report:#}");
    assert!(report["ttm_ms"].is_u64(), "{report:#}");
    assert_eq!(report["mitigation"]["verified"], true, "{report:#}");
    let modes: Vec<&str> = report["lock_modes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert_eq!(modes.first(), Some(&"legacy"), "{report:#}");
    assert_eq!(modes.last(), Some(&"watch"), "{report:#}");
    let last = report["replicas"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["desired"], 1, "{report:#}");
    let journal = std::fs::read_to_string(report["timeline"].as_str().unwrap()).unwrap();
    assert!(journal.contains("\"mitigated\""), "{journal}");
    assert!(
        journal.contains("scale-down"),
        "the engine's steps are recorded: {journal}"
    );
    drill.assert_nothing_left();
}

#[test]
fn a_mitigation_failing_midway_is_exit_1_with_the_drill_stopped() {
    if !redis_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let playbook = dir.path().join("fails.yaml");
    // Scales down, then waits for a condition that never holds: the scale
    // is applied, the wait fails, the engine undoes the scale.
    std::fs::write(
        &playbook,
        "name: fails-midway\ndescription: scales down, then waits for what never holds\n\
         parameters: {}\nsteps:\n  - name: scale-down\n    scale: {deployment: order-service, replicas: 2}\n\
         \x20 - name: wait-forever\n    wait:\n      object: {apiVersion: apps/v1, kind: Deployment, name: order-service}\n\
         \x20     until: {field: {path: /metadata/labels/never, equals: \"set\"}}\n      timeout: 2s\n",
    )
    .expect("writes");
    let mut drill = Drill::start(&[
        "--headless",
        "--lock",
        "legacy",
        "--speed",
        "200",
        "--replicas",
        "4",
        "--duration",
        "20",
        "--auto-mitigate",
        playbook.to_str().unwrap(),
    ]);
    let status = drill.wait_exit(Duration::from_secs(120));
    let stderr = drill.stderr();
    let stdout = drill.stdout();
    assert_eq!(status.code(), Some(1), "{stderr}\n{stdout}");
    // The report says what failed and what was undone.
    assert!(stdout.contains("failed-undone"), "{stdout}");
    assert!(stdout.contains("wait-forever"), "{stdout}");
    // The scale was applied (4 -> 2), then undone (back to 4).
    let replicas = stdout
        .lines()
        .find(|l| l.starts_with("replicas"))
        .expect("the replicas line");
    let desired: Vec<&str> = replicas
        .split_whitespace()
        .skip(1)
        .filter_map(|r| r.split('@').next()?.split('/').nth(1))
        .collect();
    assert!(desired.contains(&"2"), "{replicas}");
    assert_eq!(desired.last(), Some(&"4"), "{replicas}");
    drill.assert_nothing_left();
}

#[test]
fn kubectl_sees_the_drill_and_scaling_changes_the_worker_processes() {
    let Some(kubectl) = common::require_tool("kubectl", "kubectl") else {
        return;
    };
    let Some((mut drill, kubeconfig)) = running_drill() else {
        return;
    };
    let kubectl = |args: &[&str]| {
        common::output_within(
            Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(args),
            Duration::from_secs(30),
        )
    };
    common::wait_until("two workers", Duration::from_secs(30), || {
        (workers(&drill).len() == 2).then_some(())
    });
    let listed = kubectl(&["get", "deploy,pods", "-n", "orders"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(text.contains("deployment.apps/order-service"), "{text}");
    assert_eq!(text.matches("pod/order-service-").count(), 2, "{text}");
    let scaled = kubectl(&[
        "scale",
        "deployment/order-service",
        "--replicas=4",
        "-n",
        "orders",
    ]);
    assert!(
        scaled.status.success(),
        "{}",
        String::from_utf8_lossy(&scaled.stderr)
    );
    common::wait_until("four workers", Duration::from_secs(30), || {
        (workers(&drill).len() == 4).then_some(())
    });
    let scaled = kubectl(&[
        "scale",
        "deployment/order-service",
        "--replicas=1",
        "-n",
        "orders",
    ]);
    assert!(scaled.status.success());
    common::wait_until("one worker", Duration::from_secs(30), || {
        (workers(&drill).len() == 1).then_some(())
    });
    drill.signal(libc::SIGTERM);
    assert_eq!(drill.wait_exit(Duration::from_secs(60)).code(), Some(0));
    drill.assert_nothing_left();
}

#[test]
fn a_second_sigint_quits_at_once_and_still_leaves_nothing() {
    let Some((mut drill, _)) = running_drill() else {
        return;
    };
    drill.signal(libc::SIGINT);
    common::wait_until(
        "the first stop to be heard",
        Duration::from_secs(10),
        || drill.stderr().contains("stopping the drill").then_some(()),
    );
    drill.signal(libc::SIGINT);
    let status = drill.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", drill.stderr());
    drill.assert_nothing_left();
}
