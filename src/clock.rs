//! A wall clock that never goes backwards (design rule 7).
//!
//! Small ARM boxes often have no real-time clock, and during a WAN outage NTP is unreachable:
//! after a power cut the system clock may restart in the past, which would silently extend
//! every session, ban and offline window. Every expiry is judged against [`Clock::now`], the
//! later of the system clock and the latest time this store has seen (persisted by the
//! maintenance task). A large jump back is reported so an operator can fix the time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far behind the stored floor the system clock may start before it is an alert.
pub const JUMP_ALERT: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Clock {
    floor: AtomicU64,
    /// Seconds the system clock was behind the stored floor at start (0 when it was not).
    behind_at_start: u64,
}

impl Clock {
    /// A clock that will never report a time before `floor` (Unix seconds).
    pub fn with_floor(floor: u64) -> Self {
        let sys = system_now();
        Clock {
            floor: AtomicU64::new(floor.max(sys)),
            behind_at_start: floor.saturating_sub(sys),
        }
    }

    /// Unix seconds: the later of the system clock and every time this clock has returned.
    pub fn now(&self) -> u64 {
        let sys = system_now();
        let prev = self.floor.fetch_max(sys, Ordering::Relaxed);
        prev.max(sys)
    }

    /// The value to persist so that a restart does not go back in time.
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// How far the system clock was behind at start, when that is more than [`JUMP_ALERT`].
    pub fn jump_back_at_start(&self) -> Option<Duration> {
        (self.behind_at_start > JUMP_ALERT.as_secs())
            .then(|| Duration::from_secs(self.behind_at_start))
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 text (UTC, seconds) for a Unix time, as the API and CLI show it.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_before_floor() {
        let future = system_now() + 3600;
        let c = Clock::with_floor(future);
        assert!(c.now() >= future);
        assert!(c.jump_back_at_start().is_some());
    }

    #[test]
    fn follows_system_clock_when_ahead() {
        let c = Clock::with_floor(0);
        let n = c.now();
        assert!(n + 1 >= system_now());
        assert!(c.jump_back_at_start().is_none());
        assert!(c.floor() >= n);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
