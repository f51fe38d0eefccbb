//! `warroom run … --timeline FILE` and `warroom undo … --timeline FILE`
//! record every step in the incident journal, with the operator from the
//! kubeconfig as actor and the values before and after; the postmortem export
//! then lists the steps taken.

use std::path::Path;

use serde_json::Value;
use warroom::cluster::ClusterServer;
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
