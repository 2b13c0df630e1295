//! How the cluster uses each limited provider model, from the workers'
//! heartbeats: what `status` and the live display show as a limit binding
//! (calls waiting while the last minute's calls reach the limit) or not.

use flotilla_shared::view::KeyUseView;
use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_shared::rate::{KeyUse, Limits, RateKey};

#[derive(Debug, Default)]
pub struct RateUse {
    /// Each worker's latest report, by key.
    latest: BTreeMap<RateKey, BTreeMap<Arc<str>, KeyUse>>,
    /// Totals of worker processes that have since restarted (their counts began again).
    retired: BTreeMap<RateKey, (u64, u64, u64)>,
}

impl RateUse {
    pub fn report(&mut self, worker: &Arc<str>, usage: Vec<KeyUse>) {
        for report in usage {
            let workers = self.latest.entry(report.key.clone()).or_default();
            if let Some(before) = workers.get(worker) {
                // Counts that went down come from a restarted worker process.
                if report.calls < before.calls || report.throttled < before.throttled {
                    let retired = self.retired.entry(report.key.clone()).or_default();
                    retired.0 += before.calls;
                    retired.1 += before.throttled;
                    retired.2 += before.waited_ms;
                }
            }
            workers.insert(worker.clone(), report);
        }
    }

    /// What `worker` last reported of `key`.
    pub fn of_worker(&self, worker: &str, key: &RateKey) -> Option<&KeyUse> {
        self.latest.get(key)?.get(worker)
    }

    /// Each key's use; the last minute and the calls waiting count only
    /// workers that are connected now.
    pub fn view(&self, connected: impl Fn(&str) -> bool) -> Vec<KeyUseView> {
        self.latest
            .iter()
            .map(|(key, workers)| {
                let (calls, throttled, waited_ms) =
                    self.retired.get(key).copied().unwrap_or_default();
                let mut declared = None;
                let mut view = KeyUseView {
                    key: key.clone(),
                    declared: Limits::default(),
                    shared: false,
                    workers: 0,
                    calls,
                    calls_last_minute: 0,
                    tokens_last_minute: 0,
                    waiting: 0,
                    throttled,
                    waited_ms,
                };
                for (worker, report) in workers {
                    declared = Some(
                        declared.map_or(report.declared, |d: Limits| d.tightest(report.declared)),
                    );
                    view.shared |= report.shared;
                    view.calls += report.calls;
                    view.throttled += report.throttled;
                    view.waited_ms += report.waited_ms;
                    if connected(worker) {
                        view.workers += 1;
                        view.calls_last_minute += report.calls_last_minute;
                        view.tokens_last_minute += report.tokens_last_minute;
                        view.waiting += report.waiting;
                    }
                }
                view.declared = declared.unwrap_or_default();
                view
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(calls: u64, last_minute: u32, waiting: u32, throttled: u64) -> KeyUse {
        KeyUse {
            key: RateKey {
                provider: "sim".into(),
                model: "tit-for-tat".into(),
            },
            declared: Limits {
                requests_per_minute: Some(60),
                ..Limits::default()
            },
            shared: true,
            calls,
            calls_last_minute: last_minute,
            tokens_last_minute: u64::from(last_minute) * 10,
            waiting,
            throttled,
            waited_ms: calls * 100,
        }
    }

    #[test]
    fn sums_workers_and_keeps_the_counts_of_restarted_ones() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut usage = RateUse::default();
        usage.report(&a, vec![report(100, 30, 2, 1)]);
        usage.report(&b, vec![report(50, 29, 3, 0)]);
        let view = &usage.view(|_| true)[0];
        assert_eq!(
            (
                view.workers,
                view.calls,
                view.calls_last_minute,
                view.waiting,
                view.throttled
            ),
            (2, 150, 59, 5, 1)
        );
        assert_eq!(view.declared.requests_per_minute, Some(60));
        // b restarted: its new counts add to what it had sent before.
        usage.report(&b, vec![report(5, 5, 0, 0)]);
        let view = &usage.view(|_| true)[0];
        assert_eq!(view.calls, 155);
        // A disconnected worker's last minute and waiting calls no longer count.
        let view = &usage.view(|worker| worker == "b")[0];
        assert_eq!(
            (view.workers, view.calls_last_minute, view.waiting),
            (1, 5, 0)
        );
        assert_eq!(view.calls, 155);
    }
}
