//! `warroom reconcile --database` and the drill's PostgreSQL store against
//! hostile input: URLs whose password must never be shown, whatever their
//! host looks like; hand-edited rows; concurrent repairs.

mod common;

use std::process::Command;
use std::time::Duration;

/// A password planted in every URL: it must never be printed.
const PLANTED: &str = "Pl4nted-h0stile-PW";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn reconcile(args: &[&str]) -> Run {
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom"))
            .arg("reconcile")
            .args(args)
            .env_remove("WARROOM_REDIS_URL")
            .env_remove("WARROOM_DATABASE_URL"),
        Duration::from_secs(120),
    );
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stdout.contains(PLANTED) && !run.stderr.contains(PLANTED),
        "the password was shown:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
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
