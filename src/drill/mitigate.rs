//! `--auto-mitigate PLAYBOOK`: the playbook run through the engine as a
//! library call against the drill's cluster, every gate approved (nobody is
//! asked in a headless drill), every step recorded in the drill's journal by
//! the engine with the operator as actor.

use std::path::Path;
use std::sync::Arc;

use crate::kube::{KubeAccess, KubeTarget};
use crate::playbook::journal::TimelineRecorder;
use crate::playbook::{AutoApprove, Engine, EventLog, LoadedPlaybook, Outcome, RunOptions};
use crate::timeline::Journal;

/// How an automatic mitigation ended.
#[derive(Debug, Clone)]
pub struct Mitigation {
    /// Every step done and verified.
    pub verified: bool,
    /// The engine's outcome, as a word (`done`, `failed-undone`, …).
    pub outcome: String,
    /// The engine's summary.
    pub message: String,
}

/// Runs `playbook` (loaded and validated beforehand) against the cluster of
/// `kubeconfig`, approving every gate and recording into `journal`.
pub async fn run(playbook: &LoadedPlaybook, kubeconfig: &Path, journal: Journal) -> Mitigation {
    let failed = |message: String| Mitigation {
        verified: false,
        outcome: "failed".into(),
        message: crate::redact::redact_text(&message).into_owned(),
    };
    let target = KubeTarget {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: None,
        namespace: None,
    };
    let kube = match KubeAccess::connect(&target).await {
        Ok(kube) => Arc::new(kube),
        Err(e) => return failed(e.to_string()),
    };
    let bound = match playbook.bind(&[], None, kube.namespace()) {
        Ok(bound) => bound,
        Err(e) => return failed(e.to_string()),
    };
    let log = Arc::new(EventLog::default());
    let recorder = Arc::new(TimelineRecorder::new(journal));
    let engine = Engine::new(kube, log, Arc::new(AutoApprove));
    tokio::spawn(recorder.record(engine.subscribe_acknowledged()));
    match engine.run(&bound, RunOptions { dry_run: false }).await {
        Ok(report) => Mitigation {
            verified: report.outcome == Outcome::Done && report.journal_error.is_none(),
            outcome: serde_json::to_value(report.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", report.outcome)),
            message: crate::redact::redact_text(&report.message).into_owned(),
        },
        Err(e) => failed(e.to_string()),
    }
}
