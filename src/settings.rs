//! Service settings, read once at start-up from the environment (and a `.env`
//! file loaded before). Every invalid value stops start-up with one line that
//! names the variable, the problem and the accepted forms.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// File used when `DATABASE_URL` is not set, relative to the working directory.
pub const DEFAULT_SQLITE_FILE: &str = "kpi-service.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

/// The database the service stores its data in, chosen from the URL scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(String),
}

impl fmt::Debug for DatabaseUrl {
    // A PostgreSQL URL may carry a password, so only the scheme is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(_) => f.write_str("Postgres(\"postgres://[redacted]\")"),
            DatabaseUrl::Sqlite(url) => write!(f, "Sqlite({url:?})"),
        }
    }
}

/// A rate quota: a burst of `count` requests, refilled evenly over `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u32,
    pub period: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    pub host: IpAddr,
    pub port: u16,
    pub environment: Environment,
    pub app_title: String,
    pub app_version: String,
    pub enable_docs: bool,
    pub allowed_origins: Vec<String>,
    pub dashboard_username: String,
    pub dashboard_password: Option<SecretString>,
    pub center_api_key: Option<SecretString>,
    pub rate_limit_submit: Quota,
    pub rate_limit_events: Quota,
    pub rate_limit_dashboard: Quota,
    pub sentry_dsn: Option<SecretString>,
    pub log_level: String,
}

/// An invalid setting: which variable, what is wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}={shown}: {problem}; expected {expected}")]
pub struct SettingsError {
    pub name: &'static str,
    shown: String,
    problem: String,
    expected: &'static str,
}

impl SettingsError {
    fn new(
        name: &'static str,
        value: &str,
        problem: impl Into<String>,
        expected: &'static str,
    ) -> Self {
        Self {
            name,
            shown: format!("{value:?}"),
            problem: problem.into(),
            expected,
        }
    }

    /// Builds an error for a secret setting without echoing its value.
    fn secret(name: &'static str, problem: impl Into<String>, expected: &'static str) -> Self {
        Self {
            name,
            shown: "[redacted]".to_owned(),
            problem: problem.into(),
            expected,
        }
    }
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`, which returns a variable's value.
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let environment = parse_environment(get("ENVIRONMENT"))?;
        let production = environment == Environment::Production;
        let rate_limit_submit =
            parse_quota("RATE_LIMIT_SUBMIT", get("RATE_LIMIT_SUBMIT"), "100/day")?;
        let rate_limit_events =
            parse_quota("RATE_LIMIT_EVENTS", get("RATE_LIMIT_EVENTS"), "1000/day")?;
        let rate_limit_dashboard = parse_quota(
            "RATE_LIMIT_DASHBOARD",
            get("RATE_LIMIT_DASHBOARD"),
            "60/minute",
        )?;
        let settings = Settings {
            database_url: parse_database_url(get("DATABASE_URL"))?,
            host: parse_host(get("HOST"))?,
            port: parse_port(get("PORT"))?,
            environment,
            app_title: get("APP_TITLE").unwrap_or_else(|| "PetHospital KPI Service".to_owned()),
            app_version: get("APP_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            enable_docs: parse_bool("ENABLE_DOCS", get("ENABLE_DOCS"), !production)?,
            allowed_origins: parse_origins(get("ALLOWED_ORIGINS")),
            dashboard_username: get("DASHBOARD_USERNAME").unwrap_or_else(|| "admin".to_owned()),
            dashboard_password: get("DASHBOARD_PASSWORD").map(SecretString::from),
            center_api_key: get("CENTER_API_KEY").map(SecretString::from),
            rate_limit_submit,
            rate_limit_events,
            rate_limit_dashboard,
            sentry_dsn: get("SENTRY_DSN").map(SecretString::from),
            log_level: get("LOG_LEVEL").unwrap_or_else(|| "INFO".to_owned()),
        };
        settings.check_production()?;
        Ok(settings)
    }

    /// Rejects settings that are unsafe in production.
    fn check_production(&self) -> Result<(), SettingsError> {
        if self.environment != Environment::Production {
            return Ok(());
        }
        if self.dashboard_password.is_none() {
            return Err(SettingsError::secret(
                "DASHBOARD_PASSWORD",
                "missing in production",
                "a password of at least 16 characters",
            ));
        }
        Ok(())
    }

    /// Returns the master key, if one is configured.
    pub fn master_key(&self) -> Option<&str> {
        self.center_api_key.as_ref().map(|key| key.expose_secret())
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

fn parse_environment(value: Option<String>) -> Result<Environment, SettingsError> {
    const EXPECTED: &str = "development, staging or production";
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("development") => Ok(Environment::Development),
        Some("staging") => Ok(Environment::Staging),
        Some("production") => Ok(Environment::Production),
        Some(_) => Err(SettingsError::new(
            "ENVIRONMENT",
            value.as_deref().unwrap_or_default(),
            "unknown environment",
            EXPECTED,
        )),
    }
}

fn parse_database_url(value: Option<String>) -> Result<DatabaseUrl, SettingsError> {
    const EXPECTED: &str = "a postgres://, postgresql:// or sqlite:// URL";
    let Some(url) = value else {
        return Ok(DatabaseUrl::Sqlite(format!(
            "sqlite://{DEFAULT_SQLITE_FILE}"
        )));
    };
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => Ok(DatabaseUrl::Postgres(url)),
        Some("sqlite") => Ok(DatabaseUrl::Sqlite(url)),
        Some(other) => {
            let problem = format!("unsupported scheme {other:?}");
            // Only the scheme is echoed: the rest of the URL may hold a password.
            Err(SettingsError::secret("DATABASE_URL", problem, EXPECTED))
        }
        None => Err(SettingsError::secret("DATABASE_URL", "not a URL", EXPECTED)),
    }
}

fn parse_host(value: Option<String>) -> Result<IpAddr, SettingsError> {
    let Some(text) = value else {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    };
    let text = if text == "localhost" {
        "127.0.0.1"
    } else {
        text.as_str()
    };
    text.parse().map_err(|_| {
        SettingsError::new(
            "HOST",
            text,
            "not an IP address",
            "an IPv4 or IPv6 address such as 0.0.0.0",
        )
    })
}

fn parse_port(value: Option<String>) -> Result<u16, SettingsError> {
    let Some(text) = value else { return Ok(8000) };
    text.parse().map_err(|_| {
        SettingsError::new(
            "PORT",
            &text,
            "not a port number",
            "an integer from 0 to 65535",
        )
    })
}

fn parse_bool(
    name: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, SettingsError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(SettingsError::new(
            name,
            &text,
            "not a boolean",
            "true or false (also 1/0, yes/no, on/off)",
        )),
    }
}

fn parse_origins(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|origin| origin.trim().trim_end_matches('/').to_owned())
        .filter(|origin| !origin.is_empty())
        .collect()
}

/// Parses `N/second`, `N/minute`, `N/hour` or `N/day` with N at least 1.
pub fn parse_quota(
    name: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<Quota, SettingsError> {
    const EXPECTED: &str = "N/second, N/minute, N/hour or N/day with N at least 1";
    let text = value.unwrap_or_else(|| default.to_owned());
    let invalid = |problem: &str| SettingsError::new(name, &text, problem, EXPECTED);
    let (count, unit) = text.split_once('/').ok_or_else(|| invalid("missing '/'"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| invalid("the count is not a whole number"))?;
    if count == 0 {
        return Err(invalid("the count must be at least 1"));
    }
    let seconds = match unit.trim().to_ascii_lowercase().as_str() {
        "second" | "seconds" | "s" => 1,
        "minute" | "minutes" | "m" => 60,
        "hour" | "hours" | "h" => 3_600,
        "day" | "days" | "d" => 86_400,
        _ => return Err(invalid("unknown period")),
    };
    Ok(Quota {
        count,
        period: Duration::from_secs(seconds),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.database_url,
            DatabaseUrl::Sqlite("sqlite://kpi-service.db".into())
        );
        assert_eq!(s.host.to_string(), "127.0.0.1");
        assert_eq!(s.port, 8000);
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.app_title, "PetHospital KPI Service");
        assert!(s.enable_docs);
        assert_eq!(s.dashboard_username, "admin");
        assert_eq!(
            s.rate_limit_submit,
            Quota {
                count: 100,
                period: Duration::from_secs(86_400)
            }
        );
        assert_eq!(
            s.rate_limit_events,
            Quota {
                count: 1000,
                period: Duration::from_secs(86_400)
            }
        );
        assert_eq!(
            s.rate_limit_dashboard,
            Quota {
                count: 60,
                period: Duration::from_secs(60)
            }
        );
        assert!(s.center_api_key.is_none());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases = [
            ("PORT", "abc", "invalid PORT=\"abc\": not a port number"),
            (
                "RATE_LIMIT_SUBMIT",
                "5/fortnight",
                "invalid RATE_LIMIT_SUBMIT=\"5/fortnight\": unknown period",
            ),
            ("RATE_LIMIT_EVENTS", "0/day", "the count must be at least 1"),
            (
                "DATABASE_URL",
                "mysql://x",
                "invalid DATABASE_URL=[redacted]: unsupported scheme \"mysql\"",
            ),
            (
                "ENVIRONMENT",
                "prod",
                "invalid ENVIRONMENT=\"prod\": unknown environment",
            ),
            (
                "ENABLE_DOCS",
                "maybe",
                "invalid ENABLE_DOCS=\"maybe\": not a boolean",
            ),
        ];
        for (name, value, expected) in cases {
            let message = settings(&[(name, value)]).unwrap_err().to_string();
            assert!(message.contains(expected), "{name}: {message}");
            assert!(message.contains("expected"), "{name}: {message}");
        }
    }

    #[test]
    fn production_requires_a_dashboard_password() {
        let err = settings(&[("ENVIRONMENT", "production")]).unwrap_err();
        assert_eq!(err.name, "DASHBOARD_PASSWORD");
        let ok = settings(&[
            ("ENVIRONMENT", "production"),
            ("DASHBOARD_PASSWORD", "a-long-enough-password"),
        ])
        .unwrap();
        assert!(!ok.enable_docs);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://user:hunter2@db/kpi"),
            ("CENTER_API_KEY", "master-secret-value"),
            ("DASHBOARD_PASSWORD", "dashboard-secret-value"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("master-secret-value"), "{shown}");
        assert!(!shown.contains("dashboard-secret-value"), "{shown}");
    }

    #[test]
    fn origins_are_trimmed() {
        let s = settings(&[(
            "ALLOWED_ORIGINS",
            " https://a.example/ ,, https://b.example",
        )])
        .unwrap();
        assert_eq!(
            s.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
    }
}
