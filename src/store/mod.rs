//! Storage behind one interface, with a PostgreSQL and an SQLite backend
//! chosen from the database URL's scheme. Each backend owns its migrations.

mod event_group;
mod last_sync;
mod pooler_probe;
mod postgres;
mod reads;
mod session;
mod shared;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

pub use pooler_probe::behind_transaction_pooler;
pub use postgres::PgStore;
pub use reads::{
    CenterTotals, DashboardData, DayRow, DayTrend, ExportRow, LabelCount, ReadStore, Summary,
};
pub use sqlite::SqliteStore;

use crate::keys::KeyHash;
use crate::settings::DatabaseUrl;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database did not accept a connection at start-up.
    #[error(
        "cannot reach PostgreSQL at {address}: {reason}; check that it is running and \
         accepts connections there"
    )]
    Unreachable { address: String, reason: String },
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("center {0} already exists")]
    CenterExists(String),
    #[error("center {0} not found")]
    CenterNotFound(String),
    /// The transaction of a group of events failed; every event of the group
    /// shares this error.
    #[error("event group failed: {0}")]
    Group(Arc<StoreError>),
    /// A group of events was not written in time; it may have been stored.
    #[error("event group not written within {0:?}")]
    GroupTimedOut(std::time::Duration),
}

impl StoreError {
    /// Tells whether running the same transaction again may succeed: a
    /// deadlock or a serialization failure that the database resolved by
    /// aborting this transaction.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(err)) => {
                matches!(err.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        }
    }

    /// Returns what the operator should change when the error comes from a
    /// pooler in transaction mode that the settings do not mention. Such a
    /// pooler shows as a named statement missing on, or already on, the
    /// server connection that it lent this time.
    pub fn pooler_hint(&self) -> Option<&'static str> {
        use sqlx::migrate::MigrateError;

        let database_error = match self {
            StoreError::Group(err) => return err.pooler_hint(),
            StoreError::Database(err)
            | StoreError::Migration(MigrateError::Execute(err))
            | StoreError::Migration(MigrateError::ExecuteMigration(err, _)) => err,
            _ => return None,
        };
        let sqlx::Error::Database(err) = database_error else {
            return None;
        };
        matches!(err.code().as_deref(), Some("26000" | "42P05")).then_some(
            "a pooler in transaction mode, such as PgBouncer, may sit in front of PostgreSQL: \
             set DATABASE_TRANSACTION_POOLER=true if DATABASE_URL leads to one, \
             and point DATABASE_DIRECT_URL at PostgreSQL itself",
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored key of a center.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub hash: KeyHash,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The part of a center that authentication reads.
#[derive(Debug, Clone)]
pub struct CenterAuth {
    pub id: i32,
    pub code: String,
    pub name: String,
    pub is_active: bool,
    pub keys: Vec<StoredKey>,
}

/// Metadata changes; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct CenterChanges {
    pub name: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Center {
    pub id: i32,
    pub code: String,
    pub name: String,
    pub city: Option<String>,
    pub country: Option<String>,
    pub is_active: bool,
    pub registered_at: DateTime<Utc>,
    pub last_sync_at: Option<DateTime<Utc>>,
}

/// A center as the administration command lists it, with its key count.
#[derive(Debug, Clone)]
pub struct CenterListing {
    pub center: Center,
    pub active_keys: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayTotals {
    pub orders: i32,
    pub results: i32,
    pub pets: i32,
    pub owners: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRow {
    pub code: String,
    pub name: Option<String>,
    pub count: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreedRow {
    pub breed: String,
    pub species: Option<String>,
    pub count: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerformanceRow {
    pub avg_order_processing_time: Option<i32>,
    pub peak_hour: Option<i32>,
    pub peak_hour_orders: Option<i32>,
    pub completion_rate: Option<i32>,
    pub same_day_completion: Option<i32>,
    pub morning_orders: i32,
    pub afternoon_orders: i32,
    pub evening_orders: i32,
    pub night_orders: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRow {
    pub module_name: String,
    pub operations_count: i32,
    pub active_users: i32,
    pub total_revenue: Option<i32>,
    pub avg_transaction: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUsageRow {
    pub total_active_users: i32,
    pub peak_concurrent_users: i32,
    pub avg_session_duration: Option<i32>,
    pub web_access_count: i32,
    pub mobile_access_count: i32,
    pub desktop_access_count: i32,
    pub total_workstations: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethodRow {
    pub payment_method: String,
    pub transaction_count: i32,
    pub total_amount: Option<i32>,
}

/// One day's batch for one center, with duplicate list entries already merged.
#[derive(Debug, Clone, Default)]
pub struct DayBatch {
    pub date: NaiveDate,
    pub totals: DayTotals,
    pub tests: Vec<TestRow>,
    pub species: Vec<(String, i32)>,
    pub breeds: Vec<BreedRow>,
    /// Replaces the day's row when present.
    pub performance: Option<PerformanceRow>,
    /// Replace the day's rows when non-empty.
    pub modules: Vec<ModuleRow>,
    pub system_usage: Option<SystemUsageRow>,
    pub payment_methods: Vec<PaymentMethodRow>,
}

/// The day total that an event increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Orders,
    Results,
    Pets,
    Owners,
}

/// The center an event counts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventCenter {
    Known(i32),
    /// A code not registered yet, registered in the event's transaction.
    Register(String),
}

/// The increments of one event, all on one center's day.
#[derive(Debug, Clone)]
pub struct EventIncrements {
    pub date: NaiveDate,
    pub total: Total,
    /// Test codes with how many times the event lists each.
    pub tests: Vec<(String, i32)>,
    pub species: Option<String>,
    /// Breed and species, counted only when both are known.
    pub breed: Option<(String, String)>,
}

/// One event to write, as the group writer hands it to the store.
#[derive(Debug, Clone)]
pub struct EventWrite {
    pub center: EventCenter,
    /// The client's id for the event; an id already accepted for the center
    /// makes the event a repeat.
    pub event_id: Option<String>,
    pub increments: EventIncrements,
    /// The response body, kept with the id for repeats.
    pub response: String,
}

/// The outcome of one event of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    Counted,
    /// The id was accepted before: nothing counted, and this is the response
    /// body of the first time.
    Repeated(String),
}

/// Rows removed per table by a center's data deletion, in table order.
pub type DeletedCounts = Vec<(&'static str, u64)>;

/// The KPI tables that hold a center's data, children before parents.
pub const DATA_TABLES: [&str; 8] = [
    "test_summaries",
    "species_summaries",
    "breed_summaries",
    "performance_metrics",
    "module_metrics",
    "system_usage_metrics",
    "payment_method_metrics",
    "daily_metrics",
];

/// A new key for a center.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub hash: KeyHash,
    pub expires_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Store: ReadStore {
    /// `"postgres"` or `"sqlite"`, for logs.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations; safe to run from several processes at once.
    async fn migrate(&self) -> StoreResult<()>;

    /// Checks that the database responds.
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// Returns the pool's connection counts.
    fn pool_status(&self) -> PoolStatus;

    /// Returns the histogram of the time write transactions wait for a
    /// connection and their `BEGIN`.
    fn begin_wait(&self) -> prometheus::Histogram;

    /// Finds a center by its exact code, with its keys.
    async fn find_center(&self, code: &str) -> StoreResult<Option<CenterAuth>>;

    /// Registers a center that may not exist yet (the name defaults to the
    /// code) and applies `changes`, in one statement.
    async fn upsert_center(&self, code: &str, changes: &CenterChanges) -> StoreResult<Center>;

    /// Replaces a center's day with `batch`, in one transaction.
    async fn save_day(&self, center_id: i32, batch: &DayBatch) -> StoreResult<()>;

    /// Writes a group of events in one transaction: registers the centers
    /// asked for, records the ids, and adds the increments of every event
    /// whose id is new. Returns one outcome per event, in order; an error
    /// means that nothing of the group was written.
    async fn record_events(&self, events: &[EventWrite]) -> StoreResult<Vec<EventOutcome>>;

    /// Deletes the event ids received before `before`; returns how many.
    async fn purge_event_ids(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Deletes every KPI row of a center and resets its last sync.
    async fn delete_center_data(&self, center_id: i32) -> StoreResult<DeletedCounts>;

    /// Creates a center with a first key; fails if the code is taken.
    async fn create_center(
        &self,
        center: &CenterChanges,
        code: &str,
        key: &NewKey,
    ) -> StoreResult<Center>;

    /// Lists every center ordered by code.
    async fn list_centers(&self) -> StoreResult<Vec<CenterListing>>;

    /// Adds a key to a center, and makes every older key expire at
    /// `old_keys_expire_at` unless it expires sooner already.
    async fn rotate_key(
        &self,
        code: &str,
        key: &NewKey,
        old_keys_expire_at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Activates or deactivates a center.
    async fn set_active(&self, code: &str, active: bool) -> StoreResult<()>;
}

/// Connection counts of a store's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub size: u32,
    pub idle: usize,
    pub max: u32,
}

/// Creates the histogram that [`Store::begin_wait`] returns.
fn begin_wait_histogram() -> prometheus::Histogram {
    let options = prometheus::HistogramOpts::new(
        "kpi_db_begin_wait_seconds",
        "Time a write transaction waited for a pooled connection and its BEGIN",
    )
    .buckets(vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ]);
    prometheus::Histogram::with_opts(options).expect("valid histogram options")
}

/// The size of a store's connection pool and how long a caller waits for a
/// free connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: std::time::Duration,
    /// Whether the PostgreSQL URL leads to a pooler in transaction mode, such as
    /// PgBouncer with `pool_mode = transaction`.
    pub transaction_pooler: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: std::time::Duration::from_secs(5),
            transaction_pooler: false,
        }
    }
}

/// Opens a PostgreSQL store that connects on first use.
pub fn connect_postgres_lazy(url: &str) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(PgStore::connect_lazy(url, PoolConfig::default())?))
}

/// Opens the store that `url` names, with the default pool.
pub async fn connect(url: &DatabaseUrl) -> StoreResult<Arc<dyn Store>> {
    connect_with(url, PoolConfig::default()).await
}

/// Opens the store that `url` names, with the pool that `pool` describes.
pub async fn connect_with(url: &DatabaseUrl, pool: PoolConfig) -> StoreResult<Arc<dyn Store>> {
    Ok(match url {
        DatabaseUrl::Postgres(url) => Arc::new(PgStore::connect(url, pool).await?),
        DatabaseUrl::Sqlite(url) => Arc::new(SqliteStore::connect(url, pool).await?),
    })
}
