//! Collectors: each data source is read on its own task and what it finds
//! is sent to the app loop as an [`Update`]. Nothing here draws, and the
//! drawing loop never waits on anything here.
//!
//! - the exporter's `/metrics` (OpenMetrics asked for, the classic format
//!   accepted), parsed by [`super::metrics`], rates from two scrapes;
//! - a Prometheus server's HTTP API (`/api/v1/query`) when configured;
//! - the cluster objects the playbooks act on, followed through kube-rs
//!   watches (no polling), reopened when the API server comes back;
//! - the incident journal, followed as it grows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::{Scrape, parse_exposition};
use super::store::{Alert, AlertState, ClusterView, DeploymentView, Reading};
use crate::kube::{KubeAccess, ObjectRef};
use crate::timeline::Event;

/// The largest `/metrics` body or journal chunk read at once.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The most of a journal read per poll: a long journal is caught up with
/// over a few polls instead of held in memory at once.
pub const JOURNAL_CHUNK_BYTES: u64 = 2 * 1024 * 1024;

/// Something a collector or an action found; the app loop folds it into
/// the store.
// Updates are moved once from a collector into the store; boxing the
// larger payloads would only add an allocation per sample.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Update {
    /// A scrape of the exporter at `at_ms` (Unix ms).
    Exporter {
        /// When.
        at_ms: i64,
        /// The reading, or why there is none.
        result: Result<Reading, String>,
    },
    /// A PromQL reading.
    Prometheus {
        /// When.
        at_ms: i64,
        /// The reading, or why there is none.
        result: Result<Reading, String>,
    },
    /// Alerts from Prometheus' `/api/v1/alerts`.
    Alerts {
        /// When.
        at_ms: i64,
        /// Pending and firing alerts, or why there are none.
        result: Result<Vec<Alert>, String>,
    },
    /// The cluster objects.
    Cluster {
        /// When.
        at_ms: i64,
        /// What was read, or why nothing was.
        result: Result<ClusterView, String>,
    },
    /// New journal events.
    Timeline {
        /// When.
        at_ms: i64,
        /// The journal was truncated or replaced: what was shown of it
        /// goes, and the events are the file's from its start.
        restart: bool,
        /// The events, or why they could not be read.
        result: Result<Vec<Event>, String>,
    },
    /// Something a playbook run or another action reports.
    Action(super::action::ActionEvent),
}

/// This host's wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Names of the objects the cluster panel shows.
#[derive(Debug, Clone)]
pub struct ClusterObjects {
    /// Namespace.
    pub namespace: String,
    /// The order service Deployment.
    pub deployment: String,
    /// The gateway Ingress.
    pub ingress: String,
    /// The lock-mode ConfigMap.
    pub configmap: String,
}

impl ClusterObjects {
    /// Whether every name can be sent in a request as it is.
    pub fn check(&self) -> Result<(), crate::kube::KubeError> {
        watched(self)
            .iter()
            .try_for_each(|(api_version, kind, name)| {
                ObjectRef::namespaced(api_version, kind, &self.namespace, name).check()
            })
    }

    /// The PM-003 objects in `namespace`.
    pub fn pm003(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            deployment: "order-service".into(),
            ingress: "orders-gateway".into(),
            configmap: "order-service-lock".into(),
        }
    }
}

/// Polls the exporter's `/metrics` every `every` until cancelled.
pub async fn exporter(
    url: String,
    every: Duration,
    updates: mpsc::Sender<Update>,
    stop: CancellationToken,
) {
    let client = match http_client(every) {
        Ok(client) => client,
        Err(err) => {
            let _ = updates
                .send(Update::Exporter {
                    at_ms: now_ms(),
                    result: Err(err),
                })
                .await;
            return;
        }
    };
    let url = metrics_url(&url);
    let mut previous: Option<(Scrape, i64)> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let at_ms = now_ms();
        let result = scrape(&client, &url).await.map(|scrape| {
            let reading = scrape.reading(previous.as_ref().map(|(s, t)| (s, at_ms - t)));
            previous = Some((scrape, at_ms));
            reading
        });
        if result.is_err() {
            previous = None;
        }
        if updates
            .send(Update::Exporter { at_ms, result })
            .await
            .is_err()
        {
            return;
        }
    }
}

fn metrics_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/metrics") {
        base.to_owned()
    } else {
        format!("{base}/metrics")
    }
}

fn http_client(every: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(every.max(Duration::from_secs(2)))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

async fn bounded_body(mut response: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::redact::redact_text(&e.to_string()).into_owned())?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("answer larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "answer is not UTF-8".to_owned())
}

async fn scrape(client: &reqwest::Client, url: &str) -> Result<Scrape, String> {
    let response = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .map_err(|e| reason(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = bounded_body(response).await?;
    Scrape::from_samples(&parse_exposition(&body)?)
}

fn reason(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection refused".to_owned()
    } else {
        err.to_string()
    };
    crate::redact::redact_text(&what).into_owned()
}

/// The PromQL queries behind a [`Reading`].
pub const PROMQL: [&str; 5] = [
    "sum(rate(warroom_lock_collisions_total[1m])) * 60",
    "max(warroom_lock_holders_max)",
    "sum(rate(warroom_lock_lease_overruns_total[1m])) * 60",
    "sum(rate(warroom_fencing_rejections_total[1m])) * 60",
    "sum(warroom_app_errors_last_minute)",
];

/// Polls a Prometheus server's HTTP API every `every` until cancelled.
pub async fn prometheus(
    url: String,
    every: Duration,
    updates: mpsc::Sender<Update>,
    stop: CancellationToken,
) {
    let Ok(client) = http_client(every) else {
        return;
    };
    let base = url.trim_end_matches('/').to_owned();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let at_ms = now_ms();
        let mut values = [0.0; 5];
        let mut result = Ok(());
        for (i, query) in PROMQL.iter().enumerate() {
            match promql(&client, &base, query).await {
                Ok(v) => values[i] = v,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let result = result.map(|()| Reading {
            collisions_per_min: values[0],
            holders_max: values[1],
            overruns_per_min: values[2],
            rejections_per_min: values[3],
            errors_per_min: values[4],
            contended_key: None,
            collisions_total: 0.0,
        });
        if updates
            .send(Update::Prometheus { at_ms, result })
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn promql(client: &reqwest::Client, base: &str, query: &str) -> Result<f64, String> {
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), &[("query", query)])
        .map_err(|e| format!("bad Prometheus URL: {e}"))?;
    let response = client.get(url).send().await.map_err(|e| reason(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = bounded_body(response).await?;
    instant_value(&body)
}

/// The most alerts taken from one Prometheus answer.
pub const MAX_ALERTS: usize = 200;

/// Reads Prometheus' `/api/v1/alerts` every `every` until cancelled. Each
/// request is bounded in time (a server that hangs is reported down).
pub async fn prometheus_alerts(
    url: String,
    every: Duration,
    updates: mpsc::Sender<Update>,
    stop: CancellationToken,
) {
    let client = http_client(every);
    let endpoint = format!("{}/api/v1/alerts", url.trim_end_matches('/'));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let at_ms = now_ms();
        let result = match &client {
            Ok(client) => tokio::select! {
                _ = stop.cancelled() => return,
                result = fetch_alerts(client, &endpoint) => result,
            },
            Err(e) => Err(e.clone()),
        };
        if updates
            .send(Update::Alerts { at_ms, result })
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn fetch_alerts(client: &reqwest::Client, url: &str) -> Result<Vec<Alert>, String> {
    let response = client.get(url).send().await.map_err(|e| reason(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = bounded_body(response).await?;
    alerts_answer(&body)
}

/// The pending and firing alerts of an `/api/v1/alerts` answer, firing
/// first; every text fit for one line of the screen.
pub fn alerts_answer(body: &str) -> Result<Vec<Alert>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if doc["status"] != "success" {
        return Err(format!(
            "Prometheus refused: {}",
            doc["error"]
                .as_str()
                .map(shown)
                .unwrap_or_else(|| "no reason given".into())
        ));
    }
    let Some(list) = doc["data"]["alerts"].as_array() else {
        return Err("not a Prometheus answer: no data.alerts".into());
    };
    let mut alerts: Vec<Alert> = list
        .iter()
        .filter_map(|a| {
            let name = a["labels"]["alertname"].as_str()?;
            let state = match a["state"].as_str()? {
                "firing" => AlertState::Firing,
                "pending" => AlertState::Pending,
                _ => return None,
            };
            let since_ms = a["activeAt"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or(0, |t| t.as_millisecond());
            let detail = a["annotations"]["summary"]
                .as_str()
                .or_else(|| a["value"].as_str())
                .map(shown)
                .unwrap_or_default();
            Some(Alert {
                name: shown(name),
                state,
                since_ms,
                detail,
            })
        })
        .take(MAX_ALERTS)
        .collect();
    alerts.sort_by_key(|a| (a.state != AlertState::Firing, a.since_ms));
    Ok(alerts)
}

/// The value of an instant-vector answer (`0` when the vector is empty or
/// the value is not a count: NaN, infinite or negative).
pub fn instant_value(body: &str) -> Result<f64, String> {
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if doc["status"] != "success" {
        return Err(format!(
            "Prometheus refused the query: {}",
            doc["error"].as_str().unwrap_or("no reason given")
        ));
    }
    let Some(first) = doc["data"]["result"].as_array().and_then(|r| r.first()) else {
        return Ok(0.0);
    };
    first["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(Ok(0.0), Ok)
}

/// The four objects of the cluster panel, in [`ClusterObjects`] order:
/// apiVersion, kind, and which name of `objects` it is.
fn watched(objects: &ClusterObjects) -> [(&'static str, &'static str, String); 4] {
    [
        ("apps/v1", "Deployment", objects.deployment.clone()),
        ("networking.k8s.io/v1", "Ingress", objects.ingress.clone()),
        ("v1", "ConfigMap", objects.configmap.clone()),
        (
            "coordination.k8s.io/v1",
            "Lease",
            crate::playbook::lease::LEASE_NAME.to_owned(),
        ),
    ]
}

/// The first wait before watches are opened again after a failure; it
/// doubles up to [`WATCH_RETRY_MAX`].
pub const WATCH_RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest wait between two attempts to open the watches again.
pub const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

type WatchItem = (
    usize,
    Result<kube::runtime::watcher::Event<kube::api::DynamicObject>, kube::runtime::watcher::Error>,
);

/// One watch per object (`kube::runtime::watcher`: a list, then a watch
/// from its resourceVersion with bookmarks, resumed as the server allows),
/// merged into one stream tagged with the object's index.
fn cluster_watches(
    kube: &KubeAccess,
    objects: &ClusterObjects,
) -> futures::stream::SelectAll<futures::stream::BoxStream<'static, WatchItem>> {
    use futures::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject};
    use kube::runtime::watcher;
    let streams = watched(objects)
        .into_iter()
        .enumerate()
        .map(|(i, (api_version, kind, name))| {
            let object = ObjectRef::namespaced(api_version, kind, &objects.namespace, &name);
            let resource = ApiResource::from_gvk(&object.gvk());
            let api: Api<DynamicObject> =
                Api::namespaced_with(kube.client(), &objects.namespace, &resource);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            watcher(api, config).map(move |event| (i, event)).boxed()
        });
    futures::stream::select_all(streams)
}

/// Follows the cluster objects through watches until cancelled: every
/// change is sent as it arrives, nothing is polled. Every `every` the view
/// is sent again from what the watches hold (no request; a lease expires
/// with time). When a watch fails (the server went away) the source is
/// reported down and the watches are opened again, waiting
/// [`WATCH_RETRY_MIN`] doubling to [`WATCH_RETRY_MAX`] between attempts.
pub async fn cluster(
    kube: Arc<KubeAccess>,
    objects: ClusterObjects,
    every: Duration,
    updates: mpsc::Sender<Update>,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    use kube::runtime::watcher::Event as Watched;
    let mut retry = WATCH_RETRY_MIN;
    loop {
        if objects.check().is_err() {
            let _ = updates
                .send(Update::Cluster {
                    at_ms: now_ms(),
                    result: Err("the object names cannot be watched".into()),
                })
                .await;
            return;
        }
        let mut watches = cluster_watches(&kube, &objects);
        // Objects as last seen; None until the watch's first list is done.
        let mut seen: [Option<Option<serde_json::Value>>; 4] = Default::default();
        let mut listing: [Option<serde_json::Value>; 4] = Default::default();
        let mut refresh = tokio::time::interval(every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let failure = loop {
            // A change, or the refresh: either way the view is sent again
            // once every watch has listed.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = refresh.tick() => {}
                item = watches.next() => match item {
                    None => break "the watches ended".to_owned(),
                    Some((_, Err(e))) => {
                        break crate::redact::redact_text(&e.to_string()).into_owned();
                    }
                    Some((i, Ok(event))) => match event {
                        Watched::Init => listing[i] = None,
                        Watched::InitApply(object) => listing[i] = json_of(&object),
                        Watched::InitDone => seen[i] = Some(listing[i].take()),
                        Watched::Apply(object) => seen[i] = Some(json_of(&object)),
                        Watched::Delete(_) => seen[i] = Some(None),
                    },
                },
            }
            let Some(all) = all_listed(&seen) else {
                continue;
            };
            retry = WATCH_RETRY_MIN;
            let view = cluster_view(
                all[0].as_ref(),
                all[1].as_ref(),
                all[2].as_ref(),
                all[3].as_ref(),
                now_ms(),
            );
            let update = Update::Cluster {
                at_ms: now_ms(),
                result: Ok(view),
            };
            if updates.send(update).await.is_err() {
                return;
            }
        };
        drop(watches);
        let update = Update::Cluster {
            at_ms: now_ms(),
            result: Err(failure),
        };
        if updates.send(update).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(WATCH_RETRY_MAX);
    }
}

/// The four objects once every watch has listed, else None.
fn all_listed(
    seen: &[Option<Option<serde_json::Value>>; 4],
) -> Option<[&Option<serde_json::Value>; 4]> {
    Some([
        seen[0].as_ref()?,
        seen[1].as_ref()?,
        seen[2].as_ref()?,
        seen[3].as_ref()?,
    ])
}

fn json_of(object: &kube::api::DynamicObject) -> Option<serde_json::Value> {
    serde_json::to_value(object).ok()
}

/// What the cluster panel shows of the four objects (`None`: missing).
pub fn cluster_view(
    deployment: Option<&serde_json::Value>,
    ingress: Option<&serde_json::Value>,
    configmap: Option<&serde_json::Value>,
    lease: Option<&serde_json::Value>,
    now_ms: i64,
) -> ClusterView {
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    ClusterView {
        deployment: deployment.map(|d| DeploymentView {
            desired: d["spec"]["replicas"].as_i64().unwrap_or(1),
            ready: int(&d["status"]["readyReplicas"]),
            updated: int(&d["status"]["updatedReplicas"]),
        }),
        ingress_found: ingress.is_some(),
        gateway_limit: ingress.and_then(|i| {
            i["metadata"]["annotations"]["nginx.ingress.kubernetes.io/limit-rps"]
                .as_str()
                .map(shown)
        }),
        lock_mode: configmap.map(|c| {
            c["data"]["LOCK_MODE"]
                .as_str()
                .map(shown)
                .unwrap_or_else(|| "unset".into())
        }),
        lease_holder: lease.and_then(|l| {
            let holder = l["spec"]["holderIdentity"].as_str()?;
            if holder.is_empty() {
                return None;
            }
            // A lease past its duration is free whoever last held it.
            let renewed = l["spec"]["renewTime"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let seconds = l["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(15);
            match renewed {
                Some(t) if now_ms - t.as_millisecond() > seconds * 1_000 => None,
                _ => Some(shown(holder)),
            }
        }),
    }
}

/// A value from the cluster, fit for one line of the screen: control
/// characters replaced, secrets redacted, at most 40 characters.
fn shown(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(40)
        .collect();
    crate::redact::redact_text(&clean).into_owned()
}

/// Follows the journal at `path`: reads what is there, then what is
/// appended, in whole lines, every `every` until cancelled.
pub async fn journal(
    path: PathBuf,
    every: Duration,
    updates: mpsc::Sender<Update>,
    stop: CancellationToken,
) {
    let mut follower = JournalFollower::new(path);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (back, result) = match tokio::task::spawn_blocking(move || {
            let result = follower.poll();
            (follower, result)
        })
        .await
        {
            Ok(done) => done,
            Err(_) => return,
        };
        follower = back;
        let update = Update::Timeline {
            at_ms: now_ms(),
            restart: follower.take_restart(),
            result,
        };
        if updates.send(update).await.is_err() {
            return;
        }
    }
}

/// Reads a growing journal in whole lines.
#[derive(Debug)]
pub struct JournalFollower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Device and inode of the file read, to notice a replacement.
    identity: Option<(u64, u64)>,
    /// Read again from the start since [`JournalFollower::take_restart`].
    restarted: bool,
    /// Dropping the rest of a line longer than a journal line can be.
    discarding: bool,
    /// Events and unreadable lines seen in this file.
    events_seen: u64,
    skipped_seen: u64,
    first_skip: Option<String>,
}

impl JournalFollower {
    /// Follows `path` from its start.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
            identity: None,
            restarted: false,
            discarding: false,
            events_seen: 0,
            skipped_seen: 0,
            first_skip: None,
        }
    }

    /// True once after the file was truncated or replaced: the events of
    /// the next read start again from its first line.
    pub fn take_restart(&mut self) -> bool {
        std::mem::take(&mut self.restarted)
    }

    fn restart(&mut self) {
        self.offset = 0;
        self.partial.clear();
        self.discarding = false;
        self.events_seen = 0;
        self.skipped_seen = 0;
        self.first_skip = None;
        self.restarted = true;
    }

    /// Events appended since the last call (a missing file is no events
    /// yet; a file that shrank or was replaced is read again from its
    /// start, and [`JournalFollower::take_restart`] says so once).
    pub fn poll(&mut self) -> Result<Vec<Event>, String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", self.path.display()));
        }
        let identity = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        if self.identity.is_some_and(|seen| seen != identity) || meta.len() < self.offset {
            self.restart();
        }
        self.identity = Some(identity);
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| e.to_string())?;
        let mut chunk = Vec::new();
        file.take(JOURNAL_CHUNK_BYTES)
            .read_to_end(&mut chunk)
            .map_err(|e| e.to_string())?;
        self.offset += chunk.len() as u64;
        let mut chunk = &chunk[..];
        if self.discarding {
            // The rest of an overlong line, up to its newline.
            match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    chunk = &chunk[end + 1..];
                    self.discarding = false;
                }
                None => chunk = &[],
            }
        }
        self.partial.extend_from_slice(chunk);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() > crate::timeline::MAX_LINE_BYTES {
                // Longer than any journal line: never kept whole in memory.
                self.partial.clear();
                self.discarding = true;
                self.note_skip(format!(
                    "a line longer than {} bytes",
                    crate::timeline::MAX_LINE_BYTES
                ));
            }
            return self.verdict(Vec::new());
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        let contents = crate::timeline::parse_journal(&whole);
        for skipped in &contents.skipped {
            self.note_skip(format!("line {}: {}", skipped.line, skipped.reason));
        }
        self.verdict(contents.events)
    }

    fn note_skip(&mut self, why: String) {
        self.skipped_seen += 1;
        if self.first_skip.is_none() {
            let why: String = why
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(120)
                .collect();
            self.first_skip = Some(why);
        }
    }

    /// A file with unreadable lines and not one event is not a journal:
    /// said on every read rather than shown as an empty, healthy one.
    fn verdict(&mut self, events: Vec<Event>) -> Result<Vec<Event>, String> {
        self.events_seen += events.len() as u64;
        if self.events_seen == 0 && self.skipped_seen > 0 {
            return Err(format!(
                "{} is not an incident journal: {} unreadable line(s), no event ({})",
                self.path.display(),
                self.skipped_seen,
                self.first_skip.as_deref().unwrap_or("")
            ));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_answers() {
        let ok = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"12.5"]}]}}"#;
        assert_eq!(instant_value(ok).unwrap(), 12.5);
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(instant_value(empty).unwrap(), 0.0);
        let bad = r#"{"status":"error","error":"parse error"}"#;
        assert!(instant_value(bad).unwrap_err().contains("parse error"));
        assert!(instant_value("<html>").is_err());
    }

    #[test]
    fn cluster_view_reads_the_pm003_objects() {
        let deployment =
            serde_json::json!({"spec": {"replicas": 8}, "status": {"readyReplicas": 3}});
        let ingress = serde_json::json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/limit-rps": "50"}}});
        let configmap = serde_json::json!({"data": {"LOCK_MODE": "legacy\u{1b}[2J"}});
        let lease = serde_json::json!({"spec": {"holderIdentity": "bastian", "renewTime": "2026-11-26T09:41:00Z", "leaseDurationSeconds": 15}});
        let at = "2026-11-26T09:41:05Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        let view = cluster_view(
            Some(&deployment),
            Some(&ingress),
            Some(&configmap),
            Some(&lease),
            at,
        );
        assert_eq!(view.deployment.as_ref().unwrap().desired, 8);
        assert_eq!(view.deployment.as_ref().unwrap().ready, 3);
        assert_eq!(view.gateway_limit.as_deref(), Some("50"));
        assert_eq!(view.lock_mode.as_deref(), Some("legacy?[2J"));
        assert_eq!(view.lease_holder.as_deref(), Some("bastian"));
        let later = at + 60_000;
        assert_eq!(
            cluster_view(None, None, None, Some(&lease), later).lease_holder,
            None
        );
    }

    #[test]
    fn journal_follower_reads_whole_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut follower = JournalFollower::new(path.clone());
        assert!(follower.poll().unwrap().is_empty());
        let line = r#"{"seq":1,"at":"2026-11-26T09:41:00.000Z","actor":"bastian","kind":"note","payload":{"text":"hi"}}"#;
        std::fs::write(&path, &line[..20]).unwrap();
        assert!(follower.poll().unwrap().is_empty());
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let events = follower.poll().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].actor, "bastian");
        assert!(follower.poll().unwrap().is_empty());
    }

    fn note(seq: u64, text: &str) -> String {
        format!(
            "{{\"seq\":{seq},\"at\":\"2026-11-26T09:41:00.000Z\",\"actor\":\"bastian\",\"kind\":\"note\",\"payload\":{{\"text\":\"{text}\"}}}}\n"
        )
    }

    #[test]
    fn journal_follower_starts_over_on_a_truncated_or_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, note(1, "one") + &note(2, "two")).unwrap();
        let mut follower = JournalFollower::new(path.clone());
        assert_eq!(follower.poll().unwrap().len(), 2);
        assert!(!follower.take_restart());
        // Truncated to a shorter journal.
        std::fs::write(&path, note(1, "uno")).unwrap();
        let events = follower.poll().unwrap();
        assert!(follower.take_restart(), "a truncation restarts");
        assert_eq!(events.len(), 1);
        // Replaced by a longer file (a rename over it): read from its start,
        // not from the old offset in the middle of a line.
        let other = dir.path().join("new.jsonl");
        std::fs::write(&other, note(1, "a") + &note(2, "b") + &note(3, "c")).unwrap();
        std::fs::rename(&other, &path).unwrap();
        let events = follower.poll().unwrap();
        assert!(follower.take_restart(), "a replacement restarts");
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(!follower.take_restart());
    }

    #[test]
    fn journal_follower_says_a_file_is_not_a_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, b"\x00\xff\x1b[2J binary\nmore\n").unwrap();
        let mut follower = JournalFollower::new(path.clone());
        let err = follower.poll().unwrap_err();
        assert!(err.contains("not an incident journal"), "{err}");
        assert!(!err.contains('\x1b'), "{err}");
        // Still said on the next read, with nothing new.
        assert!(follower.poll().is_err());
    }

    #[test]
    fn journal_follower_never_holds_an_endless_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut file = std::fs::File::create(&path).unwrap();
        use std::io::Write;
        file.write_all(note(1, "before").as_bytes()).unwrap();
        let mut follower = JournalFollower::new(path.clone());
        assert_eq!(follower.poll().unwrap().len(), 1);
        let block = vec![b'x'; 1 << 20];
        for _ in 0..6 {
            for _ in 0..2 {
                file.write_all(&block).unwrap();
            }
            let _ = follower.poll();
            assert!(
                follower.partial.len() <= crate::timeline::MAX_LINE_BYTES,
                "{} bytes held",
                follower.partial.len()
            );
        }
        file.write_all(b"\n").unwrap();
        file.write_all(note(2, "after").as_bytes()).unwrap();
        // Reads are bounded chunks: a few more reach the end.
        let mut events = Vec::new();
        for _ in 0..20 {
            events.extend(follower.poll().unwrap());
        }
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].seq, 2);
    }
}
