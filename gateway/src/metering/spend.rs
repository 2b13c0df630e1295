//! Each run's spending, held to what the coordinator's ledger granted it
//! (ARCHITECTURE.md, invariant 1): a slice of its reservation at first, more
//! slices (or a top-up past the reservation) when its calls need them.
//! Before a call goes out, its worst case is held; if the run's grant cannot
//! cover it, the run asks the coordinator for more through the worker's
//! session, within the per-run cap. When the call ends, the hold becomes what
//! the call cost.

use std::sync::Mutex;

use flotilla_shared::money::Usd;
use flotilla_shared::protocol::SpendAnswer;
use flotilla_shared::run::{AssignedBudget, BudgetStop};
use tokio::sync::{mpsc, oneshot};

/// A run asks for `amount` more; the session answers with the coordinator's word.
#[derive(Debug)]
pub struct TopUpRequest {
    pub lease_id: u64,
    pub amount: Usd,
    pub reply: oneshot::Sender<SpendAnswer>,
}

/// Where runs send their top-up requests: the worker's session.
pub type TopUps = mpsc::UnboundedSender<TopUpRequest>;

/// Why a call may not spend, in words for the API's error shape.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetRefusal {
    /// The experiment's ledger has no room: `left` of `total`.
    Exhausted {
        experiment: String,
        left: Usd,
        total: Usd,
        worst_case: Usd,
    },
    /// The run would pass `budget.per_run_usd`.
    PerRunCap {
        experiment: String,
        cap: Usd,
        spent: Usd,
        worst_case: Usd,
    },
}

impl std::fmt::Display for BudgetRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetRefusal::Exhausted {
                experiment,
                left,
                total,
                worst_case,
            } => write!(
                f,
                "budget: experiment {experiment} has {left} of {total} left; this call could cost up to {worst_case}"
            ),
            BudgetRefusal::PerRunCap {
                experiment,
                cap,
                spent,
                worst_case,
            } => write!(
                f,
                "budget: this run of experiment {experiment} has spent {spent} of its per-run budget ({cap}); this call could cost up to {worst_case}"
            ),
        }
    }
}

/// What a run may spend and has spent.
#[derive(Debug, Default)]
struct Spending {
    /// What the coordinator has let the run spend: its first slice plus later grants.
    granted: Usd,
    /// Cost of the calls that ended.
    spent: Usd,
    /// Worst cases of the calls in flight.
    held: Usd,
    /// The first refusal, which fails the run.
    stop: Option<(BudgetStop, String)>,
}

/// One run's budget on this worker.
#[derive(Debug)]
pub struct RunBudget {
    experiment: String,
    lease_id: u64,
    per_run_cap: Usd,
    per_run_declared: bool,
    top_ups: TopUps,
    spending: Mutex<Spending>,
}

impl RunBudget {
    pub fn new(
        experiment: String,
        lease_id: u64,
        assigned: &AssignedBudget,
        top_ups: TopUps,
    ) -> Self {
        RunBudget {
            experiment,
            lease_id,
            per_run_cap: assigned.per_run_cap,
            per_run_declared: assigned.per_run_declared,
            top_ups,
            spending: Mutex::new(Spending {
                granted: assigned.granted,
                ..Spending::default()
            }),
        }
    }

    /// Holds `worst_case` for a call, topping the run's grant up if it must.
    async fn hold(&self, worst_case: Usd) -> Result<(), BudgetRefusal> {
        loop {
            let need = {
                let mut spending = self.spending.lock().expect("not poisoned");
                let committed = spending.spent + spending.held;
                if committed + worst_case <= spending.granted {
                    spending.held += worst_case;
                    return Ok(());
                }
                let need = committed + worst_case - spending.granted;
                if spending.granted + need > self.per_run_cap {
                    let refusal = if self.per_run_declared {
                        BudgetRefusal::PerRunCap {
                            experiment: self.experiment.clone(),
                            cap: self.per_run_cap,
                            spent: spending.spent,
                            worst_case,
                        }
                    } else {
                        // Without a per-run budget the cap is the total: the ledger is what ran out.
                        BudgetRefusal::Exhausted {
                            experiment: self.experiment.clone(),
                            left: self.per_run_cap - spending.granted,
                            total: self.per_run_cap,
                            worst_case,
                        }
                    };
                    return Err(self.stop(&mut spending, refusal));
                }
                need
            };
            let (reply, answer) = oneshot::channel();
            let asked = self.top_ups.send(TopUpRequest {
                lease_id: self.lease_id,
                amount: need,
                reply,
            });
            let answer = match asked {
                Ok(()) => answer.await.ok(),
                Err(_) => None,
            };
            let mut spending = self.spending.lock().expect("not poisoned");
            match answer {
                // At least what was asked; a whole slice of the reservation when it has one.
                Some(SpendAnswer::Granted { amount }) => spending.granted += amount.max(need),
                Some(SpendAnswer::Refused { left, total }) => {
                    let refusal = BudgetRefusal::Exhausted {
                        experiment: self.experiment.clone(),
                        left,
                        total,
                        worst_case,
                    };
                    return Err(self.stop(&mut spending, refusal));
                }
                None => {
                    let refusal = BudgetRefusal::Exhausted {
                        experiment: self.experiment.clone(),
                        left: Usd::ZERO,
                        total: Usd::ZERO,
                        worst_case,
                    };
                    return Err(self.stop(&mut spending, refusal));
                }
            }
        }
    }

    fn stop(&self, spending: &mut Spending, refusal: BudgetRefusal) -> BudgetRefusal {
        if spending.stop.is_none() {
            let (kind, reason) = match &refusal {
                BudgetRefusal::PerRunCap { cap, .. } => (
                    BudgetStop::PerRunCap,
                    format!("per-run budget reached ({cap})"),
                ),
                BudgetRefusal::Exhausted { .. } => (BudgetStop::Exhausted, refusal.to_string()),
            };
            spending.stop = Some((kind, reason));
        }
        refusal
    }

    /// A held call ended costing `cost` (at most what was held).
    fn release(&self, worst_case: Usd, cost: Usd) {
        let mut spending = self.spending.lock().expect("not poisoned");
        spending.held = spending.held - worst_case;
        spending.spent += cost;
    }

    /// Why the run was refused a call, if it was: the run fails with it.
    pub fn stop_reason(&self) -> Option<(BudgetStop, String)> {
        self.spending.lock().expect("not poisoned").stop.clone()
    }

    /// What the run's calls cost so far.
    pub fn spent(&self) -> Usd {
        self.spending.lock().expect("not poisoned").spent
    }

    /// The worst cases of the run's calls in flight.
    pub fn in_flight(&self) -> Usd {
        self.spending.lock().expect("not poisoned").held
    }
}

/// Whether and how a run's calls are held to a budget.
pub enum SpendGate {
    /// The experiment has no budget.
    Unbounded,
    Budget(std::sync::Arc<RunBudget>),
}

impl SpendGate {
    /// Holds a call's worst case (in dollars) until [`SpendHold::settle`].
    pub async fn hold(&self, worst_case_usd: f64) -> Result<SpendHold, BudgetRefusal> {
        match self {
            SpendGate::Unbounded => Ok(SpendHold { held: None }),
            SpendGate::Budget(budget) => {
                let worst_case = Usd::charge(worst_case_usd);
                budget.hold(worst_case).await?;
                Ok(SpendHold {
                    held: Some((budget.clone(), worst_case)),
                })
            }
        }
    }

    pub fn stop_reason(&self) -> Option<(BudgetStop, String)> {
        match self {
            SpendGate::Unbounded => None,
            SpendGate::Budget(budget) => budget.stop_reason(),
        }
    }

    /// The worst cases of the calls in flight; unknown (zero) without a budget.
    pub fn in_flight(&self) -> Usd {
        match self {
            SpendGate::Unbounded => Usd::ZERO,
            SpendGate::Budget(budget) => budget.in_flight(),
        }
    }
}

/// A call's worst case, held; dropped unsettled, the call cost nothing.
#[derive(Debug)]
pub struct SpendHold {
    held: Option<(std::sync::Arc<RunBudget>, Usd)>,
}

impl SpendHold {
    /// The call cost `cost_usd`: never more than was held, since the worst
    /// case bounds it.
    pub fn settle(mut self, cost_usd: f64) {
        if let Some((budget, worst_case)) = self.held.take() {
            budget.release(worst_case, Usd::charge(cost_usd).min(worst_case));
        }
    }
}

impl Drop for SpendHold {
    fn drop(&mut self) {
        if let Some((budget, worst_case)) = self.held.take() {
            budget.release(worst_case, Usd::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(
        reserved: f64,
        cap: f64,
        declared: bool,
    ) -> (
        std::sync::Arc<RunBudget>,
        mpsc::UnboundedReceiver<TopUpRequest>,
    ) {
        let (top_ups, requests) = mpsc::unbounded_channel();
        let assigned = AssignedBudget {
            granted: Usd::charge(reserved),
            per_run_cap: Usd::charge(cap),
            per_run_declared: declared,
        };
        (
            std::sync::Arc::new(RunBudget::new("e".into(), 7, &assigned, top_ups)),
            requests,
        )
    }

    #[tokio::test]
    async fn calls_within_the_grant_need_no_top_up_and_settle_to_their_cost() {
        let (run, mut requests) = budget(1.0, 2.0, true);
        let gate = SpendGate::Budget(run.clone());
        let hold = gate.hold(0.6).await.unwrap();
        hold.settle(0.1);
        let hold = gate.hold(0.9).await.unwrap();
        drop(hold);
        assert_eq!(run.spent(), Usd::charge(0.1));
        assert!(requests.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_call_past_the_grant_asks_for_what_it_lacks() {
        let (run, mut requests) = budget(0.5, 2.0, true);
        let gate = SpendGate::Budget(run.clone());
        let answering = tokio::spawn(async move {
            let request = requests.recv().await.unwrap();
            assert_eq!(request.lease_id, 7);
            assert_eq!(request.amount, Usd::charge(0.3));
            request
                .reply
                .send(SpendAnswer::Granted {
                    amount: request.amount,
                })
                .unwrap();
            let request = requests.recv().await.unwrap();
            request
                .reply
                .send(SpendAnswer::Refused {
                    left: Usd::charge(0.42),
                    total: Usd::charge(50.0),
                })
                .unwrap();
        });
        gate.hold(0.8).await.unwrap().settle(0.8);
        let refused = gate.hold(0.61).await.unwrap_err();
        assert_eq!(
            refused.to_string(),
            "budget: experiment e has $0.42 of $50.00 left; this call could cost up to $0.61"
        );
        answering.await.unwrap();
        let (stop, reason) = run.stop_reason().unwrap();
        assert_eq!(stop, BudgetStop::Exhausted);
        assert!(reason.starts_with("budget: experiment e has $0.42"));
    }

    #[tokio::test]
    async fn the_per_run_cap_refuses_without_asking() {
        let (run, mut requests) = budget(2.0, 2.0, true);
        let gate = SpendGate::Budget(run.clone());
        gate.hold(1.5).await.unwrap().settle(1.5);
        // $1.50 spent: a call that could cost $0.60 would pass $2.00.
        assert!(matches!(
            gate.hold(0.6).await,
            Err(BudgetRefusal::PerRunCap { .. })
        ));
        assert!(requests.try_recv().is_err());
        assert_eq!(
            run.stop_reason(),
            Some((
                BudgetStop::PerRunCap,
                "per-run budget reached ($2.00)".into()
            ))
        );
    }
}
