//! Playbooks against the local cluster server over real HTTP: every shipped
//! playbook applies, verifies, is idempotent, dry-runs without changing
//! anything and undoes; failing steps undo earlier ones; the Lease refuses a
//! concurrent run; `warroom run`/`undo`/`validate` as a real binary, and
//! `kubectl` sees what `warroom run` changed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tempfile::TempDir;
use warroom::cluster::ClusterServer;
use warroom::kube::{KubeAccess, KubeError, KubeTarget, ObjectRef};
use warroom::playbook::event::ConfirmFuture;
use warroom::playbook::record::{PREVIOUS_ANNOTATION, RunOutcome, StepOutcome};
use warroom::playbook::{
    AutoApprove, BoundPlaybook, Cancel, ConfirmRequest, Confirmation, Confirmer, Engine, EventLog,
    Outcome, RunOptions, StepPhase,
};

const NS: &str = "orders";

struct Drill {
    server: ClusterServer,
    _dir: TempDir,
    kubeconfig: PathBuf,
}

impl Drill {
    async fn start() -> Drill {
        let server = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
            .await
            .expect("cluster server starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Drill {
            server,
            _dir: dir,
            kubeconfig,
        }
    }

    async fn access(&self) -> Arc<KubeAccess> {
        Arc::new(
            KubeAccess::connect(&KubeTarget {
                kubeconfig: Some(self.kubeconfig.clone()),
                context: None,
                namespace: None,
            })
            .await
            .expect("connects"),
        )
    }

    async fn engine(&self, confirmer: Arc<dyn Confirmer>) -> (Engine, Arc<EventLog>) {
        let log = Arc::new(EventLog::default());
        (
            Engine::new(self.access().await, log.clone(), confirmer),
            log,
        )
    }

    fn deployment(&self) -> Value {
        self.server
            .store()
            .get("apps/v1", "Deployment", Some(NS), "order-service")
            .expect("deployment")
    }

    fn ingress(&self) -> Value {
        self.server
            .store()
            .get(
                "networking.k8s.io/v1",
                "Ingress",
                Some(NS),
                "orders-gateway",
            )
            .expect("ingress")
    }

    fn lock_config(&self) -> Value {
        self.server
            .store()
            .get("v1", "ConfigMap", Some(NS), "order-service-lock")
            .expect("configmap")
    }

    fn replicas(&self) -> i64 {
        self.deployment()["spec"]["replicas"]
            .as_i64()
            .expect("replicas")
    }

    fn limit_rps(&self) -> Option<String> {
        self.ingress()
            .pointer("/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn lock_mode(&self) -> String {
        self.lock_config()["data"]["LOCK_MODE"]
            .as_str()
            .expect("LOCK_MODE")
            .to_owned()
    }

    /// resourceVersions of the three drill objects.
    fn versions(&self) -> [String; 3] {
        [self.deployment(), self.ingress(), self.lock_config()].map(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
    }
}

fn playbook_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("playbooks")
        .join(name)
}

fn bind(name: &str) -> BoundPlaybook {
    let loaded = warroom::playbook::load_file(&playbook_path(name)).expect("valid playbook");
    loaded.bind(&[], None, NS).expect("binds")
}

fn bind_text(source: &str) -> BoundPlaybook {
    let loaded = warroom::playbook::parse("test.yaml", source).expect("valid playbook");
    loaded.bind(&[], None, NS).expect("binds")
}

fn has_previous(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PREVIOUS_ANNOTATION))
        .is_some()
}

/// What the drill objects look like: (replicas, limit-rps, LOCK_MODE).
fn state(drill: &Drill) -> (i64, Option<String>, String) {
    (drill.replicas(), drill.limit_rps(), drill.lock_mode())
}

fn original() -> (i64, Option<String>, String) {
    (8, None, "legacy".into())
}

async fn check_playbook_lifecycle(name: &str, mitigated: (i64, Option<String>, String)) {
    let drill = Drill::start().await;
    let (engine, log) = drill.engine(Arc::new(AutoApprove)).await;
    let playbook = bind(name);
    assert_eq!(state(&drill), original());

    // Dry run: planned, accepted by the server, nothing changed.
    let before = drill.versions();
    let dry = engine
        .run(&playbook, RunOptions { dry_run: true })
        .await
        .expect("dry run");
    assert_eq!(dry.outcome, Outcome::DryRun, "{name}: {}", dry.message);
    assert_eq!(drill.versions(), before, "{name}: dry run changed nothing");
    assert_eq!(state(&drill), original());
    let dry_checked = log
        .events()
        .iter()
        .filter(|e| e.phase == StepPhase::DryRun)
        .count();
    assert!(dry_checked >= 1, "{name}: the server dry-ran the changes");

    // Apply: every change written and verified.
    let run = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(run.outcome, Outcome::Done, "{name}: {}", run.message);
    assert_eq!(state(&drill), mitigated, "{name}: mitigation in place");
    let applied: Vec<&str> = run
        .steps
        .iter()
        .filter(|s| s.outcome == StepOutcome::Applied)
        .map(|s| s.name.as_str())
        .collect();
    assert!(!applied.is_empty(), "{name}: steps applied");
    for step in &applied {
        let verified = log.events().iter().any(|e| {
            e.run_id == run.plan.run_id && e.step == *step && e.phase == StepPhase::Verified
        });
        assert!(verified, "{name}: {step} read back and verified");
    }
    let events = log.events();
    let scale = events
        .iter()
        .find(|e| e.run_id == run.plan.run_id && e.phase == StepPhase::Applied);
    let scale = scale.expect("an applied event");
    assert_eq!(scale.actor, "warroom-operator");
    assert!(scale.before.is_some() && scale.after.is_some());

    // Idempotent: a second run changes nothing.
    let versions = drill.versions();
    let again = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("re-run");
    assert_eq!(again.outcome, Outcome::Done, "{name}: {}", again.message);
    assert!(
        again
            .steps
            .iter()
            .all(|s| s.outcome != StepOutcome::Applied),
        "{name}: nothing applied twice: {:?}",
        again.steps
    );
    assert_eq!(drill.versions(), versions, "{name}: re-run wrote nothing");

    // Undo the first run from its record.
    let undo = engine.undo(NS, Some(&run.plan.run_id)).await.expect("undo");
    assert_eq!(undo.outcome, Outcome::Undone, "{name}: {}", undo.message);
    assert_eq!(state(&drill), original(), "{name}: back to the original");
    for object in [drill.deployment(), drill.ingress(), drill.lock_config()] {
        assert!(
            !has_previous(&object),
            "{name}: nothing left recorded on {object}"
        );
    }
    let records = engine.records(NS).await.expect("records");
    let record = records
        .iter()
        .find(|r| r.id == run.plan.run_id)
        .expect("run recorded in the cluster");
    assert_eq!(record.outcome, RunOutcome::Undone);
    assert_eq!(
        engine.undo(NS, None).await.expect("undo --last").outcome,
        Outcome::Refused,
        "{name}: nothing left to undo"
    );
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_one_applies_verifies_repeats_dry_runs_and_undoes() {
    check_playbook_lifecycle("scale-to-one.yaml", (1, None, "legacy".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_rate_limit_applies_verifies_repeats_dry_runs_and_undoes() {
    check_playbook_lifecycle(
        "gateway-rate-limit.yaml",
        (8, Some("50".into()), "legacy".into()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_watch_locking_applies_verifies_repeats_dry_runs_and_undoes() {
    check_playbook_lifecycle("enable-watch-locking.yaml", (8, None, "watch".into())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_contention_applies_verifies_repeats_dry_runs_and_undoes() {
    check_playbook_lifecycle(
        "lock-contention.yaml",
        (1, Some("50".into()), "watch".into()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_puts_back_the_values_recorded_on_the_objects() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let restore = bind("restore.yaml");

    // Nothing recorded: restore changes nothing.
    let idle = engine
        .run(&restore, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(idle.outcome, Outcome::Done, "{}", idle.message);
    assert!(idle.steps.iter().all(|s| s.outcome != StepOutcome::Applied));

    // Two mitigations by "different operators" (separate runs), then a
    // restore from a fresh engine: it reads what is recorded on the objects.
    let mitigation = engine
        .run(&bind("lock-contention.yaml"), RunOptions::default())
        .await
        .expect("mitigation");
    assert_eq!(mitigation.outcome, Outcome::Done);
    let tighter = warroom::playbook::load_file(&playbook_path("gateway-rate-limit.yaml"))
        .unwrap()
        .bind(&[("requests-per-second".into(), "10".into())], None, NS)
        .unwrap();
    engine
        .run(&tighter, RunOptions::default())
        .await
        .expect("tighter");
    assert_eq!(state(&drill), (1, Some("10".into()), "watch".into()));

    let versions = drill.versions();
    let (other, _) = drill.engine(Arc::new(AutoApprove)).await;
    let dry = other
        .run(&restore, RunOptions { dry_run: true })
        .await
        .expect("dry");
    assert_eq!(dry.outcome, Outcome::DryRun, "{}", dry.message);
    assert_eq!(drill.versions(), versions, "dry run changed nothing");

    let restored = other
        .run(&restore, RunOptions::default())
        .await
        .expect("restore");
    assert_eq!(restored.outcome, Outcome::Done, "{}", restored.message);
    assert_eq!(state(&drill), original(), "values from before the incident");
    assert!(!has_previous(&drill.deployment()));
    assert!(!has_previous(&drill.ingress()));
    assert!(!has_previous(&drill.lock_config()));
    let restarted = drill
        .deployment()
        .pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
        .is_some();
    assert!(restarted, "pods restarted to read the restored lock mode");

    // Idempotent.
    let versions = drill.versions();
    let again = other
        .run(&restore, RunOptions::default())
        .await
        .expect("again");
    assert_eq!(again.outcome, Outcome::Done);
    assert_eq!(drill.versions(), versions, "second restore wrote nothing");

    // The restore itself can be undone.
    let undo = other
        .undo(NS, Some(&restored.plan.run_id))
        .await
        .expect("undo");
    assert_eq!(undo.outcome, Outcome::Undone, "{}", undo.message);
    assert_eq!(state(&drill), (1, Some("10".into()), "watch".into()));
    drill.server.stop().await;
}

/// Approves every gate, and runs a hook when asked about a given step.
struct HookedConfirmer {
    step: String,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl HookedConfirmer {
    fn new(step: &str, hook: impl FnOnce() + Send + 'static) -> Self {
        Self {
            step: step.into(),
            hook: Mutex::new(Some(Box::new(hook))),
        }
    }
}

impl Confirmer for HookedConfirmer {
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        if request.step == self.step
            && let Some(hook) = self.hook.lock().unwrap().take()
        {
            hook();
        }
        Box::pin(async { Confirmation::Approved })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_write_mid_run_undoes_the_earlier_steps() {
    let drill = Drill::start().await;
    let faults = drill.server.faults();
    // After the plan, the API server starts refusing writes to the lock
    // ConfigMap (an RBAC change, say).
    let confirmer = HookedConfirmer::new("confirm-watch-locking", move || {
        faults.fail("PUT", "/configmaps/order-service-lock", 403, None);
    });
    let (engine, log) = drill.engine(Arc::new(confirmer)).await;
    let report = engine
        .run(&bind("lock-contention.yaml"), RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert!(report.message.contains("403"), "{}", report.message);
    assert_eq!(state(&drill), original(), "scale and rate limit undone");
    let undone: Vec<String> = log
        .events()
        .iter()
        .filter(|e| e.phase == StepPhase::Undone)
        .map(|e| e.step.clone())
        .collect();
    assert_eq!(undone, ["limit-ingress", "scale-down"], "reverse order");
    let records = engine.records(NS).await.unwrap();
    assert_eq!(records.last().unwrap().outcome, RunOutcome::FailedUndone);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_deleted_mid_run_undoes_the_earlier_steps() {
    let drill = Drill::start().await;
    let store = drill.server.store();
    let confirmer = HookedConfirmer::new("confirm-watch-locking", move || {
        store.delete("v1", "ConfigMap", Some(NS), "order-service-lock");
    });
    let (engine, _) = drill.engine(Arc::new(confirmer)).await;
    let report = engine
        .run(&bind("lock-contention.yaml"), RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert!(report.message.contains("not found"), "{}", report.message);
    assert_eq!(drill.replicas(), 8);
    assert_eq!(drill.limit_rps(), None);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_a_missing_object_times_out_and_undoes() {
    let drill = Drill::start().await;
    let (engine, log) = drill.engine(Arc::new(AutoApprove)).await;
    let playbook = bind_text(
        "name: t\ndescription: d\nsteps:\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: wait-for-missing\n    wait:\n      object: {apiVersion: v1, kind: ConfigMap, name: not-there}\n      until: exists\n      timeout: 300ms\n",
    );
    let report = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert_eq!(drill.replicas(), 8);
    assert!(
        log.events()
            .iter()
            .any(|e| e.phase == StepPhase::Undone && e.step == "scale")
    );
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_stop_and_continue_leave_applied_steps_in_place() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let playbook = bind_text(
        "name: t\ndescription: d\nsteps:\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: wait-for-missing\n    on-failure: continue\n    wait:\n      object: {apiVersion: v1, kind: ConfigMap, name: not-there}\n      until: exists\n      timeout: 100ms\n  - name: limit\n    patch:\n      apiVersion: networking.k8s.io/v1\n      kind: Ingress\n      name: orders-gateway\n      merge: {metadata: {annotations: {nginx.ingress.kubernetes.io/limit-rps: \"5\"}}}\n  - name: wait-again\n    on-failure: stop\n    wait:\n      object: {apiVersion: v1, kind: ConfigMap, name: not-there}\n      until: exists\n      timeout: 100ms\n  - name: never\n    set-config: {configmap: order-service-lock, key: LOCK_MODE, value: watch}\n",
    );
    let report = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Failed, "{}", report.message);
    assert_eq!(state(&drill), (2, Some("5".into()), "legacy".into()));
    assert!(report.steps.iter().all(|s| s.name != "never"));
    // What was left in place can still be undone from the record.
    let undo = engine.undo(NS, None).await.expect("undo");
    assert_eq!(undo.outcome, Outcome::Undone, "{}", undo.message);
    assert_eq!(state(&drill), original());
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_in_the_plan_changes_nothing() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let playbook = bind_text(
        "name: t\ndescription: d\nsteps:\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: config\n    set-config: {configmap: not-there, key: A, value: b}\n",
    );
    let versions = drill.versions();
    let report = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::PlanFailed, "{}", report.message);
    assert!(report.message.contains("not-there"));
    assert_eq!(drill.versions(), versions);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writes_are_retried_with_a_fresh_read() {
    let drill = Drill::start().await;
    drill
        .server
        .faults()
        .fail("PUT", "/deployments/order-service", 409, Some(3));
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let report = engine
        .run(&bind("scale-to-one.yaml"), RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Done, "{}", report.message);
    assert_eq!(drill.replicas(), 1);
    assert_eq!(
        drill.server.faults().active(),
        0,
        "all three conflicts were met"
    );
    drill.server.stop().await;
}

/// Holds a gate until told to go on.
struct HeldGate {
    asked: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Confirmer for HeldGate {
    fn confirm<'a>(&'a self, _: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        Box::pin(async move {
            self.asked.notify_one();
            self.release.notified().await;
            Confirmation::Approved
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_run_is_refused_by_the_lease_naming_the_holder() {
    let drill = Drill::start().await;
    let gate = Arc::new(HeldGate {
        asked: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let (first, _) = drill.engine(gate.clone()).await;
    let first = Arc::new(first);
    let running = {
        let first = first.clone();
        tokio::spawn(async move {
            first
                .run(&bind("scale-to-one.yaml"), RunOptions::default())
                .await
        })
    };
    gate.asked.notified().await;

    let (second, _) = drill.engine(Arc::new(AutoApprove)).await;
    let refused = second
        .run(&bind("gateway-rate-limit.yaml"), RunOptions::default())
        .await
        .expect("second run");
    assert_eq!(refused.outcome, Outcome::Refused, "{}", refused.message);
    assert!(
        refused.message.contains("warroom-operator on "),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("holds the lease"),
        "{}",
        refused.message
    );
    assert_eq!(drill.limit_rps(), None, "the refused run changed nothing");
    let undo = second.undo(NS, None).await.expect("undo");
    assert_eq!(undo.outcome, Outcome::Refused, "undo is refused too");

    gate.release.notify_one();
    let done = running.await.unwrap().expect("first run");
    assert_eq!(done.outcome, Outcome::Done, "{}", done.message);
    assert_eq!(drill.replicas(), 1);
    // The lease was released: the next run goes ahead at once.
    let next = second
        .run(&bind("gateway-rate-limit.yaml"), RunOptions::default())
        .await
        .expect("next run");
    assert_eq!(next.outcome, Outcome::Done, "{}", next.message);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_a_dead_holder_expires() {
    let drill = Drill::start().await;
    let stale = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let lease = |renewed: jiff::Timestamp| {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "warroom-playbook", "namespace": NS},
            "spec": {
                "holderIdentity": "ana on laptop-7 (pid 4242, run crashed)",
                "leaseDurationSeconds": 15,
                "renewTime": format!("{}.000000Z", renewed.strftime("%Y-%m-%dT%H:%M:%S")),
            }
        })
    };
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    drill
        .server
        .store()
        .put(lease(jiff::Timestamp::now()))
        .unwrap();
    let refused = engine
        .run(&bind("scale-to-one.yaml"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(refused.outcome, Outcome::Refused);
    assert!(
        refused.message.contains("ana on laptop-7"),
        "{}",
        refused.message
    );

    drill.server.store().put(lease(stale)).unwrap();
    let taken = engine
        .run(&bind("scale-to-one.yaml"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(taken.outcome, Outcome::Done, "{}", taken.message);
    drill.server.stop().await;
}

// ---- the binary -------------------------------------------------------

async fn warroom(args: &[&str], kubeconfig: &Path) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("warroom runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn kubectl(args: &[&str], kubeconfig: &Path) -> String {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warroom_run_and_undo_binary_exit_codes_and_json() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let lock = playbook_path("lock-contention.yaml");
    let lock = lock.to_str().unwrap();

    // No terminal, no --yes: refused before anything changes; the refusal
    // goes to stderr (stdout is for results).
    let versions = drill.versions();
    let (code, stdout, stderr) = warroom(&["run", lock], &kc).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("--yes"),
        "{stderr}"
    );
    assert!(!stdout.contains("refused"), "{stdout}");
    assert_eq!(drill.versions(), versions);

    // Dry run.
    let (code, stdout, stderr) =
        warroom(&["run", lock, "--dry-run", "--output", "json"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let dry: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(dry["outcome"], "dry-run");
    assert_eq!(drill.versions(), versions);

    // Scripted run.
    let (code, stdout, stderr) = warroom(&["run", lock, "--yes", "--output", "json"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(run["outcome"], "done");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(run["actor"], "warroom-operator");
    assert_eq!(run["plan"].as_array().unwrap().len(), 11);
    let scale_plan = &run["plan"][2];
    assert_eq!(scale_plan["name"], "scale-down");
    assert_eq!(scale_plan["changes"][0]["path"], "/spec/replicas");
    assert_eq!(scale_plan["changes"][0]["before"], 8);
    assert_eq!(scale_plan["changes"][0]["after"], 1);
    let phases: Vec<&str> = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["phase"].as_str())
        .collect();
    for phase in ["planned", "applied", "verified", "confirmed", "noted"] {
        assert!(phases.contains(&phase), "{phase} in {phases:?}");
    }
    let run_id = run["run_id"].as_str().unwrap().to_owned();

    // kubectl sees what warroom run changed.
    assert_eq!(
        kubectl(
            &[
                "-n",
                NS,
                "get",
                "deployment",
                "order-service",
                "-o",
                "jsonpath={.spec.replicas}"
            ],
            &kc
        )
        .await,
        "1"
    );
    assert_eq!(
        kubectl(
            &[
                "-n",
                NS,
                "get",
                "configmap",
                "order-service-lock",
                "-o",
                "jsonpath={.data.LOCK_MODE}"
            ],
            &kc
        )
        .await,
        "watch"
    );
    let previous = kubectl(
        &[
            "-n",
            NS,
            "get",
            "deployment",
            "order-service",
            "-o",
            "jsonpath={.metadata.annotations.warroom\\.io/previous}",
        ],
        &kc,
    )
    .await;
    assert_eq!(previous, r#"{"/spec/replicas":8}"#);

    // Text output of an idempotent re-run.
    let (code, stdout, _) = warroom(&["run", lock, "--yes"], &kc).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("unchanged"), "{stdout}");

    // Undo without a terminal or --yes is refused; with --yes it restores.
    let (code, stdout, _) = warroom(&["undo", "--last"], &kc).await;
    assert_eq!(code, 3, "{stdout}");
    let (code, stdout, stderr) =
        warroom(&["undo", &run_id, "--yes", "--output", "json"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let undo: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(undo["outcome"], "undone");
    assert_eq!(state(&drill), original());
    let (code, _, _) = warroom(&["undo", "--last", "--yes"], &kc).await;
    assert_eq!(code, 3, "nothing left to undo");

    // A step refused by the API server: exit 1, earlier steps undone.
    drill
        .server
        .faults()
        .fail("PUT", "/ingresses/orders-gateway", 403, None);
    let (code, stdout, _) = warroom(&["run", lock, "--yes", "--output", "json"], &kc).await;
    assert_eq!(code, 1, "{stdout}");
    let failed: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(failed["outcome"], "failed-undone");
    assert_eq!(state(&drill), original());
    drill.server.faults().clear();

    // Invalid parameters: exit 2, nothing changed.
    let (code, _, stderr) = warroom(&["run", lock, "--yes", "--param", "replicas=many"], &kc).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("replicas"), "{stderr}");
    let (code, _, stderr) = warroom(&["run", lock, "--yes", "--param", "replica=1"], &kc).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown parameter"), "{stderr}");

    // A concurrent holder: exit 3 naming it.
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "warroom-playbook", "namespace": NS},
        "spec": {"holderIdentity": "bo on jump-1 (pid 7, run x)", "leaseDurationSeconds": 60,
                 "renewTime": format!("{}.000000Z", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S"))}
    });
    drill.server.store().put(lease).unwrap();
    let (code, stdout, stderr) = warroom(&["run", lock, "--yes"], &kc).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("bo on jump-1"), "{stderr}");
    assert_eq!(state(&drill), original());

    // The cluster gone: exit 4.
    drill.server.stop().await;
    let (code, _, stderr) = warroom(&["run", lock, "--yes"], &kc).await;
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("could not reach"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_env_context_and_namespace_work_as_in_kubectl() {
    let drill = Drill::start().await;
    let dir = tempfile::tempdir().unwrap();
    // KUBECONFIG lists two files; the first one's current context points at
    // a server that is not there.
    let dead = dir.path().join("dead");
    std::fs::write(
        &dead,
        "apiVersion: v1\nkind: Config\nclusters:\n  - name: gone\n    cluster: {server: \"http://127.0.0.1:9\"}\ncontexts:\n  - name: gone\n    context: {cluster: gone, user: on-call-ana}\ncurrent-context: gone\nusers:\n  - name: on-call-ana\n    user: {token: t}\n",
    )
    .unwrap();
    let joined = std::env::join_paths([dead.as_path(), drill.kubeconfig.as_path()]).unwrap();
    let lock = playbook_path("scale-to-one.yaml");
    let run = |extra: &'static [&'static str]| {
        let joined = joined.clone();
        let lock = lock.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
                .arg("run")
                .arg(&lock)
                .args(["--yes", "--output", "json"])
                .args(extra)
                .env("KUBECONFIG", &joined)
                .env_remove("HOME")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, _, stderr) = run(&[]).await;
    assert_eq!(code, 4, "current context of the first file: {stderr}");
    let (code, _, stderr) = run(&["--context", "no-such-context"]).await;
    assert_eq!(code, 2, "{stderr}");
    // -n picks another namespace: the order service is not there.
    let (code, stdout, _) = run(&["--context", "warroom-local", "-n", "payments"]).await;
    assert_eq!(code, 3, "{stdout}");
    let refused: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(refused["namespace"], "payments");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("precondition")
    );
    assert_eq!(drill.replicas(), 8);
    let (code, stdout, stderr) = run(&["--context", "warroom-local"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let done: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(done["actor"], "warroom-operator", "the context's user acts");
    assert_eq!(drill.replicas(), 1);
    drill.server.stop().await;
}

/// Runs `warroom` on a pseudo-terminal (util-linux `script`), typing `input`.
async fn warroom_on_terminal(args: &str, kubeconfig: &Path, input: &str) -> (i32, String) {
    use tokio::io::AsyncWriteExt;
    let command = format!(
        "exec '{}' {args} --kubeconfig '{}'",
        env!("CARGO_BIN_EXE_warroom"),
        kubeconfig.display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    drop(stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs `command` (a shell command line) on a pseudo-terminal (util-linux
/// `script`) in `dir`, as an operator would: for each `(shown, typed)` turn
/// it waits until the output shows `shown` (after the previous turn's) and
/// then types `typed`. Returns the exit status and everything shown.
async fn terminal_conversation(command: &str, dir: &Path, turns: &[(&str, &str)]) -> (i32, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // `exec`: no shell stays between the terminal and warroom. A shell that
    // is not bash (dash, when SHELL is unset) would itself die of the Ctrl-C
    // typed to warroom and report 130 whatever warroom exits with.
    let command = format!("exec {command}");
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let shown = Arc::new(Mutex::new(String::new()));
    let reader = {
        let shown = shown.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let mut from = 0;
    for (wait_for, typed) in turns {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let at = loop {
            let text = shown.lock().unwrap().clone();
            if let Some(i) = text.get(from..).and_then(|rest| rest.find(wait_for)) {
                break from + i + wait_for.len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after 60 s waiting for {wait_for:?} on the terminal, which showed:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        from = at;
        stdin.write_all(typed.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }
    let status = match tokio::time::timeout(std::time::Duration::from_secs(60), child.wait()).await
    {
        Ok(status) => status.expect("script exits"),
        Err(_) => panic!(
            "warroom did not exit within 60 s; the terminal showed:\n{}",
            shown.lock().unwrap()
        ),
    };
    let _ = reader.await;
    drop(stdin);
    let text = shown.lock().unwrap().clone();
    (status.code().unwrap_or(-1), text)
}

/// `warroom ARGS --kubeconfig KC` as a shell command line.
fn warroom_command(args: &str, kubeconfig: &Path) -> String {
    format!(
        "'{}' {args} --kubeconfig '{}'",
        env!("CARGO_BIN_EXE_warroom"),
        kubeconfig.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_dangerous_steps_need_the_typed_answer() {
    let drill = Drill::start().await;
    let dir = drill._dir.path();
    let scale = playbook_path("scale-to-one.yaml");
    let scale_run = warroom_command(&format!("run '{}'", scale.display()), &drill.kubeconfig);

    // A plain yes is not the typed answer: asked again, then the operator
    // stops. Nothing changed.
    let (code, out) = terminal_conversation(
        &scale_run,
        dir,
        &[
            ("Type \"scale order-service\"", "yes\n"),
            ("\"yes\" is not \"scale order-service\"", "n\n"),
        ],
    )
    .await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(drill.replicas(), 8);

    // A mistyped answer asks again; the right one goes on.
    let (code, out) = terminal_conversation(
        &scale_run,
        dir,
        &[
            ("Type \"scale order-service\"", "scale order-servce\n"),
            ("is not \"scale order-service\"", "scale order-service\n"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(drill.replicas(), 1);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_the_last_gate_keeps_the_mitigations_already_applied() {
    let drill = Drill::start().await;
    let lock = playbook_path("lock-contention.yaml");
    let run = warroom_command(&format!("run '{}'", lock.display()), &drill.kubeconfig);

    // Typed answers for the first two gates, then the operator declines the
    // third: the scale-down and the rate limit stay in the middle of the
    // incident, and the output says so and how to put them back.
    let (code, out) = terminal_conversation(
        &run,
        drill._dir.path(),
        &[
            ("Type \"scale order-service\"", "scale order-service\n"),
            ("[y/N]", "y\n"),
            ("Type \"watch\"", "no\n"),
        ],
    )
    .await;
    assert_eq!(code, 3, "{out}");
    assert_eq!(state(&drill), (1, Some("50".into()), "legacy".into()));
    assert!(out.contains("declined by the operator"), "{out}");
    assert!(
        out.contains("the 2 step(s) applied before are kept (scale-down, limit-ingress)"),
        "{out}"
    );
    assert!(out.contains("undo with: "), "{out}");

    // The run record says where the run stopped; it is not "failed" and not
    // "running", and `warroom undo` can act on it.
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let records = engine.records(NS).await.unwrap();
    let record = records.last().unwrap();
    assert_eq!(record.outcome, RunOutcome::Declined, "{record:?}");
    assert_eq!(
        record.steps.last().map(|s| (s.name.as_str(), s.outcome)),
        Some(("confirm-watch-locking", StepOutcome::Declined))
    );
    assert!(record.undoable());
    let undo = engine.undo(NS, Some(&record.id)).await.unwrap();
    assert_eq!(undo.outcome, Outcome::Undone, "{}", undo.message);
    assert_eq!(state(&drill), original());
    drill.server.stop().await;
}

/// Approves every gate but the last, where nobody can be asked.
#[derive(Default)]
struct GoneAtLastGate;

impl Confirmer for GoneAtLastGate {
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        let last = request.step == "confirm-watch-locking";
        Box::pin(async move {
            if last {
                Confirmation::Unavailable("stdin is not a terminal".into())
            } else {
                Confirmation::Approved
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_nobody_can_answer_stops_the_run_and_changes_nothing_further() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(GoneAtLastGate)).await;
    let report = engine
        .run(&bind("lock-contention.yaml"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Declined, "{}", report.message);
    assert!(
        report.message.contains("nobody could give"),
        "{}",
        report.message
    );
    assert_eq!(state(&drill), (1, Some("50".into()), "legacy".into()));
    let records = engine.records(NS).await.unwrap();
    assert_eq!(records.last().unwrap().outcome, RunOutcome::Declined);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_at_a_prompt_asks_to_undo_undoes_by_default_and_frees_the_lease() {
    let drill = Drill::start().await;
    let lock = playbook_path("lock-contention.yaml");
    let run = warroom_command(&format!("run '{}'", lock.display()), &drill.kubeconfig);
    let (code, out) = terminal_conversation(
        &run,
        drill._dir.path(),
        &[
            ("Type \"scale order-service\"", "scale order-service\n"),
            ("[y/N]", "\u{3}"),
            ("Undo the 1 applied change(s) (scale-down)? [Y/n]", "\n"),
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cancelled by the operator (Ctrl-C) at step `confirm-rate-limit`"),
        "{out}"
    );
    assert!(
        out.contains("the 1 applied step(s) were undone (scale-down)"),
        "{out}"
    );
    assert!(
        !out.contains("undo with: "),
        "nothing is left to undo: {out}"
    );
    assert!(out.contains(" undone "), "{out}");
    assert_eq!(state(&drill), original());
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let records = engine.records(NS).await.unwrap();
    let record = records.last().unwrap();
    assert_eq!(record.outcome, RunOutcome::Cancelled, "{record:?}");
    assert!(!record.undoable(), "{record:?}");
    // The lease was given back: the next run is not refused.
    let again = engine
        .run(&bind("lock-contention.yaml"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::Done, "{}", again.message);
    drill.server.stop().await;
}

/// A change, then a wait that never ends.
const WAITS_FOREVER: &str = "name: t\ndescription: d\nsteps:\n  - name: confirm\n    confirm: {prompt: go?}\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: wait\n    wait:\n      object: {apiVersion: v1, kind: ConfigMap, name: never-there}\n      until: exists\n      timeout: 1h\n  - name: after\n    set-config: {configmap: order-service-lock, key: LOCK_MODE, value: watch}\n";

/// Runs WAITS_FOREVER on a terminal, presses Ctrl-C during the wait and
/// answers the undo question with `answer`.
async fn cancel_during_the_wait_answering(drill: &Drill, answer: &str) -> (i32, String) {
    let file = drill._dir.path().join("waits.yaml");
    std::fs::write(&file, WAITS_FOREVER).unwrap();
    let run = warroom_command(&format!("run '{}'", file.display()), &drill.kubeconfig);
    terminal_conversation(
        &run,
        drill._dir.path(),
        &[
            ("[y/N]", "y\n"),
            ("verified ", "\u{3}"),
            ("Undo the 1 applied change(s) (scale)? [Y/n]", answer),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_wait_then_declining_the_undo_keeps_the_change_and_prints_the_undo() {
    let drill = Drill::start().await;
    let (code, out) = cancel_during_the_wait_answering(&drill, "n\n").await;
    assert_eq!(code, 1, "{out}");
    // Before the wait or during it, depending on when the key arrives.
    assert!(out.contains("cancelled by the operator (Ctrl-C)"), "{out}");
    assert!(
        out.contains("the undo was declined: the 1 applied step(s) are kept (scale)"),
        "{out}"
    );
    assert!(out.contains("undo with: "), "{out}");
    assert_eq!(drill.replicas(), 2, "the applied change is kept");
    assert_eq!(drill.lock_mode(), "legacy", "nothing after the wait ran");
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let records = engine.records(NS).await.unwrap();
    let record = records.last().unwrap();
    assert_eq!(record.outcome, RunOutcome::Cancelled);
    assert!(
        record.undoable(),
        "`warroom undo` can still act: {record:?}"
    );
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_stops_the_undo_and_says_what_is_left() {
    let drill = Drill::start().await;
    let (code, out) = cancel_during_the_wait_answering(&drill, "\u{3}").await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stopping the undo"), "{out}");
    assert!(
        out.contains("the undo was stopped: the 1 applied step(s) are kept (scale)"),
        "{out}"
    );
    assert!(out.contains("undo with: "), "{out}");
    assert_eq!(drill.replicas(), 2, "what is left is as the run set it");
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let records = engine.records(NS).await.unwrap();
    let record = records.last().unwrap();
    assert_eq!(
        record.outcome,
        RunOutcome::Cancelled,
        "never left `running`"
    );
    assert!(record.undoable());
    let undo = engine.undo(NS, Some(&record.id)).await.unwrap();
    assert_eq!(undo.outcome, Outcome::Undone, "{}", undo.message);
    assert_eq!(drill.replicas(), 8);
    drill.server.stop().await;
}

/// Declines the undo question after a cancellation, noting whether the
/// printer had handled the `cancelled` event when it was asked.
struct UndoAfterPrinted {
    printed: Arc<Mutex<Vec<StepPhase>>>,
    asked_after_the_cancellation: Mutex<Option<bool>>,
}

impl Confirmer for UndoAfterPrinted {
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        if request.step == "undo" {
            let printed = self.printed.lock().unwrap().contains(&StepPhase::Cancelled);
            *self.asked_after_the_cancellation.lock().unwrap() = Some(printed);
            return Box::pin(async { Confirmation::Declined });
        }
        Box::pin(async { Confirmation::Approved })
    }
}

// One thread: the printer runs only when the engine waits for it, so a
// question asked without waiting for the printed lines is caught every time.
#[tokio::test(flavor = "current_thread")]
async fn the_undo_question_comes_after_the_printed_cancellation() {
    let drill = Drill::start().await;
    let printed = Arc::new(Mutex::new(Vec::new()));
    let confirmer = Arc::new(UndoAfterPrinted {
        printed: printed.clone(),
        asked_after_the_cancellation: Mutex::new(None),
    });
    let (engine, _) = drill.engine(confirmer.clone()).await;
    let cancel = Cancel::new();
    let engine = engine.with_cancel(cancel.clone());
    // A printer whose lines must come before a prompt (as `warroom run`'s):
    // it cancels the run once the change is verified, as an operator
    // pressing Ctrl-C on seeing that line.
    let mut events = engine.subscribe_acknowledged();
    let printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if event.step == "scale" && event.phase == StepPhase::Verified {
                cancel.cancel("Ctrl-C");
            }
            printed.lock().unwrap().push(event.phase);
            events.acknowledge(Ok(()));
        }
    });
    let report = engine
        .run(&bind_text(WAITS_FOREVER), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.message);
    assert!(
        report
            .message
            .contains("the undo was declined: the 1 applied step(s) are kept (scale)"),
        "{}",
        report.message
    );
    assert_eq!(
        *confirmer.asked_after_the_cancellation.lock().unwrap(),
        Some(true),
        "the undo was asked before the cancellation was printed"
    );
    assert_eq!(drill.replicas(), 2, "the declined undo kept the change");
    drop(engine);
    printer.await.unwrap();
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_cuts_a_wait_short_and_undoes_what_was_applied() {
    let drill = Drill::start().await;
    let cancel = Cancel::new();
    let (engine, log) = drill.engine(Arc::new(AutoApprove)).await;
    let engine = engine.with_cancel(cancel.clone());
    let requests = drill.server.requests();
    let waiting = tokio::spawn(async move {
        // Once the wait is polling for its object, cancel.
        common::wait_until_async(
            "the wait to poll",
            std::time::Duration::from_secs(30),
            || {
                let requests = requests.clone();
                async move {
                    requests
                        .entries()
                        .iter()
                        .any(|r| r.path_and_query.contains("/configmaps/never-there"))
                        .then_some(())
                }
            },
        )
        .await;
        cancel.cancel("the console");
    });
    let started = std::time::Instant::now();
    let report = engine
        .run(&bind_text(WAITS_FOREVER), RunOptions::default())
        .await
        .unwrap();
    waiting.await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(report.outcome, Outcome::Cancelled, "{}", report.message);
    assert!(
        report
            .message
            .contains("cancelled by the operator (the console) at step `wait`"),
        "{}",
        report.message
    );
    assert_eq!(drill.replicas(), 8, "the applied change is undone");
    assert_eq!(drill.lock_mode(), "legacy", "nothing after the wait ran");
    let phases: Vec<(String, StepPhase)> = log
        .events()
        .into_iter()
        .map(|e| (e.step, e.phase))
        .collect();
    let cancelled = phases
        .iter()
        .position(|p| p.1 == StepPhase::Cancelled)
        .expect("the cancellation is an event");
    let undone = phases
        .iter()
        .position(|p| *p == ("scale".to_owned(), StepPhase::Undone))
        .expect("the undo is an event");
    assert!(cancelled < undone, "{phases:?}");
    let records = engine.records(NS).await.unwrap();
    assert_eq!(records.last().unwrap().outcome, RunOutcome::Cancelled);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_steps_reach_gateway_custom_resources_with_merge_and_json_patch() {
    let drill = Drill::start().await;
    let store = drill.server.store();
    store
        .put(json!({
            "apiVersion": "configuration.konghq.com/v1", "kind": "KongPlugin",
            "metadata": {"name": "orders-rate-limit", "namespace": NS},
            "plugin": "rate-limiting", "config": {"second": 500, "policy": "local"}
        }))
        .unwrap();
    store
        .put(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "BackendTrafficPolicy",
            "metadata": {"name": "orders-gateway", "namespace": NS},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "orders"}]}
        }))
        .unwrap();
    let playbook = bind_text(
        r#"name: gateways
description: the alternatives documented in gateway-rate-limit.yaml
parameters:
  requests-per-second: {type: integer, default: 50}
preconditions:
  - description: the Envoy policy is there
    object: {apiVersion: gateway.envoyproxy.io/v1alpha1, kind: BackendTrafficPolicy, name: orders-gateway}
    until: {field: {path: /spec/targetRefs/0/kind, equals: HTTPRoute}}
steps:
  - name: limit-kong
    patch:
      apiVersion: configuration.konghq.com/v1
      kind: KongPlugin
      name: orders-rate-limit
      json:
        - {op: replace, path: /config/second, value: "${requests-per-second}"}
  - name: limit-envoy-gateway
    patch:
      apiVersion: gateway.envoyproxy.io/v1alpha1
      kind: BackendTrafficPolicy
      name: orders-gateway
      merge:
        spec:
          rateLimit:
            type: Local
            local:
              rules:
                - limit: {requests: "${requests-per-second}", unit: Second}
  - name: order-service-available
    wait:
      object: {apiVersion: apps/v1, kind: Deployment, name: order-service}
      until: {condition: Available}
      timeout: 5s
  - name: ready-replicas
    wait:
      object: {apiVersion: apps/v1, kind: Deployment, name: order-service}
      until: {field: {path: /status/readyReplicas, equals: 8}}
      timeout: 5s
"#,
    );
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let report = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Done, "{}", report.message);
    let kong = store
        .get(
            "configuration.konghq.com/v1",
            "KongPlugin",
            Some(NS),
            "orders-rate-limit",
        )
        .unwrap();
    assert_eq!(
        kong["config"]["second"], 50,
        "typed value from the parameter"
    );
    assert_eq!(kong["config"]["policy"], "local");
    let envoy = store
        .get(
            "gateway.envoyproxy.io/v1alpha1",
            "BackendTrafficPolicy",
            Some(NS),
            "orders-gateway",
        )
        .unwrap();
    assert_eq!(
        envoy["spec"]["rateLimit"]["local"]["rules"][0]["limit"]["requests"],
        50
    );
    let again = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("again");
    assert!(
        again
            .steps
            .iter()
            .all(|s| s.outcome != StepOutcome::Applied)
    );
    let undo = engine
        .undo(NS, Some(&report.plan.run_id))
        .await
        .expect("undo");
    assert_eq!(undo.outcome, Outcome::Undone, "{}", undo.message);
    let kong = store
        .get(
            "configuration.konghq.com/v1",
            "KongPlugin",
            Some(NS),
            "orders-rate-limit",
        )
        .unwrap();
    assert_eq!(kong["config"]["second"], 500);
    let envoy = store
        .get(
            "gateway.envoyproxy.io/v1alpha1",
            "BackendTrafficPolicy",
            Some(NS),
            "orders-gateway",
        )
        .unwrap();
    assert!(envoy["spec"].get("rateLimit").is_none(), "{envoy}");
    assert!(!has_previous(&envoy));
    drill.server.stop().await;
}

/// Approves and remembers every question.
#[derive(Default)]
struct RecordingConfirmer {
    prompts: Mutex<Vec<String>>,
}

impl Confirmer for RecordingConfirmer {
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        self.prompts.lock().unwrap().push(request.prompt.clone());
        Box::pin(async { Confirmation::Approved })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_changes_with_kubectl_during_the_incident_are_shown_and_restored() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let run = engine
        .run(&bind("lock-contention.yaml"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Done, "{}", run.message);

    // Someone works by hand with kubectl in the meantime.
    kubectl(
        &[
            "-n",
            NS,
            "scale",
            "deployment/order-service",
            "--replicas=2",
        ],
        &kc,
    )
    .await;
    kubectl(
        &[
            "-n",
            NS,
            "annotate",
            "ingress/orders-gateway",
            "nginx.ingress.kubernetes.io/limit-rps=20",
            "--overwrite",
        ],
        &kc,
    )
    .await;
    kubectl(
        &[
            "-n",
            NS,
            "patch",
            "configmap/order-service-lock",
            "--type=merge",
            "-p",
            r#"{"data":{"NOTE":"by hand"}}"#,
        ],
        &kc,
    )
    .await;
    assert_eq!(state(&drill), (2, Some("20".into()), "watch".into()));

    // Undo shows what changed since the run before asking.
    let asked = Arc::new(RecordingConfirmer::default());
    let (undoer, _) = drill.engine(asked.clone()).await;
    let undo = undoer.undo(NS, None).await.unwrap();
    assert_eq!(undo.outcome, Outcome::Undone, "{}", undo.message);
    let prompts = asked.prompts.lock().unwrap().clone();
    assert_eq!(prompts.len(), 1);
    assert!(
        prompts[0].contains("spec.replicas is now 2 (the run set 1)"),
        "{}",
        prompts[0]
    );
    assert!(prompts[0].contains("is now \"20\""), "{}", prompts[0]);

    // kubectl reads back the values recorded before the incident; the
    // unrelated key set by hand is kept.
    assert_eq!(
        kubectl(
            &[
                "-n",
                NS,
                "get",
                "deployment",
                "order-service",
                "-o",
                "jsonpath={.spec.replicas}"
            ],
            &kc
        )
        .await,
        "8"
    );
    assert_eq!(
        kubectl(
            &[
                "-n",
                NS,
                "get",
                "configmap",
                "order-service-lock",
                "-o",
                "jsonpath={.data.LOCK_MODE}/{.data.NOTE}"
            ],
            &kc
        )
        .await,
        "legacy/by hand"
    );
    assert_eq!(
        kubectl(
            &[
                "-n",
                NS,
                "get",
                "ingress",
                "orders-gateway",
                "-o",
                "jsonpath={.metadata.annotations}"
            ],
            &kc
        )
        .await,
        ""
    );
    drill.server.stop().await;
}

// ---- writes that land although the step fails -------------------------

/// A patch whose read-back cannot match: the server drops the unknown
/// `replicaz`, while `replicas` is written.
const DROPPED_FIELD: &str = "name: t\ndescription: d\nsteps:\n  - name: confirm\n    confirm: {prompt: go?}\n  - name: typo\n    on-failure: ON_FAILURE\n    patch:\n      apiVersion: apps/v1\n      kind: Deployment\n      name: order-service\n      merge: {spec: {replicas: 3, replicaz: 3}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_read_back_is_undone() {
    let drill = Drill::start().await;
    let (engine, log) = drill.engine(Arc::new(AutoApprove)).await;
    let report = engine
        .run(
            &bind_text(&DROPPED_FIELD.replace("ON_FAILURE", "undo")),
            RunOptions::default(),
        )
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert!(report.message.contains("read-back"), "{}", report.message);
    assert_eq!(drill.replicas(), 8, "the landed write was undone");
    assert!(
        log.events()
            .iter()
            .any(|e| e.phase == StepPhase::Undone && e.step == "typo")
    );
    let records = engine.records(NS).await.unwrap();
    let last = records.last().unwrap();
    assert_eq!(last.outcome, RunOutcome::FailedUndone);
    assert_eq!(last.steps.last().unwrap().outcome, StepOutcome::Undone);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_read_back_and_is_left_can_be_undone_later() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let report = engine
        .run(
            &bind_text(&DROPPED_FIELD.replace("ON_FAILURE", "stop")),
            RunOptions::default(),
        )
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Failed, "{}", report.message);
    assert_eq!(drill.replicas(), 3, "the write landed");
    assert!(
        report.message.contains("1 left in place"),
        "{}",
        report.message
    );
    let step = report.steps.last().unwrap();
    assert_eq!(step.outcome, StepOutcome::AppliedUnverified);
    assert_eq!(step.changes[0].path, "/spec/replicas");
    let records = engine.records(NS).await.unwrap();
    assert!(
        records.last().unwrap().undoable(),
        "the record can be undone"
    );
    let undo = engine.undo(NS, None).await.expect("undo");
    assert_eq!(undo.outcome, Outcome::Undone, "{}", undo.message);
    assert_eq!(drill.replicas(), 8);
    drill.server.stop().await;
}

/// A TCP proxy in front of the cluster server that passes the first request
/// whose start line begins with `request_line` through to the server and
/// then closes the client's connection without its answer: a write that
/// lands while its response is lost.
async fn lossy_proxy(upstream: std::net::SocketAddr, request_line: &'static str) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let armed = armed.clone();
            tokio::spawn(async move {
                let lose = Arc::new(AtomicBool::new(false));
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let seen = lose.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if buf[..n].starts_with(request_line.as_bytes())
                            && armed.swap(false, Ordering::SeqCst)
                        {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if lose.load(Ordering::SeqCst) {
                        break;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_found_and_undone() {
    let drill = Drill::start().await;
    let proxy = lossy_proxy(
        drill.server.addr(),
        "PUT /apis/apps/v1/namespaces/orders/deployments/order-service",
    )
    .await;
    let kubeconfig = drill._dir.path().join("kubeconfig-proxy");
    let text = std::fs::read_to_string(&drill.kubeconfig)
        .unwrap()
        .replace(&drill.server.url(), &proxy);
    std::fs::write(&kubeconfig, text).unwrap();
    let access = Arc::new(
        KubeAccess::connect(&KubeTarget {
            kubeconfig: Some(kubeconfig),
            context: None,
            namespace: None,
        })
        .await
        .expect("connects"),
    );
    let log = Arc::new(EventLog::default());
    let engine = Engine::new(access, log.clone(), Arc::new(AutoApprove));
    let playbook = bind_text(
        "name: t\ndescription: d\nsteps:\n  - name: limit\n    patch:\n      apiVersion: networking.k8s.io/v1\n      kind: Ingress\n      name: orders-gateway\n      merge: {metadata: {annotations: {nginx.ingress.kubernetes.io/limit-rps: \"5\"}}}\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n",
    );
    let report = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert_eq!(state(&drill), original(), "both steps undone");
    let undone: Vec<String> = log
        .events()
        .iter()
        .filter(|e| e.phase == StepPhase::Undone)
        .map(|e| e.step.clone())
        .collect();
    assert_eq!(undone, ["scale", "limit"], "{}", report.message);
    drill.server.stop().await;
}

// ---- a plan with no confirm step before its changes --------------------

const NO_CONFIRM: &str = "name: no-confirm\ndescription: d\nsteps:\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: gate\n    confirm: {prompt: go on?}\n  - name: config\n    set-config: {configmap: order-service-lock, key: LOCK_MODE, value: watch}\n";

/// No confirm step at all.
const NO_GATE: &str = "name: no-gate\ndescription: d\nsteps:\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: config\n    set-config: {configmap: order-service-lock, key: LOCK_MODE, value: watch}\n";

/// Approves everything and remembers which steps it was asked about.
#[derive(Default)]
struct PlanConfirmer {
    asked: Mutex<Vec<(String, String)>>,
}

impl Confirmer for PlanConfirmer {
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        self.asked
            .lock()
            .unwrap()
            .push((request.step.clone(), request.prompt.clone()));
        Box::pin(async { Confirmation::Approved })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_before_any_confirm_step_asks_once_for_the_plan() {
    let drill = Drill::start().await;
    let confirmer = Arc::new(PlanConfirmer::default());
    let (engine, _) = drill.engine(confirmer.clone()).await;
    let report = engine
        .run(&bind_text(NO_CONFIRM), RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Done, "{}", report.message);
    let asked = confirmer.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[0].0, "plan");
    assert_eq!(
        asked[0].1,
        "Apply 2 change(s) to namespace orders (scale, config)?"
    );
    assert_eq!(asked[1].0, "gate");

    // A playbook whose changes all come after a confirm step: no extra question.
    confirmer.asked.lock().unwrap().clear();
    engine
        .undo(NS, None)
        .await
        .expect("undo puts the drill back");
    confirmer.asked.lock().unwrap().clear();
    let report = engine
        .run(&bind("scale-to-one.yaml"), RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Done, "{}", report.message);
    let asked: Vec<String> = confirmer
        .asked
        .lock()
        .unwrap()
        .iter()
        .map(|(step, _)| step.clone())
        .collect();
    assert_eq!(asked, ["confirm-scale-down"]);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warroom_run_without_confirm_steps_needs_a_terminal_or_yes() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let file = drill._dir.path().join("no-confirm.yaml");
    std::fs::write(&file, NO_GATE).unwrap();
    let file = file.to_str().unwrap();

    let versions = drill.versions();
    let (code, stdout, stderr) = warroom(&["run", file], &kc).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert_eq!(drill.versions(), versions, "nothing changed");

    // On a terminal the operator declines the plan: nothing changed.
    let (code, out) = warroom_on_terminal(&format!("run '{file}'"), &kc, "n\n").await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("Apply 2 change(s)"), "{out}");
    assert_eq!(drill.versions(), versions, "nothing changed");

    let (code, stdout, stderr) = warroom(&["run", file, "--yes"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(drill.replicas(), 2);
    assert_eq!(drill.lock_mode(), "watch");
    drill.server.stop().await;
}

// ---- the run lease ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_without_a_renewal_time_holds_the_lease() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    drill
        .server
        .store()
        .put(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "warroom-playbook", "namespace": NS},
            "spec": {"holderIdentity": "deploy-bot on ci-3", "leaseDurationSeconds": 30}
        }))
        .unwrap();
    let report = engine
        .run(&bind("scale-to-one.yaml"), RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::Refused, "{}", report.message);
    assert!(
        report.message.contains("deploy-bot on ci-3"),
        "{}",
        report.message
    );
    assert!(report.message.contains("unknown"), "{}", report.message);
    assert_eq!(drill.replicas(), 8, "nothing changed");
    drill.server.stop().await;
}

/// Approves every gate; the gate named `step` takes `hold` to answer.
struct SlowConfirmer {
    step: &'static str,
    hold: std::time::Duration,
}

impl Confirmer for SlowConfirmer {
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        let slow = request.step == self.step;
        let hold = self.hold;
        Box::pin(async move {
            if slow {
                tokio::time::sleep(hold).await;
            }
            Confirmation::Approved
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_renewed_is_lost_and_the_run_stops() {
    let drill = Drill::start().await;
    let log = Arc::new(EventLog::default());
    let engine = Engine::new(
        drill.access().await,
        log.clone(),
        Arc::new(SlowConfirmer {
            step: "slow-gate",
            hold: std::time::Duration::from_millis(2500),
        }),
    )
    .with_lease_duration(std::time::Duration::from_secs(1));
    // The lease is created (POST); every renewal (PUT) is refused.
    drill
        .server
        .faults()
        .fail("PUT", "/leases/warroom-playbook", 500, None);
    let playbook = bind_text(
        "name: t\ndescription: d\nsteps:\n  - name: gate\n    confirm: {prompt: go?}\n  - name: scale\n    scale: {deployment: order-service, replicas: 2}\n  - name: slow-gate\n    confirm: {prompt: still sure?}\n  - name: config\n    set-config: {configmap: order-service-lock, key: LOCK_MODE, value: watch}\n",
    );
    let report = engine
        .run(&playbook, RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert!(report.message.contains("lease"), "{}", report.message);
    assert_eq!(
        drill.lock_mode(),
        "legacy",
        "the step after the loss did not run"
    );
    assert_eq!(drill.replicas(), 8, "the applied step was undone");
    assert!(report.steps.iter().all(|s| s.name != "config"));
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_record_that_cannot_be_saved_fails_the_step_and_undoes() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    // The record is created (POST) before the first step; the update after
    // the first change (PUT) is refused once.
    drill
        .server
        .faults()
        .fail("PUT", "/configmaps/warroom-runs", 500, Some(1));
    let report = engine
        .run(&bind_text(NO_GATE), RunOptions::default())
        .await
        .expect("run");
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert!(report.message.contains("run record"), "{}", report.message);
    assert_eq!(
        state(&drill),
        original(),
        "the change was undone, the next step never ran"
    );
    assert!(report.steps.iter().all(|s| s.name != "config"));
    let records = engine.records(NS).await.unwrap();
    assert_eq!(records.last().unwrap().outcome, RunOutcome::FailedUndone);
    drill.server.stop().await;
}

// ---- values that reach a request line ----------------------------------

/// Parameter values that would change a request line if sent as they are:
/// a fragment or a query cuts `?dryRun=All` off, a slash or an escape
/// addresses another object or subresource.
const HOSTILE_VALUES: &[&str] = &[
    "order-service#x",
    "order-service?dryRun=",
    "order-service?x=",
    "order-service/scale",
    "order-service/status",
    "..",
    ".",
    "order%2Dservice",
    "order-service%23",
    "Order-Service",
    " order-service",
    "order-service\nx",
    "order service",
    "",
    "ordér-service",
];

fn non_dry_run_writes(drill: &Drill) -> Vec<String> {
    drill
        .server
        .requests()
        .entries()
        .into_iter()
        .filter(|r| r.is_write() && !r.is_dry_run())
        .map(|r| format!("{} {} -> {}", r.method, r.path_and_query, r.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_of_every_shipped_playbook_with_hostile_values_never_writes() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let revision = drill.server.store().revision();
    let long = "a".repeat(300);
    let mut values: Vec<&str> = HOSTILE_VALUES.to_vec();
    values.push(&long);
    let dir = root_playbooks();
    let mut tried = 0;
    for file in &dir {
        let loaded = warroom::playbook::load_file(file).expect("valid");
        let path = file.to_str().unwrap();
        for name in loaded.doc.parameters.keys() {
            for value in &values {
                let param = format!("{name}={value}");
                let (code, stdout, stderr) =
                    warroom(&["run", path, "--dry-run", "--yes", "--param", &param], &kc).await;
                assert_eq!(code, 2, "{path} --param {param:?}: {stdout}{stderr}");
                assert!(
                    stderr.contains(&format!("--param {name}")),
                    "{path} --param {param:?}: {stderr}"
                );
                tried += 1;
            }
        }
        for namespace in ["orders#x", "orders/x", "Orders", "orders?dryRun="] {
            let (code, stdout, stderr) =
                warroom(&["run", path, "--dry-run", "--yes", "-n", namespace], &kc).await;
            assert_eq!(code, 2, "{path} -n {namespace:?}: {stdout}{stderr}");
            assert!(stderr.contains("-n/--namespace"), "{stderr}");
        }
        // The same dry run with the shipped values goes through the server.
        let (code, stdout, stderr) = warroom(&["run", path, "--dry-run", "--yes"], &kc).await;
        assert_eq!(code, 0, "{path}: {stdout}{stderr}");
    }
    assert!(tried > 250, "{tried} hostile runs");
    assert_eq!(
        drill.server.store().revision(),
        revision,
        "no resourceVersion changed"
    );
    assert_eq!(non_dry_run_writes(&drill), Vec::<String>::new());
    assert_eq!(state(&drill), original());
    drill.server.stop().await;
}

fn root_playbooks() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(playbook_path(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_layer_refuses_references_that_would_change_the_request_line() {
    let drill = Drill::start().await;
    let kube = drill.access().await;
    let revision = drill.server.store().revision();
    let body = drill.deployment();
    drill.server.requests().clear();
    let mut references = Vec::new();
    // Each of these would cut, redirect or break the request line (an
    // upper-case name would not: the API server answers it with 404).
    for name in HOSTILE_VALUES.iter().filter(|v| **v != "Order-Service") {
        references.push(ObjectRef::namespaced("apps/v1", "Deployment", NS, name));
    }
    for namespace in ["orders#x", "orders/x", "orders?dryRun=", "..", ""] {
        references.push(ObjectRef::namespaced(
            "apps/v1",
            "Deployment",
            namespace,
            "order-service",
        ));
    }
    for api_version in ["apps#/v1", "apps/v1?x=", "apps/v1/namespaces", "../v1"] {
        references.push(ObjectRef::namespaced(
            api_version,
            "Deployment",
            NS,
            "order-service",
        ));
    }
    for kind in ["Deployment#", "Deployment/scale", "Deploy ment"] {
        references.push(ObjectRef::namespaced("apps/v1", kind, NS, "order-service"));
    }
    for target in &references {
        let refused = |result: Result<Option<Value>, KubeError>| match result {
            Err(err) => assert!(
                err.to_string().contains("refusing to send a request"),
                "{target:?}: {err}"
            ),
            Ok(found) => panic!("{target:?} was sent: {found:?}"),
        };
        refused(kube.get(target).await);
        refused(kube.replace(target, &body, true).await.map(Some));
        refused(kube.replace(target, &body, false).await.map(Some));
        refused(kube.create(target, &body, true).await.map(Some));
    }
    assert_eq!(
        drill.server.requests().entries(),
        Vec::new(),
        "nothing reached the API server"
    );
    assert_eq!(drill.server.store().revision(), revision);
    drill.server.stop().await;
}

// ---- run records edited by hand -----------------------------------------

/// Rewrites the last run record in the store with `edit`.
fn edit_last_record(drill: &Drill, edit: impl Fn(&mut Value)) -> String {
    let store = drill.server.store();
    let mut runs = store
        .get("v1", "ConfigMap", Some(NS), "warroom-runs")
        .expect("run records");
    let data = runs["data"].as_object_mut().unwrap();
    let mut records: Vec<(String, Value)> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v.as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    records.sort_by(|a, b| a.1["started"].as_str().cmp(&b.1["started"].as_str()));
    let (key, mut last) = records.pop().unwrap();
    edit(&mut last);
    data.insert(key.clone(), Value::String(last.to_string()));
    store.put(runs).unwrap();
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_refuses_a_record_edited_to_write_a_secret_or_another_object() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let run = engine
        .run(&bind("scale-to-one.yaml"), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Done, "{}", run.message);
    let scale_step = |record: &mut Value| -> usize {
        record["steps"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| s["name"] == "scale-down")
            .unwrap()
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "Secrets",
            Box::new(move |r: &mut Value| {
                let i = scale_step(r);
                r["steps"][i]["target"] = json!({"apiVersion": "v1", "kind": "Secret",
                    "namespace": NS, "name": "order-service-redis"});
                r["steps"][i]["changes"] =
                    json!([{"path": "/data/password", "before": "aHVudGVyMg==", "after": null}]);
            }),
        ),
        (
            "secret",
            Box::new(move |r: &mut Value| {
                let i = scale_step(r);
                r["steps"][i]["target"] = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "namespace": NS, "name": "order-service-lock"});
                r["steps"][i]["changes"] = json!([{"path": "/data/REDIS_URL",
                    "before": "redis://:hunter2-planted@redis:6379", "after": null}]);
            }),
        ),
        (
            "\"order-service#x\" is not a valid request path segment",
            Box::new(move |r: &mut Value| {
                let i = scale_step(r);
                r["steps"][i]["target"]["name"] = json!("order-service#x");
            }),
        ),
        (
            "cannot set metadata.name",
            Box::new(move |r: &mut Value| {
                let i = scale_step(r);
                r["steps"][i]["changes"] = json!([{"path": "/metadata/name", "before": "payment-service", "after": "order-service"}]);
            }),
        ),
    ];
    for (says, edit) in edits {
        let key = edit_last_record(&drill, edit);
        let versions = drill.versions();
        drill.server.requests().clear();
        let (code, stdout, stderr) = warroom(&["undo", &key, "--yes"], &kc).await;
        assert_eq!(code, 3, "{says}: {stdout}{stderr}");
        assert!(stderr.contains("refusing to undo"), "{says}: {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        assert!(
            !format!("{stdout}{stderr}").contains("hunter2"),
            "{stdout}{stderr}"
        );
        assert_eq!(drill.versions(), versions, "{says}: nothing written");
        let sent: Vec<String> = drill
            .server
            .requests()
            .entries()
            .into_iter()
            .filter(|r| !r.path_and_query.contains("/configmaps/warroom-runs"))
            .filter(|r| !r.path_and_query.starts_with("/api?") && r.path_and_query != "/api")
            .filter(|r| !r.path_and_query.starts_with("/apis"))
            .map(|r| format!("{} {}", r.method, r.path_and_query))
            .collect();
        assert!(
            sent.iter()
                .all(|r| !r.contains("/secrets") && !r.contains("/deployments")),
            "{says}: {sent:?}"
        );
        // Put the record back as the run wrote it.
        edit_last_record(&drill, |r| {
            let i = r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .position(|s| s["name"] == "scale-down")
                .unwrap();
            r["steps"][i]["target"] = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "namespace": NS, "name": "order-service"});
            r["steps"][i]["changes"] = json!([{"path": "/spec/replicas", "before": 8, "after": 1}]);
        });
    }
    assert_eq!(drill.replicas(), 1, "the run's own change is still there");
    let (code, stdout, stderr) = warroom(&["undo", "--last", "--yes"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(state(&drill), original());
    drill.server.stop().await;
}

// ---- secrets ---------------------------------------------------------------

const PLANTED: &str = "hunter2-planted";

/// Everything the cluster holds that warroom writes: run records and the
/// annotations on every object.
fn stored_text(drill: &Drill) -> String {
    let store = drill.server.store();
    let mut text = String::new();
    for (api_version, kind) in [
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("networking.k8s.io/v1", "Ingress"),
    ] {
        for object in store.list(api_version, kind, None) {
            text.push_str(&object["metadata"]["annotations"].to_string());
            if object["metadata"]["name"] == "warroom-runs" {
                text.push_str(&object["data"].to_string());
            }
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_output_the_run_record_or_the_annotations() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    drill
        .server
        .store()
        .put(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "order-service-config", "namespace": NS},
            "data": {"REDIS_URL": format!("redis://:{PLANTED}@redis:6379"), "LOG_LEVEL": "info"}
        }))
        .unwrap();
    let dir = drill._dir.path();
    let write = |name: &str, steps: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("name: {name}\ndescription: d\nparameters:\n  value: {{type: string, default: info}}\nsteps:\n{steps}"),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let set_url = write(
        "set-url.yaml",
        "  - name: url\n    set-config: {configmap: order-service-config, key: REDIS_URL, value: \"redis://redis:6379\"}\n",
    );
    let patch_url = write(
        "patch-url.yaml",
        "  - name: url\n    patch:\n      apiVersion: v1\n      kind: ConfigMap\n      name: order-service-config\n      merge: {data: {REDIS_URL: \"redis://redis:6380\"}}\n",
    );
    let drop_data = write(
        "drop-data.yaml",
        "  - name: wipe\n    patch:\n      apiVersion: v1\n      kind: ConfigMap\n      name: order-service-config\n      merge: {data: null}\n",
    );
    let set_level = write(
        "set-level.yaml",
        "  - name: level\n    set-config: {configmap: order-service-config, key: LOG_LEVEL, value: \"${value}\"}\n",
    );
    let versions = drill.server.store().revision();
    let mut output = String::new();
    // The current value on the cluster is secret-looking: refused at plan
    // time, nothing changed.
    for (file, dry) in [
        (&set_url, false),
        (&set_url, true),
        (&patch_url, false),
        (&drop_data, false),
    ] {
        let mut args = vec!["run", file.as_str(), "--yes"];
        if dry {
            args.push("--dry-run");
        }
        for format in ["text", "json"] {
            let mut args = args.clone();
            args.extend(["--output", format]);
            let (code, stdout, stderr) = warroom(&args, &kc).await;
            assert_eq!(code, 3, "{file}: {stdout}{stderr}");
            let said = if format == "json" { &stdout } else { &stderr };
            assert!(said.contains("looks like a secret"), "{said}");
            assert!(said.contains("nothing was changed"), "{said}");
            output.push_str(&stdout);
            output.push_str(&stderr);
        }
    }
    // Given on the command line, or written in the playbook: refused when
    // the playbook is bound (exit 2).
    for value in [
        format!("redis://:{PLANTED}@redis:6379"),
        format!("password={PLANTED}"),
        format!("Bearer {PLANTED}abcdefghijklmnop"),
    ] {
        let param = format!("value={value}");
        let (code, stdout, stderr) =
            warroom(&["run", &set_level, "--yes", "--param", &param], &kc).await;
        assert_eq!(code, 2, "{param}: {stdout}{stderr}");
        assert!(stderr.contains("--param value"), "{stderr}");
        output.push_str(&stdout);
        output.push_str(&stderr);
    }
    assert_eq!(drill.server.store().revision(), versions, "nothing changed");
    assert!(!output.contains(PLANTED), "{output}");
    assert!(!stored_text(&drill).contains(PLANTED));

    // The same steps on a value that is not a secret go through, and the
    // secret next to it is neither shown nor recorded.
    let (code, stdout, stderr) =
        warroom(&["run", &set_level, "--yes", "--param", "value=debug"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!format!("{stdout}{stderr}").contains(PLANTED));
    let stored = stored_text(&drill);
    assert!(stored.contains("LOG_LEVEL"), "{stored}");
    assert!(!stored.contains(PLANTED), "{stored}");
    drill.server.stop().await;
}

// ---- the operator's path ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_undo_command_works_pasted_as_it_is() {
    let drill = Drill::start().await;
    // The operator works in an incident directory with relative paths.
    let work = drill._dir.path().join("incident");
    std::fs::create_dir(&work).unwrap();
    std::fs::copy(&drill.kubeconfig, work.join("kc")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["run", playbook_path("scale-to-one.yaml").to_str().unwrap()])
        .args(["--kubeconfig", "kc", "--context", "warroom-local", "-n", NS])
        .args(["--timeline", "PM-004.jsonl", "--yes"])
        .current_dir(&work)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(drill.replicas(), 1);
    let command = stdout
        .lines()
        .find_map(|l| l.strip_prefix("undo with: "))
        .unwrap_or_else(|| panic!("no undo command in {stdout}"))
        .to_owned();
    for part in [
        "--context warroom-local",
        "-n orders",
        "--kubeconfig /",
        "--timeline /",
    ] {
        assert!(command.contains(part), "{command}");
    }
    // Pasted in another directory, on a terminal, with nothing else set.
    let (code, shown) = terminal_conversation(&command, Path::new("/"), &[("[y/N]", "y\n")]).await;
    assert_eq!(code, 0, "{command}\n{shown}");
    assert_eq!(state(&drill), original());
    let journal = std::fs::read_to_string(work.join("PM-004.jsonl")).unwrap();
    assert!(journal.contains("\"undone\""), "{journal}");
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_says_what_it_will_put_back_before_it_does() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let gateway = playbook_path("gateway-rate-limit.yaml");
    let gateway = gateway.to_str().unwrap();
    let (code, stdout, stderr) = warroom(&["run", gateway, "--yes"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    // People read paths, not JSON pointers; JSON keeps the pointer.
    assert!(
        stdout.contains(
            r#"metadata.annotations["nginx.ingress.kubernetes.io/limit-rps"]: null -> "50""#
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("~1"), "{stdout}");
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("undo with: "))
        .and_then(|c| c.split_whitespace().nth(2))
        .expect("undo command")
        .to_owned();

    let (code, stdout, stderr) = warroom(&["undo", "--last", "--yes"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let announced = stdout
        .find(&format!("Undoing run {run_id} of gateway-rate-limit"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let change = stdout
        .find(r#"limit-ingress            networking.k8s.io/v1 Ingress orders/orders-gateway  metadata.annotations["nginx.ingress.kubernetes.io/limit-rps"]: back to absent (the run set "50")"#)
        .unwrap_or_else(|| panic!("{stdout}"));
    let undone = stdout
        .find("undone: run")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(announced < change && change < undone, "{stdout}");
    assert_eq!(drill.limit_rps(), None);

    let (code, stdout, _) = warroom(&["run", gateway, "--yes", "--output", "json"], &kc).await;
    assert_eq!(code, 0);
    let run: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        run["plan"][1]["changes"][0]["path"],
        "/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps"
    );
    assert!(run["undo_command"].as_str().unwrap().contains(" undo "));
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_nothing_recorded_says_it_changed_nothing() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let restore = playbook_path("restore.yaml");
    let versions = drill.versions();
    let (code, stdout, stderr) = warroom(&["run", restore.to_str().unwrap(), "--yes"], &kc).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("nothing recorded to restore"), "{stdout}");
    assert!(stdout.contains("done, nothing changed"), "{stdout}");
    assert!(!stdout.contains("undo with"), "nothing to undo: {stdout}");
    assert_eq!(drill.versions(), versions);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_stamped_with_a_time_that_has_passed() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    for _ in 0..3 {
        drill
            .server
            .store()
            .put({
                let mut d = drill.deployment();
                d["spec"]["template"]["metadata"]["annotations"] = json!({});
                d
            })
            .unwrap();
        let report = engine
            .run(&bind_text(RESTART), RunOptions::default())
            .await
            .unwrap();
        let after = jiff::Timestamp::now();
        assert_eq!(report.outcome, Outcome::Done, "{}", report.message);
        let stamp: jiff::Timestamp = drill
            .deployment()
            .pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
            .and_then(Value::as_str)
            .expect("restartedAt")
            .parse()
            .unwrap();
        assert!(stamp <= after, "{stamp} is after {after}");
    }
    drill.server.stop().await;
}

const RESTART: &str = "name: t\ndescription: d\nsteps:\n  - name: confirm\n    confirm: {prompt: go?}\n  - name: restart\n    rollout-restart: {deployment: order-service}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_flags_are_range_checked_with_a_clear_message() {
    for (runs, says) in [
        ("0", "'0' for '--runs <RUNS>': a whole number in 1..=1000"),
        (
            "1001",
            "'1001' for '--runs <RUNS>': a whole number in 1..=1000",
        ),
        ("-1", "'-1' for '--runs <RUNS>': a whole number in 1..=1000"),
        (
            "many",
            "'many' for '--runs <RUNS>': a whole number in 1..=1000",
        ),
        ("4294967296", "'4294967296' for '--runs <RUNS>'"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
            .args([
                "bench",
                "playbook",
                "--kubeconfig",
                "/nonexistent/kubeconfig",
            ])
            .args(["--runs", runs])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--runs {runs}: {stderr}");
        assert!(stderr.contains(says), "--runs {runs}: {stderr}");
    }
    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["bench", "playbook", "--help"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("1 to 1,000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_name_cannot_rewrite_the_terminal() {
    let drill = Drill::start().await;
    let kc = drill.kubeconfig.clone();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "warroom-playbook", "namespace": NS},
        "spec": {"holderIdentity": "bo\u{1b}[2J\u{1b}[Hall clear", "leaseDurationSeconds": 60,
                 "renewTime": format!("{}.000000Z", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S"))}
    });
    drill.server.store().put(lease).unwrap();
    let scale = playbook_path("scale-to-one.yaml");
    let (code, stdout, stderr) = warroom(&["run", scale.to_str().unwrap(), "--yes"], &kc).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains(r"bo\u{1b}[2J\u{1b}[Hall clear"), "{stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains('\u{1b}'),
        "{stderr:?}"
    );
    drill.server.stop().await;
}

// ---- the event stream and the Lease during waits -------------------------

/// Scales down, then waits for the rollout.
const SCALE_AND_WAIT_FOR_ROLLOUT: &str = "name: t\ndescription: d\nsteps:\n  - name: scale\n    scale: {deployment: order-service, replicas: 3}\n  - name: rollout\n    wait:\n      object: {apiVersion: apps/v1, kind: Deployment, name: order-service}\n      until: rollout-complete\n      timeout: 60s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_progress_during_a_rollout_wait() {
    let drill = Drill::start().await;
    let store = drill.server.store();
    // Status moves only when this test moves it, as a controller would.
    store.set_status_mode(warroom::cluster::StatusMode::External);
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let mut run =
        Arc::new(engine).start(bind_text(SCALE_AND_WAIT_FOR_ROLLOUT), RunOptions::default());
    let status = |ready: i64| {
        json!({"observedGeneration": 99, "replicas": 3, "updatedReplicas": 3,
               "readyReplicas": ready, "availableReplicas": ready})
    };
    let mut seen = Vec::new();
    let mut ready = 0;
    let deadline = std::time::Duration::from_secs(30);
    while let Ok(Some(event)) = tokio::time::timeout(deadline, run.events.recv()).await {
        seen.push((event.step.clone(), event.phase, event.message.clone()));
        if event.step == "rollout" && event.phase == StepPhase::Progress {
            // Each observation is reported before the next one is made.
            ready += 1;
            store
                .set_status(
                    "apps/v1",
                    "Deployment",
                    Some(NS),
                    "order-service",
                    status(ready),
                )
                .unwrap();
        }
    }
    let report = run.report.await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Done, "{}", report.message);
    let progress: Vec<&str> = seen
        .iter()
        .filter(|(step, phase, _)| step == "rollout" && *phase == StepPhase::Progress)
        .map(|(_, _, message)| message.as_str())
        .collect();
    for (index, want) in ["rollout 1/3 ready", "rollout 2/3 ready"]
        .iter()
        .enumerate()
    {
        assert!(
            progress.iter().any(|p| p.starts_with(want)),
            "progress {index} {want:?} in {progress:?}"
        );
    }
    let verified = seen
        .iter()
        .position(|(step, phase, _)| step == "rollout" && *phase == StepPhase::Verified)
        .expect("the wait ends verified");
    let last_progress = seen
        .iter()
        .rposition(|(step, phase, _)| step == "rollout" && *phase == StepPhase::Progress)
        .unwrap();
    assert!(last_progress < verified, "{seen:?}");
    assert_eq!(drill.replicas(), 3);
    drill.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_away_during_a_wait_stops_the_run() {
    let drill = Drill::start().await;
    let (engine, _) = drill.engine(Arc::new(AutoApprove)).await;
    let engine = engine.with_lease_duration(std::time::Duration::from_secs(3));
    let store = drill.server.store();
    let requests = drill.server.requests();
    let thief = tokio::spawn(async move {
        common::wait_until_async(
            "the wait to poll",
            std::time::Duration::from_secs(30),
            || {
                let requests = requests.clone();
                async move {
                    requests
                        .entries()
                        .iter()
                        .any(|r| r.path_and_query.contains("/configmaps/never-there"))
                        .then_some(())
                }
            },
        )
        .await;
        // Another operator takes the Lease over.
        let mut lease = store
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                Some(NS),
                "warroom-playbook",
            )
            .expect("the run holds the lease");
        lease["spec"]["holderIdentity"] = json!("bo on laptop-2");
        lease["spec"]["renewTime"] = json!(
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S.000000Z")
                .to_string()
        );
        store.put(lease).unwrap();
    });
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        engine.run(&bind_text(WAITS_FOREVER), RunOptions::default()),
    )
    .await
    .expect("the one-hour wait is cut short")
    .unwrap();
    thief.await.unwrap();
    assert_eq!(report.outcome, Outcome::FailedUndone, "{}", report.message);
    assert!(
        report.message.contains("the run lease was lost"),
        "{}",
        report.message
    );
    assert_eq!(drill.lock_mode(), "legacy", "nothing after the wait ran");
    let records = engine.records(NS).await.unwrap();
    assert_ne!(records.last().unwrap().outcome, RunOutcome::Running);
    drill.server.stop().await;
}
