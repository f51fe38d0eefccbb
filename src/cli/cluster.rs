//! `warroom cluster`: runs the local Kubernetes-API-compatible server until
//! Ctrl-C, and writes a kubeconfig that points kubectl and warroom at it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use warroom::cluster::{ClusterError, ClusterServer, kubeconfig_for};

use super::{CommandResult, Exit, Failure};

/// `warroom cluster` arguments.
#[derive(Args)]
pub struct ClusterArgs {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (use it with `kubectl --kubeconfig` or
    /// `KUBECONFIG`). Its directory must exist; an existing file is replaced
    /// only if an earlier `warroom cluster` wrote it.
    #[arg(long, default_value = "warroom-local.kubeconfig")]
    kubeconfig_out: PathBuf,
    /// Start with only the default and kube-system namespaces (no drill objects).
    #[arg(long)]
    empty: bool,
}

/// Runs the server until Ctrl-C (or SIGTERM).
pub fn run(args: ClusterArgs) -> CommandResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(args))
}

async fn serve(args: ClusterArgs) -> CommandResult {
    if !args.listen.ip().is_loopback() {
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "refusing to listen on {}: the local cluster has no authentication, so it only \
                 listens on loopback addresses (127.0.0.1, ::1)",
                args.listen
            ),
        ));
    }
    check_kubeconfig_out(&args.kubeconfig_out)?;
    // Listening for Ctrl-C (and `kill`) before anything is announced: a
    // signal sent as soon as the kubeconfig appears stops the server cleanly
    // instead of killing the process.
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind| {
        signal(kind).map_err(|e| Failure::msg(Exit::Failed, format!("cannot wait for Ctrl-C: {e}")))
    };
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let started = if args.empty {
        ClusterServer::start(args.listen).await
    } else {
        ClusterServer::start_seeded(args.listen).await
    };
    let server = started.map_err(|e| match e {
        ClusterError::Bind { .. } => Failure::msg(
            Exit::Invalid,
            format!("{e} (choose another address with --listen, port 0 picks a free one)"),
        ),
        other => Failure::msg(Exit::Failed, other),
    })?;
    server.write_kubeconfig(&args.kubeconfig_out).map_err(|e| {
        Failure::msg(
            Exit::Invalid,
            format!(
                "cannot write the kubeconfig to {}: {e}",
                args.kubeconfig_out.display()
            ),
        )
    })?;
    println!("local cluster serving at {}", server.url());
    println!("kubeconfig written to {}", args.kubeconfig_out.display());
    println!(
        "try: kubectl --kubeconfig {} get deploy,cm,ing",
        args.kubeconfig_out.display()
    );
    println!("press Ctrl-C to stop");
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    server.stop().await;
    println!("local cluster stopped");
    Ok(Exit::Done)
}

/// Refuses, before anything starts, a `--kubeconfig-out` that cannot be
/// written or whose file holds something else (a real kubeconfig must not
/// be overwritten by the local cluster's).
fn check_kubeconfig_out(path: &Path) -> Result<(), Failure> {
    let shown = path.display();
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "cannot write the kubeconfig to {shown}: the directory {} does not exist \
                 (create it, or choose another --kubeconfig-out)",
                directory.display()
            ),
        ));
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !meta.is_file() {
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "cannot write the kubeconfig to {shown}: it is not a regular file \
                 (choose a file name with --kubeconfig-out)"
            ),
        ));
    }
    // Ours: what an earlier run wrote, whatever server URL it named.
    let ours = meta.len() == 0
        || (meta.len() < 4096
            && std::fs::read_to_string(path)
                .is_ok_and(|text| without_server(&text) == without_server(&kubeconfig_for(""))));
    if ours {
        Ok(())
    } else {
        Err(Failure::msg(
            Exit::Refused,
            format!(
                "{shown} exists and is not a kubeconfig `warroom cluster` wrote: refusing to \
                 overwrite it (choose another --kubeconfig-out, or move the file away)"
            ),
        ))
    }
}

/// A kubeconfig's lines other than its `server:` line.
fn without_server(kubeconfig: &str) -> Vec<&str> {
    kubeconfig
        .lines()
        .filter(|line| !line.trim_start().starts_with("server:"))
        .collect()
}
