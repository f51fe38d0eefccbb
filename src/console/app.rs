//! The console's state besides the store (focus, popup, input, view) and
//! what keys do to it. Keys never act themselves: they change this state or
//! return an [`Intent`] that the loop hands to [`super::action::Actions`]
//! (gitui's and kdash's idea: an action is data until it is confirmed).

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::action::{ActionEvent, GateReply, step_message, step_status};
use super::collect::Update;
use super::store::{RunState, RunView, SourceState, StepLine, StepStatus, Store};
use crate::playbook::{ConfirmRequest, Confirmation};
use crate::timeline::Milestone;
use crate::timeline::export::Format;

/// Which screen is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Charts, cluster, alerts, playbook, timeline.
    Main,
    /// The timeline alone (`:timeline`).
    Timeline,
    /// The playbook list and the selected plan (`:playbooks`).
    Playbooks,
}

/// Which list the arrows move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Firing alerts.
    Alerts,
    /// Playbooks.
    Playbooks,
    /// The timeline.
    Timeline,
}

/// What a line of input is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// `:` command.
    Command,
    /// `/` filter.
    Filter,
    /// `n` note.
    Note,
    /// `m` milestone.
    Milestone,
    /// `s` severity.
    Severity,
}

impl Prompt {
    /// The prompt shown before the text.
    pub fn label(self) -> &'static str {
        match self {
            Prompt::Command => ":",
            Prompt::Filter => "/",
            Prompt::Note => "note: ",
            Prompt::Milestone => "milestone (started detected declared mitigated resolved): ",
            Prompt::Severity => "severity (SEV-1..SEV-4): ",
        }
    }
}

/// A line being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// What it is for.
    pub prompt: Prompt,
    /// The text so far.
    pub text: String,
}

/// What a confirmation popup does when accepted.
#[derive(Debug)]
pub enum Pending {
    /// Start a run (or dry run) of a playbook.
    Run {
        /// Playbook name.
        playbook: String,
        /// Dry run.
        dry_run: bool,
    },
    /// Undo the last run.
    Undo,
    /// Quit while a run is in progress (it is cancelled and undone).
    Quit,
    /// Answer an engine gate.
    Gate(GateReply),
}

/// The one confirmation popup.
#[derive(Debug)]
pub struct Popup {
    /// Title line.
    pub title: String,
    /// What will happen, one line each.
    pub lines: Vec<String>,
    /// Context and namespace acted in (shown in bold).
    pub target: String,
    /// The exact text to type, for a typed gate.
    pub typed: Option<String>,
    /// What was typed so far.
    pub answer: String,
    /// What accepting does.
    pub pending: Pending,
    /// Why the last Enter did nothing.
    pub hint: Option<String>,
}

/// What the loop must do after a key.
#[derive(Debug)]
pub enum Intent {
    /// Compute and show a plan.
    Plan(String),
    /// Run a playbook.
    Run {
        /// Playbook name.
        playbook: String,
        /// Dry run.
        dry_run: bool,
    },
    /// Answer an engine gate.
    Answer(GateReply, Confirmation),
    /// Undo the last run.
    Undo,
    /// Cancel the run in progress.
    Cancel,
    /// Add a note.
    Note(String),
    /// Mark a milestone.
    Milestone(Milestone),
    /// Set the severity.
    Severity(String),
    /// Export the timeline.
    Export(Vec<Format>),
    /// Attach to another kubeconfig context (a name the kubeconfig has).
    SwitchContext(String),
    /// Leave (cancelling a run in progress first).
    Quit,
}

/// Per-context guardrails in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// Changes are refused.
    pub read_only: bool,
    /// Runs need the playbook's name typed to start (production contexts).
    pub typed_confirmation: bool,
}

/// The whole console state.
#[derive(Debug)]
pub struct App {
    /// What the panels draw.
    pub store: Store,
    /// "Now" for ages and charts (Unix ms), set each frame.
    pub now_ms: i64,
    /// The screen.
    pub view: View,
    /// Focused list.
    pub focus: Focus,
    /// Selected playbook.
    pub selected: usize,
    /// Selected alert.
    pub alert_selected: usize,
    /// Timeline lines scrolled up from the newest (0 follows).
    pub scroll: usize,
    /// Small screens: which chart (0 lock, 1 errors).
    pub chart: usize,
    /// Chart window in seconds.
    pub window_s: i64,
    /// The confirmation popup.
    pub popup: Option<Popup>,
    /// Gates waiting behind the open popup.
    pub queued: VecDeque<(ConfirmRequest, GateReply)>,
    /// The line being typed.
    pub input: Option<Input>,
    /// The filter typed after `/` (empty: none), as typed.
    pub filter: String,
    /// The list the filter applies to (the focused one when `/` was typed).
    pub filter_focus: Focus,
    /// The filter in lower case, for case-insensitive matching.
    filter_lower: String,
    /// Quitting: waiting for a cancelled run's undo before leaving.
    pub quitting: Option<Quitting>,
    /// Help shown.
    pub help: bool,
    /// Leave after this frame.
    pub quit: bool,
    /// Colours allowed (`NO_COLOR` unset).
    pub color: bool,
    /// Guardrails.
    pub guard: Guardrails,
    /// Chart lines downsampled for the panels, reused until a new sample.
    pub chart_cache: std::cell::RefCell<super::ui::ChartCache>,
}

/// How long quitting waits for a cancelled run's undo.
pub const QUIT_WAIT_MS: i64 = 30_000;

/// The console is leaving; a run in progress was cancelled and its undo
/// is awaited (at most [`QUIT_WAIT_MS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quitting {
    /// When quitting was confirmed (Unix ms).
    pub since_ms: i64,
    /// Whether a run was in progress then (its undo is awaited).
    pub waiting: bool,
}

/// Kinds of step that change nothing in the cluster.
const NO_CHANGE_KINDS: [&str; 3] = ["confirm", "note", "wait"];

/// Chart windows `+`/`-` step through.
pub const WINDOWS: [i64; 7] = [30, 60, 120, 300, 900, 1_800, 3_600];

impl App {
    /// A console over `store`.
    pub fn new(store: Store, guard: Guardrails, color: bool) -> Self {
        let mut store = store;
        store.read_only = guard.read_only;
        Self {
            store,
            now_ms: 0,
            view: View::Main,
            focus: Focus::Alerts,
            selected: 0,
            alert_selected: 0,
            scroll: 0,
            chart: 0,
            window_s: 300,
            popup: None,
            queued: VecDeque::new(),
            input: None,
            filter: String::new(),
            filter_focus: Focus::Alerts,
            filter_lower: String::new(),
            quitting: None,
            help: false,
            quit: false,
            color,
            guard,
            chart_cache: Default::default(),
        }
    }

    /// True while a run or undo is in progress.
    pub fn running(&self) -> bool {
        matches!(
            self.store.run.as_ref().map(|r| &r.state),
            Some(RunState::Running | RunState::DryRun)
        )
    }

    /// The playbook `r` and `d` act on: the one answering the selected
    /// alert when the alerts have focus, else the selected playbook.
    pub fn target_playbook(&self) -> Option<String> {
        if self.focus == Focus::Alerts
            && let Some(alert) = self.store.alerts.get(self.alert_selected)
            && let Some(playbook) = self.store.playbooks_for(&alert.name).first()
        {
            return Some(playbook.name.clone());
        }
        self.store
            .playbooks
            .get(self.selected)
            .map(|p| p.name.clone())
    }

    fn say(&mut self, text: impl Into<String>) {
        self.store.status = Some(text.into());
    }

    fn refuse_read_only(&mut self, what: &str) -> bool {
        if self.guard.read_only {
            self.say(format!(
                "read-only: {what} refused (started with --read-only, or the context is read-only in the config)"
            ));
        }
        self.guard.read_only
    }

    /// Folds an update into the store.
    pub fn apply(&mut self, update: Update) {
        let store = &mut self.store;
        match update {
            Update::Exporter { at_ms, result } => match result {
                Ok(reading) => {
                    store.exporter.ok(at_ms);
                    store.record_reading(at_ms, reading);
                }
                Err(e) => store.exporter.failed(at_ms, e),
            },
            Update::Prometheus { at_ms, result } => match result {
                Ok(reading) => {
                    store.prometheus.ok(at_ms);
                    if !store.exporter.configured {
                        store.record_reading(at_ms, reading);
                    }
                }
                Err(e) => store.prometheus.failed(at_ms, e),
            },
            Update::Alerts { at_ms, result } => store.record_prometheus_alerts(at_ms, result),
            Update::Cluster { at_ms, result } => match result {
                Ok(view) => {
                    store.cluster_source.ok(at_ms);
                    store.cluster = Some(view);
                }
                Err(e) => store.cluster_source.failed(at_ms, e),
            },
            Update::Timeline {
                at_ms,
                restart,
                result,
            } => {
                if restart {
                    store.forget_timeline();
                }
                match result {
                    Ok(events) => {
                        store.timeline_source.ok(at_ms);
                        store.record_events(&events);
                    }
                    Err(e) => store.timeline_source.failed(at_ms, e),
                }
            }
            Update::Action(event) => self.apply_action(event),
        }
        self.keep_selection_visible();
    }

    fn apply_action(&mut self, event: ActionEvent) {
        match event {
            ActionEvent::Planned(view) => {
                if !self.running() {
                    let name = view.playbook.clone();
                    self.store.run = Some(view);
                    // A run popup opened before the plan came shows it now.
                    if let Some(popup) = self.popup.as_mut()
                        && let Pending::Run { playbook, .. } = &popup.pending
                        && *playbook == name
                    {
                        popup.lines = plan_lines(self.store.run.as_ref());
                    }
                }
            }
            ActionEvent::Step(event) => {
                let fresh = self
                    .store
                    .run
                    .as_ref()
                    .is_none_or(|r| r.run_id.as_deref() != Some(&event.run_id));
                if fresh {
                    let steps = match &self.store.run {
                        Some(view) if view.playbook == event.playbook => view
                            .steps
                            .iter()
                            .map(|s| StepLine {
                                status: StepStatus::Planned,
                                message: String::new(),
                                ..s.clone()
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    self.store.run = Some(RunView {
                        playbook: event.playbook.clone(),
                        run_id: Some(event.run_id.clone()),
                        steps,
                        state: RunState::Running,
                        message: String::new(),
                    });
                }
                let Some(run) = self.store.run.as_mut() else {
                    return;
                };
                if matches!(run.state, RunState::Plan | RunState::Ended { .. }) {
                    run.state = RunState::Running;
                }
                if event.phase == crate::playbook::StepPhase::DryRun {
                    run.state = RunState::DryRun;
                }
                let status = step_status(event.phase);
                let message = step_message(&event);
                match run.steps.iter_mut().find(|s| s.name == event.step) {
                    Some(step) => {
                        // A planned event after a run started does not
                        // take back progress.
                        if event.phase != crate::playbook::StepPhase::Planned
                            || step.status == StepStatus::Planned
                        {
                            step.status = status;
                        }
                        if !message.is_empty() {
                            step.message = message;
                        }
                    }
                    None => run.steps.push(StepLine {
                        name: event.step.clone(),
                        kind: event.kind.clone(),
                        what: event
                            .target
                            .as_ref()
                            .map(|t| format!("{}/{}", t.kind, t.name))
                            .unwrap_or_default(),
                        status,
                        message,
                    }),
                }
            }
            ActionEvent::Gate { request, reply } => {
                if self.popup.is_some() {
                    self.queued.push_back((request, reply));
                } else {
                    self.popup = Some(self.gate_popup(request, reply));
                }
            }
            ActionEvent::Finished {
                outcome,
                ok,
                message,
            } => {
                self.say(format!("{outcome}: {message}"));
                match self.store.run.as_mut() {
                    Some(run) => {
                        run.state = RunState::Ended { outcome, ok };
                        run.message = message;
                    }
                    None => {
                        self.store.run = Some(RunView {
                            playbook: "undo".into(),
                            run_id: None,
                            steps: Vec::new(),
                            state: RunState::Ended { outcome, ok },
                            message,
                        })
                    }
                }
                // A gate left open by a run that ended answers nothing.
                if matches!(
                    self.popup.as_ref().map(|p| &p.pending),
                    Some(Pending::Gate(_))
                ) {
                    self.popup = None;
                }
            }
            ActionEvent::Status(text) => self.say(text),
        }
    }

    fn gate_popup(&self, request: ConfirmRequest, reply: GateReply) -> Popup {
        Popup {
            title: format!("{} · step {}", request.playbook, request.step),
            lines: request
                .prompt
                .lines()
                .map(|l| crate::redact::redact_text(l).into_owned())
                .collect(),
            target: self.store.context.clone(),
            typed: request.answer.clone(),
            answer: String::new(),
            pending: Pending::Gate(reply),
            hint: None,
        }
    }

    /// A run's confirmation popup: the plan summary, the context in bold,
    /// and for production contexts the playbook's name to type.
    pub fn run_popup(&self, playbook: &str, dry_run: bool) -> Popup {
        let lines = plan_lines(self.store.run.as_ref().filter(|r| r.playbook == playbook));
        Popup {
            title: if dry_run {
                format!("Dry run {playbook}? Nothing changes.")
            } else {
                format!("Run {playbook}?")
            },
            lines,
            target: self.store.context.clone(),
            typed: (self.guard.typed_confirmation && !dry_run).then(|| playbook.to_owned()),
            answer: String::new(),
            pending: Pending::Run {
                playbook: playbook.to_owned(),
                dry_run,
            },
            hint: None,
        }
    }

    /// Handles one key; returns what the loop must do.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Intent> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return self.ask_quit();
        }
        if self.popup.is_some() {
            return self.popup_key(key);
        }
        if self.input.is_some() {
            return self.input_key(key);
        }
        if self.help {
            self.help = false;
            return None;
        }
        self.store.status = None;
        match key.code {
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('q') => return self.ask_quit(),
            KeyCode::Char(':') => self.open(Prompt::Command),
            KeyCode::Char('/') => self.open(Prompt::Filter),
            KeyCode::Esc => {
                // As in k9s: esc clears the filter first, then leaves the view.
                if self.filter.is_empty() {
                    self.view = View::Main;
                } else {
                    self.set_filter(String::new());
                }
            }
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Alerts => Focus::Playbooks,
                    Focus::Playbooks => Focus::Timeline,
                    Focus::Timeline => Focus::Alerts,
                };
                self.chart = (self.chart + 1) % 2;
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('-') => self.zoom(1),
            KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('+') => self.zoom(-1),
            KeyCode::Enter => {
                if let Some(name) = self.target_playbook() {
                    if let Some(i) = self.store.playbooks.iter().position(|p| p.name == name) {
                        self.selected = i;
                    }
                    return Some(Intent::Plan(name));
                }
            }
            KeyCode::Char('r') | KeyCode::Char('d') => {
                let dry_run = key.code == KeyCode::Char('d');
                if self.refuse_read_only(if dry_run { "dry run" } else { "run" }) {
                    return None;
                }
                if self.running() {
                    self.say("a run is in progress: wait for it, or cancel it with c");
                    return None;
                }
                let Some(name) = self.target_playbook() else {
                    self.say("no playbook selected (:playbooks)");
                    return None;
                };
                self.popup = Some(self.run_popup(&name, dry_run));
                return Some(Intent::Plan(name));
            }
            KeyCode::Char('u') => {
                if self.refuse_read_only("undo") {
                    return None;
                }
                self.popup = Some(Popup {
                    title: "Undo the last run?".into(),
                    lines: vec![
                        "Every change the last run in this namespace made is put back,".into(),
                        "unless the object changed since (then nothing is touched).".into(),
                    ],
                    target: self.store.context.clone(),
                    typed: None,
                    answer: String::new(),
                    pending: Pending::Undo,
                    hint: None,
                });
            }
            KeyCode::Char('c') => {
                if self.refuse_read_only("cancel") {
                    return None;
                }
                return Some(Intent::Cancel);
            }
            KeyCode::Char('n') => self.open(Prompt::Note),
            KeyCode::Char('m') => self.open(Prompt::Milestone),
            KeyCode::Char('s') => self.open(Prompt::Severity),
            KeyCode::Char('e') => {
                return Some(Intent::Export(vec![Format::Markdown, Format::Html]));
            }
            _ => {}
        }
        None
    }

    fn ask_quit(&mut self) -> Option<Intent> {
        if self.quitting.is_some() {
            return None;
        }
        if !self.running() {
            self.begin_quit();
            return Some(Intent::Quit);
        }
        if self.popup.is_none() {
            self.popup = Some(Popup {
                title: "Quit while a run is in progress?".into(),
                lines: vec![
                    "The run is cancelled before its next change and what it applied is undone."
                        .into(),
                ],
                target: self.store.context.clone(),
                typed: None,
                answer: String::new(),
                pending: Pending::Quit,
                hint: None,
            });
        }
        None
    }

    fn open(&mut self, prompt: Prompt) {
        let text = if prompt == Prompt::Filter {
            // One filter at a time, on the focused list.
            if self.filter_focus != self.focus {
                self.set_filter(String::new());
                self.filter_focus = self.focus;
            }
            self.filter.clone()
        } else {
            String::new()
        };
        self.input = Some(Input { prompt, text });
    }

    /// Leaves: at once, or after the cancelled run's undo (at most
    /// [`QUIT_WAIT_MS`]); the loop cancels the run.
    fn begin_quit(&mut self) {
        self.quit = true;
        self.quitting = Some(Quitting {
            since_ms: self.now_ms,
            waiting: self.running(),
        });
    }

    /// SIGTERM or the end of input: leave without asking (a run in
    /// progress is cancelled and its undo awaited, as after `q`).
    pub fn on_terminate(&mut self) {
        self.popup = None;
        self.begin_quit();
    }

    /// Whether the loop may leave now: quitting, and the run is no longer
    /// `busy` or the wait is over.
    pub fn quit_ready(&self, busy: bool) -> bool {
        match &self.quitting {
            // The run's end is awaited as the engine reports it, so that
            // what it undid is known before leaving.
            Some(q) => {
                let awaited = busy || (q.waiting && self.running());
                let run_over = !awaited;
                run_over || self.now_ms - q.since_ms >= QUIT_WAIT_MS
            }
            None => false,
        }
    }

    /// Steps of the run on screen that changed something and are not put
    /// back (yet): what a quit waits for, and what it leaves behind.
    pub fn applied_steps(&self) -> Vec<&StepLine> {
        self.store
            .run
            .as_ref()
            .map(|run| {
                run.steps
                    .iter()
                    .filter(|s| {
                        matches!(s.status, StepStatus::Done | StepStatus::Running)
                            && !NO_CHANGE_KINDS.contains(&s.kind.as_str())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What to print once the terminal is restored after quitting: what
    /// the run left, and the command that undoes it (`undo_flags`: the
    /// kubeconfig, context and namespace flags). Empty when no run was
    /// cancelled.
    pub fn quit_report(&self, undo_flags: &str) -> Vec<String> {
        let Some(quitting) = &self.quitting else {
            return Vec::new();
        };
        if !quitting.waiting {
            return Vec::new();
        }
        let Some(run) = &self.store.run else {
            return Vec::new();
        };
        let id = run.run_id.as_deref().unwrap_or("(not started)");
        let left = self.applied_steps();
        let ended = matches!(run.state, RunState::Ended { .. });
        if left.is_empty() {
            return vec![format!(
                "Run {id} of {} was cancelled; nothing it changed is left.",
                run.playbook
            )];
        }
        let mut lines = vec![if ended {
            format!(
                "Run {id} of {} was cancelled, but its undo did not put everything back. Left applied:",
                run.playbook
            )
        } else {
            format!(
                "Run {id} of {} was cancelled, but its undo did not finish within {} s. Possibly left applied:",
                run.playbook,
                QUIT_WAIT_MS / 1_000
            )
        }];
        for step in left {
            lines.push(format!("  {} ({}) {}", step.name, step.kind, step.what));
        }
        let target = if run.run_id.is_some() { id } else { "--last" };
        lines.push(format!("Undo it with: warroom undo {target} {undo_flags}"));
        lines
    }

    /// Sets the filter (case-insensitive) and keeps the selection visible.
    pub fn set_filter(&mut self, text: String) {
        self.filter_lower = text.to_lowercase();
        self.filter = text;
        self.scroll = 0;
        self.keep_selection_visible();
    }

    /// The lower-case filter on the list `focus`, if it has one.
    pub fn filter_on(&self, focus: Focus) -> Option<&str> {
        (!self.filter_lower.is_empty() && self.filter_focus == focus)
            .then_some(self.filter_lower.as_str())
    }

    /// Indexes of the playbooks the filter shows.
    pub fn visible_playbooks(&self) -> Vec<usize> {
        let filter = self.filter_on(Focus::Playbooks);
        self.store
            .playbooks
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                filter.is_none_or(|f| {
                    contains_lower(&p.name, f)
                        || contains_lower(&p.description, f)
                        || p.alerts.iter().any(|a| contains_lower(a, f))
                })
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Indexes of the alerts the filter shows.
    pub fn visible_alerts(&self) -> Vec<usize> {
        let filter = self.filter_on(Focus::Alerts);
        self.store
            .alerts
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                filter.is_none_or(|f| contains_lower(&a.name, f) || contains_lower(&a.detail, f))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Moves each selection onto a row its filter shows: kept when
    /// visible, else the next visible row, else the last one.
    fn keep_selection_visible(&mut self) {
        let nearest = |visible: &[usize], at: usize| -> usize {
            if visible.contains(&at) {
                return at;
            }
            visible
                .iter()
                .copied()
                .find(|&i| i > at)
                .or_else(|| visible.last().copied())
                .unwrap_or(at)
        };
        let playbooks = self.visible_playbooks();
        self.selected = nearest(&playbooks, self.selected);
        let alerts = self.visible_alerts();
        self.alert_selected = nearest(&alerts, self.alert_selected);
    }

    fn move_by(&mut self, delta: isize) {
        // Among the rows the filter shows.
        let step = |visible: &[usize], value: usize| -> usize {
            let Some(at) = visible.iter().position(|&i| i == value) else {
                return visible.first().copied().unwrap_or(value);
            };
            let next = at.saturating_add_signed(delta).min(visible.len() - 1);
            visible[next]
        };
        match self.focus {
            Focus::Alerts => {
                let visible = self.visible_alerts();
                self.alert_selected = step(&visible, self.alert_selected);
            }
            Focus::Playbooks => {
                let visible = self.visible_playbooks();
                self.selected = step(&visible, self.selected);
            }
            Focus::Timeline => {
                // Up scrolls back in time.
                self.scroll = self
                    .scroll
                    .saturating_add_signed(-delta)
                    .min(self.store.timeline.len().saturating_sub(1));
            }
        }
    }

    fn zoom(&mut self, by: isize) {
        let at = WINDOWS
            .iter()
            .position(|&w| w >= self.window_s)
            .unwrap_or(3);
        let next = at.saturating_add_signed(by).min(WINDOWS.len() - 1);
        self.window_s = WINDOWS[next];
    }

    fn popup_key(&mut self, key: KeyEvent) -> Option<Intent> {
        let popup = self.popup.as_mut()?;
        let accept = match (key.code, popup.typed.as_deref()) {
            (KeyCode::Esc, _) => false,
            (KeyCode::Char('n'), None) => false,
            (KeyCode::Char('y') | KeyCode::Enter, None) => true,
            (KeyCode::Enter, Some(word)) => {
                if popup.answer.is_empty() {
                    return None;
                }
                if popup.answer != word {
                    popup.hint = Some(format!("type exactly: {word}"));
                    return None;
                }
                true
            }
            (KeyCode::Backspace, Some(_)) => {
                popup.answer.pop();
                return None;
            }
            (KeyCode::Char(c), Some(_)) if !c.is_control() && popup.answer.len() < 256 => {
                popup.answer.push(c);
                popup.hint = None;
                return None;
            }
            _ => return None,
        };
        let popup = self.popup.take()?;
        if let Some((request, reply)) = self.queued.pop_front() {
            self.popup = Some(self.gate_popup(request, reply));
        }
        match (popup.pending, accept) {
            (Pending::Run { playbook, dry_run }, true) => Some(Intent::Run { playbook, dry_run }),
            (Pending::Undo, true) => Some(Intent::Undo),
            (Pending::Quit, true) => {
                self.begin_quit();
                Some(Intent::Quit)
            }
            (Pending::Gate(reply), answer) => {
                if !accept {
                    self.say(
                        "declined: the run stops here and keeps what it applied (u undoes it)",
                    );
                }
                Some(Intent::Answer(
                    reply,
                    if answer {
                        Confirmation::Approved
                    } else {
                        Confirmation::Declined
                    },
                ))
            }
            (_, false) => {
                self.say("cancelled: nothing was changed");
                None
            }
        }
    }

    fn input_key(&mut self, key: KeyEvent) -> Option<Intent> {
        let input = self.input.as_mut()?;
        match key.code {
            KeyCode::Esc => {
                let prompt = input.prompt;
                self.input = None;
                if prompt == Prompt::Filter {
                    self.set_filter(String::new());
                }
                None
            }
            KeyCode::Backspace => {
                input.text.pop();
                if input.prompt == Prompt::Filter {
                    let text = input.text.clone();
                    self.set_filter(text);
                }
                None
            }
            KeyCode::Char(c) if !c.is_control() && input.text.chars().count() < 500 => {
                input.text.push(c);
                if input.prompt == Prompt::Filter {
                    let text = input.text.clone();
                    self.set_filter(text);
                }
                None
            }
            KeyCode::Enter => {
                let input = self.input.take()?;
                self.submit(input)
            }
            _ => None,
        }
    }

    /// Handles pasted text (bracketed paste): it goes into the open prompt
    /// as typed text, line breaks and tabs as spaces and other control
    /// characters dropped, never submitting it; with no prompt open it is
    /// ignored, so pasted letters never act as command keys.
    pub fn on_paste(&mut self, text: &str) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        let room = 500usize.saturating_sub(input.text.chars().count());
        let pasted = text
            .chars()
            .filter_map(|c| match c {
                '\n' | '\r' | '\t' => Some(' '),
                c if c.is_control() => None,
                c => Some(c),
            })
            .take(room);
        input.text.extend(pasted);
        if input.prompt == Prompt::Filter {
            let text = input.text.clone();
            self.set_filter(text);
        }
    }

    fn submit(&mut self, input: Input) -> Option<Intent> {
        let text = input.text.trim().to_owned();
        match input.prompt {
            Prompt::Filter => {
                self.set_filter(text);
                None
            }
            Prompt::Note if text.is_empty() => None,
            Prompt::Note => Some(Intent::Note(text)),
            Prompt::Milestone => match parse_milestone(&text) {
                Some(m) => Some(Intent::Milestone(m)),
                None => {
                    self.say(format!(
                        "no milestone {text:?}: started, detected, declared, mitigated or resolved"
                    ));
                    None
                }
            },
            Prompt::Severity => {
                let upper = text.to_ascii_uppercase();
                if ["SEV-1", "SEV-2", "SEV-3", "SEV-4"].contains(&upper.as_str()) {
                    Some(Intent::Severity(upper))
                } else {
                    self.say(format!(
                        "no severity {text:?}: SEV-1, SEV-2, SEV-3 or SEV-4"
                    ));
                    None
                }
            }
            Prompt::Command => self.command(&text),
        }
    }

    fn command(&mut self, text: &str) -> Option<Intent> {
        let mut words = text.split_whitespace();
        match (words.next().unwrap_or(""), words.next()) {
            ("playbooks" | "pb", _) => {
                self.view = View::Playbooks;
                self.focus = Focus::Playbooks;
            }
            ("timeline" | "tl", _) => {
                self.view = View::Timeline;
                self.focus = Focus::Timeline;
            }
            ("main" | "alerts" | "", _) => self.view = View::Main,
            ("ctx" | "context", None) => {
                let listed = if self.store.contexts.is_empty() {
                    "none listed (no kubeconfig)".to_owned()
                } else {
                    self.store
                        .contexts
                        .iter()
                        .map(|c| {
                            if self.store.context_name() == c {
                                format!("{c} (current)")
                            } else {
                                c.clone()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                self.say(format!(
                    "contexts: {listed} · :ctx NAME switches{}",
                    if self.guard.read_only {
                        " · this one is read-only"
                    } else {
                        ""
                    }
                ));
            }
            ("ctx" | "context", Some(name)) => {
                if !self.store.contexts.iter().any(|c| c == name) {
                    let name = crate::redact::redact_text(name).into_owned();
                    self.say(format!(
                        "no context {name:?} in the kubeconfig (:ctx lists them); still on {}",
                        self.store.context
                    ));
                    return None;
                }
                if self.running() {
                    self.say("a run is in progress: wait for it or cancel it (c) before :ctx");
                    return None;
                }
                if self.store.context_name() == name {
                    self.say(format!("already on context {name}"));
                    return None;
                }
                return Some(Intent::SwitchContext(name.to_owned()));
            }
            ("export", format) => {
                let formats = match format {
                    None => vec![Format::Markdown, Format::Html],
                    Some("md" | "markdown") => vec![Format::Markdown],
                    Some("html") => vec![Format::Html],
                    Some("json") => vec![Format::Json],
                    Some(other) => {
                        self.say(format!("no export format {other:?}: md, html or json"));
                        return None;
                    }
                };
                return Some(Intent::Export(formats));
            }
            ("milestone", Some(name)) => match parse_milestone(name) {
                Some(m) => return Some(Intent::Milestone(m)),
                None => self.say(format!("no milestone {name:?}")),
            },
            ("q" | "quit", _) => return self.ask_quit(),
            (other, _) => self.say(format!(
                "no command :{other} (:playbooks :timeline :main :ctx [NAME] :export md|html :milestone NAME :quit)"
            )),
        }
        None
    }

    /// Now attached to `context` (shown as context/namespace) with
    /// `guard`: the cluster view of the previous context is dropped and the
    /// guardrails apply from this key on.
    pub fn switched_context(&mut self, context: String, guard: Guardrails) {
        self.store.context = context;
        self.store.cluster = None;
        let poll = self.store.cluster_source.poll_ms;
        self.store.cluster_source = super::store::Source::new("cluster", true, poll);
        self.store.read_only = guard.read_only;
        self.guard = guard;
        if self.running() {
            return;
        }
        self.store.run = None;
        self.say(format!(
            "context {}{}",
            self.store.context,
            if guard.read_only {
                " (read-only)"
            } else if guard.typed_confirmation {
                " (production: runs need the playbook's name typed)"
            } else {
                ""
            }
        ));
    }

    /// The header's word for a source.
    pub fn source_state(&self, source: &super::store::Source) -> SourceState {
        source.state(self.now_ms)
    }
}

/// The plan summary a run popup shows: one line per step.
fn plan_lines(run: Option<&RunView>) -> Vec<String> {
    match run {
        Some(run) => run
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| format!("{:>2} {:<8} {}", i + 1, step.kind, step.what))
            .collect(),
        None => vec!["(the plan is being computed)".into()],
    }
}

/// Whether `text` contains `lower` (already lower case), ignoring case.
pub fn contains_lower(text: &str, lower: &str) -> bool {
    if text.is_ascii() && lower.is_ascii() {
        let (hay, needle) = (text.as_bytes(), lower.as_bytes());
        return needle.is_empty()
            || hay.windows(needle.len()).any(|w| {
                w.iter()
                    .zip(needle)
                    .all(|(a, b)| a.to_ascii_lowercase() == *b)
            });
    }
    text.to_lowercase().contains(lower)
}

fn parse_milestone(text: &str) -> Option<Milestone> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "started" => Milestone::Started,
        "detected" => Milestone::Detected,
        "declared" => Milestone::Declared,
        "mitigated" => Milestone::Mitigated,
        "resolved" => Milestone::Resolved,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn app(guard: Guardrails) -> App {
        let mut store = Store::new(1_000, 3_600_000);
        store.playbooks.push(super::super::store::PlaybookEntry {
            name: "lock-contention".into(),
            description: String::new(),
            alerts: vec!["LockConcurrentHolders".into()],
        });
        App::new(store, guard, false)
    }

    #[test]
    fn read_only_refuses_runs_and_says_so() {
        let mut app = app(Guardrails {
            read_only: true,
            typed_confirmation: false,
        });
        assert!(app.on_key(key(KeyCode::Char('r'))).is_none());
        assert!(app.popup.is_none());
        assert!(
            app.store
                .status
                .as_deref()
                .unwrap()
                .starts_with("read-only")
        );
        assert!(app.on_key(key(KeyCode::Char('u'))).is_none());
    }

    #[test]
    fn typed_confirmation_needs_the_exact_word_and_enter_on_empty_does_nothing() {
        let mut app = app(Guardrails {
            read_only: false,
            typed_confirmation: true,
        });
        assert!(matches!(
            app.on_key(key(KeyCode::Char('r'))),
            Some(Intent::Plan(_))
        ));
        assert!(app.on_key(key(KeyCode::Enter)).is_none());
        assert!(app.popup.is_some(), "empty answer: nothing happens");
        for c in "lock".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(app.on_key(key(KeyCode::Enter)).is_none());
        assert!(app.popup.as_ref().unwrap().hint.is_some());
        for c in "-contention".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(matches!(
            app.on_key(key(KeyCode::Enter)),
            Some(Intent::Run { dry_run: false, .. })
        ));
    }

    #[test]
    fn escape_declines_a_run() {
        let mut app = app(Guardrails::default());
        app.on_key(key(KeyCode::Char('r')));
        assert!(app.on_key(key(KeyCode::Esc)).is_none());
        assert!(app.popup.is_none());
        assert!(
            app.store
                .status
                .as_deref()
                .unwrap()
                .contains("nothing was changed")
        );
    }

    #[test]
    fn note_and_milestone_become_intents() {
        let mut app = app(Guardrails::default());
        app.on_key(key(KeyCode::Char('n')));
        for c in "scaled down".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(
            matches!(app.on_key(key(KeyCode::Enter)), Some(Intent::Note(t)) if t == "scaled down")
        );
        app.on_key(key(KeyCode::Char('m')));
        for c in "mitigated".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(matches!(
            app.on_key(key(KeyCode::Enter)),
            Some(Intent::Milestone(Milestone::Mitigated))
        ));
    }
}
