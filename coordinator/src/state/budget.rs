//! The budget ledger of one experiment (ARCHITECTURE.md, invariant 1).
//!
//! The coordinator reserves a run's estimate before assigning it, only while
//! `spent + reserved + estimate ≤ total`, and lets the worker spend it a
//! slice at a time (an eighth of it, or what a call needs); a run that needs
//! more than its reservation asks for a top-up, granted within the same rule
//! and within the per-run cap; a result settles its lease's reservation to
//! what the attempt cost. A lost lease is fenced: what was never let out is
//! freed at once (only the coordinator can let it out, and it no longer
//! will), what was stays charged until the attempt's result arrives or the
//! experiment ends (ARCHITECTURE.md, invariant 8).
//!
//! Every change is a [`LedgerEvent`] applied by [`Ledger::apply`]: the
//! decisions produce events, the store persists them with the writes they
//! belong to, and a restart replays them, so the rebuilt ledger is the one
//! that was written. Amounts are whole nanodollars ([`Usd`]).

use std::collections::{HashMap, HashSet};

use flotilla_shared::config::Budget;
use flotilla_shared::money::Usd;

/// With only a total, a run is first reserved this share of it.
pub const DEFAULT_ESTIMATE_SHARE: f64 = 0.01;
/// A reservation is let out to its worker in this many slices: a lost
/// worker's unreported spending is bounded by what it was let out, about a
/// slice more than it spent.
pub const GRANT_SLICES: u64 = 8;
/// Once a variation has this many finished attempts, its estimate is a high
/// quantile of their costs.
const OBSERVED_BEFORE_ESTIMATING: usize = 3;
const ESTIMATE_QUANTILE: f64 = 0.95;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    /// Reserved before the lease's run was assigned.
    Reserved {
        lease_id: u64,
        variation: u32,
        amount: Usd,
    },
    /// The run asked to spend more of its reservation and was let out `amount`.
    Granted { lease_id: u64, amount: Usd },
    /// The run asked for more than its reservation and got it (all of it let out).
    ToppedUp { lease_id: u64, amount: Usd },
    /// The lease was lost: the part of its reservation never let out, `freed`,
    /// is freed; what was let out stays charged.
    Fenced { lease_id: u64, freed: Usd },
    /// The attempt reported: its reservation ends and what it cost is spent.
    Settled {
        lease_id: u64,
        variation: u32,
        cost: Usd,
    },
    /// The experiment ended with the lease never reporting: its reservation is freed.
    Released { lease_id: u64 },
}

/// Why a top-up was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopUpRefusal {
    /// The run would pass the per-run cap.
    PerRunCap(Usd),
    /// The experiment has `left` of `total` neither spent nor reserved.
    NoRoom { left: Usd, total: Usd },
    /// The lease holds no reservation (its result is in, or the experiment ended).
    NotReserved,
}

/// Finished attempts' costs of one variation.
#[derive(Debug, Clone, Default)]
struct Observed {
    costs: Vec<Usd>,
    sum: Usd,
    /// The quantile, recomputed as costs come in (see `observe`).
    estimate: Option<Usd>,
}

/// What one lease holds in the ledger, and how much of it its worker may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    reserved: Usd,
    granted: Usd,
}

/// The first slice of a reservation, and the least a later grant lets out.
pub fn slice_of(reserved: Usd) -> Usd {
    Usd::from_nanos(reserved.nanos().div_ceil(GRANT_SLICES))
}

#[derive(Debug, Clone)]
pub struct Ledger {
    total: Usd,
    per_run_cap: Usd,
    per_run_declared: bool,
    spent: Usd,
    reserved: Usd,
    /// What each lease holds.
    reservations: HashMap<u64, Hold>,
    /// Leases already settled: a result sent again settles nothing twice.
    settled: HashSet<u64>,
    observed: HashMap<u32, Observed>,
    observed_all: (u64, Usd),
    /// Sum of the squared costs in dollars: the spread without a pass over every cost.
    observed_squares: f64,
    /// Bumped by every change that can make a run fit that did not: room
    /// freed (a settlement or release), estimates revised, a larger total.
    room_version: u64,
}

impl Ledger {
    pub fn new(budget: &Budget) -> Self {
        let total = Usd::allowance(budget.total_usd);
        Ledger {
            total,
            per_run_cap: budget.per_run_usd.map_or(total, Usd::allowance).min(total),
            per_run_declared: budget.per_run_usd.is_some(),
            spent: Usd::ZERO,
            reserved: Usd::ZERO,
            reservations: HashMap::new(),
            settled: HashSet::new(),
            observed: HashMap::new(),
            observed_all: (0, Usd::ZERO),
            observed_squares: 0.0,
            room_version: 0,
        }
    }

    /// A resubmission raised the total (an extension).
    pub fn set_budget(&mut self, budget: &Budget) {
        let settled = std::mem::take(&mut self.settled);
        let rebuilt = Ledger::new(budget);
        self.total = rebuilt.total;
        self.per_run_cap = rebuilt.per_run_cap;
        self.per_run_declared = rebuilt.per_run_declared;
        self.settled = settled;
        self.room_version += 1;
    }

    pub fn total(&self) -> Usd {
        self.total
    }
    pub fn spent(&self) -> Usd {
        self.spent
    }
    pub fn reserved(&self) -> Usd {
        self.reserved
    }
    /// Neither spent nor reserved.
    pub fn left(&self) -> Usd {
        self.total - self.spent - self.reserved
    }
    pub fn per_run_cap(&self) -> Usd {
        self.per_run_cap
    }
    pub fn per_run_declared(&self) -> bool {
        self.per_run_declared
    }
    pub fn reservation(&self, lease_id: u64) -> Option<Usd> {
        self.reservations.get(&lease_id).map(|hold| hold.reserved)
    }
    /// What `lease_id`'s worker has been let spend of its reservation.
    pub fn granted(&self, lease_id: u64) -> Option<Usd> {
        self.reservations.get(&lease_id).map(|hold| hold.granted)
    }
    /// Leases holding more than they were let out: the ones a loss would free room in.
    pub fn unfenced(&self) -> impl Iterator<Item = u64> + '_ {
        self.reservations
            .iter()
            .filter(|(_, hold)| hold.reserved > hold.granted)
            .map(|(lease_id, _)| *lease_id)
    }
    pub fn open_reservations(&self) -> usize {
        self.reservations.len()
    }
    /// Changes only when a run that did not fit may fit now (see the field).
    pub fn room_version(&self) -> u64 {
        self.room_version
    }

    /// What a run of `variation` is reserved: `per_run_usd` (or the default
    /// share of the total) until the variation has finished attempts, then a
    /// high quantile of their costs — never above the per-run cap.
    pub fn estimate(&self, variation: u32) -> Usd {
        let initial = if self.per_run_declared {
            self.per_run_cap
        } else {
            self.total.scaled(DEFAULT_ESTIMATE_SHARE)
        };
        self.observed
            .get(&variation)
            .and_then(|observed| observed.estimate)
            .unwrap_or(initial)
            .min(self.per_run_cap)
    }

    /// Whether a run of `variation` would be reserved now.
    pub fn fits(&self, variation: u32) -> bool {
        self.estimate(variation) <= self.left()
    }

    /// Reserves a run's estimate for `lease_id`, if it fits.
    pub fn reserve(&mut self, lease_id: u64, variation: u32) -> Option<LedgerEvent> {
        let amount = self.estimate(variation);
        if amount > self.left() {
            return None;
        }
        let event = LedgerEvent::Reserved {
            lease_id,
            variation,
            amount,
        };
        self.apply(&event);
        Some(event)
    }

    /// Lets `lease_id`'s run spend `need` more: from its reservation (a
    /// whole slice at least, so that a run asks about eight times), else by
    /// a top-up past it. Returns the event and what the run may spend more.
    pub fn grant(&mut self, lease_id: u64, need: Usd) -> Result<(LedgerEvent, Usd), TopUpRefusal> {
        let hold = *self
            .reservations
            .get(&lease_id)
            .ok_or(TopUpRefusal::NotReserved)?;
        let ungranted = hold.reserved - hold.granted;
        if need <= ungranted {
            let amount = need.max(slice_of(hold.reserved)).min(ungranted);
            let event = LedgerEvent::Granted { lease_id, amount };
            self.apply(&event);
            return Ok((event, amount));
        }
        let event = self.top_up(lease_id, need - ungranted)?;
        Ok((event, need))
    }

    /// The lease was lost: what it was never let out is freed.
    pub fn fence(&mut self, lease_id: u64) -> Option<LedgerEvent> {
        let hold = self.reservations.get(&lease_id)?;
        let freed = hold.reserved - hold.granted;
        if freed == Usd::ZERO {
            return None;
        }
        let event = LedgerEvent::Fenced { lease_id, freed };
        self.apply(&event);
        Some(event)
    }

    /// Grows `lease_id`'s reservation by `amount`, within the ledger and the per-run cap.
    pub fn top_up(&mut self, lease_id: u64, amount: Usd) -> Result<LedgerEvent, TopUpRefusal> {
        let held = self
            .reservations
            .get(&lease_id)
            .ok_or(TopUpRefusal::NotReserved)?
            .reserved;
        if held + amount > self.per_run_cap {
            return Err(TopUpRefusal::PerRunCap(self.per_run_cap));
        }
        if amount > self.left() {
            return Err(TopUpRefusal::NoRoom {
                left: self.left(),
                total: self.total,
            });
        }
        let event = LedgerEvent::ToppedUp { lease_id, amount };
        self.apply(&event);
        Ok(event)
    }

    /// An attempt of `variation` under `lease_id` reported `cost`: its
    /// reservation, if any, ends and the cost is spent. A lease settles once.
    pub fn settle(&mut self, lease_id: u64, variation: u32, cost: Usd) -> Option<LedgerEvent> {
        if self.settled.contains(&lease_id) {
            return None;
        }
        let event = LedgerEvent::Settled {
            lease_id,
            variation,
            cost,
        };
        self.apply(&event);
        Some(event)
    }

    /// The experiment ended: reservations never settled are freed.
    pub fn release_all(&mut self) -> Vec<LedgerEvent> {
        let mut leases: Vec<u64> = self.reservations.keys().copied().collect();
        leases.sort_unstable();
        leases
            .into_iter()
            .map(|lease_id| {
                let event = LedgerEvent::Released { lease_id };
                self.apply(&event);
                event
            })
            .collect()
    }

    /// The one place the ledger changes: decisions and restarts both come here.
    pub fn apply(&mut self, event: &LedgerEvent) {
        match *event {
            LedgerEvent::Reserved {
                lease_id, amount, ..
            } => {
                self.reserved += amount;
                let hold = Hold {
                    reserved: amount,
                    granted: slice_of(amount),
                };
                if let Some(old) = self.reservations.insert(lease_id, hold) {
                    self.reserved = self.reserved - old.reserved;
                }
            }
            LedgerEvent::Granted { lease_id, amount } => {
                if let Some(hold) = self.reservations.get_mut(&lease_id) {
                    hold.granted = (hold.granted + amount).min(hold.reserved);
                }
            }
            LedgerEvent::ToppedUp { lease_id, amount } => {
                if let Some(hold) = self.reservations.get_mut(&lease_id) {
                    hold.reserved += amount;
                    hold.granted = hold.reserved;
                    self.reserved += amount;
                }
            }
            LedgerEvent::Fenced { lease_id, .. } => {
                if let Some(hold) = self.reservations.get_mut(&lease_id) {
                    self.reserved = self.reserved - (hold.reserved - hold.granted);
                    hold.reserved = hold.granted;
                    self.room_version += 1;
                }
            }
            LedgerEvent::Settled {
                lease_id,
                variation,
                cost,
            } => {
                if let Some(hold) = self.reservations.remove(&lease_id) {
                    self.reserved = self.reserved - hold.reserved;
                }
                self.settled.insert(lease_id);
                self.spent += cost;
                self.observe(variation, cost);
                self.room_version += 1;
            }
            LedgerEvent::Released { lease_id } => {
                if let Some(hold) = self.reservations.remove(&lease_id) {
                    self.reserved = self.reserved - hold.reserved;
                }
                self.room_version += 1;
            }
        }
    }

    fn observe(&mut self, variation: u32, cost: Usd) {
        self.observed_all.0 += 1;
        self.observed_all.1 += cost;
        self.observed_squares += cost.dollars().powi(2);
        let observed = self.observed.entry(variation).or_default();
        observed.costs.push(cost);
        observed.sum += cost;
        let n = observed.costs.len();
        // The quantile costs O(n): recomputed while few, then at powers of two
        // and every 1,024 costs, which keeps it O(1) per result on average.
        if n >= OBSERVED_BEFORE_ESTIMATING
            && (n <= 64 || n.is_power_of_two() || n.is_multiple_of(1024))
        {
            observed.estimate = Some(quantile(&mut observed.costs, ESTIMATE_QUANTILE));
        }
    }

    /// Mean cost of a finished attempt of `variation`, else of any variation.
    pub fn mean_cost(&self, variation: u32) -> Option<f64> {
        let mean = |count: usize, sum: Usd| (count > 0).then(|| sum.dollars() / count as f64);
        self.observed
            .get(&variation)
            .and_then(|o| mean(o.costs.len(), o.sum))
            .or_else(|| mean(self.observed_all.0 as usize, self.observed_all.1))
    }

    /// Spent so far plus the mean observed cost of every unfinished run;
    /// `None` before any attempt finished.
    /// Spent plus, for each unfinished run (its variation, and what it has
    /// spent so far while it runs), the larger of that and its variation's
    /// mean cost.
    pub fn projected(&self, unfinished: impl Iterator<Item = (u32, Usd)>) -> Option<f64> {
        let mut total = self.spent.dollars();
        for (variation, so_far) in unfinished {
            total += self.mean_cost(variation)?.max(so_far.dollars());
        }
        Some(total)
    }

    /// The attempts settled so far, the mean of their costs and their sample
    /// standard deviation (with two or more), for forecasts; O(1).
    pub fn cost_spread(&self) -> (u64, f64, Option<f64>) {
        let (count, sum) = (self.observed_all.0, self.observed_all.1.dollars());
        if count == 0 {
            return (0, 0.0, None);
        }
        let n = count as f64;
        let mean = sum / n;
        let sd = (count > 1).then(|| {
            ((self.observed_squares - n * mean * mean) / (n - 1.0))
                .max(0.0)
                .sqrt()
        });
        (count, mean, sd)
    }
}

/// The `q` quantile by nearest rank (the largest cost while there are few).
fn quantile(costs: &mut [Usd], q: f64) -> Usd {
    let rank = ((costs.len() as f64 * q).ceil() as usize).clamp(1, costs.len());
    *costs.select_nth_unstable(rank - 1).1
}

#[cfg(test)]
mod tests;
