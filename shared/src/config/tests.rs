use super::*;

const GOOD: &str = r#"name: model-comparison
description: "which strategies cooperate?"
run:
  kind: command
  command: ["python3", "scenario.py", "--rounds", "{rounds}", "--seed", "{seed}"]
  workdir: .
  timeout: 10m
params:
  rounds: 10
  actors.regulator.model: sim/tit-for-tat
variations:
  - param: actors.regulator.model
    values: [sim/tit-for-tat, sim/always-defect]
  - param: temperature
    values: [0.2, 0.8]
runs_per_variation: 10
seed: 42
max_parallel: 8
budget: {total_usd: 50.0, per_run_usd: 2.0}
retries: {max_attempts: 3}
continue_on_error: true
baseline: {temperature: 0.2, actors.regulator.model: sim/tit-for-tat}
metrics:
  - {name: cooperation_rate, goal: maximize}
"#;

fn error_of(yaml: &str) -> ConfigError {
    parse_experiment(yaml, "exp.yaml").unwrap_err()
}

#[test]
fn parses_the_design_example() {
    let config = parse_experiment(GOOD, "exp.yaml").unwrap();
    assert_eq!(config.name, "model-comparison");
    assert_eq!(config.total_runs(), 40);
    assert_eq!(config.run.timeout(), Duration::from_secs(600));
    assert_eq!(config.retries.max_attempts, 3);
    assert_eq!(config.metrics[0].goal, Goal::Maximize);
}

#[test]
fn hash_is_stable_and_ignores_formatting() {
    let a = parse_experiment(GOOD, "a.yaml").unwrap();
    let reformatted = GOOD.replace("seed: 42", "seed:    42   # same");
    let b = parse_experiment(&reformatted, "b.yaml").unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.hash().len(), 64);
    let c = parse_experiment(&GOOD.replace("seed: 42", "seed: 43"), "c.yaml").unwrap();
    assert_ne!(a.hash(), c.hash());
    assert_eq!(
        ExperimentConfig::from_canonical_json(&a.canonical_json()).unwrap(),
        a
    );
}

#[test]
fn unknown_field_names_line_column_and_valid_fields() {
    let error = error_of("name: x\nrun: {kind: noop}\nrepeats: 3\n");
    assert_eq!(error.line, 3);
    assert_eq!(error.column, 1);
    let text = error.to_string();
    assert!(text.starts_with("exp.yaml:3:1:"), "{text}");
    assert!(text.contains("repeats"), "{text}");
    assert!(text.contains("runs_per_variation"), "{text}");
}

#[test]
fn empty_axis_is_refused_where_it_stands() {
    let error = error_of("name: x\nrun: {kind: noop}\nvariations:\n  - param: a\n    values: []\n");
    assert_eq!(error.field, "variations[0].values");
    assert_eq!(error.line, 5);
    assert!(error.message.contains("at least one value"));
}

#[test]
fn duplicate_axis_values_are_refused() {
    let error = error_of(
        "name: x\nrun: {kind: noop}\nvariations:\n  - param: a\n    values: [0.2, 0.8, 0.2]\n",
    );
    assert_eq!(error.field, "variations[0].values[2]");
    assert_eq!((error.line, error.column), (5, 24));
    assert!(error.message.contains("duplicate value 0.2"));
}

#[test]
fn bad_durations_say_what_is_valid() {
    let error = error_of("name: x\nrun:\n  kind: noop\n  timeout: 10 minutes\n");
    assert_eq!(error.field, "run.timeout");
    assert_eq!(error.line, 4);
    assert!(error.message.contains("valid units"), "{}", error.message);
}

#[test]
fn unknown_placeholders_are_refused() {
    let error = error_of("name: x\nrun:\n  kind: command\n  command: [echo, \"{rounds}\", \"{nope}\"]\nparams: {rounds: 3}\n");
    assert_eq!(error.field, "run.command[2]");
    assert!(error.message.contains("unknown placeholder {nope}"));
    assert!(error.message.contains("rounds"));
}

#[test]
fn names_that_escape_the_root_are_refused() {
    for name in ["../x", "/abs", "a/b"] {
        let error = error_of(&format!("name: \"{name}\"\nrun: {{kind: noop}}\n"));
        assert_eq!(error.field, "name");
        assert_eq!(error.line, 1);
    }
}

#[test]
fn unknown_run_kind_lists_valid_kinds() {
    let error = error_of("name: x\nrun: {kind: shell}\n");
    assert_eq!(error.field, "run.kind");
    assert!(error.message.contains("command"));
}

#[test]
fn baseline_must_name_axis_values() {
    let error = error_of(
        "name: x\nrun: {kind: noop}\nvariations: [{param: a, values: [1, 2]}]\nbaseline: {a: 3}\n",
    );
    assert_eq!(error.field, "baseline");
    assert!(error.message.contains("not a value of axis"));
}

#[test]
fn zero_repetitions_are_refused() {
    let error = error_of("name: x\nrun: {kind: noop}\nruns_per_variation: 0\n");
    assert_eq!(error.field, "runs_per_variation");
}

#[test]
fn yaml_syntax_errors_are_located() {
    let error = error_of("name: x\nrun: {kind: noop\n");
    assert!(error.line >= 2, "{error}");
}

#[test]
fn extension_and_conflict_are_told_apart() {
    let base = parse_experiment(GOOD, "a.yaml").unwrap();
    let more_runs = parse_experiment(
        &GOOD.replace("runs_per_variation: 10", "runs_per_variation: 12"),
        "a.yaml",
    )
    .unwrap();
    assert_eq!(compare_configs(&base, &more_runs), ConfigChange::Extension);
    let more_values = parse_experiment(
        &GOOD.replace("values: [0.2, 0.8]", "values: [0.2, 0.8, 1.0]"),
        "a.yaml",
    )
    .unwrap();
    assert_eq!(
        compare_configs(&base, &more_values),
        ConfigChange::Extension
    );
    assert_eq!(
        compare_configs(&base, &base.clone()),
        ConfigChange::Identical
    );

    let fewer_values = parse_experiment(
        &GOOD.replace("values: [0.2, 0.8]", "values: [0.2, 0.9]"),
        "a.yaml",
    )
    .unwrap();
    assert!(matches!(
        compare_configs(&base, &fewer_values),
        ConfigChange::Conflict(_)
    ));
    let changed = parse_experiment(
        &GOOD
            .replace("rounds: 10", "rounds: 11")
            .replace("timeout: 10m", "timeout: 5m"),
        "a.yaml",
    )
    .unwrap();
    match compare_configs(&base, &changed) {
        ConfigChange::Conflict(fields) => {
            assert!(fields.contains(&"params.rounds".to_string()), "{fields:?}");
            assert!(fields.contains(&"run.timeout_ms".to_string()), "{fields:?}");
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    let fewer_runs = parse_experiment(
        &GOOD.replace("runs_per_variation: 10", "runs_per_variation: 5"),
        "a.yaml",
    )
    .unwrap();
    assert!(matches!(
        compare_configs(&base, &fewer_runs),
        ConfigChange::Conflict(_)
    ));
}

#[test]
fn substitution_renders_values_and_escapes() {
    let rendered = substitute("--x={a} {{literal}}", |name| {
        (name == "a").then(|| "7".to_string())
    })
    .unwrap();
    assert_eq!(rendered, "--x=7 {literal}");
}

#[test]
fn run_models_must_name_a_provider() {
    let config = parse_experiment(
        "name: m\nrun: {kind: noop, models: [ollama/llama3.2]}\nparams: {judge: ollama/qwen, other: sim/echo}\n",
        "m.yaml",
    )
    .unwrap();
    assert_eq!(config.models, vec!["ollama/llama3.2".to_string()]);
    let required = config.required_models(
        &serde_json::from_str(r#"{"judge": "ollama/qwen:latest", "x": "data/a.csv"}"#).unwrap(),
    );
    assert_eq!(
        required.into_iter().collect::<Vec<_>>(),
        vec!["ollama/llama3.2", "ollama/qwen"]
    );
    let error =
        parse_experiment("name: m\nrun: {kind: noop, models: [llama3.2]}\n", "m.yaml").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("run.models[0]: 'llama3.2' is not provider/model"),
        "{error}"
    );
}

#[test]
fn inline_cases_set_their_fields_and_are_labelled_by_id_or_place() {
    let config = parse_experiment(
        "name: e\nrun: {kind: noop}\nvariations:\n  - cases: [{id: easy, q: 1}, {q: 2, actors.a.model: sim/echo}]\n  - param: t\n    values: [0.1, 0.9]\nbaseline: {case: easy, t: 0.1}\n",
        "e.yaml",
    )
    .unwrap();
    let axis = &config.variations[0];
    assert_eq!(axis.cases.as_deref(), Some("inline"));
    assert_eq!(axis.label_of(1), Value::from("case-2"));
    let grid = crate::grid::expand(&config);
    assert_eq!(grid.len(), 4);
    assert_eq!(grid[2].params["actors.a.model"], "sim/echo");
    assert_eq!(grid[2].axis_values["case"], "case-2");
    assert!(config.named_models().contains("sim/echo"));
    // Without cases the canonical form, and so the hash, is what it was.
    assert!(!parse_experiment(GOOD, "e.yaml")
        .unwrap()
        .canonical_json()
        .contains("cases"));
}

#[test]
fn an_axis_is_a_param_with_values_or_cases_and_bad_cases_are_located() {
    let mixed =
        error_of("name: e\nrun: {kind: noop}\nvariations:\n  - param: t\n    cases: [{q: 1}]\n");
    assert_eq!(mixed.field, "variations[0]");
    assert!(
        mixed.message.contains("either `param` with `values`"),
        "{mixed}"
    );
    let not_object = error_of("name: e\nrun: {kind: noop}\nvariations:\n  - cases: [{q: 1}, 7]\n");
    assert_eq!(not_object.field, "variations[0].cases[1]");
    assert_eq!(not_object.line, 4);
    let missing = error_of("name: e\nrun: {kind: noop}\nvariations:\n  - cases: nowhere.csv\n");
    assert!(missing.message.contains("cannot read"), "{missing}");
}

#[test]
fn setup_and_teardown_are_a_command_or_a_command_with_a_timeout() {
    let config = parse_experiment(
        "name: e\nrun:\n  kind: command\n  command: [sh, run.sh]\n  setup: [sh, prepare.sh]\n  teardown: {command: [sh, clean.sh], timeout: 90s}\n",
        "e.yaml",
    )
    .unwrap();
    let RunConfig::Command {
        setup, teardown, ..
    } = &config.run
    else {
        panic!("a command run")
    };
    assert_eq!(setup.as_ref().unwrap().timeout_ms, DEFAULT_HOOK_TIMEOUT_MS);
    assert_eq!(teardown.as_ref().unwrap().timeout_ms, 90_000);
    let bad = error_of(
        "name: e\nrun:\n  kind: command\n  command: [sh]\n  setup: {command: [sh], after: 1s}\n",
    );
    assert_eq!(bad.field, "run.setup.after");
    let empty = error_of("name: e\nrun:\n  kind: command\n  command: [sh]\n  teardown: []\n");
    assert!(empty.message.contains("must name a program"), "{empty}");
}

#[test]
fn the_cache_is_a_mode_or_a_mode_with_a_maximum_age() {
    use crate::cache::{CacheMode, CachePolicy};
    let cache_of = |line: &str| {
        parse_experiment(&format!("name: e\nrun: {{kind: noop}}\n{line}"), "e.yaml")
            .unwrap()
            .cache
    };
    let default = parse_experiment("name: e\nrun: {kind: noop}\n", "e.yaml").unwrap();
    assert_eq!(default.cache, CachePolicy::default());
    assert!(
        !default.canonical_json().contains("cache"),
        "the default leaves the hash of older experiments alone"
    );
    assert_eq!(cache_of("cache: off\n").mode, CacheMode::Off);
    assert_eq!(cache_of("cache: replay\n").mode, CacheMode::Replay);
    assert_eq!(
        cache_of("cache: {mode: read_only, max_age: 30d}\n"),
        CachePolicy {
            mode: CacheMode::ReadOnly,
            max_age_ms: Some(30 * 86_400_000)
        }
    );
    assert_eq!(
        cache_of("cache: {max_age: 12h}\n").mode,
        CacheMode::ReadWrite
    );
    let wrong = error_of("name: e\nrun: {kind: noop}\ncache: sometimes\n");
    assert_eq!((wrong.field.as_str(), wrong.line), ("cache", 3));
    assert!(
        wrong.message.contains("read_write, off, read_only, replay"),
        "{wrong}"
    );
    let age = error_of("name: e\nrun: {kind: noop}\ncache: {mode: off, max_age: 1d}\n");
    assert!(age.message.contains("needs a mode that reads"), "{age}");
    let unknown = error_of("name: e\nrun: {kind: noop}\ncache: {mode: off, ttl: 1d}\n");
    assert!(
        unknown.message.contains("valid fields are mode, max_age"),
        "{unknown}"
    );
}

#[test]
fn the_tier_is_standard_unless_flex_is_asked_for_with_its_fallback() {
    use crate::tier::{TierFallback, TierPolicy};
    let tier_of = |lines: &str| {
        parse_experiment(&format!("name: e\nrun: {{kind: noop}}\n{lines}"), "e.yaml")
            .unwrap()
            .tier
    };
    let default = parse_experiment("name: e\nrun: {kind: noop}\n", "e.yaml").unwrap();
    assert!(default.tier.is_default());
    assert!(
        !default.canonical_json().contains("tier"),
        "the default leaves the hash of older experiments alone"
    );
    assert_eq!(
        tier_of("tier: flex\n"),
        TierPolicy::flex(TierFallback::Standard)
    );
    assert_eq!(
        tier_of("tier: flex\nfallback: wait\n"),
        TierPolicy::flex(TierFallback::Wait)
    );
    assert_eq!(tier_of("tier: standard\n"), TierPolicy::default());
    let wrong = error_of("name: e\nrun: {kind: noop}\ntier: batch\n");
    assert_eq!((wrong.field.as_str(), wrong.line), ("tier", 3));
    assert!(wrong.message.contains("valid: standard, flex"), "{wrong}");
    let fallback = error_of("name: e\nrun: {kind: noop}\ntier: flex\nfallback: later\n");
    assert_eq!((fallback.field.as_str(), fallback.line), ("fallback", 4));
    assert!(
        fallback.message.contains("valid: standard, wait"),
        "{fallback}"
    );
    let alone = error_of("name: e\nrun: {kind: noop}\nfallback: wait\n");
    assert!(alone.message.contains("needs tier: flex"), "{alone}");
}

#[test]
fn adaptive_sampling_names_its_metric_question_and_error_rate() {
    use super::{Sampling, SamplingQuestion};
    const BASE: &str = "name: e\nrun: {kind: noop}\nvariations:\n  - {param: p, values: [1, 2, 3]}\n\
                        runs_per_variation: 200\nmetrics:\n  - {name: score, goal: maximize, range: [0, 10]}\n  - {name: cost, goal: minimize}\n";
    let sampling_of = |lines: &str| {
        parse_experiment(&format!("{BASE}{lines}"), "e.yaml")
            .unwrap()
            .sampling
    };
    let fixed = parse_experiment(BASE, "e.yaml").unwrap();
    assert_eq!(fixed.sampling, None);
    assert!(!fixed.canonical_json().contains("sampling"));
    assert_eq!(fixed.metrics[0].range, Some([0.0, 10.0]));
    assert_eq!(sampling_of("sampling: {mode: fixed}\n"), None);
    assert_eq!(
        sampling_of("sampling: {mode: adaptive, metric: score}\n"),
        Some(Sampling {
            metric: "score".into(),
            question: SamplingQuestion::Best,
            alpha: 0.05,
            min_runs: 5,
        })
    );
    assert_eq!(
        sampling_of(
            "sampling: {mode: adaptive, metric: cost, question: precision, width: 0.1, alpha: 0.01, min_runs: 10}\n"
        )
        .unwrap(),
        Sampling {
            metric: "cost".into(),
            question: SamplingQuestion::Precision { width: 0.1 },
            alpha: 0.01,
            min_runs: 10,
        }
    );
    let with_baseline = format!(
        "{BASE}baseline: {{p: 1}}\nsampling: {{mode: adaptive, metric: score, question: baseline, min_effect: 0.5}}\n"
    );
    assert_eq!(
        parse_experiment(&with_baseline, "e.yaml")
            .unwrap()
            .sampling
            .unwrap()
            .question,
        SamplingQuestion::Baseline {
            min_effect: Some(0.5)
        }
    );
    let wrong = |lines: &str| error_of(&format!("{BASE}{lines}"));
    let unknown = wrong("sampling: {mode: adaptive, metric: accuracy}\n");
    assert_eq!(unknown.field, "sampling.metric");
    assert!(
        unknown.message.contains("declared: score, cost"),
        "{unknown}"
    );
    let unnamed = wrong("sampling: {mode: adaptive}\n");
    assert!(unnamed.message.contains("name the metric"), "{unnamed}");
    let no_width = wrong("sampling: {mode: adaptive, metric: score, question: precision}\n");
    assert!(no_width.message.contains("needs width"), "{no_width}");
    let stray = wrong("sampling: {mode: adaptive, metric: score, width: 0.1}\n");
    assert!(
        stray.message.contains("applies to question: precision"),
        "{stray}"
    );
    let no_baseline = wrong("sampling: {mode: adaptive, metric: score, question: baseline}\n");
    assert!(
        no_baseline.message.contains("needs baseline:"),
        "{no_baseline}"
    );
    let alpha = wrong("sampling: {mode: adaptive, metric: score, alpha: 5}\n");
    assert!(alpha.message.contains("between 0 and 0.5"), "{alpha}");
    let min_runs = wrong("sampling: {mode: adaptive, metric: score, min_runs: 500}\n");
    assert!(
        min_runs.message.contains("runs_per_variation (200)"),
        "{min_runs}"
    );
    let mode = wrong("sampling: {mode: clever}\n");
    assert!(mode.message.contains("valid: fixed, adaptive"), "{mode}");
    let fixed_with = wrong("sampling: {metric: score}\n");
    assert!(
        fixed_with.message.contains("applies to mode: adaptive"),
        "{fixed_with}"
    );
    let range = error_of(&BASE.replace("range: [0, 10]", "range: [10, 0]"));
    assert_eq!(range.field, "metrics[0].range");
    let one = error_of(
        "name: e\nrun: {kind: noop}\nruns_per_variation: 10\nmetrics: [{name: s, goal: maximize}]\nsampling: {mode: adaptive}\n",
    );
    assert!(one.message.contains("has one"), "{one}");
    let single = error_of(&format!(
        "{}sampling: {{mode: adaptive, metric: score}}\n",
        BASE.replace("runs_per_variation: 200", "runs_per_variation: 1")
    ));
    assert!(single.message.contains("at least 2"), "{single}");
}
