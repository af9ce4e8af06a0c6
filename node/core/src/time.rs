//! Time as the core sees it: microseconds since the Unix epoch, passed in by the caller.
//!
//! Wall-clock based because chunk deadlines derive from the publish time the origin signs into
//! every chunk; the simulator runs the same scale on virtual time.

use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant: microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The instant `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(micros(d)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(micros(d)))
    }
}

/// Time to send `bytes` at `bits_per_second`, rounded up to the microsecond.
pub fn transmission_time(bytes: usize, bits_per_second: u64) -> Duration {
    let bits = bytes as u128 * 8 * 1_000_000;
    let rate = u128::from(bits_per_second.max(1));
    Duration::from_micros(u64::try_from(bits.div_ceil(rate)).unwrap_or(u64::MAX))
}
