//! Wall-clock helpers. Wire timestamps are microseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Microseconds on a monotonic clock since this process first asked, starting at 1. For timers that live
/// only as long as the process (resend due times): a step of the wall clock (NTP, an operator, a VM resume)
/// cannot move them.
pub fn mono_us() -> i64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    1 + i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX / 2)
}

/// Where time-driven code reads the time: monotonic instants for deadlines, wall-clock microseconds for
/// timestamps that cross processes. Injected, so tests can run on simulated time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// A monotonic instant.
    fn now(&self) -> std::time::Instant;
    /// Microseconds since the Unix epoch.
    fn wall_us(&self) -> i64;
}

/// The machine's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
    fn wall_us(&self) -> i64 {
        now_us()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: std::time::Instant,
    start_wall_us: i64,
    elapsed_us: std::sync::atomic::AtomicU64,
}

impl ManualClock {
    /// A clock standing at the machine's present time.
    pub fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            start_wall_us: now_us(),
            elapsed_us: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.elapsed_us
            .fetch_add(us, std::sync::atomic::Ordering::SeqCst);
    }

    fn elapsed(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.elapsed_us.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> std::time::Instant {
        self.start + self.elapsed()
    }
    fn wall_us(&self) -> i64 {
        self.start_wall_us + i64::try_from(self.elapsed().as_micros()).unwrap_or(i64::MAX / 2)
    }
}
