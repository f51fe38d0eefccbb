//! `warroom bench cluster`: how many requests per second the local cluster
//! server answers, through kube-rs (the client playbooks use), over loopback
//! HTTP.
//!
//! The server runs in this process, seeded with the drill objects. For each
//! operation, `clients` tasks loop for `duration`: read the order-service
//! Deployment, merge-patch an annotation on the lock ConfigMap (a new value
//! every time, so every request is a stored write), and scale the Deployment
//! through its `scale` subresource (a new replica count every time). Reported per
//! operation: requests, errors, requests/s and latency percentiles, and the
//! number of resourceVersions the writes produced (which must equal the
//! successful writes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde_json::json;

use crate::cluster::ClusterServer;
use crate::cluster::seed::{DRILL_DEPLOYMENT, DRILL_LOCK_CONFIGMAP};

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterBenchError {
    /// A parameter is out of range.
    #[error("invalid benchmark parameters: {0}")]
    Invalid(String),
    /// The server or client could not be set up.
    #[error("cannot set up the benchmark: {0}")]
    Setup(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterBench {
    /// Concurrent client tasks per operation.
    pub clients: usize,
    /// How long each operation runs.
    pub duration: Duration,
}

/// One operation's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    /// What was measured.
    pub operation: &'static str,
    /// Requests answered with success.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Successful requests per second.
    pub requests_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Slowest request, microseconds.
    pub max_us: u64,
    /// resourceVersions the operation produced (writes actually stored).
    pub stored_writes: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterBenchReport {
    /// URL of the server measured.
    pub server: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Seconds per operation.
    pub duration_secs: f64,
    /// One entry per operation.
    pub operations: Vec<OperationReport>,
}

#[derive(Clone, Copy)]
enum Operation {
    GetDeployment,
    PatchConfigMap,
    ScaleDeployment,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::GetDeployment => "get deployment",
            Self::PatchConfigMap => "merge-patch configmap",
            Self::ScaleDeployment => "patch deployment scale",
        }
    }
}

impl ClusterBench {
    /// Starts a seeded server on a free loopback port and measures it.
    pub async fn run(&self) -> Result<ClusterBenchReport, ClusterBenchError> {
        if self.clients == 0 {
            return Err(ClusterBenchError::Invalid(
                "--clients must be at least 1".into(),
            ));
        }
        if self.duration.is_zero() {
            return Err(ClusterBenchError::Invalid(
                "--duration must be positive".into(),
            ));
        }
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server = ClusterServer::start_seeded(listen)
            .await
            .map_err(|e| ClusterBenchError::Setup(e.to_string()))?;
        let mut config = kube::Config::new(
            server
                .url()
                .parse()
                .map_err(|e| ClusterBenchError::Setup(format!("server URL: {e}")))?,
        );
        config.default_namespace = crate::cluster::DEFAULT_NAMESPACE.to_string();
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterBenchError::Setup(e.to_string()))?;
        let mut operations = Vec::new();
        for operation in [
            Operation::GetDeployment,
            Operation::PatchConfigMap,
            Operation::ScaleDeployment,
        ] {
            operations.push(self.measure(&server, &client, operation).await?);
        }
        let report = ClusterBenchReport {
            server: server.url(),
            clients: self.clients,
            duration_secs: self.duration.as_secs_f64(),
            operations,
        };
        server.stop().await;
        Ok(report)
    }

    async fn measure(
        &self,
        server: &ClusterServer,
        client: &kube::Client,
        operation: Operation,
    ) -> Result<OperationReport, ClusterBenchError> {
        let revision_before = server.store().revision();
        let errors = Arc::new(AtomicU64::new(0));
        let sequence = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + self.duration;
        let mut tasks = Vec::new();
        for client_index in 0..self.clients {
            let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
            let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
            let errors = errors.clone();
            let sequence = sequence.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let mut n: u64 = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let sent = Instant::now();
                    let outcome = match operation {
                        Operation::GetDeployment => {
                            deployments.get(DRILL_DEPLOYMENT).await.map(|_| ())
                        }
                        Operation::PatchConfigMap => config_maps
                            .patch(
                                DRILL_LOCK_CONFIGMAP,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"annotations": {
                                    format!("bench.warroom/client-{client_index}"): n.to_string()
                                }}})),
                            )
                            .await
                            .map(|_| ()),
                        Operation::ScaleDeployment => {
                            // A replica count never asked for before, so that
                            // every request changes the Deployment.
                            let replicas = sequence.fetch_add(1, Ordering::Relaxed) % 1_000_000 + 1;
                            deployments
                                .patch_scale(
                                    DRILL_DEPLOYMENT,
                                    &PatchParams::default(),
                                    &Patch::Merge(json!({"spec": {"replicas": replicas}})),
                                )
                                .await
                                .map(|_| ())
                        }
                    };
                    match outcome {
                        Ok(()) => {
                            let micros = sent.elapsed().as_micros().min(60_000_000) as u64;
                            let _ = latencies.record(micros.max(1));
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            }));
        }
        let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| ClusterBenchError::Setup(e.to_string()))?;
        for task in tasks {
            let part = task
                .await
                .map_err(|e| ClusterBenchError::Setup(format!("client task failed: {e}")))?;
            latencies
                .add(part)
                .map_err(|e| ClusterBenchError::Setup(e.to_string()))?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let requests = latencies.len();
        Ok(OperationReport {
            operation: operation.name(),
            requests,
            errors: errors.load(Ordering::Relaxed),
            requests_per_sec: requests as f64 / elapsed,
            p50_us: latencies.value_at_quantile(0.5),
            p99_us: latencies.value_at_quantile(0.99),
            max_us: latencies.max(),
            stored_writes: server.store().revision() - revision_before,
        })
    }
}

/// A table for people.
pub fn render(report: &ClusterBenchReport) -> String {
    let mut out = format!(
        "local cluster at {}, {} clients, {:.1} s per operation (kube-rs over loopback HTTP)\n",
        report.server, report.clients, report.duration_secs
    );
    out.push_str(&format!(
        "{:<24} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>8}\n",
        "operation", "requests", "errors", "req/s", "p50 µs", "p99 µs", "max µs", "stored"
    ));
    for op in &report.operations {
        out.push_str(&format!(
            "{:<24} {:>9} {:>7} {:>10.0} {:>9} {:>9} {:>9} {:>8}\n",
            op.operation,
            op.requests,
            op.errors,
            op.requests_per_sec,
            op.p50_us,
            op.p99_us,
            op.max_us,
            op.stored_writes
        ));
    }
    out
}
