//! `warroom reconcile --database` and the drill's PostgreSQL store against
//! hostile input: URLs whose password must never be shown, whatever their
//! host looks like; hand-edited rows; concurrent repairs.

mod common;

use std::time::Duration;

use common::postgres::FreshDatabase;

/// A password planted in every URL: it must never be printed.
const PLANTED: &str = "Pl4nted-h0stile-PW";

fn reconcile(args: &[&str]) -> common::postgres::Reconciled {
    common::postgres::reconcile(args, PLANTED)
}

#[test]
fn the_password_is_never_shown_whatever_the_host() {
    for url in [
        format!("postgres://postgres:{PLANTED}@/nodb?host=/nonexistent-dir"),
        format!("postgres://postgres:{PLANTED}@%2Fnonexistent-dir/nodb"),
        format!("postgres://postgres:{PLANTED}@-bad.invalid/nodb"),
        format!("postgres://postgres:{PLANTED}@_bad.invalid/nodb"),
        format!("postgres://postgres:{PLANTED}@.bad.invalid/nodb"),
        format!("postgres://postgres:x@y:0/{PLANTED}@bad.invalid/nodb"),
    ] {
        let run = reconcile(&["--database", &url]);
        assert!(
            run.code == 2 || run.code == 4,
            "{url}: exit {}\n{}",
            run.code,
            run.stderr
        );
    }
}

/// A fresh database with PM-003's schema applied (through `--migrate`).
fn migrated() -> Option<FreshDatabase> {
    let db = FreshDatabase::create()?;
    let run = reconcile(&["--database", &db.url, "--migrate"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    Some(db)
}

/// Runs `sql` on `db`.
fn execute(db: &FreshDatabase, sql: &str) {
    let url = db.url.clone();
    let sql = sql.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async move {
                let mut config: tokio_postgres::Config = url.parse().expect("a URL");
                config.connect_timeout(Duration::from_secs(5));
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                client.batch_execute(&sql).await.expect("the SQL runs");
            })
    })
    .join()
    .expect("the SQL thread");
}

#[test]
fn hand_written_control_characters_never_reach_the_terminal() {
    let Some(db) = migrated() else { return };
    execute(
        &db,
        r"INSERT INTO inventory_lots VALUES ('lot-0', 100, 100), (E'lot-\x1b[31mRED', 10, -5);
          INSERT INTO orders (order_id, status) VALUES (E'ord-\x1b]0;title\x07-\x1b[2J', 'FULFILLED');
          INSERT INTO orders (order_id, status, lot_id, fulfillment_id)
              VALUES ('ord-5f', 'FULFILLED', 'lot-0', 'f1');
          INSERT INTO fulfillment_records (fulfillment_id, order_id, lot_id, holder)
              SELECT E'f\x1b[1m' || g, 'ord-5f', 'lot-0', 'h' FROM generate_series(1, 5) g;
          INSERT INTO inventory_reservations (order_id, lot_id, holder)
              VALUES ('ord-5f', 'lot-0', 'a'), ('ord-5f', E'lot-\x1b[31mRED', 'b');",
    );
    let run = reconcile(&["--database", &db.url]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ord-5f"), "{}", run.stdout);
    assert!(
        !run.stdout.contains(['\x1b', '\x07']) && !run.stderr.contains(['\x1b', '\x07']),
        "a control character reached the terminal:\n{:?}",
        run.stdout
    );
    // JSON keeps the IDs exactly (escaped by JSON itself).
    let run = reconcile(&["--database", &db.url, "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let orders = report["orders"].as_array().expect("orders");
    assert!(
        orders
            .iter()
            .any(|o| o["order"] == "ord-\x1b]0;title\x07-\x1b[2J"),
        "{}",
        run.stdout
    );
}

#[test]
fn another_orders_table_or_a_half_migrated_schema_is_refused_unchanged() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    execute(
        &db,
        "CREATE TABLE orders (id integer PRIMARY KEY, total numeric); \
         INSERT INTO orders VALUES (1, 9.99);",
    );
    for args in [vec!["--migrate"], vec![]] {
        let mut all = vec!["--database", db.url.as_str()];
        all.extend(args);
        let run = reconcile(&all);
        assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("orders"), "{}", run.stderr);
    }
    // Nothing was created: the migration can still be applied once the
    // table is moved away.
    execute(&db, "ALTER TABLE orders RENAME TO their_orders;");
    let run = reconcile(&["--database", &db.url, "--migrate"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    // Recorded as applied, a table dropped by hand.
    execute(&db, "DROP TABLE fulfillment_records;");
    for args in [vec!["--migrate"], vec!["--repair"]] {
        let mut all = vec!["--database", db.url.as_str()];
        all.extend(args);
        let run = reconcile(&all);
        assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("fulfillment_records"), "{}", run.stderr);
    }
}
