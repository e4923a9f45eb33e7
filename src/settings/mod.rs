//! Service settings, read once at start-up from the environment (and a `.env`
//! file loaded before). Every invalid value stops start-up with one line that
//! names the variable, the problem and the accepted forms.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

pub use parse::parse_quota;
use parse::{
    parse_bool, parse_count, parse_database_url, parse_direct_url, parse_environment,
    parse_header_name, parse_host, parse_log_level, parse_origins, parse_port, parse_port_named,
    parse_proxies, parse_redis_key_prefix, parse_redis_url, parse_seconds,
    parse_transaction_pooler, quota_text,
};

mod parse;

/// The example password of the old service's `.env.example`, refused in production.
const OLD_EXAMPLE_PASSWORD: &str = "change-this-secure-password";
const MIN_PASSWORD_CHARS: usize = 16;
const MIN_MASTER_KEY_CHARS: usize = 32;

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

/// Origins allowed to call the service from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No CORS headers at all.
    None,
    /// Any origin, without credentials (`*`, refused in production).
    Any,
    /// These origins (`scheme://host[:port]`), with credentials.
    List(Vec<String>),
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
    pub allowed_origins: AllowedOrigins,
    /// Peers whose forwarded headers are trusted; empty means none.
    pub trusted_proxies: Vec<IpNet>,
    /// The header a trusted proxy puts the client address in, lower case.
    pub client_ip_header: String,
    pub dashboard_username: String,
    pub dashboard_password: Option<SecretString>,
    pub center_api_key: Option<SecretString>,
    pub rate_limit_submit: Quota,
    pub rate_limit_events: Quota,
    pub rate_limit_dashboard: Quota,
    /// The per-IP quota of `/health` and `/health/ready`.
    pub rate_limit_health: Quota,
    pub rate_limit_center_submit: Quota,
    pub rate_limit_center_events: Quota,
    pub sentry_dsn: Option<SecretString>,
    pub log_level: String,
    /// A request still running after this long gets 503.
    pub request_timeout: Duration,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// How long a connection may take to send a request's headers, and how
    /// long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Client connections served at once. Further ones wait to be accepted.
    pub max_connections: u32,
    /// A folder for daily log files, besides the console.
    pub log_dir: Option<std::path::PathBuf>,
    /// A separate port for `/metrics` without credentials; without it,
    /// `/metrics` is served on the main port behind the dashboard credentials.
    pub metrics_port: Option<u16>,
    /// Most connections the service opens to the database.
    pub database_pool_size: u32,
    /// How long a request waits for a free connection before it gets 503.
    pub database_acquire_timeout: Duration,
    /// A URL of the same PostgreSQL database without a pooler in between,
    /// for migrations, which hold a session lock while they run.
    pub database_direct_url: Option<String>,
    /// `DATABASE_URL` leads to a pooler in transaction mode, such as
    /// PgBouncer with `pool_mode = transaction`.
    pub database_transaction_pooler: bool,
    /// The Redis server that shares every rate limit between replicas, a
    /// `redis://` or `rediss://` URL. Unset: the limits live in this process.
    pub redis_url: Option<SecretString>,
    /// The prefix of every Redis key the service writes, so that several
    /// deployments can share one Redis.
    pub redis_key_prefix: String,
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

/// Returns the default pool size. SQLite writes one transaction at a time
/// and each connection keeps a page cache of its own, so a few connections
/// serve as well as many and take far less memory.
fn default_pool_size(url: &DatabaseUrl) -> u32 {
    match url {
        DatabaseUrl::Postgres(_) => 10,
        DatabaseUrl::Sqlite(_) => 4,
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
        let rate_limit_center_submit = parse_quota(
            "RATE_LIMIT_CENTER_SUBMIT",
            get("RATE_LIMIT_CENTER_SUBMIT"),
            &quota_text(rate_limit_submit),
        )?;
        let rate_limit_center_events = parse_quota(
            "RATE_LIMIT_CENTER_EVENTS",
            get("RATE_LIMIT_CENTER_EVENTS"),
            &quota_text(rate_limit_events),
        )?;
        let database_url = parse_database_url(get("DATABASE_URL"))?;
        let database_direct_url = parse_direct_url(get("DATABASE_DIRECT_URL"), &database_url)?;
        let database_transaction_pooler = parse_transaction_pooler(
            get("DATABASE_TRANSACTION_POOLER"),
            &database_url,
            database_direct_url.as_deref(),
        )?;
        let settings = Settings {
            database_url: database_url.clone(),
            database_direct_url,
            database_transaction_pooler,
            host: parse_host(get("HOST"))?,
            port: parse_port(get("PORT"))?,
            environment,
            app_title: get("APP_TITLE").unwrap_or_else(|| "PetHospital KPI Service".to_owned()),
            app_version: get("APP_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            enable_docs: parse_bool("ENABLE_DOCS", get("ENABLE_DOCS"), !production)?,
            allowed_origins: parse_origins(get("ALLOWED_ORIGINS"))?,
            trusted_proxies: parse_proxies(get("TRUSTED_PROXIES"))?,
            client_ip_header: parse_header_name(get("CLIENT_IP_HEADER"))?,
            dashboard_username: get("DASHBOARD_USERNAME").unwrap_or_else(|| "admin".to_owned()),
            dashboard_password: get("DASHBOARD_PASSWORD").map(SecretString::from),
            center_api_key: get("CENTER_API_KEY").map(SecretString::from),
            rate_limit_submit,
            rate_limit_events,
            rate_limit_dashboard,
            rate_limit_health: parse_quota(
                "RATE_LIMIT_HEALTH",
                get("RATE_LIMIT_HEALTH"),
                "60/minute",
            )?,
            rate_limit_center_submit,
            rate_limit_center_events,
            sentry_dsn: get("SENTRY_DSN").map(SecretString::from),
            log_level: parse_log_level(get("LOG_LEVEL"))?,
            request_timeout: parse_seconds("REQUEST_TIMEOUT", get("REQUEST_TIMEOUT"), 30)?,
            shutdown_timeout: parse_seconds("SHUTDOWN_TIMEOUT", get("SHUTDOWN_TIMEOUT"), 20)?,
            header_read_timeout: parse_seconds(
                "HEADER_READ_TIMEOUT",
                get("HEADER_READ_TIMEOUT"),
                30,
            )?,
            max_connections: parse_count(
                "MAX_CONNECTIONS",
                get("MAX_CONNECTIONS"),
                1000,
                1..=1_000_000,
                "an integer from 1 to 1000000",
            )?,
            log_dir: get("LOG_DIR").map(std::path::PathBuf::from),
            metrics_port: get("METRICS_PORT")
                .map(|port| parse_port_named("METRICS_PORT", &port))
                .transpose()?,
            database_pool_size: parse_count(
                "DATABASE_POOL_SIZE",
                get("DATABASE_POOL_SIZE"),
                default_pool_size(&database_url),
                1..=1000,
                "an integer from 1 to 1000",
            )?,
            database_acquire_timeout: parse_seconds(
                "DATABASE_ACQUIRE_TIMEOUT",
                get("DATABASE_ACQUIRE_TIMEOUT"),
                5,
            )?,
            redis_url: parse_redis_url(get("REDIS_URL"))?,
            redis_key_prefix: parse_redis_key_prefix(get("REDIS_KEY_PREFIX"))?,
        };
        settings.check_production()?;
        Ok(settings)
    }

    /// Rejects settings that are unsafe in production, naming the setting and the fix.
    fn check_production(&self) -> Result<(), SettingsError> {
        if self.environment != Environment::Production {
            return Ok(());
        }
        if self.allowed_origins == AllowedOrigins::Any {
            return Err(SettingsError::new(
                "ALLOWED_ORIGINS",
                "*",
                "any origin is not allowed in production",
                "the dashboard's origins, such as https://admin.example.com",
            ));
        }
        const PASSWORD: &str =
            "a password of at least 16 characters, such as the output of: openssl rand -base64 24";
        let password = self.dashboard_password.as_ref().map(|p| p.expose_secret());
        match password {
            None => {
                return Err(SettingsError::secret(
                    "DASHBOARD_PASSWORD",
                    "missing in production",
                    PASSWORD,
                ))
            }
            Some(OLD_EXAMPLE_PASSWORD) => {
                let problem = "the example value of the old service's .env.example";
                return Err(SettingsError::secret(
                    "DASHBOARD_PASSWORD",
                    problem,
                    PASSWORD,
                ));
            }
            Some(password) if password.chars().count() < MIN_PASSWORD_CHARS => {
                let problem = format!("shorter than {MIN_PASSWORD_CHARS} characters");
                return Err(SettingsError::secret(
                    "DASHBOARD_PASSWORD",
                    problem,
                    PASSWORD,
                ));
            }
            Some(_) => {}
        }
        if self
            .master_key()
            .is_some_and(|key| key.chars().count() < MIN_MASTER_KEY_CHARS)
        {
            return Err(SettingsError::secret(
                "CENTER_API_KEY",
                format!("shorter than {MIN_MASTER_KEY_CHARS} characters"),
                "a random key of at least 32 characters, such as the output of: openssl rand -base64 32, or no master key",
            ));
        }
        Ok(())
    }

    /// Returns the master key, if one is configured.
    pub fn master_key(&self) -> Option<&str> {
        self.center_api_key.as_ref().map(|key| key.expose_secret())
    }

    /// Returns the database pool's size, acquire timeout and pooler mode.
    pub fn pool_config(&self) -> crate::store::PoolConfig {
        crate::store::PoolConfig {
            max_connections: self.database_pool_size,
            acquire_timeout: self.database_acquire_timeout,
            transaction_pooler: self.database_transaction_pooler,
        }
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

#[cfg(test)]
mod tests;
