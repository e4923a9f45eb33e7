//! Keeps the write of a center's `last_sync_at` off most transactions.
//!
//! Every write used to set the center's `last_sync_at` in its own
//! transaction, and that one row then serialized all of a center's writes.
//! Now a transaction sets it only when this process has not set it for that
//! center in the last [`INTERVAL`], so the stored time trails the latest
//! write by less than that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The maximum time the stored `last_sync_at` trails a center's latest write.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// When this process last set each center's `last_sync_at`.
#[derive(Debug, Default)]
pub struct LastSync {
    written: Mutex<HashMap<i32, Instant>>,
}

impl LastSync {
    /// Tells whether a write to `center_id` should set its `last_sync_at`,
    /// and if so, notes it as set now.
    pub fn due(&self, center_id: i32) -> bool {
        let now = Instant::now();
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.get(&center_id) {
            Some(at) if now.duration_since(*at) < INTERVAL => false,
            _ => {
                written.insert(center_id, now);
                true
            }
        }
    }

    /// Makes the next write to `center_id` set `last_sync_at`, after its data
    /// was deleted and `last_sync_at` cleared.
    pub fn forget(&self, center_id: i32) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.remove(&center_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_sync_due_once_per_interval() {
        let last_sync = LastSync::default();
        assert!(last_sync.due(1));
        assert!(!last_sync.due(1));
        assert!(last_sync.due(2));
        last_sync.forget(1);
        assert!(last_sync.due(1));
    }
}
