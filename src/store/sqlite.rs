//! The embedded SQLite backend, the default when no database URL is set.
//!
//! The database runs in WAL mode, so readers never wait for the writer.
//! Every write transaction starts with `BEGIN IMMEDIATE`, taking the write
//! lock up front: a deferred transaction that reads first and then writes can
//! fail at once with "database is locked", while an immediate one waits for
//! the busy timeout.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::event_group::{GroupSums, NewId};
use super::last_sync::LastSync;
use super::reads::impl_read_store;
use super::shared::impl_store;
use super::{sql, DayBatch, PoolConfig, StoreResult};

pub struct SqliteStore {
    pool: SqlitePool,
    /// Always true: statements stay prepared on their connection.
    persistent: bool,
    begin_wait: prometheus::Histogram,
    last_sync: LastSync,
    /// Held for each write transaction, so that writers queue here.
    writer: tokio::sync::Mutex<()>,
}

impl SqliteStore {
    pub async fn connect(url: &str, config: PoolConfig) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            persistent: true,
            begin_wait: super::begin_wait_histogram(),
            last_sync: LastSync::default(),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// Returns the database file's absolute path, for the start-up log.
    pub fn filename(url: &str) -> Option<std::path::PathBuf> {
        let options = SqliteConnectOptions::from_str(url).ok()?;
        let path = options.get_filename();
        Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
    }

    /// Applies the migrations under `migrations/sqlite`. sqlx takes no lock on
    /// SQLite, so a second process that starts at the same moment can fail on
    /// a migration the first one applied. One retry then finds it applied.
    async fn run_migrations(&self) -> StoreResult<()> {
        let migrator = sqlx::migrate!("./migrations/sqlite");
        if migrator.run(&self.pool).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            migrator.run(&self.pool).await?;
        }
        Ok(())
    }

    /// Starts a write transaction, returned with this process's writer lock.
    /// SQLite has one writer at a time, and a connection that finds the
    /// database locked sleeps in growing steps before it tries again, so
    /// writers that wait in SQLite can sleep long after the lock is free.
    /// Waiting for the lock here wakes the next writer at once.
    async fn begin_write(
        &self,
    ) -> StoreResult<(
        tokio::sync::MutexGuard<'_, ()>,
        Transaction<'static, Sqlite>,
    )> {
        let timer = self.begin_wait.start_timer();
        let writer = self.writer.lock().await;
        let transaction = self.pool.begin_with("BEGIN IMMEDIATE").await;
        timer.observe_duration();
        Ok((writer, transaction?))
    }

    /// Inserts the day's list rows one statement each; the statements are
    /// prepared once and run in-process, so a loop costs little here.
    async fn insert_day_lists(
        &self,
        tx: &mut SqliteConnection,
        center_id: i32,
        batch: &DayBatch,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        for test in &batch.tests {
            sqlx::query(
                "INSERT INTO test_summaries (center_id, date, test_code, test_name, count) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(center_id)
            .bind(batch.date)
            .bind(&test.code)
            .bind(&test.name)
            .bind(test.count)
            .execute(&mut *tx)
            .await?;
        }
        for (species, count) in &batch.species {
            sqlx::query("INSERT INTO species_summaries (center_id, date, species, count) VALUES ($1, $2, $3, $4)")
                .bind(center_id)
                .bind(batch.date)
                .bind(species)
                .bind(count)
                .execute(&mut *tx)
                .await?;
        }
        for breed in &batch.breeds {
            sqlx::query(
                "INSERT INTO breed_summaries (center_id, date, breed, species, count) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(center_id)
            .bind(batch.date)
            .bind(&breed.breed)
            .bind(&breed.species)
            .bind(breed.count)
            .execute(&mut *tx)
            .await?;
        }
        for module in &batch.modules {
            sqlx::query(
                "INSERT INTO module_metrics (center_id, date, created_at, module_name, operations_count, \
                     active_users, total_revenue, avg_transaction) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(center_id)
            .bind(batch.date)
            .bind(now)
            .bind(&module.module_name)
            .bind(module.operations_count)
            .bind(module.active_users)
            .bind(module.total_revenue)
            .bind(module.avg_transaction)
            .execute(&mut *tx)
            .await?;
        }
        for payment in &batch.payment_methods {
            sqlx::query(
                "INSERT INTO payment_method_metrics (center_id, date, created_at, payment_method, \
                     transaction_count, total_amount) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(center_id)
            .bind(batch.date)
            .bind(now)
            .bind(&payment.payment_method)
            .bind(payment.transaction_count)
            .bind(payment.total_amount)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Records each event id the center does not have yet. Returns, per id,
    /// `None` when it is new or the stored response when it is not.
    async fn claim_event_ids(
        &self,
        tx: &mut SqliteConnection,
        ids: &[NewId<'_>],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<String>>> {
        let mut earlier = Vec::with_capacity(ids.len());
        for id in ids {
            let inserted = sqlx::query(sql::INSERT_EVENT_ID)
                .bind(id.center_id)
                .bind(id.event_id)
                .bind(id.response)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                earlier.push(None);
                continue;
            }
            let response = sqlx::query_scalar::<_, String>(sql::EVENT_ID_RESPONSE)
                .bind(id.center_id)
                .bind(id.event_id)
                .fetch_one(&mut *tx)
                .await?;
            earlier.push(Some(response));
        }
        Ok(earlier)
    }

    /// Adds a group's summed increments, one statement per row.
    async fn add_event_sums(
        &self,
        tx: &mut SqliteConnection,
        sums: &GroupSums,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        for ((center_id, date), [orders, results, pets, owners]) in &sums.totals {
            sqlx::query(sql::ADD_DAY_TOTALS)
                .bind(center_id)
                .bind(date)
                .bind(orders)
                .bind(results)
                .bind(pets)
                .bind(owners)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        for ((center_id, date, code), count) in &sums.tests {
            sqlx::query(sql::ADD_TEST)
                .bind(center_id)
                .bind(date)
                .bind(code)
                .bind(count)
                .execute(&mut *tx)
                .await?;
        }
        for ((center_id, date, species), count) in &sums.species {
            sqlx::query(sql::ADD_SPECIES)
                .bind(center_id)
                .bind(date)
                .bind(species)
                .bind(count)
                .execute(&mut *tx)
                .await?;
        }
        for ((center_id, date, breed, species), count) in &sums.breeds {
            sqlx::query(sql::ADD_BREED)
                .bind(center_id)
                .bind(date)
                .bind(breed)
                .bind(species)
                .bind(count)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

impl_store!(SqliteStore, Sqlite, "sqlite");
impl_read_store!(SqliteStore, Sqlite);
