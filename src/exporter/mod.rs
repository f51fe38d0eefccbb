//! The collision exporter: reads the lock event stream and Redis expired-key
//! notifications, keeps per lock key who believes they hold it, and serves
//! what it finds as Prometheus metrics (`/metrics`: OpenMetrics when asked
//! for, else the classic text format) for the
//! console and the PM-003 alert rules (`config/alerts.yaml`).
//!
//! This module owns the exporter's state, its metric names and its HTTP
//! endpoints. It reads events through the lock client's schema
//! ([`crate::lock::event`]) and knows nothing else of the lock client, and
//! nothing of the console, playbooks or Kubernetes.
//!
//! # What it guarantees
//!
//! - **Nothing counted twice, nothing skipped.** The stream is read with a
//!   blocking `XREAD` from the ID after the last entry processed; after any
//!   reconnect (Redis restarted, network cut) it continues from that ID, or,
//!   before any entry was read, from the start point resolved at the first
//!   connection. An entry whose ID cannot be read cannot move that position:
//!   a reply made only of such entries is counted once and re-read with a
//!   growing pause, never in a tight loop. A
//!   restarted Redis must keep the stream (append-only file) for entries
//!   written before the restart to be seen; entries trimmed by `MAXLEN`
//!   before they were read are lost to every reader.
//! - **Bounded memory.** Only keys with a believing holder are kept, and
//!   beliefs older than a horizon are forgotten; keys appear as labels only
//!   for the top few ([`ExporterConfig::top_keys`]).
//! - **Bad input is counted, never fatal.** An entry that is not a valid
//!   event increments `warroom_bad_events_total{reason}` and is logged once
//!   per reason.
//! - **Redis going away is a metric, not an outage.** `/metrics` keeps being
//!   served with `warroom_redis_connected` at 0, and reading resumes when
//!   Redis returns.
//!
//! # Clocks
//!
//! Stream entry IDs carry the Redis server's time; lease deadlines are
//! computed from them. Expired-key notices carry no time, so their arrival
//! is timed on this host's clock, which must be close (NTP) to Redis's.

mod keyspace;
pub mod ledger;
mod metrics;
mod stream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::lock::event::{DEFAULT_STREAM, EventKind, EventParseError, LockEvent};
use ledger::Ledger;
use metrics::Metrics;
pub use metrics::{CLASSIC_CONTENT_TYPE, CONTENT_TYPE, Connection, MAX_SERVICES, to_classic_text};

/// The address `/metrics` is served on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Whether the exporter may turn on Redis keyspace notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyspaceEvents {
    /// Turn on `notify-keyspace-events` expired-key events (`Ex`, added to
    /// what is already set) if they are off, and subscribe.
    Allow,
    /// Never change the Redis configuration. Subscribe only if expired-key
    /// events are already on; otherwise say so, and see lease overruns only
    /// from stream times and `lost` events (later).
    Off,
}

/// Where reading starts the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// After the newest entry present at start-up: only new events count.
    Latest,
    /// From the oldest entry still in the stream.
    Beginning,
}

/// How the exporter runs. Its `Debug` shows the Redis URL without its
/// password.
#[derive(Clone)]
pub struct ExporterConfig {
    /// Redis URL (`redis://`, `rediss://`, credentials and db in the URL).
    /// Shown anywhere only through [`crate::redis_url::shown`].
    pub redis_url: String,
    /// Stream key (default: the lock client's [`DEFAULT_STREAM`]).
    pub stream: String,
    /// May the exporter turn keyspace notifications on?
    pub keyspace_events: KeyspaceEvents,
    /// Where reading starts.
    pub start: StartFrom,
    /// Keys labelled on `warroom_lock_holders`; the rest are summed.
    pub top_keys: usize,
    /// Beliefs older than this are forgotten (a holder that crashed never
    /// releases).
    pub belief_horizon: Duration,
    /// Entries per `XREAD`.
    pub batch: usize,
    /// How long one `XREAD` blocks waiting for entries.
    pub block: Duration,
}

impl ExporterConfig {
    /// Defaults for reading `redis_url`'s default lock stream.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            stream: DEFAULT_STREAM.to_string(),
            keyspace_events: KeyspaceEvents::Off,
            start: StartFrom::Latest,
            top_keys: 10,
            belief_horizon: Duration::from_secs(300),
            batch: 1_000,
            block: Duration::from_millis(500),
        }
    }
}

impl std::fmt::Debug for ExporterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterConfig")
            .field("redis_url", &crate::redis_url::shown(&self.redis_url))
            .field("stream", &self.stream)
            .field("keyspace_events", &self.keyspace_events)
            .field("start", &self.start)
            .field("top_keys", &self.top_keys)
            .field("belief_horizon", &self.belief_horizon)
            .field("batch", &self.batch)
            .field("block", &self.block)
            .finish()
    }
}

/// Why the exporter cannot start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The Redis URL cannot be parsed (the message shows it redacted).
    #[error(transparent)]
    RedisUrl(#[from] crate::redis_url::InvalidUrl),
    /// The configuration makes no sense.
    #[error("invalid exporter configuration: {0}")]
    Config(String),
    /// The HTTP listener failed.
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Counts read back from the exporter, for tests, benchmarks and the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    /// Stream entries read.
    pub events_processed: u64,
    /// Entries that were not valid events.
    pub bad_events: u64,
    /// Grants seen.
    pub grants: u64,
    /// Collisions found.
    pub collisions: u64,
    /// Lease overruns found.
    pub lease_overruns: u64,
    /// Fencing rejections seen.
    pub fencing_rejections: u64,
    /// Application errors seen.
    pub app_errors: u64,
    /// Keys currently tracked.
    pub keys_tracked: u64,
    /// Stream time (Unix ms, the Redis server's clock) of the grant that
    /// made the first collision, if any.
    pub first_collision_ms: Option<u64>,
    /// Whether the stream connection is up.
    pub stream_connected: bool,
    /// Whether expired-key notifications are on and subscribed.
    pub keyspace_enabled: bool,
    /// The stream ID reading continues after: the last entry processed,
    /// or, before any, the start point resolved at the first connection
    /// (`0-0` for an empty stream or [`StartFrom::Beginning`]).
    pub last_id: Option<String>,
}

/// A sliding count of application errors over the last 60 s of stream time.
#[derive(Debug)]
struct ErrorWindow {
    /// `(second, count)` per slot, slot = second % 60.
    slots: [(u64, u64); 60],
}

impl Default for ErrorWindow {
    fn default() -> Self {
        Self {
            slots: [(0, 0); 60],
        }
    }
}

impl ErrorWindow {
    fn add(&mut self, at_ms: u64) {
        let second = at_ms / 1_000;
        let slot = &mut self.slots[(second % 60) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
    }

    fn last_minute(&self, now_ms: u64) -> u64 {
        let now = now_ms / 1_000;
        self.slots
            .iter()
            .filter(|(second, _)| *second + 60 > now && *second <= now)
            .map(|(_, count)| count)
            .sum()
    }
}

pub(crate) struct State {
    ledger: Ledger,
    metrics: Metrics,
    errors: ErrorWindow,
    /// Newest stream time seen (ms).
    stream_now_ms: u64,
    logged_bad: HashSet<&'static str>,
    last_id: Option<String>,
    /// The position at which a reply with no usable entry ID was last
    /// counted, so that the same reply coming again is not.
    stuck_at: Option<String>,
    /// Stream time of the grant that made the first collision.
    first_collision_ms: Option<u64>,
}

impl State {
    /// Applies one stream entry: `Ok` fields were parsed by the schema,
    /// `Err` names why not.
    pub(crate) fn entry(
        &mut self,
        id: &str,
        at_ms: u64,
        parsed: Result<LockEvent, EventParseError>,
    ) {
        self.metrics.events.inc();
        self.last_id = Some(id.to_string());
        self.stream_now_ms = self.stream_now_ms.max(at_ms);
        let event = match parsed {
            Ok(event) => event,
            Err(e) => {
                self.bad(e.label(), &format!("entry {id}: {e}"));
                return;
            }
        };
        match event.kind {
            EventKind::Acquired => self.metrics.grants.inc(event.mode),
            EventKind::Released => self.metrics.releases.inc(event.mode),
            EventKind::Rejected => self.metrics.rejections.inc(event.mode),
            EventKind::Error => {
                self.metrics.app_error(&event.holder);
                self.errors.add(at_ms);
            }
            EventKind::Extended | EventKind::Lost => {}
        }
        let findings = self.ledger.apply(at_ms, &event);
        if !findings.collisions.is_empty() && self.first_collision_ms.is_none() {
            self.first_collision_ms = Some(at_ms);
        }
        self.count(findings);
    }

    /// Counts an entry whose shape is not a stream entry at all; `id`, if
    /// it has a usable one, becomes the resume point.
    pub(crate) fn malformed(&mut self, id: Option<&str>, detail: &str) {
        self.metrics.events.inc();
        if let Some(id) = id {
            self.last_id = Some(id.to_string());
        }
        self.bad("malformed_entry", detail);
    }

    fn bad(&mut self, reason: &'static str, detail: &str) {
        self.metrics.bad_event(reason);
        if self.logged_bad.insert(reason) {
            tracing::warn!(
                "bad lock event ({reason}): {detail}; further bad events of this kind are only counted"
            );
        }
    }

    pub(crate) fn expired(&mut self, key: &str, at_ms: u64) {
        let findings = self.ledger.expired(key, at_ms);
        if !findings.overruns.is_empty() {
            self.metrics.expirations.inc();
        }
        self.count(findings);
    }

    fn count(&mut self, findings: ledger::Findings) {
        for mode in findings.collisions {
            self.metrics.collisions.inc(mode);
        }
        for mode in findings.overruns {
            self.metrics.overruns.inc(mode);
        }
    }

    /// Records where reading starts, unless reading already has a
    /// position.
    pub(crate) fn start_at(&mut self, id: &str) {
        if self.last_id.is_none() {
            self.last_id = Some(id.to_string());
        }
    }

    /// The stream ID reading continues after.
    pub(crate) fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    pub(crate) fn connected(&self, connection: Connection) -> bool {
        self.metrics.connected(connection)
    }

    pub(crate) fn set_connected(&mut self, connection: Connection, up: bool) {
        self.metrics.set_connected(connection, up);
    }

    pub(crate) fn set_keyspace_enabled(&mut self, on: bool) {
        self.metrics.keyspace_enabled.set(i64::from(on));
    }
}

pub(crate) struct Shared {
    pub(crate) config: ExporterConfig,
    pub(crate) client: redis::Client,
    state: Mutex<State>,
    /// What the last warning about reaching Redis advised, until a
    /// connection works again.
    trouble: Mutex<Option<&'static str>>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Warns that Redis cannot be reached or used. The stream reader and
    /// the keyspace subscriber fail together when Redis goes away, so a
    /// cause is warned about once, by whichever reader meets it first, and
    /// again only after a connection worked ([`Shared::redis_back`]) or for
    /// a cause that needs other advice.
    pub(crate) fn redis_trouble(&self, what: &str, error: &redis::RedisError) {
        tracing::debug!("{what}: {error}");
        let advice = crate::redis_url::hint(&self.config.redis_url, error);
        {
            let mut last = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
            if *last == Some(advice) {
                return;
            }
            *last = Some(advice);
        }
        tracing::warn!(
            "{what}: {} (retrying until it answers; warroom_redis_connected stays 0 meanwhile)",
            crate::redis_url::explain(&self.config.redis_url, error)
        );
    }

    /// A connection to Redis works (again): the next trouble is warned
    /// about.
    pub(crate) fn redis_back(&self) {
        *self.trouble.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The exporter: its state and metrics. Cloning shares them.
///
/// [`Exporter::spawn`] starts reading Redis; [`Exporter::serve`] serves
/// `/metrics` and `/healthz`. Both run on the current tokio runtime.
#[derive(Clone)]
pub struct Exporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("stream", &self.shared.config.stream)
            .finish()
    }
}

/// The reading tasks of a running exporter; dropping this stops them.
#[derive(Debug)]
pub struct Readers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Readers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Exporter {
    /// Checks the configuration; connects to nothing yet.
    pub fn new(config: ExporterConfig) -> Result<Self, ExporterError> {
        let client = crate::redis_url::parse(&config.redis_url)?;
        if config.stream.is_empty() {
            return Err(ExporterError::Config("the stream name is empty".into()));
        }
        if config.batch == 0 {
            return Err(ExporterError::Config(
                "the batch size must be at least 1".into(),
            ));
        }
        let metrics = Metrics::new();
        metrics.set_connected(Connection::Stream, false);
        metrics.set_connected(Connection::Keyspace, false);
        let horizon_ms = u64::try_from(config.belief_horizon.as_millis()).unwrap_or(u64::MAX);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                client,
                state: Mutex::new(State {
                    ledger: Ledger::new(horizon_ms),
                    metrics,
                    errors: ErrorWindow::default(),
                    stream_now_ms: 0,
                    logged_bad: HashSet::new(),
                    last_id: None,
                    stuck_at: None,
                    first_collision_ms: None,
                }),
                trouble: Mutex::new(None),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ExporterConfig {
        &self.shared.config
    }

    /// Starts reading the stream and, where allowed or already on, the
    /// expired-key notifications. Reconnects by itself until dropped.
    pub fn spawn(&self) -> Readers {
        let tasks = vec![
            tokio::spawn(stream::read(self.shared.clone())),
            tokio::spawn(keyspace::watch(self.shared.clone())),
        ];
        Readers { tasks }
    }

    /// Starts reading the stream only (no keyspace notifications), e.g. to
    /// measure stream throughput.
    pub fn spawn_stream_only(&self) -> Readers {
        Readers {
            tasks: vec![tokio::spawn(stream::read(self.shared.clone()))],
        }
    }

    /// The metrics as OpenMetrics text (what `/metrics` serves).
    pub fn render(&self) -> String {
        let state = self.shared.state();
        let summary = state.ledger.summary(self.shared.config.top_keys);
        state.metrics.set_holders(&summary);
        let now_ms = state.stream_now_ms.max(wall_clock_ms());
        let last_minute = state.errors.last_minute(now_ms);
        state
            .metrics
            .errors_last_minute
            .set(i64::try_from(last_minute).unwrap_or(i64::MAX));
        state.metrics.render()
    }

    /// Current counts.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.shared.state();
        let m = &state.metrics;
        Snapshot {
            events_processed: m.events.get(),
            bad_events: m.bad_events_total(),
            grants: m.grants.total(),
            collisions: m.collisions.total(),
            lease_overruns: m.overruns.total(),
            fencing_rejections: m.rejections.total(),
            app_errors: m.app_errors_total(),
            keys_tracked: state.ledger.keys_tracked() as u64,
            first_collision_ms: state.first_collision_ms,
            stream_connected: m.connected(Connection::Stream),
            keyspace_enabled: m.keyspace_enabled.get() == 1,
            last_id: state.last_id.clone(),
        }
    }

    /// Applies one stream entry given as raw fields, exactly as the stream
    /// reader does (for property tests and replay).
    pub fn apply_entry<'a, I>(&self, id: &str, fields: I)
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let parsed = LockEvent::from_fields(fields);
        let mut state = self.shared.state();
        match stream::id_millis(id) {
            Some(at_ms) => state.entry(id, at_ms, parsed),
            None => state.malformed(None, &format!("entry id {id:?} is not <ms>-<seq>")),
        }
    }

    /// The HTTP routes: `/metrics` and `/healthz`.
    ///
    /// `/metrics` serves the classic text format ([`to_classic_text`],
    /// `text/plain; version=0.0.4`) unless the request's `Accept` asks for
    /// OpenMetrics (`application/openmetrics-text` with a non-zero
    /// quality), as Prometheus' own Go client does: a scraper sending
    /// `Accept: */*` (`curl | promtool check metrics`) or nothing gets the
    /// classic format.
    pub fn router(&self) -> axum::Router {
        use axum::http::{HeaderMap, header};
        use axum::routing::get;
        let metrics = self.clone();
        let health = self.clone();
        axum::Router::new()
            .route(
                "/metrics",
                get(move |headers: HeaderMap| {
                    let exporter = metrics.clone();
                    async move {
                        let accept = headers
                            .get(header::ACCEPT)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        if !wants_openmetrics(accept) {
                            (
                                [(header::CONTENT_TYPE, CLASSIC_CONTENT_TYPE)],
                                to_classic_text(&exporter.render()),
                            )
                        } else {
                            ([(header::CONTENT_TYPE, CONTENT_TYPE)], exporter.render())
                        }
                    }
                }),
            )
            .route(
                "/healthz",
                get(move || {
                    let exporter = health.clone();
                    async move {
                        let redis = if exporter.snapshot().stream_connected {
                            "up"
                        } else {
                            "down"
                        };
                        format!("ok\nredis {redis}\n")
                    }
                }),
            )
    }

    /// Serves the routes on `listener` until the task is dropped.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> Result<(), ExporterError> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        axum::serve(listener, self.router())
            .await
            .map_err(|source| ExporterError::Listen { addr, source })
    }

    /// Binds `addr` and serves on it; returns the bound address and the
    /// serving task.
    pub async fn bind(
        &self,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ExporterError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ExporterError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ExporterError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let exporter = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = exporter.serve(listener).await {
                tracing::error!("{e}");
            }
        });
        Ok((bound, task))
    }
}

/// Whether an `Accept` header asks for OpenMetrics: one of its media
/// ranges is `application/openmetrics-text` without `q=0`.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && !parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
    })
}

/// This host's wall clock in Unix milliseconds.
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
        ));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0, */*"));
    }

    #[test]
    fn error_window_counts_the_last_sixty_seconds() {
        let mut window = ErrorWindow::default();
        for i in 0..70 {
            window.add(1_000_000 + i * 1_000);
        }
        // Errors at seconds 1000..=1069; at 1069 the last 60 are 1010..=1069.
        assert_eq!(window.last_minute(1_069_500), 60);
        assert_eq!(window.last_minute(1_200_000), 0);
    }
}
