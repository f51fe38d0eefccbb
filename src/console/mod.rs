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
//! only through [`crate::kube`] (and the kube-rs watches opened on its
//! client).

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
    // With Prometheus, its rules decide what fires; without, the console
    // evaluates the same rules on the readings.
    store.alerts_source.configured = settings.prometheus.is_some();
    store.alerts_from_prometheus = settings.prometheus.is_some();
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

/// The kubeconfig's context names, in file order (several files merged,
/// first mention wins), for `:ctx`.
pub fn kubeconfig_contexts(kube: &KubeAccess) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for path in &kube.origin().kubeconfigs {
        let Ok(config) = ::kube::config::Kubeconfig::read_from(path) else {
            continue;
        };
        for context in config.contexts {
            if !names.contains(&context.name) {
                names.push(context.name);
            }
        }
    }
    names
}

/// The console without its terminal: the collectors, the actions and the
/// channels they report on. The terminal loop ([`run`]) feeds it keys and
/// draws the app; tests drive it directly.
pub struct Console {
    options: ConsoleOptions,
    kube: Arc<KubeAccess>,
    /// Where playbook runs and journal writes go.
    pub actions: action::Actions,
    updates_tx: mpsc::Sender<Update>,
    updates: mpsc::Receiver<Update>,
    /// The cluster collector's own channel: replaced on `:ctx`, so nothing
    /// from the previous context arrives after the switch.
    cluster_updates: mpsc::Receiver<Update>,
    action_events: mpsc::UnboundedReceiver<action::ActionEvent>,
    stop: CancellationToken,
    cluster_stop: CancellationToken,
}

impl Console {
    /// Attaches to the cluster, opens the journal and starts every
    /// collector; returns the console and its app.
    pub async fn start(options: ConsoleOptions, color: bool) -> Result<(Self, App), ConsoleError> {
        let attached = attach(&options).await?;
        let settings = options.settings.clone();
        let mut app = new_app(&settings, &attached, color);
        app.store.contexts = kubeconfig_contexts(&attached.kube);
        let (updates_tx, updates) = mpsc::channel::<Update>(1_024);
        let (actions_tx, action_events) = mpsc::unbounded_channel();
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
                url.clone(),
                poll,
                updates_tx.clone(),
                stop.clone(),
            ));
            tokio::spawn(collect::prometheus_alerts(
                url,
                poll,
                updates_tx.clone(),
                stop.clone(),
            ));
        }
        if let Some(path) = settings.timeline.clone() {
            tokio::spawn(collect::journal(
                path,
                Duration::from_millis(250),
                updates_tx.clone(),
                stop.clone(),
            ));
        }
        let cluster_stop = stop.child_token();
        let cluster_updates = spawn_cluster(&attached.kube, poll, cluster_stop.clone());
        Ok((
            Self {
                options,
                kube: attached.kube,
                actions,
                updates_tx,
                updates,
                cluster_updates,
                action_events,
                stop,
                cluster_stop,
            },
            app,
        ))
    }

    /// The next update from a collector or an action (None: all ended).
    /// Cancel-safe: nothing is lost when another branch of a `select!`
    /// wins.
    pub async fn next(&mut self) -> Option<Update> {
        tokio::select! {
            Some(update) = self.updates.recv() => Some(update),
            Some(update) = self.cluster_updates.recv() => Some(update),
            Some(event) = self.action_events.recv() => Some(Update::Action(event)),
            else => None,
        }
    }

    /// Folds everything already waiting into `app`.
    pub fn drain(&mut self, app: &mut App) {
        while let Ok(update) = self.updates.try_recv() {
            app.apply(update);
        }
        while let Ok(update) = self.cluster_updates.try_recv() {
            app.apply(update);
        }
        while let Ok(event) = self.action_events.try_recv() {
            app.apply(Update::Action(event));
        }
    }

    /// Carries out an intent: actions go to the adapter; quitting cancels
    /// a run in progress; `:ctx NAME` attaches to another context.
    pub async fn handle(&mut self, app: &mut App, intent: Intent) {
        match intent {
            Intent::Quit => {
                if self.actions.busy() {
                    self.actions.cancel();
                }
            }
            Intent::SwitchContext(name) => self.switch_context(app, &name).await,
            other => dispatch(&self.actions, other),
        }
    }

    /// Attaches to the kubeconfig context `name`: the cluster collector
    /// restarts against it, actions act there, its guardrails apply at
    /// once. When it cannot be used, the screen says why and nothing
    /// changes.
    pub async fn switch_context(&mut self, app: &mut App, name: &str) {
        if self.actions.busy() {
            app.store.status =
                Some("a run is in progress: wait for it or cancel it (c) before :ctx".into());
            return;
        }
        let mut options = self.options.clone();
        options.kube.context = Some(name.to_owned());
        let attached = match attach(&options).await {
            Ok(attached) => attached,
            Err(e) => {
                app.store.status = Some(format!(
                    "cannot use context {}: {}; still on {}",
                    crate::redact::redact_text(name),
                    crate::redact::redact_text(&e.to_string()),
                    app.store.context
                ));
                return;
            }
        };
        self.cluster_stop.cancel();
        self.cluster_stop = self.stop.child_token();
        let poll = Duration::from_millis(self.options.settings.poll_ms);
        self.cluster_updates = spawn_cluster(&attached.kube, poll, self.cluster_stop.clone());
        self.actions.set_kube(attached.kube.clone());
        self.kube = attached.kube;
        self.options = options;
        app.switched_context(attached.context, attached.guard);
    }

    /// The kubeconfig, context and namespace flags that address the
    /// cluster the console is attached to (for the undo command it prints).
    pub fn undo_flags(&self) -> String {
        let mut flags = Vec::new();
        if let Some(path) = &self.options.kube.kubeconfig {
            flags.push(format!("--kubeconfig {}", path.display()));
        }
        if let Some(context) = &self.kube.origin().context {
            flags.push(format!("--context {context}"));
        }
        flags.push(format!("-n {}", self.kube.namespace()));
        flags.join(" ")
    }

    /// Stops every collector.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// A sender of updates (what collectors use), for tests and drills.
    pub fn updates_sender(&self) -> mpsc::Sender<Update> {
        self.updates_tx.clone()
    }
}

fn spawn_cluster(
    kube: &Arc<KubeAccess>,
    refresh: Duration,
    stop: CancellationToken,
) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(collect::cluster(
        kube.clone(),
        ClusterObjects::pm003(kube.namespace()),
        refresh,
        tx,
        stop,
    ));
    rx
}

/// Runs the console until the user quits or SIGTERM, SIGHUP or SIGINT
/// arrives. The terminal
/// is restored on every way out, panics included (`ratatui::init`'s hook).
/// Quitting during a run cancels it and waits for its undo (at most
/// [`app::QUIT_WAIT_MS`]), showing what it waits for; what the run left,
/// if anything, is printed once the terminal is restored.
pub async fn run(options: ConsoleOptions) -> Result<(), ConsoleError> {
    let (mut console, mut app) = Console::start(options, color_allowed()).await?;
    let mut terminate = StopSignals::new()?;
    // From here every way out restores the terminal: `restore` below, and
    // the panic hook `try_init` installs.
    let mut terminal = ratatui::try_init().map_err(|e| ConsoleError::Terminal(e.to_string()))?;
    paste_mode(true);
    let mut keys = crossterm::event::EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let outcome = loop {
        app.now_ms = collect::now_ms();
        if let Err(e) = terminal.draw(|frame| ui::draw(frame, &app)) {
            break Err(ConsoleError::Terminal(e.to_string()));
        }
        if app.quit_ready(console.actions.busy()) {
            break Ok(());
        }
        let mut intents = Vec::new();
        tokio::select! {
            _ = tick.tick() => {}
            _ = terminate.recv() => {
                if app.quitting.is_none() {
                    app.on_terminate();
                    intents.push(Intent::Quit);
                }
            }
            Some(update) = console.next() => app.apply(update),
            event = keys.next() => match event {
                Some(Ok(crossterm::event::Event::Key(key))) => intents.extend(app.on_key(key)),
                Some(Ok(crossterm::event::Event::Paste(text))) => app.on_paste(&text),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(ConsoleError::Terminal(e.to_string())),
                None => {
                    if app.quitting.is_none() {
                        app.on_terminate();
                        intents.push(Intent::Quit);
                    }
                }
            },
        }
        // Drain what else arrived, then draw once.
        console.drain(&mut app);
        for intent in intents {
            console.handle(&mut app, intent).await;
        }
    };
    console.stop();
    paste_mode(false);
    ratatui::restore();
    for line in app.quit_report(&console.undo_flags()) {
        println!("{line}");
    }
    outcome
}

/// SIGTERM, SIGHUP (the terminal or its multiplexer went away, or `kill
/// -HUP`) and SIGINT from outside, as one stream: each one quits the way
/// SIGTERM does, restoring the terminal, instead of the default action that
/// would leave it raw on the alternate screen.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self, ConsoleError> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| signal(kind).map_err(|e| ConsoleError::Terminal(e.to_string()));
        Ok(Self {
            term: listen(SignalKind::terminate())?,
            hup: listen(SignalKind::hangup())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next of them.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Turns bracketed paste on or off: pasted text then arrives as one
/// event instead of keystrokes (a pasted line break would submit a prompt
/// and the letters after it act as command keys). The panic hook turns it
/// off too, before the terminal is restored.
fn paste_mode(on: bool) {
    use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
    let mut out = std::io::stdout();
    if on {
        let _ = crossterm::execute!(out, EnableBracketedPaste);
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = crossterm::execute!(std::io::stdout(), DisableBracketedPaste);
                previous(info);
            }));
        });
    } else {
        let _ = crossterm::execute!(out, DisableBracketedPaste);
    }
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
        Intent::Quit | Intent::SwitchContext(_) => {}
    }
}
