//! Calls and tokens in the last minute, in one-second buckets: what a key's
//! use is shown against its per-minute limit. Constant memory at any rate.

use std::time::Instant;

const SECONDS: usize = 60;

#[derive(Debug, Clone)]
pub struct LastMinute {
    origin: Instant,
    /// Per second slot: which second it holds, calls and tokens in it.
    slots: [(u64, u32, u64); SECONDS],
}

impl LastMinute {
    pub fn new(origin: Instant) -> Self {
        LastMinute {
            origin,
            // Second u64::MAX is never current: every slot starts empty.
            slots: [(u64::MAX, 0, 0); SECONDS],
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    pub fn record(&mut self, now: Instant, tokens: u64) {
        let second = self.second(now);
        let slot = &mut self.slots[(second % SECONDS as u64) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot.1 += 1;
        slot.2 += tokens;
    }

    /// Calls and tokens recorded in the 60 seconds up to `now`.
    pub fn totals(&self, now: Instant) -> (u32, u64) {
        let second = self.second(now);
        self.slots
            .iter()
            .filter(|(at, _, _)| *at != u64::MAX && second.saturating_sub(*at) < SECONDS as u64)
            .fold((0, 0), |(calls, tokens), (_, c, t)| (calls + c, tokens + t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_the_last_sixty_seconds_only() {
        let start = Instant::now();
        let mut minute = LastMinute::new(start);
        minute.record(start, 10);
        minute.record(start + Duration::from_millis(500), 5);
        minute.record(start + Duration::from_secs(30), 1);
        assert_eq!(minute.totals(start + Duration::from_secs(30)), (3, 16));
        // A minute on, the first second has left the window.
        assert_eq!(minute.totals(start + Duration::from_secs(60)), (1, 1));
        // A slot reused two minutes later holds only the new second.
        minute.record(start + Duration::from_secs(120), 7);
        assert_eq!(minute.totals(start + Duration::from_secs(120)), (1, 7));
        assert_eq!(minute.totals(start + Duration::from_secs(200)), (0, 0));
    }
}
