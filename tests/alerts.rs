//! The alert rules and the exporter's output checked by `promtool`: the
//! rules parse, their unit tests pass, the sample Prometheus configuration
//! loads, and a real scrape of `/metrics` lints clean.
//!
//! `promtool` comes from the Debian package `prometheus`. Without it these
//! tests fail in CI (`CI` set) and are skipped, with the reason printed,
//! elsewhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use warroom::exporter::{Exporter, ExporterConfig, KeyspaceEvents, StartFrom};
use warroom::lock::LockOptions;
use warroom::lock::legacy::LegacyLock;
use warroom::redis_node::{NodeOptions, RedisNode};

fn promtool() -> Option<PathBuf> {
    common::require_tool("promtool", "prometheus")
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn run(promtool: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(config_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let (ok, out) = run(&promtool, &["check", "rules", "alerts.yaml"], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
    let (ok, out) = run(&promtool, &["test", "rules", "alerts.test.yaml"], None);
    assert!(ok, "{out}");
    let (ok, out) = run(&promtool, &["check", "config", "prometheus.yaml"], None);
    assert!(ok, "{out}");
}

#[test]
fn alerts_link_to_the_mitigating_playbooks() {
    let rules = std::fs::read_to_string(config_dir().join("alerts.yaml")).unwrap();
    for (alert, playbook) in [
        ("LockConcurrentHolders", "playbooks/lock-contention.yaml"),
        ("LockCollisionsIncreasing", "playbooks/scale-to-one.yaml"),
        (
            "LockLeaseOverrunsIncreasing",
            "playbooks/enable-watch-locking.yaml",
        ),
        (
            "AppErrorsAbove50PerMinute",
            "playbooks/gateway-rate-limit.yaml",
        ),
    ] {
        let start = rules
            .find(&format!("alert: {alert}"))
            .unwrap_or_else(|| panic!("{alert} is defined"));
        let rest = &rules[start..];
        let end = rest[1..].find("- alert:").map_or(rest.len(), |e| e + 1);
        assert!(
            rest[..end].contains(&format!("playbook: {playbook}")),
            "{alert} links to {playbook}"
        );
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(playbook)
                .is_file(),
            "{playbook}, linked from {alert}, exists"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let node = RedisNode::start_with(NodeOptions {
        keyspace_events: Some("Ex".into()),
        ..NodeOptions::default()
    })
    .unwrap();
    let url = node.url();
    let exporter = Exporter::new(ExporterConfig {
        keyspace_events: KeyspaceEvents::Off,
        start: StartFrom::Beginning,
        ..ExporterConfig::new(&url)
    })
    .unwrap();
    let (addr, _server) = exporter.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let _readers = exporter.spawn();

    // A PM-003 collision, so that every labelled series has samples.
    let ttl = Duration::from_millis(100);
    let pod_7f = LegacyLock::connect(&url, LockOptions::new(ttl, "pod-7f"))
        .await
        .unwrap();
    // pod-3c's key outlives the test, so nothing changes between scrapes.
    let pod_3c = LegacyLock::connect(&url, LockOptions::new(Duration::from_secs(60), "pod-3c"))
        .await
        .unwrap();
    let _first = pod_7f.acquire("lock:ord-9927431", ttl).await.unwrap();
    let _second = pod_3c
        .acquire("lock:ord-9927431", Duration::from_secs(2))
        .await
        .unwrap();
    // Names from the network with characters the exposition format escapes.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let odd: [&[(&str, &str)]; 2] = [
        &[
            ("v", "1"),
            ("kind", "acquired"),
            ("mode", "fenced"),
            ("key", "lock:\"odd\"\nkey\\ λ"),
            ("holder", "pod-1"),
            ("token", "1"),
            ("ttl_ms", "60000"),
        ],
        &[
            ("v", "1"),
            ("kind", "error"),
            ("mode", "app"),
            ("key", "E503"),
            ("holder", "order\"svc\n"),
        ],
    ];
    for fields in odd {
        let _: String = redis::AsyncCommands::xadd(&mut conn, "warroom:lock-events", "*", fields)
            .await
            .unwrap();
    }
    // Everything written so far has been read: the collision, pod-7f's
    // overrun and both odd entries.
    common::wait_until_async(
        "the exporter to read the collision and the odd entries",
        Duration::from_secs(30),
        || async {
            let written: u64 = redis::AsyncCommands::xlen(&mut conn.clone(), "warroom:lock-events")
                .await
                .ok()?;
            let seen = exporter.snapshot();
            (seen.events_processed >= written
                && seen.collisions > 0
                && seen.lease_overruns > 0
                && seen.app_errors > 0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(exporter.snapshot().collisions, 1);
    assert_eq!(
        exporter.snapshot().lease_overruns,
        1,
        "pod-7f's lease ran out"
    );
    assert!(
        exporter.snapshot().keyspace_enabled,
        "already on in the server"
    );

    let client = reqwest::Client::new();
    // What Prometheus gets: OpenMetrics.
    let openmetrics = client
        .get(format!("http://{addr}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        openmetrics.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let openmetrics = openmetrics.text().await.unwrap();
    assert!(openmetrics.contains("warroom_lock_holders{key=\"lock:ord-9927431\"} 2"));
    assert!(
        openmetrics.contains(r#"warroom_lock_holders{key="lock:\"odd\"\nkey\\ λ"} 1"#),
        "{openmetrics}"
    );
    // promtool reads the classic format: scrape it as a classic client does.
    let classic = client
        .get(format!("http://{addr}/metrics"))
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    assert_eq!(
        classic.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = classic.text().await.unwrap();
    let (ok, out) = run(&promtool, &["check", "metrics"], Some(&classic));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n{classic}"
    );
    // The two formats carry the same samples.
    let samples = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(samples(&openmetrics), samples(&classic));
}

#[test]
fn playbooks_answer_alerts_that_exist_and_every_alert_is_answered() {
    let rules = std::fs::read_to_string(config_dir().join("alerts.yaml")).unwrap();
    let defined: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(defined.len(), 4, "{defined:?}");
    let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
    let mut answered = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&playbooks).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let loaded = warroom::playbook::load_file(&path)
            .unwrap_or_else(|e| panic!("{} loads: {e:?}", path.display()));
        for alert in &loaded.doc.alerts {
            assert!(
                defined.contains(&alert.as_str()),
                "{} answers {alert}, which config/alerts.yaml does not define",
                path.display()
            );
            answered.insert(alert.clone());
        }
    }
    for alert in defined {
        assert!(answered.contains(alert), "no playbook answers {alert}");
    }
}
