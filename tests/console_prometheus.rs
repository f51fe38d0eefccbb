//! Alerts from Prometheus: with `--prometheus URL` the alerts panel shows
//! what Prometheus' `/api/v1/alerts` says is firing, each with the playbook
//! that answers it (the playbooks' `alerts:` field). The server here is a
//! small real HTTP server speaking Prometheus' documented API: a good
//! answer, a malformed one, and one that never answers.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warroom::console::app::{App, Guardrails};
use warroom::console::collect::{self, Update};
use warroom::console::store::{AlertState, Reading, SourceState, Store};

const ALERTS: &str = r#"{
  "status": "success",
  "data": {
    "alerts": [
      {
        "labels": {"alertname": "AppErrorsAbove50PerMinute", "severity": "page"},
        "annotations": {"summary": "order errors above 50 per minute"},
        "state": "pending",
        "activeAt": "2026-11-26T09:41:30.000000000Z",
        "value": "6.1e+01"
      },
      {
        "labels": {"alertname": "LockConcurrentHolders", "key": "lock:ord-9927431"},
        "annotations": {"summary": "two holders of lock:ord-9927431"},
        "state": "firing",
        "activeAt": "2026-11-26T09:41:12.418+00:00",
        "value": "2e+00"
      },
      {
        "labels": {"alertname": "Watchdog"},
        "annotations": {},
        "state": "inactive",
        "activeAt": "2026-11-26T09:00:00Z",
        "value": "1e+00"
      }
    ]
  }
}"#;

/// Serves `/ok`, `/malformed` and `/hang` as Prometheus base URLs.
async fn prometheus() -> String {
    let app = Router::new()
        .route("/ok/api/v1/alerts", get(|| async { ALERTS }))
        .route(
            "/malformed/api/v1/alerts",
            get(|| async { r#"{"status":"success","data":{"alerts":[{"labels""# }),
        )
        .route(
            "/refused/api/v1/alerts",
            get(|| async {
                r#"{"status":"error","errorType":"internal","error":"rule manager not ready"}"#
            }),
        )
        .route(
            "/hang/api/v1/alerts",
            get(|| async {
                std::future::pending::<()>().await;
                ""
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The first alerts update from the collector at `url`, within `deadline`.
async fn first_alerts(
    url: String,
    deadline: Duration,
) -> Result<Vec<warroom::console::store::Alert>, String> {
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    tokio::spawn(collect::prometheus_alerts(
        url,
        Duration::from_millis(200),
        tx,
        stop.clone(),
    ));
    let update = tokio::time::timeout(deadline, rx.recv())
        .await
        .expect("an answer (or a failure) within the deadline")
        .expect("the collector runs");
    stop.cancel();
    match update {
        Update::Alerts { result, .. } => result,
        other => panic!("not an alerts update: {other:?}"),
    }
}

fn app_with_prometheus() -> App {
    let mut store = Store::new(1_000, 3_600_000);
    store.context = "warroom-local/orders".into();
    let (playbooks, problems) = warroom::console::action::list_playbooks(Path::new("playbooks"));
    assert!(problems.is_empty(), "{problems:?}");
    store.playbooks = playbooks;
    store.prometheus.configured = true;
    store.alerts_source.configured = true;
    store.alerts_from_prometheus = true;
    let mut app = App::new(store, Guardrails::default(), false);
    app.now_ms = "2026-11-26T09:55:32Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond();
    app
}

fn screen(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).unwrap();
    terminal
        .draw(|frame| warroom::console::ui::draw(frame, app))
        .unwrap();
    let buffer = terminal.backend().buffer();
    buffer
        .content
        .chunks(buffer.area.width as usize)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn firing_alerts_come_from_prometheus_with_the_playbook_that_answers_them() {
    let base = prometheus().await;
    let alerts = first_alerts(format!("{base}/ok"), Duration::from_secs(10))
        .await
        .unwrap();
    let names: Vec<(&str, AlertState)> =
        alerts.iter().map(|a| (a.name.as_str(), a.state)).collect();
    assert_eq!(
        names,
        [
            ("LockConcurrentHolders", AlertState::Firing),
            ("AppErrorsAbove50PerMinute", AlertState::Pending),
        ],
        "firing first, inactive left out"
    );
    let mut app = app_with_prometheus();
    let at = app.now_ms;
    app.apply(Update::Alerts {
        at_ms: at,
        result: Ok(alerts),
    });
    // A calm reading does not clear what Prometheus says is firing: its
    // rules decide, not the console's own evaluation.
    app.apply(Update::Prometheus {
        at_ms: at,
        result: Ok(Reading::default()),
    });
    assert_eq!(app.store.alerts.len(), 2);
    let text = screen(&app);
    assert!(text.contains("Alerts · prometheus"), "{text}");
    assert!(text.contains("● LockConcurrentHolders"), "{text}");
    assert!(text.contains("two holders of lock:ord-99"), "{text}");
    assert!(text.contains("→ lock-contention"), "{text}");
    assert!(text.contains("○ AppErrorsAbove50PerMinute"), "{text}");
    assert!(text.contains("→ gateway-rate-limit"), "{text}");
    // What the console runs on `r` is the playbook of the selected alert.
    assert_eq!(app.target_playbook().as_deref(), Some("lock-contention"));
}

#[tokio::test]
async fn without_prometheus_the_console_evaluates_the_readings_itself() {
    let mut store = Store::new(1_000, 3_600_000);
    store.record_reading(
        1_000,
        Reading {
            holders_max: 2.0,
            ..Reading::default()
        },
    );
    assert_eq!(store.alerts.len(), 1);
    assert_eq!(store.alerts[0].name, "LockConcurrentHolders");
    assert_eq!(store.alerts_source.state(2_000), SourceState::Off);
}

#[tokio::test]
async fn a_malformed_or_refusing_answer_marks_the_source_down_and_keeps_the_screen() {
    let base = prometheus().await;
    let malformed = first_alerts(format!("{base}/malformed"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(malformed.contains("not a Prometheus answer"), "{malformed}");
    let refused = first_alerts(format!("{base}/refused"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(refused.contains("rule manager not ready"), "{refused}");
    let mut app = app_with_prometheus();
    let at = app.now_ms;
    app.apply(Update::Alerts {
        at_ms: at,
        result: Err(malformed),
    });
    assert!(matches!(
        app.store.alerts_source.state(at),
        SourceState::Down(..)
    ));
    let text = screen(&app);
    assert!(text.contains("Prometheus alerts unavailable"), "{text}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_down_within_a_bounded_time() {
    let base = prometheus().await;
    let started = std::time::Instant::now();
    let hung = first_alerts(format!("{base}/hang"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(hung.contains("timed out"), "{hung}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nobody listening at all.
    let refused = first_alerts("http://127.0.0.1:9".into(), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(!refused.is_empty());
}
