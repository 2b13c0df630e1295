//! What the live display says about a running experiment, apart from how it
//! is drawn: its pace and ETA (kept by the coordinator, `flotilla_shared::pace`,
//! so the dashboard shows the same), the variations worth a line, spend
//! against the budget, provider limits (binding or not) and the workers.
//! Pure functions of the domain status, so that they are tested without a terminal.

use std::time::Duration;

use flotilla_shared::duration::duration_words;
use flotilla_shared::naming::variation_name;
use flotilla_shared::view::{Counts, ExperimentView, KeyUseView, StatusView, VariationView};

use super::display;

/// Success rate among ended runs, `97%`.
fn success_words(counts: &Counts) -> String {
    let ended = counts.ended();
    if ended == 0 {
        "-".to_string()
    } else {
        format!("{:.0}%", 100.0 * counts.succeeded as f64 / ended as f64)
    }
}

/// A limit is binding when calls wait for their turn under it.
pub fn is_binding(limit: &KeyUseView) -> bool {
    limit.waiting > 0
}

/// `freetier/sim/random: 59/60 rpm in the last minute, 6 calls waiting (the
/// limit binds); 2 answered 429`.
pub fn limit_words(limit: &KeyUseView) -> String {
    let key = format!("{}/{}", limit.key.provider, limit.key.model);
    let declared = limit.declared;
    let per = if limit.shared { "" } else { " per worker" };
    let mut parts = Vec::new();
    if let Some(rpm) = declared.requests_per_minute {
        parts.push(format!(
            "{}/{rpm} rpm{per} in the last minute",
            limit.calls_last_minute
        ));
    }
    if let Some(tpm) = declared.tokens_per_minute {
        parts.push(format!("{}/{tpm} tpm{per}", limit.tokens_last_minute));
    }
    if parts.is_empty() {
        parts.push(format!(
            "{} calls in the last minute",
            limit.calls_last_minute
        ));
    }
    let mut words = format!("{key}: {}", parts.join(", "));
    if is_binding(limit) {
        words.push_str(&format!(
            ", {} call{} waiting (the limit binds)",
            limit.waiting,
            if limit.waiting == 1 { "" } else { "s" }
        ));
    }
    if limit.throttled > 0 {
        words.push_str(&format!("; {} refused with 429", limit.throttled));
    }
    // Time calls spent waiting for their turn (pacing and 429 pauses), summed over calls.
    if limit.waited_ms >= 1000 {
        words.push_str(&format!(
            "; calls waited {} in all",
            duration_words(Duration::from_millis(limit.waited_ms))
        ));
    }
    words
}

/// The variations worth a line: all of them when few, else the most
/// failing and then the least advanced, at most `room`.
pub fn variations_to_show(variations: &[VariationView], room: usize) -> Vec<&VariationView> {
    let mut shown: Vec<&VariationView> = variations.iter().collect();
    if shown.len() > room {
        shown.sort_by(|a, b| {
            let (a, b) = (a.counts, b.counts);
            b.failed
                .cmp(&a.failed)
                .then_with(|| (a.ended() + a.running).cmp(&(b.ended() + b.running)))
        });
        shown.truncate(room);
        shown.sort_by_key(|v| v.index);
    }
    shown
}

/// A variation's line: `var-003  4/10 ended, 1 failed, 75% ok  {"model": …}`.
fn variation_line(variation: &VariationView) -> String {
    let c = variation.counts;
    let total = c.total();
    let standing = if variation.standing.is_empty() {
        String::new()
    } else {
        format!("  [{}]", variation.standing)
    };
    format!(
        "  {}  {:>4}/{:<4} ended  {:>3} running  {:>3} failed  {:>4} ok  {}{standing}",
        variation_name(variation.index),
        c.ended(),
        total,
        c.running,
        c.failed,
        success_words(&c),
        variation.axis_json
    )
}

/// Lines under the bar: pace, budget, limits, workers, variations.
pub fn detail_lines(
    status: &StatusView,
    experiment: &ExperimentView,
    variation_room: usize,
) -> Vec<String> {
    let counts = experiment.counts;
    let mut lines = Vec::new();
    let pace_words = experiment.pace.words();
    lines.push(format!(
        "  {} succeeded · {} failed · {} running · {} pending · {} ok{}",
        counts.succeeded,
        counts.failed,
        counts.running,
        counts.pending,
        success_words(&counts),
        if pace_words.is_empty() {
            String::new()
        } else {
            format!(" · {pace_words}")
        }
    ));
    if let Some(budget) = &experiment.budget {
        lines.push(format!("  budget: {}", display::budget_words(budget)));
    }
    if experiment.running_spend_usd > 0.0 {
        lines.push(format!(
            "  running runs have spent {} so far",
            flotilla_shared::money::dollars_words(experiment.running_spend_usd)
        ));
    }
    if let Some(cache) = display::cache_words(experiment) {
        lines.push(format!("  cache: {cache}"));
    }
    for limit in &status.limits {
        lines.push(format!("  limit {}", limit_words(limit)));
    }
    let connected = status.workers.iter().filter(|w| w.connected).count();
    let slots: u32 = status
        .workers
        .iter()
        .filter(|w| w.connected)
        .map(|w| w.slots)
        .sum();
    lines.push(format!("  workers: {connected} connected, {slots} slots"));
    let shown = variations_to_show(&experiment.variations, variation_room);
    lines.extend(shown.iter().map(|v| variation_line(v)));
    if shown.len() < experiment.variations.len() {
        lines.push(format!(
            "  … {} more variations (the most failing and least advanced are shown)",
            experiment.variations.len() - shown.len()
        ));
    }
    lines
}

/// The plain line printed every few seconds when stderr is not a terminal:
/// the status line, the pace, and each limit that binds.
pub fn plain_line(status: &StatusView, experiment: &ExperimentView) -> String {
    let mut line = display::one_line(experiment);
    let pace_words = experiment.pace.words();
    if !pace_words.is_empty() {
        line.push_str(&format!(" · {pace_words}"));
    }
    for limit in status.limits.iter().filter(|l| is_binding(l)) {
        line.push_str(&format!("\n  limit {}", limit_words(limit)));
    }
    line
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flotilla_shared::pace::PaceEstimate;
    use flotilla_shared::rate::{Limits, RateKey};
    use flotilla_shared::status::ExperimentState;

    use super::*;

    fn limit(waiting: u32, throttled: u64, shared: bool) -> KeyUseView {
        KeyUseView {
            key: RateKey {
                provider: "freetier".into(),
                model: "sim/random".into(),
            },
            declared: Limits {
                requests_per_minute: Some(60),
                tokens_per_minute: None,
                concurrency: None,
            },
            shared,
            workers: 2,
            calls: 300,
            calls_last_minute: 59,
            tokens_last_minute: 3000,
            waiting,
            throttled,
            waited_ms: if throttled > 0 { 75_000 } else { 0 },
        }
    }

    #[test]
    fn a_limit_says_whether_it_binds() {
        assert_eq!(
            limit_words(&limit(6, 0, true)),
            "freetier/sim/random: 59/60 rpm in the last minute, 6 calls waiting (the limit binds)"
        );
        assert_eq!(
            limit_words(&limit(0, 2, false)),
            "freetier/sim/random: 59/60 rpm per worker in the last minute; 2 refused with 429; calls waited 1m15s in all"
        );
    }

    #[test]
    fn the_plain_line_adds_the_pace_and_the_limits_that_bind() {
        let counts = Counts {
            succeeded: 6,
            running: 8,
            pending: 10,
            ..Default::default()
        };
        let experiment = ExperimentView {
            name: "pd".into(),
            description: String::new(),
            state: ExperimentState::Running,
            counts,
            variations: Vec::new(),
            started_at_ms: 0,
            finished_at_ms: None,
            directory: "experiments/pd".into(),
            spent_usd: 0.0,
            pace: PaceEstimate {
                runs_per_minute: Some(6.0),
                eta: Some(Duration::from_secs(180)),
                remaining: 18,
            },
            waiting: None,
            budget: None,
            end_reason: None,
            setup_failures: Vec::new(),
            cache: Default::default(),
            running_spend_usd: 0.0,
        };
        let status = StatusView {
            experiments: Vec::new(),
            workers: Vec::new(),
            store_problem: None,
            limits: vec![limit(3, 0, true), limit(0, 0, true)],
        };
        let line = plain_line(&status, &experiment);
        let lines: Vec<&str> = line.lines().collect();
        assert!(lines[0].ends_with("· 6.0 runs/min · ETA 3m00s"), "{line}");
        // Only the limit that binds gets a line.
        assert_eq!(lines.len(), 2, "{line}");
        assert!(lines[1].contains("3 calls waiting (the limit binds)"));
    }

    fn variation(index: u32, ended: u64, failed: u64) -> VariationView {
        VariationView {
            index,
            axis_json: "{}".into(),
            standing: String::new(),
            counts: Counts {
                succeeded: ended - failed,
                failed,
                pending: 10 - ended,
                ..Default::default()
            },
        }
    }

    #[test]
    fn many_variations_show_the_most_failing_then_the_least_advanced() {
        let variations: Vec<_> = (1..=20)
            .map(|i| variation(i, 5 + (i as u64 % 5), u64::from(i == 7) * 3))
            .collect();
        let shown: Vec<u32> = variations_to_show(&variations, 4)
            .iter()
            .map(|v| v.index)
            .collect();
        // var-007 fails most; 5, 10, 15 and 20 are the least advanced (5 ended).
        assert_eq!(shown.len(), 4);
        assert!(shown.contains(&7), "{shown:?}");
        assert!(shown.iter().all(|i| *i == 7 || i % 5 == 0), "{shown:?}");
        assert_eq!(variations_to_show(&variations[..3], 4).len(), 3);
    }

    #[test]
    fn an_adaptive_variation_line_says_where_it_stands() {
        let plain = variation(3, 5, 0);
        assert!(
            !variation_line(&plain).contains('['),
            "a fixed sweep shows no standing"
        );
        let eliminated = VariationView {
            standing: "eliminated by var-001 after 12 paired runs".into(),
            ..variation(3, 5, 0)
        };
        assert!(
            variation_line(&eliminated).ends_with("  [eliminated by var-001 after 12 paired runs]")
        );
    }
}
