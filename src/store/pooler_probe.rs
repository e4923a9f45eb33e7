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
//! two connections take turns keeping a transaction open while the other one
//! runs a statement, and sooner or later one of them finds itself on another
//! server process. A pooler with one server connection to lend makes the
//! other statement wait for the commit, and then run on the holder's server
//! process.
//!
//! NOTE: the probe is a heuristic. A pooler busy with other clients may lend
//! server connections in an order the probe does not expect, so store errors
//! that show a lost or duplicate prepared statement also name the setting
//! (see `StoreError::pooler_hint`).

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};

/// The maximum wait of a statement for a server connection.
const WAIT: Duration = Duration::from_secs(2);

/// The number of rounds. Each client keeps a transaction open in at least one.
const ROUNDS: usize = 4;

/// One of the probe's two connections, with the server processes it saw.
struct Client {
    connection: PgConnection,
    pids: HashSet<i32>,
}

impl Client {
    async fn connect(url: &str) -> Result<Client, sqlx::Error> {
        Ok(Client {
            connection: PgConnection::connect_with(&super::PgStore::connect_options(url)?).await?,
            pids: HashSet::new(),
        })
    }

    /// Returns the server process of the connection's next statement, and
    /// records it. The simple protocol prepares nothing.
    async fn server_pid(&mut self) -> Result<i32, sqlx::Error> {
        let row = sqlx::raw_sql("SELECT pg_backend_pid()")
            .fetch_one(&mut self.connection)
            .await?;
        let pid = row.try_get(0)?;
        self.pids.insert(pid);
        Ok(pid)
    }
}

/// Tells whether connections to `url` change server processes between
/// transactions, the mark of a pooler in transaction mode.
pub async fn behind_transaction_pooler(url: &str) -> Result<bool, sqlx::Error> {
    let mut first = Client::connect(url).await?;
    let mut second = Client::connect(url).await?;
    for round in 0..ROUNDS {
        let (holder, other) = if round % 2 == 0 {
            (&mut first, &mut second)
        } else {
            (&mut second, &mut first)
        };
        if take_turn(holder, other).await? {
            return Ok(true);
        }
    }
    let moved = first.pids.len() > 1 || second.pids.len() > 1;
    first.connection.close().await?;
    second.connection.close().await?;
    Ok(moved)
}

/// Runs one round: `holder` keeps a transaction open while `other` runs a
/// statement. Returns true when `other` could run it only once the holder
/// committed, and then on the holder's server process: a pooler that has a
/// single server connection to lend does that in transaction mode.
async fn take_turn(holder: &mut Client, other: &mut Client) -> Result<bool, sqlx::Error> {
    sqlx::raw_sql("BEGIN")
        .execute(&mut holder.connection)
        .await?;
    let holder_pid = holder.server_pid().await?;
    let mut waiting = std::pin::pin!(other.server_pid());
    let waited = tokio::time::timeout(WAIT, &mut waiting).await;
    sqlx::raw_sql("COMMIT")
        .execute(&mut holder.connection)
        .await?;
    if let Ok(pid) = waited {
        pid?;
        // A pooler that lends the server connection idle the longest gives
        // the holder the other client's server connection now. One that
        // lends the one idle the shortest gives the other client the
        // holder's in the next round.
        holder.server_pid().await?;
        return Ok(false);
    }
    // In session mode, or with every server connection busy elsewhere, the
    // commit frees nothing that the other client can take.
    match tokio::time::timeout(WAIT, waiting).await {
        Ok(pid) => Ok(pid? == holder_pid),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "a second connection waited too long for a server connection",
        ))),
    }
}
