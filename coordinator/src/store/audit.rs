//! The budget ledger of one experiment as `flotilla ledger` prints it: every
//! reservation, top-up, settlement and release (ARCHITECTURE.md, invariant
//! 1), grouped by lease and named by the run attempt it was for, so a user
//! can see why a budget ended where it did.

use std::path::Path;

use flotilla_shared::money::Usd;
use flotilla_shared::naming::run_id;
use flotilla_shared::{Error, Result};
use serde::Serialize;

/// One entry of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    /// `reserved`, `granted` (a slice of the reservation let out to the
    /// worker), `topped_up`, `fenced` (the lease was lost: what was never
    /// let out is freed), `settled` or `released`.
    pub kind: String,
    /// For a release, what it gave back: the lease's reservation and
    /// top-ups, none of which was settled.
    pub amount_usd: f64,
    pub at_ms: i64,
}

/// What one lease (one attempt of a run) reserved, topped up, settled or released.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseLedger {
    pub lease_id: u64,
    /// `var-001-run-002`, when the lease's attempt was recorded.
    pub run: Option<String>,
    pub attempt: Option<u32>,
    pub worker: Option<String>,
    pub entries: Vec<LedgerEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerAudit {
    pub experiment: String,
    pub budget_usd: Option<f64>,
    pub reserved_usd: f64,
    pub topped_up_usd: f64,
    /// What the settled attempts cost: the budget's spending.
    pub settled_usd: f64,
    pub released_usd: f64,
    /// Freed when leases were lost: the parts of their reservations never let out.
    pub fenced_usd: f64,
    /// Reservations and top-ups neither settled nor released yet.
    pub outstanding_usd: f64,
    pub leases: Vec<LeaseLedger>,
}

/// The ledger of experiment `name` under `root`, in the order it was written.
pub fn ledger_audit(root: &Path, name: &str) -> Result<LedgerAudit> {
    let connection = super::read::open_read_only(root)?;
    let sql = |e: rusqlite::Error| Error::Internal(format!("cannot read the ledger: {e}"));
    let (id, config) = super::read::stored_config(&connection, root, name)?;
    let mut query = connection
        .prepare(
            "SELECT l.lease_id, l.kind, l.amount_nanos, l.at_ms, a.variation, a.repetition, a.attempt, a.worker \
             FROM ledger l LEFT JOIN attempts a ON a.experiment_id = l.experiment_id AND a.lease_id = l.lease_id \
             WHERE l.experiment_id = ? ORDER BY l.id",
        )
        .map_err(sql)?;
    let mut rows = query.query([id]).map_err(sql)?;
    let mut leases: Vec<LeaseLedger> = Vec::new();
    let mut open: std::collections::HashMap<u64, (usize, Usd)> = Default::default();
    while let Some(row) = rows.next().map_err(sql)? {
        let lease_id = row.get::<_, i64>(0).map_err(sql)? as u64;
        let kind: String = row.get(1).map_err(sql)?;
        let mut amount = Usd::from_nanos(row.get::<_, i64>(2).map_err(sql)? as u64);
        let at_ms: i64 = row.get(3).map_err(sql)?;
        let (index, held) = *open.entry(lease_id).or_insert_with(|| {
            let variation: Option<u32> = row.get(4).ok().flatten();
            let repetition: Option<u32> = row.get(5).ok().flatten();
            leases.push(LeaseLedger {
                lease_id,
                run: variation.zip(repetition).map(|(v, r)| run_id(v, r)),
                attempt: row.get(6).ok().flatten(),
                worker: row.get(7).ok().flatten(),
                entries: Vec::new(),
            });
            (leases.len() - 1, Usd::ZERO)
        });
        let held = match kind.as_str() {
            "reserved" | "topped_up" => held + amount,
            "granted" => held,
            "fenced" => held - amount,
            "released" => {
                // A release gives back whatever the lease still held.
                amount = held;
                Usd::ZERO
            }
            _ => Usd::ZERO,
        };
        open.insert(lease_id, (index, held));
        leases[index].entries.push(LedgerEntry {
            kind,
            amount_usd: amount.dollars(),
            at_ms,
        });
    }
    let sum = |kind: &str| -> f64 {
        leases
            .iter()
            .flat_map(|l| &l.entries)
            .filter(|e| e.kind == kind)
            .map(|e| e.amount_usd)
            .fold(0.0, |total, amount| total + amount)
    };
    Ok(LedgerAudit {
        experiment: name.to_string(),
        budget_usd: config.budget.as_ref().map(|b| b.total_usd),
        reserved_usd: sum("reserved"),
        topped_up_usd: sum("topped_up"),
        settled_usd: sum("settled"),
        released_usd: sum("released"),
        fenced_usd: sum("fenced"),
        outstanding_usd: open.values().map(|(_, held)| *held).sum::<Usd>().dollars(),
        leases,
    })
}
