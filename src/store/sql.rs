//! SQL shared by both backends. PostgreSQL and SQLite (3.35 or later) both
//! accept `$N` parameters, `ON CONFLICT ... DO UPDATE` and `RETURNING`, so one
//! text serves both; the backends differ only where noted in their modules.

pub const FIND_CENTER: &str =
    "SELECT id, code, name, city, country, is_active, registered_at, last_sync_at \
     FROM centers WHERE code = $1";

/// A center by its exact code, once per key; a center without keys comes
/// once with null key columns.
pub const CENTER_WITH_KEYS: &str =
    "SELECT c.id, c.code, c.name, c.is_active, k.key_hash, k.expires_at \
     FROM centers c LEFT JOIN center_api_keys k ON k.center_id = c.id WHERE c.code = $1";

pub const CENTER_KEYS: &str =
    "SELECT id, key_hash, expires_at FROM center_api_keys WHERE center_id = $1";

pub const ALL_CENTERS: &str =
    "SELECT id, code, name, city, country, is_active, registered_at, last_sync_at \
     FROM centers ORDER BY code";

pub const ALL_KEYS: &str = "SELECT id, center_id, key_hash, expires_at FROM center_api_keys";

/// Registers the center if needed and applies the non-null changes.
pub const UPSERT_CENTER: &str =
    "INSERT INTO centers (code, name, city, country, is_active, registered_at) \
     VALUES ($1, COALESCE($2, $1), $3, $4, COALESCE($5, 1), $6) \
     ON CONFLICT (code) DO UPDATE SET \
         name = COALESCE($2, centers.name), \
         city = COALESCE($3, centers.city), \
         country = COALESCE($4, centers.country), \
         is_active = COALESCE($5, centers.is_active) \
     RETURNING id, code, name, city, country, is_active, registered_at, last_sync_at";

/// Registers a center named after its code, or finds it; returns its id.
/// The no-op update makes `RETURNING` return the id on a conflict too.
pub const REGISTER_CENTER: &str = "INSERT INTO centers (code, name, is_active, registered_at) \
     VALUES ($1, $1, 1, $2) \
     ON CONFLICT (code) DO UPDATE SET code = excluded.code \
     RETURNING id";

pub const INSERT_CENTER: &str =
    "INSERT INTO centers (code, name, city, country, is_active, registered_at) \
     VALUES ($1, $2, $3, $4, 1, $5) \
     RETURNING id, code, name, city, country, is_active, registered_at, last_sync_at";

pub const INSERT_KEY: &str =
    "INSERT INTO center_api_keys (center_id, key_hash, created_at, expires_at) VALUES ($1, $2, $3, $4)";

pub const SET_KEY_EXPIRY: &str = "UPDATE center_api_keys SET expires_at = $2 WHERE id = $1";

pub const SET_ACTIVE: &str = "UPDATE centers SET is_active = $2 WHERE code = $1";

pub const SET_LAST_SYNC: &str = "UPDATE centers SET last_sync_at = $2 WHERE id = $1";

pub const UPSERT_DAY_TOTALS: &str = "INSERT INTO daily_metrics \
         (center_id, date, total_orders, total_results, total_pets, total_owners, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (center_id, date) DO UPDATE SET \
         total_orders = excluded.total_orders, total_results = excluded.total_results, \
         total_pets = excluded.total_pets, total_owners = excluded.total_owners";

pub const DELETE_DAY_TESTS: &str = "DELETE FROM test_summaries WHERE center_id = $1 AND date = $2";
pub const DELETE_DAY_SPECIES: &str =
    "DELETE FROM species_summaries WHERE center_id = $1 AND date = $2";
pub const DELETE_DAY_BREEDS: &str =
    "DELETE FROM breed_summaries WHERE center_id = $1 AND date = $2";
pub const DELETE_DAY_MODULES: &str =
    "DELETE FROM module_metrics WHERE center_id = $1 AND date = $2";
pub const DELETE_DAY_PAYMENTS: &str =
    "DELETE FROM payment_method_metrics WHERE center_id = $1 AND date = $2";

pub const UPSERT_PERFORMANCE: &str = "INSERT INTO performance_metrics \
         (center_id, date, avg_order_processing_time, peak_hour, peak_hour_orders, completion_rate, \
          same_day_completion, morning_orders, afternoon_orders, evening_orders, night_orders, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (center_id, date) DO UPDATE SET \
         avg_order_processing_time = excluded.avg_order_processing_time, \
         peak_hour = excluded.peak_hour, peak_hour_orders = excluded.peak_hour_orders, \
         completion_rate = excluded.completion_rate, same_day_completion = excluded.same_day_completion, \
         morning_orders = excluded.morning_orders, afternoon_orders = excluded.afternoon_orders, \
         evening_orders = excluded.evening_orders, night_orders = excluded.night_orders";

pub const UPSERT_SYSTEM_USAGE: &str = "INSERT INTO system_usage_metrics \
         (center_id, date, total_active_users, peak_concurrent_users, avg_session_duration, \
          web_access_count, mobile_access_count, desktop_access_count, total_workstations, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (center_id, date) DO UPDATE SET \
         total_active_users = excluded.total_active_users, \
         peak_concurrent_users = excluded.peak_concurrent_users, \
         avg_session_duration = excluded.avg_session_duration, \
         web_access_count = excluded.web_access_count, mobile_access_count = excluded.mobile_access_count, \
         desktop_access_count = excluded.desktop_access_count, total_workstations = excluded.total_workstations";

/// Adds a group's event counts to a day's totals, creating the day row if needed.
pub const ADD_DAY_TOTALS: &str = "INSERT INTO daily_metrics \
         (center_id, date, total_orders, total_results, total_pets, total_owners, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (center_id, date) DO UPDATE SET \
         total_orders = daily_metrics.total_orders + excluded.total_orders, \
         total_results = daily_metrics.total_results + excluded.total_results, \
         total_pets = daily_metrics.total_pets + excluded.total_pets, \
         total_owners = daily_metrics.total_owners + excluded.total_owners";

/// Adds `$4` to a test's day count; a code not seen that day gets a row
/// named after the code.
pub const ADD_TEST: &str = "INSERT INTO test_summaries (center_id, date, test_code, test_name, count) \
     VALUES ($1, $2, $3, $3, $4) \
     ON CONFLICT (center_id, date, test_code) DO UPDATE SET count = test_summaries.count + excluded.count";

pub const ADD_SPECIES: &str = "INSERT INTO species_summaries (center_id, date, species, count) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (center_id, date, species) DO UPDATE SET count = species_summaries.count + excluded.count";

/// The conflict target names the unique index's expression, so that a breed
/// without species is one key.
pub const ADD_BREED: &str = "INSERT INTO breed_summaries (center_id, date, breed, species, count) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (center_id, date, breed, (coalesce(species, ''))) \
     DO UPDATE SET count = breed_summaries.count + excluded.count";

/// Records an event id unless the center has it already.
pub const INSERT_EVENT_ID: &str =
    "INSERT INTO event_receipts (center_id, event_id, response, received_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (center_id, event_id) DO NOTHING";

pub const EVENT_ID_RESPONSE: &str =
    "SELECT response FROM event_receipts WHERE center_id = $1 AND event_id = $2";

pub const PURGE_EVENT_IDS: &str = "DELETE FROM event_receipts WHERE received_at < $1";

pub const DELETE_CENTER_EVENT_IDS: &str = "DELETE FROM event_receipts WHERE center_id = $1";

pub const RESET_LAST_SYNC: &str = "UPDATE centers SET last_sync_at = NULL WHERE id = $1";
