//! One order update under a fenced lease: the shape every write path that
//! consumes the lock takes. `REDIS_URL` names the node (default: local).

use std::time::Duration;

use warroom_lock::fence::FencedStore;
use warroom_lock::{FencedLock, LockOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let lock =
        FencedLock::connect(&url, LockOptions::new(Duration::from_millis(500), "pod-7f")).await?;
    let store = FencedStore::connect(&url, "pod-7f", None).await?;

    let lease = lock
        .acquire("lock:ord-9927431", Duration::from_secs(2))
        .await?;
    // The write carries the token; the store refuses it if a newer holder wrote.
    let outcome = store
        .write("order:ord-9927431", lease.token(), "FULFILLED")
        .await?;
    println!("fencing token {}: write {outcome:?}", lease.token().get());
    lease.release().await?;
    Ok(())
}
