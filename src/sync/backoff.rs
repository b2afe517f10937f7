//! Exponential backoff with full jitter, capped.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay: uniformly random in [ceiling/2, ceiling], where the
    /// ceiling doubles per attempt up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let mut r = [0u8; 4];
        crate::domain::random_bytes(&mut r);
        let frac = f64::from(u32::from_be_bytes(r)) / f64::from(u32::MAX);
        ceiling.mul_f64(0.5 + 0.5 * frac)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_and_stay_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut ceilings = Vec::new();
        for i in 0..12 {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(5));
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {i}: {d:?}");
            ceilings.push(ceiling);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
