//! The PostgreSQL backend, for production.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::event_group::{GroupSums, NewId};
use super::last_sync::LastSync;
use super::reads::impl_read_store;
use super::shared::impl_store;
use super::{DayBatch, PoolConfig, StoreError, StoreResult};

pub struct PgStore {
    pool: PgPool,
    /// Whether statements are prepared once per connection and kept. A
    /// pooler in transaction mode cannot keep them, so behind one every
    /// statement is parsed afresh, and only inside a transaction.
    persistent: bool,
    begin_wait: prometheus::Histogram,
    last_sync: LastSync,
}

/// Explains a pool that timed out opening its first connection. sqlx
/// retries a refused or reset connection until the acquire timeout, then
/// reports only the timeout, so one direct attempt fetches the real error.
async fn explain_pool_timeout(options: &PgConnectOptions, wait: Duration) -> StoreError {
    let address = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let reason = match tokio::time::timeout(wait, PgConnection::connect_with(options)).await {
        Ok(Err(err)) => err.to_string(),
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            format!("no connection within {} s", wait.as_secs())
        }
        Err(_) => format!(
            "no response within {} s, twice: to the pool and to a direct attempt",
            wait.as_secs()
        ),
    };
    StoreError::Unreachable { address, reason }
}

impl PgStore {
    pub async fn connect(url: &str, config: PoolConfig) -> StoreResult<Self> {
        let options = Self::connect_options(url)?;
        let pool = match Self::pool_options(config)
            .connect_with(options.clone())
            .await
        {
            Err(sqlx::Error::PoolTimedOut) => {
                return Err(explain_pool_timeout(&options, config.acquire_timeout).await)
            }
            pool => pool?,
        };
        Ok(Self {
            pool,
            persistent: !config.transaction_pooler,
            begin_wait: super::begin_wait_histogram(),
            last_sync: LastSync::default(),
        })
    }

    /// Opens a pool that connects on first use, so that the service can start
    /// (and report not ready) while the database is down.
    pub fn connect_lazy(url: &str, config: PoolConfig) -> StoreResult<Self> {
        let options = Self::connect_options(url)?;
        Ok(Self {
            pool: Self::pool_options(config).connect_lazy_with(options),
            persistent: !config.transaction_pooler,
            begin_wait: super::begin_wait_histogram(),
            last_sync: LastSync::default(),
        })
    }

    /// Parses `url`. The `extra_float_digits` start-up parameter that sqlx
    /// sends by default is left out, because PgBouncer rejects parameters it
    /// does not know, in either mode. It only changes floats sent as text,
    /// and the service reads every result in binary.
    pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
        let options: PgConnectOptions = url.parse()?;
        Ok(options.extra_float_digits(None))
    }

    fn pool_options(config: PoolConfig) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
    }

    /// Applies the migrations under `migrations/postgres`. sqlx holds a
    /// PostgreSQL advisory lock while it migrates, so replicas that start
    /// together apply each migration once.
    async fn run_migrations(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// Starts a write transaction. PostgreSQL orders writers by row locks,
    /// so unlike SQLite's, its writer lock is empty.
    async fn begin_write(&self) -> StoreResult<((), Transaction<'static, Postgres>)> {
        let timer = self.begin_wait.start_timer();
        let transaction = super::session::begin(&self.pool).await;
        timer.observe_duration();
        Ok(((), transaction?))
    }

    /// Inserts the day's list rows with one `UNNEST` statement per table, so
    /// that a long list costs one round trip.
    async fn insert_day_lists(
        &self,
        tx: &mut PgConnection,
        center_id: i32,
        batch: &DayBatch,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (codes, names, counts): (Vec<_>, Vec<_>, Vec<_>) = batch
            .tests
            .iter()
            .map(|t| (t.code.as_str(), t.name.as_deref(), t.count))
            .collect();
        sqlx::query(
            "INSERT INTO test_summaries (center_id, date, test_code, test_name, count) \
             SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[], $5::int[])",
        )
        .persistent(self.persistent)
        .bind(center_id)
        .bind(batch.date)
        .bind(&codes)
        .bind(&names)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;

        let (species, counts): (Vec<_>, Vec<_>) =
            batch.species.iter().map(|(s, c)| (s.as_str(), *c)).unzip();
        sqlx::query(
            "INSERT INTO species_summaries (center_id, date, species, count) \
             SELECT $1, $2, * FROM UNNEST($3::text[], $4::int[])",
        )
        .persistent(self.persistent)
        .bind(center_id)
        .bind(batch.date)
        .bind(&species)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;

        let (breeds, species, counts): (Vec<_>, Vec<_>, Vec<_>) = batch
            .breeds
            .iter()
            .map(|b| (b.breed.as_str(), b.species.as_deref(), b.count))
            .collect();
        sqlx::query(
            "INSERT INTO breed_summaries (center_id, date, breed, species, count) \
             SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[], $5::int[])",
        )
        .persistent(self.persistent)
        .bind(center_id)
        .bind(batch.date)
        .bind(&breeds)
        .bind(&species)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;

        if !batch.modules.is_empty() {
            let m = &batch.modules;
            sqlx::query(
                "INSERT INTO module_metrics (center_id, date, created_at, module_name, operations_count, \
                     active_users, total_revenue, avg_transaction) \
                 SELECT $1, $2, $3, * FROM UNNEST($4::text[], $5::int[], $6::int[], $7::int[], $8::int[])",
            )
            .persistent(self.persistent)
            .bind(center_id)
            .bind(batch.date)
            .bind(now)
            .bind(m.iter().map(|r| r.module_name.as_str()).collect::<Vec<_>>())
            .bind(m.iter().map(|r| r.operations_count).collect::<Vec<_>>())
            .bind(m.iter().map(|r| r.active_users).collect::<Vec<_>>())
            .bind(m.iter().map(|r| r.total_revenue).collect::<Vec<_>>())
            .bind(m.iter().map(|r| r.avg_transaction).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        if !batch.payment_methods.is_empty() {
            let p = &batch.payment_methods;
            sqlx::query(
                "INSERT INTO payment_method_metrics (center_id, date, created_at, payment_method, \
                     transaction_count, total_amount) \
                 SELECT $1, $2, $3, * FROM UNNEST($4::text[], $5::int[], $6::int[])",
            )
            .persistent(self.persistent)
            .bind(center_id)
            .bind(batch.date)
            .bind(now)
            .bind(
                p.iter()
                    .map(|r| r.payment_method.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(p.iter().map(|r| r.transaction_count).collect::<Vec<_>>())
            .bind(p.iter().map(|r| r.total_amount).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Records each event id the center does not have yet, in one statement.
    /// Returns, per id, `None` when it is new or the stored response when it
    /// is not. The ids go in key order, so that two groups that share ids
    /// wait for each other instead of deadlocking.
    async fn claim_event_ids(
        &self,
        tx: &mut PgConnection,
        ids: &[NewId<'_>],
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Option<String>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sorted: Vec<&NewId<'_>> = ids.iter().collect();
        sorted.sort_unstable_by_key(|id| (id.center_id, id.event_id));
        let centers: Vec<i32> = sorted.iter().map(|id| id.center_id).collect();
        let event_ids: Vec<&str> = sorted.iter().map(|id| id.event_id).collect();
        let responses: Vec<&str> = sorted.iter().map(|id| id.response).collect();
        let inserted: Vec<(i32, String)> = sqlx::query_as(
            "INSERT INTO event_receipts (center_id, event_id, response, received_at) \
             SELECT c, e, r, $4 FROM UNNEST($1::int[], $2::text[], $3::text[]) AS t (c, e, r) \
             ON CONFLICT (center_id, event_id) DO NOTHING \
             RETURNING center_id, event_id",
        )
        .persistent(self.persistent)
        .bind(&centers)
        .bind(&event_ids)
        .bind(&responses)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        if inserted.len() == ids.len() {
            return Ok(vec![None; ids.len()]);
        }
        let inserted: HashSet<(i32, &str)> = inserted
            .iter()
            .map(|(center, id)| (*center, id.as_str()))
            .collect();
        // The conflicting rows are committed: the insert waited for them.
        let stored: Vec<(i32, String, String)> = sqlx::query_as(
            "SELECT center_id, event_id, response FROM event_receipts \
             WHERE (center_id, event_id) IN (SELECT * FROM UNNEST($1::int[], $2::text[]))",
        )
        .persistent(self.persistent)
        .bind(&centers)
        .bind(&event_ids)
        .fetch_all(&mut *tx)
        .await?;
        let stored: HashMap<(i32, &str), &str> = stored
            .iter()
            .map(|(center, id, response)| ((*center, id.as_str()), response.as_str()))
            .collect();
        ids.iter()
            .map(|id| {
                let key = (id.center_id, id.event_id);
                if inserted.contains(&key) {
                    return Ok(None);
                }
                // A conflicting row purged in between is the only way to miss it.
                let response = stored.get(&key).ok_or(sqlx::Error::RowNotFound)?;
                Ok(Some((*response).to_owned()))
            })
            .collect()
    }

    /// Adds a group's summed increments with one `UNNEST` statement per
    /// table; the rows go in key order.
    async fn add_event_sums(
        &self,
        tx: &mut PgConnection,
        sums: &GroupSums,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        if !sums.totals.is_empty() {
            let (keys, counts): (Vec<_>, Vec<&[i32; 4]>) = sums.totals.iter().unzip();
            sqlx::query(
                "INSERT INTO daily_metrics \
                     (center_id, date, total_orders, total_results, total_pets, total_owners, created_at) \
                 SELECT *, $7 FROM UNNEST($1::int[], $2::date[], $3::int[], $4::int[], $5::int[], $6::int[]) \
                 ON CONFLICT (center_id, date) DO UPDATE SET \
                     total_orders = daily_metrics.total_orders + excluded.total_orders, \
                     total_results = daily_metrics.total_results + excluded.total_results, \
                     total_pets = daily_metrics.total_pets + excluded.total_pets, \
                     total_owners = daily_metrics.total_owners + excluded.total_owners",
            )
            .persistent(self.persistent)
            .bind(keys.iter().map(|(center, _)| *center).collect::<Vec<_>>())
            .bind(keys.iter().map(|(_, date)| *date).collect::<Vec<_>>())
            .bind(counts.iter().map(|c| c[0]).collect::<Vec<_>>())
            .bind(counts.iter().map(|c| c[1]).collect::<Vec<_>>())
            .bind(counts.iter().map(|c| c[2]).collect::<Vec<_>>())
            .bind(counts.iter().map(|c| c[3]).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !sums.tests.is_empty() {
            sqlx::query(
                "INSERT INTO test_summaries (center_id, date, test_code, test_name, count) \
                 SELECT c, d, t, t, n FROM UNNEST($1::int[], $2::date[], $3::text[], $4::int[]) AS u (c, d, t, n) \
                 ON CONFLICT (center_id, date, test_code) \
                 DO UPDATE SET count = test_summaries.count + excluded.count",
            )
            .persistent(self.persistent)
            .bind(sums.tests.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(sums.tests.keys().map(|k| k.1).collect::<Vec<_>>())
            .bind(sums.tests.keys().map(|k| k.2.as_str()).collect::<Vec<_>>())
            .bind(sums.tests.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !sums.species.is_empty() {
            sqlx::query(
                "INSERT INTO species_summaries (center_id, date, species, count) \
                 SELECT * FROM UNNEST($1::int[], $2::date[], $3::text[], $4::int[]) \
                 ON CONFLICT (center_id, date, species) \
                 DO UPDATE SET count = species_summaries.count + excluded.count",
            )
            .persistent(self.persistent)
            .bind(sums.species.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(sums.species.keys().map(|k| k.1).collect::<Vec<_>>())
            .bind(
                sums.species
                    .keys()
                    .map(|k| k.2.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(sums.species.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if !sums.breeds.is_empty() {
            sqlx::query(
                "INSERT INTO breed_summaries (center_id, date, breed, species, count) \
                 SELECT * FROM UNNEST($1::int[], $2::date[], $3::text[], $4::text[], $5::int[]) \
                 ON CONFLICT (center_id, date, breed, (coalesce(species, ''))) \
                 DO UPDATE SET count = breed_summaries.count + excluded.count",
            )
            .persistent(self.persistent)
            .bind(sums.breeds.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(sums.breeds.keys().map(|k| k.1).collect::<Vec<_>>())
            .bind(sums.breeds.keys().map(|k| k.2.as_str()).collect::<Vec<_>>())
            .bind(sums.breeds.keys().map(|k| k.3.as_str()).collect::<Vec<_>>())
            .bind(sums.breeds.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

impl_store!(PgStore, Postgres, "postgres");
impl_read_store!(PgStore, Postgres);
