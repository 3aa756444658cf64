//! The circuit breaker (CLOSED, OPEN, HALF_OPEN).
//!
//! CLOSED: calls go through; `failure_threshold` consecutive outage failures open it.
//! OPEN: no call is made (the login falls back at once) until `cooldown` has passed.
//! HALF_OPEN: one trial call at a time; success closes, failure reopens. A trial that has not
//! reported within `half_open_timeout` is presumed failed so a lost trial cannot wedge it.
//! Only outage failures count (design rule 1): a rejected password is a success here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Call,
    /// Half-open: this call is the one trial.
    Trial,
    /// Open (or a trial is already out): do not call.
    Refused,
}

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub cooldown: Duration,
    pub half_open_timeout: Duration,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    failures: u32,
    opened_at: Option<Instant>,
    trial_since: Option<Instant>,
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

/// A snapshot for status and metrics.
#[derive(Debug, Clone, Copy)]
pub struct BreakerView {
    pub state: CircuitState,
    pub failure_count: u32,
    /// How long ago it opened, while open or half-open.
    pub open_for: Option<Duration>,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                failures: 0,
                opened_at: None,
                trial_since: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn admit(&self, now: Instant) -> Admission {
        let mut i = self.lock();
        match i.state {
            CircuitState::Closed => Admission::Call,
            CircuitState::Open => {
                let cooled = i
                    .opened_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.cooldown);
                if cooled {
                    i.state = CircuitState::HalfOpen;
                    i.trial_since = Some(now);
                    Admission::Trial
                } else {
                    Admission::Refused
                }
            }
            CircuitState::HalfOpen => {
                let stale = i
                    .trial_since
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.half_open_timeout);
                if stale {
                    i.trial_since = Some(now);
                    Admission::Trial
                } else {
                    Admission::Refused
                }
            }
        }
    }

    /// Keycloak answered (Ok or Rejected): close.
    pub fn success(&self) {
        let mut i = self.lock();
        i.state = CircuitState::Closed;
        i.failures = 0;
        i.opened_at = None;
        i.trial_since = None;
    }

    /// Keycloak was unreachable. Returns true when this failure opened the circuit.
    pub fn failure(&self, now: Instant) -> bool {
        let mut i = self.lock();
        i.failures = i.failures.saturating_add(1);
        match i.state {
            CircuitState::HalfOpen => {
                i.state = CircuitState::Open;
                i.opened_at = Some(now);
                i.trial_since = None;
                true
            }
            CircuitState::Closed if i.failures >= self.cfg.failure_threshold => {
                i.state = CircuitState::Open;
                i.opened_at = Some(now);
                true
            }
            _ => false,
        }
    }

    pub fn view(&self, now: Instant) -> BreakerView {
        let i = self.lock();
        BreakerView {
            state: i.state,
            failure_count: i.failures,
            open_for: i.opened_at.map(|t| now.saturating_duration_since(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(60),
            half_open_timeout: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_threshold_and_refuses_until_cooldown() {
        let b = breaker();
        let t0 = Instant::now();
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert_eq!(b.admit(t0), Admission::Call);
        assert!(b.failure(t0), "third failure opens");
        assert_eq!(b.view(t0).state, CircuitState::Open);
        assert_eq!(b.admit(t0 + Duration::from_secs(59)), Admission::Refused);
        assert_eq!(b.admit(t0 + Duration::from_secs(60)), Admission::Trial);
        assert_eq!(b.view(t0).state, CircuitState::HalfOpen);
        assert_eq!(
            b.admit(t0 + Duration::from_secs(61)),
            Admission::Refused,
            "one trial at a time"
        );
    }

    #[test]
    fn half_open_trial_closes_or_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failure(t0);
        }
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.admit(t1), Admission::Trial);
        assert!(b.failure(t1), "a failed trial reopens");
        assert_eq!(
            b.admit(t1 + Duration::from_secs(30)),
            Admission::Refused,
            "cooldown starts again"
        );
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(b.admit(t2), Admission::Trial);
        b.success();
        assert_eq!(b.view(t2).state, CircuitState::Closed);
        assert_eq!(b.view(t2).failure_count, 0);
        assert_eq!(b.admit(t2), Admission::Call);
    }

    #[test]
    fn a_lost_trial_is_replaced_after_half_open_timeout() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failure(t0);
        }
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.admit(t1), Admission::Trial);
        assert_eq!(b.admit(t1 + Duration::from_secs(9)), Admission::Refused);
        assert_eq!(b.admit(t1 + Duration::from_secs(10)), Admission::Trial);
    }

    #[test]
    fn successes_reset_the_count() {
        let b = breaker();
        let t0 = Instant::now();
        b.failure(t0);
        b.failure(t0);
        b.success();
        assert!(!b.failure(t0));
        assert_eq!(b.view(t0).state, CircuitState::Closed);
    }
}
