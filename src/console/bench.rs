//! `warroom bench console`: the console's numbers, printed, never pass/fail.
//!
//! - Render time per frame at 200×60 with 100,000 timeline events and an
//!   hour of 1 s samples in every chart (target ≤ 2 ms), for the 5-minute
//!   and the 1-hour chart window.
//! - With `tmux` and `redis-server` on PATH, the real `warroom console`
//!   process attached to a local cluster server, an exporter on a real
//!   Redis and a 100,000-event journal: the time from a collision written
//!   to Redis to the panel showing it (target < 1 s at the default 1 s
//!   poll), its CPU while idle (target ≤ 2 % of a core) and its resident
//!   memory (target ≤ 50 MB).

use std::path::Path;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{App, Guardrails};
use super::store::{
    ClusterView, DeploymentView, PlaybookEntry, Reading, RunState, RunView, StepLine, StepStatus,
    Store,
};
use crate::timeline::{Entry, Event};

/// Render-time figures for one chart window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RenderNumbers {
    /// Chart window in seconds.
    pub window_s: i64,
    /// Frames drawn.
    pub frames: usize,
    /// Median milliseconds per frame.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Median CPU milliseconds of the drawing thread per frame.
    pub cpu_p50_ms: f64,
    /// 99th percentile of the CPU time.
    pub cpu_p99_ms: f64,
    /// Mean CPU time.
    pub cpu_mean_ms: f64,
}

/// A store as after an hour of a SEV-1: 3,600 samples per chart column and
/// `events` timeline events, with a run on screen.
pub fn busy_store(now_ms: i64, events: usize) -> Store {
    let mut store = Store::new(1_000, 3_600_000);
    store.context = "warroom-local/orders".into();
    store.playbooks = vec![PlaybookEntry {
        name: "lock-contention".into(),
        description: String::new(),
        alerts: vec!["LockConcurrentHolders".into()],
    }];
    for s in (0..3_600).rev() {
        let t = (3_600 - s) as f64;
        store.record_reading(
            now_ms - s * 1_000,
            Reading {
                collisions_per_min: (t / 60.0).sin().abs() * 40.0,
                holders_max: 1.0 + (s % 3 == 0) as u8 as f64,
                overruns_per_min: (t / 90.0).cos().abs() * 10.0,
                rejections_per_min: (s % 17) as f64,
                errors_per_min: (t / 30.0).sin().abs() * 120.0,
                contended_key: Some("lock:ord-9927431".into()),
                collisions_total: t,
            },
        );
    }
    let start = now_ms - 3_600_000;
    let batch: Vec<Event> = (0..events)
        .map(|i| Event {
            seq: i as u64 + 1,
            at: jiff::Timestamp::from_millisecond(start + i as i64 * 36).unwrap_or_default(),
            logged_at: None,
            actor: if i % 2 == 0 { "bastian" } else { "warroom" }.into(),
            entry: Entry::note(format!(
                "event {i}: two holders on lock:ord-{}",
                9_927_000 + i
            )),
        })
        .collect();
    store.record_events(&batch);
    store.exporter.ok(now_ms);
    store.cluster_source.ok(now_ms);
    store.timeline_source.ok(now_ms);
    store.cluster = Some(ClusterView {
        deployment: Some(DeploymentView {
            desired: 8,
            ready: 3,
            updated: 3,
        }),
        ingress_found: true,
        gateway_limit: Some("50".into()),
        lock_mode: Some("legacy".into()),
        lease_holder: Some("bastian".into()),
    });
    store.run = Some(RunView {
        playbook: "lock-contention".into(),
        run_id: Some("20261126T094130Z-7f3a".into()),
        steps: (0..11)
            .map(|i| StepLine {
                name: format!("step-{i}"),
                kind: "scale".into(),
                what: "Deployment/order-service replicas 8 → 1".into(),
                status: if i < 4 {
                    StepStatus::Done
                } else {
                    StepStatus::Planned
                },
                message: String::new(),
            })
            .collect(),
        state: RunState::Running,
        message: String::new(),
    });
    store
}

/// CPU time of the calling thread (excludes time other processes had the
/// core: on a loaded machine wall time measures the neighbours too).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Draws `frames` frames of the busy store at 200×60, as the live console
/// does: a new 1 s sample (and a timeline event) every third frame, so the
/// frames that downsample the charts again are measured too.
pub fn render(frames: usize, window_s: i64) -> Result<RenderNumbers, String> {
    let now = crate::console::collect::now_ms();
    let mut app = App::new(busy_store(now, 100_000), Guardrails::default(), true);
    app.now_ms = now;
    app.window_s = window_s;
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(frames);
    let mut cpu = Vec::with_capacity(frames);
    for i in 0..frames.max(1) {
        // Time moves on, as it does on screen: a sample every second,
        // three frames a second.
        let second = (i / 3) as i64;
        app.now_ms = now + second * 1_000 + (i as i64 % 3) * 300;
        if i > 0 && i % 3 == 0 {
            let t = second as f64;
            app.store.record_reading(
                now + second * 1_000,
                Reading {
                    collisions_per_min: (t / 60.0).sin().abs() * 40.0,
                    holders_max: 1.0 + (i % 2) as f64,
                    overruns_per_min: (t / 90.0).cos().abs() * 10.0,
                    rejections_per_min: (i % 17) as f64,
                    errors_per_min: (t / 30.0).sin().abs() * 120.0,
                    contended_key: Some("lock:ord-9927431".into()),
                    collisions_total: t,
                },
            );
            app.store.record_events(&[Event {
                seq: 100_001 + i as u64,
                at: jiff::Timestamp::from_millisecond(now + second * 1_000).unwrap_or_default(),
                logged_at: None,
                actor: "bastian".into(),
                entry: Entry::note(format!("event at frame {i}")),
            }]);
        }
        let started = Instant::now();
        let cpu_started = thread_cpu();
        terminal
            .draw(|frame| super::ui::draw(frame, &app))
            .map_err(|e| e.to_string())?;
        cpu.push((thread_cpu().saturating_sub(cpu_started)).as_secs_f64() * 1_000.0);
        times.push(started.elapsed().as_secs_f64() * 1_000.0);
    }
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.5), at(0.99), v.iter().sum::<f64>() / v.len() as f64)
    };
    let (p50_ms, p99_ms, mean_ms) = stats(times);
    let (cpu_p50_ms, cpu_p99_ms, cpu_mean_ms) = stats(cpu);
    Ok(RenderNumbers {
        window_s,
        frames: frames.max(1),
        p50_ms,
        p99_ms,
        mean_ms,
        cpu_p50_ms,
        cpu_p99_ms,
        cpu_mean_ms,
    })
}

/// Figures of the live console process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveNumbers {
    /// Collision written to Redis → the alert on screen, per trial (ms).
    pub collision_to_screen_ms: Vec<f64>,
    /// CPU of the console process while idle, percent of one core.
    pub idle_cpu_percent: f64,
    /// Seconds the idle CPU was measured over.
    pub idle_seconds: u64,
    /// Resident memory of the console process, MB.
    pub resident_mb: f64,
    /// Timeline events in its journal.
    pub journal_events: usize,
}

fn tmux(socket: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .map_err(|e| format!("tmux: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(field(11) + field(12))
}

fn resident_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1_024.0)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Runs the live console (this executable) in tmux and measures it.
/// `None` when tmux or redis-server is missing (the reason is returned).
pub async fn live(
    trials: usize,
    idle_seconds: u64,
    playbooks: &Path,
) -> Result<Result<LiveNumbers, String>, String> {
    for tool in ["tmux", "redis-server"] {
        if !on_path(tool) {
            return Ok(Err(format!("{tool} is not on PATH")));
        }
    }
    let node = crate::redis_node::RedisNode::start().map_err(|e| e.to_string())?;
    let redis_url = node.url();
    let dir = std::env::temp_dir().join(format!("warroom-bench-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cluster =
        crate::cluster::ClusterServer::start_seeded("127.0.0.1:0".parse().map_err(|_| "address")?)
            .await
            .map_err(|e| e.to_string())?;
    let kubeconfig = dir.join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig)
        .map_err(|e| e.to_string())?;
    let exporter = crate::exporter::Exporter::new(crate::exporter::ExporterConfig::new(&redis_url))
        .map_err(|e| e.to_string())?;
    let (addr, _server) = exporter
        .bind("127.0.0.1:0".parse().map_err(|_| "address")?)
        .await
        .map_err(|e| e.to_string())?;
    let _readers = exporter.spawn();
    // A journal of 100,000 events, as after a long incident.
    let journal_path = dir.join("PM-003-bench.jsonl");
    let _ = std::fs::remove_file(&journal_path);
    let events = 100_000;
    {
        let path = journal_path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let journal =
                crate::timeline::Journal::open_or_create(&path).map_err(|e| e.to_string())?;
            for chunk in 0..(events / 10_000) {
                let batch = (0..10_000)
                    .map(|i| {
                        crate::timeline::NewEvent::now(
                            "bastian",
                            Entry::note(format!("note {}", chunk * 10_000 + i)),
                        )
                    })
                    .collect();
                journal.append_many(batch).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let socket = format!("warroom-bench-{}", std::process::id());
    let command = format!(
        "exec {} console --kubeconfig {} --exporter http://{addr} --timeline {} --playbooks {} --log-file {} --read-only",
        exe.display(),
        kubeconfig.display(),
        journal_path.display(),
        playbooks.display(),
        dir.join("console.log").display()
    );
    tmux(
        &socket,
        &[
            "new-session",
            "-d",
            "-s",
            "bench",
            "-x",
            "200",
            "-y",
            "60",
            &command,
        ],
    )?;
    let result = measure(&socket, &redis_url, trials, idle_seconds, events).await;
    let _ = tmux(&socket, &["kill-server"]);
    cluster.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(Ok)
}

async fn wait_screen(socket: &str, text: &str, deadline: Duration) -> Result<Instant, String> {
    let started = Instant::now();
    loop {
        let screen = tmux(socket, &["capture-pane", "-p", "-t", "bench"])?;
        if screen.contains(text) {
            return Ok(Instant::now());
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "the console did not show {text:?} within {deadline:?}:\n{screen}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn measure(
    socket: &str,
    redis_url: &str,
    trials: usize,
    idle_seconds: u64,
    events: usize,
) -> Result<LiveNumbers, String> {
    let pid: u32 = tmux(socket, &["display", "-p", "-t", "bench", "#{pane_pid}"])?
        .trim()
        .parse()
        .map_err(|_| "no console pid".to_owned())?;
    wait_screen(socket, &format!("{events} events"), Duration::from_secs(60)).await?;
    wait_screen(socket, "nothing firing", Duration::from_secs(30)).await?;
    // Idle: data flowing (polls, ticks), nobody typing.
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let before = cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let after = cpu_ticks(pid)?;
    let idle_cpu_percent = (after - before) as f64 / ticks_per_s / idle_seconds as f64 * 100.0;
    let resident = resident_mb(pid);
    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let mut latencies = Vec::new();
    for trial in 0..trials {
        // Spread the writes over the poll interval: right after the alert
        // cleared is right after a scrape, which would always wait longest.
        tokio::time::sleep(Duration::from_millis((trial as u64 * 379) % 1_000)).await;
        let key = format!("lock:bench-{trial}");
        let fields = |holder: &str| {
            vec![
                ("v", "1".to_owned()),
                ("kind", "acquired".to_owned()),
                ("mode", "legacy".to_owned()),
                ("key", key.clone()),
                ("holder", holder.to_owned()),
                ("ttl_ms", "1500".to_owned()),
            ]
        };
        let _: String = redis::AsyncCommands::xadd(
            &mut conn,
            crate::lock::event::DEFAULT_STREAM,
            "*",
            &fields("a"),
        )
        .await
        .map_err(|e| e.to_string())?;
        let _: String = redis::AsyncCommands::xadd(
            &mut conn,
            crate::lock::event::DEFAULT_STREAM,
            "*",
            &fields("b"),
        )
        .await
        .map_err(|e| e.to_string())?;
        let written = Instant::now();
        let seen = wait_screen(socket, "● LockConcurrentHolders", Duration::from_secs(10)).await?;
        latencies.push(seen.duration_since(written).as_secs_f64() * 1_000.0);
        let _: String = redis::AsyncCommands::xadd(
            &mut conn,
            crate::lock::event::DEFAULT_STREAM,
            "*",
            &[
                ("v", "1"),
                ("kind", "released"),
                ("mode", "legacy"),
                ("key", key.as_str()),
                ("holder", "a"),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        let _: String = redis::AsyncCommands::xadd(
            &mut conn,
            crate::lock::event::DEFAULT_STREAM,
            "*",
            &[
                ("v", "1"),
                ("kind", "released"),
                ("mode", "legacy"),
                ("key", key.as_str()),
                ("holder", "b"),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
        // Wait for the alert to clear before the next trial.
        let clear = Instant::now();
        loop {
            let screen = tmux(socket, &["capture-pane", "-p", "-t", "bench"])?;
            if !screen.contains("● LockConcurrentHolders") {
                break;
            }
            if clear.elapsed() > Duration::from_secs(10) {
                return Err("the alert did not clear after the release".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(LiveNumbers {
        collision_to_screen_ms: latencies,
        idle_cpu_percent,
        idle_seconds,
        resident_mb: resident,
        journal_events: events,
    })
}
