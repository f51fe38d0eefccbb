//! Redlock's events against three real redis-servers: `acquired` and
//! `extended` go through the sink, `released` and `lost` are appended by the
//! first node's compare-and-delete script, and the stream keeps each lease's
//! events in order, a successor's after its predecessor's release.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use warroom_lock::event::{DEFAULT_STREAM, EventKind, LockEvent};
use warroom_lock::{LockOptions, Redlock, Release};

/// A redis-server on a free loopback port, killed on drop.
struct Node {
    child: Child,
    port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn start_redis() -> Node {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (apt-get install -y redis-server)");
    let node = Node { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    node
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn events(url: &str) -> Vec<(EventKind, String, Option<u64>)> {
    let reply: redis::streams::StreamRangeReply =
        conn(url).await.xrange_all(DEFAULT_STREAM).await.unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let fields: Vec<(Vec<u8>, Vec<u8>)> = entry
                .map
                .iter()
                .map(|(k, v)| {
                    let v: Vec<u8> = redis::from_redis_value_ref(v).unwrap();
                    (k.as_bytes().to_vec(), v)
                })
                .collect();
            let event =
                LockEvent::from_fields(fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
                    .unwrap();
            (event.kind, event.holder, event.token)
        })
        .collect()
}

/// Waits until `check` holds, for at most `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn release_appends_its_event_on_the_first_node_after_the_lease_events() {
    let nodes: Vec<Node> = (0..3).map(|_| start_redis()).collect();
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let ttl = Duration::from_secs(2);
    let a = Redlock::connect(&urls, LockOptions::new(ttl, "pod-7f"))
        .await
        .unwrap();
    let b = Redlock::connect(&urls, LockOptions::new(ttl, "pod-3c"))
        .await
        .unwrap();
    let key = "lock:ord-9927431";

    let first = a.acquire(key, Duration::from_secs(2)).await.unwrap();
    first.extend().await.unwrap();
    let t1 = first.token().get();
    assert_eq!(first.release().await.unwrap(), Release::Released);
    // Every node's key goes, those answering after the quorum included.
    for url in &urls {
        let c = conn(url).await;
        wait_for(
            "the key to go on every node",
            Duration::from_secs(5),
            || {
                let mut c = c.clone();
                async move { !c.exists::<_, bool>(key).await.unwrap() }
            },
        )
        .await;
    }

    let second = b.acquire(key, Duration::from_secs(2)).await.unwrap();
    let t2 = second.token().get();
    assert!(t2 > t1, "{t2} after {t1}");
    assert_eq!(second.release().await.unwrap(), Release::Released);

    let expected = vec![
        (EventKind::Acquired, "pod-7f".to_string(), Some(t1)),
        (EventKind::Extended, "pod-7f".to_string(), Some(t1)),
        (EventKind::Released, "pod-7f".to_string(), Some(t1)),
        (EventKind::Acquired, "pod-3c".to_string(), Some(t2)),
        (EventKind::Released, "pod-3c".to_string(), Some(t2)),
    ];
    assert_eq!(events(&urls[0]).await, expected);
    // Nothing on the other nodes' streams.
    for url in &urls[1..] {
        assert!(events(url).await.is_empty(), "events on {url}");
    }
}

#[tokio::test]
async fn a_lease_released_after_its_deadline_is_reported_lost() {
    let nodes: Vec<Node> = (0..3).map(|_| start_redis()).collect();
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let ttl = Duration::from_millis(100);
    let a = Redlock::connect(&urls, LockOptions::new(ttl, "pod-7f"))
        .await
        .unwrap();
    let lease = a
        .acquire("lock:ord-9927432", Duration::from_secs(2))
        .await
        .unwrap();
    let token = lease.token().get();
    wait_for("the lease to lapse", Duration::from_secs(5), || {
        let valid = lease.is_valid();
        async move { !valid }
    })
    .await;
    assert_eq!(lease.release().await.unwrap(), Release::AlreadyLost);
    assert_eq!(
        events(&urls[0]).await,
        vec![
            (EventKind::Acquired, "pod-7f".to_string(), Some(token)),
            (EventKind::Lost, "pod-7f".to_string(), Some(token)),
        ]
    );
}
