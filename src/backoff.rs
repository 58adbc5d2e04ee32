//! Retry pacing shared by reconnecting cameras and outbox delivery.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(cap, base × 2^n)]`. The jitter spreads out the retries of many workers that
/// failed together (an endpoint coming back after an outage) instead of letting them hit
/// it in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        // Time plus a stack address (ASLR, differs per thread) keeps workers started in the
        // same instant from drawing the same delays.
        let marker = 0u8;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let seed = splitmix64(nanos ^ (&marker as *const u8 as u64).rotate_left(32));
        Backoff {
            base,
            cap,
            attempt: 0,
            // Xorshift gets stuck at zero.
            rng: seed | 1,
        }
    }

    /// The delay before the next retry; each call doubles the ceiling until it reaches the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(self.next_random() % ceiling.saturating_add(1))
    }

    /// Call after a success, so the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(self.attempt))
            .min(self.cap)
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// Spreads the few changing bits of a clock reading over the whole seed.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_up_to_the_cap_and_reset_starts_over() {
        let mut backoff = Backoff::new(10 * MS, 50 * MS);
        let mut ceilings = Vec::new();
        for _ in 0..5 {
            ceilings.push(backoff.ceiling());
            backoff.next_delay();
        }
        assert_eq!(ceilings, [10 * MS, 20 * MS, 40 * MS, 50 * MS, 50 * MS]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), 10 * MS);

        backoff.attempt = u32::MAX;
        assert_eq!(
            backoff.ceiling(),
            50 * MS,
            "saturates instead of overflowing"
        );
        assert!(backoff.next_delay() <= 50 * MS);
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_are_jittered() {
        let mut backoff = Backoff::new(10 * MS, 50 * MS);
        for attempt in 0..4 {
            let delay = backoff.next_delay();
            assert!(
                delay <= 10 * MS * 2u32.pow(attempt),
                "attempt {attempt}: {delay:?}"
            );
        }
        let at_cap: Vec<Duration> = (0..1000).map(|_| backoff.next_delay()).collect();
        assert!(at_cap.iter().all(|d| *d <= 50 * MS));
        // Full jitter is uniform over [0, cap]: the mean sits near cap / 2.
        let mean = at_cap.iter().sum::<Duration>() / 1000;
        assert!(mean > 20 * MS && mean < 30 * MS, "mean {mean:?}");
    }
}
