//! A fresh PostgreSQL database per test, created on the server the tests use
//! and dropped (with its connections) when the test ends.
//!
//! The server is `WARROOM_TEST_POSTGRES` (a `postgres://` URL to a database
//! the user can connect to and create databases from), by default the
//! machine's server at 127.0.0.1:5432 as `postgres`. Unreachable: the test
//! fails under CI (`.ci/run` starts the server), elsewhere it is skipped with
//! the reason printed, as [`super::require_tool`] does.

use std::time::Duration;

/// The server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("WARROOM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for one test.
pub struct FreshDatabase {
    /// The database's name (`warroom_test_<pid>_<n>`).
    pub name: String,
    /// A URL to it.
    pub url: String,
}

/// Runs `f` on a runtime of its own on another thread, so that this works
/// from synchronous tests and from inside a test's runtime alike.
fn on_own_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f())
    })
    .join()
    .expect("the database thread")
}

async fn admin(server: &str) -> Result<tokio_postgres::Client, String> {
    let mut config: tokio_postgres::Config = server.parse().map_err(|e| format!("{e}"))?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("{e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

impl FreshDatabase {
    /// Creates a database, or `None` (skipped, outside CI) when the server
    /// cannot be reached.
    pub fn create() -> Option<FreshDatabase> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server_url();
        let name = format!(
            "warroom_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let created = {
            let (server, name) = (server.clone(), name.clone());
            on_own_runtime(move || {
                Box::pin(async move {
                    let client = admin(&server).await?;
                    client
                        .batch_execute(&format!("CREATE DATABASE {name}"))
                        .await
                        .map_err(|e| format!("CREATE DATABASE: {e}"))
                })
            })
        };
        if let Err(e) = created {
            let message = format!("PostgreSQL at {server} cannot be used: {e}");
            if super::under_ci() {
                panic!("{message}; CI requires it (.ci/run starts it)");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }
        let url = with_database(&server, &name);
        Some(FreshDatabase { name, url })
    }

    /// A connected client (its connection runs on the current runtime).
    pub async fn connect(&self) -> tokio_postgres::Client {
        admin(&self.url)
            .await
            .expect("connect to the test database")
    }
}

/// `server` with its database path replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let (server, name) = (server_url(), self.name.clone());
        let dropped = on_own_runtime(move || {
            Box::pin(async move {
                let client = admin(&server).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| format!("{e}"))
            })
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// What one `warroom reconcile` did.
pub struct Reconciled {
    /// Its exit code (-1: killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Reconciled {
    /// Standard output as the JSON of `--output json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "reconcile printed no JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `warroom reconcile ARGS` (neither Redis nor a database taken from
/// the environment), bounded in time; fails the test when `secret` shows
/// in its output or it panicked.
pub fn reconcile(args: &[&str], secret: &str) -> Reconciled {
    let out = super::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
            .arg("reconcile")
            .args(args)
            .env_remove("WARROOM_REDIS_URL")
            .env_remove("WARROOM_DATABASE_URL"),
        Duration::from_secs(120),
    );
    let run = Reconciled {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "reconcile showed the password:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}
