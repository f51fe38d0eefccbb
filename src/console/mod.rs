//! The war room in a terminal: ratatui + crossterm.
//!
//! Data flows one way: collectors ([`collect`], each on its own task) →
//! [`store`] (ring buffers of 1 s samples, the latest cluster objects, the
//! timeline tail, alerts, each source's state) → panels ([`ui`], pure
//! functions of the store). Keys become intents ([`app`]); intents go to
//! the engine and the journal through [`action`], the one adapter; what
//! they report comes back as updates. The loop drains every channel, then
//! draws; it never waits on I/O.
//!
//! This module owns the screen. It knows the engine only through
//! [`action`], the exporter only through its `/metrics` text, the cluster
//! only through [`crate::kube`].

pub mod action;
pub mod app;
pub mod bench;
pub mod collect;
pub mod config;
pub mod metrics;
pub mod store;
pub mod ui;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::kube::{KubeAccess, KubeTarget};
use app::{App, Guardrails, Intent};
use collect::{ClusterObjects, Update};
use store::Store;

/// How the console attaches to an environment.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// Where the cluster is.
    pub kube: KubeTarget,
    /// Settings (config file, environment and flags merged).
    pub settings: config::Settings,
    /// `--read-only`.
    pub read_only: bool,
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The kubeconfig could not be used.
    #[error("{0}")]
    Kube(String),
    /// The journal could not be opened.
    #[error("{0}")]
    Journal(String),
    /// The terminal could not be used.
    #[error("terminal: {0}")]
    Terminal(String),
}

/// What the console was started against, for its header and guardrails.
pub struct Attached {
    /// The cluster connection.
    pub kube: Arc<KubeAccess>,
    /// Context and namespace as shown.
    pub context: String,
    /// Guardrails in force.
    pub guard: Guardrails,
}

/// Connects to the cluster (no request yet) and decides the guardrails.
pub async fn attach(options: &ConsoleOptions) -> Result<Attached, ConsoleError> {
    let kube = KubeAccess::connect(&options.kube)
        .await
        .map_err(|e| ConsoleError::Kube(crate::redact::redact_text(&e.to_string()).into_owned()))?;
    let context = kube
        .origin()
        .context
        .clone()
        .unwrap_or_else(|| "in-cluster".into());
    let guard = Guardrails {
        read_only: options.read_only || options.settings.read_only_contexts.contains(&context),
        typed_confirmation: options.settings.typed_contexts.contains(&context),
    };
    let shown = format!("{context}/{}", kube.namespace());
    Ok(Attached {
        kube: Arc::new(kube),
        context: shown,
        guard,
    })
}

/// Builds the app state for `attached` (playbooks listed, settings applied).
pub fn new_app(settings: &config::Settings, attached: &Attached, color: bool) -> App {
    let poll = settings.poll_ms as i64;
    let mut store = Store::new(poll, settings.history_minutes as i64 * 60_000);
    store.exporter.configured = settings.exporter.is_some();
    store.prometheus.configured = settings.prometheus.is_some();
    store.timeline_source.configured = settings.timeline.is_some();
    store.error_threshold = settings.error_threshold;
    store.context = attached.context.clone();
    let (playbooks, problems) = action::list_playbooks(&settings.playbooks);
    store.playbooks = playbooks;
    if let Some(problem) = problems.first() {
        store.status = Some(problem.clone());
    }
    if let Some(path) = &settings.timeline {
        store.incident.id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    App::new(store, attached.guard, color)
}

/// Whether colours may be used (`NO_COLOR` unset or empty).
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Opens the journal for writing, within a deadline (another process may
/// hold its lock).
async fn open_journal(path: PathBuf) -> Result<crate::timeline::Journal, String> {
    let opening =
        tokio::task::spawn_blocking(move || crate::timeline::Journal::open_or_create(&path));
    match tokio::time::timeout(Duration::from_secs(5), opening).await {
        Ok(Ok(Ok(journal))) => Ok(journal),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(
            "the journal could not be opened within 5 s (another process holds its lock?)".into(),
        ),
    }
}

/// Runs the console until the user quits or SIGTERM arrives. The terminal
/// is restored on every way out, panics included (`ratatui::init`'s hook).
pub async fn run(options: ConsoleOptions) -> Result<(), ConsoleError> {
    let attached = attach(&options).await?;
    let settings = options.settings.clone();
    let mut app = new_app(&settings, &attached, color_allowed());
    let (updates_tx, mut updates) = mpsc::channel::<Update>(1_024);
    let (actions_tx, mut action_events) = mpsc::unbounded_channel();
    let journal = match &settings.timeline {
        Some(path) => match open_journal(path.clone()).await {
            Ok(journal) => Some(journal),
            Err(e) => {
                app.store.status = Some(format!("journal not writable: {e}"));
                None
            }
        },
        None => None,
    };
    let actions = action::Actions::new(
        Some(attached.kube.clone()),
        settings.playbooks.clone(),
        journal,
        settings.timeline.clone(),
        actions_tx,
    );
    let stop = CancellationToken::new();
    let poll = Duration::from_millis(settings.poll_ms);
    if let Some(url) = settings.exporter.clone() {
        tokio::spawn(collect::exporter(
            url,
            poll,
            updates_tx.clone(),
            stop.clone(),
        ));
    }
    if let Some(url) = settings.prometheus.clone() {
        tokio::spawn(collect::prometheus(
            url,
            poll,
            updates_tx.clone(),
            stop.clone(),
        ));
    }
    tokio::spawn(collect::cluster(
        attached.kube.clone(),
        ClusterObjects::pm003(attached.kube.namespace()),
        poll,
        updates_tx.clone(),
        stop.clone(),
    ));
    if let Some(path) = settings.timeline.clone() {
        tokio::spawn(collect::journal(
            path,
            Duration::from_millis(250),
            updates_tx.clone(),
            stop.clone(),
        ));
    }
    drop(updates_tx);

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ConsoleError::Terminal(e.to_string()))?;
    // From here every way out restores the terminal: `restore` below, and
    // the panic hook `try_init` installs.
    let mut terminal = ratatui::try_init().map_err(|e| ConsoleError::Terminal(e.to_string()))?;
    let mut keys = crossterm::event::EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut quitting: Option<tokio::time::Instant> = None;
    let outcome = loop {
        app.now_ms = collect::now_ms();
        if let Err(e) = terminal.draw(|frame| ui::draw(frame, &app)) {
            break Err(ConsoleError::Terminal(e.to_string()));
        }
        if let Some(since) = quitting
            && (!actions.busy() || since.elapsed() > Duration::from_secs(30))
        {
            break Ok(());
        }
        let mut intents = Vec::new();
        tokio::select! {
            _ = tick.tick() => {}
            _ = terminate.recv() => {
                intents.push(Intent::Quit);
            }
            Some(update) = updates.recv() => app.apply(update),
            Some(event) = action_events.recv() => app.apply(Update::Action(event)),
            event = keys.next() => match event {
                Some(Ok(crossterm::event::Event::Key(key))) => intents.extend(app.on_key(key)),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(ConsoleError::Terminal(e.to_string())),
                None => intents.push(Intent::Quit),
            },
        }
        // Drain what else arrived, then draw once.
        while let Ok(update) = updates.try_recv() {
            app.apply(update);
        }
        while let Ok(event) = action_events.try_recv() {
            app.apply(Update::Action(event));
        }
        for intent in intents {
            if matches!(intent, Intent::Quit) {
                if actions.busy() {
                    actions.cancel();
                }
                quitting.get_or_insert_with(tokio::time::Instant::now);
                continue;
            }
            dispatch(&actions, intent);
        }
    };
    stop.cancel();
    ratatui::restore();
    outcome
}

/// Hands an intent to the adapter.
pub fn dispatch(actions: &action::Actions, intent: Intent) {
    match intent {
        Intent::Plan(name) => actions.plan(&name),
        Intent::Run { playbook, dry_run } => actions.run(&playbook, dry_run),
        Intent::Answer(mut reply, answer) => reply.answer(answer),
        Intent::Undo => actions.undo(),
        Intent::Cancel => actions.cancel(),
        Intent::Note(text) => actions.note(&text),
        Intent::Milestone(m) => actions.milestone(m),
        Intent::Severity(s) => actions.severity(&s),
        Intent::Export(formats) => {
            for format in formats {
                actions.export(format);
            }
        }
        Intent::Quit => {}
    }
}
