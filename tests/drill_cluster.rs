//! The drill's `order-service` Deployment as real worker processes: the
//! supervisor's reconcile loop against the local cluster server over real
//! HTTP, checked by counting the processes themselves (in `/proc`) and with
//! the real `kubectl`, as an operator would during a PM-003 war room.
//!
//! The worker here is a stand-in every machine has: a shell that prints the
//! ready line, finishes on SIGTERM with a last line, and otherwise idles.

mod common;

use common::kubectl::{KUBECTL_RUNS, Kubectl};

use tokio::io::AsyncBufReadExt;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use warroom::cluster::{ClusterServer, Store, seed};
use warroom::drill::supervisor::{PodInfo, Supervisor, SupervisorConfig, WorkerCommand};

const NS: &str = seed::DRILL_NAMESPACE;
const DEPLOY: &str = seed::DRILL_DEPLOYMENT;
/// Bound for processes to start or stop (generous for a loaded machine).
const SETTLES: Duration = Duration::from_secs(30);

/// kubectl for `server`: None (after saying why) when kubectl is missing
/// and this is not CI.
fn kubectl_for(server: &ClusterServer) -> Option<Kubectl> {
    Some(Kubectl::new(
        common::require_tool("kubectl", "kubectl")?,
        server,
    ))
}

/// The stand-in worker; `marker` goes into its environment so the test can
/// find exactly its own processes in `/proc`.
fn stand_in(marker: &str) -> WorkerCommand {
    WorkerCommand {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            "echo \"worker ready pod=$WARROOM_POD_NAME\"; \
             trap 'echo \"stopping pod=$WARROOM_POD_NAME\"; exit 0' TERM; \
             while :; do sleep 0.1; done"
                .into(),
        ],
        env: vec![("DRILL_CLUSTER_TEST".into(), marker.into())],
    }
}

/// Pids of live (not zombie) processes whose parent is `parent` and whose
/// environment holds `DRILL_CLUSTER_TEST=<marker>`.
fn workers_of(parent: u32, marker: &str) -> BTreeSet<u32> {
    let needle = format!("DRILL_CLUSTER_TEST={marker}");
    let mut found = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state, ppid.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if state == "Z" || ppid != Some(parent) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            found.insert(pid);
        }
    }
    found
}

/// Whether `pid` is alive and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

/// Process state letter (`S`, `T` for stopped, …).
fn process_state(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_string)
}

fn unique_marker(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A drill cluster (seeded objects, replicas set) with a supervisor.
struct Drill {
    server: ClusterServer,
    supervisor: Supervisor,
    marker: String,
    logs: tempfile::TempDir,
}

impl Drill {
    async fn start(test: &str, replicas: i64) -> Drill {
        let server = ClusterServer::start_seeded("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("cluster server starts");
        set_replicas(&server.store(), replicas);
        let marker = unique_marker(test);
        let logs = tempfile::tempdir().expect("temp dir");
        let mut config = SupervisorConfig::new(logs.path().join("pods"), stand_in(&marker));
        config.grace = Duration::from_secs(5);
        let supervisor = Supervisor::start(server.store(), config).expect("supervisor starts");
        Drill {
            server,
            supervisor,
            marker,
            logs,
        }
    }

    fn processes(&self) -> BTreeSet<u32> {
        workers_of(std::process::id(), &self.marker)
    }

    /// Waits until exactly `n` worker processes run, all pods ready, and
    /// the supervisor's pods name exactly those processes.
    async fn settled(&self, n: usize) -> Vec<PodInfo> {
        common::wait_until_async(&format!("{n} ready worker processes"), SETTLES, || async {
            let pods = self.supervisor.pods();
            let pids: BTreeSet<u32> = pods.iter().filter_map(|p| p.pid).collect();
            let ready = pods.iter().filter(|p| p.ready && !p.terminating).count();
            (pods.len() == n && ready == n && self.processes() == pids).then_some(pods)
        })
        .await
    }

    fn pod_objects(&self) -> Vec<Value> {
        self.server.store().list("v1", "Pod", Some(NS))
    }

    async fn stop(self) {
        self.supervisor.shutdown().await;
        assert!(
            self.processes().is_empty(),
            "no worker outlives shutdown: {:?}",
            self.processes()
        );
        self.server.stop().await;
        drop(self.logs);
    }
}

fn set_replicas(store: &Store, replicas: i64) {
    let mut deployment = store
        .get("apps/v1", "Deployment", Some(NS), DEPLOY)
        .expect("seeded deployment");
    deployment["spec"]["replicas"] = json!(replicas);
    store.put(deployment).expect("replicas set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_process_per_replica_with_a_pod_each() {
    let drill = Drill::start("replicas", 3).await;
    let pods = drill.settled(3).await;
    let objects = drill.pod_objects();
    assert_eq!(objects.len(), 3);
    let replica_sets = drill.server.store().list("apps/v1", "ReplicaSet", Some(NS));
    assert_eq!(replica_sets.len(), 1);
    let rs = &replica_sets[0];
    let rs_name = rs["metadata"]["name"].as_str().expect("named");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    for pod in &pods {
        let object = objects
            .iter()
            .find(|o| o["metadata"]["name"] == pod.name.as_str())
            .expect("a Pod per process");
        assert!(pod.name.starts_with(&format!("{rs_name}-")));
        assert_eq!(object["metadata"]["labels"]["app"], DEPLOY);
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["uid"],
            rs["metadata"]["uid"]
        );
        assert_eq!(object["status"]["phase"], "Running");
        assert_eq!(object["status"]["containerStatuses"][0]["ready"], true);
        let log = std::fs::read_to_string(drill.supervisor.log_path(&pod.name)).expect("log");
        assert!(
            log.contains(&format!("worker ready pod={}", pod.name)),
            "{log}"
        );
    }
    let deployment = drill
        .server
        .store()
        .get("apps/v1", "Deployment", Some(NS), DEPLOY)
        .expect("deployment");
    let status = common::wait_until("status written", SETTLES, || {
        let d = drill
            .server
            .store()
            .get("apps/v1", "Deployment", Some(NS), DEPLOY)?;
        (d["status"]["readyReplicas"] == 3).then(|| d["status"].clone())
    });
    assert_eq!(status["updatedReplicas"], 3);
    assert_eq!(status["availableReplicas"], 3);
    assert_eq!(
        status["observedGeneration"],
        deployment["metadata"]["generation"]
    );
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_is_stopped_then_resumed() {
    let drill = Drill::start("pause", 1).await;
    let pods = drill.settled(1).await;
    let pid = pods[0].pid.expect("running");
    let supervisor = drill.supervisor.clone();
    let name = pods[0].name.clone();
    let pause =
        tokio::spawn(async move { supervisor.pause(&name, Duration::from_millis(800)).await });
    common::wait_until("the worker stopped (SIGSTOP)", SETTLES, || {
        (process_state(pid).as_deref() == Some("T")).then_some(())
    });
    assert!(drill.supervisor.pods()[0].paused);
    pause.await.expect("joins").expect("pause succeeds");
    common::wait_until("the worker resumed (SIGCONT)", SETTLES, || {
        (process_state(pid).as_deref() != Some("T")).then_some(())
    });
    assert!(!drill.supervisor.pods()[0].paused);
    let reasons: Vec<String> = drill
        .server
        .store()
        .list("v1", "Event", Some(NS))
        .iter()
        .filter(|e| e["involvedObject"]["name"] == pods[0].name.as_str())
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    assert!(reasons.contains(&"Paused".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Resumed".to_string()), "{reasons:?}");
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pause_still_resumes_the_worker() {
    let drill = Drill::start("cancelled-pause", 1).await;
    let pods = drill.settled(1).await;
    let pid = pods[0].pid.expect("running");
    let pause = drill
        .supervisor
        .pause(&pods[0].name, Duration::from_secs(60));
    // The pause is dropped after 300 ms, long before it would end.
    let _ = tokio::time::timeout(Duration::from_millis(300), pause).await;
    common::wait_until("the worker resumed (SIGCONT)", SETTLES, || {
        (process_state(pid).as_deref().is_some_and(|s| s != "T")).then_some(())
    });
    assert!(!drill.supervisor.pods()[0].paused);
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_is_restarted_in_its_pod() {
    let drill = Drill::start("restart", 2).await;
    let pods = drill.settled(2).await;
    let victim = &pods[0];
    let pid = victim.pid.expect("running");
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let restarted = common::wait_until_async("the pod's worker restarted", SETTLES, || async {
        drill
            .supervisor
            .pods()
            .into_iter()
            .find(|p| p.name == victim.name && p.ready && p.pid.is_some_and(|p| p != pid))
    })
    .await;
    assert_eq!(restarted.restarts, 1);
    drill.settled(2).await;
    let object = drill
        .server
        .store()
        .get("v1", "Pod", Some(NS), &victim.name)
        .expect("same pod");
    assert_eq!(object["status"]["containerStatuses"][0]["restartCount"], 1);
    assert_eq!(
        object["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        128 + libc::SIGKILL
    );
    let warned = drill
        .server
        .store()
        .list("v1", "Event", Some(NS))
        .iter()
        .any(|e| e["reason"] == "BackOff" && e["involvedObject"]["name"] == victim.name.as_str());
    assert!(warned, "a Warning event names the restart");
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_stops_workers_with_sigterm() {
    let drill = Drill::start("scale-down", 2).await;
    let before = drill.settled(2).await;
    set_replicas(&drill.server.store(), 1);
    let after = drill.settled(1).await;
    let stopped = before
        .iter()
        .find(|p| p.name != after[0].name)
        .expect("one pod stopped");
    // The worker saw SIGTERM and finished on its own (its last line).
    let log = std::fs::read_to_string(drill.supervisor.log_path(&stopped.name)).expect("log");
    assert!(
        log.contains(&format!("stopping pod={}", stopped.name)),
        "{log}"
    );
    common::wait_until("its Pod deleted", SETTLES, || {
        (drill.pod_objects().len() == 1).then_some(())
    });
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_worker_program_is_refused_at_start() {
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("cluster server starts");
    let logs = tempfile::tempdir().expect("temp dir");
    let config = SupervisorConfig::new(
        logs.path(),
        WorkerCommand {
            program: PathBuf::from("/nonexistent/warroom"),
            args: vec![],
            env: vec![],
        },
    );
    let err = Supervisor::start(server.store(), config)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("/nonexistent/warroom"), "{err}");
    server.stop().await;
}

/// Set in the environment of the supervising process that
/// [`no_orphan_after_the_supervising_process_is_killed`] starts (this same
/// test binary, running that same test).
const PARENT_ENV: &str = "WARROOM_TEST_SUPERVISING_PARENT";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_orphan_after_the_supervising_process_is_killed() {
    if std::env::var_os(PARENT_ENV).is_some() {
        // The supervising process: start three workers, say which, and wait
        // to be killed (bounded, in case nobody does).
        let drill = Drill::start("orphans", 3).await;
        let pids: Vec<String> = drill
            .settled(3)
            .await
            .iter()
            .filter_map(|p| p.pid.map(|pid| pid.to_string()))
            .collect();
        println!("MARKER {}", drill.marker);
        println!("WORKERS {}", pids.join(","));
        tokio::time::sleep(Duration::from_secs(120)).await;
        return;
    }
    use std::io::BufRead;
    let mut parent = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "no_orphan_after_the_supervising_process_is_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PARENT_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("supervising process starts");
    let stdout = parent.stdout.take().expect("piped");
    let (lines, incoming) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut marker = None;
    let workers: Vec<u32> =
        common::wait_until("the supervising process's workers", SETTLES, || {
            let line = incoming.try_recv().ok()?;
            // libtest may print the test's name on the same line first.
            if let Some((_, m)) = line.split_once("MARKER ") {
                marker = Some(m.trim().to_string());
            }
            line.split_once("WORKERS ").map(|(_, pids)| {
                pids.trim()
                    .split(',')
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
        });
    let marker = marker.expect("marker printed before the workers");
    assert_eq!(workers.len(), 3);
    assert_eq!(
        workers_of(parent.id(), &marker),
        workers.iter().copied().collect::<BTreeSet<u32>>(),
        "the workers are the supervising process's children"
    );
    parent.kill().expect("SIGKILL the supervising process");
    parent.wait().expect("reaped");
    common::wait_until("every worker gone", Duration::from_secs(2), || {
        workers.iter().all(|pid| !alive(*pid)).then_some(())
    });
}

/// Names of the pods kubectl lists that are not terminating.
async fn running_pods(kubectl: &Kubectl) -> BTreeSet<String> {
    let listing = kubectl.ok(&["get", "pods", "-n", NS, "-o", "json"]).await;
    let list: Value = serde_json::from_str(&listing).expect("a pod list");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_changes_the_number_of_worker_processes() {
    let drill = Drill::start("kubectl-scale", 3).await;
    let Some(kubectl) = kubectl_for(&drill.server) else {
        return drill.stop().await;
    };
    drill.settled(3).await;
    for replicas in [1usize, 2] {
        let scaled = kubectl
            .ok(&[
                "scale",
                &format!("deploy/{DEPLOY}"),
                "-n",
                NS,
                &format!("--replicas={replicas}"),
            ])
            .await;
        assert!(scaled.contains("scaled"), "{scaled}");
        let pods = drill.settled(replicas).await;
        // Counted in /proc, not taken from the supervisor's word.
        assert_eq!(drill.processes().len(), replicas);
        let names: BTreeSet<String> = pods.iter().map(|p| p.name.clone()).collect();
        let listed = common::wait_until_async("kubectl lists the pods", SETTLES, || async {
            let listed = running_pods(&kubectl).await;
            (listed == names).then_some(listed)
        })
        .await;
        assert_eq!(listed.len(), replicas);
        let table = kubectl.ok(&["get", "deploy", DEPLOY, "-n", NS]).await;
        assert!(
            table.contains(&format!("{replicas}/{replicas}")),
            "READY {replicas}/{replicas}: {table}"
        );
    }
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_replaces_every_worker_and_rollout_status_completes() {
    let drill = Drill::start("rollout", 3).await;
    let Some(kubectl) = kubectl_for(&drill.server) else {
        return drill.stop().await;
    };
    let before: BTreeSet<u32> = drill
        .settled(3)
        .await
        .iter()
        .filter_map(|p| p.pid)
        .collect();
    let restarted = kubectl
        .ok(&["rollout", "restart", &format!("deploy/{DEPLOY}"), "-n", NS])
        .await;
    assert!(restarted.contains("restarted"), "{restarted}");
    let status = kubectl
        .ok(&[
            "rollout",
            "status",
            &format!("deploy/{DEPLOY}"),
            "-n",
            NS,
            "--timeout=60s",
        ])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");
    let after: BTreeSet<u32> =
        common::wait_until_async("the old workers gone", SETTLES, || async {
            let pids: BTreeSet<u32> = drill
                .settled(3)
                .await
                .iter()
                .filter_map(|p| p.pid)
                .collect();
            before.iter().all(|pid| !alive(*pid)).then_some(pids)
        })
        .await;
    assert!(
        after.is_disjoint(&before),
        "every process replaced: {before:?} → {after:?}"
    );
    let replica_sets = kubectl.ok(&["get", "rs", "-n", NS, "-o", "json"]).await;
    let replica_sets: Value = serde_json::from_str(&replica_sets).expect("a list");
    let desired: Vec<i64> = replica_sets["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|rs| rs["spec"]["replicas"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(desired.len(), 2, "a new ReplicaSet beside the old one");
    assert!(desired.contains(&3) && desired.contains(&0), "{desired:?}");
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_shows_the_workers_lines() {
    let drill = Drill::start("logs", 2).await;
    let Some(kubectl) = kubectl_for(&drill.server) else {
        return drill.stop().await;
    };
    let pods = drill.settled(2).await;
    let pod = &pods[0].name;
    let log = kubectl.ok(&["logs", pod, "-n", NS]).await;
    assert_eq!(log, format!("worker ready pod={pod}\n"));
    let tail = kubectl
        .ok(&["logs", pod, "-n", NS, "--tail=1", "--timestamps"])
        .await;
    assert!(tail.contains(&format!("worker ready pod={pod}")), "{tail}");
    // deploy/: kubectl picks one of the Deployment's pods.
    let via_deploy = kubectl
        .ok(&["logs", &format!("deploy/{DEPLOY}"), "-n", NS])
        .await;
    assert!(
        pods.iter()
            .any(|p| via_deploy == format!("worker ready pod={}\n", p.name)),
        "{via_deploy}"
    );
    let missing = kubectl
        .fails(&["logs", "order-service-nosuch-zzzzz", "-n", NS])
        .await;
    assert!(missing.contains("not found"), "{missing}");
    let wrong = kubectl
        .fails(&["logs", pod, "-n", NS, "-c", "sidecar"])
        .await;
    assert!(wrong.contains("sidecar"), "{wrong}");
    // -f streams until the worker ends: its SIGTERM line arrives, then EOF.
    let mut follow = kubectl
        .command(&["logs", "-f", pod, "-n", NS])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f starts");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().expect("piped")).lines();
    let first = tokio::time::timeout(KUBECTL_RUNS, lines.next_line())
        .await
        .expect("kubectl logs -f prints the log so far")
        .expect("reads")
        .expect("a line");
    assert_eq!(first, format!("worker ready pod={pod}"));
    set_replicas(&drill.server.store(), 0);
    let mut rest = Vec::new();
    tokio::time::timeout(KUBECTL_RUNS, async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            rest.push(line);
        }
    })
    .await
    .expect("kubectl logs -f ends when the worker ends");
    assert_eq!(rest, [format!("stopping pod={pod}")]);
    let status = tokio::time::timeout(KUBECTL_RUNS, follow.wait())
        .await
        .expect("kubectl exits")
        .expect("waits");
    assert!(status.success(), "{status}");
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_previous_shows_the_run_before_a_restart() {
    let drill = Drill::start("logs-previous", 1).await;
    let Some(kubectl) = kubectl_for(&drill.server) else {
        return drill.stop().await;
    };
    let pods = drill.settled(1).await;
    let pod = pods[0].name.clone();
    let none = kubectl.fails(&["logs", &pod, "-n", NS, "--previous"]).await;
    assert!(none.contains("previous terminated container"), "{none}");
    let pid = pods[0].pid.expect("running");
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    common::wait_until_async("the worker restarted", SETTLES, || async {
        drill
            .supervisor
            .pods()
            .into_iter()
            .find(|p| p.ready && p.restarts == 1)
    })
    .await;
    let previous = kubectl.ok(&["logs", &pod, "-n", NS, "--previous"]).await;
    assert_eq!(previous, format!("worker ready pod={pod}\n"));
    let current = kubectl.ok(&["logs", &pod, "-n", NS]).await;
    assert_eq!(
        current,
        format!("worker ready pod={pod}\n"),
        "only the new run"
    );
    let table = kubectl.ok(&["get", "pod", &pod, "-n", NS]).await;
    assert!(
        table.contains("Running") && table.contains(" 1 "),
        "RESTARTS 1: {table}"
    );
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_scaling_and_pause_events() {
    let drill = Drill::start("events", 2).await;
    let Some(kubectl) = kubectl_for(&drill.server) else {
        return drill.stop().await;
    };
    let pods = drill.settled(2).await;
    kubectl
        .ok(&[
            "scale",
            &format!("deploy/{DEPLOY}"),
            "-n",
            NS,
            "--replicas=1",
        ])
        .await;
    let kept = drill.settled(1).await;
    let pod = kept[0].name.clone();
    drill
        .supervisor
        .pause(&pod, Duration::from_millis(300))
        .await
        .expect("pause");
    let events = kubectl.ok(&["get", "events", "-n", NS]).await;
    for expected in [
        "ScalingReplicaSet",
        "Scaled down replica set",
        "Paused",
        "Resumed",
        "Killing",
        &format!("pod/{pod}"),
    ] {
        assert!(events.contains(expected), "{expected:?} in:\n{events}");
    }
    let describe = kubectl
        .ok(&["describe", &format!("deploy/{DEPLOY}"), "-n", NS])
        .await;
    assert!(describe.contains("Scaled down replica set"), "{describe}");
    assert!(describe.contains("NewReplicaSet:"), "{describe}");
    let described_pod = kubectl.ok(&["describe", "pod", &pod, "-n", NS]).await;
    assert!(described_pod.contains("Paused"), "{described_pod}");
    assert!(described_pod.contains("127.0.0.1"), "{described_pod}");
    let stopped = pods.iter().find(|p| p.name != pod).expect("one stopped");
    assert!(
        events.contains(&format!("pod/{}", stopped.name)),
        "the stopped pod's events outlive it:\n{events}"
    );
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_pod_stops_its_worker_and_a_new_one_replaces_it() {
    let drill = Drill::start("delete-pod", 2).await;
    let Some(kubectl) = kubectl_for(&drill.server) else {
        return drill.stop().await;
    };
    let before = drill.settled(2).await;
    let victim = &before[0];
    let pid = victim.pid.expect("running");
    let deleted = kubectl.ok(&["delete", "pod", &victim.name, "-n", NS]).await;
    assert!(deleted.contains("deleted"), "{deleted}");
    let after = common::wait_until_async("a replacement worker", SETTLES, || async {
        let pods = drill.settled(2).await;
        (!alive(pid) && pods.iter().all(|p| p.name != victim.name)).then_some(pods)
    })
    .await;
    assert_eq!(drill.processes().len(), 2);
    let log = std::fs::read_to_string(drill.supervisor.log_path(&victim.name)).expect("log");
    assert!(
        log.contains(&format!("stopping pod={}", victim.name)),
        "SIGTERM, not SIGKILL: {log}"
    );
    let listed = running_pods(&kubectl).await;
    let names: BTreeSet<String> = after.iter().map(|p| p.name.clone()).collect();
    assert_eq!(listed, names);
    drill.stop().await;
}

/// The pids of the running (not terminating) workers.
fn pids(pods: &[PodInfo]) -> BTreeSet<u32> {
    pods.iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| p.pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_undo_pause_and_resume_work_as_on_a_cluster() {
    let drill = Drill::start("undo", 2).await;
    let Some(kubectl) = kubectl_for(&drill.server) else {
        return drill.stop().await;
    };
    let deploy = format!("deploy/{DEPLOY}");
    let first = drill.settled(2).await;
    let first_rs = first[0]
        .name
        .rsplit_once('-')
        .expect("pod name")
        .0
        .to_string();
    kubectl.ok(&["rollout", "restart", &deploy, "-n", NS]).await;
    kubectl
        .ok(&["rollout", "status", &deploy, "-n", NS, "--timeout=60s"])
        .await;
    let history = kubectl.ok(&["rollout", "history", &deploy, "-n", NS]).await;
    assert!(history.contains('1') && history.contains('2'), "{history}");
    // Undo: the first template's ReplicaSet runs the pods again, as revision 3.
    let undone = kubectl.ok(&["rollout", "undo", &deploy, "-n", NS]).await;
    assert!(undone.contains("rolled back"), "{undone}");
    kubectl
        .ok(&["rollout", "status", &deploy, "-n", NS, "--timeout=60s"])
        .await;
    let back = common::wait_until_async("the first ReplicaSet's pods", SETTLES, || async {
        let pods = drill.settled(2).await;
        pods.iter()
            .all(|p| p.name.starts_with(&format!("{first_rs}-")))
            .then_some(pods)
    })
    .await;
    assert!(pids(&back).is_disjoint(&pids(&first)), "new processes");
    let rs = drill
        .server
        .store()
        .get("apps/v1", "ReplicaSet", Some(NS), &first_rs)
        .expect("kept");
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    // Paused: a template change waits; resumed: it rolls out.
    kubectl.ok(&["rollout", "pause", &deploy, "-n", NS]).await;
    kubectl
        .ok(&[
            "set",
            "image",
            &deploy,
            "-n",
            NS,
            &format!("{DEPLOY}=registry.local/orders/order-service:2.14.4"),
        ])
        .await;
    common::wait_until("the pause observed", SETTLES, || {
        let d = drill
            .server
            .store()
            .get("apps/v1", "Deployment", Some(NS), DEPLOY)?;
        let observed = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        let paused = d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["reason"] == "DeploymentPaused");
        (observed && paused).then_some(())
    });
    assert_eq!(
        pids(&drill.supervisor.pods()),
        pids(&back),
        "nothing rolled while paused"
    );
    kubectl.ok(&["rollout", "resume", &deploy, "-n", NS]).await;
    kubectl
        .ok(&["rollout", "status", &deploy, "-n", NS, "--timeout=60s"])
        .await;
    common::wait_until_async("the resumed rollout's pods", SETTLES, || async {
        let pods = drill.settled(2).await;
        pids(&pods).is_disjoint(&pids(&back)).then_some(())
    })
    .await;
    drill.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_over_http_answer_as_a_real_server_does() {
    // No supervisor: a stored pod's log is empty, an unknown pod is 404.
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("cluster server starts");
    server
        .store()
        .put(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "order-service-abc-x1", "namespace": NS },
            "spec": { "containers": [{ "name": "order-service" }] },
        }))
        .expect("pod stored");
    let http = reqwest::Client::new();
    let log = |pod: &str, query: &str| {
        let url = format!(
            "{}/api/v1/namespaces/{NS}/pods/{pod}/log{query}",
            server.url()
        );
        let http = http.clone();
        async move {
            let response = tokio::time::timeout(KUBECTL_RUNS, http.get(url).send())
                .await
                .expect("answers in time")
                .expect("answers");
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            (status, body)
        }
    };
    assert_eq!(log("order-service-abc-x1", "").await, (200, String::new()));
    assert_eq!(
        log("order-service-abc-x1", "?follow=true").await,
        (200, String::new()),
        "nothing to follow: the answer ends"
    );
    let (status, body) = log("nosuch", "").await;
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "pods \"nosuch\" not found");
    for (query, code) in [
        ("?tailLines=-1", 422),
        ("?tailLines=many", 400),
        ("?limitBytes=0", 422),
        ("?follow=perhaps", 400),
        ("?container=sidecar", 400),
        ("?previous=true", 400),
    ] {
        let (status, body) = log("order-service-abc-x1", query).await;
        assert_eq!(status, code, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).expect("a Status");
        assert_eq!(body["kind"], "Status", "{query}");
    }
    let refused = tokio::time::timeout(
        KUBECTL_RUNS,
        http.delete(format!(
            "{}/api/v1/namespaces/{NS}/pods/order-service-abc-x1/log",
            server.url()
        ))
        .send(),
    )
    .await
    .expect("answers in time")
    .expect("answers");
    let status = refused.status().as_u16();
    assert_eq!(status, 405);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_over_http_tail_and_limit_a_workers_log() {
    let drill = Drill::start("http-logs", 1).await;
    let pods = drill.settled(1).await;
    let pod = &pods[0].name;
    // More lines, appended the way the worker's own output is.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(drill.supervisor.log_path(pod))
            .expect("log opens");
        writeln!(file, "LOCK ACQUIRED order_id=1 worker={pod}").expect("written");
        writeln!(file, "LOCK RELEASED order_id=1 worker={pod}").expect("written");
    }
    let url = |query: &str| {
        format!(
            "{}/api/v1/namespaces/{NS}/pods/{pod}/log{query}",
            drill.server.url()
        )
    };
    let get = |query: &'static str| {
        let url = url(query);
        async move {
            reqwest::get(url)
                .await
                .expect("answers")
                .text()
                .await
                .expect("body")
        }
    };
    assert_eq!(
        get("").await,
        format!(
            "worker ready pod={pod}\nLOCK ACQUIRED order_id=1 worker={pod}\n\
             LOCK RELEASED order_id=1 worker={pod}\n"
        )
    );
    assert_eq!(
        get("?tailLines=1").await,
        format!("LOCK RELEASED order_id=1 worker={pod}\n")
    );
    assert_eq!(get("?tailLines=0").await, "");
    assert_eq!(get("?limitBytes=6").await, "worker");
    drill.stop().await;
}
