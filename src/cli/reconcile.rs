//! `warroom reconcile`: PM-003's reconciliation of the drill's orders, in
//! Redis (`--redis`, see `warroom::drill::reconcile`) or in PM-003's
//! PostgreSQL tables (`--database`, see `warroom::drill::pg_reconcile`).
//!
//! Exit codes: 0 every order and lot agrees (after the repairs, with
//! `--repair`); 1 some still disagree — without `--repair` any found, with
//! it the ambiguous ones a person must decide (listed); 2 invalid
//! arguments; 3 the database's schema is missing or behind and `--migrate`
//! was not given (nothing changed); 4 Redis or PostgreSQL could not be
//! reached.

use clap::{Args, ValueEnum};
use warroom::drill::pg_reconcile::{self, PgError};
use warroom::drill::reconcile::{self, ReconcileReport};

use super::{CommandResult, Exit, Failure, output};

/// Output format.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// Environment variable read for `--redis` when neither flag is given.
pub const ENV_REDIS_URL: &str = "WARROOM_REDIS_URL";
/// Environment variable read for `--database` when neither flag is given
/// (and `WARROOM_REDIS_URL` is not set).
pub const ENV_DATABASE_URL: &str = "WARROOM_DATABASE_URL";

/// `warroom reconcile` arguments.
#[derive(Args)]
#[command(
    after_help = "Give exactly one of --redis and --database (or set WARROOM_REDIS_URL \
or WARROOM_DATABASE_URL). Exit codes: 0 every order and lot agrees; 1 some still disagree \
(listed, with what a person must decide); 2 invalid arguments; 3 the database's schema is \
missing or behind (run with --migrate); 4 Redis or PostgreSQL unreachable."
)]
pub struct ReconcileArgs {
    /// Redis holding the drill's orders (default: $WARROOM_REDIS_URL).
    #[arg(long, value_name = "URL", conflicts_with = "database")]
    redis: Option<String>,
    /// PostgreSQL holding PM-003's tables (orders, inventory_reservations,
    /// fulfillment_records and the audit tables), as postgres://user[:password]@host[:port]/database
    /// (default: $WARROOM_DATABASE_URL). The password is never shown.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Repair the orders the audit log makes unambiguous (each repair is
    /// appended to the audit log, in PostgreSQL with kind `repair`, one
    /// transaction per order); without it nothing is changed.
    #[arg(long)]
    repair: bool,
    /// With --database: apply PM-003's schema (the pending migrations)
    /// first, and say so; without it a missing or older schema stops the
    /// command before anything is changed.
    #[arg(long, requires = "database")]
    migrate: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

fn env_url(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Runs a reconciliation.
pub fn run(mut args: ReconcileArgs) -> CommandResult {
    if args.redis.is_none() && args.database.is_none() {
        args.redis = env_url(ENV_REDIS_URL);
        if args.redis.is_none() {
            args.database = env_url(ENV_DATABASE_URL);
        }
    }
    let Some(redis_url) = args.redis.clone() else {
        return match args.database.clone() {
            Some(url) => run_database(&args, &url),
            None => Err(Failure::msg(
                Exit::Invalid,
                "give --redis URL (the drill's Redis) or --database URL (PM-003's tables in \
                 PostgreSQL)",
            )),
        };
    };
    if args.migrate {
        return Err(Failure::msg(
            Exit::Invalid,
            "--migrate applies PM-003's PostgreSQL schema: it goes with --database",
        ));
    }
    warroom::redis_url::parse(&redis_url).map_err(|e| Failure::msg(Exit::Invalid, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(async {
        let args = ReconcileArgs {
            redis: Some(redis_url),
            database: None,
            ..args
        };
        let redis = args.redis.as_deref().unwrap_or_default();
        let unreachable = |e: &redis::RedisError| {
            Failure::msg(Exit::Unreachable, warroom::redis_url::explain(redis, e))
        };
        let client = redis::Client::open(redis).map_err(|e| unreachable(&e))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(30)))
            .set_number_of_retries(1);
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| unreachable(&e))?;
        let report = if args.repair {
            reconcile::repair(&mut conn, redis).await
        } else {
            reconcile::scan(&mut conn).await
        };
        report.map_err(|e| unreachable(&e))
    })?;
    finish(&report, args.output, args.repair)
}

fn finish(report: &ReconcileReport, format: Output, repairing: bool) -> CommandResult {
    match format {
        Output::Json => output::json(serde_json::to_value(report).unwrap_or_default()),
        Output::Text => print_text(report, repairing),
    }
    Ok(if report.remaining() == 0 {
        Exit::Done
    } else {
        Exit::Failed
    })
}

fn pg_failure(e: PgError) -> Failure {
    let exit = match e {
        PgError::Invalid { .. } => Exit::Invalid,
        PgError::Unreachable { .. } => Exit::Unreachable,
        PgError::Schema(_) => Exit::Refused,
        PgError::Query(_) => Exit::Unreachable,
    };
    Failure::msg(exit, e)
}

/// `--database`: the reconciliation over PM-003's tables.
fn run_database(args: &ReconcileArgs, url: &str) -> CommandResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(async {
        let mut client = pg_reconcile::connect(url).await.map_err(pg_failure)?;
        if args.migrate {
            let applied = pg_reconcile::apply_schema(&mut client)
                .await
                .map_err(pg_failure)?;
            if applied.is_empty() {
                output::say("schema: current, no migration to apply");
            }
            for m in &applied {
                output::say(format!(
                    "schema: applied migration {:04} {}",
                    m.version, m.name
                ));
            }
        }
        pg_reconcile::check_schema(&client)
            .await
            .map_err(pg_failure)?;
        if args.repair {
            pg_reconcile::repair(&mut client).await
        } else {
            pg_reconcile::scan(&mut client).await
        }
        .map_err(pg_failure)
    })?;
    finish(&report, args.output, args.repair)
}

fn print_text(report: &ReconcileReport, repairing: bool) {
    text_line(format!(
        "{} orders scanned in {} ms: {} consistent, {} in progress, {} inconsistent \
         ({} repairable, {} repaired, {} ambiguous); {} lot(s) with stock not matching reservations",
        report.orders_scanned,
        report.elapsed_ms,
        report.consistent,
        report.in_progress,
        report.inconsistent,
        report.repairable,
        report.repaired,
        report.ambiguous,
        report.lots_mismatched
    ));
    for order in &report.orders {
        text_line(format!(
            "{} {}: {}",
            order.action,
            order.order,
            order.problems.join("; ")
        ));
        if let Some(repair) = &order.repair {
            text_line(format!("  repair: {repair}"));
        }
        if let Some(decide) = &order.decide {
            text_line(format!("  decide: {decide}"));
        }
    }
    for lot in &report.lots {
        text_line(format!("lot {}: {}", lot.lot, lot.decide));
    }
    if !repairing && report.repairable > 0 {
        text_line("run again with --repair to repair the repairable orders");
    }
}

/// Prints a line of the text report. Order, lot, fulfillment and holder IDs
/// come from the database as they were written (by hand, possibly): control
/// characters are shown as escapes, never sent to the terminal.
fn text_line(text: impl std::fmt::Display) {
    output::line(warroom::playbook::check::printable(&text.to_string()));
}
