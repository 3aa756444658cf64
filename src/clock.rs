//! The appliance's wall clock (design rule 7): it never goes backwards, and it keeps moving.
//!
//! Small ARM boxes often have no real-time clock, and during a WAN outage NTP is unreachable:
//! after a power cut the system clock may restart in the past, which would silently extend
//! every session, ban and offline window. So [`Clock::now`] starts from the later of the
//! system clock and the latest time this store has seen (the floor, persisted by the
//! maintenance task) and from there advances with the monotonic clock ([`Instant`]), whatever
//! the system clock does. An expiry is then late by at most the time the box was off, never
//! by the size of the jump, and audit rows and the HTTP `Date` header keep moving.
//!
//! A better time is adopted whenever one is seen, and only forward: the system clock moving
//! ahead of the estimate (NTP is back), or Keycloak's clock, read from the `iat` of the tokens
//! it issues ([`Clock::observe_keycloak`]). A system clock more than [`JUMP_ALERT`] behind the
//! appliance's time is an operator alert ([`Clock::system_behind`]).
//!
//! Since time is only ever adopted forward, a time adopted too far ahead (a wrong Keycloak
//! clock, bounded by [`MAX_KEYCLOAK_AHEAD`]) is kept, and persisted, until the world catches up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far behind the appliance's time the system clock may be before it is an alert; a
/// larger jump forward to Keycloak's clock is logged at warn.
pub const JUMP_ALERT: Duration = Duration::from_secs(300);

/// Keycloak's clock further ahead of ours than this is implausible and ignored.
pub const MAX_KEYCLOAK_AHEAD: Duration = Duration::from_secs(366 * 24 * 3600);

/// A source of milliseconds: Unix time for the system clock, time since the clock was built
/// for the monotonic one.
type Millis = Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct Clock {
    /// Unix milliseconds at the monotonic origin, as well as we know it: `now = base + elapsed`.
    /// Only ever raised, by a good time (system clock or Keycloak) minus the elapsed time.
    base_ms: AtomicU64,
    /// The latest time returned, so that concurrent readers never see time go back.
    latest_ms: AtomicU64,
    system_ms: Millis,
    elapsed_ms: Millis,
    /// Seconds the system clock was behind the stored floor at start (0 when it was not).
    behind_at_start: u64,
    /// Appliance time (Unix seconds) when Keycloak's clock was first adopted; 0: never.
    keycloak_since: AtomicU64,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("base_ms", &self.base_ms)
            .field("latest_ms", &self.latest_ms)
            .field("behind_at_start", &self.behind_at_start)
            .field("keycloak_since", &self.keycloak_since)
            .finish_non_exhaustive()
    }
}

impl Clock {
    /// A clock that will never report a time before `floor` (Unix seconds).
    pub fn with_floor(floor: u64) -> Self {
        let start = Instant::now();
        let elapsed = move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Self::with_sources(floor, Arc::new(system_ms), Arc::new(elapsed))
    }

    /// The clock from its two sources: the system clock and the monotonic time since start.
    fn with_sources(floor: u64, system_ms: Millis, elapsed_ms: Millis) -> Self {
        let (sys, elapsed) = (system_ms(), elapsed_ms());
        let start = floor.saturating_mul(1000).max(sys);
        Clock {
            base_ms: AtomicU64::new(start.saturating_sub(elapsed)),
            latest_ms: AtomicU64::new(start),
            system_ms,
            elapsed_ms,
            behind_at_start: floor.saturating_sub(sys / 1000),
            keycloak_since: AtomicU64::new(0),
        }
    }

    /// Unix seconds: the appliance's time. Never less than a value returned before.
    pub fn now(&self) -> u64 {
        self.now_ms() / 1000
    }

    fn now_ms(&self) -> u64 {
        let elapsed = (self.elapsed_ms)();
        let sys = (self.system_ms)();
        let (before, after) = self.adopt(sys, elapsed);
        if after.saturating_sub(before) > JUMP_ALERT.as_millis() as u64 {
            log::info!(
                "the system clock moved {} ahead of the appliance's time; adopted",
                humantime::format_duration(Duration::from_secs((after - before) / 1000))
            );
        }
        let now = after.saturating_add(elapsed);
        self.latest_ms.fetch_max(now, Ordering::Relaxed).max(now)
    }

    /// Raises the base so that `now` is at least `good_ms` at monotonic `elapsed` ms; returns
    /// the base before and after.
    fn adopt(&self, good_ms: u64, elapsed: u64) -> (u64, u64) {
        let candidate = good_ms.saturating_sub(elapsed);
        let before = self.base_ms.fetch_max(candidate, Ordering::Relaxed);
        (before, before.max(candidate))
    }

    /// Adopts Keycloak's clock (Unix seconds, the `iat` of a token it has just issued) when it
    /// is ahead of ours, and not implausibly so ([`MAX_KEYCLOAK_AHEAD`]). Returns how far the
    /// appliance's time moved forward, if it did.
    pub fn observe_keycloak(&self, unix_secs: u64) -> Option<Duration> {
        let ours = self.now_ms();
        let theirs = unix_secs.saturating_mul(1000);
        let ahead = Duration::from_millis(theirs.checked_sub(ours).filter(|d| *d > 0)?);
        if ahead > MAX_KEYCLOAK_AHEAD {
            log::warn!(
                "ignoring Keycloak's clock: {} ahead of the appliance's time is implausible",
                humantime::format_duration(Duration::from_secs(ahead.as_secs()))
            );
            return None;
        }
        let elapsed = (self.elapsed_ms)();
        let (before, after) = self.adopt(theirs, elapsed);
        if after <= before {
            return None; // another reader got there first
        }
        let _ = self.keycloak_since.compare_exchange(
            0,
            unix_secs,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if ahead > JUMP_ALERT {
            log::warn!(
                "the appliance's time moved {} forward to Keycloak's clock (the system clock is behind: check NTP / RTC)",
                humantime::format_duration(Duration::from_secs(ahead.as_secs()))
            );
        }
        Some(ahead)
    }

    /// The value to persist so that a restart does not go back in time.
    pub fn floor(&self) -> u64 {
        self.latest_ms.load(Ordering::Relaxed) / 1000
    }

    /// How far the system clock was behind at start, when that is more than [`JUMP_ALERT`].
    pub fn jump_back_at_start(&self) -> Option<Duration> {
        (self.behind_at_start > JUMP_ALERT.as_secs())
            .then(|| Duration::from_secs(self.behind_at_start))
    }

    /// How far the system clock is behind the appliance's time now, when that is more than
    /// [`JUMP_ALERT`]. `None` once NTP has set the system clock right.
    pub fn system_behind(&self) -> Option<Duration> {
        let now = self.now_ms();
        let behind = Duration::from_secs(now.saturating_sub((self.system_ms)()) / 1000);
        (behind > JUMP_ALERT).then_some(behind)
    }

    /// When (appliance time, Unix seconds) Keycloak's clock was first adopted, if ever.
    pub fn keycloak_since(&self) -> Option<u64> {
        Some(self.keycloak_since.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The last second RFC 3339 text can show (`9999-12-31T23:59:59Z`).
pub const MAX_RFC3339: u64 = 253_402_300_799;

/// RFC 3339 text (UTC, seconds) for a Unix time, as the API and CLI show it. A time past the
/// year 9999 (a far expiry, a hostile `expires_in`) shows as the last second of 9999: the
/// formatter has no text for it and would panic.
pub fn rfc3339(unix: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.min(MAX_RFC3339));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `at + d`, saturating at a year past `at` instead of panicking on overflow: for expiries
/// computed from durations that an answer or a config supplies.
pub fn later(at: std::time::Instant, d: Duration) -> std::time::Instant {
    const FAR: Duration = Duration::from_secs(366 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7) for a Unix time: the
/// HTTP `Date` header.
pub fn http_date(unix: u64) -> String {
    // httpdate (already in the tree through hyper) refuses years past 9999: clamp like rfc3339.
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix.min(MAX_RFC3339)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_times_never_panic() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(MAX_RFC3339), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_RFC3339 + 1), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
        assert!(http_date(u64::MAX).ends_with("GMT"));
        let now = std::time::Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    /// A simulated box: a settable system clock and a monotonic clock that only advances.
    #[derive(Clone, Default)]
    struct Sim {
        system_ms: Arc<AtomicU64>,
        elapsed_ms: Arc<AtomicU64>,
    }

    impl Sim {
        fn clock(&self, floor: u64) -> Clock {
            let (s, e) = (self.system_ms.clone(), self.elapsed_ms.clone());
            Clock::with_sources(
                floor,
                Arc::new(move || s.load(Ordering::Relaxed)),
                Arc::new(move || e.load(Ordering::Relaxed)),
            )
        }
        fn set_system(&self, unix: u64) {
            self.system_ms.store(unix * 1000, Ordering::Relaxed);
        }
        /// `secs` pass: the monotonic clock and the system clock both advance.
        fn pass(&self, secs: u64) {
            self.elapsed_ms.fetch_add(secs * 1000, Ordering::Relaxed);
            self.system_ms.fetch_add(secs * 1000, Ordering::Relaxed);
        }
    }

    const FLOOR: u64 = 1_750_000_000;
    const DAY: u64 = 86_400;

    #[test]
    fn moves_on_from_the_floor_while_the_system_clock_is_behind() {
        let sim = Sim::default();
        sim.set_system(FLOOR - 2 * DAY);
        let c = sim.clock(FLOOR);
        assert_eq!(c.now(), FLOOR);
        assert_eq!(c.jump_back_at_start(), Some(Duration::from_secs(2 * DAY)));
        assert_eq!(c.system_behind(), Some(Duration::from_secs(2 * DAY)));
        sim.pass(90);
        assert_eq!(c.now(), FLOOR + 90);
        sim.pass(3600);
        assert_eq!(c.now(), FLOOR + 3690);
        assert_eq!(c.floor(), FLOOR + 3690);
    }

    #[test]
    fn adopts_the_system_clock_when_ntp_sets_it_ahead() {
        let sim = Sim::default();
        sim.set_system(FLOOR - 2 * DAY);
        let c = sim.clock(FLOOR);
        sim.pass(60);
        assert_eq!(c.now(), FLOOR + 60);
        // The box was off for an hour: NTP sets the true time.
        sim.set_system(FLOOR + 3600 + 60);
        assert_eq!(c.now(), FLOOR + 3660);
        assert_eq!(c.system_behind(), None);
        sim.pass(10);
        assert_eq!(c.now(), FLOOR + 3670);
        // The start is still reported; whether it is still a problem is system_behind's call.
        assert!(c.jump_back_at_start().is_some());
    }

    #[test]
    fn adopts_keycloaks_clock_only_forward() {
        let sim = Sim::default();
        sim.set_system(FLOOR - 2 * DAY);
        let c = sim.clock(FLOOR);
        sim.pass(5);
        assert_eq!(c.keycloak_since(), None);
        // Behind or equal to ours: ignored.
        assert_eq!(c.observe_keycloak(FLOOR - 100), None);
        assert_eq!(c.observe_keycloak(FLOOR + 5), None);
        assert_eq!(c.now(), FLOOR + 5);
        // Ahead: adopted, and the clock moves on from there.
        assert_eq!(
            c.observe_keycloak(FLOOR + 7205),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(c.now(), FLOOR + 7205);
        assert_eq!(c.keycloak_since(), Some(FLOOR + 7205));
        sim.pass(10);
        assert_eq!(c.now(), FLOOR + 7215);
        // A later, older reading changes nothing.
        assert_eq!(c.observe_keycloak(FLOOR + 7000), None);
        assert_eq!(c.now(), FLOOR + 7215);
        // The system clock is still two days (and two hours) behind: still an alert.
        assert_eq!(c.system_behind(), Some(Duration::from_secs(2 * DAY + 7200)));
    }

    #[test]
    fn ignores_an_implausible_keycloak_clock() {
        let sim = Sim::default();
        sim.set_system(FLOOR);
        let c = sim.clock(0);
        assert_eq!(c.observe_keycloak(FLOOR + 2 * 366 * DAY), None);
        assert_eq!(c.now(), FLOOR);
        assert_eq!(c.keycloak_since(), None);
    }

    #[test]
    fn never_decreases_when_the_system_clock_goes_back() {
        let sim = Sim::default();
        sim.set_system(FLOOR);
        let c = sim.clock(0);
        assert_eq!(c.jump_back_at_start(), None);
        sim.pass(30);
        assert_eq!(c.now(), FLOOR + 30);
        sim.set_system(FLOOR - DAY);
        let mut last = c.now();
        assert_eq!(last, FLOOR + 30);
        for _ in 0..100 {
            sim.pass(1);
            let n = c.now();
            assert!(n >= last);
            last = n;
        }
        assert_eq!(last, FLOOR + 130);
    }

    #[test]
    fn real_clock_follows_the_system_clock() {
        let future = system_ms() / 1000 + 3600;
        let c = Clock::with_floor(future);
        assert!(c.now() >= future);
        assert!(c.jump_back_at_start().is_some());
        let c = Clock::with_floor(0);
        let n = c.now();
        assert!(n + 1 >= system_ms() / 1000 && n <= system_ms() / 1000 + 1);
        assert!(c.jump_back_at_start().is_none());
        assert!(c.system_behind().is_none());
        assert!(c.floor() >= n);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn formats_http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(http_date(4_133_980_799), "Fri, 31 Dec 2100 23:59:59 GMT");
        assert_eq!(http_date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
    }
}
