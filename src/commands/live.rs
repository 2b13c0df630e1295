//! What the live display says about a running experiment, apart from how it
//! is drawn: its pace and ETA (kept by the coordinator, `flotilla_shared::pace`,
//! so the dashboard shows the same), the variations worth a line, spend
//! against the budget, provider limits (binding or not) and the workers.
//! Pure functions of the domain status, so that they are tested without a terminal.

use std::time::Duration;

use flotilla_report::format;
use flotilla_report::stats::{t_interval_from, wilson_interval};
use flotilla_shared::duration::duration_words;
use flotilla_shared::naming::variation_name;
use flotilla_shared::view::{
    Counts, ExperimentView, KeyUseView, ScoreView, StatusView, VariationView,
};

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

/// A score in words with its 95% interval, the same intervals the report
/// uses: `score 3.21 [2.9, 3.52]`; a rate as percentages
/// (`win 45.0% [31.2%, 59.6%]`, Wilson); one run gives no interval yet.
pub fn score_words(score: &ScoreView) -> String {
    if score.rate {
        let successes = (score.mean * score.n as f64).round() as u64;
        let interval = wilson_interval(successes, score.n)
            .map(|i| format!(" [{}, {}]", format::percent(i.low), format::percent(i.high)))
            .unwrap_or_default();
        return format!("{} {}{interval}", score.metric, format::percent(score.mean));
    }
    let interval = t_interval_from(score.n as usize, score.mean, score.sd)
        .map(|i| format!(" {}", format::interval(Some([i.low, i.high]))))
        .unwrap_or_else(|| format!(" (n={})", score.n));
    format!("{} {}{interval}", score.metric, format::number(score.mean))
}

/// The variation whose primary metric is best so far (by its goal), once
/// two variations have one; ties go to the lower index.
pub fn leader(variations: &[VariationView]) -> Option<&VariationView> {
    let scored: Vec<(&VariationView, &ScoreView)> = variations
        .iter()
        .filter_map(|v| v.score.as_ref().map(|s| (v, s)))
        .collect();
    if scored.len() < 2 {
        return None;
    }
    scored
        .into_iter()
        .reduce(|best, next| {
            let better = if next.1.minimize {
                next.1.mean < best.1.mean
            } else {
                next.1.mean > best.1.mean
            };
            if better {
                next
            } else {
                best
            }
        })
        .map(|(v, _)| v)
}

/// A variation's line: `var-003  4/10 ended, 1 failed, 75% ok  score 3.2 [2.9, 3.5]  {"model": …}`,
/// marked when it leads.
fn variation_line(variation: &VariationView, leads: bool) -> String {
    let c = variation.counts;
    let total = c.total();
    let standing = if variation.standing.is_empty() {
        String::new()
    } else {
        format!("  [{}]", variation.standing)
    };
    let score = variation
        .score
        .as_ref()
        .map(|score| {
            format!(
                "{}{}  ",
                score_words(score),
                if leads { " ◀ leads" } else { "" }
            )
        })
        .unwrap_or_default();
    format!(
        "  {}  {:>4}/{:<4} ended  {:>3} running  {:>3} failed  {:>4} ok  {score}{}{standing}",
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
    let leading = leader(&experiment.variations);
    let shown = variations_to_show(&experiment.variations, variation_room);
    lines.extend(
        shown
            .iter()
            .map(|v| variation_line(v, leading.is_some_and(|l| l.index == v.index))),
    );
    if shown.len() < experiment.variations.len() {
        lines.push(format!(
            "  … {} more variations (the most failing and least advanced are shown)",
            experiment.variations.len() - shown.len()
        ));
        // The leader is named even when its line is not among those shown.
        if let Some(leading) = leading.filter(|l| !shown.iter().any(|v| v.index == l.index)) {
            lines.push(format!(
                "  leading: {}  {}  {}",
                variation_name(leading.index),
                leading.score.as_ref().map(score_words).unwrap_or_default(),
                leading.axis_json
            ));
        }
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

    fn experiment_view() -> ExperimentView {
        ExperimentView {
            name: "pd".into(),
            description: String::new(),
            state: ExperimentState::Running,
            counts: Counts::default(),
            variations: Vec::new(),
            started_at_ms: 0,
            finished_at_ms: None,
            directory: "experiments/pd".into(),
            spent_usd: 0.0,
            pace: PaceEstimate::default(),
            waiting: None,
            budget: None,
            end_reason: None,
            setup_failures: Vec::new(),
            cache: Default::default(),
            running_spend_usd: 0.0,
        }
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
            counts,
            pace: PaceEstimate {
                runs_per_minute: Some(6.0),
                eta: Some(Duration::from_secs(180)),
                remaining: 18,
            },
            ..experiment_view()
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
            score: None,
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
            !variation_line(&plain, false).contains('['),
            "a fixed sweep shows no standing"
        );
        let eliminated = VariationView {
            standing: "eliminated by var-001 after 12 paired runs".into(),
            ..variation(3, 5, 0)
        };
        assert!(variation_line(&eliminated, false)
            .ends_with("  [eliminated by var-001 after 12 paired runs]"));
    }

    fn scored(index: u32, mean: f64, minimize: bool) -> VariationView {
        VariationView {
            score: Some(ScoreView {
                metric: "score".into(),
                n: 5,
                mean,
                sd: 1.0,
                rate: false,
                minimize,
            }),
            ..variation(index, 5, 0)
        }
    }

    #[test]
    fn scores_show_the_reports_intervals_and_the_leader_by_its_goal() {
        // The running tally's interval is the report's t interval of the values.
        let values = [2.0, 3.5, 4.0, 1.5, 3.0];
        let mean = values.iter().sum::<f64>() / 5.0;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
        let from_values = flotilla_report::stats::t_interval(&values).unwrap();
        let score = ScoreView {
            metric: "score".into(),
            n: 5,
            mean,
            sd,
            rate: false,
            minimize: false,
        };
        assert_eq!(
            score_words(&score),
            format!(
                "score 2.8 [{}, {}]",
                format::number(from_values.low),
                format::number(from_values.high)
            )
        );
        assert_eq!(
            score_words(&ScoreView {
                n: 1,
                ..score.clone()
            }),
            "score 2.8 (n=1)"
        );
        // A rate: Wilson's interval of 3 in 4, as percentages.
        let rate = ScoreView {
            metric: "won".into(),
            n: 4,
            mean: 0.75,
            sd: 0.5,
            rate: true,
            minimize: false,
        };
        let wilson = wilson_interval(3, 4).unwrap();
        assert_eq!(
            score_words(&rate),
            format!(
                "won 75.0% [{}, {}]",
                format::percent(wilson.low),
                format::percent(wilson.high)
            )
        );

        let maximize = [
            scored(1, 2.0, false),
            scored(2, 3.0, false),
            scored(3, 1.0, false),
        ];
        assert_eq!(leader(&maximize).map(|v| v.index), Some(2));
        let minimize = [
            scored(1, 2.0, true),
            scored(2, 3.0, true),
            scored(3, 1.0, true),
        ];
        assert_eq!(leader(&minimize).map(|v| v.index), Some(3));
        assert!(leader(&maximize[..1]).is_none(), "one score leads nothing");
        assert!(variation_line(&maximize[1], true).contains("score 3 [1.7583, 4.2417] ◀ leads  {}"));

        // Past the room for lines, the leader still gets one.
        let mut many: Vec<VariationView> = (1..=12).map(|i| scored(i, 1.0, false)).collect();
        many[0] = VariationView {
            score: scored(1, 9.0, false).score,
            ..variation(1, 9, 0)
        };
        let experiment = ExperimentView {
            variations: many,
            ..experiment_view()
        };
        let status = StatusView {
            experiments: Vec::new(),
            workers: Vec::new(),
            store_problem: None,
            limits: Vec::new(),
        };
        let lines = detail_lines(&status, &experiment, 4);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("  leading: var-001  score 9 [")),
            "{lines:#?}"
        );
    }
}
