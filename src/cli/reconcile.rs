//! `warroom reconcile`: PM-003's reconciliation of the drill's orders (see
//! `warroom::drill::reconcile`).
//!
//! Exit codes: 0 every order and lot agrees (after the repairs, with
//! `--repair`); 1 some still disagree — without `--repair` any found, with
//! it the ambiguous ones a person must decide (listed); 2 invalid
//! arguments; 4 Redis could not be reached.

use clap::{Args, ValueEnum};
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

/// `warroom reconcile` arguments.
#[derive(Args)]
pub struct ReconcileArgs {
    /// Redis holding the drill's orders.
    #[arg(long, env = "WARROOM_REDIS_URL", hide_env_values = true)]
    redis: String,
    /// Repair the orders the audit log makes unambiguous (each repair is
    /// appended to the order's audit log); without it nothing is changed.
    #[arg(long)]
    repair: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// Runs a reconciliation.
pub fn run(args: ReconcileArgs) -> CommandResult {
    warroom::redis_url::parse(&args.redis).map_err(|e| Failure::msg(Exit::Invalid, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(async {
        let unreachable = |e: &redis::RedisError| {
            Failure::msg(
                Exit::Unreachable,
                warroom::redis_url::explain(&args.redis, e),
            )
        };
        let client = redis::Client::open(args.redis.as_str()).map_err(|e| unreachable(&e))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(30)))
            .set_number_of_retries(1);
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| unreachable(&e))?;
        let report = if args.repair {
            reconcile::repair(&mut conn, &args.redis).await
        } else {
            reconcile::scan(&mut conn).await
        };
        report.map_err(|e| unreachable(&e))
    })?;
    match args.output {
        Output::Json => output::json(serde_json::to_value(&report).unwrap_or_default()),
        Output::Text => print_text(&report, args.repair),
    }
    Ok(if report.remaining() == 0 {
        Exit::Done
    } else {
        Exit::Failed
    })
}

fn print_text(report: &ReconcileReport, repairing: bool) {
    output::line(format!(
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
        output::line(format!(
            "{} {}: {}",
            order.action,
            order.order,
            order.problems.join("; ")
        ));
        if let Some(repair) = &order.repair {
            output::line(format!("  repair: {repair}"));
        }
        if let Some(decide) = &order.decide {
            output::line(format!("  decide: {decide}"));
        }
    }
    for lot in &report.lots {
        output::line(format!("lot {}: {}", lot.lot, lot.decide));
    }
    if !repairing && report.repairable > 0 {
        output::line("run again with --repair to repair the repairable orders");
    }
}
