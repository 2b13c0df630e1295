//! Decision tests: no runtime, no sockets; the outbox says what would happen.

use std::time::{Duration, Instant};

use flotilla_shared::config::parse_experiment;
use flotilla_shared::money::Usd;
use flotilla_shared::run::{Assignment, Outcome, RunResult};
use flotilla_shared::status::SubmitOutcome;

use flotilla_shared::protocol::{RunningLease, SpendAnswer, SpendRequest};
use flotilla_shared::rate::{KeyDemand, Limits, RatePause, RateShare};
use flotilla_shared::run::RunKey;

use super::*;

const LEASE_TIMEOUT: Duration = Duration::from_secs(10);

fn state_with(yaml: &str) -> State {
    let mut state = State::new("/tmp/root".into(), LEASE_TIMEOUT, 1000);
    let config = parse_experiment(yaml, "t.yaml").unwrap();
    let mut outbox = Outbox::default();
    state
        .submit(
            Submission {
                config,
                config_yaml: yaml.into(),
                workdir: None,
                retry_failed: false,
            },
            0,
            &mut outbox,
        )
        .unwrap();
    state
}

const FOUR_RUNS: &str =
    "name: e\nrun: {kind: noop}\nvariations: [{param: a, values: [1, 2]}]\nruns_per_variation: 2\n";

fn connect(state: &mut State, name: &str, slots: u32, now: Instant) {
    state
        .worker_connected(
            name,
            slots,
            sim_worker(),
            Vec::new(),
            now,
            &mut Outbox::default(),
        )
        .unwrap();
}

/// A worker with no Ollama: it serves sim models only.
fn sim_worker() -> Capabilities {
    Capabilities::default()
}

fn assign(state: &mut State) -> Vec<(Arc<str>, Vec<Assignment>)> {
    let mut outbox = Outbox::default();
    state.schedule(&mut outbox);
    outbox.assignments
}

fn result(assignment: &Assignment, outcome: Outcome) -> RunResult {
    RunResult {
        lease_id: assignment.lease_id,
        run: assignment.run.clone(),
        attempt: assignment.attempt,
        outcome,
        metrics_json: (outcome == Outcome::Succeeded).then(|| "{\"x\":1}".to_string()),
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        signal: None,
        timed_out: false,
        error: String::new(),
        stderr_tail: String::new(),
        duration_s: 0.1,
        started_at_ms: 0,
        files: Vec::new(),
        cost_usd: None,
        calls: Vec::new(),
        budget_stop: None,
    }
}

fn counts(state: &State) -> Counts {
    state.experiments[0].counts
}

#[test]
fn never_assigns_more_than_free_slots() {
    let mut state = state_with(FOUR_RUNS);
    let now = Instant::now();
    connect(&mut state, "w1", 3, now);
    let batches = assign(&mut state);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].1.len(), 3);
    assert!(assign(&mut state).is_empty(), "no free slot left");
    assert_eq!(counts(&state).running, 3);
    assert_eq!(counts(&state).pending, 1);
}

#[test]
fn runs_are_ordered_repetition_major_with_paired_seeds() {
    let mut state = state_with(FOUR_RUNS);
    connect(&mut state, "w1", 4, Instant::now());
    let runs = &assign(&mut state)[0].1;
    let order: Vec<(u32, u32)> = runs
        .iter()
        .map(|a| (a.run.variation, a.run.repetition))
        .collect();
    assert_eq!(order, [(1, 1), (2, 1), (1, 2), (2, 2)]);
    assert_eq!(
        runs[0].seed, runs[1].seed,
        "repetition 1 has one seed in every variation"
    );
    assert_ne!(runs[0].seed, runs[2].seed);
}

#[test]
fn max_parallel_caps_the_experiment() {
    let mut state = state_with(&format!("{FOUR_RUNS}max_parallel: 1\n"));
    connect(&mut state, "w1", 4, Instant::now());
    assert_eq!(assign(&mut state)[0].1.len(), 1);
}

#[test]
fn success_finishes_the_run_and_frees_the_slot() {
    let mut state = state_with(FOUR_RUNS);
    connect(&mut state, "w1", 1, Instant::now());
    let first = assign(&mut state)[0].1[0].clone();
    let mut outbox = Outbox::default();
    state.apply_results(
        "w1",
        vec![result(&first, Outcome::Succeeded)],
        1,
        &mut outbox,
    );
    assert_eq!(counts(&state).succeeded, 1);
    assert!(
        matches!(&outbox.writes[0], Write::Attempt(r) if r.outcome == AttemptOutcome::Succeeded)
    );
    assert_eq!(assign(&mut state)[0].1.len(), 1, "the slot is free again");
}

#[test]
fn failures_are_retried_up_to_max_attempts() {
    let mut state = state_with(&format!("{FOUR_RUNS}retries: {{max_attempts: 2}}\n"));
    connect(&mut state, "w1", 1, Instant::now());
    let first = assign(&mut state)[0].1[0].clone();
    state.apply_results(
        "w1",
        vec![result(&first, Outcome::Failed)],
        1,
        &mut Outbox::default(),
    );
    assert_eq!(counts(&state).failed, 0);
    assert_eq!(counts(&state).pending, 4, "requeued");

    // The retry eventually comes round as attempt 2, and its failure is final.
    let mut retry = None;
    for _ in 0..4 {
        let next = assign(&mut state)[0].1[0].clone();
        if next.run == first.run {
            retry = Some(next);
            break;
        }
        state.apply_results(
            "w1",
            vec![result(&next, Outcome::Succeeded)],
            1,
            &mut Outbox::default(),
        );
    }
    let retry = retry.expect("the failed run is retried");
    assert_eq!(retry.attempt, 2);
    state.apply_results(
        "w1",
        vec![result(&retry, Outcome::Failed)],
        1,
        &mut Outbox::default(),
    );
    assert_eq!(counts(&state).failed, 1);
}

#[test]
fn continue_on_error_false_stops_at_the_first_final_failure() {
    let mut state = state_with(&format!(
        "{FOUR_RUNS}retries: {{max_attempts: 1}}\ncontinue_on_error: false\n"
    ));
    connect(&mut state, "w1", 2, Instant::now());
    let batch = assign(&mut state)[0].1.clone();
    let mut outbox = Outbox::default();
    state.apply_results(
        "w1",
        vec![result(&batch[0], Outcome::Failed)],
        1,
        &mut outbox,
    );
    assert_eq!(counts(&state).cancelled, 2, "pending runs are cancelled");
    assert_eq!(
        outbox.cancels.len(),
        1,
        "the other running run is told to stop"
    );
    assert!(outbox.finalize.is_empty(), "waits for the running run");
    let mut outbox = Outbox::default();
    state.apply_results(
        "w1",
        vec![result(&batch[1], Outcome::Cancelled)],
        2,
        &mut outbox,
    );
    assert_eq!(outbox.finalize, vec![0]);
    assert_eq!(
        state.experiments[0].finalizing,
        Some(ExperimentState::Failed)
    );
    state.finalized(0, 3);
    assert_eq!(state.experiments[0].state, ExperimentState::Failed);
}

#[test]
fn expired_leases_requeue_runs_with_the_next_attempt() {
    let mut state = state_with(FOUR_RUNS);
    let start = Instant::now();
    connect(&mut state, "w1", 2, start);
    let lost = assign(&mut state)[0].1.clone();
    state.worker_disconnected("w1", 1);

    let mut outbox = Outbox::default();
    state.expire_leases(start + LEASE_TIMEOUT / 2, &mut outbox);
    assert!(outbox.writes.is_empty(), "not yet expired");

    state.expire_leases(start + LEASE_TIMEOUT * 2, &mut outbox);
    assert_eq!(outbox.writes.len(), 2);
    assert!(outbox
        .writes
        .iter()
        .all(|p| matches!(p, Write::Attempt(r) if r.outcome == AttemptOutcome::Lost)));
    assert_eq!(counts(&state).pending, 4);
    assert_eq!(counts(&state).running, 0);

    connect(&mut state, "w2", 4, start + LEASE_TIMEOUT * 2);
    let reassigned = assign(&mut state)[0].1.clone();
    let again = reassigned.iter().find(|a| a.run == lost[0].run).unwrap();
    assert_eq!(again.attempt, 2);
}

#[test]
fn heartbeats_keep_leases_alive() {
    let mut state = state_with(FOUR_RUNS);
    let start = Instant::now();
    connect(&mut state, "w1", 2, start);
    assign(&mut state);
    state.worker_seen("w1", 1, start + LEASE_TIMEOUT);
    let mut outbox = Outbox::default();
    state.expire_leases(start + LEASE_TIMEOUT + LEASE_TIMEOUT / 2, &mut outbox);
    assert!(outbox.writes.is_empty());
}

#[test]
fn late_result_of_a_lost_attempt_settles_the_run_once() {
    let mut state = state_with(FOUR_RUNS);
    let start = Instant::now();
    connect(&mut state, "w1", 1, start);
    let first = assign(&mut state)[0].1[0].clone();
    state.worker_disconnected("w1", 1);
    state.expire_leases(start + LEASE_TIMEOUT * 2, &mut Outbox::default());

    connect(&mut state, "w2", 4, start + LEASE_TIMEOUT * 2);
    let second = assign(&mut state)[0]
        .1
        .iter()
        .find(|a| a.run == first.run)
        .unwrap()
        .clone();
    assert_eq!(second.attempt, 2);

    // The first worker comes back and reports attempt 1: accepted (run unfinished),
    // and attempt 2 is told to stop.
    let mut outbox = Outbox::default();
    state.apply_results(
        "w1",
        vec![result(&first, Outcome::Succeeded)],
        5,
        &mut outbox,
    );
    assert_eq!(counts(&state).succeeded, 1);
    assert_eq!(
        outbox.cancels,
        vec![(Arc::from("w2"), vec![second.lease_id])]
    );

    // Attempt 2's result arrives too: dropped, nothing counted twice.
    let mut outbox = Outbox::default();
    state.apply_results(
        "w2",
        vec![result(&second, Outcome::Succeeded)],
        6,
        &mut outbox,
    );
    assert!(outbox.writes.is_empty());
    assert_eq!(counts(&state).succeeded, 1);
}

#[test]
fn resent_results_are_not_counted_twice() {
    let mut state = state_with(FOUR_RUNS);
    connect(&mut state, "w1", 1, Instant::now());
    let first = assign(&mut state)[0].1[0].clone();
    state.apply_results(
        "w1",
        vec![result(&first, Outcome::Failed)],
        1,
        &mut Outbox::default(),
    );
    let mut outbox = Outbox::default();
    state.apply_results("w1", vec![result(&first, Outcome::Failed)], 2, &mut outbox);
    assert!(
        outbox.writes.is_empty(),
        "a resent failure is recorded once"
    );
    assert_eq!(
        state.experiments[0]
            .runs
            .iter()
            .map(|r| r.attempts_recorded)
            .sum::<u32>(),
        1
    );
}

#[test]
fn restarted_worker_loses_the_runs_it_forgot() {
    let mut state = state_with(FOUR_RUNS);
    let now = Instant::now();
    connect(&mut state, "w1", 2, now);
    assign(&mut state);
    state.worker_disconnected("w1", 1);
    let mut outbox = Outbox::default();
    state
        .worker_connected("w1", 2, sim_worker(), Vec::new(), now, &mut outbox)
        .unwrap();
    assert_eq!(
        outbox.writes.len(),
        2,
        "both attempts recorded as lost at once"
    );
    assert_eq!(counts(&state).pending, 4);
}

#[test]
fn reconnecting_worker_keeps_its_running_leases() {
    let mut state = state_with(FOUR_RUNS);
    let now = Instant::now();
    connect(&mut state, "w1", 2, now);
    let batch = assign(&mut state)[0].1.clone();
    let running = batch
        .iter()
        .map(|a| RunningLease {
            lease_id: a.lease_id,
            run: a.run.clone(),
            attempt: a.attempt,
        })
        .collect();
    state.worker_disconnected("w1", 1);
    let mut outbox = Outbox::default();
    state
        .worker_connected("w1", 2, sim_worker(), running, now, &mut outbox)
        .unwrap();
    assert!(outbox.writes.is_empty() && outbox.cancels.is_empty());
    assert_eq!(counts(&state).running, 2);
}

#[test]
fn after_a_coordinator_restart_running_runs_are_adopted() {
    // A fresh state (as after restore) where every run is pending again.
    let mut state = state_with(FOUR_RUNS);
    let run = RunKey {
        experiment: "e".into(),
        variation: 1,
        repetition: 1,
    };
    let mut outbox = Outbox::default();
    let running = vec![
        RunningLease {
            lease_id: 77,
            run: run.clone(),
            attempt: 1,
        },
        RunningLease {
            lease_id: 78,
            run: RunKey {
                repetition: 9,
                ..run.clone()
            },
            attempt: 1,
        },
    ];
    state
        .worker_connected("w1", 2, sim_worker(), running, Instant::now(), &mut outbox)
        .unwrap();
    assert_eq!(counts(&state).running, 1, "the known run is adopted");
    assert_eq!(
        outbox.cancels,
        vec![(Arc::from("w1"), vec![78])],
        "an unknown run is cancelled"
    );
    let batch = assign(&mut state);
    assert!(
        batch[0].1.iter().all(|a| a.run != run),
        "an adopted run is not assigned again"
    );
}

#[test]
fn experiment_finishes_when_every_run_ended() {
    let mut state = state_with("name: e\nrun: {kind: noop}\nruns_per_variation: 2\n");
    connect(&mut state, "w1", 2, Instant::now());
    let batch = assign(&mut state)[0].1.clone();
    let mut outbox = Outbox::default();
    let results = batch
        .iter()
        .map(|a| result(a, Outcome::Succeeded))
        .collect();
    state.apply_results("w1", results, 1, &mut outbox);
    assert_eq!(outbox.finalize, vec![0]);
    assert_eq!(
        state.experiments[0].state,
        ExperimentState::Running,
        "final only once files are written"
    );
    state.finalized(0, 2);
    assert_eq!(state.experiments[0].state, ExperimentState::Completed);
}

#[test]
fn resubmission_resumes_extends_or_conflicts() {
    let mut state = state_with(FOUR_RUNS);
    connect(&mut state, "w1", 4, Instant::now());
    let batch = assign(&mut state)[0].1.clone();
    let results = batch
        .iter()
        .map(|a| result(a, Outcome::Succeeded))
        .collect();
    state.apply_results("w1", results, 1, &mut Outbox::default());
    state.finalized(0, 2);

    let submit = |state: &mut State, yaml: &str| {
        let config = parse_experiment(yaml, "t.yaml").unwrap();
        state.submit(
            Submission {
                config,
                config_yaml: yaml.into(),
                workdir: None,
                retry_failed: false,
            },
            3,
            &mut Outbox::default(),
        )
    };
    assert_eq!(
        submit(&mut state, FOUR_RUNS).unwrap().outcome,
        SubmitOutcome::Unchanged
    );

    let extended = FOUR_RUNS
        .replace("values: [1, 2]", "values: [1, 2, 3]")
        .replace("runs_per_variation: 2", "runs_per_variation: 3");
    let outcome = submit(&mut state, &extended).unwrap();
    assert_eq!(
        (outcome.outcome, outcome.total_runs, outcome.runs_to_do),
        (SubmitOutcome::Extended, 9, 5)
    );
    assert_eq!(state.experiments[0].state, ExperimentState::Running);

    let changed = extended.replace("kind: noop", "kind: noop, timeout: 5s");
    let error = submit(&mut state, &changed).unwrap_err().to_string();
    assert!(error.contains("run.timeout_ms"), "{error}");
}

#[test]
fn a_second_worker_with_a_connected_name_is_refused() {
    let mut state = state_with(FOUR_RUNS);
    let now = Instant::now();
    connect(&mut state, "w1", 2, now);
    let error = state
        .worker_connected(
            "w1",
            2,
            sim_worker(),
            Vec::new(),
            now,
            &mut Outbox::default(),
        )
        .unwrap_err();
    assert!(error.to_string().contains("unique --name"), "{error}");
    // Once the first connection has been silent for half a lease, the name is free again.
    state
        .worker_connected(
            "w1",
            2,
            sim_worker(),
            Vec::new(),
            now + LEASE_TIMEOUT,
            &mut Outbox::default(),
        )
        .unwrap();
}

#[test]
fn runs_go_only_to_workers_that_serve_their_models() {
    let mut state = state_with(
        "name: e\nrun: {kind: noop}\nvariations: [{param: model, values: [ollama/a, sim/echo]}]\nruns_per_variation: 2\n",
    );
    let now = Instant::now();
    connect(&mut state, "plain", 4, now);
    let batches = assign(&mut state);
    let variations: Vec<u32> = batches[0].1.iter().map(|a| a.run.variation).collect();
    assert_eq!(
        variations,
        vec![2, 2],
        "a worker with no Ollama gets the sim runs only"
    );
    assert!(assign(&mut state).is_empty());
    let farm = Capabilities {
        models: ["ollama/a".to_string()].into_iter().collect(),
        ..Capabilities::default()
    };
    state
        .worker_connected("farm", 4, farm, Vec::new(), now, &mut Outbox::default())
        .unwrap();
    let batches = assign(&mut state);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0.as_ref(), "farm");
    assert!(batches[0].1.iter().all(|a| a.run.variation == 1));
    assert_eq!(batches[0].1.len(), 2);
}

const BUDGETED: &str = "name: e\nrun: {kind: noop}\nruns_per_variation: 10\nbudget: {total_usd: 1.0, per_run_usd: 0.4}\n";

fn costing(assignment: &Assignment, dollars: f64) -> RunResult {
    RunResult {
        cost_usd: Some(dollars),
        ..result(assignment, Outcome::Succeeded)
    }
}

#[test]
fn runs_are_assigned_only_while_their_reservation_fits() {
    let mut state = state_with(BUDGETED);
    connect(&mut state, "w", 4, Instant::now());
    let mut outbox = Outbox::default();
    state.schedule(&mut outbox);
    // $1.00 holds two reservations of $0.40, not three.
    let assigned = &outbox.assignments[0].1;
    assert_eq!(assigned.len(), 2);
    assert_eq!(outbox.ledger.len(), 2, "each reservation is persisted");
    let budget = assigned[0].budget.as_ref().unwrap();
    // The worker is let out the first of eight slices of its $0.40.
    assert_eq!(budget.granted, Usd::charge(0.05));
    assert_eq!(budget.per_run_cap, Usd::charge(0.4));
    let ledger = state.experiments[0].ledger.as_ref().unwrap();
    assert_eq!(ledger.reserved(), Usd::charge(0.8));
    assert_eq!(counts(&state).pending, 8);
    assert_eq!(state.experiments[0].state, ExperimentState::Running);
}

#[test]
fn a_result_settles_its_reservation_and_frees_room() {
    let mut state = state_with(BUDGETED);
    connect(&mut state, "w", 4, Instant::now());
    let first = assign(&mut state).remove(0).1;
    let mut outbox = Outbox::default();
    state.apply_results("w", vec![costing(&first[0], 0.05)], 0, &mut outbox);
    assert!(outbox
        .ledger
        .iter()
        .any(|(_, event)| matches!(event, LedgerEvent::Settled { .. })));
    let ledger = state.experiments[0].ledger.as_ref().unwrap();
    assert_eq!(ledger.spent(), Usd::charge(0.05));
    assert_eq!(ledger.reserved(), Usd::charge(0.4));
    assert_eq!(state.experiments[0].spent_usd, 0.05);
    // $0.55 left: one more run of $0.40 fits.
    assert_eq!(assign(&mut state)[0].1.len(), 1);
}

#[test]
fn a_top_up_is_granted_within_the_cap_and_the_ledger() {
    let mut state = state_with(
        "name: e\nrun: {kind: noop}\nruns_per_variation: 2\nbudget: {total_usd: 1.0, per_run_usd: 0.6}\n",
    );
    connect(&mut state, "w", 1, Instant::now());
    let lease_id = assign(&mut state)[0].1[0].lease_id;
    let ask = |state: &mut State, dollars: f64| {
        let mut outbox = Outbox::default();
        state.spend_request(
            "w",
            SpendRequest {
                request_id: 1,
                lease_id,
                amount: Usd::charge(dollars),
            },
            &mut outbox,
        );
        (outbox.grants.remove(0).1.answer, outbox.ledger.len())
    };
    // Reserved $0.60 (the cap), $0.075 let out: a small need gets a whole slice.
    let (answer, events) = ask(&mut state, 0.01);
    assert_eq!(
        answer,
        SpendAnswer::Granted {
            amount: Usd::charge(0.075)
        }
    );
    assert_eq!(events, 1, "each slice let out is persisted");
    // $0.45 not let out yet: more than that would pass the cap.
    let (answer, events) = ask(&mut state, 0.46);
    assert_eq!(
        answer,
        SpendAnswer::Refused {
            left: Usd::charge(0.4),
            total: Usd::charge(1.0)
        }
    );
    assert_eq!(events, 0);
    let (answer, _) = ask(&mut state, 0.45);
    assert_eq!(
        answer,
        SpendAnswer::Granted {
            amount: Usd::charge(0.45)
        }
    );
}

#[test]
fn a_lost_lease_keeps_charged_only_what_its_worker_was_let_spend() {
    let mut state = state_with(
        "name: e\nrun: {kind: noop}\nruns_per_variation: 4\nbudget: {total_usd: 1.2, per_run_usd: 0.4}\ncontinue_on_error: true\n",
    );
    let start = Instant::now();
    state.expire_leases(start, &mut Outbox::default());
    connect(&mut state, "w", 2, start);
    let lost = assign(&mut state).remove(0).1;
    connect(&mut state, "v", 1, start);
    let kept = assign(&mut state).remove(0).1;
    // w's first run was let out a second slice of its $0.40 ($0.05 each).
    let mut outbox = Outbox::default();
    let request = SpendRequest {
        request_id: 1,
        lease_id: lost[0].lease_id,
        amount: Usd::charge(0.01),
    };
    state.spend_request("w", request, &mut outbox);
    let reserved = |state: &State| state.experiments[0].ledger.as_ref().unwrap().reserved();
    assert_eq!(reserved(&state), Usd::charge(1.2));
    // w goes silent; v keeps its lease. w's leases are lost and fenced:
    // $0.10 and $0.05 stay charged, the $0.65 never let out is freed.
    let later = start + LEASE_TIMEOUT * 2;
    state.worker_seen("v", state.workers["v"].session, later);
    let mut outbox = Outbox::default();
    state.expire_leases(later, &mut outbox);
    let freed: Vec<Usd> = outbox
        .ledger
        .iter()
        .filter_map(|(_, e)| match e {
            LedgerEvent::Fenced { freed, .. } => Some(*freed),
            _ => None,
        })
        .collect();
    assert_eq!(freed.iter().copied().sum::<Usd>(), Usd::charge(0.65));
    assert_eq!(reserved(&state), Usd::charge(0.55));
    assert_eq!(counts(&state).pending, 3);
    // $0.65 left: another worker gets a $0.40 run at once.
    connect(&mut state, "x", 2, later);
    assert_eq!(assign(&mut state)[0].1.len(), 1);
    // A top-up asked under a lost lease is refused.
    let mut outbox = Outbox::default();
    let request = SpendRequest {
        request_id: 2,
        lease_id: lost[1].lease_id,
        amount: Usd::charge(0.01),
    };
    state.spend_request("w", request, &mut outbox);
    assert!(matches!(
        outbox.grants[0].1.answer,
        SpendAnswer::Refused { .. }
    ));
    // The lost worker comes back and reports what its run really spent: it
    // is settled once, in place of what stayed charged.
    let mut outbox = Outbox::default();
    state.apply_results("w", vec![costing(&lost[0], 0.08)], 0, &mut outbox);
    let ledger = state.experiments[0].ledger.as_ref().unwrap();
    assert_eq!(ledger.spent(), Usd::charge(0.08));
    assert_eq!(ledger.reserved(), Usd::charge(0.85));
    let mut outbox = Outbox::default();
    state.apply_results("w", vec![costing(&lost[0], 0.08)], 0, &mut outbox);
    assert_eq!(
        state.experiments[0].ledger.as_ref().unwrap().spent(),
        Usd::charge(0.08),
        "settled once"
    );
    let _ = kept;
}

#[test]
fn restored_reservations_wait_a_lease_timeout_for_their_workers() {
    let mut state = state_with(BUDGETED);
    let start = Instant::now();
    connect(&mut state, "w", 1, start);
    let lease_id = assign(&mut state)[0].1[0].lease_id;
    // As after a restart: the reservation is in the ledger, the lease is not live.
    state.release_lease(lease_id);
    let restarted = start + LEASE_TIMEOUT * 5;
    state.worker_seen("w", state.workers["w"].session, restarted);
    let mut outbox = Outbox::default();
    state.expire_leases(restarted, &mut outbox);
    assert!(outbox.ledger.is_empty(), "its worker may still report it");
    let mut outbox = Outbox::default();
    state.worker_seen("w", state.workers["w"].session, restarted + LEASE_TIMEOUT);
    state.expire_leases(restarted + LEASE_TIMEOUT, &mut outbox);
    assert!(matches!(
        outbox.ledger[..],
        [(_, LedgerEvent::Fenced { .. })]
    ));
}

#[test]
fn a_429_seen_by_one_worker_pauses_the_key_on_the_others_that_call_its_provider() {
    let mut state = state_with(FOUR_RUNS);
    let now = Instant::now();
    let mut remote = Capabilities::default();
    remote.providers.insert("remote".into());
    for name in ["a", "b"] {
        state
            .worker_connected(
                name,
                1,
                remote.clone(),
                Vec::new(),
                now,
                &mut Outbox::default(),
            )
            .unwrap();
    }
    connect(&mut state, "sim-only", 1, now);
    let pause = RatePause {
        key: flotilla_shared::rate::RateKey {
            provider: "remote".into(),
            model: "m".into(),
        },
        pause: Duration::from_secs(2),
    };
    let mut outbox = Outbox::default();
    state.rate_limited("a", pause.clone(), &mut outbox);
    assert_eq!(outbox.notices.len(), 1);
    assert_eq!(&*outbox.notices[0].0, "b");
    assert_eq!(outbox.notices[0].1, ToWorker::RatePause(pause));
}

#[test]
fn shares_are_split_among_connected_workers_by_their_demand() {
    let mut state = state_with(FOUR_RUNS);
    let now = Instant::now();
    let mut remote = Capabilities::default();
    remote.shared_limits.insert(
        "remote".into(),
        Limits {
            requests_per_minute: Some(100),
            ..Limits::default()
        },
    );
    for name in ["a", "b"] {
        state
            .worker_connected(
                name,
                1,
                remote.clone(),
                Vec::new(),
                now,
                &mut Outbox::default(),
            )
            .unwrap();
    }
    let key = flotilla_shared::rate::RateKey {
        provider: "remote".into(),
        model: "m".into(),
    };
    let mut outbox = Outbox::default();
    state.rate_demand(
        "a",
        vec![KeyDemand {
            key: key.clone(),
            calls: 1,
        }],
        &mut outbox,
    );
    state.rate_demand(
        "b",
        vec![KeyDemand {
            key: key.clone(),
            calls: 3,
        }],
        &mut outbox,
    );
    let latest = |worker: &str| {
        outbox
            .notices
            .iter()
            .rev()
            .find_map(|(w, m)| match m {
                ToWorker::RateShares(shares) if &**w == worker => Some(shares[0].limits),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(latest("a").requests_per_minute, Some(25));
    assert_eq!(latest("b").requests_per_minute, Some(75));
    // b leaves: a gets it all.
    let mut outbox = Outbox::default();
    state.rate_worker_left("b", &mut outbox);
    assert_eq!(
        outbox.notices,
        vec![(
            Arc::from("a"),
            ToWorker::RateShares(vec![RateShare {
                key,
                limits: Limits {
                    requests_per_minute: Some(100),
                    ..Limits::default()
                }
            }])
        )]
    );
}

#[test]
fn declined_runs_go_back_without_an_attempt_and_that_worker_gets_no_more() {
    let mut state = state_with(FOUR_RUNS);
    let now = Instant::now();
    connect(&mut state, "w", 2, now);
    let declined: Vec<u64> = assign(&mut state)[0].1.iter().map(|a| a.lease_id).collect();
    let mut outbox = Outbox::default();
    state.declined(
        "w",
        declined,
        "setup failed on this worker: exited with code 1",
        &mut outbox,
    );
    assert_eq!(counts(&state).pending, 4);
    assert!(state.experiments[0]
        .runs
        .iter()
        .all(|r| r.attempts_recorded == 0));
    assert!(assign(&mut state).is_empty(), "w takes no more runs of it");
    connect(&mut state, "v", 2, now);
    let second = assign(&mut state);
    assert_eq!(&*second[0].0, "v");
    assert_eq!(second[0].1[0].attempt, 1);
    let failures: Vec<&str> = state.experiments[0]
        .setup_failed
        .values()
        .map(String::as_str)
        .collect();
    assert_eq!(
        failures,
        ["setup failed on this worker: exited with code 1"]
    );
}

/// Runs every assignment of `batches` to an end costing `cost(variation)`.
fn finish_all(
    state: &mut State,
    batches: Vec<(Arc<str>, Vec<Assignment>)>,
    cost: impl Fn(u32) -> f64,
) {
    for (worker, runs) in batches {
        let results = runs
            .iter()
            .map(|a| costing(a, cost(a.run.variation)))
            .collect();
        let mut outbox = Outbox::default();
        state.apply_results(&worker, results, 0, &mut outbox);
        for index in outbox.finalize {
            state.finalized(index, 0);
        }
    }
}

#[test]
fn a_run_that_fits_is_assigned_when_the_next_in_line_does_not() {
    // Four variations of ten runs under $2.00, $0.50 a run until a variation
    // has three finished runs, then what they cost ($0.156). Three workers.
    let mut state = state_with(
        "name: e\nrun: {kind: noop}\nvariations: [{param: a, values: [1, 2, 3, 4]}]\nruns_per_variation: 10\nbudget: {total_usd: 2.0, per_run_usd: 0.5}\n",
    );
    let now = Instant::now();
    for worker in ["w1", "w2", "w3"] {
        connect(&mut state, worker, 1, now);
    }
    // Variations 1–3 finish three runs each, variation 4 none.
    let mut outbox = Outbox::default();
    let experiment = &mut state.experiments[0];
    for variation in 1..=3 {
        for repetition in 1..=3 {
            let slot = experiment.slot_of(variation, repetition).unwrap();
            experiment.set_status(slot, RunStatus::Succeeded);
            let ledger = experiment.ledger.as_mut().unwrap();
            let lease_id = 100 * variation as u64 + repetition as u64;
            ledger.apply(&LedgerEvent::Reserved {
                lease_id,
                variation,
                amount: Usd::charge(0.5),
            });
            ledger.settle(lease_id, variation, Usd::charge(0.156));
        }
    }
    // $1.404 spent, $0.596 left: next in line is var-004-run-001 ($0.50).
    state.schedule(&mut outbox);
    let first: Vec<(u32, u32)> = outbox
        .assignments
        .iter()
        .flat_map(|(_, runs)| runs.iter().map(|a| (a.run.variation, a.run.repetition)))
        .collect();
    // $0.50 for var-004, then $0.096 left: no other $0.156 run fits.
    assert_eq!(first, [(4, 1)]);
    // var-004 costs $0.156: $0.44 left. Its next run ($0.50) does not fit,
    // but var-001's ($0.156) does: two of them go out, in queue order.
    finish_all(&mut state, outbox.assignments, |_| 0.156);
    let second: Vec<(u32, u32)> = assign(&mut state)
        .iter()
        .flat_map(|(_, runs)| runs.iter().map(|a| (a.run.variation, a.run.repetition)))
        .collect();
    assert_eq!(second, [(1, 4), (2, 4)]);
}

#[test]
fn a_budgeted_sweep_runs_until_no_pending_run_fits_and_then_ends() {
    let mut state = state_with(
        "name: e\nrun: {kind: noop}\nvariations: [{param: a, values: [1, 2, 3, 4]}]\nruns_per_variation: 10\nbudget: {total_usd: 2.0, per_run_usd: 0.5}\n",
    );
    let now = Instant::now();
    for worker in ["w1", "w2", "w3"] {
        connect(&mut state, worker, 1, now);
    }
    for _round in 0..100 {
        let batches = assign(&mut state);
        if batches.is_empty() {
            break;
        }
        finish_all(&mut state, batches, |_| 0.156);
    }
    let experiment = &state.experiments[0];
    assert_eq!(experiment.state, ExperimentState::BudgetExhausted);
    let ledger = experiment.ledger.as_ref().unwrap();
    assert!(
        ledger.left() < Usd::charge(0.156),
        "ended with {} left, where a $0.156 run fits",
        ledger.left()
    );
    assert_eq!(experiment.counts.succeeded, 12);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever the budget, the costs and the workers, a budgeted experiment
    /// either assigns a run, waits on a running one, or ends: never none of them.
    #[test]
    fn a_budgeted_experiment_never_stalls(
        total in 0.1f64..5.0,
        per_run_share in proptest::option::of(0.01f64..1.0),
        variations in 1u32..6,
        repetitions in 1u32..12,
        slots in proptest::collection::vec(1u32..4, 1..4),
        costs in proptest::collection::vec(0.0f64..1.0, 6),
        finish_share in 0.1f64..1.0,
    ) {
        let per_run = per_run_share
            .map(|share| format!(", per_run_usd: {}", total * share))
            .unwrap_or_default();
        let values: Vec<String> = (1..=variations).map(|v| v.to_string()).collect();
        let mut state = state_with(&format!(
            "name: e\nrun: {{kind: noop}}\nvariations: [{{param: a, values: [{}]}}]\nruns_per_variation: {repetitions}\nbudget: {{total_usd: {total}{per_run}}}\ncontinue_on_error: true\n",
            values.join(", ")
        ));
        let now = Instant::now();
        for (i, &slots) in slots.iter().enumerate() {
            connect(&mut state, &format!("w{i}"), slots, now);
        }
        let mut running: Vec<(Arc<str>, Assignment)> = Vec::new();
        for _step in 0..1_000 {
            for (worker, runs) in assign(&mut state) {
                running.extend(runs.into_iter().map(|a| (worker.clone(), a)));
            }
            let experiment = &state.experiments[0];
            if experiment.state.is_final() {
                break;
            }
            proptest::prop_assert!(
                !running.is_empty(),
                "stalled: nothing assigned, nothing running, state {:?}, {:?}",
                experiment.state,
                experiment.counts
            );
            // Some of the running runs end, each costing at most its reservation.
            let ending = ((running.len() as f64 * finish_share).ceil() as usize).max(1);
            for (worker, assignment) in running.drain(..ending) {
                let reserved = state.experiments[0]
                    .ledger
                    .as_ref()
                    .unwrap()
                    .reservation(assignment.lease_id)
                    .unwrap()
                    .dollars();
                let cost = (costs[assignment.run.variation as usize - 1] * reserved).min(reserved);
                let mut outbox = Outbox::default();
                state.apply_results(&worker, vec![costing(&assignment, cost)], 0, &mut outbox);
                for index in outbox.finalize {
                    state.finalized(index, 0);
                }
            }
        }
        let experiment = &state.experiments[0];
        proptest::prop_assert!(experiment.state.is_final(), "never ended: {:?}", experiment.counts);
        // The runs it did not start were ones whose estimate did not fit.
        let ledger = experiment.ledger.as_ref().unwrap();
        for run in experiment.runs.iter().filter(|r| r.status == RunStatus::Cancelled) {
            proptest::prop_assert!(
                !ledger.fits(run.variation),
                "ended {:?} with variation {} cancelled though it fits",
                experiment.state,
                run.variation
            );
        }
    }
}
