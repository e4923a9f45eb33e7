//! HTTP Basic credentials for the dashboard, the read API and the export.
//!
//! The username and password are compared as SHA-256 digests in constant
//! time, so neither their length nor their content changes the timing. A
//! header that cannot be read (not base64, not UTF-8, no colon) is a 401 like
//! any wrong credential.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use crate::error::ApiError;
use crate::keys::{self, KeyHash};
use crate::routes::{check_auth_throttle, ClientIp};
use crate::SharedState;

/// The expected credentials, as digests.
pub struct DashboardCredentials {
    username: KeyHash,
    password: KeyHash,
    /// A password made at start-up because none was configured (development only).
    generated: Option<SecretString>,
}

impl DashboardCredentials {
    /// Uses the configured password, or generates a random one when none is
    /// set; production settings always carry one.
    pub fn new(username: &str, password: Option<&SecretString>) -> Self {
        let generated = match password {
            Some(_) => None,
            None => Some(SecretString::from(keys::generate())),
        };
        let password = password
            .or(generated.as_ref())
            .map(|secret| secret.expose_secret())
            .unwrap_or_default();
        Self {
            username: KeyHash::of(username),
            password: KeyHash::of(password),
            generated,
        }
    }

    /// Returns the generated password, if the service made one.
    pub fn generated_password(&self) -> Option<&str> {
        self.generated.as_ref().map(|secret| secret.expose_secret())
    }

    /// Checks an `Authorization` header. Both digests are always compared.
    pub fn verify(&self, headers: &HeaderMap) -> Outcome {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Outcome::Missing;
        };
        let Some((username, password)) = decode_basic(value.as_bytes()) else {
            return Outcome::Wrong;
        };
        let username_ok = self.username.matches(&KeyHash::of(&username));
        let password_ok = self.password.matches(&KeyHash::of(&password));
        if username_ok & password_ok {
            Outcome::Valid
        } else {
            Outcome::Wrong
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    /// No `Authorization` header, as a browser's first request.
    Missing,
    Wrong,
}

/// Splits `Basic <base64(user:password)>` at the first colon, so that a
/// password may contain colons. The scheme is case-insensitive.
fn decode_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some((username.to_owned(), password.to_owned()))
}

/// Proof that a request carried the dashboard credentials.
pub struct Administrator;

impl FromRequestParts<SharedState> for Administrator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(ClientIp(client_ip)) = ClientIp::from_request_parts(parts, state).await;
        check_auth_throttle(state, client_ip).await?;
        match state.dashboard.verify(&parts.headers) {
            Outcome::Valid => Ok(Administrator),
            Outcome::Missing => Err(ApiError::DashboardUnauthorized),
            Outcome::Wrong => {
                state.limits.record_auth_failure(client_ip).await;
                tracing::warn!(client_ip = %client_ip, "dashboard authentication failed");
                Err(ApiError::DashboardUnauthorized)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap(),
        );
        headers
    }

    fn basic(credentials: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(credentials)).into_bytes()
    }

    #[test]
    fn credentials_are_checked() {
        let expected = DashboardCredentials::new("admin", Some(&SecretString::from("pa:ss:word")));
        assert_eq!(
            expected.verify(&headers(&basic("admin:pa:ss:word"))),
            Outcome::Valid
        );
        assert_eq!(
            expected.verify(&headers(b"bAsIc YWRtaW46cGE6c3M6d29yZA==")),
            Outcome::Valid
        );
        assert_eq!(
            expected.verify(&headers(&basic("admin:pa:ss"))),
            Outcome::Wrong
        );
        assert_eq!(
            expected.verify(&headers(&basic("Admin:pa:ss:word"))),
            Outcome::Wrong
        );
        assert_eq!(expected.verify(&headers(&basic("admin"))), Outcome::Wrong);
        assert_eq!(
            expected.verify(&headers(b"Basic !!!not-base64")),
            Outcome::Wrong
        );
        assert_eq!(
            expected.verify(&headers(b"Bearer YWRtaW46cGE6c3M6d29yZA==")),
            Outcome::Wrong
        );
        assert_eq!(expected.verify(&HeaderMap::new()), Outcome::Missing);
        let not_utf8 = format!("Basic {}", STANDARD.encode([0xff, 0xfe, b':', b'x']));
        assert_eq!(
            expected.verify(&headers(not_utf8.as_bytes())),
            Outcome::Wrong
        );
        assert!(expected.generated_password().is_none());
    }

    #[test]
    fn missing_password_is_generated() {
        let generated = DashboardCredentials::new("admin", None);
        let password = generated.generated_password().unwrap().to_owned();
        assert!(password.len() >= 32);
        assert_eq!(
            generated.verify(&headers(&basic(&format!("admin:{password}")))),
            Outcome::Valid
        );
        assert_eq!(generated.verify(&headers(&basic("admin:"))), Outcome::Wrong);
    }
}
