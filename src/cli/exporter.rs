//! `warroom exporter`: serve the collision exporter's `/metrics` and
//! `/healthz` until interrupted.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use warroom::exporter::{
    DEFAULT_LISTEN, Exporter, ExporterConfig, ExporterError, KeyspaceEvents, StartFrom,
};
use warroom::lock::event::DEFAULT_STREAM;

use super::{CommandResult, Exit, Failure, output};

/// May the exporter change `notify-keyspace-events` on the server?
#[derive(Clone, Copy, ValueEnum)]
pub enum KeyspaceArg {
    /// Turn on expired-key notifications (`Ex`) if they are off.
    Allow,
    /// Never change the server's configuration; use the notifications only
    /// if they are already on.
    Off,
}

/// `warroom exporter` arguments.
#[derive(Args)]
pub struct ExporterArgs {
    /// Redis holding the lock event stream (and the lock keys).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Address to serve /metrics and /healthz on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Allow --listen on an address other than loopback (the metrics name
    /// lock keys and services).
    #[arg(long)]
    allow_remote: bool,
    /// Lock event stream key.
    #[arg(long, default_value = DEFAULT_STREAM)]
    stream: String,
    /// Expired-key notifications: `allow` lets the exporter turn them on
    /// with CONFIG SET; `off` never changes the server.
    #[arg(long, value_enum, default_value = "off")]
    keyspace_events: KeyspaceArg,
    /// Count the events already in the stream too (default: only new ones).
    #[arg(long)]
    from_start: bool,
    /// Keys labelled on warroom_lock_holders, 0 to 1,000 (each is a series
    /// Prometheus keeps); the rest are summed.
    #[arg(long, default_value_t = 10, value_parser = super::numbers::whole::<usize>(0..=1_000), allow_negative_numbers = true)]
    top_keys: usize,
}

/// Runs the exporter until Ctrl-C.
pub fn run(args: ExporterArgs) -> CommandResult {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "--listen {} is not a loopback address; the metrics name lock keys and \
                 services, so serving them beyond this host needs --allow-remote",
                args.listen
            ),
        ));
    }
    let config = ExporterConfig {
        stream: args.stream,
        keyspace_events: match args.keyspace_events {
            KeyspaceArg::Allow => KeyspaceEvents::Allow,
            KeyspaceArg::Off => KeyspaceEvents::Off,
        },
        start: if args.from_start {
            StartFrom::Beginning
        } else {
            StartFrom::Latest
        },
        top_keys: args.top_keys,
        ..ExporterConfig::new(args.redis)
    };
    let exporter = Exporter::new(config).map_err(|e| Failure::msg(Exit::Invalid, e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(exporter, args.listen))
}

async fn serve(exporter: Exporter, listen: SocketAddr) -> CommandResult {
    let (bound, server) = exporter.bind(listen).await.map_err(|e| match e {
        ExporterError::Listen { .. } => Failure::msg(
            Exit::Invalid,
            format!("{e} (choose another address with --listen; port 0 picks a free one)"),
        ),
        other => Failure::msg(Exit::Invalid, other),
    })?;
    let config = exporter.config();
    output::say(format!(
        "warroom exporter: serving http://{bound}/metrics and /healthz; reading stream {:?} from {}",
        config.stream, config.redis_url
    ));
    // What the server's notifications turn out to be is logged once by the
    // reader that finds out; here only what the exporter may do.
    output::say(match config.keyspace_events {
        KeyspaceEvents::Allow => {
            "keyspace notifications: allowed; the exporter turns on expired-key events \
             (notify-keyspace-events Ex) if they are off"
        }
        KeyspaceEvents::Off => {
            "keyspace notifications: --keyspace-events off; the server's configuration is \
             left as it is"
        }
    });
    let _readers = exporter.spawn();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(Exit::Done),
        _ = server => Err(Failure::msg(Exit::Failed, "the HTTP server stopped")),
    }
}
