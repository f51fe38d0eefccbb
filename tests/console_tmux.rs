//! `warroom console` in a real terminal (tmux), attached to a local cluster
//! server, a collision exporter on a real Redis, and an incident journal:
//! the panels appear, a collision fires its alert, the lock-contention
//! playbook runs from it by keystrokes through its confirmations (typed
//! where the playbook asks), a note and a milestone are added, the timeline
//! is exported, and after `q` the terminal is usable again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;
use warroom::cluster::{ClusterServer, StatusMode};
use warroom::exporter::{Exporter, ExporterConfig, KeyspaceEvents, StartFrom};
use warroom::lock::LockOptions;
use warroom::lock::legacy::LegacyLock;
use warroom::redis_node::RedisNode;

/// A local cluster, a Redis with the exporter reading it, and a journal.
struct Environment {
    runtime: tokio::runtime::Runtime,
    _redis: RedisNode,
    redis_url: String,
    cluster: Option<ClusterServer>,
    exporter_url: String,
    kubeconfig: PathBuf,
    journal: PathBuf,
    dir: tempfile::TempDir,
}

impl Environment {
    fn start(status: StatusMode) -> Environment {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let redis = RedisNode::start().unwrap();
        let redis_url = redis.url();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let (cluster, exporter_url) = runtime.block_on(async {
            let cluster = ClusterServer::start_seeded("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            cluster.store().set_status_mode(status);
            cluster.write_kubeconfig(&kubeconfig).unwrap();
            let exporter = Exporter::new(ExporterConfig {
                keyspace_events: KeyspaceEvents::Off,
                start: StartFrom::Beginning,
                ..ExporterConfig::new(&redis_url)
            })
            .unwrap();
            let (addr, _server) = exporter.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            std::mem::forget(exporter.spawn());
            (cluster, format!("http://{addr}"))
        });
        let journal = dir.path().join("PM-003-drill.jsonl");
        let out = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_warroom")).args([
                "timeline",
                "new",
                "--id",
                "PM-003-drill",
                "--severity",
                "SEV-1",
                journal.to_str().unwrap(),
            ]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Environment {
            runtime,
            _redis: redis,
            redis_url,
            cluster: Some(cluster),
            exporter_url,
            kubeconfig,
            journal,
            dir,
        }
    }

    /// The console's command line.
    fn console(&self) -> String {
        format!(
            "{} console --kubeconfig {} --exporter {} --timeline {} --playbooks {} --log-file {}",
            env!("CARGO_BIN_EXE_warroom"),
            self.kubeconfig.display(),
            self.exporter_url,
            self.journal.display(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("playbooks")
                .display(),
            self.dir.path().join("console.log").display()
        )
    }

    /// Two workers believe they hold the same order lock (PM-003).
    fn collide(&self) -> (LegacyLock, LegacyLock) {
        self.runtime.block_on(async {
            let ttl = Duration::from_secs(120);
            let a = LegacyLock::connect(&self.redis_url, LockOptions::new(ttl, "pod-7f"))
                .await
                .unwrap();
            let b = LegacyLock::connect(&self.redis_url, LockOptions::new(ttl, "pod-3c"))
                .await
                .unwrap();
            std::mem::forget(a.acquire("lock:ord-9927431", ttl).await.unwrap());
            // The legacy lock grants again once the key is gone (the GC pause).
            let mut conn = redis::Client::open(self.redis_url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let _: () = redis::AsyncCommands::del(&mut conn, "lock:ord-9927431")
                .await
                .unwrap();
            std::mem::forget(b.acquire("lock:ord-9927431", ttl).await.unwrap());
            (a, b)
        })
    }

    fn replicas(&self) -> i64 {
        let cluster = self.cluster.as_ref().unwrap();
        let deployment = cluster
            .store()
            .get("apps/v1", "Deployment", Some("orders"), "order-service")
            .unwrap();
        deployment["spec"]["replicas"].as_i64().unwrap()
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            self.runtime.block_on(cluster.stop());
        }
    }
}

fn tools() -> bool {
    common::require_tool("tmux", "tmux").is_some()
        && common::require_tool("redis-server", "redis-server").is_some()
}

/// After the console quits, the shell reads a line and echoes it: the
/// terminal left raw mode and the alternate screen.
fn assert_terminal_usable(tmux: &Tmux) {
    tmux.type_text(
        "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' +; echo ok-$((40+2))",
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["icanon+echo+ok-42"],
        "the shell to run a command after the console",
    );
}

#[test]
fn lock_contention_runs_from_its_alert_by_keystrokes_and_is_recorded() {
    if !tools() {
        return;
    }
    let env = Environment::start(StatusMode::Converge);
    let tmux = Tmux::start(env.dir.path(), 160, 48);
    tmux.type_text(&format!("{}; echo EXITED=$?", env.console()));
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &[
            "Lock collisions",
            "order-service  8/8 ready",
            "lock mode      legacy",
            "incident PM-003-drill opened",
        ],
        "the panels with live data",
    );
    let _holders = env.collide();
    tmux.wait_for(
        &["● LockConcurrentHolders", "→ lock-contention"],
        "the collision alert offering its playbook",
    );
    tmux.keys(&["r"]);
    tmux.wait_for(
        &["Run lock-contention?", "replicas 8 → 1", "Confirm: y/enter"],
        "the plan to confirm",
    );
    tmux.keys(&["y"]);
    tmux.wait_for(&["type scale order-service"], "the typed gate");
    // Enter on an empty answer does nothing; a wrong answer is refused.
    tmux.keys(&["Enter"]);
    tmux.type_text("scale");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["type exactly: scale order-service"],
        "a wrong answer refused",
    );
    assert_eq!(
        env.replicas(),
        8,
        "nothing changed before the gate was answered"
    );
    tmux.type_text(" order-service");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["step confirm-rate-limit", "Confirm: y/enter"],
        "the rate-limit gate",
    );
    tmux.keys(&["y"]);
    tmux.wait_for(
        &["step confirm-watch-locking", "type watch"],
        "the lock-mode gate",
    );
    tmux.type_text("watch");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &[
            "✓ done",
            "order-service  1/1 ready",
            "gateway limit  50 rps",
            "lock mode      watch",
        ],
        "the run done and the cluster mitigated",
    );
    assert_eq!(env.replicas(), 1);
    tmux.keys(&["n"]);
    tmux.type_text("collisions stopped after the scale-down");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["note: collisions stopped after the scale-down"],
        "the note in the timeline",
    );
    tmux.keys(&["m"]);
    tmux.type_text("mitigated");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["milestone mitigated marked"], "the milestone");
    tmux.keys(&["e"]);
    tmux.wait_for(&["timeline exported to"], "the export");
    tmux.keys(&["q"]);
    tmux.wait_for(&["EXITED=0"], "the console to quit with 0");
    assert_terminal_usable(&tmux);

    let markdown = std::fs::read_to_string(env.journal.with_extension("md")).unwrap();
    for step in [
        "confirm-scale-down",
        "scale-down",
        "limit-ingress",
        "set-lock-mode",
        "restart-order-service",
    ] {
        assert!(
            markdown
                .lines()
                .any(|l| l.contains(&format!("Step {step} ")) && l.contains("warroom-operator")),
            "{step} with its actor in the export:\n{markdown}"
        );
    }
    assert!(markdown.contains("collisions stopped after the scale-down"));
    assert!(env.journal.with_extension("html").is_file());
}

#[test]
fn a_cancelled_run_is_undone() {
    if !tools() {
        return;
    }
    // Deployment status is never rolled out: the run waits on the scale-down.
    let env = Environment::start(StatusMode::External);
    let tmux = Tmux::start(env.dir.path(), 160, 48);
    tmux.type_text(&format!("{}; echo EXITED=$?", env.console()));
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Lock collisions", "order-service"], "the panels");
    // Select lock-contention in the playbook list (name order: third).
    tmux.type_text(":playbooks");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Playbooks", "lock-contention"], "the playbook list");
    tmux.keys(&["Down"]);
    tmux.keys(&["Down"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["Playbook · lock-contention"], "its plan");
    tmux.keys(&["r"]);
    tmux.wait_for(&["Run lock-contention?"], "the plan to confirm");
    tmux.keys(&["y"]);
    tmux.wait_for(&["type scale order-service"], "the typed gate");
    tmux.type_text("scale order-service");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["▶ running"], "the run waiting on the rollout");
    common::wait_until("the scale-down applied", Duration::from_secs(30), || {
        (env.replicas() == 1).then_some(())
    });
    tmux.keys(&["c"]);
    tmux.wait_for(&["step undo", "Confirm: y/enter"], "the undo asked for");
    tmux.keys(&["y"]);
    tmux.wait_for(&["✕ cancelled"], "the cancelled run undone");
    assert_eq!(env.replicas(), 8, "the scale-down was put back");
    tmux.keys(&["q"]);
    tmux.wait_for(&["EXITED=0"], "the console to quit");
    assert_terminal_usable(&tmux);
}

/// The sum of every sample of `family` on the exporter at `addr`.
fn scrape_sum(addr: &str, family: &str) -> f64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the drill's exporter answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `warroom drill` on a terminal is the console: collisions appear, the
/// lock-contention playbook runs from its alert by keystrokes, the
/// collisions stop while orders keep being granted, and quitting ends the
/// drill with its report and leaves the terminal usable.
#[test]
fn the_drill_in_its_console_stops_collisions_with_the_playbook() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = warroom::redis_node::free_port().unwrap();
    let exporter = format!("127.0.0.1:{port}");
    let tmux = Tmux::start(dir.path(), 160, 48);
    // The working directory has no playbooks/: the built-in ones are used.
    tmux.type_text(&format!(
        "{} drill --speed 120 --seed 3 --no-prometheus --exporter-listen {exporter} --dir {}; echo EXITED=$?",
        env!("CARGO_BIN_EXE_warroom"),
        dir.path().display()
    ));
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &[
            "Lock collisions",
            "order-service  8/8 ready",
            "lock mode      legacy",
        ],
        "the drill's console with live data",
    );
    // The collisions alert holds for five minutes (`increase(...[5m])`),
    // and the combined PM-003 playbook is the first that answers it.
    tmux.wait_for(
        &["● LockCollisionsIncreasing", "→ lock-contention"],
        "the drill's collision alert offering the lock-contention playbook",
    );
    assert!(scrape_sum(&exporter, "warroom_lock_collisions_total") > 0.0);
    // The overruns alert may fire first and hold the selection: the filter
    // keeps only the collisions alert, whatever the order they fired in.
    tmux.keys(&["/"]);
    tmux.type_text("LockCollisionsIncreasing");
    tmux.keys(&["Enter"]);
    tmux.keys(&["r"]);
    tmux.wait_for(&["Run lock-contention?", "Confirm: y/enter"], "the plan");
    tmux.keys(&["y"]);
    tmux.wait_for(&["type scale order-service"], "the typed gate");
    tmux.type_text("scale order-service");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["step confirm-rate-limit", "Confirm: y/enter"],
        "the rate-limit gate",
    );
    tmux.keys(&["y"]);
    tmux.wait_for(&["type watch"], "the lock-mode gate");
    tmux.type_text("watch");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["✓ done", "order-service  1/1 ready", "lock mode      watch"],
        "the run done and the drill mitigated",
    );
    // Collisions stop: the counter stands still while the one worker left
    // commits 50 more orders under WATCH (its pod log says so).
    let committed = || -> usize {
        let Some(pods) = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("pods"))
            .find(|p| p.is_dir())
        else {
            return 0;
        };
        std::fs::read_dir(pods)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|log| log.matches("WATCH COMMITTED").count())
            .sum()
    };
    let collisions = scrape_sum(&exporter, "warroom_lock_collisions_total");
    let before = committed();
    common::wait_until(
        "50 more orders committed after the mitigation",
        Duration::from_secs(60),
        || (committed() >= before + 50).then_some(()),
    );
    assert_eq!(
        scrape_sum(&exporter, "warroom_lock_collisions_total"),
        collisions,
        "no collision after the mitigation"
    );
    tmux.keys(&["m"]);
    tmux.type_text("mitigated");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["milestone mitigated marked"], "the milestone");
    tmux.keys(&["q"]);
    let screen = tmux.wait_for(&["EXITED=0"], "the drill to end with its report");
    assert!(screen.contains("corrupted orders"), "{screen}");
    assert_terminal_usable(&tmux);
    // The export beside the journal holds every step with its actor.
    let export = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("incident.md"))
        .find(|p| p.is_file())
        .expect("the drill wrote its export");
    let markdown = std::fs::read_to_string(export).unwrap();
    for step in ["scale-down", "limit-ingress", "set-lock-mode"] {
        assert!(markdown.contains(step), "{step} in the export:\n{markdown}");
    }
}
