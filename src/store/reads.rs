//! The read side of storage: what the dashboard, the read API and the CSV
//! export show. Every view is a handful of aggregate queries over a date
//! window, never a query per center.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{Center, StoreResult};

/// A `daily_metrics` row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DayRow {
    pub id: i32,
    pub center_id: i32,
    pub date: NaiveDate,
    pub total_orders: i32,
    pub total_results: i32,
    pub total_pets: i32,
    pub total_owners: i32,
    pub created_at: DateTime<Utc>,
}

/// Network-wide totals over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Summary {
    pub total_centers: i64,
    pub active_centers: i64,
    pub total_orders: i64,
    pub total_results: i64,
    pub total_pets: i64,
    pub total_owners: i64,
}

/// One center's totals over a window, with its last sync.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CenterTotals {
    pub code: String,
    pub name: String,
    pub is_active: i32,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub orders: i64,
    pub results: i64,
    pub pets: i64,
    pub owners: i64,
}

/// Orders and results of one day over every center.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DayTrend {
    pub date: NaiveDate,
    pub orders: i64,
    pub results: i64,
}

/// A labelled count: a test, a species or a breed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LabelCount {
    pub label: String,
    /// The test's name or the breed's species, when known.
    pub detail: Option<String>,
    pub count: i64,
}

/// Everything the dashboard shows for a window.
#[derive(Debug, Clone, Default)]
pub struct DashboardData {
    pub summary: Summary,
    pub centers: Vec<CenterTotals>,
    pub trend: Vec<DayTrend>,
    pub top_tests: Vec<LabelCount>,
    pub species: Vec<LabelCount>,
    pub top_breeds: Vec<LabelCount>,
}

/// A daily row with its center, for the CSV export.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExportRow {
    pub code: String,
    pub name: String,
    pub date: NaiveDate,
    pub total_orders: i32,
    pub total_results: i32,
    pub total_pets: i32,
    pub total_owners: i32,
}

#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Lists every center ordered by code.
    async fn centers(&self) -> StoreResult<Vec<Center>>;

    /// Lists a center's daily rows from `from` to `to`, newest first; `None`
    /// when the center does not exist.
    async fn center_days(
        &self,
        code: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> StoreResult<Option<Vec<DayRow>>>;

    /// Sums the network's totals from `from` to `to`.
    async fn summary(&self, from: NaiveDate, to: NaiveDate) -> StoreResult<Summary>;

    /// Collects the dashboard's figures from `from` to `to`.
    async fn dashboard(&self, from: NaiveDate, to: NaiveDate) -> StoreResult<DashboardData>;

    /// Lists every center's daily rows from `from` to `to`, by center and date.
    async fn export_days(&self, from: NaiveDate, to: NaiveDate) -> StoreResult<Vec<ExportRow>>;
}

pub(crate) mod sql {
    pub const CENTER_DAYS: &str =
        "SELECT id, center_id, date, total_orders, total_results, total_pets, \
         total_owners, created_at FROM daily_metrics \
         WHERE center_id = $1 AND date >= $2 AND date <= $3 ORDER BY date DESC";

    pub const CENTER_ID: &str = "SELECT id FROM centers WHERE code = $1";

    pub const SUMMARY: &str = "SELECT \
         (SELECT COUNT(*) FROM centers) AS total_centers, \
         (SELECT COUNT(*) FROM centers WHERE is_active <> 0) AS active_centers, \
         COALESCE(SUM(total_orders), 0) AS total_orders, \
         COALESCE(SUM(total_results), 0) AS total_results, \
         COALESCE(SUM(total_pets), 0) AS total_pets, \
         COALESCE(SUM(total_owners), 0) AS total_owners \
         FROM daily_metrics WHERE date >= $1 AND date <= $2";

    pub const CENTER_TOTALS: &str = "SELECT c.code, c.name, c.is_active, c.last_sync_at, \
         COALESCE(SUM(d.total_orders), 0) AS orders, COALESCE(SUM(d.total_results), 0) AS results, \
         COALESCE(SUM(d.total_pets), 0) AS pets, COALESCE(SUM(d.total_owners), 0) AS owners \
         FROM centers c LEFT JOIN daily_metrics d \
             ON d.center_id = c.id AND d.date >= $1 AND d.date <= $2 \
         GROUP BY c.id, c.code, c.name, c.is_active, c.last_sync_at \
         ORDER BY orders DESC, c.code";

    pub const TREND: &str = "SELECT date, COALESCE(SUM(total_orders), 0) AS orders, \
         COALESCE(SUM(total_results), 0) AS results \
         FROM daily_metrics WHERE date >= $1 AND date <= $2 GROUP BY date ORDER BY date";

    pub const TOP_TESTS: &str =
        "SELECT test_code AS label, MAX(test_name) AS detail, SUM(count) AS count \
         FROM test_summaries WHERE date >= $1 AND date <= $2 \
         GROUP BY test_code ORDER BY count DESC, label LIMIT 10";

    pub const SPECIES: &str = "SELECT species AS label, NULL AS detail, SUM(count) AS count \
         FROM species_summaries WHERE date >= $1 AND date <= $2 \
         GROUP BY species ORDER BY count DESC, label";

    pub const TOP_BREEDS: &str =
        "SELECT breed AS label, MAX(species) AS detail, SUM(count) AS count \
         FROM breed_summaries WHERE date >= $1 AND date <= $2 \
         GROUP BY breed, species ORDER BY count DESC, label LIMIT 10";

    pub const EXPORT: &str = "SELECT c.code, c.name, d.date, d.total_orders, d.total_results, \
         d.total_pets, d.total_owners \
         FROM daily_metrics d JOIN centers c ON c.id = d.center_id \
         WHERE d.date >= $1 AND d.date <= $2 ORDER BY c.code, d.date";
}

macro_rules! impl_read_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Runs a query whose two parameters are the first and last day of
            /// a window, in a session of its own.
            async fn window_rows<T>(
                &self,
                query: &'static str,
                from: chrono::NaiveDate,
                to: chrono::NaiveDate,
            ) -> $crate::store::StoreResult<Vec<T>>
            where
                T: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            {
                let mut session = self.session().await?;
                let rows = sqlx::query_as(query)
                    .persistent(self.persistent)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *session)
                    .await?;
                session.finish().await?;
                Ok(rows)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ReadStore for $store {
            async fn centers(&self) -> $crate::store::StoreResult<Vec<$crate::store::Center>> {
                let mut session = self.session().await?;
                let rows = sqlx::query_as::<_, $crate::store::shared::CenterRow>(
                    $crate::store::sql::ALL_CENTERS,
                )
                .persistent(self.persistent)
                .fetch_all(&mut *session)
                .await?;
                session.finish().await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn center_days(
                &self,
                code: &str,
                from: chrono::NaiveDate,
                to: chrono::NaiveDate,
            ) -> $crate::store::StoreResult<Option<Vec<$crate::store::DayRow>>> {
                use $crate::store::reads::sql;

                let mut session = self.session().await?;
                let Some(id) = sqlx::query_scalar::<_, i32>(sql::CENTER_ID)
                    .persistent(self.persistent)
                    .bind(code)
                    .fetch_optional(&mut *session)
                    .await?
                else {
                    session.finish().await?;
                    return Ok(None);
                };
                let rows = sqlx::query_as(sql::CENTER_DAYS)
                    .persistent(self.persistent)
                    .bind(id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&mut *session)
                    .await?;
                session.finish().await?;
                Ok(Some(rows))
            }

            async fn summary(
                &self,
                from: chrono::NaiveDate,
                to: chrono::NaiveDate,
            ) -> $crate::store::StoreResult<$crate::store::Summary> {
                let mut session = self.session().await?;
                let summary = sqlx::query_as($crate::store::reads::sql::SUMMARY)
                    .persistent(self.persistent)
                    .bind(from)
                    .bind(to)
                    .fetch_one(&mut *session)
                    .await?;
                session.finish().await?;
                Ok(summary)
            }

            async fn dashboard(
                &self,
                from: chrono::NaiveDate,
                to: chrono::NaiveDate,
            ) -> $crate::store::StoreResult<$crate::store::DashboardData> {
                use $crate::store::reads::sql;

                let summary = self.summary(from, to).await?;
                // The five queries are independent, so they run at once on separate connections.
                let (centers, trend, top_tests, species, top_breeds) = tokio::try_join!(
                    self.window_rows(sql::CENTER_TOTALS, from, to),
                    self.window_rows(sql::TREND, from, to),
                    self.window_rows(sql::TOP_TESTS, from, to),
                    self.window_rows(sql::SPECIES, from, to),
                    self.window_rows(sql::TOP_BREEDS, from, to),
                )?;
                Ok($crate::store::DashboardData {
                    summary,
                    centers,
                    trend,
                    top_tests,
                    species,
                    top_breeds,
                })
            }

            async fn export_days(
                &self,
                from: chrono::NaiveDate,
                to: chrono::NaiveDate,
            ) -> $crate::store::StoreResult<Vec<$crate::store::ExportRow>> {
                self.window_rows($crate::store::reads::sql::EXPORT, from, to)
                    .await
            }
        }
    };
}

pub(crate) use impl_read_store;
