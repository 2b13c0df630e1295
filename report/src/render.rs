//! analysis-report.md, for people: one function per section, in the order
//! they appear.

use std::fmt::Write as _;

use flotilla_shared::grid::value_as_argument;

use crate::analysis::{Analysis, Comparison, MetricGoal, MetricInfo, MetricKind, PowerTest};
use crate::format::{interval, money, number, optional, percent};

/// `plots`: (title, path relative to analysis/) of the plots to embed.
pub fn markdown(analysis: &Analysis, plots: &[(String, String)]) -> String {
    let mut out = String::new();
    title(&mut out, analysis);
    summary(&mut out, analysis);
    adaptive_sampling(&mut out, analysis);
    experiments_overall(&mut out, analysis);
    for metric in &analysis.metrics {
        metric_section(&mut out, analysis, metric);
    }
    main_effects(&mut out, analysis);
    interaction(&mut out, analysis);
    failure_modes(&mut out, analysis);
    cost_efficiency(&mut out, analysis);
    power(&mut out, analysis);
    plots_section(&mut out, plots);
    out
}

fn title(out: &mut String, analysis: &Analysis) {
    if analysis.compared_experiments.is_empty() {
        let _ = writeln!(out, "# Analysis of `{}`\n", analysis.experiment);
    } else {
        let names: Vec<String> = analysis
            .compared_experiments
            .iter()
            .map(|n| format!("`{n}`"))
            .collect();
        let _ = writeln!(out, "# Comparison of {}\n", names.join(", "));
    }
    if analysis.state == flotilla_shared::status::ExperimentState::BudgetExhausted {
        let _ = writeln!(
            out,
            "> **Partial results: the budget ran out** (`budget_exhausted`). No further run fitted in `budget.total_usd`; these figures cover only the runs that ran. Resubmit with a larger total to go on.\n"
        );
    } else if analysis.partial {
        let _ = writeln!(
            out,
            "> **Partial results.** The experiment is `{}`: these figures cover only the runs finished so far.\n",
            analysis.state
        );
    }
    if let Some(sentence) = analysis.cache.sentence() {
        let _ = writeln!(
            out,
            "> **{sentence}.** Those answers were recorded by earlier calls with the same request and seed and served again, not sampled anew.\n"
        );
    }
}

fn summary(out: &mut String, analysis: &Analysis) {
    let (succeeded, failed): (u64, u64) = analysis
        .variations
        .iter()
        .fold((0, 0), |(s, f), v| (s + v.succeeded, f + v.failed));
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "- State: {}; {} runs in {} variations: {} succeeded, {} failed.",
        analysis.state,
        analysis.total_runs,
        analysis.variations.len(),
        succeeded,
        failed
    );
    for note in &analysis.notes {
        let _ = writeln!(out, "- {note}");
    }
    if let Some(baseline) = &analysis.baseline {
        let _ = writeln!(out, "- Baseline: {baseline}.");
    }
    // With an axis of cases a variation is one case: the best is said per
    // level of the other axes, compared over runs paired by case.
    let by_case = analysis
        .main_effects
        .iter()
        .any(|e| e.levels.iter().any(|l| l.versus_best.is_some()));
    for metric in analysis.metrics.iter().filter(|_| by_case) {
        for effect in analysis
            .main_effects
            .iter()
            .filter(|e| e.metric == metric.name && e.levels.iter().any(|l| l.versus_best.is_some()))
        {
            let Some(best) = effect
                .levels
                .iter()
                .find(|l| Some(&l.value) == effect.best.as_ref())
            else {
                continue;
            };
            let runner_up = effect
                .levels
                .iter()
                .filter_map(|l| l.versus_best.as_ref().map(|d| (l, d)))
                .max_by(|(_, a), (_, b)| {
                    let order = a.mean.total_cmp(&b.mean);
                    if metric.higher_is_better() {
                        order
                    } else {
                        order.reverse()
                    }
                });
            let next = runner_up
                .map(|(level, d)| {
                    format!(
                        "; the next, {}, differs by {} (95% CI {}, {}) over {} runs paired by case",
                        value_as_argument(&level.value),
                        number(d.mean),
                        interval(d.ci95),
                        d.ci95_method.as_str(),
                        d.pairs
                    )
                })
                .unwrap_or_default();
            let figure = match metric.kind {
                MetricKind::Boolean => "rate",
                MetricKind::Numeric => "mean",
            };
            let _ = writeln!(
                out,
                "- Best on **{}** ({}) by {}: {} with {figure} {} (95% CI {}, {}) over {} runs{next}.",
                metric.name,
                metric.goal.as_str(),
                effect.axis,
                value_as_argument(&best.value),
                number(best.mean),
                interval(best.ci95),
                best.ci95_method.as_str(),
                best.n
            );
        }
    }
    for metric in analysis.metrics.iter().filter(|_| !by_case) {
        if let Some((name, mean)) = best_variation(analysis, metric) {
            let _ = writeln!(
                out,
                "- Best on **{}** ({}): {name} with mean {}.",
                metric.name,
                metric.goal.as_str(),
                number(mean)
            );
        }
    }
    let significant = analysis
        .comparisons
        .iter()
        .filter(|c| c.significant)
        .count();
    let _ = writeln!(
        out,
        "- {} of {} pairwise comparisons are significant after Holm's correction (α = 0.05).",
        significant,
        analysis.comparisons.len()
    );
    if !analysis.skipped_metrics.is_empty() {
        let _ = writeln!(
            out,
            "- Not analysed (values are neither numbers nor booleans): {}.",
            analysis.skipped_metrics.join(", ")
        );
    }
    if analysis.has_cost {
        let total: f64 = analysis
            .variations
            .iter()
            .filter_map(|v| v.cost.as_ref())
            .map(|c| c.total_usd)
            .sum();
        let _ = writeln!(
            out,
            "- Cost: {} in total (see Cost efficiency).\n",
            money(total)
        );
    } else {
        let _ = writeln!(
            out,
            "- Cost: no run reported a cost (`cost_usd`), so there is no cost analysis.\n"
        );
    }
}

/// `flotilla compare`: each pair of experiments over all matched variations.
fn experiments_overall(out: &mut String, analysis: &Analysis) {
    if analysis.pooled_comparisons.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Experiments overall\n");
    let _ = writeln!(
        out,
        "Each pair of experiments over all matched variations; runs pair up when they have the same parameters and seed. Holm's correction per metric.\n"
    );
    for comparison in &analysis.pooled_comparisons {
        let _ = writeln!(out, "- {}{}", comparison.verdict, power_note(comparison));
    }
    let _ = writeln!(out);
}

/// One metric: its ranking table and its comparisons.
fn metric_section(out: &mut String, analysis: &Analysis, metric: &MetricInfo) {
    let _ = writeln!(
        out,
        "## {} ({}, {})\n",
        metric.name,
        metric.goal.as_str(),
        match metric.kind {
            MetricKind::Numeric => "numeric",
            MetricKind::Boolean => "boolean: rates",
        }
    );
    ranking_table(out, analysis, metric);
    comparisons(out, analysis, metric);
}

fn ranking_table(out: &mut String, analysis: &Analysis, metric: &MetricInfo) {
    let header = match metric.kind {
        MetricKind::Boolean => "| rank | variation | n | rate | 95% CI (Wilson) | 95% CI (bootstrap) | median | std | min | max | failure rate |",
        MetricKind::Numeric => "| rank | variation | n | mean | 95% CI (t) | 95% CI (bootstrap) | median | std | min | max | failure rate |",
    };
    let _ = writeln!(out, "{header}");
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut rows: Vec<_> = analysis
        .variations
        .iter()
        .filter_map(|v| v.metrics.get(&metric.name).map(|m| (v, m)))
        .collect();
    rows.sort_by(|(_, x), (_, y)| {
        let order = y.mean.total_cmp(&x.mean);
        if metric.higher_is_better() {
            order
        } else {
            order.reverse()
        }
    });
    for (rank, (variation, figures)) in rows.iter().enumerate() {
        let (mean, ci) = match metric.kind {
            MetricKind::Boolean => (
                figures.rate.map(percent).unwrap_or_default(),
                interval(figures.rate_ci95_wilson),
            ),
            MetricKind::Numeric => (number(figures.mean), interval(figures.ci95_t)),
        };
        let _ = writeln!(
            out,
            "| {} | {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rank + 1,
            variation.name,
            variation.label,
            figures.n,
            mean,
            ci,
            interval(figures.ci95_bootstrap),
            number(figures.median),
            optional(figures.std),
            number(figures.min),
            number(figures.max),
            variation
                .failure_rate
                .map(percent)
                .unwrap_or_else(|| "—".into()),
        );
    }
    let missing: Vec<String> = analysis
        .variations
        .iter()
        .filter(|v| !v.metrics.contains_key(&metric.name))
        .map(|v| v.name.clone())
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            out,
            "\nNo values for {} (no succeeded run reported {}).",
            missing.join(", "),
            metric.name
        );
    }
}

/// Significant and baseline comparisons in words; the others counted.
/// An adaptive experiment's decisions, from its confidence sequences.
fn adaptive_sampling(out: &mut String, analysis: &Analysis) {
    let Some(adaptive) = &analysis.adaptive else {
        return;
    };
    let _ = writeln!(out, "## Adaptive sampling\n");
    let _ = writeln!(
        out,
        "Question: {} on {}. Decisions come from confidence sequences, valid at every look: \
         α = {} over the family of {} sequences (a union bound, α/{} each). \
         The fixed-sample tests further down are not valid after adaptive stopping: read them as description, not decisions.\n",
        adaptive.question,
        adaptive.metric,
        adaptive.alpha,
        adaptive.family,
        adaptive.family
    );
    let _ = writeln!(
        out,
        "| variation | standing | runs | mean | interval (α/K) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
    for line in &adaptive.variations {
        let interval = line
            .interval
            .map(|[low, high]| format!("[{}, {}]", optional(Some(low)), optional(Some(high))))
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {interval} |",
            line.variation,
            line.standing,
            line.runs,
            optional(line.mean)
        );
    }
    let saved = match adaptive.dollars_saved {
        Some(dollars) => format!(" and about {}", money(dollars)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "\n{} runs ran; stopping early saved {} runs{saved} against running every variation to runs_per_variation.",
        adaptive.runs_sampled, adaptive.runs_saved
    );
    let open: Vec<&str> = adaptive
        .variations
        .iter()
        .filter(|l| l.open)
        .map(|l| l.variation.as_str())
        .collect();
    if !open.is_empty() && adaptive.question == "best" && open.len() > 1 {
        let _ = writeln!(
            out,
            "Still tied for best: {}; more runs per variation would be needed to separate them.",
            open.join(", ")
        );
    } else if open.iter().any(|_| adaptive.question != "best") {
        let _ = writeln!(out, "Questions still open: {}.", open.join(", "));
    }
    let _ = writeln!(out);
}

fn comparisons(out: &mut String, analysis: &Analysis, metric: &MetricInfo) {
    let _ = writeln!(out, "\n### Comparisons\n");
    let _ = writeln!(
        out,
        "Each difference's 95% interval comes from the same design as its test (paired when runs pair up by seed) and is not adjusted for the number of comparisons; the p-values are Holm-adjusted.\n"
    );
    // A comparison of experiments has few pairs, each of interest.
    let comparing = !analysis.compared_experiments.is_empty();
    let (mut not_significant, mut untested) = (0, 0);
    for comparison in analysis
        .comparisons
        .iter()
        .filter(|c| c.metric == metric.name)
    {
        if comparison.significant || comparison.against_baseline || comparing {
            let _ = writeln!(out, "- {}{}", comparison.verdict, power_note(comparison));
        } else if comparison.primary_p.is_none() {
            untested += 1;
        } else {
            not_significant += 1;
        }
    }
    if not_significant > 0 {
        let _ = writeln!(
            out,
            "- {not_significant} other pair(s) show no significant difference (see comparisons.json)."
        );
    }
    if untested > 0 {
        let _ = writeln!(
            out,
            "- {untested} other pair(s) could not be tested: too few values, or values that do not vary (each pair's reason is in comparisons.json)."
        );
    }
    let _ = writeln!(out);
}

fn main_effects(out: &mut String, analysis: &Analysis) {
    if analysis.main_effects.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Main effects\n");
    let _ = writeln!(
        out,
        "Mean (for a boolean metric, the rate) of each axis level over all variations that have it, with its 95% interval: a t-interval for numbers, Wilson's for rates.\n"
    );
    let paired = analysis
        .main_effects
        .iter()
        .flat_map(|e| &e.levels)
        .any(|l| l.versus_best.is_some());
    if paired {
        let _ = writeln!(
            out,
            "With an axis of cases, each level is also compared with the best one over runs paired by case (the same case, other axes and repetition): a paired t-interval for numbers, Newcombe's paired interval for rates.\n"
        );
        let _ = writeln!(out, "| axis | metric | level | n | mean | 95% CI | best | minus best, paired by case (pairs) | 95% CI |");
        let _ = writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
    } else {
        let _ = writeln!(out, "| axis | metric | level | n | mean | 95% CI | best |");
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    }
    for effect in &analysis.main_effects {
        for level in &effect.levels {
            let best = if effect.best.as_ref() == Some(&level.value) {
                "★"
            } else {
                ""
            };
            let versus = match (&level.versus_best, paired) {
                (Some(d), _) => {
                    format!(" {} ({}) | {} |", number(d.mean), d.pairs, interval(d.ci95))
                }
                (None, true) => " | |".to_string(),
                (None, false) => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |{versus}",
                effect.axis,
                effect.metric,
                value_as_argument(&level.value),
                level.n,
                number(level.mean),
                interval(level.ci95),
                best
            );
        }
    }
    let _ = writeln!(out);
}

fn interaction(out: &mut String, analysis: &Analysis) {
    let Some(table) = &analysis.interaction else {
        return;
    };
    let _ = writeln!(
        out,
        "## Interaction: {} × {} on {}\n\nMean {} in each cell (rows: {}, columns: {}). Rows that are not parallel mean the axes interact.\n",
        table.rows_axis, table.columns_axis, table.metric, table.metric, table.rows_axis, table.columns_axis
    );
    let header: Vec<String> = table.columns.iter().map(value_as_argument).collect();
    let _ = writeln!(out, "| {} | {} |", table.rows_axis, header.join(" | "));
    let _ = writeln!(out, "| --- |{}", " --- |".repeat(header.len()));
    for (row, means) in table.rows.iter().zip(&table.means) {
        let cells: Vec<String> = means.iter().map(|m| optional(*m)).collect();
        let _ = writeln!(
            out,
            "| {} | {} |",
            value_as_argument(row),
            cells.join(" | ")
        );
    }
    let _ = writeln!(out);
}

fn failure_modes(out: &mut String, analysis: &Analysis) {
    let _ = writeln!(out, "## Failure modes\n");
    if analysis.failure_modes.is_empty() {
        let _ = writeln!(out, "No run failed for good.\n");
        return;
    }
    let _ = writeln!(out, "| count | signature | variations | example |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for mode in &analysis.failure_modes {
        let variations: Vec<String> = mode
            .per_variation
            .iter()
            .map(|(v, c)| format!("{v}: {c}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            mode.count,
            mode.signature.replace('|', "\\|"),
            variations.join(", "),
            mode.example_run
        );
    }
    let _ = writeln!(out);
}

/// Spend by service tier, and what the flex tier saved, when any call asked for it.
fn tier_spend(out: &mut String, tiers: &flotilla_shared::calls::TierSpend) {
    let Some(sentence) = tiers.sentence() else {
        return;
    };
    let _ = writeln!(out, "{sentence}.\n");
    let _ = writeln!(out, "| tier | calls | spent | saved against standard |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for line in &tiers.tiers {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            line.tier.as_str(),
            line.calls,
            money(line.cost_usd),
            money(line.saved_usd)
        );
    }
    let _ = writeln!(out);
}

fn cost_efficiency(out: &mut String, analysis: &Analysis) {
    let _ = writeln!(out, "## Cost efficiency\n");
    let cache = &analysis.cache;
    if cache.hits > 0 {
        let _ = writeln!(
            out,
            "The response cache answered {} of {} LLM calls for nothing; upstream they cost {} when they were recorded.\n",
            cache.hits,
            cache.calls,
            money(cache.saved_usd)
        );
    }
    tier_spend(out, &analysis.tiers);
    if !analysis.has_cost {
        let _ = writeln!(
            out,
            "No run reported a cost. Runs that report `cost_usd` in their metrics get cost per run, per success, runs per dollar and the cost–quality frontier here.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "| variation | runs with cost | total | mean per run | 95% CI | per success | runs per $ |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for variation in &analysis.variations {
        let Some(cost) = &variation.cost else {
            let _ = writeln!(
                out,
                "| {} {} | 0 | — | — | — | — | — |",
                variation.name, variation.label
            );
            continue;
        };
        let _ = writeln!(
            out,
            "| {} {} | {} | {} | {} | {} | {} | {} |",
            variation.name,
            variation.label,
            cost.runs_with_cost,
            money(cost.total_usd),
            money(cost.mean_per_run_usd),
            interval(cost.mean_per_run_ci95_t),
            cost.per_success_usd
                .map(money)
                .unwrap_or_else(|| "—".into()),
            optional(cost.runs_per_dollar),
        );
    }
    let _ = writeln!(
        out,
        "\nCost–quality frontier: the variations that no other one matches or beats on both mean cost per run and mean quality.\n"
    );
    for frontier in &analysis.cost_frontiers {
        let _ = writeln!(
            out,
            "- {}: {} (cheapest first)",
            frontier.metric,
            frontier.variations.join(", ")
        );
    }
    let _ = writeln!(out);
}

fn power(out: &mut String, analysis: &Analysis) {
    let _ = writeln!(out, "## Power\n");
    let underpowered = analysis
        .comparisons
        .iter()
        .filter(|c| c.underpowered)
        .count();
    let _ = writeln!(
        out,
        "{underpowered} of {} comparisons are underpowered: the observed difference would need more runs per variation to be detected with power 0.8 at α = 0.05 (two-sided; paired t-test with d_z when runs pair up by seed, two-sample t-test with Cohen's d otherwise, z-test of rates with Cohen's h for booleans).",
        analysis.comparisons.len()
    );
    if let (Some(min_effect), Some((two_sample, paired))) =
        (analysis.min_effect, analysis.runs_needed_for_min_effect)
    {
        let runs = |n: Option<u64>| {
            n.map(|n| format!("{n} runs per variation"))
                .unwrap_or_else(|| "more than 10^9 runs".into())
        };
        let _ = writeln!(
            out,
            "\nTo detect a difference of {min_effect} standard deviations: {} with independent runs, {} when runs pair up by seed (deviation of the paired differences).",
            runs(two_sample),
            runs(paired)
        );
    }
}

fn plots_section(out: &mut String, plots: &[(String, String)]) {
    if plots.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Plots\n");
    for (title, path) in plots {
        let _ = writeln!(out, "### {title}\n\n![{title}]({path})\n");
    }
}

fn power_note(comparison: &Comparison) -> String {
    match (comparison.underpowered, comparison.runs_needed) {
        (true, Some(needed)) => {
            let kind = if comparison.power_test == PowerTest::PairedT {
                " (paired by seed)"
            } else {
                ""
            };
            format!(" — underpowered: about {needed} runs per variation{kind} would detect this difference")
        }
        _ => String::new(),
    }
}

fn best_variation(analysis: &Analysis, metric: &MetricInfo) -> Option<(String, f64)> {
    analysis
        .variations
        .iter()
        .filter_map(|v| {
            v.metrics
                .get(&metric.name)
                .map(|m| (v.name.clone(), m.mean))
        })
        .max_by(|x, y| {
            if metric.goal == MetricGoal::Minimize {
                y.1.total_cmp(&x.1)
            } else {
                x.1.total_cmp(&y.1)
            }
        })
}
