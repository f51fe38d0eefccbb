//! `warroom cluster`: runs the local Kubernetes-API-compatible server until
//! Ctrl-C, and writes a kubeconfig that points kubectl and warroom at it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use warroom::cluster::{ClusterError, ClusterServer};

use super::{CommandResult, Exit, Failure};

/// `warroom cluster` arguments.
#[derive(Args)]
pub struct ClusterArgs {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (use it with `kubectl --kubeconfig` or `KUBECONFIG`).
    #[arg(long, default_value = "warroom-local.kubeconfig")]
    kubeconfig_out: PathBuf,
    /// Start with only the default and kube-system namespaces (no drill objects).
    #[arg(long)]
    empty: bool,
}

/// Runs the server until Ctrl-C.
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
    let stopped = tokio::signal::ctrl_c().await;
    server.stop().await;
    stopped.map_err(|e| Failure::msg(Exit::Failed, format!("cannot wait for Ctrl-C: {e}")))?;
    println!("local cluster stopped");
    Ok(Exit::Done)
}
