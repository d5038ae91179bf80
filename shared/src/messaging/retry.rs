//! The retry policy for transient handler failures: exponential backoff through TTL queues.

use std::time::Duration;

/// How often and how late a transiently failing message is tried again.
///
/// Attempt 1 is the first delivery. After failed attempt `n` (while `n < max_attempts`) the
/// message waits `base * factor^(n-1)` in a retry queue, then returns to the service queue.
/// After the last attempt it goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The delay after the first failure.
    pub base: Duration,
    /// The growth of the delay from one retry to the next.
    pub factor: u32,
    /// Total attempts, the first delivery included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// The settings table's `RETRY_BASE_MS`, `RETRY_FACTOR`, `RETRY_ATTEMPTS` (1 s, ×5, 5
    /// attempts: retries after 1 s, 5 s, 25 s and 125 s, then the DLQ).
    fn default() -> Self {
        super::MessagingConfig::default().retry
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), or `None` when it was the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exp = attempt.saturating_sub(1);
        let factor = u64::from(self.factor.max(1)).saturating_pow(exp);
        let millis = (self.base.as_millis() as u64).saturating_mul(factor);
        Some(Duration::from_millis(millis))
    }

    /// Every distinct delay the policy uses: one retry queue each.
    pub fn delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = (1..self.max_attempts)
            .filter_map(|a| self.delay_after(a))
            .collect();
        delays.dedup();
        delays
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_backs_off_exponentially_then_gives_up() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=5)
            .map(|a| p.delay_after(a).map_or(0, |d| d.as_secs()))
            .collect();
        assert_eq!(secs, [1, 5, 25, 125, 0]);
        assert_eq!(p.delays().len(), 4);
    }

    #[test]
    fn a_single_attempt_never_retries() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay_after(1), None);
        assert!(p.delays().is_empty());
    }
}
