//! Detects a pooler in transaction mode in front of PostgreSQL.
//!
//! Without `DATABASE_TRANSACTION_POOLER`, the service keeps named prepared
//! statements on each connection. Behind a pooler that lends server
//! connections per transaction, a statement prepared on one server
//! connection can run on another, where the same name may belong to another
//! client's statement. That can fail, or run the wrong statement, so the
//! service rejects such a pooler at start-up.
//!
//! Without a pooler, or with one in session mode, a client connection keeps
//! one server process for its whole life. In transaction mode it does not:
//! two connections take turns holding a transaction open while the other one
//! runs a statement, and sooner or later one of them finds itself on another
//! server process.
//!
//! NOTE: the probe is a heuristic. A pooler busy with other clients may lend
//! server connections in an order the probe does not expect, so store errors
//! that show a lost or duplicate prepared statement also name the setting
//! (see `StoreError::pooler_hint`).

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};

/// The longest wait of a statement for a server connection. A pooler out of
/// server connections makes the second client wait in either mode, so the
/// probe then ends without a result.
const WAIT: Duration = Duration::from_secs(2);

/// The number of rounds. Each client keeps a transaction open in at least one.
const ROUNDS: usize = 4;

/// Tells whether connections to `url` change server processes between
/// transactions, the mark of a pooler in transaction mode.
pub async fn behind_transaction_pooler(url: &str) -> Result<bool, sqlx::Error> {
    let mut clients = [
        PgConnection::connect(url).await?,
        PgConnection::connect(url).await?,
    ];
    let mut seen: [HashSet<i32>; 2] = Default::default();
    for round in 0..ROUNDS {
        let (holder, other) = (round % 2, 1 - round % 2);
        sqlx::raw_sql("BEGIN").execute(&mut clients[holder]).await?;
        let during = backend_pid(&mut clients[holder]).await?;
        seen[holder].insert(during);
        let Ok(pid) = tokio::time::timeout(WAIT, backend_pid(&mut clients[other])).await else {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "a second connection waited too long for a server connection",
            )));
        };
        seen[other].insert(pid?);
        sqlx::raw_sql("COMMIT")
            .execute(&mut clients[holder])
            .await?;
        // A pooler that lends the server connection idle the longest gives
        // the holder the other client's server connection now; one that
        // lends the one idle the shortest gives the other client the
        // holder's in the next round.
        let after = backend_pid(&mut clients[holder]).await?;
        seen[holder].insert(after);
    }
    for client in clients {
        client.close().await?;
    }
    Ok(seen.iter().any(|pids| pids.len() > 1))
}

/// Returns the server process of the connection's current statement, over
/// the simple protocol, which prepares nothing.
async fn backend_pid(connection: &mut PgConnection) -> Result<i32, sqlx::Error> {
    let row = sqlx::raw_sql("SELECT pg_backend_pid()")
        .fetch_one(connection)
        .await?;
    row.try_get(0)
}
