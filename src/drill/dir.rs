//! One directory per drill: the kubeconfig, the incident journal and its
//! Markdown export, the drill's own log, the pods' logs, Prometheus' data and
//! Redis' data, all in one place so that a drill leaves nothing in the
//! working directory.
//!
//! The default parent is `$XDG_STATE_HOME/warroom/drills` (else
//! `~/.local/state/warroom/drills`, else the temporary directory); `--dir`
//! names another one.

use std::path::{Path, PathBuf};

use super::DrillError;

/// The files and subdirectories of one drill.
#[derive(Debug, Clone)]
pub struct DrillDir {
    root: PathBuf,
    id: String,
}

impl DrillDir {
    /// Creates a fresh drill directory: `<parent>/<id>` when `parent` is
    /// given, else under the default parent. The id is the UTC start time
    /// and a random suffix, so two drills never share a directory.
    pub fn create(parent: Option<&Path>) -> Result<DrillDir, DrillError> {
        let parent = match parent {
            Some(parent) => parent.to_path_buf(),
            None => default_parent(),
        };
        let now = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        let id = format!("{now}-{:04x}", rand::random::<u16>());
        let root = parent.join(&id);
        create_private_dir(&root)?;
        let dir = DrillDir { root, id };
        for sub in [dir.pod_logs(), dir.redis_data(), dir.prometheus_data()] {
            create_private_dir(&sub)?;
        }
        Ok(dir)
    }

    /// The drill's id (its directory name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The kubeconfig for the drill's cluster server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// The incident journal (JSON Lines).
    pub fn journal(&self) -> PathBuf {
        self.root.join("incident.jsonl")
    }

    /// The journal's Markdown export, written on exit.
    pub fn export(&self) -> PathBuf {
        self.root.join("incident.md")
    }

    /// The drill's own log (tracing).
    pub fn log(&self) -> PathBuf {
        self.root.join("drill.log")
    }

    /// The report, written on exit in JSON.
    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }

    /// One log file per pod (worker process).
    pub fn pod_logs(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// Data of the Redis servers the drill starts.
    pub fn redis_data(&self) -> PathBuf {
        self.root.join("redis")
    }

    /// Prometheus' configuration, rules and data.
    pub fn prometheus_data(&self) -> PathBuf {
        self.root.join("prometheus")
    }
}

/// `$XDG_STATE_HOME/warroom/drills`, else `~/.local/state/warroom/drills`,
/// else `<temp>/warroom-drills`.
pub fn default_parent() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = absolute("XDG_STATE_HOME") {
        return state.join("warroom").join("drills");
    }
    if let Some(home) = absolute("HOME") {
        return home
            .join(".local")
            .join("state")
            .join("warroom")
            .join("drills");
    }
    std::env::temp_dir().join("warroom-drills")
}

fn create_private_dir(path: &Path) -> Result<(), DrillError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| DrillError::Io {
            what: "cannot create the drill directory",
            path: path.to_path_buf(),
            source,
        })
}
