//! The [`Store`](super::Store) implementation that both backends share.
//!
//! The SQL in [`super::sql`] runs unchanged on PostgreSQL and SQLite, but
//! sqlx's executor traits make code generic over two databases hard to read,
//! so [`impl_store!`] writes the implementation once per concrete backend.
//! Each backend type provides the fields `pool`, `begin_wait` and
//! `last_sync`, and the functions `begin_write`, `run_migrations`,
//! `insert_day_lists`, `claim_event_ids` and `add_event_sums`.

use chrono::{DateTime, Utc};

use super::{Center, CenterAuth, StoredKey};
use crate::keys::KeyHash;

/// A `centers` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
pub struct CenterRow {
    pub id: i32,
    pub code: String,
    pub name: String,
    pub city: Option<String>,
    pub country: Option<String>,
    pub is_active: i32,
    pub registered_at: DateTime<Utc>,
    pub last_sync_at: Option<DateTime<Utc>>,
}

impl From<CenterRow> for Center {
    fn from(row: CenterRow) -> Self {
        Center {
            id: row.id,
            code: row.code,
            name: row.name,
            city: row.city,
            country: row.country,
            is_active: row.is_active != 0,
            registered_at: row.registered_at,
            last_sync_at: row.last_sync_at,
        }
    }
}

/// A center joined with one of its keys, or with none.
#[derive(Debug, sqlx::FromRow)]
pub struct CenterKeyRow {
    pub id: i32,
    pub code: String,
    pub name: String,
    pub is_active: i32,
    pub key_hash: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CenterKeyRow {
    /// Builds the center from its rows; no rows means no such center. A hash
    /// that is not valid hex (hand-edited data) is skipped, so it never matches.
    pub fn into_center(rows: Vec<CenterKeyRow>) -> Option<CenterAuth> {
        let keys = rows
            .iter()
            .filter_map(|row| {
                Some(StoredKey {
                    hash: KeyHash::from_hex(row.key_hash.as_deref()?)?,
                    expires_at: row.expires_at,
                })
            })
            .collect();
        let first = rows.into_iter().next()?;
        Some(CenterAuth {
            id: first.id,
            code: first.code,
            name: first.name,
            is_active: first.is_active != 0,
            keys,
        })
    }
}

/// A `center_api_keys` row.
#[derive(Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub id: i64,
    #[sqlx(default)]
    pub center_id: i32,
    pub expires_at: Option<DateTime<Utc>>,
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal) => {
        impl $store {
            /// Opens a [`Session`]($crate::store::session::Session) for
            /// statements outside a write transaction.
            async fn session(
                &self,
            ) -> $crate::store::StoreResult<$crate::store::session::Session<$db>> {
                Ok($crate::store::session::Session::open(&self.pool, !self.persistent).await?)
            }

            /// Sets the center's `last_sync_at` unless this process set it
            /// less than a second ago.
            async fn touch_last_sync(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                center_id: i32,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                if self.last_sync.due(center_id) {
                    sqlx::query($crate::store::sql::SET_LAST_SYNC)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> $crate::store::StoreResult<()> {
                self.run_migrations().await
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            fn pool_status(&self) -> $crate::store::PoolStatus {
                $crate::store::PoolStatus {
                    size: self.pool.size(),
                    idle: self.pool.num_idle(),
                    max: self.pool.options().get_max_connections(),
                }
            }

            fn begin_wait(&self) -> prometheus::Histogram {
                self.begin_wait.clone()
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                // The simple protocol: one round trip, no prepared statement.
                sqlx::raw_sql("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn find_center(
                &self,
                code: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::CenterAuth>> {
                use $crate::store::shared::CenterKeyRow;

                // One round trip: the center's row once per key, or once with
                // no key.
                let mut session = self.session().await?;
                let rows = sqlx::query_as::<_, CenterKeyRow>($crate::store::sql::CENTER_WITH_KEYS)
                    .persistent(self.persistent)
                    .bind(code)
                    .fetch_all(&mut *session)
                    .await?;
                session.finish().await?;
                Ok(CenterKeyRow::into_center(rows))
            }

            async fn upsert_center(
                &self,
                code: &str,
                changes: &$crate::store::CenterChanges,
            ) -> $crate::store::StoreResult<$crate::store::Center> {
                let mut session = self.session().await?;
                let row = sqlx::query_as::<_, $crate::store::shared::CenterRow>(
                    $crate::store::sql::UPSERT_CENTER,
                )
                .persistent(self.persistent)
                .bind(code)
                .bind(changes.name.as_deref())
                .bind(changes.city.as_deref())
                .bind(changes.country.as_deref())
                .bind(changes.is_active.map(i32::from))
                .bind(chrono::Utc::now())
                .fetch_one(&mut *session)
                .await?;
                session.finish().await?;
                Ok(row.into())
            }

            async fn save_day(
                &self,
                center_id: i32,
                batch: &$crate::store::DayBatch,
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::sql;

                let now = chrono::Utc::now();
                let (_writer, mut tx) = self.begin_write().await?;
                let totals = batch.totals;
                // The day row goes first: its row lock orders concurrent batches
                // for one day, so that exactly one of them ends up stored whole.
                sqlx::query(sql::UPSERT_DAY_TOTALS)
                    .persistent(self.persistent)
                    .bind(center_id)
                    .bind(batch.date)
                    .bind(totals.orders)
                    .bind(totals.results)
                    .bind(totals.pets)
                    .bind(totals.owners)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                for statement in [
                    sql::DELETE_DAY_TESTS,
                    sql::DELETE_DAY_SPECIES,
                    sql::DELETE_DAY_BREEDS,
                ] {
                    sqlx::query(statement)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .bind(batch.date)
                        .execute(&mut *tx)
                        .await?;
                }
                if !batch.modules.is_empty() {
                    sqlx::query(sql::DELETE_DAY_MODULES)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .bind(batch.date)
                        .execute(&mut *tx)
                        .await?;
                }
                if !batch.payment_methods.is_empty() {
                    sqlx::query(sql::DELETE_DAY_PAYMENTS)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .bind(batch.date)
                        .execute(&mut *tx)
                        .await?;
                }
                self.insert_day_lists(&mut tx, center_id, batch, now)
                    .await?;
                if let Some(p) = &batch.performance {
                    sqlx::query(sql::UPSERT_PERFORMANCE)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .bind(batch.date)
                        .bind(p.avg_order_processing_time)
                        .bind(p.peak_hour)
                        .bind(p.peak_hour_orders)
                        .bind(p.completion_rate)
                        .bind(p.same_day_completion)
                        .bind(p.morning_orders)
                        .bind(p.afternoon_orders)
                        .bind(p.evening_orders)
                        .bind(p.night_orders)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(u) = &batch.system_usage {
                    sqlx::query(sql::UPSERT_SYSTEM_USAGE)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .bind(batch.date)
                        .bind(u.total_active_users)
                        .bind(u.peak_concurrent_users)
                        .bind(u.avg_session_duration)
                        .bind(u.web_access_count)
                        .bind(u.mobile_access_count)
                        .bind(u.desktop_access_count)
                        .bind(u.total_workstations)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                self.touch_last_sync(&mut tx, center_id, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_events(
                &self,
                events: &[$crate::store::EventWrite],
            ) -> $crate::store::StoreResult<Vec<$crate::store::EventOutcome>> {
                use $crate::store::event_group::{self, Claim, GroupSums};
                use $crate::store::{sql, EventOutcome};

                let now = chrono::Utc::now();
                let (_writer, mut tx) = self.begin_write().await?;
                let mut registered = std::collections::HashMap::new();
                for code in event_group::codes_to_register(events) {
                    let id = sqlx::query_scalar::<_, i32>(sql::REGISTER_CENTER)
                        .persistent(self.persistent)
                        .bind(code)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                    registered.insert(code.to_owned(), id);
                }
                let center_ids = event_group::center_ids(events, &registered);
                let claims = event_group::claims(events, &center_ids);
                let firsts: Vec<usize> = (0..events.len())
                    .filter(|&index| claims[index] == Claim::First)
                    .collect();
                let ids: Vec<$crate::store::event_group::NewId<'_>> = firsts
                    .iter()
                    .map(|&index| $crate::store::event_group::NewId {
                        center_id: center_ids[index],
                        event_id: events[index].event_id.as_deref().unwrap_or_default(),
                        response: &events[index].response,
                    })
                    .collect();
                let earlier = self.claim_event_ids(&mut tx, &ids, now).await?;
                let mut outcomes = vec![EventOutcome::Counted; events.len()];
                for (&index, response) in firsts.iter().zip(earlier) {
                    if let Some(response) = response {
                        outcomes[index] = EventOutcome::Repeated(response);
                    }
                }
                event_group::settle_copies(events, &claims, &mut outcomes);
                let mut sums = GroupSums::default();
                for (index, event) in events.iter().enumerate() {
                    if outcomes[index] == EventOutcome::Counted {
                        sums.add(center_ids[index], event);
                    }
                }
                self.add_event_sums(&mut tx, &sums, now).await?;
                for center_id in sums.centers() {
                    self.touch_last_sync(&mut tx, center_id, now).await?;
                }
                tx.commit().await?;
                Ok(outcomes)
            }

            async fn purge_event_ids(
                &self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<u64> {
                let mut session = self.session().await?;
                let result = sqlx::query($crate::store::sql::PURGE_EVENT_IDS)
                    .persistent(self.persistent)
                    .bind(before)
                    .execute(&mut *session)
                    .await?;
                session.finish().await?;
                Ok(result.rows_affected())
            }

            async fn delete_center_data(
                &self,
                center_id: i32,
            ) -> $crate::store::StoreResult<$crate::store::DeletedCounts> {
                let (_writer, mut tx) = self.begin_write().await?;
                let mut deleted = Vec::new();
                for table in $crate::store::DATA_TABLES {
                    let statement = format!("DELETE FROM {table} WHERE center_id = $1");
                    let result = sqlx::query(&statement)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .execute(&mut *tx)
                        .await?;
                    deleted.push((table, result.rows_affected()));
                }
                for statement in [
                    $crate::store::sql::DELETE_CENTER_EVENT_IDS,
                    $crate::store::sql::RESET_LAST_SYNC,
                ] {
                    sqlx::query(statement)
                        .persistent(self.persistent)
                        .bind(center_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                self.last_sync.forget(center_id);
                Ok(deleted)
            }

            async fn create_center(
                &self,
                center: &$crate::store::CenterChanges,
                code: &str,
                key: &$crate::store::NewKey,
            ) -> $crate::store::StoreResult<$crate::store::Center> {
                use $crate::store::sql;

                let now = chrono::Utc::now();
                let (_writer, mut tx) = self.begin_write().await?;
                let inserted =
                    sqlx::query_as::<_, $crate::store::shared::CenterRow>(sql::INSERT_CENTER)
                        .persistent(self.persistent)
                        .bind(code)
                        .bind(center.name.as_deref().unwrap_or(code))
                        .bind(center.city.as_deref())
                        .bind(center.country.as_deref())
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await;
                let row = match inserted {
                    Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                        return Err($crate::store::StoreError::CenterExists(code.to_owned()));
                    }
                    other => other?,
                };
                sqlx::query(sql::INSERT_KEY)
                    .persistent(self.persistent)
                    .bind(row.id)
                    .bind(key.hash.to_hex())
                    .bind(now)
                    .bind(key.expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row.into())
            }

            async fn list_centers(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::CenterListing>> {
                use $crate::store::shared::{CenterRow, KeyRow};

                let mut session = self.session().await?;
                let centers = sqlx::query_as::<_, CenterRow>($crate::store::sql::ALL_CENTERS)
                    .persistent(self.persistent)
                    .fetch_all(&mut *session)
                    .await?;
                let keys = sqlx::query_as::<_, KeyRow>($crate::store::sql::ALL_KEYS)
                    .persistent(self.persistent)
                    .fetch_all(&mut *session)
                    .await?;
                session.finish().await?;
                let now = chrono::Utc::now();
                Ok(centers
                    .into_iter()
                    .map(|row| {
                        let active_keys = keys
                            .iter()
                            .filter(|key| {
                                key.center_id == row.id && key.expires_at.is_none_or(|at| at > now)
                            })
                            .count() as i64;
                        $crate::store::CenterListing {
                            center: row.into(),
                            active_keys,
                        }
                    })
                    .collect())
            }

            async fn rotate_key(
                &self,
                code: &str,
                key: &$crate::store::NewKey,
                old_keys_expire_at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::shared::{CenterRow, KeyRow};
                use $crate::store::sql;

                let now = chrono::Utc::now();
                let (_writer, mut tx) = self.begin_write().await?;
                let center = sqlx::query_as::<_, CenterRow>(sql::FIND_CENTER)
                    .persistent(self.persistent)
                    .bind(code)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| $crate::store::StoreError::CenterNotFound(code.to_owned()))?;
                let old_keys = sqlx::query_as::<_, KeyRow>(sql::CENTER_KEYS)
                    .persistent(self.persistent)
                    .bind(center.id)
                    .fetch_all(&mut *tx)
                    .await?;
                for old in old_keys {
                    if old.expires_at.is_none_or(|at| at > old_keys_expire_at) {
                        sqlx::query(sql::SET_KEY_EXPIRY)
                            .persistent(self.persistent)
                            .bind(old.id)
                            .bind(old_keys_expire_at)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                sqlx::query(sql::INSERT_KEY)
                    .persistent(self.persistent)
                    .bind(center.id)
                    .bind(key.hash.to_hex())
                    .bind(now)
                    .bind(key.expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn set_active(&self, code: &str, active: bool) -> $crate::store::StoreResult<()> {
                let mut session = self.session().await?;
                let result = sqlx::query($crate::store::sql::SET_ACTIVE)
                    .persistent(self.persistent)
                    .bind(code)
                    .bind(i32::from(active))
                    .execute(&mut *session)
                    .await?;
                session.finish().await?;
                if result.rows_affected() == 0 {
                    return Err($crate::store::StoreError::CenterNotFound(code.to_owned()));
                }
                Ok(())
            }
        }
    };
}

pub(crate) use impl_store;
