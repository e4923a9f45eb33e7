use std::process::ExitCode;

use clap::Parser;
use kpi_service::cli::{self, Cli, Command};
use kpi_service::settings::Settings;
use kpi_service::telemetry::{self, LogOutput};
use kpi_service::{error_reporting, service};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A missing .env file is normal; the environment alone is enough.
    let _ = dotenvy::dotenv();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("kpi-service: {err}");
            return ExitCode::from(2);
        }
    };
    // Sentry starts before the runtime, so that every worker thread gets its
    // client. Dropping the guard when main returns sends the queued events.
    let _error_reporting = match error_reporting::init(&settings) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("kpi-service: {err}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let output = match command {
        Command::Serve => LogOutput::Stdout,
        Command::Migrate | Command::Centers(_) => LogOutput::Stderr,
    };
    let _log_guards = match telemetry::init(&settings, output) {
        Ok(guards) => guards,
        Err(err) => {
            eprintln!("kpi-service: {err:#}");
            return ExitCode::from(2);
        }
    };
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(settings, command)),
        Err(err) => Err(anyhow::Error::new(err).context("cannot start the async runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = cli::describe_error(&err);
            tracing::error!(error = %message, "kpi-service failed");
            eprintln!("kpi-service: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => service::run(settings).await,
        Command::Migrate => cli::open_store(&settings).await.map(|store| {
            tracing::info!(backend = store.backend(), "migrations applied");
        }),
        Command::Centers(command) => cli::centers(&settings, command).await,
    }
}
