//! `fence::postgres` against a real PostgreSQL server, each test in a
//! database of its own, created and dropped by the test.
//!
//! The server is `WARROOM_TEST_POSTGRES` (a URL to a database the user may
//! create databases from), by default 127.0.0.1:5432 as `postgres`.
//! Unreachable: the test fails under CI, elsewhere it is skipped with the
//! reason printed.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};
use warroom_lock::fence::postgres::{self as pgfence, Begin, FencedRow, PgFenceError};

fn server_url() -> String {
    std::env::var("WARROOM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A database that exists for one test; dropped (with its connections) at
/// the end of the test.
struct Scratch {
    name: String,
    url: String,
}

impl Scratch {
    async fn create() -> Option<Scratch> {
        let server = server_url();
        let name = format!(
            "warroom_lock_test_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let created = async {
            let admin = connect(&server).await?;
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
        }
        .await;
        if let Err(e) = created {
            let message = format!("PostgreSQL at {server} cannot be used: {e}");
            assert!(!under_ci(), "{message}; CI requires it");
            eprintln!("SKIPPED: {message}");
            return None;
        }
        let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
        let url = format!("{base}/{name}");
        let scratch = Scratch { name, url };
        let client = scratch.client().await;
        client
            .batch_execute(
                "CREATE TABLE accounts (
                     id text PRIMARY KEY,
                     balance bigint NOT NULL,
                     fence bigint NOT NULL DEFAULT 0);
                 CREATE TABLE ledger (
                     id bigserial PRIMARY KEY,
                     account text NOT NULL,
                     amount bigint NOT NULL,
                     token bigint NOT NULL);",
            )
            .await
            .unwrap();
        Some(scratch)
    }

    async fn client(&self) -> Client {
        connect(&self.url)
            .await
            .expect("connect to the scratch database")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread of its own: the test's runtime may be shutting down.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(async {
                    let admin = connect(&server_url()).await?;
                    admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop scratch database {}", self.name);
        }
    }
}

fn accounts() -> FencedRow {
    FencedRow::new("accounts", "id", "fence").unwrap()
}

/// A fenced unit: add `amount` to the balance and append a ledger row.
async fn credit(
    client: &mut Client,
    key: &str,
    token: u64,
    amount: i64,
) -> Result<Option<u64>, PgFenceError> {
    match pgfence::begin(client, &accounts(), &key, Type::TEXT, token).await? {
        Begin::Fenced(unit) => {
            let tx = unit.transaction();
            tx.execute(
                "UPDATE accounts SET balance = balance + $2 WHERE id = $1",
                &[&key, &amount],
            )
            .await?;
            tx.execute(
                "INSERT INTO ledger (account, amount, token) VALUES ($1, $2, $3)",
                &[&key, &amount, &(token as i64)],
            )
            .await?;
            unit.commit().await?;
            Ok(None)
        }
        Begin::Stale { fence } => Ok(Some(fence)),
        Begin::Missing => panic!("account {key} missing"),
    }
}

async fn state(client: &Client, key: &str) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT balance, fence, (SELECT count(*) FROM ledger WHERE account = $1) FROM accounts WHERE id = $1",
            &[&key],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn a_lower_token_is_refused_and_changes_nothing_an_equal_one_is_accepted() {
    let Some(db) = Scratch::create().await else {
        return;
    };
    let mut client = db.client().await;
    client
        .execute("INSERT INTO accounts (id, balance) VALUES ('a', 0)", &[])
        .await
        .unwrap();
    assert_eq!(credit(&mut client, "a", 5, 10).await.unwrap(), None);
    // The same holder writes again under the same lease.
    assert_eq!(credit(&mut client, "a", 5, 1).await.unwrap(), None);
    assert_eq!(state(&client, "a").await, (11, 5, 2));
    // A stale holder: refused with the fence, nothing written.
    assert_eq!(credit(&mut client, "a", 4, 100).await.unwrap(), Some(5));
    assert_eq!(state(&client, "a").await, (11, 5, 2));
    // A newer one raises the fence.
    assert_eq!(credit(&mut client, "a", 9, 1).await.unwrap(), None);
    assert_eq!(credit(&mut client, "a", 5, 1).await.unwrap(), Some(9));
    assert_eq!(state(&client, "a").await, (12, 9, 3));
}

#[tokio::test]
async fn a_missing_row_is_reported_or_created() {
    let Some(db) = Scratch::create().await else {
        return;
    };
    let mut client = db.client().await;
    let begun = pgfence::begin(&mut client, &accounts(), &"new", Type::TEXT, 3u64)
        .await
        .unwrap();
    assert!(matches!(begun, Begin::Missing), "{begun:?}");
    drop(begun);
    for (token, created) in [(3u64, true), (3, false)] {
        let begun = pgfence::begin_or_insert(
            &mut client,
            &accounts(),
            &"new",
            Type::TEXT,
            token,
            &[("balance", &7i64, Type::INT8)],
        )
        .await
        .unwrap();
        let Begin::Fenced(unit) = begun else {
            panic!("{begun:?}");
        };
        assert_eq!(unit.created(), created);
        assert_eq!(unit.token(), 3);
        unit.commit().await.unwrap();
    }
    let begun = pgfence::begin_or_insert(
        &mut client,
        &accounts(),
        &"new",
        Type::TEXT,
        2u64,
        &[("balance", &7i64, Type::INT8)],
    )
    .await
    .unwrap();
    assert!(matches!(begun, Begin::Stale { fence: 3 }), "{begun:?}");
    drop(begun);
    assert_eq!(state(&client, "new").await, (7, 3, 0));
}

#[tokio::test]
async fn a_stale_holder_waiting_on_the_row_lock_is_refused_after_the_newer_commit() {
    let Some(db) = Scratch::create().await else {
        return;
    };
    let mut newer = db.client().await;
    let mut older = db.client().await;
    newer
        .execute("INSERT INTO accounts (id, balance) VALUES ('a', 0)", &[])
        .await
        .unwrap();
    // The newer holder (token 8) holds the row lock with its unit open.
    let Begin::Fenced(unit) = pgfence::begin(&mut newer, &accounts(), &"a", Type::TEXT, 8u64)
        .await
        .unwrap()
    else {
        panic!("token 8 refused on a fresh row");
    };
    unit.transaction()
        .execute("UPDATE accounts SET balance = 1 WHERE id = 'a'", &[])
        .await
        .unwrap();
    // The older holder (token 7) read fence 0 before: it must wait on the
    // lock, then see the committed fence 8 and be refused.
    let waiting = tokio::spawn(async move { credit(&mut older, "a", 7, 100).await });
    let observer = db.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waits: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waits == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the older unit never waited on the row lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unit.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), Some(8));
    assert_eq!(state(&observer, "a").await, (1, 8, 0));
}

#[tokio::test]
async fn bad_names_and_tokens_are_refused() {
    for bad in ["", "1table", "orders; DROP TABLE x", "a.b.c", "o\"rders"] {
        assert!(
            matches!(
                FencedRow::new(bad, "id", "fence"),
                Err(PgFenceError::InvalidIdentifier(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        FencedRow::new("public.orders", "id", "fence")
            .unwrap()
            .table(),
        "\"public\".\"orders\""
    );
    let Some(db) = Scratch::create().await else {
        return;
    };
    let mut client = db.client().await;
    let refused = pgfence::begin(&mut client, &accounts(), &"a", Type::TEXT, u64::MAX).await;
    assert!(
        matches!(refused, Err(PgFenceError::TokenOutOfRange(u64::MAX))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_pipelined_unit_commits_its_writes_only_when_the_token_is_fresh() {
    let Some(db) = Scratch::create().await else {
        return;
    };
    let mut client = db.client().await;
    client
        .execute("INSERT INTO accounts (id, balance) VALUES ('a', 0)", &[])
        .await
        .unwrap();
    let credit = client
        .prepare("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
        .await
        .unwrap();
    let ledger = client
        .prepare("INSERT INTO ledger (account, amount, token) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let mut unit = async |token: u64, amount: i64| {
        let t = token as i64;
        pgfence::write_unit(
            &mut client,
            &accounts(),
            &"a",
            Type::TEXT,
            token,
            &[(&credit, &[&"a", &amount]), (&ledger, &[&"a", &amount, &t])],
        )
        .await
        .unwrap()
    };
    assert_eq!(
        unit(4, 10).await,
        pgfence::UnitOutcome::Committed { rows: vec![1, 1] }
    );
    assert_eq!(
        unit(4, 1).await,
        pgfence::UnitOutcome::Committed { rows: vec![1, 1] }
    );
    // Stale: the writes ran in the transaction and were rolled back.
    assert_eq!(unit(3, 100).await, pgfence::UnitOutcome::Stale { fence: 4 });
    let observer = db.client().await;
    assert_eq!(state(&observer, "a").await, (11, 4, 2));
    let missing = pgfence::write_unit(&mut client, &accounts(), &"b", Type::TEXT, 9u64, &[])
        .await
        .unwrap();
    assert_eq!(missing, pgfence::UnitOutcome::Missing);
    // The same with the fence statement prepared on the connection.
    let fence = accounts().prepare(&client, Type::TEXT).await.unwrap();
    let stale = pgfence::write_unit_prepared(
        &mut client,
        &fence,
        &"a",
        2u64,
        &[(&credit, &[&"a", &5i64])],
    )
    .await
    .unwrap();
    assert_eq!(stale, pgfence::UnitOutcome::Stale { fence: 4 });
    let fresh = pgfence::write_unit_prepared(
        &mut client,
        &fence,
        &"a",
        6u64,
        &[(&credit, &[&"a", &5i64])],
    )
    .await
    .unwrap();
    assert_eq!(fresh, pgfence::UnitOutcome::Committed { rows: vec![1] });
    assert_eq!(state(&observer, "a").await, (16, 6, 2));
}

#[tokio::test]
async fn a_guarded_unit_commits_only_when_its_own_write_passes_the_fence() {
    let Some(db) = Scratch::create().await else {
        return;
    };
    let mut client = db.client().await;
    client
        .execute("INSERT INTO accounts (id, balance) VALUES ('a', 0)", &[])
        .await
        .unwrap();
    // The unit's own write of the fenced row carries the guard.
    let guarded = client
        .prepare(
            "UPDATE accounts SET balance = balance + $2, fence = $3 \
             WHERE id = $1 AND fence <= $3",
        )
        .await
        .unwrap();
    let ledger = client
        .prepare("INSERT INTO ledger (account, amount, token) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let observer = db.client().await;
    let mut unit = async |key: &str, token: u64, amount: i64| {
        let t = token as i64;
        pgfence::write_unit_guarded(
            &mut client,
            &accounts(),
            &key,
            Type::TEXT,
            token,
            (&guarded, &[&key, &amount, &t]),
            &[(&ledger, &[&key, &amount, &t])],
        )
        .await
        .unwrap()
    };
    assert_eq!(
        unit("a", 4, 10).await,
        pgfence::UnitOutcome::Committed { rows: vec![1, 1] }
    );
    assert_eq!(state(&observer, "a").await, (10, 4, 1));
    // The same holder again under the same lease: accepted.
    assert_eq!(
        unit("a", 4, 1).await,
        pgfence::UnitOutcome::Committed { rows: vec![1, 1] }
    );
    assert_eq!(state(&observer, "a").await, (11, 4, 2));
    // Stale: refused with the fence; its ledger row ran in the transaction
    // and was rolled back.
    assert_eq!(
        unit("a", 3, 100).await,
        pgfence::UnitOutcome::Stale { fence: 4 }
    );
    assert_eq!(state(&observer, "a").await, (11, 4, 2));
    let rows: i64 = observer
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
    // A newer holder raises the fence; the older one is refused after it.
    assert_eq!(
        unit("a", 9, 1).await,
        pgfence::UnitOutcome::Committed { rows: vec![1, 1] }
    );
    assert_eq!(
        unit("a", 5, 1).await,
        pgfence::UnitOutcome::Stale { fence: 9 }
    );
    assert_eq!(state(&observer, "a").await, (12, 9, 3));
    // No row with the key: missing, and its ledger row never lands.
    assert_eq!(unit("b", 9, 1).await, pgfence::UnitOutcome::Missing);
    let rows: i64 = observer
        .query_one("SELECT count(*) FROM ledger WHERE account = 'b'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    // A guarded statement whose WHERE fails for another reason is not
    // taken for a stale token.
    let picky = client
        .prepare("UPDATE accounts SET fence = $2 WHERE id = $1 AND fence <= $2 AND balance < 0")
        .await
        .unwrap();
    let unmatched = pgfence::write_unit_guarded(
        &mut client,
        &accounts(),
        &"a",
        Type::TEXT,
        10u64,
        (&picky, &[&"a", &10i64]),
        &[],
    )
    .await;
    assert!(
        matches!(unmatched, Err(PgFenceError::GuardUnmatched { rows: 0 })),
        "{unmatched:?}"
    );
    assert_eq!(state(&observer, "a").await, (12, 9, 3));
    let refused = pgfence::write_unit_guarded(
        &mut client,
        &accounts(),
        &"a",
        Type::TEXT,
        u64::MAX,
        (&picky, &[&"a", &10i64]),
        &[],
    )
    .await;
    assert!(
        matches!(refused, Err(PgFenceError::TokenOutOfRange(u64::MAX))),
        "{refused:?}"
    );
}
