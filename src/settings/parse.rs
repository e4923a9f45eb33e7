//! Parsers for single settings. Each returns a [`SettingsError`] that names
//! the variable, the problem and the accepted forms.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

use super::{AllowedOrigins, DatabaseUrl, Environment, Quota, SettingsError, DEFAULT_SQLITE_FILE};

pub fn parse_environment(value: Option<String>) -> Result<Environment, SettingsError> {
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

pub fn parse_database_url(value: Option<String>) -> Result<DatabaseUrl, SettingsError> {
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

/// Parses `DATABASE_DIRECT_URL`: a PostgreSQL URL, allowed only when
/// `DATABASE_URL` is one too.
pub fn parse_direct_url(
    value: Option<String>,
    database_url: &DatabaseUrl,
) -> Result<Option<String>, SettingsError> {
    const EXPECTED: &str = "the postgres:// URL of the same database without a pooler in between";
    let Some(url) = value else {
        return Ok(None);
    };
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
        return Err(SettingsError::secret(
            "DATABASE_DIRECT_URL",
            "not a PostgreSQL URL",
            EXPECTED,
        ));
    }
    if !matches!(database_url, DatabaseUrl::Postgres(_)) {
        return Err(SettingsError::secret(
            "DATABASE_DIRECT_URL",
            "set while the database is SQLite (DATABASE_URL unset or sqlite://)",
            "no DATABASE_DIRECT_URL with SQLite, or a postgres:// DATABASE_URL",
        ));
    }
    Ok(Some(url))
}

/// Parses `DATABASE_TRANSACTION_POOLER`, true when `DATABASE_URL` leads to a
/// pooler in transaction mode. Such a pooler needs PostgreSQL and a direct
/// URL for the migrations, whose session lock it cannot keep.
pub fn parse_transaction_pooler(
    value: Option<String>,
    database_url: &DatabaseUrl,
    direct_url: Option<&str>,
) -> Result<bool, SettingsError> {
    const NAME: &str = "DATABASE_TRANSACTION_POOLER";
    let text = value.clone().unwrap_or_default();
    if !parse_bool(NAME, value, false)? {
        return Ok(false);
    }
    if !matches!(database_url, DatabaseUrl::Postgres(_)) {
        return Err(SettingsError::new(
            NAME,
            &text,
            "set while the database is SQLite (DATABASE_URL unset or sqlite://)",
            "false with SQLite, or a postgres:// DATABASE_URL",
        ));
    }
    if direct_url.is_none() {
        return Err(SettingsError::new(
            "DATABASE_DIRECT_URL",
            "",
            "missing while DATABASE_TRANSACTION_POOLER is true; migrations hold a session lock, \
             which a pooler in transaction mode cannot keep",
            "the postgres:// URL of the same database without a pooler in between",
        ));
    }
    Ok(true)
}

/// Parses `REDIS_URL`: a `redis://` or `rediss://` URL that the Redis client
/// accepts. Errors never echo the URL, because it may carry a password.
pub fn parse_redis_url(value: Option<String>) -> Result<Option<SecretString>, SettingsError> {
    const EXPECTED: &str = "a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0";
    let Some(url) = value else {
        return Ok(None);
    };
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "rediss") => {}
        Some(other) => {
            let problem = format!("unsupported scheme {other:?}");
            return Err(SettingsError::secret("REDIS_URL", problem, EXPECTED));
        }
        None => return Err(SettingsError::secret("REDIS_URL", "not a URL", EXPECTED)),
    }
    if redis::Client::open(url.as_str()).is_err() {
        return Err(SettingsError::secret(
            "REDIS_URL",
            "not a valid Redis URL",
            EXPECTED,
        ));
    }
    Ok(Some(SecretString::from(url)))
}

/// Parses `REDIS_KEY_PREFIX` (default `kpi:`), which takes up to 64 visible
/// ASCII characters.
pub fn parse_redis_key_prefix(value: Option<String>) -> Result<String, SettingsError> {
    const EXPECTED: &str = "1 to 64 visible ASCII characters, such as kpi: or kpi-staging:";
    let Some(prefix) = value else {
        return Ok("kpi:".to_owned());
    };
    if prefix.len() > 64 || !prefix.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(SettingsError::new(
            "REDIS_KEY_PREFIX",
            &prefix,
            "too long or not visible ASCII",
            EXPECTED,
        ));
    }
    Ok(prefix)
}

pub fn parse_host(value: Option<String>) -> Result<IpAddr, SettingsError> {
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

/// Parses a port number for the setting `name`.
pub fn parse_port_named(name: &'static str, text: &str) -> Result<u16, SettingsError> {
    text.parse().map_err(|_| {
        SettingsError::new(
            name,
            text,
            "not a port number",
            "an integer from 0 to 65535",
        )
    })
}

pub fn parse_port(value: Option<String>) -> Result<u16, SettingsError> {
    value.map_or(Ok(8000), |text| parse_port_named("PORT", &text))
}

pub fn parse_bool(
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

/// Parses the CORS origins: trimmed, empty entries dropped, a trailing `/`
/// removed. `*` alone means any origin.
pub fn parse_origins(value: Option<String>) -> Result<AllowedOrigins, SettingsError> {
    const EXPECTED: &str = "a comma-separated list of scheme://host[:port] origins, or * alone";
    let Some(text) = value else {
        return Ok(AllowedOrigins::None);
    };
    let origins: Vec<String> = text
        .split(',')
        .map(|origin| origin.trim().trim_end_matches('/').to_owned())
        .filter(|origin| !origin.is_empty())
        .collect();
    if origins.iter().any(|origin| origin == "*") {
        if origins.len() > 1 {
            return Err(SettingsError::new(
                "ALLOWED_ORIGINS",
                &text,
                "* mixed with origins",
                EXPECTED,
            ));
        }
        return Ok(AllowedOrigins::Any);
    }
    if origins.is_empty() {
        return Ok(AllowedOrigins::None);
    }
    for origin in &origins {
        if !is_origin(origin) {
            let problem = format!("{origin:?} is not an origin");
            return Err(SettingsError::new(
                "ALLOWED_ORIGINS",
                &text,
                problem,
                EXPECTED,
            ));
        }
    }
    Ok(AllowedOrigins::List(origins))
}

/// Checks the `scheme://host[:port]` form, with no path, query or credentials.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok());
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
        && axum::http::HeaderValue::from_str(text).is_ok();
    scheme_ok && host_ok && port_ok
}

/// Parses `TRUSTED_PROXIES`: comma-separated CIDR blocks or single addresses.
pub fn parse_proxies(value: Option<String>) -> Result<Vec<IpNet>, SettingsError> {
    const EXPECTED: &str = "comma-separated CIDR blocks or addresses, such as 10.0.0.0/8,fd00::/8";
    let text = value.unwrap_or_default();
    let mut proxies = Vec::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let net = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                SettingsError::new(
                    "TRUSTED_PROXIES",
                    &text,
                    format!("{entry:?} is not a CIDR block"),
                    EXPECTED,
                )
            })?;
        proxies.push(net);
    }
    Ok(proxies)
}

/// Parses `CLIENT_IP_HEADER`, default `X-Forwarded-For`; returns it in lower case.
pub fn parse_header_name(value: Option<String>) -> Result<String, SettingsError> {
    const EXPECTED: &str = "a header name such as X-Forwarded-For or X-Real-IP";
    let text = value.unwrap_or_else(|| "X-Forwarded-For".to_owned());
    axum::http::HeaderName::from_bytes(text.as_bytes())
        .map(|name| name.as_str().to_owned())
        .map_err(|_| SettingsError::new("CLIENT_IP_HEADER", &text, "not a header name", EXPECTED))
}

/// Parses a whole number of seconds, at least 1.
pub fn parse_seconds(
    name: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<Duration, SettingsError> {
    let Some(text) = value else {
        return Ok(Duration::from_secs(default));
    };
    match text.parse::<u64>() {
        Ok(seconds) if seconds >= 1 => Ok(Duration::from_secs(seconds)),
        _ => Err(SettingsError::new(
            name,
            &text,
            "not a whole number of seconds",
            "an integer of at least 1",
        )),
    }
}

/// Parses a whole number within `range`; `expected` describes the range.
pub fn parse_count(
    name: &'static str,
    value: Option<String>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    expected: &'static str,
) -> Result<u32, SettingsError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.parse::<u32>() {
        Ok(count) if range.contains(&count) => Ok(count),
        _ => Err(SettingsError::new(
            name,
            &text,
            "not a whole number in range",
            expected,
        )),
    }
}

/// Writes a quota back in the form it is read, for defaults derived from another setting.
pub fn quota_text(quota: Quota) -> String {
    let unit = match quota.period.as_secs() {
        1 => "second",
        60 => "minute",
        3_600 => "hour",
        _ => "day",
    };
    format!("{}/{unit}", quota.count)
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
    // One request per nanosecond is the finest rate the limiter can represent.
    if count > 1_000_000_000 {
        return Err(invalid("the count must be at most 1000000000"));
    }
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

/// Checks `LOG_LEVEL`: an old level name, or tracing directives whose every
/// part is a level or `target=level`. A typo would otherwise silence the log.
pub fn parse_log_level(value: Option<String>) -> Result<String, SettingsError> {
    const EXPECTED: &str =
        "DEBUG, INFO, WARNING, ERROR or CRITICAL, or directives such as info,tower_http=debug";
    const LEVELS: [&str; 9] = [
        "trace", "debug", "info", "warn", "warning", "error", "critical", "off", "",
    ];
    let text = value.unwrap_or_else(|| "INFO".to_owned());
    let valid = text.split(',').all(|part| {
        let level = part.rsplit_once('=').map_or(part, |(_, level)| level);
        LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
    });
    if valid {
        Ok(text)
    } else {
        Err(SettingsError::new(
            "LOG_LEVEL",
            &text,
            "unknown level",
            EXPECTED,
        ))
    }
}
