//! The incident journal against real files and the real `warroom` binary:
//! crash safety under SIGKILL, milestone order, redaction, exports.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use jiff::Timestamp;
use warroom::timeline::export::{self, Format};
use warroom::timeline::{
    AlertChange, AlertState, Entry, Event, Figures, IncidentOpened, Journal, MetricSnapshot,
    Milestone, NewEvent, StepPhase, StepReport, StepTarget, read_journal,
};

fn warroom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warroom"))
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("valid test timestamp")
}

fn scale_step(phase: StepPhase, replicas_before: u64, replicas_after: u64) -> Entry {
    Entry::Step(StepReport {
        playbook: "lock-contention".into(),
        run_id: "run-1".into(),
        step: "scale-to-one".into(),
        kind: "scale".into(),
        phase,
        target: StepTarget {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "order-service".into(),
        },
        before: serde_json::json!({"spec": {"replicas": replicas_before}}),
        after: serde_json::json!({"spec": {"replicas": replicas_after}}),
        message: match phase {
            StepPhase::Verified => Some("1/1 replicas ready".into()),
            _ => None,
        },
    })
}

fn metric(collisions: f64, errors: f64) -> Entry {
    Entry::Metric(MetricSnapshot {
        collisions_per_min: collisions,
        errors_per_min: errors,
        concurrent_holders: if collisions > 0.0 { 2 } else { 1 },
        fencing_rejections: 0,
        requests_per_min: None,
        replicas: None,
    })
}

/// PM-004: PM-003's shape replayed with warroom recording it.
fn write_known_incident(path: &Path) {
    let journal = Journal::open_or_create(path).expect("open journal");
    let at = |hm: &str| t(&format!("2026-11-26T{hm}:00Z"));
    let mut events = vec![
        NewEvent::at(
            at("09:00"),
            "ingrid",
            Entry::Incident(IncidentOpened {
                id: "PM-004".into(),
                title: Some("Order lock granted twice during GC pause".into()),
            }),
        ),
        NewEvent::at(at("09:00"), "ingrid", Entry::severity("SEV-2")),
        NewEvent::at(at("09:00"), "ingrid", Entry::milestone(Milestone::Started)),
    ];
    // one snapshot a minute from 09:00 to 10:59: contention from 09:05, gone after the scale-down
    for minute in 0..120 {
        let hm = format!("{:02}:{:02}", 9 + minute / 60, minute % 60);
        let (c, e) = match minute {
            0..=4 => (0.0, 2.0),
            5..=40 => ((minute - 4) as f64, 20.0 + 15.0 * (minute - 4) as f64),
            41..=45 => (1.0, 40.0),
            _ => (0.0, 1.0),
        };
        events.push(NewEvent::at(at(&hm), "warroom", metric(c, e)));
    }
    events.extend([
        NewEvent::at(
            at("09:12"),
            "warroom",
            Entry::Alert(AlertChange {
                alert: "LockConcurrentHolders".into(),
                state: AlertState::Fired,
                value: Some(2.0),
                labels: [("key".to_string(), "order:9927431".to_string())].into(),
            }),
        ),
        NewEvent::at(
            at("09:14"),
            "bastian",
            Entry::milestone(Milestone::Detected),
        ),
        NewEvent::at(
            at("09:18"),
            "bastian",
            Entry::note("Two pods | pod-7f and pod-3c | hold order:9927431"),
        ),
        NewEvent::at(at("09:21"), "chen", Entry::milestone(Milestone::Declared)),
        NewEvent::at(at("09:21"), "chen", Entry::severity("SEV-1")),
        NewEvent::at(at("09:38"), "lena", scale_step(StepPhase::Planned, 8, 1)),
        NewEvent::at(at("09:40"), "lena", scale_step(StepPhase::Applied, 8, 1)),
        NewEvent::at(
            at("09:41"),
            "warroom",
            scale_step(StepPhase::Verified, 8, 1),
        ),
        NewEvent::at(at("09:46"), "lena", Entry::milestone(Milestone::Mitigated)),
        NewEvent::at(
            at("09:47"),
            "warroom",
            Entry::Alert(AlertChange {
                alert: "LockConcurrentHolders".into(),
                state: AlertState::Resolved,
                value: Some(1.0),
                labels: Default::default(),
            }),
        ),
        NewEvent::at(at("10:55"), "ingrid", Entry::milestone(Milestone::Resolved)),
    ]);
    journal.append_many(events).expect("append incident");
}

#[test]
fn writer_killed_mid_append_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-crash.jsonl");
    let mut child = warroom()
        .args(["timeline", "bench-append"])
        .arg(&path)
        .args(["--writers", "8", "--count", "1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn warroom");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = BTreeSet::new();
    for line in lines.by_ref() {
        let line = line.expect("read ack");
        acked.insert(
            line.trim()
                .parse::<u64>()
                .expect("ack is a sequence number"),
        );
        if acked.len() >= 5000 {
            break;
        }
    }
    // SIGKILL in the middle of the appends.
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    // Acks already in the pipe were acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Ok(seq) = line.trim().parse::<u64>() {
            acked.insert(seq);
        }
    }
    assert!(acked.len() >= 5000);

    let contents = read_journal(&path).expect("journal reads back after SIGKILL");
    let seqs: Vec<u64> = contents.events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers strictly increase"
    );
    let on_disk: BTreeSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<_> = acked.difference(&on_disk).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Any skipped line can only be a torn tail.
    assert!(contents.skipped.iter().all(|s| s.torn_tail));

    // A power loss could also drop unsynced bytes after the last acknowledged
    // event: cut the file inside the next line (or append half a line when
    // the file ends at the last acknowledgement).
    let bytes = std::fs::read(&path).expect("read journal bytes");
    let last_acked = *acked.last().expect("acks");
    let needle = format!("{{\"seq\":{last_acked},");
    let start = find(&bytes, needle.as_bytes()).expect("last acknowledged line on disk");
    let end = start
        + bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("terminated")
        + 1;
    if end < bytes.len() {
        let next_len = bytes[end..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len() - end);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len((end + next_len / 2) as u64).expect("truncate");
    } else {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(&bytes[start..start + (end - start) / 2])
            .expect("torn write");
    }

    let contents = read_journal(&path).expect("journal with torn tail reads back");
    let torn = contents.torn_tail().expect("torn tail is reported");
    assert!(torn.reason.contains("torn"), "{}", torn.reason);
    let on_disk: BTreeSet<u64> = contents.events.iter().map(|e| e.seq).collect();
    assert!(
        acked.is_subset(&on_disk),
        "every acknowledged event survives"
    );

    // Reopening reports the torn line, keeps it, and appends after it.
    let journal = Journal::open_or_create(&path).expect("reopen");
    assert!(journal.recovered().iter().any(|s| s.torn_tail));
    let recorded = journal
        .append(NewEvent::now("tester", Entry::note("after the crash")))
        .expect("append after crash");
    assert!(recorded.seq > *on_disk.last().expect("events"));
    let contents = read_journal(&path).expect("read again");
    assert!(
        contents.torn_tail().is_none(),
        "the torn line is now closed"
    );
    assert_eq!(contents.skipped.len(), 1, "the torn line is still reported");
    let last = contents.events.last().expect("events");
    assert_eq!(last.seq, recorded.seq);
    assert!(matches!(&last.entry, Entry::Note(n) if n.text == "after the crash"));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn postmortem_markdown_matches_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-004.jsonl");
    write_known_incident(&path);
    let contents = read_journal(&path).expect("read");
    assert!(contents.skipped.is_empty());
    let md = export::markdown(&contents);
    insta::assert_snapshot!("pm004_postmortem_markdown", md);
}

fn event(seq: u64, at: &str, entry: Entry) -> Event {
    Event {
        seq,
        at: t(at),
        logged_at: None,
        actor: "tester".into(),
        entry,
    }
}

/// Builds events for the milestones kept, PM-003-like times.
fn with_milestones(keep: &[Milestone]) -> Vec<Event> {
    let times = [
        (Milestone::Started, "2026-11-26T09:00:00Z"),
        (Milestone::Detected, "2026-11-26T09:14:00Z"),
        (Milestone::Declared, "2026-11-26T09:51:00Z"),
        (Milestone::Mitigated, "2026-11-26T10:41:00Z"),
        (Milestone::Resolved, "2026-11-26T15:41:00Z"),
    ];
    let mut events = vec![event(
        1,
        "2026-11-26T08:59:00Z",
        Entry::note("campaign launches"),
    )];
    for (m, at) in times {
        if keep.contains(&m) {
            events.push(event(events.len() as u64 + 1, at, Entry::milestone(m)));
        }
    }
    events
}

#[test]
fn time_to_detect_and_mitigate_with_and_without_each_milestone() {
    use Milestone::*;
    let minutes = |i: Option<warroom::timeline::Interval>| i.map(|i| i.millis / 60_000);
    let to = |i: Option<warroom::timeline::Interval>| i.map(|i| i.to);

    let all = Figures::from_events(&with_milestones(&Milestone::ALL));
    assert_eq!(minutes(all.time_to_detect), Some(14));
    assert_eq!(to(all.time_to_detect), Some(Detected));
    assert_eq!(minutes(all.time_to_mitigate), Some(101));
    assert_eq!(minutes(all.duration), Some(401));
    assert!(!all.ongoing);

    // No detected: declaring implies detection.
    let f = Figures::from_events(&with_milestones(&[Started, Declared, Mitigated, Resolved]));
    assert_eq!(minutes(f.time_to_detect), Some(51));
    assert_eq!(to(f.time_to_detect), Some(Declared));
    assert_eq!(
        f.describe(f.time_to_detect.as_ref(), Detected),
        "51m (started → declared; no detected milestone)"
    );
    assert_eq!(minutes(f.time_to_mitigate), Some(101));

    // Neither detected nor declared: not recorded, never guessed.
    let f = Figures::from_events(&with_milestones(&[Started, Mitigated, Resolved]));
    assert_eq!(f.time_to_detect, None);
    assert_eq!(
        f.describe(None, Detected),
        "not recorded (no detected milestone)"
    );
    assert_eq!(minutes(f.time_to_mitigate), Some(101));

    // No declared: no effect on either figure.
    let f = Figures::from_events(&with_milestones(&[Started, Detected, Mitigated, Resolved]));
    assert_eq!(minutes(f.time_to_detect), Some(14));
    assert_eq!(minutes(f.time_to_mitigate), Some(101));

    // No mitigated: resolution stands in.
    let f = Figures::from_events(&with_milestones(&[Started, Detected, Declared, Resolved]));
    assert_eq!(minutes(f.time_to_mitigate), Some(401));
    assert_eq!(to(f.time_to_mitigate), Some(Resolved));

    // No resolved: ongoing, no duration, TTM from mitigated.
    let f = Figures::from_events(&with_milestones(&[Started, Detected, Declared, Mitigated]));
    assert!(f.ongoing);
    assert_eq!(f.duration, None);
    assert_eq!(minutes(f.time_to_mitigate), Some(101));
    assert_eq!(f.describe_duration(), "ongoing (not resolved)");

    // Neither mitigated nor resolved.
    let f = Figures::from_events(&with_milestones(&[Started, Detected]));
    assert_eq!(f.time_to_mitigate, None);
    assert_eq!(minutes(f.time_to_detect), Some(14));

    // No started: nothing can be computed.
    let f = Figures::from_events(&with_milestones(&[Detected, Declared, Mitigated, Resolved]));
    assert_eq!(
        (f.time_to_detect, f.time_to_mitigate, f.duration),
        (None, None, None)
    );
    assert_eq!(
        f.describe(None, Detected),
        "not recorded (no started milestone)"
    );

    // The Markdown header carries the same figures.
    let contents = warroom::timeline::JournalContents {
        events: with_milestones(&Milestone::ALL),
        skipped: vec![],
    };
    let md = export::markdown(&contents);
    assert!(md.contains("| Time to Detect | 14m |"), "{md}");
    assert!(md.contains("| Time to Mitigate | 1h 41m |"), "{md}");
    assert!(
        md.contains("| Duration | 6h 41m (started → resolved) |"),
        "{md}"
    );
}

fn run_ok(args: &[&str], dir: &Path) -> String {
    let out = warroom()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run warroom");
    assert!(
        out.status.success(),
        "warroom {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn out_of_order_milestones_are_refused_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_ok(
        &[
            "timeline",
            "new",
            "--id",
            "PM-004",
            "--severity",
            "SEV-1",
            "--started",
            "2026-11-26T09:00:00Z",
            "--actor",
            "ingrid",
        ],
        dir.path(),
    );
    let file = dir.path().join("incidents/PM-004.jsonl");
    assert!(file.exists(), "default path incidents/<id>.jsonl");
    run_ok(
        &[
            "timeline",
            "mark",
            "incidents/PM-004.jsonl",
            "mitigated",
            "--at",
            "2026-11-26T10:41:00Z",
        ],
        dir.path(),
    );
    let before = std::fs::read(&file).expect("read");

    // detected after mitigated
    let out = warroom()
        .args([
            "timeline",
            "mark",
            "--id",
            "PM-004",
            "detected",
            "--at",
            "2026-11-26T09:14:00Z",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "refused exit status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`detected`") && stderr.contains("`mitigated`"),
        "{stderr}"
    );

    // resolved earlier than mitigated
    let out = warroom()
        .args([
            "timeline",
            "mark",
            "--id",
            "PM-004",
            "resolved",
            "--at",
            "2026-11-26T10:00:00Z",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`resolved`") && stderr.contains("`mitigated`"),
        "{stderr}"
    );

    // a time without its date is invalid input
    let out = warroom()
        .args([
            "timeline", "mark", "--id", "PM-004", "resolved", "--at", "11:00",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));

    assert_eq!(
        std::fs::read(&file).expect("read"),
        before,
        "refusals write nothing"
    );

    // in order, it is accepted
    run_ok(
        &[
            "timeline",
            "mark",
            "--id",
            "PM-004",
            "resolved",
            "--at",
            "2026-11-26T15:41:00Z",
        ],
        dir.path(),
    );
    // and `new` never rewrites an existing journal
    let out = warroom()
        .args(["timeline", "new", "--id", "PM-004", "--severity", "SEV-2"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3));
    let contents = read_journal(&file).expect("read");
    let marks: Vec<Milestone> = contents
        .events
        .iter()
        .filter_map(|e| match &e.entry {
            Entry::Milestone(m) => Some(m.milestone),
            _ => None,
        })
        .collect();
    assert_eq!(
        marks,
        [
            Milestone::Started,
            Milestone::Mitigated,
            Milestone::Resolved
        ]
    );
}

#[test]
fn html_export_is_self_contained_with_the_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-004.jsonl");
    write_known_incident(&path);
    let out = dir.path().join("PM-004.html");
    run_ok(
        &[
            "timeline",
            "export",
            path.to_str().expect("utf-8 path"),
            "--format",
            "html",
            "-o",
            out.to_str().expect("utf-8 path"),
        ],
        dir.path(),
    );
    let html = std::fs::read_to_string(&out).expect("html written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    let svg_start = html.find("<svg").expect("an inline <svg> chart");
    let svg = &html[svg_start..html.find("</svg>").expect("svg closes")];
    // two line series (collisions, errors) with one point per snapshot
    let series: Vec<&str> = svg
        .split("<polyline")
        .skip(1)
        .filter(|p| {
            p.split("points=\"")
                .nth(1)
                .is_some_and(|pts| pts.split(' ').count() >= 100)
        })
        .collect();
    assert_eq!(series.len(), 2, "collisions and errors series");
    assert!(svg.contains("lock collisions / min"));
    assert!(svg.contains("errors / min"));
    for milestone in ["started", "detected", "declared", "mitigated", "resolved"] {
        assert!(svg.contains(milestone), "milestone {milestone} marked");
    }
    assert!(svg.contains("scale-to-one applied"), "step marked");
    // nothing fetched from anywhere
    for forbidden in [
        "http://", "https://", "<script", "<link", "src=", "@import", "url(",
    ] {
        assert!(!html.contains(forbidden), "{forbidden} in the page");
    }
    assert!(html.contains("@media print"));
    assert!(html.contains("<td>Time to Detect</td>") || html.contains("<th>Time to Detect</th>"));
}

#[test]
fn secrets_never_reach_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-secrets.jsonl");
    let journal = Journal::open_or_create(&path).expect("open");
    let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNhLWtleSJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Iiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OnNob3A6b3JkZXJzIn0.Qm9ndXNTaWduYXR1cmVGb3JUZXN0aW5nT25seQ";
    let secrets = [
        "hunter2-Redis!",
        "0rd3rs-PG-pass",
        "gh0stT0ken99",
        "s3cr3t-query",
        "sk_live_51HxBogusKey",
        "abcdef.0123456789abcdef",
        "ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ",
        "dXNlcjpwYXNzd29yZA==",
        "Zm9vYmFyYmF6cXV4",
        "wJalrXUtnFEMI-K7MDENG",
        jwt,
        "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVF",
        "Tr0ub4dor3xPhrase",
        "pk_9f8e7d6c5b4a",
        "acc3ssK3yV4lue",
        "ck-77aa88bb99",
        "sess-5f2a9c0d1e",
        "theme-secret-cookie",
        "sid-0a1b2c3d4e",
        "MIIEpAIBAAKCAQEAbogusPemBody1",
        "MoreBogusPemLine2",
        "horse battery staple",
        "pk-configmap-value",
        "pp-configmap-value",
        "ck-configmap-value",
    ];
    let notes = [
        "Connected with redis-cli -u redis://:hunter2-Redis!@redis-0.redis.shop.svc:6379/0"
            .to_string(),
        "DSN was postgres://orders:0rd3rs-PG-pass@pg.shop.svc:5432/orders?sslmode=require"
            .to_string(),
        "curl -H 'Authorization: Bearer gh0stT0ken99' https://exporter.shop.svc/metrics"
            .to_string(),
        "webhook https://hooks.example.com/x?user=ops&token=s3cr3t-query&ok=1 fired".to_string(),
        "payment api_key=sk_live_51HxBogusKey leaked in logs".to_string(),
        format!("kubectl --token {jwt} -n shop get pods"),
        "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef".to_string(),
        "pushed fix with ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwXyZ".to_string(),
        "proxy sent Authorization: Basic dXNlcjpwYXNzd29yZA==".to_string(),
        "fencing token 4711 rejected stale holder pod-7f".to_string(),
        "rotated the secret\u{2014}token was in the logs".to_string(),
        "kubeconfig of ops:\n  user:\n    client-certificate-data: LS0tQ0VSVElGSUNBVEU=\n    client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVF\n".to_string(),
        "gpg passphrase: Tr0ub4dor3xPhrase".to_string(),
        "ssh --private-key pk_9f8e7d6c5b4a to the bastion".to_string(),
        "aws access-key=acc3ssK3yV4lue and client-key: ck-77aa88bb99".to_string(),
        "curl -H 'Cookie: session=sess-5f2a9c0d1e; theme=theme-secret-cookie' https://shop.svc/"
            .to_string(),
        "replayed session=sid-0a1b2c3d4e from the access log".to_string(),
        "key on the node:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAbogusPemBody1\nMoreBogusPemLine2\n-----END RSA PRIVATE KEY-----\nremoved it".to_string(),
        "redis.conf had password: \"correct horse battery staple\" in it".to_string(),
    ];
    for note in &notes {
        journal
            .append(NewEvent::now("lena", Entry::note(note.clone())))
            .expect("append note");
    }
    journal
        .append(NewEvent::now(
            "warroom",
            Entry::Step(StepReport {
                playbook: "lock-contention".into(),
                run_id: "run-2".into(),
                step: "enable-watch-locking".into(),
                kind: "patch-configmap".into(),
                phase: StepPhase::Applied,
                target: StepTarget {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: Some("shop".into()),
                    name: "order-service".into(),
                },
                before: serde_json::json!({"data": {
                    "LOCK_MODE": "legacy",
                    "REDIS_URL": "redis://:hunter2-Redis!@redis-0:6379",
                    "REDIS_PASSWORD": "wJalrXUtnFEMI-K7MDENG",
                    "PRIVATE-KEY": "pk-configmap-value",
                    "passphrase": "pp-configmap-value",
                    "Client.Key": "ck-configmap-value",
                }}),
                after: serde_json::json!({"data": {
                    "LOCK_MODE": "watch",
                    "REDIS_URL": "redis://:hunter2-Redis!@redis-0:6379",
                    "headers": {"Authorization": "Bearer gh0stT0ken99"},
                    "fencing_token": 4711,
                }}),
                message: Some(
                    "env DATABASE_URL=postgres://orders:0rd3rs-PG-pass@pg:5432/orders".into(),
                ),
            }),
        ))
        .expect("append step");
    journal
        .append(NewEvent::now(
            "warroom",
            Entry::Step(StepReport {
                playbook: "rotate".into(),
                run_id: "run-3".into(),
                step: "rotate-redis-password".into(),
                kind: "patch".into(),
                phase: StepPhase::Applied,
                target: StepTarget {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    namespace: Some("shop".into()),
                    name: "redis-auth".into(),
                },
                before: serde_json::json!({"data": {"auth": "Zm9vYmFyYmF6cXV4"}}),
                after: serde_json::json!({"data": {"auth": "c2stbGl2ZS01MUh4Qm9ndXNLZXk"}}),
                message: None,
            }),
        ))
        .expect("append secret step");
    journal
        .append(NewEvent::now(
            "warroom",
            Entry::Alert(AlertChange {
                alert: "LockErrorsAbsolute".into(),
                state: AlertState::Fired,
                value: Some(61.0),
                labels: [(
                    "source".to_string(),
                    "redis://default:hunter2-Redis!@redis-0:6379".to_string(),
                )]
                .into(),
            }),
        ))
        .expect("append alert");
    drop(journal);

    let bytes = std::fs::read(&path).expect("read journal bytes");
    let text = String::from_utf8(bytes).expect("utf-8 journal");
    for secret in secrets.iter().chain(["c2stbGl2ZS01MUh4Qm9ndXNLZXk"].iter()) {
        assert!(
            !text.contains(secret),
            "secret {secret} reached the disk:\n{text}"
        );
    }
    // What is not secret stays readable.
    for kept in [
        "redis-0.redis.shop.svc:6379",
        "postgres://orders:[REDACTED]@pg.shop.svc:5432/orders",
        "Authorization: [REDACTED]",
        "fencing token 4711 rejected",
        "\"fencing_token\":4711",
        "\"LOCK_MODE\":\"watch\"",
        "ops",
        "rotated the secret\u{2014}token was in the logs",
        "client-certificate-data: LS0tQ0VSVElGSUNBVEU=",
        "-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----",
        "password: \\\"[REDACTED]\\\" in it",
    ] {
        assert!(text.contains(kept), "{kept} was lost:\n{text}");
    }
    // And the exports of the journal carry no secret either.
    let contents = read_journal(&path).expect("read");
    assert!(contents.skipped.is_empty());
    for format in [Format::Markdown, Format::Json, Format::Html] {
        let out = export::render(&contents, format);
        for secret in &secrets {
            assert!(!out.contains(secret), "{secret} in {format:?} export");
        }
    }
}

#[test]
fn concurrent_handles_and_tasks_share_one_strictly_increasing_sequence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-many.jsonl");
    // Two independent opens of the same file (as two processes would), each
    // with many writers: flock keeps them from interleaving.
    let a = Journal::open_or_create(&path).expect("open a");
    let b = Journal::open_or_create(&path).expect("open b");
    let mut threads = Vec::new();
    for (name, journal) in [("a", a.clone()), ("b", b.clone())] {
        for w in 0..4 {
            let journal = journal.clone();
            threads.push(std::thread::spawn(move || {
                (0..200)
                    .map(|i| {
                        journal
                            .append(NewEvent::now(name, Entry::note(format!("{name}{w}-{i}"))))
                            .expect("append")
                            .seq
                    })
                    .collect::<Vec<_>>()
            }));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let async_seqs: Vec<u64> = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for task in 0..50 {
            let journal = a.clone();
            set.spawn(async move {
                journal
                    .append_async(NewEvent::automatic(Entry::note(format!("task {task}"))))
                    .await
                    .expect("append async")
                    .seq
            });
        }
        set.join_all().await
    });
    let mut acked: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer thread"))
        .chain(async_seqs)
        .collect();
    acked.sort_unstable();
    let total = 2 * 4 * 200 + 50;
    acked.dedup();
    assert_eq!(acked.len(), total, "no sequence number given twice");
    let contents = read_journal(&path).expect("read");
    assert!(contents.skipped.is_empty());
    let seqs: Vec<u64> = contents.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
}

#[test]
fn journal_handle_is_cheap_to_share_across_threads_and_tasks() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Journal>();
}

#[test]
fn actor_comes_from_the_kubeconfig_user_then_user_then_warroom() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: drill\n  cluster: {server: \"https://127.0.0.1:6443\"}\n\
         contexts:\n- name: other\n  context: {cluster: drill, user: someone-else}\n\
         - name: drill\n  context: {cluster: drill, user: oncall-bastian}\n\
         current-context: drill\nusers:\n- name: oncall-bastian\n  user: {token: abc}\n",
    )
    .expect("write kubeconfig");
    let file = "incidents/PM-actor.jsonl";
    let record = |envs: &[(&str, &str)], text: &str| {
        let mut cmd = warroom();
        cmd.args(["timeline", "note", file, text])
            .current_dir(dir.path())
            .env_remove("USER")
            .env_remove("KUBECONFIG")
            .env("HOME", dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run_ok(
        &[
            "timeline",
            "new",
            file,
            "--id",
            "PM-actor",
            "--severity",
            "SEV-3",
            "--actor",
            "ingrid",
        ],
        dir.path(),
    );
    let kc = kubeconfig.to_str().expect("utf-8");
    record(&[("KUBECONFIG", kc), ("USER", "alice")], "from kubeconfig");
    record(&[("USER", "alice")], "from USER");
    record(&[], "automatic");
    let contents = read_journal(&dir.path().join(file)).expect("read");
    let actors: Vec<&str> = contents.events.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(
        actors,
        [
            "ingrid",
            "ingrid",
            "ingrid",
            "oncall-bastian",
            "alice",
            "warroom"
        ]
    );
}

#[test]
fn exports_report_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-004.jsonl");
    write_known_incident(&path);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    file.write_all(b"{\"seq\":999,\"at\":\"2026-11-26T11:0")
        .expect("torn write");
    let contents = read_journal(&path).expect("read");
    assert!(contents.torn_tail().is_some());
    let md = export::markdown(&contents);
    assert!(md.contains("torn last line"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&export::json(&contents)).expect("json export parses");
    assert_eq!(json["skipped"][0]["torn_tail"], true);
    assert_eq!(json["figures"]["time_to_detect"]["millis"], 14 * 60_000);
    let out = warroom()
        .args([
            "timeline",
            "export",
            path.to_str().expect("utf-8"),
            "--format",
            "md",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("torn last line"));
}

mod redaction_properties {
    use proptest::prelude::*;
    use warroom::redact::redact_text;

    proptest! {
        #[test]
        fn url_and_parameter_passwords_never_survive(
            pw in "[A-Za-z0-9!$%*+.~_-]{6,24}",
            user in "[a-z]{1,8}",
            host in "[a-z]{3,10}\\.svc",
        ) {
            for text in [
                format!("redis://:{pw}@{host}:6379/0"),
                format!("connect postgres://{user}:{pw}@{host}/orders now"),
                format!("https://{host}/hook?user={user}&password={pw}&x=1"),
                format!("token={pw}"),
                format!("db password: {pw}"),
                format!("Authorization: Bearer {pw}"),
            ] {
                let out = redact_text(&text);
                prop_assert!(!out.contains(&pw), "{} -> {}", text, out);
                prop_assert!(out.contains("[REDACTED]"));
            }
        }

        #[test]
        fn any_text_around_a_secret_keyword_is_redacted_without_panicking(
            before in "\\PC{0,12}",
            key in prop::sample::select(vec![
                "password", "token", "secret", "api_key", "authorization", "bearer", "basic",
                "passphrase", "private-key", "cookie", "session", "://", "eyJ", "ghp_",
            ]),
            after in "\\PC{0,12}",
        ) {
            for text in [
                format!("{before}{key}{after}"),
                format!("{before}--{key} {after}"),
                format!("{before}{key}={after}"),
                format!("{before}{key}: \"{after}\""),
            ] {
                let _ = redact_text(&text);
            }
        }

        #[test]
        fn passwords_after_non_ascii_text_never_survive(
            before in "[\u{e9}\u{fc}\u{2014}\u{65e5}\u{1f525} .,()]{0,8}",
            pw in "[A-Za-z0-9!$%*+.~_-]{6,24}",
            after in "[\u{e9}\u{2014}\u{65e5} ]{0,8}",
        ) {
            for text in [
                format!("{before}password={pw} {after}"),
                format!("{before}--token {pw} {after}"),
                format!("{before}db password: {pw} {after}"),
                format!("{before}redis://:{pw}@host:6379 {after}"),
                format!("{before}Authorization: Bearer {pw}"),
            ] {
                let out = redact_text(&text);
                prop_assert!(!out.contains(&pw), "{} -> {}", text, out);
            }
        }

        #[test]
        fn bearer_tokens_never_survive(token in "[A-Za-z0-9._~+/=-]{8,40}") {
            let text = format!("called the API with bearer {token} and got 403");
            let out = redact_text(&text);
            prop_assert!(!out.contains(&token), "{} -> {}", text, out);
        }
    }
}

/// A journal whose only line carries sequence number `seq`.
fn journal_with_seq(dir: &Path, seq: u64) -> std::path::PathBuf {
    let path = dir.join(format!("seq-{seq}.jsonl"));
    let journal = Journal::open_or_create(&path).expect("open");
    journal
        .append(NewEvent::now("lena", Entry::note("first")))
        .expect("append");
    drop(journal);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains("\"seq\":1,"), "{text}");
    std::fs::write(
        &path,
        text.replace("\"seq\":1,", &format!("\"seq\":{seq},")),
    )
    .expect("rewrite");
    path
}

#[test]
fn a_journal_with_no_sequence_number_left_is_refused_not_panicked_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = journal_with_seq(dir.path(), u64::MAX);
    let err = Journal::open_or_create(&full).expect_err("no sequence number after u64::MAX");
    assert!(
        matches!(err, warroom::timeline::TimelineError::SequenceExhausted { last, .. } if last == u64::MAX),
        "{err}"
    );
    assert!(err.to_string().contains("corrupt"), "{err}");
    let out = warroom()
        .args(["timeline", "note", full.to_str().expect("utf-8"), "after"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("corrupt") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // It can still be exported.
    run_ok(
        &[
            "timeline",
            "export",
            full.to_str().expect("utf-8"),
            "--format",
            "md",
        ],
        dir.path(),
    );

    // One number left: it is never handed out, and appends are refused.
    let last = journal_with_seq(dir.path(), u64::MAX - 1);
    let journal = Journal::open_or_create(&last).expect("opens: a number is left");
    let err = journal
        .append(NewEvent::now("lena", Entry::note("second")))
        .expect_err("the last number is not handed out");
    assert!(
        matches!(
            err,
            warroom::timeline::TimelineError::SequenceExhausted { .. }
        ),
        "{err}"
    );
    drop(journal);
    let text = std::fs::read_to_string(&last).expect("read");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.contains("second"));
}

#[test]
fn html_export_of_absurd_metric_values_finishes_with_the_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-absurd.jsonl");
    write_known_incident(&path);
    let journal = Journal::open_or_create(&path).expect("open");
    journal
        .append_many(vec![
            NewEvent::at(t("2026-11-26T11:00:00Z"), "warroom", metric(1.7e308, 3.0)),
            NewEvent::at(t("2026-11-26T11:01:00Z"), "warroom", metric(f64::MAX, -5.0)),
            NewEvent::at(t("2026-11-26T11:02:00Z"), "warroom", metric(2.0, 1e300)),
        ])
        .expect("append absurd snapshots");
    drop(journal);
    let contents = read_journal(&path).expect("read");
    // The guard only turns a hang into a failure; it measures nothing.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(export::render(&contents, Format::Html));
    });
    let html = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the html export finishes");
    let svg_start = html.find("<svg").expect("an inline <svg> chart");
    let svg = &html[svg_start..html.find("</svg>").expect("svg closes")];
    assert!(svg.contains("lock collisions / min"));
    assert!(svg.contains("<polyline"), "series drawn");
    for bad in ["inf", "NaN"] {
        assert!(!svg.contains(bad), "{bad} in the chart");
    }
}

#[test]
fn bench_refuses_an_absurd_export_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = warroom()
        .args([
            "bench",
            "timeline",
            "--dir",
            dir.path().to_str().expect("utf-8"),
            "--single",
            "1",
            "--writers",
            "1",
            "--batched",
            "1",
            "--export-events",
            "18446744073709551615",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--export-events") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
