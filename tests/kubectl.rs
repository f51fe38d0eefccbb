//! The real `kubectl` against the local cluster server, with the kubeconfig
//! the server writes: what an operator types during a PM-003 war room.
//!
//! kubectl is found on PATH, or set `WARROOM_KUBECTL` to another binary.
//! Under CI (`CI` set) a kubectl that is missing or cannot run fails the
//! tests; elsewhere they print why they are skipped.

mod common;

use common::kubectl::Kubectl;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use warroom::cluster::{ClusterServer, StatusMode};

const NS: &str = "orders";

/// Bound for kubectl to open a watch; not a speed assertion.
const WATCH_OPENS: Duration = Duration::from_secs(60);

/// The kubectl binary to run, if one runs here (see the module comment).
fn kubectl_bin() -> Option<PathBuf> {
    let bin = match std::env::var_os("WARROOM_KUBECTL") {
        Some(bin) => PathBuf::from(bin),
        None => common::require_tool("kubectl", "kubectl")?,
    };
    let why = match std::process::Command::new(&bin)
        .args(["version", "--client"])
        .output()
    {
        Ok(out) if out.status.success() => return Some(bin),
        Ok(out) => format!(
            "`{} version --client` failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("cannot run {}: {e}", bin.display()),
    };
    if common::under_ci() {
        panic!("{why}; CI requires a working kubectl");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// kubectl for `server`: None (after saying why) when kubectl cannot be
/// run here and this is not CI.
fn kubectl_for(server: &ClusterServer) -> Option<Kubectl> {
    Some(Kubectl::new(kubectl_bin()?, server))
}

async fn seeded() -> ClusterServer {
    ClusterServer::start_seeded("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("the local cluster starts")
}

fn stored(server: &ClusterServer, api_version: &str, kind: &str, name: &str) -> Value {
    server
        .store()
        .get(api_version, kind, Some(NS), name)
        .unwrap_or_else(|| panic!("{kind} {name} is stored"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_and_reads_the_drill_objects() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let listing = kubectl.ok(&["get", "deploy,cm,ing", "-n", NS]).await;
    // Aggregated discovery: /api and /apis answer for every group version.
    let paths: Vec<String> = server
        .requests()
        .entries()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("/apis?")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("/apis/apps/v1?")),
        "kubectl fell back to per-group discovery: {paths:?}"
    );
    for expected in [
        "deployment.apps/order-service",
        "8/8",
        "configmap/order-service-lock",
        "ingress.networking.k8s.io/orders-gateway",
        "nginx",
        "orders.local",
    ] {
        assert!(
            listing.contains(expected),
            "{expected:?} missing from:\n{listing}"
        );
    }

    let as_json: Value = serde_json::from_str(
        &kubectl
            .ok(&["get", "deploy", "order-service", "-o", "json"])
            .await,
    )
    .expect("kubectl prints JSON");
    assert_eq!(as_json["kind"], "Deployment");
    assert_eq!(as_json["spec"]["replicas"], 8);
    assert_eq!(
        as_json["metadata"]["resourceVersion"],
        stored(&server, "apps/v1", "Deployment", "order-service")["metadata"]["resourceVersion"]
    );
    let as_yaml = kubectl
        .ok(&["get", "deploy", "order-service", "-o", "yaml"])
        .await;
    assert!(as_yaml.contains("name: order-service"), "{as_yaml}");
    assert!(as_yaml.contains("replicas: 8"), "{as_yaml}");
    assert_eq!(
        kubectl
            .ok(&[
                "get",
                "cm",
                "order-service-lock",
                "-o",
                "jsonpath={.data.LOCK_MODE}"
            ])
            .await,
        "legacy"
    );
    let namespaces = kubectl.ok(&["get", "ns"]).await;
    for ns in ["default", "kube-system", "orders"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
    let everywhere = kubectl.ok(&["get", "deploy", "-A"]).await;
    assert!(
        everywhere.contains("orders") && everywhere.contains("order-service"),
        "{everywhere}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_annotate_and_patch_change_what_the_api_serves() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let out = kubectl
        .ok(&["scale", "deploy/order-service", "--replicas=1"])
        .await;
    assert!(
        out.contains("deployment.apps/order-service scaled"),
        "{out}"
    );
    assert_eq!(
        stored(&server, "apps/v1", "Deployment", "order-service")["spec"]["replicas"],
        1
    );
    assert_eq!(
        kubectl
            .ok(&[
                "get",
                "deploy",
                "order-service",
                "-o",
                "jsonpath={.spec.replicas} {.status.readyReplicas}"
            ])
            .await,
        "1 1"
    );
    // With a precondition kubectl reads, then PUTs the Scale.
    kubectl
        .ok(&[
            "scale",
            "deploy/order-service",
            "--current-replicas=1",
            "--replicas=2",
        ])
        .await;
    assert_eq!(
        stored(&server, "apps/v1", "Deployment", "order-service")["spec"]["replicas"],
        2
    );
    let refused = kubectl
        .fails(&[
            "scale",
            "deploy/order-service",
            "--current-replicas=8",
            "--replicas=3",
        ])
        .await;
    assert!(
        refused.contains("Expected replicas to be 8, was 2"),
        "{refused}"
    );

    let out = kubectl
        .ok(&[
            "annotate",
            "ingress",
            "orders-gateway",
            "nginx.ingress.kubernetes.io/limit-rps=50",
            "--overwrite",
        ])
        .await;
    assert!(out.contains("annotated"), "{out}");
    assert_eq!(
        stored(&server, "networking.k8s.io/v1", "Ingress", "orders-gateway")["metadata"]["annotations"]
            ["nginx.ingress.kubernetes.io/limit-rps"],
        "50"
    );

    let out = kubectl
        .ok(&[
            "patch",
            "configmap",
            "order-service-lock",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"LOCK_MODE":"watch"}}"#,
        ])
        .await;
    assert!(
        out.contains("configmap/order-service-lock patched"),
        "{out}"
    );
    assert!(!out.contains("no change"), "{out}");
    let again = kubectl
        .ok(&[
            "patch",
            "configmap",
            "order-service-lock",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"LOCK_MODE":"watch"}}"#,
        ])
        .await;
    assert!(again.contains("(no change)"), "{again}");
    assert_eq!(
        kubectl
            .ok(&[
                "get",
                "configmap",
                "order-service-lock",
                "-o",
                "jsonpath={.data.LOCK_MODE}"
            ])
            .await,
        "watch"
    );

    // kubectl's default patch type is a strategic merge; JSON patch too.
    kubectl
        .ok(&[
            "patch",
            "deploy",
            "order-service",
            "-p",
            r#"{"metadata":{"labels":{"incident":"pm-003"}}}"#,
        ])
        .await;
    kubectl
        .ok(&[
            "patch",
            "deploy",
            "order-service",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":1}]"#,
        ])
        .await;
    let d = stored(&server, "apps/v1", "Deployment", "order-service");
    assert_eq!(
        (
            d["metadata"]["labels"]["incident"].clone(),
            d["spec"]["replicas"].clone()
        ),
        (json!("pm-003"), json!(1))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_restart_and_status_report_a_finished_rollout() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let out = kubectl
        .ok(&["rollout", "status", "deploy/order-service", "--timeout=60s"])
        .await;
    assert!(
        out.contains("deployment \"order-service\" successfully rolled out"),
        "{out}"
    );
    let out = kubectl
        .ok(&["rollout", "restart", "deploy/order-service"])
        .await;
    assert!(
        out.contains("deployment.apps/order-service restarted"),
        "{out}"
    );
    let d = stored(&server, "apps/v1", "Deployment", "order-service");
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    let out = kubectl
        .ok(&["rollout", "status", "deploy/order-service", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_waits_for_the_status_to_catch_up() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let store = server.store();
    store.set_status_mode(StatusMode::External);
    kubectl
        .ok(&["scale", "deploy/order-service", "--replicas=1"])
        .await;
    let before = store.watchers();
    let waiting = {
        let args = [
            "rollout",
            "status",
            "deploy/order-service",
            "--timeout=120s",
        ];
        let run = kubectl.run(&args);
        tokio::spawn(async move {
            // Wait until kubectl's watch is open, then let the "reconcile
            // loop" report the new replica set as ready.
            common::wait_until_async("kubectl's watch to open", WATCH_OPENS, || async {
                (store.watchers() > before).then_some(())
            })
            .await;
            let generation = store
                .get("apps/v1", "Deployment", Some(NS), "order-service")
                .expect("stored")["metadata"]["generation"]
                .clone();
            store
                .set_status(
                    "apps/v1",
                    "Deployment",
                    Some(NS),
                    "order-service",
                    json!({
                        "observedGeneration": generation,
                        "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                    }),
                )
                .expect("status written");
        });
        run.await
    };
    let stdout = String::from_utf8_lossy(&waiting.stdout);
    assert!(
        waiting.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&waiting.stderr)
    );
    assert!(stdout.contains("Waiting for deployment"), "{stdout}");
    assert!(stdout.contains("successfully rolled out"), "{stdout}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_forbidden_and_not_found_verbatim() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let err = kubectl.fails(&["get", "deploy", "payment-service"]).await;
    assert!(
        err.contains(
            "Error from server (NotFound): deployments.apps \"payment-service\" not found"
        ),
        "{err}"
    );
    server
        .faults()
        .fail("PATCH", "/deployments/order-service", 403, None);
    let err = kubectl
        .fails(&["scale", "deploy/order-service", "--replicas=1"])
        .await;
    assert!(
        err.contains("cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"orders\""),
        "{err}"
    );
    assert_eq!(
        stored(&server, "apps/v1", "Deployment", "order-service")["spec"]["replicas"],
        8
    );
    server.faults().clear();
    kubectl
        .ok(&["scale", "deploy/order-service", "--replicas=1"])
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_leases_and_applies_manifests_with_server_validation() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let none = kubectl.run(&["get", "lease"]).await;
    assert!(none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No resources found in orders namespace."),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    server
        .store()
        .put(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "warroom-playbook-orders", "namespace": NS},
            "spec": {"holderIdentity": "alice@laptop", "leaseDurationSeconds": 30},
        }))
        .expect("lease stored");
    let leases = kubectl.ok(&["get", "lease"]).await;
    assert!(
        leases.contains("warroom-playbook-orders") && leases.contains("alice@laptop"),
        "{leases}"
    );

    let manifest = kubectl.home.path().join("limits.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gateway-limits\n  namespace: orders\ndata:\n  rps: \"50\"\n",
    )
    .expect("manifest written");
    let path = manifest.to_str().expect("utf-8 path");
    assert!(kubectl.ok(&["apply", "-f", path]).await.contains("created"));
    assert!(
        kubectl
            .ok(&["apply", "-f", path])
            .await
            .contains("unchanged")
    );
    assert_eq!(
        stored(&server, "v1", "ConfigMap", "gateway-limits")["data"]["rps"],
        "50"
    );
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gateway-limits\n  namespace: orders\ndata:\n  rps: \"5\"\n",
    )
    .expect("manifest written");
    let out = kubectl.ok(&["apply", "--server-side", "-f", path]).await;
    assert!(out.contains("serverside-applied"), "{out}");
    assert_eq!(
        stored(&server, "v1", "ConfigMap", "gateway-limits")["data"]["rps"],
        "5"
    );
    // A typo in a manifest is refused (kubectl asks for strict validation)…
    let typo = kubectl.home.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: orders\ndataa:\n  rps: \"5\"\n",
    )
    .expect("manifest written");
    let typo = typo.to_str().expect("utf-8 path");
    let err = kubectl.fails(&["apply", "-f", typo]).await;
    assert!(
        err.contains("strict decoding error: unknown field \"dataa\""),
        "{err}"
    );
    assert!(
        server
            .store()
            .get("v1", "ConfigMap", Some(NS), "typo")
            .is_none()
    );
    // …or, when asked to warn, dropped with a warning, as the API server does.
    let out = kubectl.run(&["apply", "--validate=warn", "-f", typo]).await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Warning: unknown field \"dataa\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stored(&server, "v1", "ConfigMap", "typo")
            .get("dataa")
            .is_none()
    );
    assert!(
        kubectl
            .ok(&["delete", "-f", path])
            .await
            .contains("deleted")
    );
    assert!(
        server
            .store()
            .get("v1", "ConfigMap", Some(NS), "gateway-limits")
            .is_none()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_dry_run_changes_nothing() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let revision = server.store().revision();
    let out = kubectl
        .ok(&[
            "scale",
            "deploy/order-service",
            "--replicas=1",
            "--dry-run=server",
        ])
        .await;
    assert!(out.contains("scaled (server dry run)"), "{out}");
    let out = kubectl
        .ok(&[
            "annotate",
            "ingress",
            "orders-gateway",
            "nginx.ingress.kubernetes.io/limit-rps=50",
            "--dry-run=server",
        ])
        .await;
    assert!(out.contains("annotated (server dry run)"), "{out}");
    let out = kubectl
        .ok(&[
            "patch",
            "cm",
            "order-service-lock",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"LOCK_MODE":"watch"}}"#,
            "--dry-run=server",
            "-o",
            "jsonpath={.data.LOCK_MODE}",
        ])
        .await;
    assert_eq!(out, "watch", "the dry run answers with the result");
    assert_eq!(server.store().revision(), revision);
    assert_eq!(
        stored(&server, "v1", "ConfigMap", "order-service-lock")["data"]["LOCK_MODE"],
        "legacy"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_selects_deletes_and_watches_pods() {
    let server = seeded().await;
    let Some(kubectl) = kubectl_for(&server) else {
        return;
    };
    let store = server.store();
    for (name, role) in [
        ("order-service-0", "worker"),
        ("order-service-1", "worker"),
        ("gateway-0", "gateway"),
    ] {
        store
            .put(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "labels": {"role": role}},
                "spec": {"containers": [{"name": "app", "image": "order-service:2.14.3"}]},
                "status": {"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "order-service:2.14.3", "imageID": ""}]},
            }))
            .expect("pod stored");
    }
    let workers = kubectl
        .ok(&["get", "pods", "-l", "role=worker", "-o", "name"])
        .await;
    assert_eq!(
        workers.lines().collect::<Vec<_>>(),
        ["pod/order-service-0", "pod/order-service-1"]
    );
    let table = kubectl.ok(&["get", "po"]).await;
    assert!(
        table.contains("1/1") && table.contains("Running"),
        "{table}"
    );
    assert!(
        kubectl
            .ok(&["delete", "pod", "gateway-0"])
            .await
            .contains("deleted")
    );
    assert!(store.get("v1", "Pod", Some(NS), "gateway-0").is_none());

    // `kubectl get -w` prints a new row when the object changes.
    let watchers = store.watchers();
    let mut watching = tokio::process::Command::new(&kubectl.bin)
        .args(["get", "deploy", "order-service", "-w"])
        .env("KUBECONFIG", &kubectl.kubeconfig)
        .env("HOME", kubectl.home.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    common::wait_until_async("kubectl's watch to open", WATCH_OPENS, || async {
        (store.watchers() > watchers).then_some(())
    })
    .await;
    let mut d = stored(&server, "apps/v1", "Deployment", "order-service");
    d["spec"]["replicas"] = json!(3);
    store.put(d).expect("scaled");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(watching.stdout.take().expect("stdout")).lines();
    let mut rows = Vec::new();
    // Bounded so that a missing row fails the test instead of hanging it.
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            let done = line.contains("3/3");
            rows.push(line);
            if done {
                break;
            }
        }
    })
    .await;
    let _ = watching.kill().await;
    assert!(rows[0].starts_with("NAME"), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("8/8")), "{rows:?}");
    assert!(rows.iter().any(|r| r.contains("3/3")), "{rows:?}");
    server.stop().await;
}
