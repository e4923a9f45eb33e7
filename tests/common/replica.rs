//! The real binary as a child process, as an operator runs it.

use std::fs::File;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{DASHBOARD_PASSWORD, MASTER_KEY};

const BINARY: &str = env!("CARGO_BIN_EXE_kpi-service");

/// Returns a port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds an HTTP client with a timeout, so that a hung service fails the test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Runs a subcommand of the binary, such as `centers list`, to its end.
pub fn run_command(database_url: &str, vars: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

/// One replica: the real binary on a free port, logging to a file.
pub struct Replica {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Starts the binary without waiting for it (see [`Replica::wait_until_up`]).
    pub fn spawn(database_url: &str, vars: &[(&str, &str)]) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("replica.log");
        let output = File::create(&log).unwrap();
        let child = Command::new(BINARY)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("PORT", port.to_string())
            .env("CENTER_API_KEY", MASTER_KEY)
            .env("DASHBOARD_PASSWORD", DASHBOARD_PASSWORD)
            .env("LOG_LEVEL", "INFO")
            .envs(vars.iter().copied())
            .current_dir(dir.path())
            .stdout(Stdio::from(output.try_clone().unwrap()))
            .stderr(Stdio::from(output))
            .spawn()
            .unwrap();
        Replica {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    /// Waits until the port accepts connections, which happens after the
    /// migrations. A TCP connect uses no quota of the health limit.
    pub fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the replica exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not start on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to 30 seconds for the process to exit, as it does when its
    /// settings or database are wrong, and returns its exit status.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the replica is still running: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start(database_url: &str, vars: &[(&str, &str)]) -> Replica {
        let mut replica = Replica::spawn(database_url, vars);
        replica.wait_until_up();
        replica
    }

    /// Registers a center named after its code with the master key and
    /// returns the status.
    pub async fn register(&self, code: &str) -> reqwest::StatusCode {
        client()
            .put(self.url(&format!("/kpi/centers/{code}")))
            .header("X-API-Key", MASTER_KEY)
            .json(&serde_json::json!({"name": code}))
            .send()
            .await
            .unwrap()
            .status()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
