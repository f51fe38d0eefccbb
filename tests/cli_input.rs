//! What a user can type at `warroom bench lock|cluster|exporter|playbook`,
//! `warroom cluster` and `warroom exporter`, run through the real binary:
//! every numeric flag has a range stated in `--help` and refuses anything
//! outside it (0, negative, `nan`, `inf`, `1e20`, a number past `u64`) with
//! exit 2 and a message naming the flag and the range, within a deadline;
//! ports in use, non-loopback addresses, unwritable or foreign kubeconfig
//! paths and Redis URLs that do not parse are refused the same way; a Redis
//! that dies or freezes during `bench lock` ends it with exit 4 rather than
//! made-up counts or a hang.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use warroom::redis_node::RedisNode;

/// Refusing bad input is parsing only: far under this even on a loaded
/// machine.
const PARSE_DEADLINE: Duration = Duration::from_secs(30);

fn warroom(args: &[&str]) -> Output {
    common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom")).args(args),
        PARSE_DEADLINE,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A report's words on one line, without the frame miette wraps them in.
fn flat(report: &str) -> String {
    report
        .split_whitespace()
        .filter(|word| *word != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a numeric flag takes.
#[derive(Clone, Copy)]
enum Range {
    /// A whole number in `low..=high`.
    Whole(u64, u64),
    /// Seconds as a decimal in `low..=high`.
    Seconds(f64, f64),
}

/// A numeric flag and its range.
struct Flag {
    /// The command and any flags the checked one needs.
    command: &'static [&'static str],
    flag: &'static str,
    range: Range,
    /// How `--help` states the range.
    documented: &'static str,
}

const fn whole(
    command: &'static [&'static str],
    flag: &'static str,
    low: u64,
    high: u64,
    documented: &'static str,
) -> Flag {
    Flag {
        command,
        flag,
        range: Range::Whole(low, high),
        documented,
    }
}

const LOCK: &[&str] = &["bench", "lock"];
const PAUSED_LOCK: &[&str] = &["bench", "lock", "--pause-every", "1"];
const BENCH_CLUSTER: &[&str] = &["bench", "cluster"];
const BENCH_EXPORTER: &[&str] = &["bench", "exporter"];
const BENCH_PLAYBOOK: &[&str] = &["bench", "playbook"];
const EXPORTER: &[&str] = &["exporter"];
const DRILL: &[&str] = &["drill"];

/// Every numeric flag of the commands above. (`warroom cluster` has none
/// but the port of `--listen`, checked below.)
const FLAGS: &[Flag] = &[
    whole(LOCK, "--clients", 1, 1_000, "1 to 1,000"),
    whole(LOCK, "--keys", 1, 1_000_000, "1 to 1,000,000"),
    Flag {
        command: LOCK,
        flag: "--duration",
        range: Range::Seconds(0.1, 3600.0),
        documented: "0.1 to 3600",
    },
    whole(LOCK, "--ttl-ms", 10, 600_000, "10 to 600,000"),
    whole(LOCK, "--pause-every", 1, 1_000_000, "1 to 1,000,000"),
    whole(PAUSED_LOCK, "--pause-ms", 1, 60_000, "1 to 60,000"),
    whole(LOCK, "--connections", 1, 64, "1 to 64"),
    whole(LOCK, "--threads", 1, 256, "1 to 256"),
    whole(BENCH_CLUSTER, "--clients", 1, 1_000, "1 to 1,000"),
    Flag {
        command: BENCH_CLUSTER,
        flag: "--duration",
        range: Range::Seconds(0.1, 3600.0),
        documented: "0.1 to 3600",
    },
    whole(BENCH_CLUSTER, "--threads", 1, 256, "1 to 256"),
    whole(BENCH_EXPORTER, "--trials", 1, 10_000, "1 to 10,000"),
    whole(BENCH_EXPORTER, "--events", 1, 10_000_000, "1 to 10,000,000"),
    whole(BENCH_EXPORTER, "--keys", 1, 10_000_000, "1 to 10,000,000"),
    whole(BENCH_EXPORTER, "--held", 1, 100_000, "1 to 100,000"),
    whole(
        BENCH_EXPORTER,
        "--sample-every",
        1_000,
        10_000_000,
        "1,000 to 10,000,000",
    ),
    whole(BENCH_PLAYBOOK, "--runs", 1, 1_000, "1 to 1,000"),
    whole(EXPORTER, "--top-keys", 0, 1_000, "0 to 1,000"),
    Flag {
        command: DRILL,
        flag: "--speed",
        range: Range::Seconds(0.1, 1000.0),
        documented: "0.1 to 1,000",
    },
    Flag {
        command: DRILL,
        flag: "--spike",
        range: Range::Seconds(1.0, 1000.0),
        documented: "1 to 1,000",
    },
    whole(DRILL, "--replicas", 1, 64, "1 to 64"),
    Flag {
        command: DRILL,
        flag: "--duration",
        range: Range::Seconds(1.0, 86400.0),
        documented: "1 to 86,400",
    },
];

impl Flag {
    /// The range as the error message states it.
    fn stated(&self) -> String {
        match self.range {
            Range::Whole(low, high) => format!("{low}..={high}"),
            Range::Seconds(low, high) => format!("{low}..={high}"),
        }
    }

    /// The command whose `--help` lists the flag.
    fn help_command(&self) -> Vec<&'static str> {
        let mut args: Vec<&str> = self
            .command
            .iter()
            .copied()
            .take_while(|a| !a.starts_with("--"))
            .collect();
        args.push("--help");
        args
    }

    /// Values outside the range, as typed.
    fn bad_values(&self) -> Vec<String> {
        let mut values: Vec<String> = ["-1", "1e20", "99999999999999999999999", "ten", ""]
            .map(String::from)
            .to_vec();
        values.push(u64::MAX.to_string());
        match self.range {
            Range::Whole(low, high) => {
                values.push((high + 1).to_string());
                values.push("2.5".to_string());
                if low > 0 {
                    values.push((low - 1).to_string());
                    values.push("0".to_string());
                }
            }
            Range::Seconds(low, high) => {
                values.push(format!("{}", low / 2.0));
                values.push(format!("{}", high + 0.001));
                for odd in ["0", "-0.5", "nan", "NaN", "inf", "-inf", "infinity"] {
                    values.push(odd.to_string());
                }
            }
        }
        values
    }
}

#[test]
fn every_numeric_flag_refuses_values_outside_its_range_with_exit_2() {
    for flag in FLAGS {
        for value in flag.bad_values() {
            // Both spellings: `--flag VALUE` and `--flag=VALUE`.
            for joined in [false, true] {
                let mut args: Vec<String> = flag.command.iter().map(|s| s.to_string()).collect();
                if joined {
                    args.push(format!("{}={value}", flag.flag));
                } else {
                    args.push(flag.flag.to_string());
                    args.push(value.clone());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = warroom(&args);
                let stderr = text(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
                assert!(
                    stderr.contains(&format!("'{} <", flag.flag))
                        && stderr.contains(&flag.stated()),
                    "{args:?}: the message names the flag and {}: {stderr}",
                    flag.stated()
                );
                assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
                assert!(stderr.len() < 1024, "{args:?}: {} bytes", stderr.len());
            }
        }
    }
}

#[test]
fn every_numeric_flag_states_its_range_in_help() {
    for flag in FLAGS {
        let args = flag.help_command();
        let out = warroom(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = text(&out.stdout);
        // The flag's paragraph: its line up to the next flag's.
        let start = help
            .find(&format!("      {} ", flag.flag))
            .unwrap_or_else(|| panic!("{args:?} lists {}:\n{help}", flag.flag));
        let paragraph = &help[start..];
        let end = paragraph[1..]
            .find("\n  -")
            .map_or(paragraph.len(), |i| i + 1);
        let paragraph = paragraph[..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            paragraph.contains(flag.documented),
            "{args:?} {}: the help says {:?}:\n{paragraph}",
            flag.flag,
            flag.documented
        );
    }
}

#[test]
fn listen_addresses_in_use_or_beyond_loopback_are_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let in_use = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("local.kubeconfig");
    let kubeconfig = kubeconfig.to_str().unwrap();
    for args in [
        vec![
            "cluster",
            "--listen",
            &in_use,
            "--kubeconfig-out",
            kubeconfig,
        ],
        vec![
            "exporter",
            "--listen",
            &in_use,
            "--redis",
            "redis://127.0.0.1:1",
        ],
    ] {
        let out = warroom(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&in_use), "{args:?}: {stderr}");
        assert!(
            flat(&stderr).contains("choose another address with --listen"),
            "{args:?}: says what to do: {stderr}"
        );
    }
    for args in [
        vec![
            "cluster",
            "--listen",
            "0.0.0.0:0",
            "--kubeconfig-out",
            kubeconfig,
        ],
        vec!["exporter", "--listen", "0.0.0.0:0"],
        vec!["cluster", "--listen", "127.0.0.1:99999"],
        vec!["cluster", "--listen", "localhost"],
    ] {
        let out = warroom(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(!Path::new(kubeconfig).exists(), "nothing was written");
}

#[test]
fn a_kubeconfig_out_in_a_missing_directory_is_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("local.kubeconfig");
    let out = warroom(&[
        "cluster",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig-out",
        missing.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        flat(&stderr).contains("no-such-dir does not exist"),
        "names the directory: {stderr}"
    );
    assert!(text(&out.stdout).is_empty(), "nothing was served");
    // A directory where the file should be.
    let out = warroom(&[
        "cluster",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig-out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn an_operators_own_kubeconfig_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("config");
    let contents = "apiVersion: v1\nkind: Config\ncurrent-context: prod\n";
    std::fs::write(&real, contents).unwrap();
    let out = warroom(&[
        "cluster",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig-out",
        real.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(flat(&stderr).contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&real).unwrap(), contents);

    // One an earlier `warroom cluster` wrote is replaced (the server URL
    // changes from run to run).
    let ours = dir.path().join("local.kubeconfig");
    std::fs::write(
        &ours,
        warroom::cluster::kubeconfig_for("http://127.0.0.1:1"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["cluster", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&ours)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rewritten = common::wait_until("the kubeconfig to be rewritten", PARSE_DEADLINE, || {
        std::fs::read_to_string(&ours)
            .ok()
            .filter(|k| !k.contains("http://127.0.0.1:1\n") && k.contains("server: http://"))
    });
    assert!(rewritten.contains("warroom-local"), "{rewritten}");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let stopped = common::wait_until("the cluster to stop on Ctrl-C", PARSE_DEADLINE, || {
        child.try_wait().unwrap()
    });
    assert_eq!(stopped.code(), Some(0));
}

#[test]
fn redis_urls_that_do_not_parse_are_invalid_input() {
    for args in [
        &["bench", "lock", "--redis", "nonsense", "--duration", "1"][..],
        &[
            "bench",
            "lock",
            "--redis",
            "redis://:hunter2@host:port",
            "--duration",
            "1",
        ],
        &["bench", "exporter", "--redis", "redis://:hunter2@host:port"],
    ] {
        let out = warroom(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            flat(&stderr).contains("not a usable Redis URL"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{args:?}: {stderr}");
    }
}

#[test]
fn bench_exporter_refuses_more_keys_held_than_there_are() {
    let out = warroom(&[
        "bench",
        "exporter",
        "--redis",
        "redis://127.0.0.1:1",
        "--trials",
        "1",
        "--events",
        "1000",
        "--keys",
        "10",
        "--held",
        "20",
        "--sample-every",
        "1000",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        flat(&stderr).contains("--held 20 is more than --keys 10"),
        "{stderr}"
    );
}

/// A benchmark (`args`, then `--redis` for `node`) run in the background;
/// `during` is called on the node once keys matching `started` exist.
fn bench_while(
    node: &mut RedisNode,
    args: &[&str],
    started: &str,
    during: impl FnOnce(&mut RedisNode),
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warroom"));
    command.args(args).arg("--redis").arg(node.url());
    let handle =
        std::thread::spawn(move || common::output_within(&mut command, Duration::from_secs(180)));
    let client = redis::Client::open(node.url().as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    common::wait_until("the benchmark to start", Duration::from_secs(60), || {
        let keys: Vec<String> = redis::cmd("KEYS").arg(started).query(&mut conn).ok()?;
        (!keys.is_empty()).then_some(())
    });
    during(node);
    handle.join().expect("the benchmark ran")
}

/// `bench lock` for a few seconds; `during` once the clients are cycling
/// (the records exist).
fn bench_lock_while(node: &mut RedisNode, during: impl FnOnce(&mut RedisNode)) -> Output {
    bench_while(
        node,
        &["bench", "lock", "--duration", "3", "--output", "json"],
        "bench:*:order:*",
        during,
    )
}

#[test]
fn bench_lock_ends_with_exit_4_when_redis_dies_mid_run() {
    let mut node = RedisNode::start().unwrap();
    let out = bench_lock_while(&mut node, |node| node.kill().unwrap());
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "no counts from a dead Redis: {}{stderr}",
        text(&out.stdout)
    );
    assert!(
        flat(&stderr).contains("counts would mean nothing"),
        "{stderr}"
    );
}

#[test]
fn bench_lock_ends_with_exit_4_when_redis_freezes_mid_run() {
    let mut node = RedisNode::start().unwrap();
    let out = bench_lock_while(&mut node, |node| node.pause().unwrap());
    node.resume().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a frozen Redis ends the run: {}{stderr}",
        text(&out.stdout)
    );
}

#[test]
fn bench_exporter_ends_with_exit_4_when_redis_freezes_mid_run() {
    let mut node = RedisNode::start().unwrap();
    // Thousands of detection trials: the freeze comes during them.
    let args = [
        "bench",
        "exporter",
        "--trials",
        "10000",
        "--events",
        "1000",
        "--keys",
        "100",
        "--held",
        "10",
        "--sample-every",
        "1000",
    ];
    let out = bench_while(&mut node, &args, "bench:*:events", |node| {
        node.pause().unwrap()
    });
    node.resume().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a frozen Redis ends the run: {stderr}"
    );
    assert!(
        flat(&stderr).contains("is Redis stopped or paused?"),
        "{stderr}"
    );
}
