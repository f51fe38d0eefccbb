//! `warroom run … --timeline FILE` and `warroom undo … --timeline FILE`
//! record every step in the incident journal, with the operator from the
//! kubeconfig as actor and the values before and after; the postmortem export
//! then lists the steps taken. A journal that cannot be written stops the run
//! before its next change.

mod common;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use warroom::cluster::ClusterServer;
use warroom::kube::{KubeAccess, KubeTarget};
use warroom::playbook::journal::TimelineRecorder;
use warroom::playbook::record::RunOutcome;
use warroom::playbook::{AutoApprove, Engine, Outcome, RunOptions, StepEvent, StepObserver};
use warroom::timeline::{Entry, StepPhase, read_journal};

async fn warroom(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .expect("warroom runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A seeded local cluster and a kubeconfig for it in a fresh directory.
async fn local_cluster() -> (ClusterServer, tempfile::TempDir, std::path::PathBuf) {
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .expect("cluster server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    (server, dir, kubeconfig)
}

fn steps(journal: &Path) -> Vec<(String, warroom::timeline::StepReport)> {
    let contents = read_journal(journal).expect("journal reads back");
    assert!(contents.skipped.is_empty(), "no unreadable lines");
    contents
        .events
        .into_iter()
        .filter_map(|e| match e.entry {
            Entry::Step(step) => Some((e.actor, step)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_undo_record_every_step_in_the_timeline() {
    let (server, dir, kubeconfig) = local_cluster().await;
    let kubeconfig = kubeconfig.to_str().unwrap();
    let journal = dir.path().join("incidents/PM-004.jsonl");
    let journal_arg = journal.to_str().unwrap();

    let (code, _, stderr) = warroom(&[
        "timeline",
        "new",
        journal_arg,
        "--id",
        "PM-004",
        "--severity",
        "SEV-1",
    ])
    .await;
    assert_eq!(code, 0, "timeline new: {stderr}");

    let (code, stdout, stderr) = warroom(&[
        "run",
        "playbooks/scale-to-one.yaml",
        "--kubeconfig",
        kubeconfig,
        "--yes",
        "--timeline",
        journal_arg,
    ])
    .await;
    assert_eq!(code, 0, "run: {stdout}\n{stderr}");

    let recorded = steps(&journal);
    assert!(
        recorded
            .iter()
            .all(|(actor, _)| actor == "warroom-operator"),
        "actor is the kubeconfig user: {:?}",
        recorded.iter().map(|(a, _)| a).collect::<Vec<_>>()
    );
    let applied = recorded
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.phase == StepPhase::Applied && s.target.kind == "Deployment")
        .expect("the scale step is recorded as applied");
    assert_eq!(applied.target.name, "order-service");
    assert_eq!(applied.target.namespace.as_deref(), Some("orders"));
    let values = |v: &Value| v.to_string();
    assert!(
        values(&applied.before).contains('8') && values(&applied.after).contains('1'),
        "before 8 replicas, after 1: {} -> {}",
        applied.before,
        applied.after
    );
    assert!(
        recorded
            .iter()
            .any(|(_, s)| s.phase == StepPhase::Verified && s.run_id == applied.run_id),
        "the read-back is recorded"
    );

    let (code, stdout, stderr) = warroom(&[
        "undo",
        "--last",
        "--kubeconfig",
        kubeconfig,
        "--yes",
        "--timeline",
        journal_arg,
    ])
    .await;
    assert_eq!(code, 0, "undo: {stdout}\n{stderr}");
    let replicas = server
        .store()
        .get("apps/v1", "Deployment", Some("orders"), "order-service")
        .expect("deployment exists")["spec"]["replicas"]
        .clone();
    assert_eq!(replicas, 8, "undo restored the replicas");
    assert!(
        steps(&journal)
            .iter()
            .any(|(_, s)| s.phase == StepPhase::Undone && s.target.name == "order-service"),
        "the undo is recorded"
    );

    let (code, markdown, stderr) =
        warroom(&["timeline", "export", journal_arg, "--format", "md"]).await;
    assert_eq!(code, 0, "export: {stderr}");
    assert!(
        markdown.contains("order-service"),
        "the postmortem lists the steps taken:\n{markdown}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unwritable_timeline_refuses_the_run_before_anything_changes() {
    let (server, dir, kubeconfig) = local_cluster().await;
    // A directory where the journal file should be.
    let journal = dir.path().join("journal.jsonl");
    std::fs::create_dir(&journal).unwrap();

    let (code, _, stderr) = warroom(&[
        "run",
        "playbooks/scale-to-one.yaml",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--yes",
        "--timeline",
        journal.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    let replicas = server
        .store()
        .get("apps/v1", "Deployment", Some("orders"), "order-service")
        .expect("deployment exists")["spec"]["replicas"]
        .clone();
    assert_eq!(replicas, 8);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_cannot_be_written_stops_the_run_before_it_changes_anything() {
    let (server, _dir, kubeconfig) = local_cluster().await;
    // /dev/full opens, and every write to it fails (ENOSPC): it is not a
    // regular file, so it is refused as a journal before anything runs.
    let (code, stdout, stderr) = warroom(&[
        "run",
        "playbooks/lock-contention.yaml",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--yes",
        "--timeline",
        "/dev/full",
    ])
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("/dev/full is not an incident journal"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    let replicas = server
        .store()
        .get("apps/v1", "Deployment", Some("orders"), "order-service")
        .expect("deployment exists")["spec"]["replicas"]
        .clone();
    assert_eq!(replicas, 8);
    server.stop().await;
}

/// Takes the journal's lock (as another process appending would) once the
/// step it waits for is applied, and holds it.
struct LockJournalAfter {
    step: &'static str,
    path: std::path::PathBuf,
    held: std::sync::Mutex<Option<std::fs::File>>,
}

impl StepObserver for LockJournalAfter {
    fn on_event(&self, event: &StepEvent) {
        use std::os::unix::io::AsRawFd;
        if event.step != self.step || event.phase != StepPhase::Applied {
            return;
        }
        let file = std::fs::File::open(&self.path).expect("journal opens");
        // SAFETY: flock on the descriptor of a file this struct keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "lock taken");
        *self.held.lock().unwrap() = Some(file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_stops_answering_mid_run_stops_the_run_before_its_next_change() {
    let (server, dir, kubeconfig) = local_cluster().await;
    let path = dir.path().join("PM-004.jsonl");
    let journal = warroom::timeline::Journal::open_or_create(&path).expect("journal");
    let recorder =
        Arc::new(TimelineRecorder::new(journal).with_timeout(std::time::Duration::from_secs(2)));
    let lock = Arc::new(LockJournalAfter {
        step: "scale-down",
        path: path.clone(),
        held: std::sync::Mutex::new(None),
    });
    let kube = Arc::new(
        KubeAccess::connect(&KubeTarget {
            kubeconfig: Some(kubeconfig),
            context: None,
            namespace: None,
        })
        .await
        .expect("connects"),
    );
    // The lock is taken as the event is sent; the recorder, a subscriber,
    // then finds the journal locked.
    let engine = Engine::new(kube, lock.clone(), Arc::new(AutoApprove));
    tokio::spawn(recorder.clone().record(engine.subscribe_acknowledged()));
    let bound = warroom::playbook::load_file(Path::new("playbooks/lock-contention.yaml"))
        .expect("valid")
        .bind(&[], None, "orders")
        .expect("binds");
    let report = engine
        .run(&bound, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Stopped, "{}", report.message);
    assert!(
        report
            .message
            .contains("incident journal could not be written"),
        "{}",
        report.message
    );
    assert!(
        report.message.contains("kept (scale-down)"),
        "{}",
        report.message
    );
    assert!(report.journal_error.is_some());
    let store = server.store();
    let replicas = store
        .get("apps/v1", "Deployment", Some("orders"), "order-service")
        .unwrap()["spec"]["replicas"]
        .clone();
    assert_eq!(replicas, 1, "the applied change is kept");
    let ingress = store
        .get(
            "networking.k8s.io/v1",
            "Ingress",
            Some("orders"),
            "orders-gateway",
        )
        .unwrap();
    assert!(
        ingress["metadata"]["annotations"].is_null(),
        "the next change was not made: {ingress}"
    );
    let records = engine.records("orders").await.unwrap();
    assert_eq!(records.last().unwrap().outcome, RunOutcome::Stopped);
    drop(lock.held.lock().unwrap().take());
    server.stop().await;
}

/// A change, a wait that only ends when cancelled, then a second change.
const CHANGE_WAIT_CHANGE: &str = "name: cancel-window\ndescription: d\nsteps:\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: wait\n    wait:\n      object: {apiVersion: v1, kind: ConfigMap, name: never-there}\n      until: exists\n      timeout: 1h\n  - name: after\n    set-config: {configmap: order-service-lock, key: LOCK_MODE, value: watch}\n";

/// Starts `warroom run` (no terminal, `--yes`) on CHANGE_WAIT_CHANGE, sends
/// `signal` once the first change is on the cluster and the wait polls,
/// and checks that the run undid the change, ended `cancelled` in its
/// record and recorded the cancellation and the undo in the timeline.
async fn signal_between_two_changes_undoes_the_first(signal: i32, who: &str) {
    let (server, dir, kubeconfig) = local_cluster().await;
    let playbook = dir.path().join("cancel-window.yaml");
    std::fs::write(&playbook, CHANGE_WAIT_CHANGE).unwrap();
    let journal = dir.path().join("PM-004.jsonl");
    let journal_arg = journal.to_str().unwrap();
    let (code, _, stderr) = warroom(&[
        "timeline",
        "new",
        journal_arg,
        "--id",
        "PM-004",
        "--severity",
        "SEV-1",
    ])
    .await;
    assert_eq!(code, 0, "timeline new: {stderr}");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args([
            "run",
            playbook.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--yes",
            "--timeline",
            journal.to_str().unwrap(),
        ])
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("warroom runs");
    let store = server.store();
    let requests = server.requests();
    let replicas = || {
        store
            .get("apps/v1", "Deployment", Some("orders"), "order-service")
            .expect("deployment exists")["spec"]["replicas"]
            .as_i64()
    };
    common::wait_until(
        "the first change applied and the wait polling",
        std::time::Duration::from_secs(30),
        || {
            (replicas() == Some(2)
                && requests
                    .entries()
                    .iter()
                    .any(|r| r.path_and_query.contains("/configmaps/never-there")))
            .then_some(())
        },
    );
    let pid = child.id().expect("running") as i32;
    // SAFETY: kill(2) on the pid of a child this test started and has not
    // yet reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("warroom exits after the signal")
        .expect("warroom exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cancelled by the operator ({who}) at step `wait`")),
        "{stdout}{stderr}"
    );
    assert!(
        !stderr.contains("[Y/n]"),
        "no terminal, so nobody is asked: {stderr}"
    );
    assert!(!stderr.contains("undo with:"), "nothing is left: {stderr}");
    assert_eq!(replicas(), Some(8), "the applied change was undone");
    let lock_mode = store
        .get("v1", "ConfigMap", Some("orders"), "order-service-lock")
        .expect("configmap")["data"]["LOCK_MODE"]
        .clone();
    assert_eq!(lock_mode, "legacy", "the second change never ran");

    let kube = Arc::new(
        KubeAccess::connect(&KubeTarget {
            kubeconfig: Some(kubeconfig),
            context: None,
            namespace: None,
        })
        .await
        .expect("connects"),
    );
    let engine = Engine::new(
        kube,
        Arc::new(warroom::playbook::EventLog::default()),
        Arc::new(AutoApprove),
    );
    let records = engine.records("orders").await.unwrap();
    let record = records.last().expect("the run is recorded");
    assert_eq!(record.outcome, RunOutcome::Cancelled, "{record:?}");
    assert!(record.finished.is_some());
    assert!(!record.undoable(), "nothing left to undo: {record:?}");

    let recorded = steps(&journal);
    let phases: Vec<(&str, StepPhase)> = recorded
        .iter()
        .map(|(_, s)| (s.step.as_str(), s.phase))
        .collect();
    let at = |want: (&str, StepPhase)| {
        phases
            .iter()
            .position(|p| *p == want)
            .unwrap_or_else(|| panic!("{want:?} is in the timeline: {phases:?}"))
    };
    let applied = at(("scale", StepPhase::Applied));
    let cancelled = at(("wait", StepPhase::Cancelled));
    let undone = at(("scale", StepPhase::Undone));
    assert!(applied < cancelled && cancelled < undone, "{phases:?}");
    assert!(
        recorded
            .iter()
            .all(|(actor, _)| actor == "warroom-operator"),
        "every step has its actor"
    );
    let (code, markdown, stderr) =
        warroom(&["timeline", "export", journal_arg, "--format", "md"]).await;
    assert_eq!(code, 0, "export: {stderr}");
    assert!(
        markdown.contains("Step wait (wait, playbook cancel-window) cancelled")
            && markdown.contains("Step scale (scale, playbook cancel-window) undone"),
        "the postmortem shows the cancellation and the undo:\n{markdown}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_between_two_changes_undoes_the_first_and_the_run_ends_cancelled() {
    signal_between_two_changes_undoes_the_first(libc::SIGINT, "Ctrl-C").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_between_two_changes_undoes_the_first_and_the_run_ends_cancelled() {
    signal_between_two_changes_undoes_the_first(libc::SIGTERM, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_into_a_missing_journal_starts_the_incident_named_after_the_file() {
    let (server, dir, kubeconfig) = local_cluster().await;
    let journal = dir.path().join("incidents/PM-006.jsonl");
    let (code, stdout, stderr) = warroom(&[
        "run",
        "playbooks/scale-to-one.yaml",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--yes",
        "--timeline",
        journal.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "run: {stdout}\n{stderr}");
    let contents = read_journal(&journal).expect("journal");
    assert!(
        matches!(&contents.events[0].entry, Entry::Incident(i) if i.id == "PM-006"),
        "the journal starts with its incident: {:?}",
        contents.events[0]
    );
    let figures = warroom::timeline::Figures::from_events(&contents.events);
    assert_eq!(figures.id.as_deref(), Some("PM-006"));
    let started = figures.milestones[&warroom::timeline::Milestone::Started];
    let first_step = contents
        .events
        .iter()
        .find(|e| matches!(e.entry, Entry::Step(_)))
        .expect("steps recorded");
    assert!(started <= first_step.at, "started before the first step");
    // The next note goes into the same incident.
    let (code, _, stderr) = warroom(&["timeline", "note", journal.to_str().unwrap(), "ok"]).await;
    assert_eq!(code, 0, "{stderr}");
    server.stop().await;
}
