//! Center key authentication for the write endpoints.
//!
//! A key arrives in the `X-API-Key` header or, from old clients, as `api_key`
//! in the JSON body; the header wins. It may be one of the center's own keys
//! or the master key from `CENTER_API_KEY`. Only digests are compared, in
//! constant time, and no key or digest is ever logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::Utc;

use crate::center_cache::CenterCache;
use crate::keys::KeyHash;
use crate::store::{CenterAuth, Store, StoreError};

pub const API_KEY_HEADER: &str = "x-api-key";

pub const MISSING_KEY_DETAIL: &str =
    "API key required. Provide via X-API-Key header or request body.";

/// A key presented by a request, hashed at once.
#[derive(Debug, Clone, Copy)]
pub struct PresentedKey {
    pub hash: KeyHash,
    pub from_body: bool,
}

impl PresentedKey {
    /// Takes the key from the header, else from the body. An empty value
    /// counts as absent. A header that is not ASCII is still hashed as bytes,
    /// so it fails like any other wrong key.
    pub fn from_request(headers: &HeaderMap, body_key: Option<&str>) -> Option<Self> {
        if let Some(value) = headers
            .get(API_KEY_HEADER)
            .filter(|v| !v.as_bytes().is_empty())
        {
            return Some(Self {
                hash: KeyHash::of_bytes(value.as_bytes()),
                from_body: false,
            });
        }
        body_key.filter(|key| !key.is_empty()).map(|key| Self {
            hash: KeyHash::of(key),
            from_body: true,
        })
    }
}

/// The identity a request proved.
#[derive(Debug, Clone)]
pub enum Caller {
    /// One of the center's own keys, not expired.
    CenterKey(CenterAuth),
    /// The master key, for a center that exists.
    Master(CenterAuth),
    /// The master key, for a code not registered yet.
    MasterForUnknownCenter,
}

impl Caller {
    pub fn center(&self) -> Option<&CenterAuth> {
        match self {
            Caller::CenterKey(center) | Caller::Master(center) => Some(center),
            Caller::MasterForUnknownCenter => None,
        }
    }
}

/// The reason authentication failed. Each endpoint chooses the detail it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingKey,
    /// Unknown center without the master key, or a key that matches nothing.
    InvalidKey,
    ExpiredKey,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingKey => "missing key",
            AuthFailure::InvalidKey => "invalid key",
            AuthFailure::ExpiredKey => "expired key",
        }
    }
}

pub enum AuthError {
    Failed(AuthFailure),
    Store(StoreError),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        AuthError::Store(err)
    }
}

/// Checks `presented` against the center `code` and the master key.
pub async fn authenticate(
    store: &dyn Store,
    centers: &CenterCache,
    master: Option<&KeyHash>,
    code: &str,
    presented: Option<PresentedKey>,
) -> Result<Caller, AuthError> {
    let presented = presented.ok_or(AuthError::Failed(AuthFailure::MissingKey))?;
    let is_master = master.is_some_and(|master| master.matches(&presented.hash));
    let Some(center) = centers.find(store, code).await? else {
        return if is_master {
            Ok(Caller::MasterForUnknownCenter)
        } else {
            Err(AuthError::Failed(AuthFailure::InvalidKey))
        };
    };
    // Every stored key is compared, so the time taken does not tell which matched.
    let now = Utc::now();
    let mut matched = None;
    for key in &center.keys {
        if key.hash.matches(&presented.hash) {
            matched = Some(key.expires_at.is_none_or(|at| at > now));
        }
    }
    match matched {
        Some(true) => Ok(Caller::CenterKey(center)),
        _ if is_master => Ok(Caller::Master(center)),
        Some(false) => Err(AuthError::Failed(AuthFailure::ExpiredKey)),
        None => Err(AuthError::Failed(AuthFailure::InvalidKey)),
    }
}

/// Logs the deprecation of body keys at most once an hour per center, so that
/// a clinic posting every minute does not flood the log. It is called only
/// after a successful authentication, so only holders of a valid key add to
/// the map.
#[derive(Debug, Default)]
pub struct BodyKeyWarnings {
    last_warned: Mutex<HashMap<String, Instant>>,
}

impl BodyKeyWarnings {
    const INTERVAL: Duration = Duration::from_secs(3600);

    /// Logs the warning unless it was logged for this center within the hour;
    /// returns whether it did.
    pub fn warn(&self, center_code: &str) -> bool {
        let now = Instant::now();
        let mut last_warned = self
            .last_warned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = last_warned
            .get(center_code)
            .is_none_or(|at| now.duration_since(*at) >= Self::INTERVAL);
        if due {
            last_warned.insert(center_code.to_owned(), now);
            tracing::warn!(
                center_code = ?center_code,
                "center sent its API key in the JSON body, which is deprecated; send it in the X-API-Key header"
            );
        }
        due
    }
}

/// Logs a failed attempt with the center code and client IP, never the key.
pub fn log_failure(failure: AuthFailure, code: &str, client_ip: IpAddr) {
    tracing::warn!(center_code = ?code, client_ip = %client_ip, reason = failure.as_str(), "authentication failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_key_warning_once_an_hour_per_center() {
        let warnings = BodyKeyWarnings::default();
        assert!(warnings.warn("HVC"));
        assert!(!warnings.warn("HVC"));
        assert!(warnings.warn("CVN"));
        let an_hour_ago = Instant::now() - BodyKeyWarnings::INTERVAL;
        warnings
            .last_warned
            .lock()
            .unwrap()
            .insert("HVC".to_owned(), an_hour_ago);
        assert!(warnings.warn("HVC"));
    }
}
