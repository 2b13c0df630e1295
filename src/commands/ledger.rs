//! `flotilla ledger NAME`: an experiment's budget ledger, per run attempt,
//! read from a root (a coordinator may be writing it).

use clap::Args;
use flotilla_coordinator::reports::{ledger_audit, LedgerAudit};
use flotilla_shared::clock::rfc3339;

/// Dollars to the micro-dollar: an audit shows what the ledger holds.
fn exact(amount: f64) -> String {
    format!("${amount:.6}")
}

use super::args::RootArg;

#[derive(Args)]
pub struct LedgerArgs {
    /// Experiment name.
    pub name: String,
    #[command(flatten)]
    pub root: RootArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: LedgerArgs) -> anyhow::Result<i32> {
    let audit = ledger_audit(&args.root.root, &args.name)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&audit)?);
    } else {
        print!("{}", ledger_text(&audit));
    }
    Ok(0)
}

fn ledger_text(audit: &LedgerAudit) -> String {
    let mut out = format!(
        "{}: budget {}; reserved {}, topped up {}, settled (spent) {}, freed from lost leases {}, released {}, outstanding {}\n",
        audit.experiment,
        audit
            .budget_usd
            .map(exact)
            .unwrap_or_else(|| "none".into()),
        exact(audit.reserved_usd),
        exact(audit.topped_up_usd),
        exact(audit.settled_usd),
        exact(audit.fenced_usd),
        exact(audit.released_usd),
        exact(audit.outstanding_usd),
    );
    if audit.leases.is_empty() {
        out.push_str("no entries: the experiment has no budget, or no run was assigned yet\n");
    }
    for lease in &audit.leases {
        let who = match (&lease.run, lease.attempt, &lease.worker) {
            (Some(run), Some(attempt), Some(worker)) => {
                format!("{run} attempt {attempt} on {worker}")
            }
            _ => "a run whose attempt is not recorded yet".to_string(),
        };
        out.push_str(&format!("{who} (lease {}):\n", lease.lease_id));
        for entry in &lease.entries {
            out.push_str(&format!(
                "  {}  {:<9}  {}\n",
                rfc3339(entry.at_ms),
                entry.kind.replace('_', " "),
                exact(entry.amount_usd)
            ));
        }
    }
    out
}
