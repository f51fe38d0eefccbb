//! `warroom console` and `warroom config check` against what an on-call
//! engineer does at 3 a.m.: pasting several lines into a prompt, the
//! terminal's multiplexer hanging up, a configuration with a password in a
//! URL or a port that cannot exist. Terminal cases run in a real terminal
//! (tmux) attached to a local cluster server and an incident journal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;
use warroom::cluster::ClusterServer;

/// A local cluster and a journal (no exporter: a closed port).
struct Environment {
    _runtime: tokio::runtime::Runtime,
    _cluster: ClusterServer,
    kubeconfig: PathBuf,
    journal: PathBuf,
    dir: tempfile::TempDir,
}

impl Environment {
    fn start() -> Environment {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let cluster = runtime.block_on(async {
            let cluster = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            cluster.write_kubeconfig(&kubeconfig).unwrap();
            cluster
        });
        let journal = dir.path().join("PM-003-drill.jsonl");
        let out = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_warroom")).args([
                "timeline",
                "new",
                "--id",
                "PM-003-drill",
                "--severity",
                "SEV-1",
                journal.to_str().unwrap(),
            ]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Environment {
            _runtime: runtime,
            _cluster: cluster,
            kubeconfig,
            journal,
            dir,
        }
    }

    fn console(&self) -> String {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        format!(
            "{} console --kubeconfig {} --exporter http://127.0.0.1:{port} --timeline {} \
             --playbooks {} --log-file {}",
            env!("CARGO_BIN_EXE_warroom"),
            self.kubeconfig.display(),
            self.journal.display(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("playbooks")
                .display(),
            self.dir.path().join("console.log").display()
        )
    }

    fn notes(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.journal).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == "note")
            .map(|e| e["payload"]["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

fn started(tmux: &Tmux, env: &Environment) {
    tmux.type_text(&format!("{}; echo EXITED=$?", env.console()));
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["order-service  8/8 ready", "? help"], "the console");
}

/// The shell reads a line and echoes it: the terminal left raw mode and
/// the alternate screen.
fn assert_terminal_usable(tmux: &Tmux) {
    common::wait_until(
        "the alternate screen to end",
        Duration::from_secs(15),
        || {
            (tmux
                .run(&["display-message", "-p", "-t", "war", "#{alternate_on}"])
                .trim()
                == "0")
                .then_some(())
        },
    );
    tmux.type_text(
        "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' +; echo ok-$((40+2))",
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["icanon+echo+ok-42"],
        "the shell to run a command after the console",
    );
}

#[test]
fn text_pasted_into_the_note_prompt_stays_one_note_and_runs_no_keys() {
    if common::require_tool("tmux", "tmux").is_none() {
        return;
    }
    let env = Environment::start();
    let tmux = Tmux::start(env.dir.path(), 120, 36);
    started(&tmux, &env);
    tmux.keys(&["n"]);
    tmux.wait_for(&["note: "], "the note prompt");
    // Without bracketed paste the line break submits "first line" and the
    // letters after it act as keys ("n" opens another note, "s" severity).
    tmux.paste("first line\nns second\tline\n");
    tmux.wait_for(&["note: first line ns second line"], "the pasted text");
    tmux.keys(&["Enter"]);
    let notes = common::wait_until("the note in the journal", Duration::from_secs(15), || {
        let notes = env.notes();
        (!notes.is_empty()).then_some(notes)
    });
    assert_eq!(notes, vec!["first line ns second line".to_owned()]);
    tmux.keys(&["q"]);
    tmux.wait_for(&["EXITED=0"], "the console to quit");
    assert_terminal_usable(&tmux);
}

#[test]
fn a_hangup_restores_the_terminal() {
    if common::require_tool("tmux", "tmux").is_none() {
        return;
    }
    let env = Environment::start();
    let tmux = Tmux::start(env.dir.path(), 120, 36);
    started(&tmux, &env);
    let pid = tmux.foreground_pid();
    // SAFETY: a signal to the console this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    tmux.wait_for(&["EXITED="], "the console to leave on SIGHUP");
    assert_terminal_usable(&tmux);
}

fn config_check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warroom.yaml");
    std::fs::write(&file, text).unwrap();
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom"))
            .args(["config", "check"])
            .arg(&file),
        Duration::from_secs(30),
    );
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn config_check_never_prints_a_password_in_a_source_url() {
    let (ok, out) = config_check(
        "sources:\n  exporter: http://scrape:hunter2@127.0.0.1:9464\n  prometheus: \
         https://admin:s3cr3t-pw@prom.example:9090/\n",
    );
    assert!(ok, "{out}");
    assert!(out.contains("valid"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(!out.contains("s3cr3t-pw"), "{out}");
}

#[test]
fn config_check_refuses_a_port_that_cannot_exist() {
    let (ok, out) = config_check("sources:\n  exporter: http://127.0.0.1:99999\n");
    assert!(!ok, "{out}");
    assert!(out.contains(":2:13: sources.exporter must be"), "{out}");
}

#[test]
fn config_check_shows_the_text_of_a_syntax_error() {
    let (ok, out) = config_check("sources:\n  poll-interval-ms: [1000\nhistory-minutes: 60\n");
    assert!(!ok, "{out}");
    assert!(out.contains("warroom.yaml:"), "{out}");
    // The message may be wrapped; the offending text is quoted.
    assert!(out.contains(":2:21:"), "{out}");
    assert!(
        out.contains("in \"poll-") && out.contains("[1000\""),
        "{out}"
    );
}

fn screen_text(app: &warroom::console::app::App, width: u16, height: u16) -> String {
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| warroom::console::ui::draw(frame, app))
        .unwrap();
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            text.push_str(buffer[(x, y)].symbol());
        }
        text.push('\n');
    }
    text
}

#[test]
fn an_alert_without_a_readable_start_shows_no_age() {
    use warroom::console::app::{App, Guardrails};
    use warroom::console::store::Store;
    const NOW: i64 = 1_795_686_932_000;
    let body = r#"{"status":"success","data":{"alerts":[
        {"labels":{"alertname":"LockConcurrentHolders"},"state":"firing","activeAt":"garbage","value":"2"},
        5, null]}}"#;
    let alerts = warroom::console::collect::alerts_answer(body).unwrap();
    assert_eq!(alerts.len(), 1);
    let mut store = Store::new(1_000, 3_600_000);
    store.record_prometheus_alerts(NOW - 100, Ok(alerts));
    let mut app = App::new(store, Guardrails::default(), false);
    app.now_ms = NOW;
    let screen = screen_text(&app, 120, 36);
    assert!(
        screen.contains("LockConcurrentHolders  firing —"),
        "{screen}"
    );
    assert!(!screen.contains("498"), "an age since 1970:\n{screen}");
}

#[test]
fn a_prometheus_value_that_is_not_a_count_reads_as_zero() {
    for value in ["NaN", "+Inf", "-Inf", "-3"] {
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{value}"]}}]}}}}"#
        );
        assert_eq!(
            warroom::console::collect::instant_value(&body),
            Ok(0.0),
            "{value}"
        );
    }
}

#[test]
fn a_truncated_journal_is_shown_once_not_appended_again() {
    use warroom::console::app::{App, Guardrails};
    use warroom::console::collect::Update;
    use warroom::console::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let line = |seq: u64, text: &str| {
        format!(
            "{{\"seq\":{seq},\"at\":\"2026-11-26T09:41:0{seq}.000Z\",\"actor\":\"bastian\",\"kind\":\"note\",\"payload\":{{\"text\":\"{text}\"}}}}\n"
        )
    };
    std::fs::write(&path, line(1, "one") + &line(2, "two") + &line(3, "three")).unwrap();
    let mut follower = warroom::console::collect::JournalFollower::new(path.clone());
    let mut app = App::new(Store::new(1_000, 3_600_000), Guardrails::default(), false);
    let poll = |app: &mut App, follower: &mut warroom::console::collect::JournalFollower| {
        let result = follower.poll();
        app.apply(Update::Timeline {
            at_ms: 1,
            restart: follower.take_restart(),
            result,
        });
    };
    poll(&mut app, &mut follower);
    assert_eq!(app.store.timeline_total, 3);
    std::fs::write(&path, line(1, "uno")).unwrap();
    poll(&mut app, &mut follower);
    assert_eq!(app.store.timeline_total, 1);
    assert_eq!(app.store.timeline.len(), 1);
}

#[test]
fn a_note_with_an_unwritable_journal_says_which_journal() {
    use warroom::console::action::{ActionEvent, Actions};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let actions = Actions::new(
        None,
        PathBuf::from("playbooks"),
        None,
        Some(PathBuf::from("/nonexistent/PM-003.jsonl")),
        tx,
    );
    actions.note("two holders on ord-9927431");
    match rx.try_recv() {
        Ok(ActionEvent::Status(text)) => {
            assert!(text.contains("/nonexistent/PM-003.jsonl"), "{text}");
            assert!(!text.contains("give --timeline"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_terminal_size_from_tiny_to_huge_draws_without_panic() {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use warroom::console::app::{App, Guardrails};
    use warroom::console::store::{Reading, Store};
    const NOW: i64 = 1_795_686_932_000;
    let mut store = Store::new(1_000, 3_600_000);
    store.context = "ctx-名前-\u{202e}evil/orders".into();
    for s in (0..400).rev() {
        store.record_reading(
            NOW - s * 1_000,
            Reading {
                collisions_per_min: 1e12,
                holders_max: 3.0,
                errors_per_min: (s % 90) as f64,
                contended_key: Some("lock:ord-9927431-ＷＩＤＥ-e\u{301}".into()),
                collisions_total: 1e15,
                ..Reading::default()
            },
        );
    }
    let mut app = App::new(store, Guardrails::default(), false);
    app.now_ms = NOW;
    let states: [&[KeyCode]; 4] = [
        &[],
        &[KeyCode::Char('?')],
        &[KeyCode::Char('n')],
        &[KeyCode::Char(':'), KeyCode::Char('t')],
    ];
    for keys in states {
        let mut app = App::new(app.store.clone(), Guardrails::default(), false);
        app.now_ms = NOW;
        for &code in keys {
            app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
        }
        app.on_paste(&"宽字符 e\u{301} שלום ".repeat(60));
        for (w, h) in [
            (1, 1),
            (20, 5),
            (21, 6),
            (40, 10),
            (80, 24),
            (79, 23),
            (120, 8),
            (10, 60),
            (300, 100),
        ] {
            let _ = screen_text(&app, w, h);
        }
    }
}
