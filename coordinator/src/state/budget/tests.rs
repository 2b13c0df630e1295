use proptest::prelude::*;

use super::*;

fn budget(total: f64, per_run: Option<f64>) -> Budget {
    Budget {
        total_usd: total,
        per_run_usd: per_run,
    }
}

fn usd(dollars: f64) -> Usd {
    Usd::charge(dollars)
}

#[test]
fn reserves_per_run_until_costs_are_observed_then_a_high_quantile() {
    let mut ledger = Ledger::new(&budget(10.0, Some(2.0)));
    assert_eq!(ledger.estimate(1), usd(2.0));
    for (lease, cost) in [(1, 0.10), (2, 0.30), (3, 0.20)] {
        ledger.reserve(lease, 1).unwrap();
        ledger.settle(lease, 1, usd(cost));
    }
    // Three costs: the 95% quantile by nearest rank is the largest.
    assert_eq!(ledger.estimate(1), usd(0.30));
    // Another variation still starts at the cap.
    assert_eq!(ledger.estimate(2), usd(2.0));
    assert_eq!(ledger.spent(), usd(0.60));
    assert_eq!(ledger.reserved(), Usd::ZERO);
}

#[test]
fn only_a_total_reserves_one_percent_and_caps_runs_at_the_total() {
    let ledger = Ledger::new(&budget(50.0, None));
    assert_eq!(ledger.estimate(1), usd(0.5));
    assert_eq!(ledger.per_run_cap(), usd(50.0));
    assert!(!ledger.per_run_declared());
}

#[test]
fn a_run_is_reserved_only_while_it_fits() {
    let mut ledger = Ledger::new(&budget(5.0, Some(2.0)));
    assert!(ledger.reserve(1, 1).is_some());
    assert!(ledger.reserve(2, 1).is_some());
    // $1 left: a $2 estimate does not fit.
    assert_eq!(ledger.left(), usd(1.0));
    assert!(ledger.reserve(3, 1).is_none());
    ledger.settle(1, 1, usd(0.5));
    assert!(ledger.reserve(3, 1).is_some());
    assert_eq!(ledger.spent() + ledger.reserved(), usd(4.5));
}

#[test]
fn top_ups_stay_within_the_cap_and_the_ledger() {
    let mut ledger = Ledger::new(&budget(3.0, Some(2.0)));
    // Estimates learned low: runs are reserved $0.10.
    for lease in 1..=3 {
        ledger.reserve(lease, 1).unwrap();
        ledger.settle(lease, 1, usd(0.1));
    }
    ledger.reserve(10, 1).unwrap();
    assert_eq!(ledger.reservation(10), Some(usd(0.1)));
    assert!(ledger.top_up(10, usd(1.0)).is_ok());
    assert_eq!(
        ledger.top_up(10, usd(1.0)),
        Err(TopUpRefusal::PerRunCap(usd(2.0)))
    );
    ledger.reserve(11, 1).unwrap();
    // $3 − $0.30 spent − $1.20 reserved: $1.50 left.
    assert_eq!(
        ledger.top_up(11, usd(1.6)),
        Err(TopUpRefusal::NoRoom {
            left: usd(1.5),
            total: usd(3.0)
        })
    );
    assert_eq!(ledger.top_up(99, usd(0.1)), Err(TopUpRefusal::NotReserved));
}

#[test]
fn a_result_sent_twice_settles_once_and_release_frees_the_rest() {
    let mut ledger = Ledger::new(&budget(5.0, Some(1.0)));
    ledger.reserve(1, 1).unwrap();
    ledger.reserve(2, 1).unwrap();
    assert!(ledger.settle(1, 1, usd(0.4)).is_some());
    assert!(ledger.settle(1, 1, usd(0.4)).is_none());
    assert_eq!(ledger.spent(), usd(0.4));
    // Lease 2's worker was lost: its reservation stays until the end.
    assert_eq!(ledger.reserved(), usd(1.0));
    let released = ledger.release_all();
    assert_eq!(released, vec![LedgerEvent::Released { lease_id: 2 }]);
    assert_eq!(ledger.reserved(), Usd::ZERO);
}

#[test]
fn projected_spend_adds_mean_costs_of_unfinished_runs() {
    let mut ledger = Ledger::new(&budget(100.0, Some(5.0)));
    let unfinished = |runs: &[(u32, f64)]| {
        runs.iter()
            .map(|&(variation, so_far)| (variation, usd(so_far)))
            .collect::<Vec<_>>()
            .into_iter()
    };
    assert_eq!(ledger.projected(unfinished(&[(1, 0.0), (2, 0.0)])), None);
    ledger.reserve(1, 1).unwrap();
    ledger.settle(1, 1, usd(1.0));
    ledger.reserve(2, 2).unwrap();
    ledger.settle(2, 2, usd(3.0));
    // Two more of variation 1 ($1 each), one of variation 3 (unseen: the overall mean, $2).
    let projected = ledger
        .projected(unfinished(&[(1, 0.0), (1, 0.0), (3, 0.0)]))
        .unwrap();
    assert!((projected - 8.0).abs() < 1e-9, "{projected}");
    // A running run that has spent more than its variation's mean counts at what it spent.
    let projected = ledger
        .projected(unfinished(&[(1, 2.5), (1, 0.25), (3, 0.0)]))
        .unwrap();
    assert!((projected - 9.5).abs() < 1e-9, "{projected}");
}

/// One step of a sweep, as the coordinator and the workers can interleave them.
#[derive(Debug, Clone)]
enum Step {
    /// Assign a run of this variation, if its estimate fits.
    Assign(u32),
    /// A running run asks for this much more.
    TopUp(usize, f64),
    /// A running run reports; it spent this share of what it holds.
    Report(usize, f64),
    /// A running run's worker is lost; its result may come later.
    Lose(usize),
    /// A lost run's result arrives late, spending this share of what it held.
    LateReport(usize, f64),
    /// A result is sent again after a reconnect.
    Resend(usize),
    /// The coordinator restarts: the ledger is rebuilt from its events.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u32..4).prop_map(Step::Assign),
        2 => (0usize..8, 0.001f64..1.5).prop_map(|(i, a)| Step::TopUp(i, a)),
        4 => (0usize..8, 0.0f64..=1.0).prop_map(|(i, f)| Step::Report(i, f)),
        1 => (0usize..8).prop_map(Step::Lose),
        1 => (0usize..8, 0.0f64..=1.0).prop_map(|(i, f)| Step::LateReport(i, f)),
        1 => (0usize..8).prop_map(Step::Resend),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Spent never passes the total, and every reservation ends settled or
    /// released, whatever the order of assignments, top-ups, results, lost
    /// workers, resent results and restarts (ARCHITECTURE.md, invariant 1).
    #[test]
    fn spending_never_passes_the_total(
        total in 0.5f64..20.0,
        per_run in proptest::option::of(0.05f64..3.0),
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let per_run = per_run.filter(|p| *p <= total);
        let config = budget(total, per_run);
        let mut ledger = Ledger::new(&config);
        let mut events: Vec<LedgerEvent> = Vec::new();
        let mut running: Vec<(u64, u32)> = Vec::new();
        let mut lost: Vec<(u64, u32)> = Vec::new();
        let mut reported: Vec<(u64, u32, Usd)> = Vec::new();
        let mut next_lease = 1u64;
        for step in steps {
            match step {
                Step::Assign(variation) => {
                    if let Some(event) = ledger.reserve(next_lease, variation) {
                        events.push(event);
                        running.push((next_lease, variation));
                    }
                    next_lease += 1;
                }
                Step::TopUp(i, amount) if !running.is_empty() => {
                    let (lease, _) = running[i % running.len()];
                    if let Ok((event, _)) = ledger.grant(lease, usd(amount)) {
                        events.push(event);
                    }
                }
                Step::Report(i, share) if !running.is_empty() => {
                    let (lease, variation) = running.remove(i % running.len());
                    // The gateway holds a run to what it was let spend.
                    let cost = ledger.granted(lease).unwrap_or(Usd::ZERO).scaled(share);
                    events.extend(ledger.settle(lease, variation, cost));
                    reported.push((lease, variation, cost));
                }
                Step::Lose(i) if !running.is_empty() => {
                    let (lease, variation) = running.remove(i % running.len());
                    events.extend(ledger.fence(lease));
                    // Fenced: it holds just what it was let out.
                    prop_assert_eq!(ledger.reservation(lease), ledger.granted(lease));
                    lost.push((lease, variation));
                }
                Step::LateReport(i, share) if !lost.is_empty() => {
                    let (lease, variation) = lost.remove(i % lost.len());
                    let cost = ledger.granted(lease).unwrap_or(Usd::ZERO).scaled(share);
                    events.extend(ledger.settle(lease, variation, cost));
                    reported.push((lease, variation, cost));
                }
                Step::Resend(i) if !reported.is_empty() => {
                    let (lease, variation, cost) = reported[i % reported.len()];
                    prop_assert!(ledger.settle(lease, variation, cost).is_none());
                }
                Step::Restart => {
                    let mut rebuilt = Ledger::new(&config);
                    for event in &events {
                        rebuilt.apply(event);
                    }
                    prop_assert_eq!(rebuilt.spent(), ledger.spent());
                    prop_assert_eq!(rebuilt.reserved(), ledger.reserved());
                    prop_assert_eq!(rebuilt.open_reservations(), ledger.open_reservations());
                    ledger = rebuilt;
                }
                _ => {}
            }
            prop_assert!(ledger.spent() + ledger.reserved() <= ledger.total());
            for (lease, _) in running.iter().chain(&lost) {
                let held = ledger.reservation(*lease).unwrap_or(Usd::ZERO);
                prop_assert!(held <= ledger.per_run_cap());
                prop_assert!(ledger.granted(*lease).unwrap_or(Usd::ZERO) <= held);
            }
        }
        // The experiment ends: the lost runs that never reported are released.
        events.extend(ledger.release_all());
        prop_assert_eq!(ledger.reserved(), Usd::ZERO);
        prop_assert_eq!(ledger.open_reservations(), 0);
        prop_assert!(ledger.spent() <= ledger.total());
        let spent: Usd = reported.iter().map(|(_, _, cost)| *cost).sum();
        prop_assert_eq!(ledger.spent(), spent);
    }
}

#[test]
fn the_spread_of_costs_is_kept_as_they_settle() {
    let mut ledger = Ledger::new(&budget(100.0, Some(5.0)));
    assert_eq!(ledger.cost_spread(), (0, 0.0, None));
    for (lease, cost) in [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)] {
        ledger.settle(lease, 1 + (lease as u32 % 2), usd(cost));
    }
    let (n, mean, sd) = ledger.cost_spread();
    assert_eq!(n, 4);
    assert!((mean - 2.5).abs() < 1e-9);
    // Sample standard deviation of 1, 2, 3, 4.
    assert!((sd.unwrap() - 1.290_994_448_7).abs() < 1e-6, "{sd:?}");
}
