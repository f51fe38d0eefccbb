//! `warroom drill --database` end to end: the real binary, redis-server for
//! the lock, worker processes writing PM-003's tables in a real PostgreSQL
//! (a fresh database per test), `warroom reconcile --database` afterwards;
//! and a private PostgreSQL server (initdb/pg_ctl in a temporary directory)
//! really stopped in the middle of a drill.
//!
//! Every URL carries a planted password; it must appear in no output, no
//! file of the drill, no Pod object and no worker's command line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::drill::Drill;
use common::postgres::FreshDatabase;

/// The planted password.
const PLANTED: &str = "Pl4nted-dr1ll-PW";

fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PLANTED}@"),
        1,
    )
}

impl Drill {
    /// `warroom drill --headless --report json --no-prometheus ARGS`, with
    /// no database taken from the environment.
    fn start(args: &[&str]) -> Drill {
        let mut all = vec!["--headless", "--report", "json", "--no-prometheus"];
        all.extend_from_slice(args);
        Self::start_with(&all, |command| {
            command.env_remove("WARROOM_DATABASE_URL");
        })
    }

    /// Worker processes of this drill (their environment names its
    /// directory), as (pid, command line).
    fn workers(&self) -> Vec<(String, String)> {
        let marker = self.parent.path().as_os_str().as_encoded_bytes().to_vec();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if environ.windows(marker.len()).any(|w| w == marker)
                && cmdline.contains("drill worker")
            {
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// Asserts the planted password is in no output and no file the drill
    /// wrote (logs, pod logs, journal, its export, report, kubeconfig).
    fn assert_password_nowhere(&self) {
        for (what, text) in [("stdout", self.stdout()), ("stderr", self.stderr())] {
            assert!(
                !text.contains(PLANTED),
                "the password is in the {what}:\n{text}"
            );
        }
        let mut files = 0;
        let mut stack = vec![self.parent.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    files += 1;
                    assert!(
                        !bytes
                            .windows(PLANTED.len())
                            .any(|w| w == PLANTED.as_bytes()),
                        "the password is in {}",
                        path.display()
                    );
                }
            }
        }
        assert!(files >= 5, "the drill wrote its files ({files} found)");
    }
}

fn count(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a count: {report:#}"))
}

fn reconcile(url: &str, extra: &[&str]) -> (common::postgres::Reconciled, serde_json::Value) {
    let mut args = vec!["--output", "json", "--database", url];
    args.extend_from_slice(extra);
    let run = common::postgres::reconcile(&args, PLANTED);
    let json = run.json();
    (run, json)
}

/// Runs `f` with a client on `url`, on a runtime of its own.
fn with_client<T>(url: &str, f: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connects");
        tokio::spawn(connection);
        f(&client).await
    })
}

/// Every row of every table of PM-003's schema.
fn snapshot(url: &str) -> Vec<String> {
    with_client(url, async |client| {
        let mut out = Vec::new();
        for table in [
            "orders",
            "inventory_lots",
            "inventory_reservations",
            "fulfillment_records",
            "order_events",
            "inventory_events",
        ] {
            for row in client
                .query(&format!("SELECT t::text FROM {table} t ORDER BY 1"), &[])
                .await
                .unwrap()
            {
                out.push(format!("{table}: {}", row.get::<_, String>(0)));
            }
        }
        out
    })
}

/// Every change is in the audit log with it (one transaction each): as many
/// `reserved` rows as reservations, `fulfillment_created` rows as
/// fulfillment records, each order with a status row, and stock taken equal
/// to the reservations made.
fn assert_units_whole(url: &str) {
    with_client(url, async |client| {
        let one = async |sql: &str| -> i64 { client.query_one(sql, &[]).await.unwrap().get(0) };
        let reservations = one("SELECT count(*) FROM inventory_reservations").await;
        assert!(reservations > 0);
        assert_eq!(
            reservations,
            one(
                "SELECT count(*) FROM inventory_events WHERE kind = 'change' AND event = 'reserved'"
            )
            .await
        );
        assert_eq!(
            one("SELECT count(*) FROM fulfillment_records").await,
            one("SELECT count(*) FROM order_events \
                 WHERE kind = 'change' AND event = 'fulfillment_created'")
            .await
        );
        assert_eq!(
            0,
            one(
                "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_events e \
                 WHERE e.order_id = o.order_id AND e.event = 'status')"
            )
            .await
        );
        assert_eq!(
            one("SELECT coalesce(sum(initial_stock - stock), 0)::bigint FROM inventory_lots").await,
            one("SELECT count(*) FROM inventory_reservations WHERE state = 'held'").await
        );
    })
}

fn redis_available() -> bool {
    common::require_tool("redis-server", "redis-server").is_some()
}

#[test]
fn legacy_drill_corrupts_and_reconcile_leaves_only_the_ambiguous_orders() {
    if !redis_available() {
        return;
    }
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let url = with_password(&db.url);
    let mut drill = Drill::start(&[
        "--lock",
        "legacy",
        "--speed",
        "200",
        "--replicas",
        "4",
        "--duration",
        "20",
        "--database",
        &url,
    ]);
    let kubeconfig = drill.wait_started();
    let stderr = drill.stderr();
    assert!(
        stderr.contains("applied migration 0001 pm003_tables"),
        "{stderr}"
    );
    assert!(stderr.contains("database: postgres://"), "{stderr}");
    // While it runs: the workers' command lines and the Pod objects hold no
    // password (the URL is in the workers' environment only).
    let workers = common::wait_until("four workers", Duration::from_secs(30), || {
        let w = drill.workers();
        (w.len() >= 4).then_some(w)
    });
    for (pid, cmdline) in &workers {
        assert!(!cmdline.contains(PLANTED), "{pid}: {cmdline}");
        assert!(!cmdline.contains("postgres://"), "{pid}: {cmdline}");
    }
    if let Some(kubectl) = common::require_tool("kubectl", "kubectl") {
        let out = common::output_within(
            Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "pods", "-n", "orders", "-o", "yaml"]),
            Duration::from_secs(60),
        );
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{yaml}");
        assert!(yaml.contains("order-service"), "{yaml}");
        assert!(!yaml.contains(PLANTED), "{yaml}");
        assert!(!yaml.contains("postgres://"), "{yaml}");
    }
    let status = drill.wait_exit(Duration::from_secs(120));
    let report = drill.report();
    assert_eq!(status.code(), Some(0), "{report:#}\n{}", drill.stderr());
    assert_eq!(report["ended"], "completed", "{report:#}");
    assert!(count(&report, "orders_processed") > 0, "{report:#}");
    let corrupted = count(&report, "corrupted_orders");
    assert!(corrupted > 0, "{report:#}");
    drill.assert_password_nowhere();
    assert_units_whole(&db.url);

    // The drill's scan and reconcile's agree.
    let (_, scan) = reconcile(&url, &[]);
    assert_eq!(count(&scan, "inconsistent"), corrupted, "{scan:#}");
    let (repaired, first) = reconcile(&url, &["--repair"]);
    let ambiguous = count(&first, "ambiguous");
    assert_eq!(
        count(&first, "repaired") + ambiguous,
        corrupted,
        "every order repaired or listed: {first:#}"
    );
    assert_eq!(
        repaired.code,
        if ambiguous + count(&first, "lots_mismatched") == 0 {
            0
        } else {
            1
        },
        "{}",
        repaired.stderr
    );
    let listed: Vec<String> = first["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "ambiguous")
        .map(|o| {
            assert!(o["decide"].is_string(), "{o:#}");
            o["order"].as_str().unwrap().to_string()
        })
        .collect();
    // Only the listed ambiguous orders remain, and a second repair changes
    // nothing.
    let after = snapshot(&db.url);
    let (_, again) = reconcile(&url, &["--repair"]);
    assert_eq!(count(&again, "repaired"), 0, "{again:#}");
    let remaining: Vec<String> = again["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(remaining, listed, "{again:#}");
    assert_eq!(snapshot(&db.url), after, "a second repair changed rows");
    assert_units_whole(&db.url);
}

#[test]
fn fenced_drill_at_ten_times_with_pauses_corrupts_nothing() {
    if !redis_available() {
        return;
    }
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    let url = with_password(&db.url);
    let mut drill = Drill::start(&[
        "--lock",
        "fenced",
        "--spike",
        "10",
        "--speed",
        "200",
        "--replicas",
        "4",
        "--duration",
        "20",
        "--database",
        &url,
    ]);
    let status = drill.wait_exit(Duration::from_secs(120));
    let report = drill.report();
    assert_eq!(status.code(), Some(0), "{report:#}\n{}", drill.stderr());
    assert!(count(&report, "orders_processed") > 0, "{report:#}");
    assert!(
        report["gc_pauses"]["paused"].as_u64().unwrap_or(0) > 0,
        "{report:#}"
    );
    assert!(count(&report, "fencing_rejections") > 0, "{report:#}");
    assert_eq!(count(&report, "corrupted_orders"), 0, "{report:#}");
    drill.assert_password_nowhere();
    let (run, scan) = reconcile(&url, &[]);
    assert_eq!(run.code, 0, "{scan:#}");
    assert_eq!(count(&scan, "inconsistent"), 0, "{scan:#}");
    // The refused writes are in the audit log, as refused.
    let rejected = with_client(&db.url, async |c| {
        c.query_one(
            "SELECT count(*) FROM order_events WHERE kind = 'rejected'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    });
    assert!(rejected > 0);
    assert_units_whole(&db.url);
}

#[test]
fn a_drill_on_a_database_that_holds_orders_or_does_not_answer_starts_nothing() {
    let Some(db) = FreshDatabase::create() else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut client = db.connect().await;
            warroom::database::migrate::migrate(&mut client)
                .await
                .unwrap();
            client
                .batch_execute(
                    "INSERT INTO orders (order_id, status) VALUES ('ord-1', 'PROCESSING')",
                )
                .await
                .unwrap();
        });
    let mut drill = Drill::start(&["--duration", "5", "--database", &with_password(&db.url)]);
    let status = drill.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{}", drill.stderr());
    assert!(
        drill.stderr().contains("already holds 1 order"),
        "{}",
        drill.stderr()
    );
    assert!(drill.workers().is_empty());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut drill = Drill::start(&[
        "--duration",
        "5",
        "--database",
        &format!("postgres://postgres:{PLANTED}@127.0.0.1:{port}/warroom"),
    ]);
    let status = drill.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(4), "{}", drill.stderr());
    assert!(
        drill.stderr().contains("cannot reach PostgreSQL"),
        "{}",
        drill.stderr()
    );
    assert!(!drill.stderr().contains(PLANTED), "{}", drill.stderr());
    assert!(
        std::fs::read_dir(drill.parent.path())
            .unwrap()
            .next()
            .is_none(),
        "no drill directory was made"
    );
}

/// A PostgreSQL server of this test's own (initdb in a temporary directory,
/// run as the `postgres` user when the test runs as root), stopped for
/// real with `pg_ctl stop`.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    fn bin_dir() -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
            .collect();
        found.sort();
        found.pop()
    }

    fn command(&self, tool: &str) -> Command {
        Self::as_postgres(&self.bin.join(tool))
    }

    fn as_postgres(program: &Path) -> Command {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn start() -> Option<PrivatePostgres> {
        let Some(bin) = Self::bin_dir() else {
            let message = "initdb/pg_ctl not found under /usr/lib/postgresql/*/bin (install \
                           them with `apt-get install -y postgresql`)";
            assert!(!common::under_ci(), "{message}");
            eprintln!("SKIPPED: {message}");
            return None;
        };
        // SAFETY: as above.
        if unsafe { libc::geteuid() } == 0 {
            common::require_tool("runuser", "util-linux")?;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        // SAFETY: as above.
        if unsafe { libc::geteuid() } == 0 {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(chown.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PrivatePostgres {
            bin,
            data,
            port,
            _dir: dir,
        };
        let out = common::output_within(
            server
                .command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&server.data),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.run_ctl("start");
        Some(server)
    }

    fn run_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self._dir.path().display()
        );
        let mut command = self.command("pg_ctl");
        command
            .args(["-D"])
            .arg(&self.data)
            .args(["-w", "-t", "60"]);
        match action {
            "start" => command
                .args(["-o", &options, "-l"])
                .arg(self._dir.path().join("server.log"))
                .arg("start"),
            _ => command.args(["-m", "fast", "stop"]),
        };
        let out = common::output_within(&mut command, Duration::from_secs(90));
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn postgres_stopped_mid_drill_is_a_clear_error_and_leaves_no_half_written_order() {
    if !redis_available() {
        return;
    }
    let Some(server) = PrivatePostgres::start() else {
        return;
    };
    with_client(&server.url("postgres"), async |c| {
        c.batch_execute("CREATE DATABASE drill").await.unwrap()
    });
    let plain = server.url("drill");
    let url = with_password(&plain);
    let mut drill = Drill::start(&[
        "--lock",
        "fenced",
        "--speed",
        "200",
        "--replicas",
        "4",
        "--duration",
        "120",
        "--database",
        &url,
    ]);
    drill.wait_started();
    common::wait_until("orders in the database", Duration::from_secs(60), || {
        let orders = with_client(&plain, async |c| {
            c.query_one("SELECT count(*) FROM orders", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        });
        (orders >= 50).then_some(())
    });
    server.run_ctl("stop");
    let stopped = Instant::now();
    let status = drill.wait_exit(Duration::from_secs(60));
    let report = drill.report();
    assert_eq!(status.code(), Some(1), "{report:#}\n{}", drill.stderr());
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "the drill noticed within seconds"
    );
    assert_eq!(report["ended"], "failed", "{report:#}");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("PostgreSQL at postgres://") && warnings.contains("stopped answering"),
        "{report:#}"
    );
    assert!(!drill.stderr().contains("panicked"), "{}", drill.stderr());
    // The workers said why their orders failed, and none panicked.
    let pods = drill.report()["drill_dir"]
        .as_str()
        .map(|d| PathBuf::from(d).join("pods"))
        .unwrap();
    let mut logs = String::new();
    for entry in std::fs::read_dir(&pods).unwrap().filter_map(Result::ok) {
        logs.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(
        logs.contains("ERROR"),
        "the workers reported the failure:\n{logs}"
    );
    drill.assert_password_nowhere();

    // Back up: every unit of work is whole, and nothing is inconsistent.
    server.run_ctl("start");
    assert_units_whole(&plain);
    let (run, scan) = reconcile(&url, &[]);
    assert_eq!(run.code, 0, "{scan:#}");
    assert_eq!(count(&scan, "inconsistent"), 0, "{scan:#}");
    assert!(count(&scan, "orders_scanned") >= 50, "{scan:#}");
}
