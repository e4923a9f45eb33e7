//! Tests of settings parsing and the production checks.
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
        " https://a.example/ ,, https://b.example:8443",
    )])
    .unwrap();
    let expected = vec![
        "https://a.example".to_owned(),
        "https://b.example:8443".to_owned(),
    ];
    assert_eq!(s.allowed_origins, AllowedOrigins::List(expected));
    assert_eq!(settings(&[]).unwrap().allowed_origins, AllowedOrigins::None);
    assert_eq!(
        settings(&[("ALLOWED_ORIGINS", " * ")])
            .unwrap()
            .allowed_origins,
        AllowedOrigins::Any
    );
}

#[test]
fn invalid_origins_stop_start_up() {
    for value in [
        "https://a.example,*",
        "a.example",
        "https://a.example/path",
        "https://",
        "https://a b",
    ] {
        let err = settings(&[("ALLOWED_ORIGINS", value)]).unwrap_err();
        assert_eq!(err.name, "ALLOWED_ORIGINS", "{value}");
    }
}

#[test]
fn proxies_and_client_header() {
    let s = settings(&[
        ("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,fd00::/8"),
        ("CLIENT_IP_HEADER", "X-Real-IP"),
    ])
    .unwrap();
    assert_eq!(s.trusted_proxies.len(), 3);
    assert_eq!(s.client_ip_header, "x-real-ip");
    assert_eq!(settings(&[]).unwrap().client_ip_header, "x-forwarded-for");
    assert_eq!(
        settings(&[("TRUSTED_PROXIES", "10.0.0.0/33")])
            .unwrap_err()
            .name,
        "TRUSTED_PROXIES"
    );
    assert_eq!(
        settings(&[("CLIENT_IP_HEADER", "bad header")])
            .unwrap_err()
            .name,
        "CLIENT_IP_HEADER"
    );
}

#[test]
fn center_limits_default_to_ip_limits() {
    let s = settings(&[("RATE_LIMIT_SUBMIT", "5/hour")]).unwrap();
    assert_eq!(
        s.rate_limit_center_submit,
        Quota {
            count: 5,
            period: Duration::from_secs(3600)
        }
    );
    assert_eq!(s.rate_limit_center_events, s.rate_limit_events);
    let own = settings(&[("RATE_LIMIT_CENTER_EVENTS", "3/second")]).unwrap();
    assert_eq!(
        own.rate_limit_center_events,
        Quota {
            count: 3,
            period: Duration::from_secs(1)
        }
    );
}

#[test]
fn production_refusals_name_the_setting() {
    let strong = "a-strong-dashboard-password";
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 5] = [
        (
            &[("DASHBOARD_PASSWORD", "short")],
            "DASHBOARD_PASSWORD",
            "shorter than 16",
        ),
        (
            &[("DASHBOARD_PASSWORD", "change-this-secure-password")],
            "DASHBOARD_PASSWORD",
            "example value",
        ),
        (
            &[("DASHBOARD_PASSWORD", strong), ("ALLOWED_ORIGINS", "*")],
            "ALLOWED_ORIGINS",
            "not allowed in production",
        ),
        (
            &[
                ("DASHBOARD_PASSWORD", strong),
                ("CENTER_API_KEY", "too-short"),
            ],
            "CENTER_API_KEY",
            "shorter than 32",
        ),
        (&[], "DASHBOARD_PASSWORD", "missing"),
    ];
    for (pairs, name, problem) in cases {
        let mut all = pairs.to_vec();
        all.push(("ENVIRONMENT", "production"));
        let err = settings(&all).unwrap_err();
        assert_eq!(err.name, name);
        assert!(err.to_string().contains(problem), "{err}");
        assert!(
            !err.to_string().contains("too-short"),
            "secrets are not echoed: {err}"
        );
    }
    let ok = settings(&[
        ("ENVIRONMENT", "production"),
        ("DASHBOARD_PASSWORD", strong),
        ("CENTER_API_KEY", "0123456789abcdef0123456789abcdef"),
    ]);
    assert!(ok.is_ok());
}

#[test]
fn log_level_typos_stop_start_up() {
    for valid in [
        "DEBUG",
        "warning",
        "CRITICAL",
        "info,sqlx=warn",
        "kpi_service=debug",
    ] {
        assert!(settings(&[("LOG_LEVEL", valid)]).is_ok(), "{valid}");
    }
    for invalid in ["WARNINGS", "garbage", "info,sqlx=loud"] {
        assert_eq!(
            settings(&[("LOG_LEVEL", invalid)]).unwrap_err().name,
            "LOG_LEVEL",
            "{invalid}"
        );
    }
}

#[test]
fn quota_finer_than_a_nanosecond_rejected() {
    let err = settings(&[("RATE_LIMIT_SUBMIT", "1000000001/second")]).unwrap_err();
    assert_eq!(err.name, "RATE_LIMIT_SUBMIT");
    assert!(settings(&[("RATE_LIMIT_SUBMIT", "1000000000/second")]).is_ok());
}

#[test]
fn database_pool_settings() {
    let defaults = settings(&[]).unwrap().pool_config();
    assert_eq!(defaults.max_connections, 4, "SQLite");
    assert_eq!(defaults.acquire_timeout, Duration::from_secs(5));
    let postgres = settings(&[("DATABASE_URL", "postgres://kpi@127.0.0.1/kpi")])
        .unwrap()
        .pool_config();
    assert_eq!(postgres.max_connections, 10, "PostgreSQL");

    let set = settings(&[
        ("DATABASE_POOL_SIZE", "2"),
        ("DATABASE_ACQUIRE_TIMEOUT", "1"),
    ])
    .unwrap()
    .pool_config();
    assert_eq!(set.max_connections, 2);
    assert_eq!(set.acquire_timeout, Duration::from_secs(1));

    for size in ["0", "1001", "ten"] {
        let err = settings(&[("DATABASE_POOL_SIZE", size)]).unwrap_err();
        assert_eq!(err.name, "DATABASE_POOL_SIZE");
        assert!(
            err.to_string().contains("an integer from 1 to 1000"),
            "{err}"
        );
    }
    let err = settings(&[("DATABASE_ACQUIRE_TIMEOUT", "0")]).unwrap_err();
    assert_eq!(err.name, "DATABASE_ACQUIRE_TIMEOUT");
}

#[test]
fn connection_settings() {
    let defaults = settings(&[]).unwrap();
    assert_eq!(defaults.header_read_timeout, Duration::from_secs(30));
    assert_eq!(defaults.max_connections, 1000);

    let set = settings(&[("HEADER_READ_TIMEOUT", "5"), ("MAX_CONNECTIONS", "20")]).unwrap();
    assert_eq!(set.header_read_timeout, Duration::from_secs(5));
    assert_eq!(set.max_connections, 20);

    for timeout in ["0", "-1", "1.5"] {
        let err = settings(&[("HEADER_READ_TIMEOUT", timeout)]).unwrap_err();
        assert_eq!(err.name, "HEADER_READ_TIMEOUT");
    }
    for count in ["0", "1000001", "many"] {
        let err = settings(&[("MAX_CONNECTIONS", count)]).unwrap_err();
        assert_eq!(err.name, "MAX_CONNECTIONS");
        assert!(
            err.to_string().contains("an integer from 1 to 1000000"),
            "{err}"
        );
    }
}

#[test]
fn transaction_pooler_needs_postgres_and_a_direct_url() {
    assert!(!settings(&[]).unwrap().pool_config().transaction_pooler);
    let pooled = "postgres://kpi@pooler.internal:6432/kpi";
    let direct = "postgres://kpi@db.internal:5432/kpi";

    let set = settings(&[
        ("DATABASE_URL", pooled),
        ("DATABASE_DIRECT_URL", direct),
        ("DATABASE_TRANSACTION_POOLER", "true"),
    ])
    .unwrap();
    assert!(set.pool_config().transaction_pooler);

    let err = settings(&[
        ("DATABASE_URL", pooled),
        ("DATABASE_TRANSACTION_POOLER", "true"),
    ])
    .unwrap_err();
    assert_eq!(err.name, "DATABASE_DIRECT_URL");
    assert!(err.to_string().contains("session lock"), "{err}");

    let err = settings(&[("DATABASE_TRANSACTION_POOLER", "true")]).unwrap_err();
    assert_eq!(err.name, "DATABASE_TRANSACTION_POOLER");
    assert!(err.to_string().contains("false with SQLite"), "{err}");
    assert!(err.to_string().contains("DATABASE_URL unset"), "{err}");

    let err = settings(&[
        ("DATABASE_URL", pooled),
        ("DATABASE_DIRECT_URL", direct),
        ("DATABASE_TRANSACTION_POOLER", "sometimes"),
    ])
    .unwrap_err();
    assert_eq!(err.name, "DATABASE_TRANSACTION_POOLER");

    let off = settings(&[("DATABASE_TRANSACTION_POOLER", "false")]).unwrap();
    assert!(!off.pool_config().transaction_pooler);
}

#[test]
fn redis_url_accepts_redis_schemes() {
    let unset = settings(&[]).unwrap();
    assert!(unset.redis_url.is_none());
    assert_eq!(unset.redis_key_prefix, "kpi:");

    for url in [
        "redis://127.0.0.1:6379/0",
        "rediss://default:hunter2@cache.example:6380",
    ] {
        let set = settings(&[("REDIS_URL", url)]).unwrap();
        assert_eq!(set.redis_url.unwrap().expose_secret(), url);
    }
    let prefixed = settings(&[("REDIS_KEY_PREFIX", "kpi-staging:")]).unwrap();
    assert_eq!(prefixed.redis_key_prefix, "kpi-staging:");
}

#[test]
fn redis_url_never_echoed() {
    let cases = [
        (
            "http://user:hunter2@cache:6379",
            "unsupported scheme \"http\"",
        ),
        ("user:hunter2@cache:6379", "not a URL"),
        ("redis://user:hunter2@cache:port", "not a valid Redis URL"),
    ];
    for (url, problem) in cases {
        let err = settings(&[("REDIS_URL", url)]).unwrap_err();
        assert_eq!(err.name, "REDIS_URL");
        assert!(err.to_string().contains(problem), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
    let set = settings(&[("REDIS_URL", "redis://user:hunter2@cache:6379")]).unwrap();
    let shown = format!("{set:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn redis_key_prefix_rejects_spaces() {
    for prefix in ["kpi prod:", &"k".repeat(65)] {
        let err = settings(&[("REDIS_KEY_PREFIX", prefix)]).unwrap_err();
        assert_eq!(err.name, "REDIS_KEY_PREFIX");
    }
}
