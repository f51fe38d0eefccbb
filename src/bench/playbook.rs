//! `warroom bench playbook`: the time from `warroom run PLAYBOOK --yes` to
//! every step verified, measured as an operator sees it — the real binary as
//! a child process against a local cluster server (or any kubeconfig) —
//! minus the time spent in `wait` steps. Each run is undone before the next
//! so that every run changes the same objects.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::cluster::ClusterServer;

/// What to measure.
#[derive(Debug, Clone)]
pub struct PlaybookBench {
    /// The playbook file.
    pub playbook: PathBuf,
    /// How many runs.
    pub runs: usize,
    /// The `warroom` binary to run.
    pub binary: PathBuf,
    /// A kubeconfig to use instead of starting a local cluster server.
    pub kubeconfig: Option<PathBuf>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookBenchError {
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
    /// The cluster server or a run failed.
    #[error("{0}")]
    Setup(String),
}

/// Milliseconds: minimum, median, maximum, mean.
#[derive(Debug, Clone, Serialize)]
pub struct Millis {
    /// Fastest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Millis {
    fn of(samples: &[f64]) -> Millis {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1);
        Millis {
            min: sorted.first().copied().unwrap_or(0.0),
            p50: sorted.get((n - 1) / 2).copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            mean: sorted.iter().sum::<f64>() / n as f64,
        }
    }
}

/// The numbers.
#[derive(Debug, Clone, Serialize)]
pub struct PlaybookBenchReport {
    /// The playbook measured.
    pub playbook: String,
    /// Runs measured.
    pub runs: usize,
    /// Steps per run.
    pub steps: usize,
    /// The API server used.
    pub server: String,
    /// Process start to exit, as the operator waits.
    pub wall_ms: Millis,
    /// Of that, inside the engine (preconditions to last step verified).
    pub engine_ms: Millis,
    /// Of that, spent in `wait` steps and gates.
    pub waited_ms: Millis,
    /// Wall time minus waits: the number held against the 2 s target.
    pub wall_excluding_waits_ms: Millis,
    /// The target.
    pub target_ms: f64,
    /// Whether the slowest run met the target.
    pub met: bool,
}

impl PlaybookBench {
    /// Runs the benchmark.
    pub async fn run(&self) -> Result<PlaybookBenchReport, PlaybookBenchError> {
        if self.runs == 0 {
            return Err(PlaybookBenchError::Invalid(
                "--runs must be at least 1".into(),
            ));
        }
        if !self.playbook.exists() {
            return Err(PlaybookBenchError::Invalid(format!(
                "{} does not exist",
                self.playbook.display()
            )));
        }
        // An invalid playbook is the operator's to fix (exit 2), not a
        // failed run.
        crate::playbook::load_file(&self.playbook)
            .map_err(|e| PlaybookBenchError::Invalid(e.to_string()))?;
        let dir = tempfile_dir()?;
        let (server, kubeconfig) = match &self.kubeconfig {
            Some(path) => (None, path.clone()),
            None => {
                let server = ClusterServer::start_seeded(([127, 0, 0, 1], 0).into())
                    .await
                    .map_err(|e| PlaybookBenchError::Setup(format!("local cluster server: {e}")))?;
                let path = dir.join("kubeconfig");
                server
                    .write_kubeconfig(&path)
                    .map_err(|e| PlaybookBenchError::Setup(format!("writing kubeconfig: {e}")))?;
                (Some(server), path)
            }
        };
        let server_url = server
            .as_ref()
            .map(|s| s.url())
            .unwrap_or_else(|| kubeconfig.display().to_string());
        let mut wall = Vec::new();
        let mut engine = Vec::new();
        let mut waited = Vec::new();
        let mut excluding = Vec::new();
        let mut steps = 0;
        for _ in 0..self.runs {
            let started = Instant::now();
            let out = tokio::process::Command::new(&self.binary)
                .arg("run")
                .arg(&self.playbook)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--yes", "--output", "json"])
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| PlaybookBenchError::Setup(format!("running warroom: {e}")))?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
                PlaybookBenchError::Setup(format!(
                    "warroom run printed no JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            })?;
            if report["outcome"] != "done" {
                return Err(PlaybookBenchError::Setup(format!(
                    "run did not complete: {}",
                    report["message"]
                )));
            }
            let waits = report["waited_ms"].as_f64().unwrap_or(0.0);
            steps = report["steps"].as_array().map(Vec::len).unwrap_or(0);
            wall.push(elapsed);
            engine.push(report["elapsed_ms"].as_f64().unwrap_or(0.0));
            waited.push(waits);
            excluding.push(elapsed - waits);
            let run_id = report["run_id"].as_str().unwrap_or_default().to_owned();
            let undo = tokio::process::Command::new(&self.binary)
                .args(["undo", &run_id, "--yes", "--kubeconfig"])
                .arg(&kubeconfig)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| PlaybookBenchError::Setup(format!("running warroom undo: {e}")))?;
            if !undo.status.success() {
                return Err(PlaybookBenchError::Setup(format!(
                    "undo of {run_id} failed: {}",
                    String::from_utf8_lossy(&undo.stdout)
                )));
            }
        }
        if let Some(server) = server {
            server.stop().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let excluding_ms = Millis::of(&excluding);
        Ok(PlaybookBenchReport {
            playbook: self.playbook.display().to_string(),
            runs: self.runs,
            steps,
            server: server_url,
            wall_ms: Millis::of(&wall),
            engine_ms: Millis::of(&engine),
            waited_ms: Millis::of(&waited),
            met: excluding_ms.max < 2000.0,
            wall_excluding_waits_ms: excluding_ms,
            target_ms: 2000.0,
        })
    }
}

fn tempfile_dir() -> Result<PathBuf, PlaybookBenchError> {
    let dir = std::env::temp_dir().join(format!(
        "warroom-bench-playbook-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| PlaybookBenchError::Setup(format!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}
