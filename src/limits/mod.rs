//! Rate limits. A quota `N/period` is a GCRA quota: a burst of N requests,
//! refilled evenly, one request every period/N.
//!
//! Per-IP limits guard each route group, keyed on the resolved client
//! address. Per-center limits are checked inside the write handlers, after
//! authentication, because the center code is known only from the body. A
//! center therefore cannot exceed them by spreading its requests over many
//! addresses.
//!
//! Without `REDIS_URL`, every limit lives in this process: tower_governor
//! layers for the per-IP limits, governor limiters for the per-center
//! limits, and [`AuthFailures`]. With `REDIS_URL`, Redis decides every limit
//! for all replicas together (see [`shared`]), and the in-process limiters
//! still count every request. When a Redis call fails or times out, the
//! request is decided by those in-process limiters, so each replica keeps
//! enforcing the limits on its own share of the traffic (see [`fallback`]).

mod auth_failures;
pub mod fallback;
mod ip_key;
mod ip_layer;
pub mod shared;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use axum::response::IntoResponse;
use axum::Router;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{NotUntil, RateLimiter};
use secrecy::ExposeSecret;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::{GovernorError, GovernorLayer};

pub use auth_failures::{AuthFailures, MAX_FAILURES, WINDOW};
pub use ip_key::{bucket, ClientIpKey};
pub use shared::{SharedLimiter, Verdict};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::settings::{Quota, Settings};
use fallback::{Shared, CALL_TIMEOUT};

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
type CenterLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Every limiter of the service.
pub struct Limits {
    submit: (IpConfig, Quota),
    events: (IpConfig, Quota),
    dashboard: (IpConfig, Quota),
    health: (IpConfig, Quota),
    center_submit: (CenterLimiter, Quota),
    center_events: (CenterLimiter, Quota),
    auth_failures: AuthFailures,
    /// Redis, when `REDIS_URL` is set.
    shared: Option<Shared>,
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

fn keyed(quota: Quota) -> (CenterLimiter, Quota) {
    let burst = NonZeroU32::new(quota.count).unwrap_or(NonZeroU32::MIN);
    let gcra = governor::Quota::with_period(quota.period / quota.count)
        .expect("a quota's period is at least 1 s")
        .allow_burst(burst);
    (RateLimiter::keyed(gcra).with_middleware(), quota)
}

/// Turns an in-process GCRA decision into a [`Verdict`].
fn local_verdict(
    decision: Result<governor::middleware::StateSnapshot, NotUntil<governor::clock::QuantaInstant>>,
) -> Verdict {
    match decision {
        Ok(snapshot) => Verdict::Allowed {
            remaining: snapshot.remaining_burst_capacity(),
        },
        Err(not_until) => Verdict::Denied {
            wait: not_until.wait_time_from(DefaultClock::default().now()),
        },
    }
}

/// Creates the Redis limiter for `REDIS_URL`, if it is set.
fn connect_shared(settings: &Settings, metrics: &Arc<Metrics>) -> Option<Shared> {
    let url = settings.redis_url.as_ref()?;
    match SharedLimiter::new(
        url.expose_secret(),
        &settings.redis_key_prefix,
        CALL_TIMEOUT,
    ) {
        Ok(limiter) => {
            tracing::info!(
                server = limiter.server(),
                key_prefix = %settings.redis_key_prefix,
                "rate limits are shared between replicas through Redis"
            );
            Some(Shared::new(limiter, metrics.clone()))
        }
        Err(err) => {
            // The settings check the URL, so this is not expected. The error
            // text contains no credentials.
            tracing::error!(
                error = %err,
                "failed to create the Redis client for REDIS_URL, so the rate limits stay in this process"
            );
            None
        }
    }
}

impl Limits {
    /// Builds every limiter. With `REDIS_URL` set, this creates the Redis
    /// client, so it must run inside a Tokio runtime.
    pub fn new(settings: &Settings, metrics: Arc<Metrics>) -> Self {
        Self {
            submit: ip_config(settings.rate_limit_submit),
            events: ip_config(settings.rate_limit_events),
            dashboard: ip_config(settings.rate_limit_dashboard),
            health: ip_config(settings.rate_limit_health),
            center_submit: keyed(settings.rate_limit_center_submit),
            center_events: keyed(settings.rate_limit_center_events),
            auth_failures: AuthFailures::default(),
            shared: connect_shared(settings, &metrics),
            metrics,
        }
    }

    /// Returns whether the limits are shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn ip(&self, group: Group) -> &(IpConfig, Quota) {
        match group {
            Group::Submit => &self.submit,
            Group::Events => &self.events,
            Group::Dashboard => &self.dashboard,
            Group::Health => &self.health,
        }
    }

    /// Puts `router` behind the per-IP limit of `group`. Without Redis that
    /// is the tower_governor layer, and with Redis a middleware that checks
    /// the limit in Redis.
    pub fn limit_ip<S>(self: &Arc<Self>, group: Group, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        if self.is_shared() {
            ip_layer::shared_ip_limit(self.clone(), group, router)
        } else {
            router.layer(self.layer(group))
        }
    }

    /// Counts one request from `ip`'s bucket against the per-IP limit of
    /// `group`, in this process and, with Redis, across the replicas.
    pub async fn check_ip(&self, group: Group, ip: IpAddr) -> Verdict {
        let (config, quota) = self.ip(group);
        let local = local_verdict(config.limiter().check_key(&ip));
        let Some(shared) = &self.shared else {
            return local;
        };
        let key = ip.to_string();
        shared
            .call(shared.limiter.check(group.as_str(), &key, *quota))
            .await
            .unwrap_or(local)
    }

    /// Returns the quota of the per-IP limit of `group`.
    pub fn ip_quota(&self, group: Group) -> Quota {
        self.ip(group).1
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Builds the in-process per-IP limit layer of a route group. A rejected
    /// request gets a 429 problem document.
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
    pub async fn check_center(&self, group: Group, center: &str) -> Result<(), ApiError> {
        let (limiter, quota, name) = match group {
            Group::Events => (&self.center_events.0, self.center_events.1, "center_events"),
            _ => (&self.center_submit.0, self.center_submit.1, "center_submit"),
        };
        let mut verdict = local_verdict(limiter.check_key(&center.to_owned()));
        if let Some(shared) = &self.shared {
            let checked = shared.call(shared.limiter.check(name, center, quota)).await;
            verdict = checked.unwrap_or(verdict);
        }
        match verdict {
            Verdict::Allowed { .. } => Ok(()),
            Verdict::Denied { wait } => {
                tracing::warn!(center_code = ?center, group = group.as_str(), "per-center rate limit exceeded");
                self.metrics.rate_limited(name);
                Err(ApiError::RateLimited {
                    limit: quota.count,
                    retry_after: retry_after_secs(wait),
                })
            }
        }
    }

    /// Returns how long `ip` stays blocked after too many failed
    /// authentications, or `None` when it may try.
    pub async fn auth_blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        if let Some(shared) = &self.shared {
            let ip = bucket(ip);
            let call = shared.limiter.failure_block(ip, MAX_FAILURES);
            if let Some(blocked) = shared.call(call).await {
                return blocked;
            }
        }
        self.auth_failures.blocked_for(ip)
    }

    /// Counts a failed authentication from `ip`, and logs once per window
    /// when `ip` becomes blocked.
    pub async fn record_auth_failure(&self, ip: IpAddr) {
        let mut failures = self.auth_failures.record(ip);
        if let Some(shared) = &self.shared {
            let call = shared.limiter.record_failure(bucket(ip), WINDOW);
            failures = shared.call(call).await.unwrap_or(failures);
        }
        if failures == MAX_FAILURES {
            tracing::warn!(
                client_ip = %bucket(ip),
                failures = MAX_FAILURES,
                "too many failed authentication attempts; further attempts get 429 for the rest of the minute"
            );
        }
    }

    /// Returns whether Redis responds to a `PING` within `timeout`, or `None`
    /// without `REDIS_URL`.
    pub async fn redis_reachable(&self, timeout: Duration) -> Option<bool> {
        let shared = self.shared.as_ref()?;
        Some(shared.ping(timeout).await)
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

    /// Runs [`Limits::cleanup`] every [`CLEANUP_INTERVAL`], and with Redis
    /// also a `PING`, until the returned task is aborted. The first round
    /// runs at once, so a Redis that is unreachable at start-up is logged.
    pub fn spawn_maintenance(limits: Arc<Limits>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(CLEANUP_INTERVAL);
            loop {
                interval.tick().await;
                limits.cleanup();
                limits.redis_reachable(Duration::from_secs(1)).await;
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
