//! Submitting an experiment: create it, resume it, extend it, or refuse a
//! changed config (ARCHITECTURE.md, "Experiments and runs").

use flotilla_shared::config::{compare_configs, ConfigChange, ExperimentConfig};
use flotilla_shared::grid::expand;
use flotilla_shared::status::SubmitOutcome;
use flotilla_shared::{Error, Result};

use crate::store::{ExperimentRow, Write};

use super::{
    Experiment, ExperimentState, Outbox, RunEntry, RunStatus, State, VariationEntry, WorkdirRef,
};

#[derive(Debug, Clone)]
pub struct Submission {
    pub config: ExperimentConfig,
    pub config_yaml: String,
    pub workdir: Option<WorkdirRef>,
    /// Also re-run runs that failed for good earlier.
    pub retry_failed: bool,
}

/// What a submission did.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub index: usize,
    pub outcome: SubmitOutcome,
    pub total_runs: u64,
    pub runs_to_do: u64,
}

impl State {
    /// Submits an experiment's stored config again: what `flotilla resume` does.
    pub fn resume(
        &mut self,
        name: &str,
        retry_failed: bool,
        now_ms: i64,
        outbox: &mut Outbox,
    ) -> Result<Submitted> {
        let experiment = self
            .experiment(name)
            .ok_or_else(|| Error::NotFound(format!("no experiment named '{name}'")))?;
        let submission = Submission {
            config: experiment.config.clone(),
            config_yaml: experiment.config_yaml.clone(),
            workdir: experiment.workdir.clone(),
            retry_failed,
        };
        self.submit(submission, now_ms, outbox)
    }

    pub fn submit(
        &mut self,
        submission: Submission,
        now_ms: i64,
        outbox: &mut Outbox,
    ) -> Result<Submitted> {
        let Some(&index) = self.by_name.get(&submission.config.name) else {
            return Ok(self.create(submission, now_ms, outbox));
        };
        let change = compare_configs(&self.experiments[index].config, &submission.config);
        let outcome = match change {
            ConfigChange::Conflict(fields) => {
                let experiment = &self.experiments[index];
                return Err(Error::Conflict(format!(
                    "experiment '{}' already exists with a different config (hash {}); changed: {}. \
                     Give the new config another name, or change only runs_per_variation (up), axis values (added) and budget.total_usd (up) to extend it",
                    experiment.config.name,
                    &experiment.hash[..12],
                    fields.join(", ")
                )));
            }
            ConfigChange::Extension => {
                self.extend(index, &submission, outbox);
                SubmitOutcome::Extended
            }
            ConfigChange::Identical => SubmitOutcome::Resumed,
        };
        let experiment = &mut self.experiments[index];
        experiment.workdir = submission.workdir.clone();
        let mut reopened = Vec::new();
        for slot in 0..experiment.runs.len() {
            let status = experiment.runs[slot].status;
            if status == RunStatus::Cancelled
                || (submission.retry_failed && status == RunStatus::Failed)
            {
                experiment.set_status(slot, RunStatus::Pending);
                let run = &mut experiment.runs[slot];
                run.restart_attempts();
                reopened.push((run.variation, run.repetition));
            }
        }
        if !reopened.is_empty() {
            outbox.writes.push(Write::RunStatus {
                experiment_id: experiment.db_id,
                runs: reopened,
                status: RunStatus::Pending,
            });
        }
        let has_work = experiment.counts.pending > 0 || experiment.counts.running > 0;
        let outcome = if outcome == SubmitOutcome::Resumed && !has_work {
            SubmitOutcome::Unchanged
        } else {
            outcome
        };
        if has_work {
            experiment.state = ExperimentState::Running;
            experiment.stopping = None;
            experiment.refused_for_budget = 0;
            experiment.setup_failed.clear();
            experiment.finalizing = None;
            experiment.finished_at_ms = None;
        }
        outbox
            .writes
            .push(Write::Experiment(Box::new(ExperimentRow::of(experiment))));
        Ok(Submitted {
            index,
            outcome,
            total_runs: experiment.runs.len() as u64,
            runs_to_do: experiment.counts.pending,
        })
    }

    fn create(&mut self, submission: Submission, now_ms: i64, outbox: &mut Outbox) -> Submitted {
        let config = submission.config;
        let grid = expand(&config);
        let variations: Vec<VariationEntry> = grid
            .iter()
            .enumerate()
            .map(|(i, v)| VariationEntry::from_grid(i as u32 + 1, v))
            .collect();
        let db_id = self.experiments.iter().map(|e| e.db_id).max().unwrap_or(0) + 1;
        let mut experiment = Experiment::new(
            db_id,
            config.clone(),
            submission.config_yaml,
            config.hash(),
            self.root.join(&config.name).into(),
            submission.workdir,
            variations.clone(),
            now_ms,
        );
        // Repetition-major order: an interrupted sweep has every variation equally covered.
        let repetitions = experiment.config.runs_per_variation;
        experiment.reserve_runs(variations.len() * repetitions as usize);
        for repetition in 1..=repetitions {
            for variation in &variations {
                experiment.add_run(RunEntry::pending(variation.index, repetition));
            }
        }
        let total = experiment.runs.len() as u64;
        let index = self.insert_experiment(experiment);
        outbox
            .writes
            .push(Write::Experiment(Box::new(ExperimentRow::of(
                &self.experiments[index],
            ))));
        outbox.writes.push(Write::Variations {
            experiment_id: db_id,
            variations,
        });
        outbox.writes.push(Write::RunGrid {
            experiment_id: db_id,
            repetitions,
        });
        self.check_finished(index, outbox);
        Submitted {
            index,
            outcome: SubmitOutcome::Created,
            total_runs: total,
            runs_to_do: total,
        }
    }

    /// Adds the variations and repetitions an extended config has beyond the stored one.
    fn extend(&mut self, index: usize, submission: &Submission, outbox: &mut Outbox) {
        let experiment = &mut self.experiments[index];
        let known: std::collections::HashSet<String> = experiment
            .variations
            .iter()
            .map(|v| v.axis_json.clone())
            .collect();
        let mut new_variations = Vec::new();
        for variation in expand(&submission.config) {
            if !known.contains(&variation.key()) {
                let entry =
                    VariationEntry::from_grid(experiment.variations.len() as u32 + 1, &variation);
                experiment.variations.push(entry.clone());
                new_variations.push(entry);
            }
        }
        let mut new_runs = Vec::new();
        for repetition in 1..=submission.config.runs_per_variation {
            for variation in 0..experiment.variations.len() {
                let variation_index = experiment.variations[variation].index;
                if experiment.slot_of(variation_index, repetition).is_none() {
                    experiment.add_run(RunEntry::pending(variation_index, repetition));
                    new_runs.push((variation_index, repetition));
                }
            }
        }
        if let (Some(ledger), Some(budget)) =
            (experiment.ledger.as_mut(), &submission.config.budget)
        {
            ledger.set_budget(budget);
        }
        experiment.config = submission.config.clone();
        experiment.config_yaml = submission.config_yaml.clone();
        experiment.hash = submission.config.hash();
        let db_id = experiment.db_id;
        if !new_variations.is_empty() {
            outbox.writes.push(Write::Variations {
                experiment_id: db_id,
                variations: new_variations,
            });
        }
        outbox.writes.push(Write::Runs {
            experiment_id: db_id,
            runs: new_runs,
        });
    }
}
