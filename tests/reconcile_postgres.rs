//! `warroom reconcile --database` against a real PostgreSQL, one fresh
//! database per test: PM-003's double-processed order written through the
//! real order store (two holders, the second woken after the first
//! finished), repaired from the audit log with the repair recorded as such;
//! the ambiguous case listed and left alone; a second repair changing
//! nothing; the schema applied only with `--migrate`; an unreachable server
//! reported without the password.

mod common;

use common::postgres::FreshDatabase;
use warroom::drill::orders::{Claimed, Guard, OrderStatus, OrderStore, Writer, Written};
use warroom::drill::pg_orders::PgOrderStore;
use warroom::lock::LockMode;

/// A password planted in every URL: it must never be printed.
const PLANTED: &str = "Pl4nted-s3cret-PW";

/// `url` with the planted password as its userinfo's password (trust auth
/// accepts and ignores it).
fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PLANTED}@"),
        1,
    )
}

fn reconcile(args: &[&str]) -> common::postgres::Reconciled {
    common::postgres::reconcile(args, PLANTED)
}

/// An error report as one line (its wrapping and frame removed).
fn flat(text: &str) -> String {
    text.replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn writer(holder: &str) -> Writer<'_> {
    Writer {
        holder,
        mode: LockMode::Legacy,
        guard: Guard::Unfenced,
    }
}

/// PM-003 on one order: pod-7f reads the order, is paused; pod-3c processes
/// it to FULFILLED; pod-7f wakes and, from its stale read, reserves another
/// lot and creates another fulfillment record. With `finish` false neither
/// holder reaches FULFILLED (no chain to keep: ambiguous).
async fn double_process(store: &PgOrderStore, order: &str, finish: bool) {
    let (a, b) = (writer("pod-7f"), writer("pod-3c"));
    let Claimed::Order(stale) = store.claim(order, &a).await.unwrap() else {
        panic!("unfenced claims are never refused");
    };
    assert_eq!(stale.status, None);
    for (w, lot) in [(&b, "lot-0002"), (&a, "lot-0001")] {
        assert_eq!(
            store
                .set_status(order, w, OrderStatus::Processing)
                .await
                .unwrap(),
            Written::Accepted
        );
        store.reserve_lot(order, w, lot).await.unwrap();
        store.create_fulfillment(order, w, lot).await.unwrap();
        if finish {
            store
                .set_status(order, w, OrderStatus::Fulfilled)
                .await
                .unwrap();
        }
    }
}

/// One holder processes the order to the end.
async fn process(store: &PgOrderStore, order: &str, lot: &str, finish: bool) {
    let w = writer("pod-a1");
    store
        .set_status(order, &w, OrderStatus::Processing)
        .await
        .unwrap();
    store.reserve_lot(order, &w, lot).await.unwrap();
    if finish {
        store.create_fulfillment(order, &w, lot).await.unwrap();
        store
            .set_status(order, &w, OrderStatus::Fulfilled)
            .await
            .unwrap();
    }
}

/// Every row of every table, to compare before and after.
async fn snapshot(client: &tokio_postgres::Client) -> Vec<String> {
    let mut out = Vec::new();
    for (table, order) in [
        ("orders", "order_id"),
        ("inventory_lots", "lot_id"),
        ("inventory_reservations", "reservation_id"),
        ("fulfillment_records", "fulfillment_id"),
        ("order_events", "event_id"),
        ("inventory_events", "event_id"),
    ] {
        for row in client
            .query(
                &format!("SELECT t::text FROM {table} t ORDER BY {order}"),
                &[],
            )
            .await
            .unwrap()
        {
            out.push(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    out
}

async fn prepared(db: &FreshDatabase) -> (tokio_postgres::Client, PgOrderStore) {
    let mut client = db.connect().await;
    warroom::drill::pg_reconcile::prepare(&mut client)
        .await
        .unwrap();
    let store = PgOrderStore::connect(&db.url).await.unwrap();
    (client, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_keeps_the_first_chain_records_itself_and_a_second_run_changes_nothing() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let (client, store) = prepared(&db).await;
    double_process(&store, "ord-9927431", true).await;
    double_process(&store, "ord-9927432", false).await;
    process(&store, "ord-1000001", "lot-0003", true).await;
    process(&store, "ord-1000002", "lot-0004", false).await;
    let url = with_password(&db.url);

    let scan = reconcile(&["--database", &url, "--output", "json"]);
    let report = scan.json();
    assert_eq!(scan.code, 1, "{report:#}");
    assert_eq!(report["orders_scanned"], 4, "{report:#}");
    assert_eq!(report["consistent"], 1, "{report:#}");
    assert_eq!(report["in_progress"], 1, "{report:#}");
    assert_eq!(report["inconsistent"], 2, "{report:#}");
    assert_eq!(report["repairable"], 1, "{report:#}");
    assert_eq!(report["ambiguous"], 1, "{report:#}");
    let orders = report["orders"].as_array().unwrap();
    let pm003 = orders.iter().find(|o| o["order"] == "ord-9927431").unwrap();
    let problems = pm003["problems"].to_string();
    assert!(problems.contains("two_lots"), "{pm003:#}");
    assert!(problems.contains("two_fulfillments"), "{pm003:#}");
    assert_eq!(pm003["action"], "repairable");
    let unfinished = orders.iter().find(|o| o["order"] == "ord-9927432").unwrap();
    assert_eq!(unfinished["action"], "ambiguous");
    assert!(
        unfinished["decide"]
            .as_str()
            .unwrap()
            .contains("no worker completed"),
        "{unfinished:#}"
    );
    // The scan changed nothing.
    let before = snapshot(&client).await;

    let repaired = reconcile(&["--database", &url, "--repair", "--output", "json"]);
    let report = repaired.json();
    assert_eq!(report["repaired"], 1, "{report:#}");
    assert_eq!(report["ambiguous"], 1, "{report:#}");
    assert_eq!(repaired.code, 1, "the ambiguous order is left: {report:#}");
    let after = snapshot(&client).await;
    assert_ne!(before, after);

    // The first chain to reach FULFILLED (pod-3c, lot-0002) is kept.
    let row = client
        .query_one(
            "SELECT o.status, o.lot_id, f.holder FROM orders o \
             JOIN fulfillment_records f ON f.fulfillment_id = o.fulfillment_id \
             WHERE o.order_id = 'ord-9927431'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "FULFILLED");
    assert_eq!(row.get::<_, String>(1), "lot-0002");
    assert_eq!(row.get::<_, String>(2), "pod-3c");
    let states: Vec<(String, String)> = client
        .query(
            "SELECT lot_id, state FROM inventory_reservations \
             WHERE order_id = 'ord-9927431' ORDER BY lot_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        vec![
            ("lot-0001".to_string(), "released".to_string()),
            ("lot-0002".to_string(), "held".to_string())
        ]
    );
    let active: i64 = client
        .query_one(
            "SELECT count(*) FROM fulfillment_records \
             WHERE order_id = 'ord-9927431' AND state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active, 1);
    // The released unit is back in stock, and the repair is in the audit log.
    let lot1: i64 = client
        .query_one(
            "SELECT initial_stock - stock FROM inventory_lots WHERE lot_id = 'lot-0001'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lot1, 1, "ord-9927432 still holds one unit of lot-0001");
    let released: i64 = client
        .query_one(
            "SELECT count(*) FROM inventory_events WHERE order_id = 'ord-9927431' \
             AND kind = 'repair' AND event = 'released' AND lot_id = 'lot-0001' \
             AND quantity = -1 AND holder = 'reconcile'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, 1);
    let cancelled: i64 = client
        .query_one(
            "SELECT count(*) FROM order_events WHERE order_id = 'ord-9927431' \
             AND kind = 'repair' AND event = 'fulfillment_cancelled'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cancelled, 1);
    // The ambiguous order was not touched.
    let touched: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM order_events WHERE order_id = 'ord-9927432' \
             AND kind = 'repair') + (SELECT count(*) FROM inventory_events \
             WHERE order_id = 'ord-9927432' AND kind = 'repair')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(touched, 0);

    // A second repair: the same ambiguous order listed, nothing changed.
    let again = reconcile(&["--database", &url, "--repair", "--output", "json"]);
    let report = again.json();
    assert_eq!(again.code, 1, "{report:#}");
    assert_eq!(report["repaired"], 0, "{report:#}");
    assert_eq!(report["inconsistent"], 1, "{report:#}");
    assert_eq!(report["orders"][0]["order"], "ord-9927432");
    assert_eq!(snapshot(&client).await, after);

    // Text output says what a person must decide.
    let text = reconcile(&["--database", &url]);
    assert!(
        text.stdout.contains("decide: no worker completed"),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_stale_holder_leaves_nothing_to_reconcile() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let (client, store) = prepared(&db).await;
    let order = "ord-9927431";
    let fenced = |holder, token| Writer {
        holder,
        mode: LockMode::Fenced,
        guard: Guard::Fenced {
            token,
            colocated_lock: None,
        },
    };
    let (a, b) = (fenced("pod-7f", 1), fenced("pod-3c", 2));
    assert!(matches!(
        store.claim(order, &a).await.unwrap(),
        Claimed::Order(_)
    ));
    assert!(matches!(
        store.claim(order, &b).await.unwrap(),
        Claimed::Order(_)
    ));
    store
        .set_status(order, &b, OrderStatus::Processing)
        .await
        .unwrap();
    store.reserve_lot(order, &b, "lot-0002").await.unwrap();
    store
        .create_fulfillment(order, &b, "lot-0002")
        .await
        .unwrap();
    store
        .set_status(order, &b, OrderStatus::Fulfilled)
        .await
        .unwrap();
    assert!(matches!(
        store.reserve_lot(order, &a, "lot-0001").await.unwrap(),
        Written::Rejected { fence: 2 }
    ));
    let run = reconcile(&["--database", &with_password(&db.url), "--output", "json"]);
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}");
    assert_eq!(report["consistent"], 1, "{report:#}");
    assert_eq!(report["inconsistent"], 0, "{report:#}");
    // The refused write is in the audit log as such, and left out.
    let rejected: i64 = client
        .query_one(
            "SELECT count(*) FROM inventory_events WHERE kind = 'rejected'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 1);
}

#[test]
fn the_schema_is_applied_only_with_migrate() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let url = with_password(&db.url);
    let refused = reconcile(&["--database", &url]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    let said = flat(&refused.stderr);
    assert!(said.contains("run again with --migrate"), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    let refused = reconcile(&["--database", &url, "--repair"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);

    let migrated = reconcile(&["--database", &url, "--migrate", "--output", "json"]);
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    assert!(
        migrated
            .stderr
            .contains("applied migration 0001 pm003_tables"),
        "{}",
        migrated.stderr
    );
    assert_eq!(migrated.json()["orders_scanned"], 0);
    let current = reconcile(&["--database", &url, "--migrate"]);
    assert_eq!(current.code, 0, "{}", current.stderr);
    assert!(
        current.stderr.contains("no migration to apply"),
        "{}",
        current.stderr
    );
    let plain = reconcile(&["--database", &url]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
}

#[test]
fn unreachable_and_invalid_databases_exit_with_the_documented_codes() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgres://postgres:{PLANTED}@127.0.0.1:{port}/warroom");
    let run = reconcile(&["--database", &url]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        flat(&run.stderr).contains("cannot reach PostgreSQL at"),
        "{}",
        run.stderr
    );
    let run = reconcile(&["--database", &url, "--repair", "--migrate"]);
    assert_eq!(run.code, 4, "{}", run.stderr);

    let run = reconcile(&["--database", "http://example.com/x"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = reconcile(&["--database", &url, "--redis", "redis://127.0.0.1:1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = reconcile(&["--redis", "redis://127.0.0.1:1", "--migrate"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = reconcile(&[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--database"), "{}", run.stderr);
}
