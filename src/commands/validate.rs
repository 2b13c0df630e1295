//! `flotilla validate`: check a file and show the grid it expands to.

use flotilla_shared::money::dollars_words;
use flotilla_wire::status::error_of;
use std::path::{Path, PathBuf};

use flotilla_shared::config::{substitute, ExperimentConfig, RunConfig};
use flotilla_shared::duration::format_duration;
use flotilla_shared::grid::{expand, run_seed, value_as_argument};
use flotilla_shared::naming::run_id;
use serde_json::json;

use clap::Args;

use super::args::{remote, ClientTlsArgs, TokenArg};
use super::submission::load_config;

#[derive(Args)]
pub struct ValidateArgs {
    /// The experiment file (YAML).
    pub file: PathBuf,
    /// Print the grid as JSON.
    #[arg(long)]
    pub json: bool,
    /// Forecast the rest of the experiment from its finished runs under this root.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Forecast the rest of the experiment from the finished runs this coordinator (HOST:PORT) knows.
    #[arg(long)]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// `flotilla validate`.
pub async fn main(args: ValidateArgs) -> anyhow::Result<i32> {
    let observed = match (args.root, args.coordinator) {
        (Some(root), _) => Observed::Root(root),
        (None, Some(address)) => Observed::Coordinator(remote(
            address,
            args.token,
            args.tls,
            PathBuf::from("./experiments"),
        )),
        (None, None) => Observed::Nothing,
    };
    validate(&args.file, args.json, observed).await
}

/// Where finished runs' costs come from, for a forecast.
pub enum Observed {
    Nothing,
    Root(std::path::PathBuf),
    Coordinator(super::client::Target),
}

pub async fn validate(file: &Path, as_json: bool, observed: Observed) -> anyhow::Result<i32> {
    let (config, _) = load_config(file)?;
    let grid = expand(&config);
    if as_json {
        let variations: Vec<_> = grid
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"index": i + 1, "axis_values": v.axis_values, "params": v.params}))
            .collect();
        let document = json!({
            "name": config.name,
            "hash": config.hash(),
            "variations": variations,
            "runs_per_variation": config.runs_per_variation,
            "total_runs": config.total_runs(),
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(0);
    }
    println!("{}: valid", file.display());
    println!("experiment: {}", config.name);
    if !config.description.is_empty() {
        println!("description: {}", config.description);
    }
    match &config.run {
        RunConfig::Command {
            command,
            workdir,
            timeout_ms,
            setup,
            teardown,
        } => {
            println!(
                "run: {} (workdir {}, timeout {})",
                command.join(" "),
                workdir,
                format_duration(std::time::Duration::from_millis(*timeout_ms))
            );
            for (name, hook) in [("setup", setup), ("teardown", teardown)] {
                if let Some(hook) = hook {
                    println!(
                        "{name}: {} (once per worker, timeout {})",
                        hook.command.join(" "),
                        format_duration(std::time::Duration::from_millis(hook.timeout_ms))
                    );
                }
            }
        }
        RunConfig::Noop { .. } => println!("run: noop"),
        RunConfig::Chat { chat, timeout_ms } => {
            let rules: Vec<&str> = chat.score.iter().map(|r| r.metric.as_str()).collect();
            println!(
                "run: chat with {} ({} message(s), {} more turn(s), max_tokens {}, timeout {}); scored: {}",
                chat.model,
                chat.messages.len(),
                chat.turns.len(),
                chat.max_tokens,
                format_duration(std::time::Duration::from_millis(*timeout_ms)),
                if rules.is_empty() { "tokens, cost and latency only".to_string() } else { rules.join(", ") }
            );
        }
    }
    for axis in &config.variations {
        let labels: Vec<String> = (0..axis.values.len())
            .map(|i| value_as_argument(&axis.label_of(i)))
            .collect();
        match &axis.cases {
            Some(source) => println!(
                "cases ({} from {source}): {}",
                axis.values.len(),
                labels.join(", ")
            ),
            None => println!("axis {}: {}", axis.param, labels.join(", ")),
        }
    }
    println!(
        "{} variation(s) x {} run(s) = {} runs, {} attempt(s) at most each",
        grid.len(),
        config.runs_per_variation,
        config.total_runs(),
        config.retries.max_attempts
    );
    for (index, variation) in grid.iter().enumerate() {
        let cells: Vec<String> = variation
            .axis_values
            .iter()
            .map(|(k, v)| format!("{k}={}", value_as_argument(v)))
            .collect();
        let label = run_id(index as u32 + 1, 1);
        let label = label.split("-run").next().unwrap_or(&label);
        println!(
            "  {label}  {}",
            if cells.is_empty() {
                "(base parameters)".to_string()
            } else {
                cells.join("  ")
            }
        );
    }
    println!("{}", worst_case(&config));
    if let Some(line) = tier_line(&config.tier) {
        println!("{line}");
    }
    if let Some(line) = sampling_line(&config) {
        println!("{line}");
    }
    for line in cache_lines(&config, &observed).await? {
        println!("{line}");
    }
    let seen = match observed {
        Observed::Nothing => None,
        Observed::Root(root) => from_root(&root, &config)?,
        Observed::Coordinator(target) => from_coordinator(&target, &config).await?,
    };
    if let Some(seen) = seen {
        for line in forecast_lines(&config, &seen) {
            println!("{line}");
        }
    }
    Ok(0)
}

/// What adaptive sampling does, and the most it can run; nothing for a fixed sweep.
fn sampling_line(config: &ExperimentConfig) -> Option<String> {
    use flotilla_shared::config::SamplingQuestion;
    let sampling = config.sampling.as_ref()?;
    let stops = match sampling.question {
        SamplingQuestion::Best => "a variation once another is shown better on it, until one remains".to_string(),
        SamplingQuestion::Baseline { min_effect: None } => {
            "each variation once it is shown better or worse than the baseline".to_string()
        }
        SamplingQuestion::Baseline { min_effect: Some(d) } => format!(
            "each variation once it is shown better or worse than the baseline by more than {d}, or within {d} of it"
        ),
        SamplingQuestion::Precision { width } => {
            format!("each variation once its mean is known to ± {width}")
        }
    };
    Some(format!(
        "sampling: adaptive on {} (question: {}, alpha {} over all decisions, at least {} runs each); \
         stops sampling {stops}; at most {} runs, as a fixed sweep, the worst case above",
        sampling.metric,
        sampling.question.name(),
        sampling.alpha,
        sampling.min_runs,
        config.total_runs()
    ))
}

/// What `tier: flex` does, or nothing at the standard tier.
fn tier_line(tier: &flotilla_shared::tier::TierPolicy) -> Option<String> {
    use flotilla_shared::tier::{Tier, TierFallback};
    if tier.tier == Tier::Standard {
        return None;
    }
    let refused = match tier.fallback {
        TierFallback::Standard => "is sent again at once at the standard tier and price",
        TierFallback::Wait => "waits and asks the flex tier again, for up to 15 minutes in all",
    };
    Some(format!(
        "tier: flex; chat calls to models the worker's providers file lists under tiers.flex go at \
         the flex tier (slower, priced at its flex prices, as each answer reports its tier); \
         a call the tier refuses for capacity {refused}; other calls go at the standard tier"
    ))
}

/// What the response cache holds of the planned calls (ARCHITECTURE.md,
/// "Response cache"): for chat runs, exactly which first calls are
/// recorded; for any run, the answers recorded under its seeds by earlier
/// experiments (programs that make the same calls get them for nothing).
async fn cache_lines(
    config: &ExperimentConfig,
    observed: &Observed,
) -> anyhow::Result<Vec<String>> {
    use flotilla_shared::cache::CacheMode;
    let mode = config.cache.mode;
    if mode == CacheMode::Off {
        return Ok(vec![
            "cache: off; every call goes upstream and nothing is recorded".into(),
        ]);
    }
    let keys = planned_first_calls(config);
    let seeds: Vec<u64> = (1..=config.runs_per_variation)
        .map(|repetition| run_seed(config.seed, repetition))
        .collect();
    let oldest_ms = config
        .cache
        .oldest_usable_ms(flotilla_shared::clock::now_ms())
        .unwrap_or(0);
    let (recorded, under_seeds, seeds_with_answers) = match observed {
        Observed::Nothing => return Ok(Vec::new()),
        Observed::Root(root) => {
            if !flotilla_coordinator::cache::db::path(root).exists() {
                return Ok(vec![format!(
                    "cache: nothing recorded under {} yet",
                    root.display()
                )]);
            }
            let cache = flotilla_coordinator::cache::db::open_read_only(root)?;
            let recorded = flotilla_coordinator::cache::db::count(&cache, &keys, oldest_ms)?;
            let (answers, with) =
                flotilla_coordinator::cache::db::under_seeds(&cache, &seeds, oldest_ms)?;
            (recorded, answers, with)
        }
        Observed::Coordinator(target) => {
            let token = super::client_token(target.token_file.as_deref(), &target.root)?;
            let channel = super::client::channel(&target.address, &target.tls).await?;
            let token = tonic::metadata::MetadataValue::try_from(token.as_str())
                .map_err(|_| anyhow::anyhow!("the token must be printable ASCII"))?;
            let mut client =
                flotilla_wire::proto::cache_service_client::CacheServiceClient::with_interceptor(
                    channel,
                    super::client::AddToken::new(token),
                );
            let reply = client
                .count(flotilla_wire::proto::CacheCount {
                    keys: keys.iter().map(|key| key.to_vec()).collect(),
                    oldest_ms,
                    seeds: seeds.clone(),
                })
                .await
                .map_err(error_of)?
                .into_inner();
            (reply.recorded, reply.under_seeds, reply.seeds_with_answers)
        }
    };
    let mut lines = Vec::new();
    if let RunConfig::Chat { chat, .. } = &config.run {
        let single_call = chat.turns.is_empty()
            && !chat
                .score
                .iter()
                .any(|rule| matches!(rule.rule, flotilla_shared::config::Rule::Judge { .. }));
        lines.push(if single_call {
            format!(
                "cache: {recorded} of the {} planned calls are recorded and would be answered for nothing",
                keys.len()
            )
        } else {
            format!(
                "cache: the first calls of {recorded} of {} runs are recorded and would be answered for nothing; later turns and judges follow their answers",
                keys.len()
            )
        });
    }
    lines.push(format!(
        "cache: {under_seeds} answers recorded under the seeds of {seeds_with_answers} of the {} repetitions; calls identical to them are answered for nothing",
        seeds.len()
    ));
    if mode == CacheMode::Replay && (recorded as usize) < keys.len() {
        lines.push("cache: replay; calls with no recorded answer will fail".into());
    }
    Ok(lines)
}

/// The keys of the first call of every run of a chat experiment, as its
/// gateway will compute them; none for other kinds.
fn planned_first_calls(config: &ExperimentConfig) -> Vec<[u8; 32]> {
    use flotilla_gateway::cache::key::{cache_key, canonical_request, request_digest, Addressee};
    let RunConfig::Chat { chat, .. } = &config.run else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (index, variation) in expand(config).iter().enumerate() {
        let variation_index = index as u32 + 1;
        for repetition in 1..=config.runs_per_variation {
            let seed = run_seed(config.seed, repetition);
            let render = |template: &str| {
                substitute(template, |name| {
                    variation
                        .params
                        .get(name)
                        .map(value_as_argument)
                        .or_else(|| match name {
                            "seed" => Some(seed.to_string()),
                            "run_id" => Some(run_id(variation_index, repetition)),
                            "variation" => Some(variation_index.to_string()),
                            "repetition" => Some(repetition.to_string()),
                            "attempt" => Some("1".to_string()),
                            _ => None,
                        })
                })
            };
            let Ok((model, messages)) = chat.opening(render) else {
                continue;
            };
            // Bare names go to the workers' default provider, unknown here.
            let Some((provider, name)) = model.split_once('/') else {
                continue;
            };
            let body = chat.request_body(&model, &messages);
            let to = Addressee {
                operation: flotilla_gateway::call::Operation::OpenAiChat,
                provider,
                model: name,
            };
            keys.push(cache_key(to, &request_digest(&canonical_request(&body)), seed, 0).0);
        }
    }
    keys
}

/// The most the experiment can cost: every run at its per-run cap.
fn worst_case(config: &flotilla_shared::config::ExperimentConfig) -> String {
    let runs = config.total_runs();
    match &config.budget {
        Some(budget) => match budget.per_run_usd {
            Some(per_run) => {
                let worst = runs as f64 * per_run;
                format!(
                    "cost: worst case {} ({runs} runs × {} per run); budget {}{}",
                    dollars_words(worst),
                    dollars_words(per_run),
                    dollars_words(budget.total_usd),
                    if worst > budget.total_usd {
                        " — the budget may stop it before every run has run"
                    } else {
                        ""
                    }
                )
            }
            None => format!(
                "cost: no per-run cap (budget.per_run_usd): a run may spend up to the whole budget, {}",
                dollars_words(budget.total_usd)
            ),
        },
        None => "cost: no budget: nothing limits what the runs may spend (set budget.total_usd and budget.per_run_usd)".to_string(),
    }
}

/// What finished runs cost, and how far the experiment got.
struct Seen {
    observed: Option<flotilla_report::forecast::ObservedCosts>,
    finished_runs: u64,
    spent_usd: f64,
    /// The coordinator's ledger: what is neither spent nor reserved.
    left_usd: Option<f64>,
}

fn from_root(
    root: &Path,
    config: &flotilla_shared::config::ExperimentConfig,
) -> anyhow::Result<Option<Seen>> {
    if !root.join(&config.name).is_dir() {
        println!(
            "forecast: no runs of {} under {} yet",
            config.name,
            root.display()
        );
        return Ok(None);
    }
    let data = flotilla_coordinator::reports::read_experiment(root, &config.name)?;
    let finished: Vec<&flotilla_report::data::RunData> = data
        .runs
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                flotilla_shared::status::RunStatus::Succeeded
                    | flotilla_shared::status::RunStatus::Failed
            )
        })
        .collect();
    let costs: Vec<f64> = finished.iter().filter_map(|r| r.cost_usd()).collect();
    let spent: f64 = data.runs.iter().filter_map(|r| r.cost_usd()).sum();
    Ok(Some(Seen {
        observed: flotilla_report::forecast::ObservedCosts::of(&costs),
        finished_runs: finished.len() as u64,
        spent_usd: spent,
        left_usd: None,
    }))
}

async fn from_coordinator(
    target: &super::client::Target,
    config: &flotilla_shared::config::ExperimentConfig,
) -> anyhow::Result<Option<Seen>> {
    let mut client = super::client::connect_target(target).await?;
    let reply = match client
        .status(flotilla_wire::proto::StatusRequest {
            name: config.name.clone(),
            events: false,
        })
        .await
    {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            println!(
                "forecast: the coordinator has no experiment {} yet",
                config.name
            );
            return Ok(None);
        }
        Err(status) => return Err(error_of(status).into()),
    };
    let Some(experiment) = reply.experiments.into_iter().next() else {
        return Ok(None);
    };
    let counts = experiment.counts.unwrap_or_default();
    let finished = counts.succeeded + counts.failed;
    let observed = match &experiment.budget {
        Some(budget) if budget.observed_attempts > 0 => {
            Some(flotilla_report::forecast::ObservedCosts {
                runs: budget.observed_attempts,
                mean_usd: budget.mean_cost_usd,
                sd_usd: budget.cost_sd_usd,
            })
        }
        // Without a ledger only the total is known: a mean, no spread.
        _ => (finished > 0).then(|| flotilla_report::forecast::ObservedCosts {
            runs: finished,
            mean_usd: experiment.spent_usd / finished as f64,
            sd_usd: None,
        }),
    };
    Ok(Some(Seen {
        observed,
        finished_runs: finished,
        spent_usd: experiment.spent_usd,
        left_usd: experiment.budget.as_ref().map(|b| b.left_usd),
    }))
}

fn forecast_lines(config: &flotilla_shared::config::ExperimentConfig, seen: &Seen) -> Vec<String> {
    use flotilla_report::forecast::{forecast, Outlook};
    let Some(observed) = seen.observed else {
        return vec![format!(
            "forecast: {} runs finished, none with a cost yet: nothing to forecast from",
            seen.finished_runs
        )];
    };
    let remaining = config.total_runs().saturating_sub(seen.finished_runs);
    let left = seen.left_usd.or_else(|| {
        config
            .budget
            .as_ref()
            .map(|b| (b.total_usd - seen.spent_usd).max(0.0))
    });
    let f = forecast(observed, remaining, seen.spent_usd, left);
    let interval = f
        .interval_usd
        .map(|[low, high]| {
            format!(
                " (95% interval {}–{})",
                dollars_words(low),
                dollars_words(high)
            )
        })
        .unwrap_or_else(|| " (no interval: one observed cost, or only their total)".to_string());
    let mut lines = vec![format!(
        "forecast from {} finished runs at {} per run on average: the {remaining} remaining runs would cost {}{interval}; {} spent so far, {} expected in all",
        observed.runs,
        dollars_words(observed.mean_usd),
        dollars_words(f.expected_remaining_usd),
        dollars_words(seen.spent_usd),
        dollars_words(f.expected_final_usd)
    )];
    if let Some(budget) = &f.budget {
        let affordable = budget
            .runs_affordable
            .map(|runs| format!("; it pays for about {runs} more runs"))
            .unwrap_or_default();
        let outlook = match budget.outcome {
            Outlook::WillRunOut => {
                format!("will likely run out before the {remaining} remaining runs")
            }
            Outlook::MayRunOut => "may run out".to_string(),
            Outlook::WillLast => "will likely last".to_string(),
        };
        lines.push(format!(
            "budget: {} left, {outlook}{affordable}",
            dollars_words(budget.left_usd)
        ));
    }
    lines
}
