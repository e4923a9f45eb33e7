//! A pooled connection for statements that run outside a write transaction.
//!
//! Behind a pooler in transaction mode, such as PgBouncer with
//! `pool_mode = transaction`, the service's connection is lent a server
//! connection only for the length of a transaction. Outside one, the pooler
//! may move every protocol round trip to another server connection. sqlx
//! parses a statement in one round trip and runs it in the next, so a
//! statement run outside a transaction can lose its parse in between. A
//! [`Session`] therefore wraps its statements in a transaction when the
//! store runs behind such a pooler, and is a plain connection otherwise.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};

pub(crate) enum Session<DB: Database> {
    Plain(PoolConnection<DB>),
    Pinned(Transaction<'static, DB>),
}

impl<DB: Database> Session<DB> {
    /// Takes a connection from `pool`, in a transaction when `pinned`.
    pub async fn open(pool: &Pool<DB>, pinned: bool) -> Result<Self, sqlx::Error> {
        Ok(if pinned {
            Session::Pinned(begin(pool).await?)
        } else {
            Session::Plain(pool.acquire().await?)
        })
    }

    /// Commits the transaction, if there is one, and returns the connection
    /// to the pool. A session dropped without this rolls back its writes.
    pub async fn finish(self) -> Result<(), sqlx::Error> {
        match self {
            Session::Plain(_) => Ok(()),
            Session::Pinned(transaction) => transaction.commit().await,
        }
    }
}

/// Begins a transaction on a connection from `pool`, in a task of its own.
///
/// sqlx's PostgreSQL `BEGIN` is not safe to cancel: a caller dropped while it
/// waits for the reply (a request that timed out) returns the connection to
/// the pool inside a transaction that is never ended. Behind a pooler in
/// transaction mode, that transaction also keeps a server connection from
/// every other client. In a task of its own, the `BEGIN` completes, and a
/// transaction whose caller is gone is dropped and so rolled back.
pub(crate) async fn begin<DB: Database>(
    pool: &Pool<DB>,
) -> Result<Transaction<'static, DB>, sqlx::Error> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(sqlx::Error::Io(std::io::Error::other(err))),
    }
}

impl<DB: Database> Deref for Session<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        match self {
            Session::Plain(connection) => connection,
            Session::Pinned(transaction) => transaction,
        }
    }
}

impl<DB: Database> DerefMut for Session<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Session::Plain(connection) => connection,
            Session::Pinned(transaction) => transaction,
        }
    }
}
