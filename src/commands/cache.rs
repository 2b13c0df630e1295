//! `flotilla cache stats` and `flotilla cache prune`: the response cache of
//! a root (ARCHITECTURE.md, "Response cache"), read or pruned here, beside a
//! coordinator that may be running on it.

use clap::{Args, Subcommand};
use flotilla_coordinator::cache::manage::{self, CacheStats, Prune};
use flotilla_shared::clock::{now_ms, rfc3339};
use flotilla_shared::duration::parse_duration;
use flotilla_shared::money::dollars_words;

use super::args::RootArg;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// What the cache holds (entries and bytes by experiment and model) and
    /// what it saved (hits and dollars by experiment and model).
    Stats(StatsArgs),
    /// Remove recorded answers: those older than an age, recorded by an
    /// experiment, or of a model (all given conditions must hold). Runs that
    /// ask for them again call upstream and record them anew.
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Answers recorded longer ago than this: 30d, 12h, 90m.
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Answers recorded by this experiment's runs.
    #[arg(long, value_name = "NAME")]
    pub experiment: Option<String>,
    /// Answers of this model: provider/model, or the model by its provider's name.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
}

pub fn main(command: CacheCommand) -> anyhow::Result<i32> {
    match command {
        CacheCommand::Stats(args) => {
            let stats = manage::stats(&args.root.root)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print_stats(&stats);
            }
        }
        CacheCommand::Prune(args) => {
            let recorded_before_ms = match &args.older_than {
                None => None,
                Some(age) => {
                    let age =
                        parse_duration(age).map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
                    Some(now_ms() - age.as_millis() as i64)
                }
            };
            let pruned = manage::prune(
                &args.root.root,
                &Prune {
                    recorded_before_ms,
                    experiment: args.experiment,
                    model: args.model,
                },
            )?;
            println!(
                "pruned {} answers ({} bytes of requests and answers)",
                pruned.entries, pruned.bytes
            );
        }
    }
    Ok(0)
}

fn print_stats(stats: &CacheStats) {
    println!(
        "{} answers, {} bytes of requests and answers, {} bytes on disk",
        stats.entries, stats.stored_bytes, stats.file_bytes
    );
    if !stats.recorded.is_empty() {
        println!("\nrecorded by experiment and model:");
        for r in &stats.recorded {
            println!(
                "  {}  {}  {} answers  {} bytes  {} to {}",
                r.experiment,
                r.model,
                r.entries,
                r.bytes,
                &rfc3339(r.oldest_ms)[..10],
                &rfc3339(r.newest_ms)[..10]
            );
        }
    }
    let served: Vec<_> = stats.served.iter().filter(|s| s.hits > 0).collect();
    if !served.is_empty() {
        println!("\nanswered from the cache by experiment and model:");
        for s in served {
            println!(
                "  {}  {}  {} of {} calls  {} saved",
                s.experiment,
                s.model,
                s.hits,
                s.calls,
                dollars_words(s.saved_usd)
            );
        }
    }
}
