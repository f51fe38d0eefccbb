//! A real Prometheus server for the drill, when `prometheus` is on `PATH`:
//! `config/alerts.yaml` as its rules, the drill's exporter as its only
//! target, a 1 s scrape and evaluation interval, its data and log in the
//! drill directory, and `PR_SET_PDEATHSIG` so that it dies with the drill.
//! The drill asks it (`/api/v1/alerts`) when it fired each alert.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The rules Prometheus evaluates: the shipped `config/alerts.yaml`.
pub const ALERT_RULES: &str = include_str!("../../config/alerts.yaml");

/// How long Prometheus may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why Prometheus could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// Files could not be written, or the process not started.
    #[error("cannot start prometheus: {0}")]
    Start(#[from] std::io::Error),
    /// It started but did not answer `/-/ready` in time.
    #[error("prometheus did not become ready within {0:?} (see {1})")]
    NotReady(Duration, String),
}

/// A running Prometheus; dropping it kills it.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    url: String,
    http: reqwest::Client,
}

/// The `prometheus` binary on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The configuration: 1 s scrape and evaluation, one target.
fn config(exporter: SocketAddr) -> String {
    format!(
        "# Written by warroom drill.\n\
         global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - alerts.yaml\n\
         scrape_configs:\n  - job_name: warroom-drill\n    static_configs:\n      - targets: ['{exporter}']\n"
    )
}

impl Prometheus {
    /// Starts `bin` with its files in `dir`, scraping `exporter`. Waits
    /// until it is ready.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        exporter: SocketAddr,
    ) -> Result<Prometheus, PrometheusError> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("prometheus.yml"), config(exporter))?;
        std::fs::write(dir.join("alerts.yaml"), ALERT_RULES)?;
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path)?;
        let port = crate::redis_node::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .arg("--storage.tsdb.retention.time=1d")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        crate::redis_node::die_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        let mut prometheus = Prometheus {
            child: Some(child),
            url: format!("http://{listen}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .map_err(std::io::Error::other)?,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = prometheus.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                prometheus.child = None;
                return Err(PrometheusError::Start(std::io::Error::other(format!(
                    "prometheus exited with {status} (see {})",
                    log_path.display()
                ))));
            }
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(prometheus);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PrometheusError::NotReady(
                    READY_TIMEOUT,
                    log_path.display().to_string(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Firing alerts by name, with the time (Unix ms) each became active
    /// (the earliest over its label sets). Errors are returned as text.
    pub async fn firing(&self) -> Result<BTreeMap<String, u64>, String> {
        let body: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/alerts", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let mut firing = BTreeMap::new();
        let alerts = body
            .pointer("/data/alerts")
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default();
        for alert in alerts {
            if alert.get("state").and_then(|s| s.as_str()) != Some("firing") {
                continue;
            }
            let Some(name) = alert.pointer("/labels/alertname").and_then(|n| n.as_str()) else {
                continue;
            };
            let Some(active) = alert
                .get("activeAt")
                .and_then(|a| a.as_str())
                .and_then(|a| a.parse::<jiff::Timestamp>().ok())
            else {
                continue;
            };
            let ms = u64::try_from(active.as_millisecond()).unwrap_or(0);
            firing
                .entry(name.to_string())
                .and_modify(|t: &mut u64| *t = (*t).min(ms))
                .or_insert(ms);
        }
        Ok(firing)
    }

    /// Stops it (SIGTERM, then SIGKILL after two seconds) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_configuration_scrapes_the_exporter_every_second() {
        let text = super::config("127.0.0.1:9464".parse().expect("address"));
        assert!(text.contains("scrape_interval: 1s"));
        assert!(text.contains("evaluation_interval: 1s"));
        assert!(text.contains("'127.0.0.1:9464'"));
        assert!(text.contains("alerts.yaml"));
    }
}
