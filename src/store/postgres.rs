//! The PostgreSQL backend, for production.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::reads::impl_read_store;
use super::shared::impl_store;
use super::{DayBatch, StoreResult};

pub struct PgStore {
    pool: PgPool,
    begin_wait: prometheus::Histogram,
}

impl PgStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = Self::pool_options().connect_with(options).await?;
        Ok(Self {
            pool,
            begin_wait: super::begin_wait_histogram(),
        })
    }

    /// Opens a pool that connects on first use, so that the service can start
    /// (and report not ready) while the database is down.
    pub fn connect_lazy(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        Ok(Self {
            pool: Self::pool_options().connect_lazy_with(options),
            begin_wait: super::begin_wait_histogram(),
        })
    }

    fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
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

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let timer = self.begin_wait.start_timer();
        let transaction = self.pool.begin().await;
        timer.observe_duration();
        Ok(transaction?)
    }

    /// Inserts the day's list rows with one `UNNEST` statement per table, so
    /// that a long list costs one round trip.
    async fn insert_day_lists(
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
}

impl_store!(PgStore, Postgres, "postgres");
impl_read_store!(PgStore);
