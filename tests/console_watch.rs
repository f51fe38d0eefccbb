//! The console follows the cluster through watches: a change made through
//! the API reaches its store within a deadline with no poll in between,
//! the source goes down when the API server goes away and comes back when
//! it does; and the local cluster server ends a watch that allows bookmarks
//! with one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warroom::cluster::ClusterServer;
use warroom::console::collect::{self, ClusterObjects, Update};
use warroom::console::store::ClusterView;
use warroom::kube::{KubeAccess, KubeTarget, ObjectRef};

/// Waits for a cluster update that `accept` takes, within `deadline`.
async fn next_cluster<T>(
    updates: &mut mpsc::Receiver<Update>,
    deadline: Duration,
    what: &str,
    mut accept: impl FnMut(&Result<ClusterView, String>) -> Option<T>,
) -> T {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let update = tokio::time::timeout_at(until, updates.recv())
            .await
            .unwrap_or_else(|_| panic!("no cluster update within {deadline:?}: {what}"))
            .expect("the collector is running");
        if let Update::Cluster { result, .. } = update
            && let Some(found) = accept(&result)
        {
            return found;
        }
    }
}

fn desired(result: &Result<ClusterView, String>) -> Option<i64> {
    result
        .as_ref()
        .ok()
        .and_then(|view| view.deployment.as_ref())
        .map(|d| d.desired)
}

async fn connect(server: &ClusterServer, dir: &std::path::Path) -> Arc<KubeAccess> {
    let path = dir.join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    Arc::new(
        KubeAccess::connect(&KubeTarget {
            kubeconfig: Some(path),
            context: None,
            namespace: Some("orders".into()),
        })
        .await
        .unwrap(),
    )
}

async fn set_replicas(kube: &KubeAccess, replicas: i64) {
    let object = ObjectRef::namespaced("apps/v1", "Deployment", "orders", "order-service");
    let mut current = kube.get(&object).await.unwrap().expect("seeded deployment");
    current["spec"]["replicas"] = serde_json::json!(replicas);
    kube.replace(&object, &current, false).await.unwrap();
}

/// Requests that read state without watching: lists and gets.
fn reads(server: &ClusterServer) -> Vec<String> {
    server
        .requests()
        .entries()
        .into_iter()
        .filter(|r| r.method == "GET" && !r.path_and_query.contains("watch=true"))
        .map(|r| r.path_and_query)
        .collect()
}

#[tokio::test]
async fn a_replica_change_reaches_the_store_through_the_watch_not_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let kube = connect(&server, dir.path()).await;
    let (tx, mut updates) = mpsc::channel(64);
    let stop = CancellationToken::new();
    // A refresh interval far longer than the test: only the watch can
    // bring the change.
    tokio::spawn(collect::cluster(
        kube.clone(),
        ClusterObjects::pm003("orders"),
        Duration::from_secs(3_600),
        tx,
        stop.clone(),
    ));
    let first = next_cluster(&mut updates, Duration::from_secs(10), "first view", desired).await;
    assert_eq!(first, 8);
    let reads_before = reads(&server);
    // The watches are open before the write (the view came after them).
    set_replicas(&kube, 3).await;
    let after_write = reads(&server).len();
    next_cluster(
        &mut updates,
        Duration::from_secs(3),
        "replicas 3 on the console",
        |r| (desired(r) == Some(3)).then_some(()),
    )
    .await;
    let reads_after = reads(&server);
    assert_eq!(
        reads_after.len(),
        after_write,
        "the console read the cluster instead of watching it: {:?}",
        &reads_after[reads_before.len()..]
    );
    let watches = server
        .requests()
        .entries()
        .into_iter()
        .filter(|r| r.path_and_query.contains("watch=true"))
        .count();
    assert!(watches >= 4, "one watch per object, got {watches}");
    stop.cancel();
    server.stop().await;
}

#[tokio::test]
async fn the_source_goes_down_when_the_server_goes_away_and_comes_back_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.addr();
    let kube = connect(&server, dir.path()).await;
    let (tx, mut updates) = mpsc::channel(64);
    let stop = CancellationToken::new();
    tokio::spawn(collect::cluster(
        kube.clone(),
        ClusterObjects::pm003("orders"),
        Duration::from_secs(3_600),
        tx,
        stop.clone(),
    ));
    next_cluster(&mut updates, Duration::from_secs(10), "first view", desired).await;
    server.stop().await;
    let reason = next_cluster(
        &mut updates,
        Duration::from_secs(10),
        "the source down",
        |r| r.as_ref().err().cloned(),
    )
    .await;
    assert!(!reason.is_empty());
    // The server comes back on the same address, with replicas changed
    // while the console could not see.
    let back = ClusterServer::start_seeded(addr).await.unwrap();
    let kube_back = connect(&back, dir.path()).await;
    set_replicas(&kube_back, 2).await;
    next_cluster(
        &mut updates,
        Duration::from_secs(15),
        "the view again, from the server that came back",
        |r| (desired(r) == Some(2)).then_some(()),
    )
    .await;
    stop.cancel();
    back.stop().await;
}

#[tokio::test]
async fn a_watch_allowing_bookmarks_ends_with_one_at_the_latest_revision() {
    let server = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let revision = server.store().revision();
    let url = format!(
        "{}/apis/apps/v1/namespaces/orders/deployments?watch=true&resourceVersion={revision}\
         &allowWatchBookmarks=true&timeoutSeconds=1",
        server.url()
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = client
        .get(&url)
        .bearer_auth(warroom::cluster::TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let last: serde_json::Value =
        serde_json::from_str(body.lines().last().expect("a line")).unwrap();
    assert_eq!(last["type"], "BOOKMARK", "{body}");
    assert_eq!(last["object"]["kind"], "Deployment");
    assert_eq!(
        last["object"]["metadata"]["resourceVersion"],
        revision.to_string()
    );
    // Without allowWatchBookmarks, none (kubectl get -w does not ask).
    let plain = client
        .get(url.replace("&allowWatchBookmarks=true", ""))
        .bearer_auth(warroom::cluster::TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!plain.contains("BOOKMARK"), "{plain}");
    server.stop().await;
}
