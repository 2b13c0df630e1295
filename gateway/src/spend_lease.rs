//! The worker's right to spend, in time (ARCHITECTURE.md, invariant 8): a
//! lease the coordinator renews by answering heartbeats. While it holds,
//! runs' calls go out; once it runs out — the worker has not heard the
//! coordinator acknowledge it for longer than the spend lease — new calls are
//! refused and calls in flight to providers are cancelled, before the
//! coordinator can have given the worker's runs to anyone else.
//!
//! A gateway with no coordinator (tests, the sim-server) is never bound.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// No call to a provider lasts longer than this (ARCHITECTURE.md, invariant
/// 8): as long as the official clients wait for an answer by default.
pub const CALL_BOUND: Duration = Duration::from_secs(600);

/// A call at the flex tier may take longer, waits for capacity included:
/// its answers are slower, and OpenAI advises clients to wait 15 minutes.
pub const FLEX_CALL_BOUND: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    /// No coordinator binds this gateway.
    Unbound,
    /// Calls may spend until this moment.
    Until(Instant),
}

#[derive(Debug)]
pub struct SpendLease {
    term: Mutex<Term>,
    renewed: Notify,
}

impl Default for SpendLease {
    fn default() -> Self {
        SpendLease {
            term: Mutex::new(Term::Unbound),
            renewed: Notify::new(),
        }
    }
}

impl SpendLease {
    /// The lease now lasts until `until`, unless it already lasts longer.
    pub fn renew(&self, until: Instant) {
        let mut term = self.term.lock().expect("not poisoned");
        *term = match *term {
            Term::Until(current) if current >= until => return,
            _ => Term::Until(until),
        };
        drop(term);
        self.renewed.notify_waiters();
    }

    /// How long ago the lease ran out; `None` while it holds.
    pub fn lapsed_for(&self) -> Option<Duration> {
        match *self.term.lock().expect("not poisoned") {
            Term::Unbound => None,
            Term::Until(until) => {
                let now = Instant::now();
                (now >= until).then(|| now - until)
            }
        }
    }

    pub fn holds(&self) -> bool {
        self.lapsed_for().is_none()
    }

    /// Ok while the lease holds, else why no call may spend, in words for
    /// the API's error shape.
    pub fn check(&self) -> Result<(), String> {
        match self.lapsed_for() {
            None => Ok(()),
            Some(lapsed) => Err(format!(
                "the worker lost contact with its coordinator (its spend lease ran out {:.1}s ago): \
                 no call may spend until the coordinator is back",
                lapsed.as_secs_f64()
            )),
        }
    }

    /// Resolves once the lease has run out (at once if it has); renewals
    /// in the meantime push the moment back.
    pub async fn lost(&self) {
        loop {
            let renewed = self.renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            let term = *self.term.lock().expect("not poisoned");
            match term {
                Term::Unbound => renewed.await,
                Term::Until(until) => {
                    if Instant::now() >= until {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = &mut renewed => {}
                    }
                }
            }
        }
    }

    /// Resolves when a call that started at `started` must stop: the lease
    /// ran out, or the call reached its bound on duration (invariant 8).
    pub async fn call_must_stop(&self, started: Instant, bound: Duration) -> CallStop {
        tokio::select! {
            _ = self.lost() => CallStop::LeaseLost,
            _ = tokio::time::sleep_until((started + bound).into()) => CallStop::TooLong(bound),
        }
    }
}

/// Why a call in flight was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStop {
    LeaseLost,
    TooLong(Duration),
}

impl std::fmt::Display for CallStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallStop::LeaseLost => write!(
                f,
                "cancelled: the worker lost contact with its coordinator while the call was in flight"
            ),
            CallStop::TooLong(bound) => write!(
                f,
                "cancelled: the call ran past the gateway's bound on a call's duration ({}s)",
                bound.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unbound_lease_always_holds() {
        let lease = SpendLease::default();
        assert!(lease.holds());
        assert!(lease.check().is_ok());
        let lost = tokio::time::timeout(Duration::from_millis(50), lease.lost()).await;
        assert!(lost.is_err(), "an unbound lease is never lost");
    }

    #[tokio::test]
    async fn a_lease_runs_out_unless_renewed_and_renewals_never_shorten_it() {
        let lease = SpendLease::default();
        let start = Instant::now();
        lease.renew(start + Duration::from_millis(100));
        lease.renew(start + Duration::from_millis(10));
        assert!(lease.holds());
        let waiter = tokio::spawn({
            let lease = std::sync::Arc::new(lease);
            let renewing = lease.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                renewing.renew(Instant::now() + Duration::from_millis(150));
            });
            async move {
                lease.lost().await;
                (Instant::now(), lease)
            }
        });
        let (lost_at, lease) = waiter.await.unwrap();
        // Renewed at 50 ms for 150 ms more: it cannot run out before 200 ms.
        assert!(lost_at >= start + Duration::from_millis(200));
        assert!(!lease.holds());
        let refusal = lease.check().unwrap_err();
        assert!(
            refusal.contains("lost contact with its coordinator"),
            "{refusal}"
        );
    }
}
