//! Redis calls that fail open. A call that fails, or that takes longer than
//! [`CALL_TIMEOUT`], returns `None`, and the caller decides with its
//! in-process limiter instead. After a failure, calls are skipped for
//! [`BYPASS_AFTER_FAILURE`], so that an unreachable Redis slows down at most
//! the requests that arrive while one call waits for its timeout. Failures
//! are counted in `kpi_redis_errors_total` and logged at most once per
//! [`WARNING_INTERVAL`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::RedisResult;

use super::shared::SharedLimiter;
use crate::metrics::Metrics;

/// The maximum time a request waits for one Redis call of the rate limits.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);

/// How long calls are skipped after a failure.
pub const BYPASS_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The minimum time between two warnings about failed calls.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The shared limiter with its timeouts and failure bookkeeping.
pub struct Shared {
    pub limiter: SharedLimiter,
    availability: Availability,
    metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(limiter: SharedLimiter, metrics: Arc<Metrics>) -> Self {
        metrics.register_redis();
        Self {
            limiter,
            availability: Availability::default(),
            metrics,
        }
    }

    /// Runs `operation` within [`CALL_TIMEOUT`]. Returns `None` when it
    /// fails, times out, or is skipped after a recent failure.
    pub async fn call<T>(&self, operation: impl Future<Output = RedisResult<T>>) -> Option<T> {
        if self.availability.is_bypassed(Instant::now()) {
            return None;
        }
        self.bounded(CALL_TIMEOUT, operation).await
    }

    /// Sends `PING` within `timeout`, even while calls are skipped, and
    /// returns whether Redis responded.
    pub async fn ping(&self, timeout: Duration) -> bool {
        self.bounded(timeout, self.limiter.ping()).await.is_some()
    }

    async fn bounded<T>(
        &self,
        timeout: Duration,
        operation: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(timeout, operation).await {
            Ok(Ok(value)) => {
                self.succeeded();
                Some(value)
            }
            Ok(Err(err)) => {
                self.failed("error", &err.to_string());
                None
            }
            Err(_) => {
                let message = format!("no response within {} ms", timeout.as_millis());
                self.failed("timeout", &message);
                None
            }
        }
    }

    fn succeeded(&self) {
        self.metrics.redis_reached();
        if self.availability.record_success() {
            tracing::info!(
                server = self.limiter.server(),
                "Redis is reachable again; rate limits are shared between replicas again"
            );
        }
    }

    fn failed(&self, reason: &str, error: &str) {
        self.metrics.redis_failed(reason);
        if let Some(suppressed) = self.availability.record_failure(Instant::now()) {
            tracing::warn!(
                server = self.limiter.server(),
                error,
                suppressed_warnings = suppressed,
                "Redis call failed; each replica enforces the rate limits in process until Redis answers"
            );
        }
    }
}

/// The state of the Redis calls: whether the last one failed, when to try
/// again, and when the last warning was logged.
#[derive(Debug, Default)]
pub struct Availability {
    state: Mutex<AvailabilityState>,
}

#[derive(Debug, Default)]
struct AvailabilityState {
    failing: bool,
    bypass_until: Option<Instant>,
    last_warning: Option<Instant>,
    suppressed_warnings: u64,
}

impl Availability {
    fn lock(&self) -> std::sync::MutexGuard<'_, AvailabilityState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns whether calls are skipped at `now` after a recent failure.
    pub fn is_bypassed(&self, now: Instant) -> bool {
        self.lock().bypass_until.is_some_and(|until| now < until)
    }

    /// Notes a successful call. Returns true when it ends a run of failures.
    pub fn record_success(&self) -> bool {
        let mut state = self.lock();
        state.bypass_until = None;
        std::mem::replace(&mut state.failing, false)
    }

    /// Notes a failed call at `now`. Returns the number of warnings
    /// suppressed since the last one when a warning is due, else `None`.
    pub fn record_failure(&self, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        state.failing = true;
        state.bypass_until = Some(now + BYPASS_AFTER_FAILURE);
        let due = state
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL);
        if due {
            state.last_warning = Some(now);
            Some(std::mem::take(&mut state.suppressed_warnings))
        } else {
            state.suppressed_warnings += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_at_most_once_a_minute() {
        let availability = Availability::default();
        let start = Instant::now();

        assert_eq!(availability.record_failure(start), Some(0));
        assert_eq!(
            availability.record_failure(start + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            availability.record_failure(start + Duration::from_secs(59)),
            None
        );
        assert_eq!(
            availability.record_failure(start + WARNING_INTERVAL),
            Some(2)
        );
    }

    #[test]
    fn failure_bypasses_calls_briefly() {
        let availability = Availability::default();
        let start = Instant::now();
        assert!(!availability.is_bypassed(start));

        availability.record_failure(start);

        assert!(availability.is_bypassed(start + Duration::from_millis(999)));
        assert!(!availability.is_bypassed(start + BYPASS_AFTER_FAILURE));
    }

    #[test]
    fn success_ends_failures_and_bypass() {
        let availability = Availability::default();
        let start = Instant::now();
        assert!(!availability.record_success());

        availability.record_failure(start);

        assert!(availability.record_success());
        assert!(!availability.is_bypassed(start));
        assert!(!availability.record_success());
    }
}
