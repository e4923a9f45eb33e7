//! Measures the memory that per-IP rate limiting holds for one million
//! distinct client addresses, and what the periodic cleanup gives back.
//!
//! Run: `cargo run --release --example limiter_memory`
//! The limiter is the service's own (`Limits`), with the default quotas.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use kpi_service::limits::{bucket, Limits};
use kpi_service::metrics::Metrics;
use kpi_service::settings::Settings;

/// Resident set size of this process in MiB, from /proc/self/statm.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    const KEYS: u32 = 1_000_000;
    let vars = [("RATE_LIMIT_DASHBOARD", "60/second")];
    let settings = Settings::from_lookup(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("settings");
    let limits = Limits::new(&settings, std::sync::Arc::new(Metrics::new()));
    let before = rss_mib();
    for i in 0..KEYS {
        // Distinct IPv6 /64 networks, as a flood from many hosts would bring.
        let address = IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            1,
        ));
        limits.check_dashboard_key(bucket(address));
    }
    let filled = rss_mib();
    println!("keys: {}", limits.dashboard_keys());
    println!(
        "rss before: {before:.1} MiB, after {KEYS} keys: {filled:.1} MiB ({:.0} bytes a key)",
        (filled - before) * 1024.0 * 1024.0 / f64::from(KEYS)
    );
    // With 60/second one request is refilled in 1/60 s; after that every key
    // is back at a full burst and the cleanup drops it.
    std::thread::sleep(Duration::from_millis(100));
    limits.cleanup();
    println!(
        "keys after cleanup: {}, rss: {:.1} MiB",
        limits.dashboard_keys(),
        rss_mib()
    );
}
