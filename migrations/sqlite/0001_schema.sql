-- The KPI schema for the embedded SQLite database. Dates are stored as
-- YYYY-MM-DD text and timestamps as RFC 3339 text in UTC, so that they sort
-- and compare as text.

CREATE TABLE centers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    code          TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    api_key       TEXT,
    country       TEXT,
    city          TEXT,
    is_active     INTEGER NOT NULL DEFAULT 1,
    registered_at TEXT    NOT NULL,
    last_sync_at  TEXT
);

CREATE TABLE daily_metrics (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id     INTEGER NOT NULL REFERENCES centers (id),
    date          TEXT    NOT NULL,
    total_orders  INTEGER NOT NULL DEFAULT 0,
    total_results INTEGER NOT NULL DEFAULT 0,
    total_pets    INTEGER NOT NULL DEFAULT 0,
    total_owners  INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT    NOT NULL,
    UNIQUE (center_id, date)
);

CREATE TABLE test_summaries (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id INTEGER NOT NULL REFERENCES centers (id),
    date      TEXT    NOT NULL,
    test_code TEXT    NOT NULL,
    test_name TEXT,
    count     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (center_id, date, test_code)
);

CREATE TABLE species_summaries (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id INTEGER NOT NULL REFERENCES centers (id),
    date      TEXT    NOT NULL,
    species   TEXT    NOT NULL,
    count     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (center_id, date, species)
);

CREATE TABLE breed_summaries (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id INTEGER NOT NULL REFERENCES centers (id),
    date      TEXT    NOT NULL,
    breed     TEXT    NOT NULL,
    species   TEXT,
    count     INTEGER NOT NULL DEFAULT 0
);
-- A breed without species is one key: NULL species compare equal here.
CREATE UNIQUE INDEX breed_summaries_center_day_breed
    ON breed_summaries (center_id, date, breed, coalesce(species, ''));

CREATE TABLE performance_metrics (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id                 INTEGER NOT NULL REFERENCES centers (id),
    date                      TEXT    NOT NULL,
    avg_order_processing_time INTEGER,
    peak_hour                 INTEGER,
    peak_hour_orders          INTEGER,
    completion_rate           INTEGER,
    same_day_completion       INTEGER,
    morning_orders            INTEGER NOT NULL DEFAULT 0,
    afternoon_orders          INTEGER NOT NULL DEFAULT 0,
    evening_orders            INTEGER NOT NULL DEFAULT 0,
    night_orders              INTEGER NOT NULL DEFAULT 0,
    created_at                TEXT    NOT NULL,
    UNIQUE (center_id, date)
);

CREATE TABLE module_metrics (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id        INTEGER NOT NULL REFERENCES centers (id),
    date             TEXT    NOT NULL,
    module_name      TEXT    NOT NULL,
    operations_count INTEGER NOT NULL DEFAULT 0,
    active_users     INTEGER NOT NULL DEFAULT 0,
    total_revenue    INTEGER,
    avg_transaction  INTEGER,
    created_at       TEXT    NOT NULL,
    UNIQUE (center_id, date, module_name)
);

CREATE TABLE system_usage_metrics (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id             INTEGER NOT NULL REFERENCES centers (id),
    date                  TEXT    NOT NULL,
    total_active_users    INTEGER NOT NULL DEFAULT 0,
    peak_concurrent_users INTEGER NOT NULL DEFAULT 0,
    avg_session_duration  INTEGER,
    web_access_count      INTEGER NOT NULL DEFAULT 0,
    mobile_access_count   INTEGER NOT NULL DEFAULT 0,
    desktop_access_count  INTEGER NOT NULL DEFAULT 0,
    total_workstations    INTEGER NOT NULL DEFAULT 0,
    created_at            TEXT    NOT NULL,
    UNIQUE (center_id, date)
);

CREATE TABLE payment_method_metrics (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id         INTEGER NOT NULL REFERENCES centers (id),
    date              TEXT    NOT NULL,
    payment_method    TEXT    NOT NULL,
    transaction_count INTEGER NOT NULL DEFAULT 0,
    total_amount      INTEGER,
    created_at        TEXT    NOT NULL,
    UNIQUE (center_id, date, payment_method)
);

-- Keys as SHA-256 digests in hex; a center may hold several while a rotated
-- key's grace period runs.
CREATE TABLE center_api_keys (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    center_id  INTEGER NOT NULL REFERENCES centers (id) ON DELETE CASCADE,
    key_hash   TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    expires_at TEXT
);
CREATE INDEX center_api_keys_center ON center_api_keys (center_id);
