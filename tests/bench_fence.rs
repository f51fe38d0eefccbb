//! `warroom bench fence` runs against the test server, prints both paths'
//! numbers, counts stale writes only on the unguarded path, never shows the
//! URL's password, and refuses numbers out of range.

mod common;

use std::process::Command;

use common::postgres::{FreshDatabase, server_url};

/// The test server's URL with a password added (trust authentication
/// ignores it): it must not appear in any output.
fn url_with_password() -> String {
    let url = server_url();
    match url.split_once("://") {
        Some((scheme, rest)) if !rest.contains('@') => {
            format!("{scheme}://postgres:hunter2-s3cret@{rest}")
        }
        _ => url,
    }
}

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["bench", "fence"])
        .args(args)
        .output()
        .expect("runs warroom")
}

#[test]
fn it_prints_both_paths_and_only_the_unguarded_one_lets_stale_writes_through() {
    // Reachability of the server (skipped outside CI when absent).
    let Some(_probe) = FreshDatabase::create() else {
        return;
    };
    let url = url_with_password();
    let common = [
        "--database",
        &url,
        "--concurrency",
        "4",
        "--orders",
        "50",
        "--duration",
        "0.4",
        "--pauses",
        "6",
        "--pause-ms",
        "30",
    ];
    let text = bench(&common);
    let stdout = String::from_utf8_lossy(&text.stdout);
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(text.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "unguarded",
        "fenced",
        "units/s",
        "p50",
        "p99",
        "fenced / unguarded =",
        "warroom_bench_",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
    }
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stdout}\n{stderr}"
    );

    let mut args = common.to_vec();
    args.extend(["--output", "json"]);
    let json = bench(&args);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert!(!String::from_utf8_lossy(&json.stdout).contains("hunter2"));
    for path in report["throughput"].as_array().unwrap() {
        assert!(path["units"].as_u64().unwrap() > 0, "{path}");
        assert!(path["units_per_sec"].as_f64().unwrap() > 0.0, "{path}");
        assert!(
            path["p99_ms"].as_f64().unwrap() >= path["p50_ms"].as_f64().unwrap(),
            "{path}"
        );
    }
    assert!(report["ratio"].as_f64().unwrap() > 0.0);
    let pauses = report["pauses"].as_array().unwrap();
    assert_eq!(pauses[0]["path"], "unguarded");
    assert_eq!(pauses[0]["paused_holders"], 6);
    assert_eq!(pauses[0]["stale_writes_in_tables"], 6, "{report}");
    assert_eq!(pauses[0]["accepted_by_store"], 6, "{report}");
    assert_eq!(pauses[1]["path"], "fenced");
    assert_eq!(pauses[1]["stale_writes_in_tables"], 0, "{report}");
    assert_eq!(pauses[1]["accepted_by_store"], 0, "{report}");

    // The scratch database is gone.
    let name = report["scratch_database"].as_str().unwrap().to_string();
    let exists = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&server_url(), tokio_postgres::NoTls)
                        .await
                        .unwrap();
                tokio::spawn(connection);
                client
                    .query_one(
                        "SELECT count(*) FROM pg_database WHERE datname = $1",
                        &[&name],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
            })
    })
    .join()
    .unwrap();
    assert_eq!(exists, 0, "the scratch database was left behind");
}

#[test]
fn numbers_out_of_range_and_unreachable_servers_are_clear_errors() {
    for (flag, value) in [
        ("--concurrency", "0"),
        ("--concurrency", "65"),
        ("--orders", "0"),
        ("--duration", "0"),
        ("--duration", "nan"),
        ("--pauses", "-1"),
        ("--pause-ms", "0"),
    ] {
        let out = bench(&[
            "--database",
            "postgres://postgres@127.0.0.1:1/x",
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let port = warroom::redis_node::free_port().unwrap();
    let out = bench(&[
        "--database",
        &format!("postgres://postgres:hunter2-s3cret@127.0.0.1:{port}/x"),
        "--duration",
        "0.2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
