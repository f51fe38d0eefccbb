//! The real kubectl pointed at one local cluster server, with its own HOME
//! (so its discovery cache belongs to one test alone).

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use warroom::cluster::ClusterServer;

/// How long one kubectl command may take (discovery on a busy machine
/// included) before the test fails saying which.
pub const KUBECTL_RUNS: Duration = Duration::from_secs(90);

/// kubectl and the files it uses.
pub struct Kubectl {
    /// The kubectl binary.
    pub bin: PathBuf,
    /// Its HOME (holding its caches and any file a test writes for it).
    pub home: tempfile::TempDir,
    /// The kubeconfig for `server`.
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    /// `bin` pointed at `server`.
    pub fn new(bin: PathBuf, server: &ClusterServer) -> Self {
        let home = tempfile::tempdir().expect("temp dir");
        let kubeconfig = home.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Self {
            bin,
            home,
            kubeconfig,
        }
    }

    /// A kubectl command with this kubeconfig and HOME, killed on drop.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl to its end (within [`KUBECTL_RUNS`]).
    pub async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(KUBECTL_RUNS, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within {KUBECTL_RUNS:?}"))
            .expect("kubectl runs")
    }

    /// Runs kubectl, expects success, returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs kubectl, expects failure, returns stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
