//! Runs the gateway serves: each live run has a token (its programs' API key)
//! and a ledger of its calls. A call without a live token is refused
//! (ARCHITECTURE.md, invariant 5).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};

use flotilla_shared::money::Usd;
use flotilla_shared::tier::TierPolicy;

use super::calls::CallRecord;
use super::spend::SpendGate;
use crate::cache::RunCache;
use crate::pricing::Prices;

/// One live run: who it is, its seed (sim models answer from it) and its calls.
pub struct RunLedger {
    /// `experiment/var-001-run-002`, for logs.
    pub label: String,
    pub seed: u64,
    /// What the run may spend (ARCHITECTURE.md, invariant 1).
    pub spend: SpendGate,
    /// The experiment's own prices by model as programs name it: they come
    /// before the providers file's and the dated table's.
    pub prices: BTreeMap<String, Prices>,
    /// How its calls use the response cache.
    pub cache: RunCache,
    /// The service tier its calls ask for, where their provider offers it.
    pub tier: TierPolicy,
    calls: Mutex<Vec<CallRecord>>,
}

impl RunLedger {
    pub fn new(
        label: String,
        seed: u64,
        spend: SpendGate,
        prices: BTreeMap<String, Prices>,
        cache: RunCache,
        tier: TierPolicy,
    ) -> Self {
        RunLedger {
            label,
            seed,
            spend,
            prices,
            cache,
            tier,
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn record(&self, call: CallRecord) {
        self.calls.lock().expect("not poisoned").push(call);
    }
}

/// Live runs by token.
#[derive(Default)]
pub struct RunRegistry {
    runs: Mutex<HashMap<String, Arc<RunLedger>>>,
}

impl RunRegistry {
    /// Opens a run; its programs present the returned token as their API key.
    pub fn open(
        &self,
        label: String,
        seed: u64,
        spend: SpendGate,
        prices: BTreeMap<String, Prices>,
        cache: RunCache,
        tier: TierPolicy,
    ) -> std::io::Result<String> {
        let token = new_token()?;
        let ledger = Arc::new(RunLedger::new(label, seed, spend, prices, cache, tier));
        self.runs
            .lock()
            .expect("not poisoned")
            .insert(token.clone(), ledger);
        Ok(token)
    }

    /// What each live run has spent so far, by its label: its ended calls'
    /// cost and the worst cases of its calls in flight.
    pub fn live_spend(&self) -> HashMap<String, (Usd, Usd)> {
        let runs = self.runs.lock().expect("not poisoned");
        runs.values()
            .map(|ledger| {
                let spent: f64 = ledger
                    .calls
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .map(|call| call.cost_usd)
                    .sum();
                (
                    ledger.label.clone(),
                    (Usd::charge(spent), ledger.spend.in_flight()),
                )
            })
            .collect()
    }

    pub fn lookup(&self, token: &str) -> Option<Arc<RunLedger>> {
        self.runs.lock().expect("not poisoned").get(token).cloned()
    }

    /// Ends a run: its token stops working; its calls are handed back, with
    /// why a call was refused for budget, if one was.
    pub fn close(
        &self,
        token: &str,
    ) -> (
        Vec<CallRecord>,
        Option<(flotilla_shared::run::BudgetStop, String)>,
    ) {
        let ledger = self.runs.lock().expect("not poisoned").remove(token);
        ledger
            .map(|ledger| {
                let calls = std::mem::take(&mut *ledger.calls.lock().expect("not poisoned"));
                (calls, ledger.spend.stop_reason())
            })
            .unwrap_or_default()
    }
}

/// 128 random bits, hex-encoded, prefixed so that logs show what it is.
fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("flotilla-run-{hex}"))
}
