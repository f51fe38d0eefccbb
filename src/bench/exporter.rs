//! `warroom bench exporter`: how fast the collision exporter sees a
//! collision, how many events it reads per second on one core, and whether
//! its memory stays flat as keys pass through.
//!
//! - **Detection latency**: a legacy holder takes a key with a short TTL and
//!   stalls past it; a second holder then takes the key. The clock starts
//!   when the second grant returns and stops when a scrape of `/metrics`
//!   (real HTTP) shows the collision counter one higher.
//! - **Throughput**: a stream pre-filled with lock events (grants and
//!   releases over many keys) is read from the start by an exporter whose
//!   reader runs alone on a single-threaded runtime (one core; Redis has the
//!   other). Events per second of wall time until all are counted.
//! - **Memory**: the process's resident set size, sampled while that stream
//!   is read, at regular event counts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::exporter::{Exporter, ExporterConfig, KeyspaceEvents, StartFrom};
use crate::lock::legacy::LegacyLock;
use crate::lock::{EventStream, LockError, LockOptions};
use crate::redis_node::RedisNode;

/// What to measure. Its `Debug` shows the Redis URL without its password.
#[derive(Clone)]
pub struct ExporterBench {
    /// Redis to use; `None` starts a `redis-server` of its own.
    pub redis: Option<String>,
    /// Detection-latency trials.
    pub trials: usize,
    /// Events in the pre-filled stream.
    pub events: u64,
    /// Distinct lock keys among them.
    pub keys: u64,
    /// Keys held at once in the pre-filled stream: grants of this many keys,
    /// then their releases, and so on.
    pub held: u64,
    /// Memory is sampled every this many events read.
    pub sample_every: u64,
}

impl std::fmt::Debug for ExporterBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterBench")
            .field("redis", &self.redis.as_deref().map(crate::redis_url::shown))
            .field("trials", &self.trials)
            .field("events", &self.events)
            .field("keys", &self.keys)
            .field("held", &self.held)
            .field("sample_every", &self.sample_every)
            .finish()
    }
}

/// Detection latency in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// Trials measured.
    pub trials: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Stream reading throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Events read.
    pub events: u64,
    /// Distinct keys among them.
    pub keys: u64,
    /// Seconds from start to the last event counted.
    pub seconds: f64,
    /// Events per second.
    pub events_per_sec: f64,
    /// Keys held at once in the stream.
    pub held: u64,
    /// Keys still tracked at the end (held, not yet released).
    pub keys_tracked_at_end: u64,
}

/// One memory sample.
#[derive(Debug, Clone, Serialize)]
pub struct RssSample {
    /// Events read when sampled.
    pub events: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

/// The benchmark's output.
#[derive(Debug, Clone, Serialize)]
pub struct ExporterBenchReport {
    /// Collision detection latency.
    pub detection: Detection,
    /// Stream throughput on one core.
    pub throughput: Throughput,
    /// Resident set size before reading and while reading.
    pub rss: Vec<RssSample>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExporterBenchError {
    /// The arguments do not describe a runnable benchmark.
    #[error("{0}")]
    Invalid(String),
    /// Redis could not be started or reached, or went away during the run;
    /// the message names it (password redacted) and says what to check.
    #[error("{0}")]
    Redis(String),
    /// The exporter failed.
    #[error("exporter: {0}")]
    Exporter(#[from] crate::exporter::ExporterError),
    /// The run did not finish.
    #[error("{0}")]
    Stalled(String),
}

impl ExporterBenchError {
    /// Redis at `url` failed: which (redacted), why, and what to check.
    fn redis(url: &str, error: &LockError) -> Self {
        ExporterBenchError::Redis(match error {
            LockError::Redis(e) => crate::redis_url::explain(url, e),
            other => format!(
                "Redis at {}: {}",
                crate::redis_url::shown(url),
                crate::redact::redact_text(&other.to_string())
            ),
        })
    }
}

impl ExporterBench {
    /// Runs both measurements. Call from a multi-threaded runtime with at
    /// least two workers; the throughput reader gets a thread of its own.
    pub async fn run(&self) -> Result<ExporterBenchReport, ExporterBenchError> {
        if self.trials == 0
            || self.events == 0
            || self.keys == 0
            || self.held == 0
            || self.sample_every == 0
        {
            return Err(ExporterBenchError::Invalid(
                "--trials, --events, --keys, --held and --sample-every must be at least 1".into(),
            ));
        }
        if self.held > self.keys {
            return Err(ExporterBenchError::Invalid(format!(
                "--held {} is more than --keys {}: a key is held by one holder at a time, so \
                 give at least as many keys as are held",
                self.held, self.keys
            )));
        }
        let (_node, url) = match &self.redis {
            Some(url) => {
                crate::redis_url::parse(url)
                    .map_err(|e| ExporterBenchError::Invalid(format!("--redis: {e}")))?;
                (None, url.clone())
            }
            None => {
                let node = RedisNode::start().map_err(|e| {
                    ExporterBenchError::Redis(format!("cannot start a redis-server: {e}"))
                })?;
                let url = node.url();
                (Some(node), url)
            }
        };
        // Reach Redis once before anything starts, so that a wrong URL or
        // password is one clear error, not an exporter retrying in the
        // background.
        let mut conn = crate::lock::connect(&url, Some(Duration::from_secs(5)), false)
            .await
            .map_err(|e| ExporterBenchError::redis(&url, &e))?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| ExporterBenchError::redis(&url, &LockError::Redis(e)))?;
        drop(conn);
        let prefix = format!("bench:{:08x}", rand::random::<u32>());
        let measured = async {
            let detection = self.detection(&url, &prefix).await?;
            let throughput = self.throughput(&url, &prefix).await?;
            Ok::<_, ExporterBenchError>((detection, throughput))
        }
        .await;
        cleanup(&url, &prefix).await;
        let (detection, (throughput, rss)) = measured?;
        Ok(ExporterBenchReport {
            detection,
            throughput,
            rss,
        })
    }

    async fn detection(&self, url: &str, prefix: &str) -> Result<Detection, ExporterBenchError> {
        let stream = EventStream {
            key: format!("{prefix}:events"),
            maxlen: 100_000,
        };
        let exporter = Exporter::new(ExporterConfig {
            stream: stream.key.clone(),
            keyspace_events: KeyspaceEvents::Off,
            start: StartFrom::Latest,
            block: Duration::from_secs(2),
            ..ExporterConfig::new(url)
        })?;
        let (addr, server) = exporter.bind("127.0.0.1:0".parse().expect("valid")).await?;
        let _readers = exporter.spawn_stream_only();
        let ttl = Duration::from_millis(20);
        let options = |holder: &str| LockOptions {
            events: Some(stream.clone()),
            ..LockOptions::new(ttl, holder)
        };
        let redis = |e: LockError| ExporterBenchError::redis(url, &e);
        let pod_7f = LegacyLock::connect(url, options("pod-7f"))
            .await
            .map_err(redis)?;
        let pod_3c = LegacyLock::connect(url, options("pod-3c"))
            .await
            .map_err(redis)?;
        let http = reqwest::Client::new();
        // Wait until the reader is connected.
        let ready = Instant::now() + Duration::from_secs(10);
        while !exporter.snapshot().stream_connected {
            if Instant::now() > ready {
                return Err(ExporterBenchError::Redis(format!(
                    "the exporter did not connect to Redis at {} within 10 s",
                    crate::redis_url::shown(url)
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .expect("static histogram bounds are valid");
        let mut seen = collisions(&http, addr).await?;
        for trial in 0..self.trials {
            let key = format!("{prefix}:lock:{trial}");
            let first = answered(
                url,
                "pod-7f's grant",
                pod_7f.acquire(&key, Duration::from_secs(1)),
            )
            .await?;
            // pod-7f stalls past its TTL: the key expires under it.
            tokio::time::sleep(ttl + Duration::from_millis(5)).await;
            let second = answered(
                url,
                "pod-3c's grant",
                pod_3c.acquire(&key, Duration::from_secs(1)),
            )
            .await?;
            let granted = Instant::now();
            let deadline = granted + Duration::from_secs(10);
            loop {
                let now_seen = collisions(&http, addr).await?;
                if now_seen > seen {
                    seen = now_seen;
                    break;
                }
                if Instant::now() > deadline {
                    if !exporter.snapshot().stream_connected {
                        return Err(ExporterBenchError::Redis(format!(
                            "trial {trial}: lost Redis at {} (the exporter is not connected)",
                            crate::redis_url::shown(url)
                        )));
                    }
                    return Err(ExporterBenchError::Stalled(format!(
                        "trial {trial}: the collision did not show within 10 s"
                    )));
                }
            }
            let _ = latency.record(granted.elapsed().as_micros().max(1) as u64);
            answered(url, "pod-7f's release", pod_7f.release(first)).await?;
            answered(url, "pod-3c's release", pod_3c.release(second)).await?;
        }
        server.abort();
        let ms = |v: u64| v as f64 / 1000.0;
        Ok(Detection {
            trials: latency.len(),
            p50_ms: ms(latency.value_at_quantile(0.5)),
            p99_ms: ms(latency.value_at_quantile(0.99)),
            max_ms: ms(latency.max()),
        })
    }

    async fn throughput(
        &self,
        url: &str,
        prefix: &str,
    ) -> Result<(Throughput, Vec<RssSample>), ExporterBenchError> {
        let stream = format!("{prefix}:prefilled");
        prefill(url, &stream, self.events, self.keys, self.held).await?;
        let exporter = Exporter::new(ExporterConfig {
            stream,
            keyspace_events: KeyspaceEvents::Off,
            start: StartFrom::Beginning,
            batch: 2_000,
            ..ExporterConfig::new(url)
        })?;
        let mut rss = vec![RssSample {
            events: 0,
            rss_kib: rss_kib(),
        }];
        // The reader alone on one thread: one core.
        let reader = exporter.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime starts");
            runtime.block_on(async move {
                let _readers = reader.spawn_stream_only();
                let _ = stop_rx.await;
            });
        });
        let started = Instant::now();
        let mut next_sample = self.sample_every;
        let deadline = started + Duration::from_secs(600);
        // The reader reconnects by itself, but a Redis that has stopped
        // answering must not keep the benchmark waiting out the deadline.
        let (mut last_progress, mut last_processed) = (Instant::now(), 0);
        let finished = loop {
            let processed = exporter.snapshot().events_processed;
            if processed > last_processed {
                (last_progress, last_processed) = (Instant::now(), processed);
            } else if last_progress.elapsed() > STREAM_SILENCE {
                let _ = stop_tx.send(());
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                return Err(ExporterBenchError::Redis(format!(
                    "the exporter read nothing for {} s after {processed} of {} events (is \
                     Redis stopped or paused?)",
                    STREAM_SILENCE.as_secs(),
                    self.events
                )));
            }
            while processed >= next_sample {
                rss.push(RssSample {
                    events: processed,
                    rss_kib: rss_kib(),
                });
                next_sample += self.sample_every;
            }
            if processed >= self.events {
                break Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                break Err(ExporterBenchError::Stalled(
                    "the exporter did not read the pre-filled stream within 600 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let _ = stop_tx.send(());
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let elapsed = finished?;
        let snapshot = exporter.snapshot();
        Ok((
            Throughput {
                events: snapshot.events_processed,
                keys: self.keys,
                held: self.held,
                seconds: elapsed.as_secs_f64(),
                events_per_sec: snapshot.events_processed as f64 / elapsed.as_secs_f64(),
                keys_tracked_at_end: snapshot.keys_tracked,
            },
            rss,
        ))
    }
}

/// How long one lock operation of a detection trial may take before Redis
/// counts as not answering.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How long the throughput reader may read nothing before Redis counts as
/// not answering.
const STREAM_SILENCE: Duration = Duration::from_secs(30);

/// `work`'s outcome, or a Redis error if it takes longer than
/// [`ANSWER_WITHIN`].
async fn answered<T>(
    url: &str,
    what: &str,
    work: impl std::future::Future<Output = Result<T, LockError>>,
) -> Result<T, ExporterBenchError> {
    match tokio::time::timeout(ANSWER_WITHIN, work).await {
        Ok(outcome) => outcome.map_err(|e| ExporterBenchError::redis(url, &e)),
        Err(_) => Err(ExporterBenchError::Redis(format!(
            "{what}: no answer within {} s (is Redis stopped or paused?)",
            ANSWER_WITHIN.as_secs()
        ))),
    }
}

async fn collisions(http: &reqwest::Client, addr: SocketAddr) -> Result<u64, ExporterBenchError> {
    let body = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| ExporterBenchError::Stalled(format!("scrape failed: {e}")))?
        .text()
        .await
        .map_err(|e| ExporterBenchError::Stalled(format!("scrape failed: {e}")))?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("warroom_lock_collisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// Fills `stream` with `events` fenced-lock events: grants of `held` keys at
/// a time, then their releases, walking through `keys` distinct keys.
async fn prefill(
    url: &str,
    stream: &str,
    events: u64,
    keys: u64,
    held: u64,
) -> Result<(), ExporterBenchError> {
    let redis = |e: redis::RedisError| ExporterBenchError::redis(url, &LockError::Redis(e));
    let mut conn = crate::lock::connect(url, Some(Duration::from_secs(30)), false)
        .await
        .map_err(|e| ExporterBenchError::redis(url, &e))?;
    let wave_len = held;
    let mut written = 0u64;
    let mut wave = 0u64;
    let mut pipe = redis::pipe();
    let mut queued = 0;
    while written < events {
        for release in [false, true] {
            for i in 0..wave_len {
                if written >= events {
                    break;
                }
                let k = (wave * wave_len + i) % keys;
                let token = (wave * wave_len + i + 1).to_string();
                let key = format!("lock:order:{k}");
                let holder = format!("pod-{}", (wave * wave_len + i) % 16);
                let mut cmd = redis::cmd("XADD");
                cmd.arg(stream)
                    .arg("*")
                    .arg("v")
                    .arg("1")
                    .arg("kind")
                    .arg(if release { "released" } else { "acquired" })
                    .arg("mode")
                    .arg("fenced")
                    .arg("key")
                    .arg(&key)
                    .arg("holder")
                    .arg(&holder)
                    .arg("token")
                    .arg(&token);
                if !release {
                    cmd.arg("ttl_ms").arg("30000");
                }
                pipe.add_command(cmd).ignore();
                queued += 1;
                written += 1;
                if queued == 5_000 {
                    pipe.query_async::<()>(&mut conn).await.map_err(redis)?;
                    pipe = redis::pipe();
                    queued = 0;
                }
            }
        }
        wave += 1;
    }
    if queued > 0 {
        pipe.query_async::<()>(&mut conn).await.map_err(redis)?;
    }
    Ok(())
}

async fn cleanup(url: &str, prefix: &str) {
    let Ok(mut conn) = crate::lock::connect(url, Some(Duration::from_secs(5)), false).await else {
        return;
    };
    let _: Result<i64, _> = redis::cmd("DEL")
        .arg(format!("{prefix}:events"))
        .arg(format!("{prefix}:prefilled"))
        .query_async(&mut conn)
        .await;
}

/// This process's resident set size in KiB (0 where `/proc` is missing).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
