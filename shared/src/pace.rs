//! How fast an experiment's runs end, and when the rest will have: one
//! algorithm, kept by the coordinator per experiment and shown alike by the
//! live display, `status` and the dashboard (ARCHITECTURE.md, "Following an
//! experiment"). The pace is a moving average of recent completions, so a
//! stall lowers it and a sweep that speeds up is seen to.

use std::collections::VecDeque;
use std::time::Duration;

use crate::duration::duration_words;

/// The pace of completions over a recent window: at least this long...
const PACE_WINDOW_MS: i64 = 120_000;
/// ...and at least this many completions, when there were that many.
const PACE_RUNS: u64 = 10;
/// Samples kept; older ones only matter for sweeps far slower than the window.
const PACE_SAMPLES: usize = 4096;

/// Runs ended over time.
#[derive(Debug, Clone)]
pub struct Pace {
    /// (Unix ms, runs ended by then), oldest first; the first is the start.
    samples: VecDeque<(i64, u64)>,
}

impl Pace {
    pub fn new(start_ms: i64, ended: u64) -> Self {
        Pace {
            samples: VecDeque::from([(start_ms, ended)]),
        }
    }

    /// Notes the count of ended runs at `now_ms`. A count lower than the
    /// last (runs reopened by a resume) starts the pace over.
    pub fn observe(&mut self, now_ms: i64, ended: u64) {
        match self.samples.back() {
            Some(&(_, last)) if last == ended => return,
            Some(&(_, last)) if last > ended => self.samples.clear(),
            _ => {}
        }
        self.samples.push_back((now_ms, ended));
        if self.samples.len() > PACE_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// Runs per minute since a base sample: the latest one at least the
    /// window old with at least `PACE_RUNS` runs ended after it, or the
    /// oldest. `None` until a run has ended.
    pub fn runs_per_minute(&self, now_ms: i64) -> Option<f64> {
        let &(_, ended) = self.samples.back()?;
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(at, then)| now_ms - at >= PACE_WINDOW_MS && ended - then >= PACE_RUNS)
            .or(self.samples.front())?;
        let runs = ended - base.1;
        let minutes = (now_ms - base.0) as f64 / 60_000.0;
        (runs > 0 && minutes > 0.0).then(|| runs as f64 / minutes)
    }

    /// The pace now, and the time left for `remaining` runs at it.
    pub fn estimate(&self, now_ms: i64, remaining: u64) -> PaceEstimate {
        let runs_per_minute = self.runs_per_minute(now_ms);
        PaceEstimate {
            runs_per_minute,
            eta: runs_per_minute
                .filter(|_| remaining > 0)
                .map(|rate| Duration::from_secs_f64(remaining as f64 / rate * 60.0)),
            remaining,
        }
    }
}

/// What the pace says at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct PaceEstimate {
    pub runs_per_minute: Option<f64>,
    #[serde(serialize_with = "duration_as_seconds")]
    pub eta: Option<Duration>,
    /// Runs not ended yet.
    pub remaining: u64,
}

fn duration_as_seconds<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

impl PaceEstimate {
    /// `12.5 runs/min · ETA 3m10s`, or what is not known yet; empty once
    /// nothing remains.
    pub fn words(&self) -> String {
        match (self.runs_per_minute, self.eta) {
            (Some(rate), Some(eta)) => {
                format!(
                    "{} runs/min · ETA {}",
                    rate_words(rate),
                    duration_words(eta)
                )
            }
            _ if self.remaining == 0 => String::new(),
            (Some(rate), None) => format!("{} runs/min", rate_words(rate)),
            (None, _) => "ETA once runs finish".to_string(),
        }
    }

    /// The ETA alone, `3m10s`, or what is not known yet.
    pub fn eta_words(&self) -> String {
        match self.eta {
            Some(eta) => duration_words(eta),
            None if self.remaining == 0 => String::new(),
            None => "once runs finish".into(),
        }
    }
}

fn rate_words(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1000;

    #[test]
    fn the_pace_is_a_moving_average_of_recent_completions() {
        let mut pace = Pace::new(0, 0);
        assert_eq!(pace.runs_per_minute(10 * SECOND), None);
        // Ten a minute for five minutes.
        for second in (6..=300).step_by(6) {
            pace.observe(second * SECOND, second as u64 / 6);
        }
        let rate = pace.runs_per_minute(300 * SECOND).unwrap();
        assert!((rate - 10.0).abs() < 0.5, "{rate}");
        // Then twice as fast for five minutes: the pace follows within the window.
        for (i, second) in (303..=600).step_by(3).enumerate() {
            pace.observe(second * SECOND, 50 + i as u64 + 1);
        }
        let rate = pace.runs_per_minute(600 * SECOND).unwrap();
        assert!((rate - 20.0).abs() < 1.5, "{rate}");
        let estimate = pace.estimate(600 * SECOND, 20);
        let eta = estimate.eta.unwrap().as_secs_f64();
        assert!((eta - 60.0).abs() < 6.0, "{eta}");
        // A stall lowers it.
        let later = pace.runs_per_minute(900 * SECOND).unwrap();
        assert!(later < rate / 1.5, "{later}");
    }

    #[test]
    fn words_say_the_pace_and_the_eta_or_what_is_not_known() {
        let mut pace = Pace::new(0, 0);
        assert_eq!(
            pace.estimate(5 * SECOND, 16).words(),
            "ETA once runs finish"
        );
        pace.observe(30 * SECOND, 8);
        let estimate = pace.estimate(30 * SECOND, 16);
        assert_eq!(estimate.words(), "16.0 runs/min · ETA 1m00s");
        assert_eq!(estimate.eta_words(), "1m00s");
        assert_eq!(pace.estimate(30 * SECOND, 0).words(), "");
        // A resume that reopened runs starts the pace over.
        pace.observe(40 * SECOND, 2);
        assert_eq!(
            pace.estimate(40 * SECOND, 10).words(),
            "ETA once runs finish"
        );
    }
}
