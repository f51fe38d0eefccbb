//! PM-003's schema: applied once however many migrate at the same time,
//! its audit tables append-only, a newer schema refused.

mod common;

use common::postgres::FreshDatabase;
use warroom::database::migrate::{self, MIGRATIONS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_version_once() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let before = migrate::state(&db.connect().await).await.unwrap();
    assert_eq!(before.version, 0);
    assert_eq!(before.pending.len(), MIGRATIONS.len());

    let mut runs = Vec::new();
    for _ in 0..4 {
        let mut client = db.connect().await;
        runs.push(tokio::spawn(async move {
            migrate::migrate(&mut client).await.map(|a| a.len())
        }));
    }
    let mut applied = 0;
    for run in runs {
        applied += run.await.unwrap().unwrap();
    }
    assert_eq!(
        applied,
        MIGRATIONS.len(),
        "each version applied once in all"
    );
    let client = db.connect().await;
    let after = migrate::state(&client).await.unwrap();
    assert!(after.current(), "{after:?}");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM warroom_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, MIGRATIONS.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_append_only() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let mut client = db.connect().await;
    migrate::migrate(&mut client).await.unwrap();
    client
        .execute(
            "INSERT INTO order_events (order_id, event, value, holder) VALUES ('ord-1', 'status', 'PROCESSING', 'pod-7f')",
            &[],
        )
        .await
        .unwrap();
    for refused in [
        "UPDATE order_events SET value = 'FULFILLED'",
        "DELETE FROM order_events",
        "TRUNCATE order_events",
        "DELETE FROM inventory_events",
    ] {
        let err = client.batch_execute(refused).await.unwrap_err();
        let text = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(text.contains("append-only"), "{refused}: {err}");
    }
    let rows: i64 = client
        .query_one("SELECT count(*) FROM order_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_warroom_is_refused() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let mut client = db.connect().await;
    migrate::migrate(&mut client).await.unwrap();
    client
        .execute(
            "INSERT INTO warroom_migrations (version, name) VALUES ($1, 'from the future')",
            &[&(MIGRATIONS.len() as i32 + 1)],
        )
        .await
        .unwrap();
    let err = migrate::state(&client).await.unwrap_err();
    assert!(
        err.to_string().contains("newer than this warroom knows"),
        "{err}"
    );
    assert!(migrate::migrate(&mut client).await.is_err());
}
