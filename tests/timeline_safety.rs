//! The journal is never lost or polluted, against the real `warroom` binary
//! and real files: exports never write over a journal, appends go only to
//! journals, what is acknowledged is readable, a held lock is waited for
//! within a bound and said, and a missing journal starts its incident.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::output_within;
use warroom::timeline::{Entry, Figures, Journal, NewEvent, read_journal};

const DEADLINE: Duration = Duration::from_secs(60);

fn warroom(dir: &Path, args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom"))
            .args(args)
            .current_dir(dir)
            .env("USER", "tester")
            .env_remove("KUBECONFIG")
            .env("HOME", dir)
            .env("NO_COLOR", "1"),
        DEADLINE,
    )
}

/// Stderr with the report's line wrapping and frame undone.
fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A journal started with `timeline new`, plus one note.
fn started_journal(dir: &Path, name: &str, id: &str) -> PathBuf {
    let out = warroom(
        dir,
        &["timeline", "new", name, "--id", id, "--severity", "SEV-1"],
    );
    assert_eq!(code(&out), 0, "{}", said(&out));
    let out = warroom(dir, &["timeline", "note", name, "pods disagree"]);
    assert_eq!(code(&out), 0, "{}", said(&out));
    dir.join(name)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn export_never_writes_over_a_journal_by_name_symlink_or_hard_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = started_journal(dir.path(), "PM-004.jsonl", "PM-004");
    let other = started_journal(dir.path(), "PM-005.jsonl", "PM-005");
    std::os::unix::fs::symlink(&journal, dir.path().join("link.md")).expect("symlink");
    std::fs::hard_link(&journal, dir.path().join("hard.md")).expect("hard link");
    let before = std::fs::read(&journal).expect("journal");
    let other_before = std::fs::read(&other).expect("other journal");

    for out in ["PM-004.jsonl", "link.md", "hard.md", "PM-005.jsonl"] {
        for format in ["md", "json", "html"] {
            let run = warroom(
                dir.path(),
                &[
                    "timeline",
                    "export",
                    "PM-004.jsonl",
                    "--format",
                    format,
                    "-o",
                    out,
                ],
            );
            assert_eq!(code(&run), 3, "-o {out}: {}", said(&run));
            assert!(
                said(&run).contains("never writes over a journal"),
                "{}",
                said(&run)
            );
        }
    }
    assert_eq!(std::fs::read(&journal).expect("journal"), before);
    assert_eq!(std::fs::read(&other).expect("other"), other_before);
    assert!(
        std::fs::symlink_metadata(dir.path().join("link.md"))
            .expect("link")
            .file_type()
            .is_symlink()
    );

    // An ordinary file is written whole, and written again.
    for _ in 0..2 {
        let run = warroom(
            dir.path(),
            &["timeline", "export", "PM-004.jsonl", "-o", "PM-004.md"],
        );
        assert_eq!(code(&run), 0, "{}", said(&run));
    }
    let md = std::fs::read_to_string(dir.path().join("PM-004.md")).expect("export");
    assert!(md.starts_with("# Postmortem"), "{md}");
    assert!(md.contains("pods disagree"), "{md}");
    assert_eq!(
        files_in(dir.path()),
        [
            "PM-004.jsonl",
            "PM-004.md",
            "PM-005.jsonl",
            "hard.md",
            "link.md"
        ],
        "no temporary file is left behind"
    );

    // A device is not a file to rename over.
    let run = warroom(
        dir.path(),
        &["timeline", "export", "PM-004.jsonl", "-o", "/dev/full"],
    );
    assert_eq!(code(&run), 2, "{}", said(&run));
    assert!(said(&run).contains("not a regular file"), "{}", said(&run));
}

#[test]
fn output_names_the_format_and_out_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    started_journal(dir.path(), "PM-004.jsonl", "PM-004");
    let run = warroom(
        dir.path(),
        &["timeline", "export", "PM-004.jsonl", "--output", "json"],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    let value: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("--output json prints JSON");
    assert_eq!(value["figures"]["id"], "PM-004");
    assert!(
        !dir.path().join("json").exists(),
        "no file called json is written"
    );

    let run = warroom(
        dir.path(),
        &[
            "timeline",
            "export",
            "PM-004.jsonl",
            "--format",
            "html",
            "--out",
            "page.html",
        ],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    let page = std::fs::read_to_string(dir.path().join("page.html")).expect("page");
    assert!(page.starts_with("<!DOCTYPE html>"));

    for bad in [
        ["--format", "pdf"],
        ["--output", "text"],
        ["--output", "x.md"],
    ] {
        let run = warroom(
            dir.path(),
            &["timeline", "export", "PM-004.jsonl", bad[0], bad[1]],
        );
        assert_eq!(code(&run), 2, "{bad:?}: {}", said(&run));
        assert!(said(&run).contains("possible values"), "{}", said(&run));
    }
    assert_eq!(
        files_in(dir.path()),
        ["PM-004.jsonl", "page.html"],
        "nothing else was written"
    );
}

#[test]
fn note_and_mark_append_only_to_a_journal_with_an_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("README.md"), dir.path().join("README.md")).expect("readme");
    std::fs::copy(root.join("Cargo.toml"), dir.path().join("Cargo.toml")).expect("manifest");
    let binary: Vec<u8> = (0..8192u32).map(|i| (i * 131 % 251) as u8).collect();
    std::fs::write(dir.path().join("blob.bin"), &binary).expect("binary");
    std::fs::write(dir.path().join("empty.jsonl"), b"").expect("empty");
    // A JSON line that is not a journal event.
    std::fs::write(dir.path().join("other.jsonl"), b"{\"a\":1}\n").expect("json");

    for name in [
        "README.md",
        "Cargo.toml",
        "blob.bin",
        "empty.jsonl",
        "other.jsonl",
    ] {
        let path = dir.path().join(name);
        let before = std::fs::read(&path).expect("file");
        for args in [
            vec!["timeline", "note", name, "a note"],
            vec!["timeline", "mark", name, "detected"],
            vec!["timeline", "severity", name, "SEV-2"],
            vec!["timeline", "alert", name, "Lock", "--state", "fired"],
        ] {
            let run = warroom(dir.path(), &args);
            assert_eq!(code(&run), 3, "{args:?}: {}", said(&run));
            let message = said(&run);
            assert!(
                message.contains("not an incident journal")
                    || message.contains("no incident header"),
                "{args:?}: {message}"
            );
            assert!(message.contains("nothing was written"), "{message}");
            assert_eq!(
                std::fs::read(&path).expect("file"),
                before,
                "{name} unchanged"
            );
        }
    }
}

#[test]
fn a_note_on_a_missing_journal_starts_the_incident_named_after_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = warroom(
        dir.path(),
        &[
            "timeline",
            "note",
            "incidents/PM-009.jsonl",
            "first sign of trouble",
            "--at",
            "2026-11-26T09:05:00Z",
        ],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    let contents = read_journal(&dir.path().join("incidents/PM-009.jsonl")).expect("journal");
    assert!(matches!(&contents.events[0].entry, Entry::Incident(i) if i.id == "PM-009"));
    let figures = Figures::from_events(&contents.events);
    assert_eq!(figures.id.as_deref(), Some("PM-009"));
    assert_eq!(
        figures.start(),
        Some("2026-11-26T09:05:00Z".parse().unwrap()),
        "the incident starts with its first event"
    );
    assert!(
        figures
            .milestones
            .contains_key(&warroom::timeline::Milestone::Started)
    );

    // --id names the incident; `mark` creates as `note` does.
    let run = warroom(
        dir.path(),
        &["timeline", "mark", "--id", "PM-010", "detected"],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    let contents = read_journal(&dir.path().join("incidents/PM-010.jsonl")).expect("journal");
    let figures = Figures::from_events(&contents.events);
    assert_eq!(figures.id.as_deref(), Some("PM-010"));
    assert!(figures.time_to_detect.is_some(), "{figures:?}");
}

#[test]
fn concurrent_first_notes_create_one_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let children: Vec<_> = (0..6)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_warroom"))
                .args(["timeline", "note", "PM-011.jsonl", &format!("note {i}")])
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawns")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("waits");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let contents = read_journal(&dir.path().join("PM-011.jsonl")).expect("journal");
    let incidents = contents
        .events
        .iter()
        .filter(|e| matches!(e.entry, Entry::Incident(_)))
        .count();
    let notes = contents
        .events
        .iter()
        .filter(|e| matches!(e.entry, Entry::Note(_)))
        .count();
    assert_eq!((incidents, notes), (1, 6));
    assert!(matches!(contents.events[0].entry, Entry::Incident(_)));
    let seqs: Vec<u64> = contents.events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[test]
fn timeline_new_adopts_a_journal_without_an_incident_and_rewrites_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("PM-012.jsonl");
    {
        // Events recorded before anyone started the incident.
        let journal = Journal::open_or_create(&path).expect("journal");
        journal
            .append(NewEvent::at(
                "2026-11-26T09:10:00Z".parse().unwrap(),
                "lena",
                Entry::note("scaled down by hand"),
            ))
            .expect("append");
    }
    let before = std::fs::read(&path).expect("journal");
    let run = warroom(dir.path(), &["timeline", "note", "PM-012.jsonl", "x"]);
    assert_eq!(code(&run), 3, "{}", said(&run));
    assert!(said(&run).contains("timeline new"), "{}", said(&run));
    assert_eq!(std::fs::read(&path).expect("journal"), before);

    let run = warroom(
        dir.path(),
        &[
            "timeline",
            "new",
            "PM-012.jsonl",
            "--id",
            "PM-012",
            "--severity",
            "SEV-2",
        ],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    assert!(String::from_utf8_lossy(&run.stdout).contains("adopted"));
    let after = std::fs::read(&path).expect("journal");
    assert!(
        after.starts_with(&before),
        "the events already there are kept as they were"
    );
    let contents = read_journal(&path).expect("journal");
    let figures = Figures::from_events(&contents.events);
    assert_eq!(figures.id.as_deref(), Some("PM-012"));
    assert_eq!(figures.severity.as_deref(), Some("SEV-2"));
    assert_eq!(
        figures.start(),
        Some("2026-11-26T09:10:00Z".parse().unwrap()),
        "without --started the incident starts at the journal's first event"
    );

    let run = warroom(
        dir.path(),
        &["timeline", "note", "PM-012.jsonl", "now it is"],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    let run = warroom(
        dir.path(),
        &[
            "timeline",
            "new",
            "PM-012.jsonl",
            "--id",
            "PM-012",
            "--severity",
            "SEV-2",
        ],
    );
    assert_eq!(code(&run), 3, "{}", said(&run));
    assert!(
        said(&run).contains("already holds incident PM-012"),
        "{}",
        said(&run)
    );
}

/// `{"playbook":…,"before":[[[…]]]}` with `before` nested `depth` deep.
fn step_payload(depth: usize) -> String {
    format!(
        r#"{{"playbook":"p","run_id":"r","step":"s","kind":"patch","phase":"applied","target":{{"api_version":"v1","kind":"ConfigMap","name":"c"}},"before":{}1{},"after":null}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

#[test]
fn an_event_too_deep_to_read_back_is_refused_when_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = started_journal(dir.path(), "PM-004.jsonl", "PM-004");
    let limit = warroom::timeline::MAX_DEPTH;
    let before = std::fs::read(&path).expect("journal");
    // 126 deep parses as a payload, and would sit 128 deep in its line.
    for depth in [limit - 1, 126] {
        let run = warroom(
            dir.path(),
            &["timeline", "step", "PM-004.jsonl", &step_payload(depth)],
        );
        assert_eq!(code(&run), 2, "depth {depth}: {}", said(&run));
        assert!(said(&run).contains("nests"), "{}", said(&run));
        assert_eq!(std::fs::read(&path).expect("journal"), before);
    }
    // The deepest value the limit allows is acknowledged and read back.
    let run = warroom(
        dir.path(),
        &["timeline", "step", "PM-004.jsonl", &step_payload(limit - 2)],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    let contents = read_journal(&path).expect("journal");
    assert!(contents.skipped.is_empty(), "{:?}", contents.skipped);
    assert!(
        contents
            .events
            .iter()
            .any(|e| matches!(e.entry, Entry::Step(_)))
    );
    let run = warroom(
        dir.path(),
        &["timeline", "export", "PM-004.jsonl", "--format", "json"],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    assert!(said(&run).is_empty(), "nothing skipped: {}", said(&run));
}

#[test]
fn a_held_lock_is_waited_for_said_and_given_up_on() {
    use std::os::unix::io::AsRawFd;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = started_journal(dir.path(), "PM-004.jsonl", "PM-004");
    let before = std::fs::read(&path).expect("journal");
    let holder = std::fs::File::open(&path).expect("opens");
    // SAFETY: flock on the descriptor of a file held open below.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    let start = std::time::Instant::now();
    let run = warroom(
        dir.path(),
        &[
            "timeline",
            "note",
            "PM-004.jsonl",
            "blocked",
            "--lock-timeout",
            "1",
        ],
    );
    let took = start.elapsed();
    assert_eq!(code(&run), 1, "{}", said(&run));
    let message = said(&run);
    assert!(
        message.contains("waiting for the lock on the journal PM-004.jsonl"),
        "{message}"
    );
    assert!(
        message.contains(&format!("process {}", std::process::id())),
        "names the holder: {message}"
    );
    assert!(message.contains("gave up after 1s"), "{message}");
    assert!(took < Duration::from_secs(30), "bounded: {took:?}");
    assert_eq!(std::fs::read(&path).expect("journal"), before);

    drop(holder);
    let run = warroom(dir.path(), &["timeline", "note", "PM-004.jsonl", "free"]);
    assert_eq!(code(&run), 0, "{}", said(&run));

    for bad in ["-1", "nan", "1e20", "3601", "x"] {
        let run = warroom(
            dir.path(),
            &[
                "timeline",
                "note",
                "PM-004.jsonl",
                "y",
                &format!("--lock-timeout={bad}"),
            ],
        );
        assert_eq!(code(&run), 2, "{bad}: {}", said(&run));
        assert!(said(&run).contains("0..=3600"), "{}", said(&run));
    }
}

#[test]
fn special_files_and_huge_lines_neither_hang_nor_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.jsonl");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(dir.path().join("dir.jsonl")).expect("dir");
    for name in ["fifo.jsonl", "dir.jsonl"] {
        let run = warroom(dir.path(), &["timeline", "note", name, "x"]);
        assert_eq!(code(&run), 3, "{name}: {}", said(&run));
        let run = warroom(dir.path(), &["timeline", "export", name]);
        assert_eq!(code(&run), 2, "{name}: {}", said(&run));
        assert!(said(&run).contains("not a regular file"), "{}", said(&run));
    }
    let run = warroom(dir.path(), &["timeline", "export", "/dev/zero"]);
    assert_eq!(code(&run), 2, "{}", said(&run));

    // A line longer than any event is skipped (and said), the rest read.
    let path = started_journal(dir.path(), "PM-004.jsonl", "PM-004");
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("journal");
        let long = vec![b'x'; warroom::timeline::MAX_LINE_BYTES * 2];
        file.write_all(&long)
            .and_then(|()| file.write_all(b"\n"))
            .expect("long line");
    }
    let run = warroom(dir.path(), &["timeline", "note", "PM-004.jsonl", "after"]);
    assert_eq!(code(&run), 0, "{}", said(&run));
    let run = warroom(dir.path(), &["timeline", "export", "PM-004.jsonl"]);
    assert_eq!(code(&run), 0, "{}", said(&run));
    assert!(said(&run).contains("bytes long"), "{}", said(&run));
    let md = String::from_utf8_lossy(&run.stdout);
    assert!(md.contains("after") && md.contains("pods disagree"), "{md}");
}

#[test]
fn the_markdown_postmortem_lists_each_change_once_and_escapes_html() {
    use warroom::timeline::{StepPhase, StepReport, StepTarget};
    let dir = tempfile::tempdir().expect("tempdir");
    let run = warroom(
        dir.path(),
        &[
            "timeline",
            "new",
            "PM-013.jsonl",
            "--id",
            "PM-013",
            "--severity",
            "SEV-2",
            "--started",
            "2026-11-26T09:00:00Z",
        ],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
    let step = |run_id: &str, name: &str, phase: StepPhase| {
        serde_json::to_string(&StepReport {
            playbook: "lock-contention".into(),
            run_id: run_id.into(),
            step: name.into(),
            kind: "scale".into(),
            phase,
            target: StepTarget {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("shop".into()),
                name: "order-service".into(),
            },
            before: serde_json::json!({"spec": {"replicas": 8}}),
            after: serde_json::json!({"spec": {"replicas": 1}}),
            message: None,
        })
        .expect("encodes")
    };
    let record = |args: &[&str]| {
        let run = warroom(dir.path(), args);
        assert_eq!(code(&run), 0, "{args:?}: {}", said(&run));
    };
    record(&[
        "timeline",
        "note",
        "PM-013.jsonl",
        "<script>alert(1)</script> & <b>bold</b>",
    ]);
    // A dry run that changed nothing, then the real run.
    for phase in [StepPhase::Planned, StepPhase::DryRun] {
        record(&[
            "timeline",
            "step",
            "PM-013.jsonl",
            &step("dry", "drain-first", phase),
        ]);
    }
    for phase in [StepPhase::Planned, StepPhase::Applied, StepPhase::Verified] {
        record(&[
            "timeline",
            "step",
            "PM-013.jsonl",
            &step("real", "scale-to-one", phase),
        ]);
    }
    record(&["timeline", "severity", "PM-013.jsonl", "SEV-1"]);
    record(&["timeline", "severity", "PM-013.jsonl", "SEV-3"]);
    let run = warroom(dir.path(), &["timeline", "export", "PM-013.jsonl"]);
    assert_eq!(code(&run), 0, "{}", said(&run));
    let md = String::from_utf8_lossy(&run.stdout).into_owned();

    assert!(!md.contains("<script>") && !md.contains("<b>"), "{md}");
    assert!(
        md.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;"),
        "{md}"
    );
    for section in [
        "## Executive Summary",
        "## Timeline",
        "## Impact",
        "## Root Cause",
        "## Detection",
        "## Response",
        "### Changes Made",
        "## Action Items",
    ] {
        assert!(md.contains(section), "{section} missing:\n{md}");
    }
    assert!(md.contains("_(to be written"), "{md}");
    assert!(
        md.contains("| Severity | SEV-1 (peak; SEV-3 at the end) |"),
        "{md}"
    );
    let changes = &md[md.find("### Changes Made").expect("changes")..];
    assert_eq!(
        changes.matches("#### ").count(),
        1,
        "one change:\n{changes}"
    );
    assert!(changes.contains("#### 1. scale-to-one"), "{changes}");
    assert!(
        !changes[..changes.find("Planned but not applied").expect("named")].contains("drain-first"),
        "the dry run is not a change:\n{changes}"
    );
    let timeline =
        &md[md.find("## Timeline").expect("timeline")..md.find("## Impact").expect("impact")];
    assert_eq!(timeline.matches("scale-to-one").count(), 1, "{timeline}");
    assert!(!timeline.contains("drain-first"), "{timeline}");
}

#[test]
fn numeric_flags_outside_their_ranges_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = started_journal(dir.path(), "PM-004.jsonl", "PM-004");
    let before = std::fs::read(&path).expect("journal");
    let cases: &[&[&str]] = &[
        &["bench", "timeline", "--writers", "100000"],
        &["bench", "timeline", "--writers", "0"],
        &["bench", "timeline", "--single", "0"],
        &["bench", "timeline", "--single", "1e20"],
        &["bench", "timeline", "--batched", "99999999999999999999"],
        &["bench", "timeline", "--export-events", "0"],
        &[
            "timeline",
            "bench-append",
            "PM-004.jsonl",
            "--writers",
            "100000",
        ],
        &["timeline", "bench-append", "PM-004.jsonl", "--count", "0"],
        &[
            "timeline",
            "alert",
            "PM-004.jsonl",
            "A",
            "--state",
            "fired",
            "--value",
            "nan",
        ],
        &[
            "timeline",
            "alert",
            "PM-004.jsonl",
            "A",
            "--state",
            "fired",
            "--value",
            "inf",
        ],
        &[
            "timeline",
            "alert",
            "PM-004.jsonl",
            "A",
            "--state",
            "fired",
            "--value",
            "-1e300",
        ],
        &[
            "timeline",
            "note",
            "PM-004.jsonl",
            "x",
            "--lock-timeout",
            "1e20",
        ],
    ];
    for args in cases {
        let run = warroom(dir.path(), args);
        assert_eq!(code(&run), 2, "{args:?}: {}", said(&run));
        assert!(
            said(&run).contains("is needed"),
            "{args:?} names the range: {}",
            said(&run)
        );
    }
    assert_eq!(std::fs::read(&path).expect("journal"), before);
    assert_eq!(
        files_in(dir.path()),
        ["PM-004.jsonl"],
        "no bench directory left"
    );
    let run = warroom(
        dir.path(),
        &[
            "timeline",
            "alert",
            "PM-004.jsonl",
            "A",
            "--state",
            "fired",
            "--value",
            "-2.5",
        ],
    );
    assert_eq!(code(&run), 0, "{}", said(&run));
}

#[test]
fn a_long_note_is_read_from_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = started_journal(dir.path(), "PM-004.jsonl", "PM-004");
    let note = "password token secret ".repeat(40_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["timeline", "note", "PM-004.jsonl", "-"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(note.as_bytes())
        .expect("writes");
    let out = child.wait_with_output().expect("waits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let contents = read_journal(&path).expect("journal");
    assert!(
        contents
            .events
            .iter()
            .any(|e| matches!(&e.entry, Entry::Note(n) if n.text.len() == note.len()))
    );
}
