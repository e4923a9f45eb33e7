//! A short-lived cache of the centers that authentication reads.
//!
//! Every write authenticates against its center's row and keys, and that
//! lookup cost a database round trip on every request. Active centers are now kept for [`TTL`]: a change made through
//! this process's API applies at once, and one made elsewhere (the command
//! line, another replica) within [`TTL`]. Key expiry stays exact, because
//! it is checked against the current time on every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{CenterAuth, Store, StoreResult};

/// How long a looked-up center is reused.
pub const TTL: Duration = Duration::from_secs(1);

/// Active centers by code, each with the time it was read.
#[derive(Debug, Default)]
pub struct CenterCache {
    entries: Mutex<HashMap<String, (Instant, CenterAuth)>>,
}

impl CenterCache {
    /// Returns the center `code`, from the cache when it was read less than
    /// [`TTL`] ago. Only active centers are kept, so that activating a
    /// center applies at once everywhere.
    pub async fn find(&self, store: &dyn Store, code: &str) -> StoreResult<Option<CenterAuth>> {
        if let Some(center) = self.fresh(code) {
            return Ok(Some(center));
        }
        let found = store.find_center(code).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match &found {
            Some(center) if center.is_active => {
                entries.insert(code.to_owned(), (Instant::now(), center.clone()));
            }
            _ => {
                entries.remove(code);
            }
        }
        Ok(found)
    }

    /// Drops `code`, after this process changed the center.
    pub fn forget(&self, code: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(code);
    }

    fn fresh(&self, code: &str) -> Option<CenterAuth> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (read_at, center) = entries.get(code)?;
        (read_at.elapsed() < TTL).then(|| center.clone())
    }
}
