//! Rate limits shared between replicas through Redis.
//!
//! Each check is one Lua script that Redis runs atomically, so that two
//! replicas checking the same key at the same moment cannot both take the
//! last request of a burst. The GCRA script keeps the theoretical arrival
//! time (TAT) of each key in microseconds of the Redis server's clock
//! (`TIME`), so that replicas whose clocks disagree still agree on every
//! decision. A key expires once its quota has refilled completely, which is
//! at most one quota period after its last request. The failed-authentication
//! throttle is a fixed-window counter.
//!
//! Keys are short and carry the configured prefix: `{prefix}rl:{limit}:{key}`
//! for GCRA limits, such as `kpi:rl:events:203.0.113.7`, and
//! `{prefix}af:{address}` for failed authentications. IPv6 addresses arrive
//! here already reduced to their /64 network.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use crate::settings::Quota;

/// GCRA as governor computes it, with the burst tolerance `tau = (N - 1) * T`:
/// a request at `now` conforms when `now >= TAT - tau`, and then TAT becomes
/// `max(TAT, now) + T`. A missing key means a full burst. Redis 5 and later
/// replicate a script by its effects, which `TIME` needs; the
/// `replicate_commands` call turns that on in Redis 3.2 and 4.
const GCRA_SCRIPT: &str = r#"
-- KEYS[1]: the key's TAT in microseconds of the server clock.
-- ARGV[1]: the emission interval T in microseconds. ARGV[2]: the burst N.
-- Returns {1, remaining burst, 0} for a conforming request, which is
-- counted, and {0, 0, wait in microseconds} for a rejected one.
if redis.replicate_commands then
  redis.replicate_commands()
end
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local allowed_at = tat - tolerance
if now < allowed_at then
  return {0, 0, allowed_at - now}
end
local next_tat = tat + interval
local expiry_ms = math.ceil((next_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', expiry_ms)
return {1, math.floor((now + tolerance + interval - next_tat) / interval), 0}
"#;

/// Counts a failed authentication in a fixed window that starts with the
/// first failure. The expiry is set again if it is missing, so that a counter
/// can never outlive its window.
const COUNT_FAILURE_SCRIPT: &str = r#"
-- KEYS[1]: the failure counter of one address. ARGV[1]: the window in ms.
-- Returns the number of failures in the window, this one included.
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"#;

/// Reads whether an address has reached the failure maximum of its window.
const FAILURE_BLOCK_SCRIPT: &str = r#"
-- KEYS[1]: the failure counter of one address. ARGV[1]: the failures that block.
-- Returns the milliseconds left in the window when the address is blocked, else 0.
local count = tonumber(redis.call('GET', KEYS[1]))
if count == nil or count < tonumber(ARGV[1]) then
  return 0
end
return math.max(redis.call('PTTL', KEYS[1]), 0)
"#;

/// The outcome of one GCRA check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request conforms and was counted. `remaining` more requests would
    /// conform right now.
    Allowed { remaining: u32 },
    /// The request was rejected and not counted. The next one conforms after `wait`.
    Denied { wait: Duration },
}

/// Redis operations of the shared rate limits, without timeouts. The caller
/// bounds each call with a timeout (see `fallback::Shared`).
pub struct SharedLimiter {
    connection: ConnectionManager,
    server: String,
    prefix: String,
    gcra: Script,
    count_failure: Script,
    failure_block: Script,
}

impl SharedLimiter {
    /// Creates the client for `url` without connecting. The connection opens
    /// on the first call and reopens by itself after a failure. Must be
    /// called inside a Tokio runtime.
    pub fn new(url: &str, prefix: &str, response_timeout: Duration) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        // Only the address is kept for logs, because the URL may carry a password.
        let server = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(response_timeout))
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            server,
            prefix: prefix.to_owned(),
            gcra: Script::new(GCRA_SCRIPT),
            count_failure: Script::new(COUNT_FAILURE_SCRIPT),
            failure_block: Script::new(FAILURE_BLOCK_SCRIPT),
        })
    }

    /// Returns the server's `host:port`, without credentials.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Counts one request of `key` against the GCRA `quota` of `limit`, such
    /// as `events` or `center_events`, if it conforms.
    pub async fn check(&self, limit: &str, key: &str, quota: Quota) -> RedisResult<Verdict> {
        let (allowed, remaining, wait_micros): (i64, i64, i64) = self
            .gcra
            .key(format!("{}rl:{limit}:{key}", self.prefix))
            .arg(emission_interval_micros(quota))
            .arg(quota.count)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(if allowed == 1 {
            Verdict::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
            }
        } else {
            Verdict::Denied {
                wait: Duration::from_micros(u64::try_from(wait_micros).unwrap_or(0)),
            }
        })
    }

    /// Counts a failed authentication from `address` and returns the number
    /// of failures in its current window of length `window`.
    pub async fn record_failure(&self, address: IpAddr, window: Duration) -> RedisResult<u32> {
        self.count_failure
            .key(self.failure_key(address))
            .arg(u64::try_from(window.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut self.connection.clone())
            .await
    }

    /// Returns how long `address` stays blocked after `max_failures` failures
    /// in its window, or `None` when it may try.
    pub async fn failure_block(
        &self,
        address: IpAddr,
        max_failures: u32,
    ) -> RedisResult<Option<Duration>> {
        let millis: u64 = self
            .failure_block
            .key(self.failure_key(address))
            .arg(max_failures)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok((millis > 0).then(|| Duration::from_millis(millis)))
    }

    /// Sends `PING`.
    pub async fn ping(&self) -> RedisResult<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection.clone())
            .await
            .map(drop)
    }

    fn failure_key(&self, address: IpAddr) -> String {
        format!("{}af:{address}", self.prefix)
    }
}

/// Returns the GCRA emission interval `period / count` in whole microseconds,
/// at least 1.
///
/// NOTE: governor keeps nanoseconds, but Lua numbers are doubles, which hold
/// microseconds since 1970 exactly and nanoseconds not. So a quota above a
/// million requests a second per key is enforced as a million a second.
fn emission_interval_micros(quota: Quota) -> u64 {
    let micros = quota.period.as_micros() / u128::from(quota.count.max(1));
    u64::try_from(micros).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emission_interval_is_period_over_count() {
        let quota = |count, seconds| Quota {
            count,
            period: Duration::from_secs(seconds),
        };
        assert_eq!(emission_interval_micros(quota(100, 86_400)), 864_000_000);
        assert_eq!(emission_interval_micros(quota(3, 1)), 333_333);
        assert_eq!(emission_interval_micros(quota(1_000_000_000, 1)), 1);
    }
}
