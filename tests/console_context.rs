//! `:ctx`: the console lists the kubeconfig's contexts and switches to
//! another one: the cluster collector restarts against it, the header shows
//! it and its guardrails (read-only, typed confirmation for production)
//! apply at once. An unknown context changes nothing and says so. Two local
//! cluster servers stand for two clusters.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use warroom::cluster::ClusterServer;
use warroom::console::app::{App, Intent};
use warroom::console::{Console, ConsoleOptions};
use warroom::kube::{KubeAccess, KubeTarget, ObjectRef};

fn kubeconfig(a: &str, b: &str) -> String {
    let token = warroom::cluster::TOKEN;
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: a
    cluster: {{server: {a}}}
  - name: b
    cluster: {{server: {b}}}
contexts:
  - name: local
    context: {{cluster: a, user: alice, namespace: orders}}
  - name: prod
    context: {{cluster: b, user: alice, namespace: orders}}
  - name: audit
    context: {{cluster: a, user: alice, namespace: orders}}
current-context: local
users:
  - name: alice
    user: {{token: {token}}}
"
    )
}

const CONFIG: &str = "sources:
  exporter: http://127.0.0.1:9
contexts:
  - name: prod
    typed-confirmation: true
  - name: audit
    read-only: true
";

fn typed(app: &mut App, text: &str) -> Option<Intent> {
    for c in text.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE))
}

/// Folds updates into the app until `done` holds, within a deadline.
async fn pump_until(console: &mut Console, app: &mut App, what: &str, done: impl Fn(&App) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(app) {
        match tokio::time::timeout_at(deadline, console.next()).await {
            Ok(Some(update)) => app.apply(update),
            Ok(None) => panic!("the collectors ended before {what}"),
            Err(_) => panic!("not within 10 s: {what}; status {:?}", app.store.status),
        }
    }
}

fn desired(app: &App) -> Option<i64> {
    app.store
        .cluster
        .as_ref()
        .and_then(|c| c.deployment.as_ref())
        .map(|d| d.desired)
}

fn header(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).unwrap();
    terminal
        .draw(|frame| warroom::console::ui::draw(frame, app))
        .unwrap();
    let buffer = terminal.backend().buffer();
    buffer.content[..200].iter().map(|c| c.symbol()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctx_lists_the_contexts_and_switches_with_their_guardrails() {
    let a = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig(&a.url(), &b.url())).unwrap();
    // Cluster b runs 3 replicas, cluster a the seeded 8: the panel tells
    // which cluster it shows.
    let on_b = KubeAccess::connect(&KubeTarget {
        kubeconfig: Some(path.clone()),
        context: Some("prod".into()),
        namespace: None,
    })
    .await
    .unwrap();
    let deployment = ObjectRef::namespaced("apps/v1", "Deployment", "orders", "order-service");
    let mut current = on_b.get(&deployment).await.unwrap().unwrap();
    current["spec"]["replicas"] = serde_json::json!(3);
    on_b.replace(&deployment, &current, false).await.unwrap();

    let mut settings = warroom::console::config::parse("warroom.yaml", CONFIG).unwrap();
    settings.exporter = None;
    settings.playbooks = "playbooks".into();
    let options = ConsoleOptions {
        kube: KubeTarget {
            kubeconfig: Some(path.clone()),
            context: None,
            namespace: None,
        },
        settings,
        read_only: false,
    };
    let (mut console, mut app) = Console::start(options, false).await.unwrap();
    assert_eq!(app.store.contexts, ["local", "prod", "audit"]);
    assert_eq!(app.store.context, "local/orders");
    pump_until(&mut console, &mut app, "cluster a on screen", |app| {
        desired(app) == Some(8)
    })
    .await;

    // `:ctx` lists them.
    assert!(typed(&mut app, ":ctx").is_none());
    let status = app.store.status.clone().unwrap();
    assert!(status.contains("local (current), prod, audit"), "{status}");

    // An unknown context: a clear message, nothing changes.
    assert!(typed(&mut app, ":ctx staging").is_none());
    let status = app.store.status.clone().unwrap();
    assert!(status.contains("no context \"staging\""), "{status}");
    assert_eq!(app.store.context, "local/orders");
    assert_eq!(desired(&app), Some(8));

    // Production: typed confirmation at once, cluster b on screen.
    let intent = typed(&mut app, ":ctx prod").expect("a switch");
    assert!(matches!(intent, Intent::SwitchContext(ref name) if name == "prod"));
    console.handle(&mut app, intent).await;
    assert_eq!(app.store.context, "prod/orders");
    assert!(app.guard.typed_confirmation && !app.guard.read_only);
    let top = header(&app);
    assert!(
        top.contains("prod/orders") && top.contains("[PRODUCTION]"),
        "{top}"
    );
    pump_until(&mut console, &mut app, "cluster b on screen", |app| {
        desired(app) == Some(3)
    })
    .await;
    app.on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE));
    assert!(
        app.popup.as_ref().is_some_and(|p| p.typed.is_some()),
        "a run in prod needs the playbook's name typed"
    );
    app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));

    // A read-only context refuses runs from the next key on.
    let intent = typed(&mut app, ":ctx audit").expect("a switch");
    console.handle(&mut app, intent).await;
    assert!(app.guard.read_only);
    assert!(header(&app).contains("[READ-ONLY]"));
    assert!(
        app.on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE))
            .is_none()
    );
    assert!(app.popup.is_none());
    pump_until(&mut console, &mut app, "cluster a again", |app| {
        desired(app) == Some(8)
    })
    .await;
    assert!(console.undo_flags().contains("--context audit"));
    console.stop();
    a.stop().await;
    b.stop().await;
}
