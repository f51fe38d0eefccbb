//! The console's panels in every state an on-call engineer meets, drawn on
//! ratatui's `TestBackend` at 80×24 and 160×48 and compared with reviewed
//! snapshots (`tests/snapshots/console_panels__*.snap`). The panels are pure
//! functions of the store, so each state is built as data.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use warroom::console::action::{ActionEvent, GateReply};
use warroom::console::app::{App, Guardrails};
use warroom::console::collect::Update;
use warroom::console::store::{
    ClusterView, DeploymentView, PlaybookEntry, Reading, RunState, RunView, StepLine, StepStatus,
    Store,
};
use warroom::playbook::ConfirmRequest;

/// 2026-11-26T09:55:32Z: fourteen and a half minutes into the incident.
const NOW: i64 = 1_795_686_932_000;
const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn journal() -> Vec<warroom::timeline::Event> {
    let lines = [
        r#"{"seq":1,"at":"2026-11-26T09:41:00.000Z","actor":"warroom","kind":"incident","payload":{"id":"PM-003-drill"}}"#,
        r#"{"seq":2,"at":"2026-11-26T09:41:00.000Z","actor":"warroom","kind":"milestone","payload":{"milestone":"started"}}"#,
        r#"{"seq":3,"at":"2026-11-26T09:41:12.418Z","actor":"warroom","kind":"alert","payload":{"alert":"LockConcurrentHolders","state":"fired","value":2.0}}"#,
        r#"{"seq":4,"at":"2026-11-26T09:41:12.418Z","actor":"warroom","kind":"milestone","payload":{"milestone":"detected"}}"#,
        r#"{"seq":5,"at":"2026-11-26T09:41:20.000Z","actor":"bastian","kind":"severity","payload":{"severity":"SEV-1"}}"#,
        r#"{"seq":6,"at":"2026-11-26T09:41:25.000Z","actor":"bastian","kind":"note","payload":{"text":"two holders on ord-9927431, running the mitigation"}}"#,
    ];
    warroom::timeline::parse_journal(format!("{}\n", lines.join("\n")).as_bytes()).events
}

fn playbooks() -> Vec<PlaybookEntry> {
    vec![
        PlaybookEntry {
            name: "lock-contention".into(),
            description: "The PM-003 emergency mitigation".into(),
            alerts: vec![
                "LockConcurrentHolders".into(),
                "LockCollisionsIncreasing".into(),
                "AppErrorsAbove50PerMinute".into(),
            ],
        },
        PlaybookEntry {
            name: "scale-to-one".into(),
            description: "Scale the order service to one replica".into(),
            alerts: vec![],
        },
    ]
}

fn cluster() -> ClusterView {
    ClusterView {
        deployment: Some(DeploymentView {
            desired: 8,
            ready: 8,
            updated: 8,
        }),
        ingress_found: true,
        gateway_limit: None,
        lock_mode: Some("legacy".into()),
        lease_holder: None,
    }
}

fn plan() -> RunView {
    let step = |name: &str, kind: &str, what: &str| StepLine {
        name: name.into(),
        kind: kind.into(),
        what: what.into(),
        status: StepStatus::Planned,
        message: String::new(),
    };
    RunView {
        playbook: "lock-contention".into(),
        run_id: None,
        steps: vec![
            step(
                "declare",
                "note",
                "Lock contention suspected on order-service",
            ),
            step(
                "confirm-scale-down",
                "confirm",
                "1/3 Scale order-service to 1 replica(s)?",
            ),
            step(
                "scale-down",
                "scale",
                "Deployment/order-service  replicas 8 → 1",
            ),
            step("wait-for-scale-down", "wait", "rollout complete"),
            step(
                "confirm-rate-limit",
                "confirm",
                "2/3 Rate-limit the gateway at 50 rps?",
            ),
            step(
                "rate-limit",
                "patch",
                "Ingress/orders-gateway  limit-rps — → 50",
            ),
        ],
        state: RunState::Plan,
        message: "plan in orders as warroom-operator".into(),
    }
}

/// A calm store: every source live, quiet numbers.
fn live() -> App {
    let mut store = Store::new(1_000, 3_600_000);
    store.context = "warroom-local/orders".into();
    store.playbooks = playbooks();
    store.record_events(&journal());
    store.timeline_source.ok(NOW - 200);
    for s in (0..300).rev() {
        let at = NOW - s * 1_000 - 200;
        store.record_reading(
            at,
            Reading {
                holders_max: 1.0,
                errors_per_min: 4.0 + (s % 7) as f64,
                ..Reading::default()
            },
        );
    }
    store.exporter.ok(NOW - 200);
    store.cluster = Some(cluster());
    store.cluster_source.ok(NOW - 800);
    let mut app = App::new(store, Guardrails::default(), true);
    app.now_ms = NOW;
    app
}

/// PM-003 as it happened: collisions climbing, two holders, errors over
/// the line; with a 20 s hole in the samples that no line may cross.
fn collisions() -> App {
    let mut app = live();
    let store = &mut app.store;
    *store = {
        let mut fresh = Store::new(1_000, 3_600_000);
        fresh.context = store.context.clone();
        fresh.playbooks = playbooks();
        fresh.record_events(&journal());
        fresh.timeline_source.ok(NOW - 200);
        fresh.cluster = Some(cluster());
        fresh.cluster_source.ok(NOW - 800);
        fresh
    };
    for s in (0..300).rev() {
        if (120..140).contains(&s) {
            continue;
        }
        let t = (300 - s) as f64;
        let at = NOW - s * 1_000 - 200;
        store.record_reading(
            at,
            Reading {
                collisions_per_min: (t / 8.0).floor(),
                holders_max: if s < 200 { 2.0 } else { 1.0 },
                overruns_per_min: (t / 40.0).floor(),
                rejections_per_min: 0.0,
                errors_per_min: t / 2.5,
                contended_key: Some("lock:ord-9927431".into()),
                collisions_total: t,
            },
        );
    }
    store.exporter.ok(NOW - 200);
    app
}

fn draw(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| warroom::console::ui::draw(frame, app))
        .unwrap();
    terminal
}

fn snapshot(name: &str, app: &App) {
    for (w, h) in SIZES {
        let terminal = draw(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), terminal.backend());
    }
}

fn key(app: &mut App, code: KeyCode) -> Option<warroom::console::app::Intent> {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
}

#[test]
fn live_sources_show_the_age_of_their_last_sample() {
    snapshot("live", &live());
}

#[test]
fn stale_sources_are_dimmed_with_their_age() {
    let mut app = live();
    app.now_ms = NOW + 5_000;
    snapshot("stale", &app);
}

#[test]
fn down_sources_say_why_in_one_line() {
    let mut app = live();
    app.apply(Update::Exporter {
        at_ms: NOW,
        result: Err("connection refused".into()),
    });
    app.apply(Update::Cluster {
        at_ms: NOW,
        result: Err(
            "cannot reach the API server at https://127.0.0.1:6443/ (connect timeout)".into(),
        ),
    });
    app.now_ms = NOW + 400_000;
    snapshot("down", &app);
}

#[test]
fn no_data_yet_is_said_not_drawn_as_zero() {
    let mut store = Store::new(1_000, 3_600_000);
    store.context = "warroom-local/orders".into();
    store.playbooks = playbooks();
    let mut app = App::new(store, Guardrails::default(), true);
    app.now_ms = NOW;
    snapshot("no_data", &app);
}

#[test]
fn collisions_climb_and_the_gap_stays_a_gap() {
    snapshot("collisions", &collisions());
}

#[test]
fn a_firing_alert_offers_its_playbook() {
    let mut app = collisions();
    // Errors above the line for a minute: AppErrorsAbove50PerMinute fires.
    assert!(
        app.store
            .alerts
            .iter()
            .any(|a| a.name == "AppErrorsAbove50PerMinute"
                && a.state == warroom::console::store::AlertState::Firing)
    );
    app.store.run = Some(plan());
    snapshot("alert_firing", &app);
}

#[test]
fn a_run_in_progress_shows_each_step() {
    let mut app = collisions();
    let mut run = plan();
    run.run_id = Some("20261126T094130Z-7f3a".into());
    run.state = RunState::Running;
    for (i, step) in run.steps.iter_mut().enumerate() {
        step.status = match i {
            0..=2 => StepStatus::Done,
            3 => StepStatus::Running,
            _ => StepStatus::Planned,
        };
    }
    run.steps[2].message = "replicas 8 → 1 applied and verified".into();
    run.steps[3].message = "rollout 3/8 → 1 ready".into();
    app.store.run = Some(run);
    app.store.cluster.as_mut().unwrap().lease_holder = Some("warroom-operator".into());
    snapshot("run_in_progress", &app);
}

#[test]
fn a_failed_run_shows_what_was_undone() {
    let mut app = collisions();
    let mut run = plan();
    run.run_id = Some("20261126T094130Z-7f3a".into());
    run.steps[0].status = StepStatus::Done;
    run.steps[1].status = StepStatus::Done;
    run.steps[2].status = StepStatus::Undone;
    run.steps[2].message = "replicas put back to 8".into();
    run.steps[3].status = StepStatus::Failed;
    run.steps[3].message = "rollout not complete within 60s (3/1 ready)".into();
    app.store.run = Some(run);
    app.apply(Update::Action(ActionEvent::Finished {
        outcome: "failed-undone".into(),
        ok: false,
        message: "step wait-for-scale-down failed; the applied steps were undone".into(),
    }));
    snapshot("run_failed_undone", &app);
}

#[test]
fn read_only_says_so_and_refuses_runs() {
    let mut app = collisions();
    app.guard.read_only = true;
    app.store.read_only = true;
    assert!(key(&mut app, KeyCode::Char('r')).is_none());
    assert!(app.popup.is_none(), "no confirmation: nothing will run");
    snapshot("read_only", &app);
}

#[test]
fn a_run_is_confirmed_in_a_popup_with_cancel_first() {
    let mut app = collisions();
    app.store.run = Some(plan());
    let intent = key(&mut app, KeyCode::Char('r'));
    assert!(
        matches!(intent, Some(warroom::console::app::Intent::Plan(ref p)) if p == "lock-contention")
    );
    snapshot("confirm", &app);
}

#[test]
fn a_typed_gate_shows_the_word_to_type() {
    let mut app = collisions();
    let mut run = plan();
    run.run_id = Some("20261126T094130Z-7f3a".into());
    run.state = RunState::Running;
    run.steps[0].status = StepStatus::Done;
    run.steps[1].status = StepStatus::Running;
    app.store.run = Some(run);
    app.apply(Update::Action(ActionEvent::Gate {
        request: ConfirmRequest {
            run_id: "20261126T094130Z-7f3a".into(),
            playbook: "lock-contention".into(),
            step: "confirm-scale-down".into(),
            prompt: "1/3 Scale order-service to 1 replica(s)? Order throughput drops to what one worker can do.".into(),
            answer: Some("scale order-service".into()),
            default_yes: false,
        },
        reply: GateReply::detached(),
    }));
    for c in "scale".chars() {
        key(&mut app, KeyCode::Char(c));
    }
    snapshot("typed_confirmation", &app);
}

#[test]
fn help_lists_every_key() {
    let mut app = live();
    key(&mut app, KeyCode::Char('?'));
    snapshot("help", &app);
}

#[test]
fn a_too_small_terminal_says_so() {
    let terminal = draw(&live(), 30, 8);
    insta::assert_snapshot!("too_small_30x8", terminal.backend());
}

#[test]
fn firing_alerts_are_red_unless_no_color() {
    let find = |terminal: &Terminal<TestBackend>, text: &str| {
        let buffer = terminal.backend().buffer();
        let width = buffer.area.width as usize;
        let cells: String = buffer
            .content
            .iter()
            .map(|c| c.symbol().chars().next().unwrap_or(' '))
            .collect();
        let chars: Vec<char> = cells.chars().collect();
        let needle: Vec<char> = text.chars().collect();
        let at = chars
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap_or_else(|| panic!("{text} not on screen"));
        buffer.content[at]
            .fg
            .to_owned()
            .clone_from(&buffer.content[at].fg);
        let _ = width;
        buffer.content[at].fg
    };
    let app = collisions();
    let coloured = draw(&app, 160, 48);
    assert_eq!(find(&coloured, "● LockConcurrentHolders"), Color::Red);
    let mut plain = collisions();
    plain.color = false;
    let plain = draw(&plain, 160, 48);
    assert_eq!(find(&plain, "● LockConcurrentHolders"), Color::Reset);
    // The symbol still says it: ● firing.
    let text: String = plain
        .backend()
        .buffer()
        .content
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(text.contains("● LockConcurrentHolders"));
    assert!(
        plain
            .backend()
            .buffer()
            .content
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset),
        "NO_COLOR: no colour anywhere"
    );
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn more_playbooks() -> Vec<PlaybookEntry> {
    let mut all = playbooks();
    for (name, alerts) in [
        ("gateway-rate-limit", vec!["AppErrorsAbove50PerMinute"]),
        ("enable-watch-locking", vec!["LockConcurrentHolders"]),
        ("restore", vec![]),
    ] {
        all.push(PlaybookEntry {
            name: name.into(),
            description: String::new(),
            alerts: alerts.into_iter().map(String::from).collect(),
        });
    }
    all
}

#[test]
fn the_filter_is_in_the_title_ignores_case_and_keeps_the_selection_visible() {
    let mut app = live();
    app.store.playbooks = more_playbooks();
    assert!(key(&mut app, KeyCode::Char(':')).is_none());
    typed(&mut app, "playbooks");
    key(&mut app, KeyCode::Enter);
    // The last playbook is selected, then hidden by the filter.
    for _ in 0..4 {
        key(&mut app, KeyCode::Down);
    }
    assert_eq!(app.store.playbooks[app.selected].name, "restore");
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "LOCK");
    let visible = app.visible_playbooks();
    let names: Vec<&str> = visible
        .iter()
        .map(|&i| app.store.playbooks[i].name.as_str())
        .collect();
    assert_eq!(names, ["lock-contention", "enable-watch-locking"]);
    assert!(visible.contains(&app.selected), "selection on a shown row");
    key(&mut app, KeyCode::Enter);
    // Moving stays among the shown rows.
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Up);
    assert_eq!(app.store.playbooks[app.selected].name, "lock-contention");
    snapshot("filter_playbooks", &app);
    // esc clears it: every row again, the selection where it was.
    key(&mut app, KeyCode::Esc);
    assert!(app.filter.is_empty());
    assert_eq!(app.visible_playbooks().len(), 5);
    assert_eq!(app.store.playbooks[app.selected].name, "lock-contention");
}

#[test]
fn the_filter_applies_to_the_focused_timeline() {
    let mut app = live();
    key(&mut app, KeyCode::Char(':'));
    typed(&mut app, "timeline");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "BASTIAN");
    snapshot("filter_timeline", &app);
    // esc while typing clears it too.
    key(&mut app, KeyCode::Esc);
    assert!(app.filter.is_empty() && app.input.is_none());
}

#[test]
fn the_filter_applies_to_the_alerts_and_r_follows_the_shown_selection() {
    let mut app = collisions();
    assert_eq!(app.focus, warroom::console::app::Focus::Alerts);
    assert!(app.store.alerts.len() >= 3);
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "errors");
    key(&mut app, KeyCode::Enter);
    let visible = app.visible_alerts();
    assert_eq!(visible.len(), 1);
    assert_eq!(
        app.store.alerts[app.alert_selected].name,
        "AppErrorsAbove50PerMinute"
    );
    snapshot("filter_alerts", &app);
    // A filter matching nothing says so.
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "zzz");
    key(&mut app, KeyCode::Enter);
    let terminal = draw(&app, 160, 48);
    let text: String = terminal
        .backend()
        .buffer()
        .content
        .iter()
        .map(|c| c.symbol())
        .collect();
    assert!(text.contains("no alert matches the filter"), "{text}");
}

/// A run with its scale-down applied when `q` is pressed.
fn running() -> App {
    let mut app = collisions();
    let mut run = plan();
    run.run_id = Some("20261126T094130Z-7f3a".into());
    run.state = RunState::Running;
    for (i, step) in run.steps.iter_mut().enumerate() {
        step.status = match i {
            0..=2 => StepStatus::Done,
            3 => StepStatus::Running,
            _ => StepStatus::Planned,
        };
    }
    app.store.run = Some(run);
    app
}

#[test]
fn quitting_during_a_run_asks_then_waits_for_the_undo_and_reports_nothing_left() {
    use warroom::console::app::Intent;
    use warroom::playbook::{StepEvent, StepPhase};
    let mut app = running();
    assert!(key(&mut app, KeyCode::Char('q')).is_none(), "asks first");
    assert!(app.popup.is_some());
    assert!(matches!(
        key(&mut app, KeyCode::Char('y')),
        Some(Intent::Quit)
    ));
    assert!(!app.quit_ready(true), "the undo is awaited");
    snapshot("quitting", &app);
    // The engine undoes the scale-down and ends the run.
    let undone = StepEvent {
        at: jiff::Timestamp::from_millisecond(NOW).unwrap(),
        phase: StepPhase::Undone,
        actor: "bastian".into(),
        playbook: "lock-contention".into(),
        run_id: "20261126T094130Z-7f3a".into(),
        step: "scale-down".into(),
        kind: "scale".into(),
        target: None,
        before: None,
        after: None,
        message: "replicas put back to 8".into(),
    };
    app.apply(Update::Action(ActionEvent::Step(undone)));
    assert!(!app.quit_ready(true), "still busy");
    app.apply(Update::Action(ActionEvent::Finished {
        outcome: "cancelled".into(),
        ok: false,
        message: "cancelled by the console; applied steps undone".into(),
    }));
    assert!(app.quit_ready(false));
    let report = app.quit_report("--context warroom-local -n orders");
    assert_eq!(
        report,
        ["Run 20261126T094130Z-7f3a of lock-contention was cancelled; nothing it changed is left."]
    );
}

#[test]
fn quitting_gives_up_after_30_s_and_prints_the_undo_command() {
    let mut app = running();
    key(&mut app, KeyCode::Char('q'));
    key(&mut app, KeyCode::Enter);
    app.now_ms += 29_000;
    assert!(!app.quit_ready(true));
    app.now_ms += 1_000;
    assert!(app.quit_ready(true), "30 s at most");
    let report = app
        .quit_report("--context warroom-local -n orders")
        .join("\n");
    assert!(report.contains("did not finish within 30 s"), "{report}");
    assert!(report.contains("scale-down (scale)"), "{report}");
    assert!(
        report.contains(
            "Undo it with: warroom undo 20261126T094130Z-7f3a --context warroom-local -n orders"
        ),
        "{report}"
    );
}

#[test]
fn quitting_without_a_run_leaves_at_once_and_prints_nothing() {
    let mut app = live();
    assert!(matches!(
        key(&mut app, KeyCode::Char('q')),
        Some(warroom::console::app::Intent::Quit)
    ));
    assert!(app.quit_ready(false));
    assert!(app.quit_report("-n orders").is_empty());
}
