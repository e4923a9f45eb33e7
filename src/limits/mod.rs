//! Rate limits. A quota `N/period` is a GCRA quota: a burst of N requests,
//! refilled evenly, one request every period/N.
//!
//! Per-IP limits guard each route group through tower_governor, keyed on the
//! resolved client address. Per-center limits are checked inside the write
//! handlers, after authentication, because the center code is known only from
//! the body. A center therefore cannot exceed them by spreading its requests
//! over many addresses.

mod auth_failures;
mod ip_key;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use axum::response::IntoResponse;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::{GovernorError, GovernorLayer};

pub use auth_failures::{AuthFailures, MAX_FAILURES, WINDOW};
pub use ip_key::{bucket, ClientIpKey};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::{Quota, Settings};

/// `/health` and `/health/ready` allow this many requests a minute per client.
pub const HEALTH_QUOTA: Quota = Quota {
    count: 60,
    period: Duration::from_secs(60),
};

/// How often the state of keys whose quota has refilled is dropped.
pub const CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// A route group with a per-IP limit of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Submit,
    Events,
    Dashboard,
    Health,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Submit => "submit",
            Group::Events => "events",
            Group::Dashboard => "dashboard",
            Group::Health => "health",
        }
    }
}

type IpConfig = Arc<GovernorConfig<ClientIpKey, StateInformationMiddleware>>;

/// Every limiter of the service.
pub struct Limits {
    submit: (IpConfig, Quota),
    events: (IpConfig, Quota),
    dashboard: (IpConfig, Quota),
    health: (IpConfig, Quota),
    center_submit: (DefaultKeyedRateLimiter<String>, Quota),
    center_events: (DefaultKeyedRateLimiter<String>, Quota),
    pub auth_failures: AuthFailures,
    metrics: Arc<Metrics>,
}

fn ip_config(quota: Quota) -> (IpConfig, Quota) {
    let config = GovernorConfigBuilder::default()
        .period(quota.period / quota.count)
        .burst_size(quota.count)
        .key_extractor(ClientIpKey)
        .use_headers()
        .finish()
        .expect("a quota has a count of at least 1 and a period of at least 1 s");
    (Arc::new(config), quota)
}

fn keyed(quota: Quota) -> (DefaultKeyedRateLimiter<String>, Quota) {
    let burst = NonZeroU32::new(quota.count).unwrap_or(NonZeroU32::MIN);
    let gcra = governor::Quota::with_period(quota.period / quota.count)
        .expect("a quota's period is at least 1 s")
        .allow_burst(burst);
    (RateLimiter::keyed(gcra), quota)
}

impl Limits {
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            submit: ip_config(settings.rate_limit_submit),
            events: ip_config(settings.rate_limit_events),
            dashboard: ip_config(settings.rate_limit_dashboard),
            health: ip_config(HEALTH_QUOTA),
            center_submit: keyed(settings.rate_limit_center_submit),
            center_events: keyed(settings.rate_limit_center_events),
            auth_failures: AuthFailures::default(),
            metrics,
        }
    }

    fn ip(&self, group: Group) -> &(IpConfig, Quota) {
        match group {
            Group::Submit => &self.submit,
            Group::Events => &self.events,
            Group::Dashboard => &self.dashboard,
            Group::Health => &self.health,
        }
    }

    /// Builds the per-IP limit layer of a route group. A rejected request gets a 429
    /// problem document.
    pub fn layer(
        &self,
        group: Group,
    ) -> GovernorLayer<ClientIpKey, StateInformationMiddleware, Body> {
        let (config, quota) = self.ip(group).clone();
        let metrics = self.metrics.clone();
        GovernorLayer::new(config).error_handler(move |error| {
            metrics.rate_limited(group.as_str());
            refusal(error, group, quota)
        })
    }

    /// Counts one write of `center` against its per-center quota.
    pub fn check_center(&self, group: Group, center: &str) -> Result<(), ApiError> {
        let (limiter, quota) = match group {
            Group::Events => &self.center_events,
            _ => &self.center_submit,
        };
        limiter.check_key(&center.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::warn!(center_code = ?center, group = group.as_str(), "per-center rate limit exceeded");
            self.metrics.rate_limited(&format!("center_{}", group.as_str()));
            ApiError::RateLimited { limit: quota.count, retry_after: retry_after_secs(wait) }
        })
    }

    /// Counts one dashboard request from `key`, as the per-IP layer does;
    /// for measurements.
    pub fn check_dashboard_key(&self, key: std::net::IpAddr) -> bool {
        self.dashboard.0.limiter().check_key(&key).is_ok()
    }

    /// Returns the number of addresses the dashboard limiter keeps state for.
    pub fn dashboard_keys(&self) -> usize {
        self.dashboard.0.limiter().len()
    }

    /// Drops limiter state of keys that are back at a full burst, so that
    /// memory follows recent traffic rather than every address ever seen.
    pub fn cleanup(&self) {
        for (config, _) in [&self.submit, &self.events, &self.dashboard, &self.health] {
            config.limiter().retain_recent();
            config.limiter().shrink_to_fit();
        }
        for (limiter, _) in [&self.center_submit, &self.center_events] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.auth_failures.purge();
    }

    /// Runs [`Limits::cleanup`] every [`CLEANUP_INTERVAL`] until the returned task is aborted.
    pub fn spawn_cleanup(limits: Arc<Limits>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(CLEANUP_INTERVAL);
            loop {
                interval.tick().await;
                limits.cleanup();
            }
        })
    }
}

/// Rounds a wait up to whole seconds, at least 1, as `Retry-After` wants.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

fn refusal(error: GovernorError, group: Group, quota: Quota) -> Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            tracing::warn!(group = group.as_str(), "per-IP rate limit exceeded");
            // tower_governor gives the wait rounded down to whole seconds, so one
            // second is added to round up, so that a client never retries too early.
            let retry_after = wait_time + 1;
            ApiError::RateLimited {
                limit: quota.count,
                retry_after,
            }
            .into_response()
        }
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => ApiError::Internal(
            format!("rate limiter of group {} failed: {error}", group.as_str()),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(300)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }

    #[test]
    fn center_quota_burst_then_rate() {
        let limits = keyed(Quota {
            count: 2,
            period: Duration::from_secs(1),
        })
        .0;
        assert!(limits.check_key(&"HVC".to_owned()).is_ok());
        assert!(limits.check_key(&"HVC".to_owned()).is_ok());
        assert!(limits.check_key(&"HVC".to_owned()).is_err());
        assert!(limits.check_key(&"CVN".to_owned()).is_ok());
    }
}
