//! Group commit for events.
//!
//! A database commits a limited number of transactions a second, and with
//! one transaction per event that rate is the ceiling for events. Here every
//! event goes into a queue. One writer task takes whatever has gathered
//! while the previous transaction ran, and writes it all in one transaction
//! with counts summed per row. Each request gets its response only after the
//! transaction holding its event has committed, and a failed transaction
//! fails every request in it. Under light load a group is one event, so the
//! latency is that of a single transaction.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{EventOutcome, EventWrite, Store, StoreError, StoreResult};

/// Most events written in one transaction.
pub const MAX_GROUP: usize = 256;

/// Events waiting for the writer; a full queue makes requests wait.
const QUEUE_CAPACITY: usize = 4096;

/// How many times a group that hit a deadlock or a serialization failure is
/// written again before its requests fail.
const RETRIES: usize = 2;

type Reply = oneshot::Sender<StoreResult<EventOutcome>>;

/// The handle that requests send their events through.
#[derive(Debug, Clone)]
pub struct EventWriter {
    queue: mpsc::Sender<(EventWrite, Reply)>,
}

impl EventWriter {
    /// Starts the writer task; it ends once every handle is dropped and the
    /// queue is empty. A group still unwritten after `timeout` fails.
    pub fn spawn(
        store: Arc<dyn Store>,
        group_sizes: prometheus::Histogram,
        timeout: Duration,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_groups(store, receiver, group_sizes, timeout));
        Self { queue }
    }

    /// Queues an event and waits until its group has committed.
    pub async fn record(&self, event: EventWrite) -> StoreResult<EventOutcome> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::Database(sqlx::Error::PoolClosed);
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn write_groups(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<(EventWrite, Reply)>,
    group_sizes: prometheus::Histogram,
    timeout: Duration,
) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        let (events, replies): (Vec<EventWrite>, Vec<Reply>) = jobs.drain(..).unzip();
        group_sizes.observe(events.len() as f64);
        // A connection whose peer vanished without a reset can wait forever,
        // and every later event waits behind it, so the group gives up. Its
        // commit may still have happened: a client retry with the same event
        // id then counts nothing.
        let written = tokio::time::timeout(timeout, write_group(store.as_ref(), &events))
            .await
            .unwrap_or_else(|_| Err(StoreError::GroupTimedOut(timeout)));
        match written {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A request that gave up has dropped its receiver; its
                    // event is stored all the same.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                tracing::warn!(events = events.len(), error = %err, "event group failed; nothing of it was written");
                let shared = Arc::new(err);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Group(shared.clone())));
                }
            }
        }
    }
}

async fn write_group(store: &dyn Store, events: &[EventWrite]) -> StoreResult<Vec<EventOutcome>> {
    let mut attempt = 0;
    loop {
        match store.record_events(events).await {
            Err(err) if err.is_retryable() && attempt < RETRIES => {
                attempt += 1;
                tracing::debug!(error = %err, attempt, "event group aborted by the database; writing it again");
            }
            result => return result,
        }
    }
}

/// How long an event id is kept: a repeat within this time counts nothing.
pub const ID_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often ids older than [`ID_RETENTION`] are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes expired event ids now and then every [`PURGE_INTERVAL`], until
/// the returned task is aborted.
pub fn spawn_id_purge(store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PURGE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let before = chrono::Utc::now() - ID_RETENTION;
            match store.purge_event_ids(before).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "deleted event ids older than 7 days"),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot delete expired event ids; retrying in an hour")
                }
            }
        }
    })
}
