//! Exponential backoff with jitter, for transient cluster errors ([`super::Error::is_transient`]).
//!
//! "Equal jitter": attempt `n` waits between half and all of `min(max, base * 2^n)`. The lower half
//! keeps a fleet of cameras that lost the cluster together from retrying in lock-step; the
//! floor keeps any one of them from retrying at once. Pure: the caller supplies the randomness
//! ([`entropy`] gives some), so tests are deterministic.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Backoff state for one thing being retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base` (at least 1 ms), never exceeds `max` (at least `base`).
    pub fn new(base: Duration, max: Duration) -> Backoff {
        let base = base.max(Duration::from_millis(1));
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// Failures seen since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next try, given 64 random bits; counts one more attempt.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let d = self.delay(self.attempt, random);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// The delay of attempt `attempt` (0-based) for `random`, without changing the state.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        // 2^attempt saturates long before u32::MAX; capping the shift keeps the math in range.
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let cap = self.base.saturating_mul(factor).min(self.max);
        let half = cap / 2;
        let span = u64::try_from((cap - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = random % span.saturating_add(1);
        half.saturating_add(Duration::from_nanos(jitter))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// 64 bits that differ between calls and processes (std's randomly keyed SipHash over a counter
/// and the clock): enough for jitter, not for secrets.
pub fn entropy() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn grows_doubling_between_half_and_cap_then_stays_capped() {
        let b = Backoff::new(S, Duration::from_secs(60));
        // (attempt, cap in s)
        for (attempt, cap) in [
            (0, 1),
            (1, 2),
            (2, 4),
            (3, 8),
            (5, 32),
            (6, 60),
            (40, 60),
            (u32::MAX, 60),
        ] {
            let cap = Duration::from_secs(cap);
            assert_eq!(b.delay(attempt, 0), cap / 2, "attempt {attempt}: the floor");
            assert_eq!(
                b.delay(attempt, u64::MAX - 1),
                b.delay(attempt, u64::MAX - 1)
            );
            for r in [1, 7, 1 << 40, u64::MAX] {
                let d = b.delay(attempt, r);
                assert!(
                    d >= cap / 2 && d <= cap,
                    "attempt {attempt}, r {r}: {d:?} outside [{:?}, {cap:?}]",
                    cap / 2
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_and_reset_restarts() {
        let mut b = Backoff::new(S, Duration::from_secs(60));
        let ds: Vec<Duration> = (0..4)
            .map(|i| b.next_delay(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i)))
            .collect();
        assert_eq!(b.attempt(), 4);
        assert!(ds[3] >= Duration::from_secs(4));
        let spread: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| b.delay(5, entropy())).collect();
        assert!(
            spread.len() > 40,
            "entropy gives distinct delays: {}",
            spread.len()
        );
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert!(b.next_delay(u64::MAX) <= S);
    }

    #[test]
    fn degenerate_settings_are_clamped() {
        let b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.delay(0, 0), Duration::from_micros(500));
        assert!(b.delay(30, u64::MAX) <= Duration::from_millis(1));
        let b = Backoff::new(Duration::MAX, Duration::MAX);
        let _ = b.delay(u32::MAX, u64::MAX);
    }

    proptest::proptest! {
        #[test]
        fn never_above_max(base_ms in 0u64..100_000, max_ms in 0u64..10_000_000, attempt in proptest::num::u32::ANY, r in proptest::num::u64::ANY) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let d = b.delay(attempt, r);
            let max = Duration::from_millis(max_ms).max(Duration::from_millis(base_ms)).max(Duration::from_millis(1));
            proptest::prop_assert!(d <= max);
        }
    }
}
