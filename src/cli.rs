//! The command line: `serve` (the default), `migrate` and `centers`.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};

use crate::keys::{self, KeyHash};
use crate::settings::{DatabaseUrl, Settings};
use crate::store::{self, CenterChanges, NewKey, SqliteStore, Store};

#[derive(Debug, Parser)]
#[command(
    name = "kpi-service",
    version,
    about = "Collects KPI batches and events from veterinary clinics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage centers and their keys.
    #[command(subcommand)]
    Centers(CentersCommand),
}

#[derive(Debug, Subcommand)]
pub enum CentersCommand {
    /// Register a center and print its new key once.
    Add {
        code: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        city: Option<String>,
        #[arg(long)]
        country: Option<String>,
        /// Lifetime of the key, such as 90d or 12h; without it the key never expires.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List centers (never keys).
    List,
    /// Issue a new key and print it once; older keys keep working for the grace period.
    RotateKey {
        code: String,
        /// How long older keys keep working, such as 24h; 0s ends them at once.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        grace: Duration,
        /// Lifetime of the new key; without it the key never expires.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Stop accepting data from a center.
    Deactivate { code: String },
    /// Accept data from a center again.
    Activate { code: String },
}

/// Opens the configured store and applies migrations, over
/// `DATABASE_DIRECT_URL` when it is set.
pub async fn open_store(settings: &Settings) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let store = store::connect_with(&settings.database_url, settings.pool_config())
        .await
        .map_err(|err| with_hint(err, "cannot connect to the database"))?;
    if let DatabaseUrl::Postgres(url) = &settings.database_url {
        if !settings.database_transaction_pooler {
            reject_transaction_pooler(url, "DATABASE_URL").await?;
        }
    }
    if let DatabaseUrl::Sqlite(url) = &settings.database_url {
        if let Some(path) = SqliteStore::filename(url) {
            tracing::info!(path = %path.display(), "using the embedded SQLite database");
        }
    }
    match &settings.database_direct_url {
        Some(direct_url) => {
            reject_transaction_pooler(direct_url, "DATABASE_DIRECT_URL").await?;
            // One connection is enough to migrate; it closes right after.
            let pool = store::PoolConfig {
                max_connections: 1,
                ..settings.pool_config()
            };
            let direct = store::connect_with(&DatabaseUrl::Postgres(direct_url.clone()), pool)
                .await
                .map_err(|err| with_hint(err, "cannot connect to DATABASE_DIRECT_URL"))?;
            let migrated = direct.migrate().await;
            direct.close().await;
            migrated.map_err(|err| {
                with_hint(err, "database migration over DATABASE_DIRECT_URL failed")
            })?;
        }
        None => store
            .migrate()
            .await
            .map_err(|err| with_hint(err, "database migration failed"))?,
    }
    Ok(store)
}

/// Formats `err` with its causes, skipping a cause whose message the
/// message before it already contains: sqlx's errors and the store's repeat
/// their source's message, which would otherwise print two or three times.
pub fn describe_error(err: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut last_shown = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if last_shown.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
        last_shown = message;
    }
    text
}

/// Wraps a store error in `context`, followed by what to change when the
/// error is the mark of a transaction pooler.
fn with_hint(err: store::StoreError, context: &str) -> anyhow::Error {
    let context = match err.pooler_hint() {
        Some(hint) => format!("{context}; {hint}"),
        None => context.to_owned(),
    };
    anyhow::Error::new(err).context(context)
}

/// Fails when the URL in the setting `name` leads to a pooler in
/// transaction mode, where named prepared statements and the migrations'
/// session lock break. A probe that cannot finish is logged and ignored,
/// because the database responded a moment ago and failing requests then
/// log what is wrong.
async fn reject_transaction_pooler(url: &str, name: &str) -> anyhow::Result<()> {
    match store::behind_transaction_pooler(url).await {
        Ok(false) => Ok(()),
        Ok(true) if name == "DATABASE_URL" => anyhow::bail!(
            "DATABASE_URL leads to a pooler in transaction mode (its connections change \
             server processes between transactions); set DATABASE_TRANSACTION_POOLER=true \
             and DATABASE_DIRECT_URL, or put the pooler in session mode"
        ),
        Ok(true) => anyhow::bail!(
            "{name} leads to a pooler in transaction mode (its connections change server \
             processes between transactions); point it at PostgreSQL itself"
        ),
        Err(err) => {
            tracing::warn!(setting = name, error = %err, "cannot check for a transaction pooler");
            Ok(())
        }
    }
}

/// Runs a `centers` subcommand, printing to standard output.
pub async fn centers(settings: &Settings, command: CentersCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match command {
        CentersCommand::Add {
            code,
            name,
            city,
            country,
            expires_in,
        } => {
            check_center(&code, Some(&name))?;
            let key = keys::generate();
            let new_key = new_key(&key, expires_in)?;
            let changes = CenterChanges {
                name: Some(name),
                city,
                country,
                is_active: None,
            };
            let center = store.create_center(&changes, &code, &new_key).await?;
            println!("center {} ({}) registered", center.code, center.name);
            print_key(&key, &new_key);
        }
        CentersCommand::List => {
            println!(
                "{:<12} {:<6} {:<5} {:<25} {:<20} name",
                "code", "active", "keys", "last sync", "city"
            );
            for listing in store.list_centers().await? {
                let center = listing.center;
                let last_sync = center
                    .last_sync_at
                    .map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
                println!(
                    "{:<12} {:<6} {:<5} {:<25} {:<20} {}",
                    center.code,
                    if center.is_active { "yes" } else { "no" },
                    listing.active_keys,
                    last_sync,
                    center.city.unwrap_or_default(),
                    center.name
                );
            }
        }
        CentersCommand::RotateKey {
            code,
            grace,
            expires_in,
        } => {
            let key = keys::generate();
            let new_key = new_key(&key, expires_in)?;
            let old_keys_expire_at = from_now(grace, "--grace")?;
            store
                .rotate_key(&code, &new_key, old_keys_expire_at)
                .await?;
            println!(
                "new key issued for {code}; older keys stop working at {}",
                old_keys_expire_at.to_rfc3339()
            );
            print_key(&key, &new_key);
        }
        CentersCommand::Deactivate { code } => {
            store.set_active(&code, false).await?;
            println!("center {code} deactivated");
        }
        CentersCommand::Activate { code } => {
            store.set_active(&code, true).await?;
            println!("center {code} activated");
        }
    }
    Ok(())
}

/// Adds `span` to now, failing on a span too long for a timestamp.
fn from_now(span: Duration, what: &str) -> anyhow::Result<chrono::DateTime<Utc>> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| Utc::now().checked_add_signed(span))
        .with_context(|| format!("{what} is too long; use at most a few thousand days"))
}

/// Checks a center code and name as the API would: the code 1 to 50
/// characters, the name 1 to 255, neither with control characters.
fn check_center(code: &str, name: Option<&str>) -> anyhow::Result<()> {
    let length = code.chars().count();
    if !(1..=50).contains(&length) || code.chars().any(char::is_control) {
        anyhow::bail!(
            "invalid center code {code:?}: use 1 to 50 characters without control characters"
        );
    }
    if let Some(name) = name {
        if name.trim().is_empty()
            || name.chars().count() > 255
            || name.chars().any(char::is_control)
        {
            anyhow::bail!(
                "invalid center name {name:?}: use 1 to 255 characters without control characters"
            );
        }
    }
    Ok(())
}

fn new_key(key: &str, expires_in: Option<Duration>) -> anyhow::Result<NewKey> {
    let expires_at = match expires_in {
        Some(lifetime) => Some(from_now(lifetime, "--expires-in")?),
        None => None,
    };
    Ok(NewKey {
        hash: KeyHash::of(key),
        expires_at,
    })
}

fn print_key(key: &str, new_key: &NewKey) {
    println!("api key (shown only once; send it in the X-API-Key header): {key}");
    if let Some(at) = new_key.expires_at {
        println!("the key expires at {}", at.to_rfc3339());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner cause")]
    struct Inner;

    #[test]
    fn describe_error_skips_repeated_causes() {
        let err = anyhow::Error::new(Outer(Inner)).context("cannot start");

        assert_eq!(describe_error(&err), "cannot start: outer: inner cause");
    }

    #[test]
    fn describe_error_keeps_distinct_causes() {
        let err = anyhow::Error::new(Inner)
            .context("migration 3 failed")
            .context("cannot start");

        assert_eq!(
            describe_error(&err),
            "cannot start: migration 3 failed: inner cause"
        );
    }
}
