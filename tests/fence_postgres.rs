//! The drill's PostgreSQL order store in PM-003's tables, each test in a
//! fresh database: PM-003's schedule with a real redis-server and real
//! leases (a holder paused past its TTL corrupts the tables when unguarded,
//! is refused when fenced), interleavings of several fenced holders, and a
//! server that goes away.

mod common;

use std::time::Duration;

use common::postgres::FreshDatabase;
use proptest::prelude::*;
use warroom::drill::orders::{
    Claimed, Guard, Optimistic, OrderStatus, OrderStore, OrderView, Writer, Written, lot_id,
};
use warroom::drill::pg_orders::PgOrderStore;
use warroom::lock::legacy::LegacyLock;
use warroom::lock::{FencedLock, LockMode, LockOptions};
use warroom::redis_node::RedisNode;

const ORDER: &str = "ord-9927431";
/// The lease's TTL and the pause that outlasts it (PM-003: 200 ms TTL,
/// 280–400 ms GC pauses).
const TTL: Duration = Duration::from_millis(200);
const PAUSE: Duration = Duration::from_millis(400);

async fn store(db: &FreshDatabase) -> PgOrderStore {
    let store = PgOrderStore::connect(&db.url).await.expect("connects");
    store.migrate().await.expect("migrates");
    store.seed_lots().await.expect("seeds");
    store
}

fn redis() -> Option<RedisNode> {
    common::require_tool("redis-server", "redis-server")?;
    Some(RedisNode::start().expect("redis-server starts"))
}

fn writer<'a>(holder: &'a str, token: Option<u64>) -> Writer<'a> {
    Writer {
        holder,
        mode: if token.is_some() {
            LockMode::Fenced
        } else {
            LockMode::Legacy
        },
        guard: match token {
            Some(token) => Guard::Fenced {
                token,
                colocated_lock: None,
            },
            None => Guard::Unfenced,
        },
    }
}

/// The rest of the pipeline from a read (the worker's decisions are taken
/// from what it read when it started); every write's outcome, in order.
async fn pipeline(
    store: &PgOrderStore,
    w: &Writer<'_>,
    view: &OrderView,
    lot: &str,
) -> Vec<(&'static str, Written)> {
    let mut done = vec![(
        "status PROCESSING",
        store
            .set_status(ORDER, w, OrderStatus::Processing)
            .await
            .unwrap(),
    )];
    if view.lot.is_none() {
        done.push(("reserve", store.reserve_lot(ORDER, w, lot).await.unwrap()));
    }
    if view.fulfillment.is_none() {
        let (written, _) = store.create_fulfillment(ORDER, w, lot).await.unwrap();
        done.push(("fulfillment", written));
    }
    done.push((
        "status FULFILLED",
        store
            .set_status(ORDER, w, OrderStatus::Fulfilled)
            .await
            .unwrap(),
    ));
    done
}

/// Every row of the three tables PM-003 corrupted, and the lots' stock,
/// without timestamps.
async fn tables(client: &tokio_postgres::Client) -> Vec<String> {
    let mut out = Vec::new();
    for (name, sql) in [
        (
            "orders",
            "SELECT concat_ws('|', order_id, status, lot_id, fulfillment_id, fence) FROM orders ORDER BY order_id",
        ),
        (
            "reservation",
            "SELECT concat_ws('|', order_id, lot_id, holder, token, state) FROM inventory_reservations ORDER BY reservation_id",
        ),
        (
            "fulfillment",
            "SELECT concat_ws('|', order_id, lot_id, holder, token, state) FROM fulfillment_records ORDER BY created_at",
        ),
        (
            "lot",
            "SELECT concat_ws('|', lot_id, stock) FROM inventory_lots WHERE stock <> initial_stock ORDER BY lot_id",
        ),
    ] {
        for row in client.query(sql, &[]).await.unwrap() {
            out.push(format!("{name} {}", row.get::<_, String>(0)));
        }
    }
    out
}

/// `(kind, event, value, holder)` of the order's audit rows, in order.
async fn order_events(client: &tokio_postgres::Client) -> Vec<(String, String, String, String)> {
    client
        .query(
            "SELECT kind, event, coalesce(value, ''), holder FROM order_events WHERE order_id = $1 ORDER BY event_id",
            &[&ORDER],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pm003_unguarded_a_paused_holder_corrupts_the_three_tables() {
    let Some(node) = redis() else { return };
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let store = store(&db).await;
    let client = db.connect().await;
    let key = format!("lock:{ORDER}");
    let lock_a = LegacyLock::connect(&node.url(), LockOptions::new(TTL, "pod-7f"))
        .await
        .unwrap();
    let lock_b = LegacyLock::connect(&node.url(), LockOptions::new(TTL, "pod-3c"))
        .await
        .unwrap();

    // pod-7f takes the lock and reads the order.
    let _lease_a = lock_a.acquire(&key, Duration::from_secs(2)).await.unwrap();
    let a = writer("pod-7f", None);
    let Claimed::Order(view_a) = store.claim(ORDER, &a).await.unwrap() else {
        panic!("an unguarded claim is never refused");
    };
    assert_eq!(view_a, OrderView::default());
    // pod-3c waits for the lock, gets it when pod-7f's TTL runs out, and
    // processes the order.
    let b = {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let lease = lock_b.acquire(&key, Duration::from_secs(5)).await.unwrap();
            let b = writer("pod-3c", None);
            let Claimed::Order(view) = store.claim(ORDER, &b).await.unwrap() else {
                panic!("an unguarded claim is never refused");
            };
            let done = pipeline(&store, &b, &view, &lot_id(3)).await;
            lock_b.release(lease).await.unwrap();
            done
        })
    };
    // pod-7f's GC pause, past its TTL.
    tokio::time::sleep(PAUSE).await;
    let done_b = b.await.unwrap();
    assert!(
        done_b.iter().all(|(_, w)| *w == Written::Accepted),
        "{done_b:?}"
    );
    // pod-7f wakes up and goes on from its stale read: every write lands.
    let done_a = pipeline(&store, &a, &view_a, &lot_id(17)).await;
    assert!(
        done_a.iter().all(|(_, w)| *w == Written::Accepted),
        "{done_a:?}"
    );

    // PM-003's corruption: two reservations with different lot IDs, two
    // fulfillment records, the order's row pointing at pod-7f's lot while
    // pod-3c's fulfillment ships from another, and a status history that
    // goes from FULFILLED back to PROCESSING.
    let rows = tables(&client).await;
    let fids: Vec<String> = client
        .query(
            "SELECT fulfillment_id FROM fulfillment_records ORDER BY created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(fids.len(), 2);
    assert_eq!(
        rows,
        vec![
            format!("orders {ORDER}|FULFILLED|lot-0017|{}|0", fids[1]),
            format!("reservation {ORDER}|lot-0003|pod-3c|held"),
            format!("reservation {ORDER}|lot-0017|pod-7f|held"),
            format!("fulfillment {ORDER}|lot-0003|pod-3c|active"),
            format!("fulfillment {ORDER}|lot-0017|pod-7f|active"),
            "lot lot-0003|999999".to_string(),
            "lot lot-0017|999999".to_string(),
        ]
    );
    let statuses: Vec<(String, String)> = order_events(&client)
        .await
        .into_iter()
        .filter(|(kind, event, ..)| kind == "change" && event == "status")
        .map(|(_, _, value, holder)| (value, holder))
        .collect();
    let s = |v: &str, h: &str| (v.to_string(), h.to_string());
    assert_eq!(
        statuses,
        vec![
            s("PROCESSING", "pod-3c"),
            s("FULFILLED", "pod-3c"),
            s("PROCESSING", "pod-7f"),
            s("FULFILLED", "pod-7f"),
        ]
    );
    let inventory: i64 = client
        .query_one(
            "SELECT count(*) FROM inventory_events WHERE kind = 'change' AND event = 'reserved'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(inventory, 2, "the audit log has both reservations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pm003_fenced_the_paused_holder_is_refused_and_changes_nothing() {
    let Some(node) = redis() else { return };
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let store = store(&db).await;
    let client = db.connect().await;
    let key = format!("lock:{ORDER}");
    let lock_a = FencedLock::connect(&node.url(), LockOptions::new(TTL, "pod-7f"))
        .await
        .unwrap();
    let lock_b = FencedLock::connect(&node.url(), LockOptions::new(TTL, "pod-3c"))
        .await
        .unwrap();

    let lease_a = lock_a.acquire(&key, Duration::from_secs(2)).await.unwrap();
    let token_a = lease_a.token().get();
    let a = writer("pod-7f", Some(token_a));
    let Claimed::Order(view_a) = store.claim(ORDER, &a).await.unwrap() else {
        panic!("the first holder's claim was refused");
    };
    assert_eq!(view_a, OrderView::default());
    let b = {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let lease = lock_b.acquire(&key, Duration::from_secs(5)).await.unwrap();
            let token = lease.token().get();
            let b = writer("pod-3c", Some(token));
            let Claimed::Order(view) = store.claim(ORDER, &b).await.unwrap() else {
                panic!("the newer holder's claim was refused");
            };
            let done = pipeline(&store, &b, &view, &lot_id(3)).await;
            lease.release().await.unwrap();
            (token, done)
        })
    };
    tokio::time::sleep(PAUSE).await;
    assert!(!lease_a.is_valid(), "the pause outlasted the lease");
    let (token_b, done_b) = b.await.unwrap();
    assert!(token_b > token_a);
    assert!(
        done_b.iter().all(|(_, w)| *w == Written::Accepted),
        "{done_b:?}"
    );
    let before = tables(&client).await;

    // pod-7f wakes up: every one of its writes is refused, nothing changes.
    let done_a = pipeline(&store, &a, &view_a, &lot_id(17)).await;
    assert_eq!(done_a.len(), 4);
    for (step, written) in &done_a {
        assert_eq!(*written, Written::Rejected { fence: token_b }, "{step}");
    }
    assert_eq!(
        store.claim(ORDER, &a).await.unwrap(),
        Claimed::Rejected { fence: token_b }
    );
    let after = tables(&client).await;
    assert_eq!(before, after, "a stale holder's write changed a table");
    assert!(!after.iter().any(|r| r.contains("pod-7f")), "{after:?}");
    assert!(after.contains(&format!(
        "reservation {ORDER}|lot-0003|pod-3c|{token_b}|held"
    )));
    assert!(
        after
            .iter()
            .any(|r| r.starts_with(&format!("orders {ORDER}|FULFILLED|lot-0003|ful-")))
    );
    // The audit log: pod-7f's claim created the order under its valid lease;
    // everything it tried after its pause is there as `rejected`, and no
    // stale change.
    let events = order_events(&client).await;
    let from_a: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.3 == "pod-7f")
        .map(|e| (e.0.clone(), e.1.clone()))
        .collect();
    let e = |k: &str, ev: &str| (k.to_string(), ev.to_string());
    assert_eq!(
        from_a,
        vec![
            e("change", "status"),
            e("rejected", "status"),
            e("rejected", "fulfillment_created"),
            e("rejected", "status"),
            e("rejected", "claim"),
        ]
    );
    let stale_inventory: Vec<(String, i64)> = client
        .query(
            "SELECT kind, quantity FROM inventory_events WHERE holder = 'pod-7f'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stale_inventory, vec![("rejected".to_string(), 0)]);
}

/// One holder's turn in an interleaving: which holder, which order.
#[derive(Debug, Clone)]
struct Case {
    /// Per order, each holder's token (distinct, shuffled).
    tokens: Vec<Vec<u64>>,
    /// The schedule: (holder, order) taking its next step.
    schedule: Vec<(usize, usize)>,
}

const HOLDERS: usize = 3;
const ORDERS: usize = 2;
const STEPS: usize = 5;

fn cases() -> impl Strategy<Value = Case> {
    let tokens = proptest::collection::vec(
        Just((1..=HOLDERS as u64).collect::<Vec<_>>()).prop_shuffle(),
        ORDERS,
    );
    let schedule = Just(
        (0..HOLDERS)
            .flat_map(|h| (0..ORDERS).flat_map(move |o| std::iter::repeat_n((h, o), STEPS)))
            .collect::<Vec<_>>(),
    )
    .prop_shuffle();
    (tokens, schedule).prop_map(|(tokens, schedule)| Case { tokens, schedule })
}

/// Runs a schedule; each holder's steps on an order are claim, PROCESSING,
/// reserve, fulfillment, FULFILLED, whatever happened to its earlier steps
/// (a stale holder that went on writing). Checks every outcome against the
/// fence rule and every table against the accepted writes.
async fn check(store: &PgOrderStore, client: &tokio_postgres::Client, run: u32, case: &Case) {
    let names: Vec<String> = (0..HOLDERS).map(|h| format!("pod-{h}")).collect();
    let orders: Vec<String> = (0..ORDERS).map(|o| format!("ord-{run}-{o}")).collect();
    let mut next = vec![vec![0usize; ORDERS]; HOLDERS];
    let mut fence = [0u64; ORDERS];
    // Per order: tokens of accepted writes, in execution order, per kind.
    let mut accepted: Vec<Vec<u64>> = vec![Vec::new(); ORDERS];
    let mut reserved: Vec<Vec<u64>> = vec![Vec::new(); ORDERS];
    let mut fulfilled: Vec<Vec<u64>> = vec![Vec::new(); ORDERS];
    for &(h, o) in &case.schedule {
        let token = case.tokens[o][h];
        let w = writer(&names[h], Some(token));
        let order = &orders[o];
        let lot = lot_id(h);
        let step = next[h][o];
        next[h][o] += 1;
        let written = match step {
            0 => match store.claim(order, &w).await.unwrap() {
                Claimed::Order(_) => Written::Accepted,
                Claimed::Rejected { fence } => Written::Rejected { fence },
            },
            1 => store
                .set_status(order, &w, OrderStatus::Processing)
                .await
                .unwrap(),
            2 => store.reserve_lot(order, &w, &lot).await.unwrap(),
            3 => store.create_fulfillment(order, &w, &lot).await.unwrap().0,
            _ => store
                .set_status(order, &w, OrderStatus::Fulfilled)
                .await
                .unwrap(),
        };
        if token >= fence[o] {
            assert_eq!(
                written,
                Written::Accepted,
                "{order} step {step} token {token}"
            );
            fence[o] = token;
            accepted[o].push(token);
            match step {
                2 => reserved[o].push(token),
                3 => fulfilled[o].push(token),
                _ => {}
            }
        } else {
            assert_eq!(
                written,
                Written::Rejected { fence: fence[o] },
                "{order} step {step} token {token}"
            );
        }
    }
    for o in 0..ORDERS {
        let order = &orders[o];
        assert!(accepted[o].is_sorted(), "{order}: {:?}", accepted[o]);
        let tokens = |sql: &str| {
            let sql = sql.to_string();
            async move {
                client
                    .query(&sql, &[order])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, i64>(0) as u64)
                    .collect::<Vec<u64>>()
            }
        };
        assert_eq!(
            tokens("SELECT token FROM inventory_reservations WHERE order_id = $1 ORDER BY reservation_id").await,
            reserved[o],
            "{order}: reservations"
        );
        assert_eq!(
            tokens("SELECT token FROM fulfillment_records WHERE order_id = $1 ORDER BY created_at")
                .await,
            fulfilled[o],
            "{order}: fulfillment records"
        );
        let changes = tokens(
            "SELECT token FROM order_events WHERE order_id = $1 AND kind = 'change' ORDER BY event_id",
        )
        .await;
        assert!(changes.is_sorted(), "{order}: audit tokens {changes:?}");
        assert_eq!(
            tokens("SELECT fence FROM orders WHERE order_id = $1").await,
            vec![fence[o]]
        );
        let stale: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM inventory_reservations r WHERE r.order_id = $1 AND r.token < \
                   (SELECT max(token) FROM inventory_reservations WHERE order_id = $1 AND reservation_id < r.reservation_id)) \
                 + (SELECT count(*) FROM order_events e WHERE e.order_id = $1 AND e.kind = 'change' AND e.token < \
                   (SELECT max(token) FROM order_events WHERE order_id = $1 AND kind = 'change' AND event_id < e.event_id))",
                &[order],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            stale, 0,
            "{order}: a row written under a lower token after a higher one"
        );
    }
}

#[test]
fn interleaved_fenced_holders_never_land_a_stale_write() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, client) = runtime.block_on(async { (store(&db).await, db.connect().await) });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let run = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&cases(), |case| {
            let n = run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(check(&store, &client, n, &case));
            Ok(())
        })
        .unwrap();
    drop(client);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_runs_fulfil_each_order_once() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let store = store(&db).await;
    let client = db.connect().await;
    let mut runs = Vec::new();
    for holder in ["pod-1", "pod-2", "pod-3"] {
        let store = store.clone();
        runs.push(tokio::spawn(async move {
            store
                .process_optimistic(ORDER, holder, Duration::from_millis(20))
                .await
        }));
    }
    let mut fulfilled = 0;
    for run in runs {
        match run.await.unwrap().unwrap() {
            Optimistic::Fulfilled { .. } => fulfilled += 1,
            Optimistic::AlreadyFulfilled => {}
        }
    }
    assert_eq!(fulfilled, 1, "exactly one optimistic run commits the order");
    let rows = tables(&client).await;
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("reservation")).count(),
        1,
        "{rows:?}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("fulfillment")).count(),
        1,
        "{rows:?}"
    );
    assert!(
        rows[0].starts_with(&format!("orders {ORDER}|FULFILLED|lot-")),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_an_error_and_no_password_is_shown() {
    // Nothing listens on a free port: an error naming the host, not the password.
    let port = warroom::redis_node::free_port().unwrap();
    let url = format!("postgres://postgres:s3cr3t-pw@127.0.0.1:{port}/warroom");
    let err = PgOrderStore::connect(&url).await.unwrap_err().to_string();
    assert!(!err.contains("s3cr3t-pw"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let err = PgOrderStore::connect("postgres://postgres:s3cr3t-pw@127.0.0.1:notaport/x")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cr3t-pw"), "{err}");

    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let store = store(&db).await;
    let client = db.connect().await;
    let w = writer("pod-7f", Some(1));
    assert!(matches!(
        store.claim(ORDER, &w).await,
        Ok(Claimed::Order(_))
    ));
    // The server drops the store's connections.
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    // The next calls fail or reconnect; none panics, and the store recovers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.set_status(ORDER, &w, OrderStatus::Processing).await {
            Ok(written) => {
                assert_eq!(written, Written::Accepted);
                break;
            }
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
