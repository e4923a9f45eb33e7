//! The dashboard page: figures from [`DashboardData`] turned into cards,
//! tables and SVG charts drawn on the server, so that the page needs no
//! script and no third-party asset.

use askama::Template;
use std::collections::HashMap;

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::store::{DashboardData, DayTrend, LabelCount};

/// A center that has not synced for this long is marked as silent.
pub const SILENT_AFTER_HOURS: i64 = 48;

/// The periods offered by the switch, in days.
pub const PERIODS: [u64; 4] = [7, 30, 90, 365];

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub title: String,
    pub version: String,
    pub days: u64,
    pub from: String,
    pub to: String,
    pub periods: Vec<Period>,
    pub cards: Vec<Card>,
    pub trend: TrendChart,
    pub centers_chart: Vec<Bar>,
    pub tests_chart: Vec<Bar>,
    pub species_chart: Vec<Bar>,
    pub breeds_chart: Vec<Bar>,
    pub centers: Vec<CenterLine>,
    /// No center is registered, or none sent data in the period.
    pub empty: bool,
    pub no_centers: bool,
}

pub struct Period {
    pub days: u64,
    pub current: bool,
}

pub struct Card {
    pub label: &'static str,
    pub value: String,
    pub note: String,
}

/// One bar of a horizontal bar chart; `width` is a share of the largest
/// value, from 0 to 100.
pub struct Bar {
    pub label: String,
    pub detail: String,
    pub value: String,
    pub width: String,
    pub share: String,
}

/// The daily trend as two polylines in a 600 x 200 view box.
pub struct TrendChart {
    pub orders_points: String,
    pub results_points: String,
    pub max_label: String,
    pub first_day: String,
    pub last_day: String,
    pub days: Vec<TrendDay>,
}

pub struct TrendDay {
    pub date: String,
    pub orders: String,
    pub results: String,
}

pub struct CenterLine {
    pub code: String,
    pub name: String,
    pub active: bool,
    pub orders: String,
    pub results: String,
    pub pets: String,
    pub owners: String,
    pub last_sync: String,
    pub last_sync_iso: String,
    pub silent: bool,
}

impl DashboardPage {
    pub fn new(
        title: &str,
        version: &str,
        days: u64,
        from: NaiveDate,
        to: NaiveDate,
        data: &DashboardData,
    ) -> Self {
        let now = Utc::now();
        let summary = &data.summary;
        let average = if summary.total_centers > 0 {
            (summary.total_orders as f64 / summary.total_centers as f64).round() as i64
        } else {
            0
        };
        let cards = vec![
            Card {
                label: "Centers",
                value: group(summary.total_centers),
                note: format!("{} active", group(summary.active_centers)),
            },
            Card {
                label: "Orders",
                value: group(summary.total_orders),
                note: format!("last {days} days"),
            },
            Card {
                label: "Results",
                value: group(summary.total_results),
                note: format!("last {days} days"),
            },
            Card {
                label: "Pets",
                value: group(summary.total_pets),
                note: format!("last {days} days"),
            },
            Card {
                label: "Average orders per center",
                value: group(average),
                note: "over all registered centers".into(),
            },
        ];
        let center_counts: Vec<LabelCount> = data
            .centers
            .iter()
            .map(|c| LabelCount {
                label: c.code.clone(),
                detail: Some(c.name.clone()),
                count: c.orders,
            })
            .collect();
        DashboardPage {
            title: title.to_owned(),
            version: version.to_owned(),
            days,
            from: from.to_string(),
            to: to.to_string(),
            periods: PERIODS
                .iter()
                .map(|&p| Period {
                    days: p,
                    current: p == days,
                })
                .collect(),
            cards,
            trend: trend_chart(&data.trend, from, to),
            centers_chart: bars(&center_counts),
            tests_chart: bars(&data.top_tests),
            species_chart: bars(&data.species),
            breeds_chart: bars(&data.top_breeds),
            centers: data
                .centers
                .iter()
                .map(|c| CenterLine {
                    code: c.code.clone(),
                    name: c.name.clone(),
                    active: c.is_active != 0,
                    orders: group(c.orders),
                    results: group(c.results),
                    pets: group(c.pets),
                    owners: group(c.owners),
                    last_sync: c
                        .last_sync_at
                        .map_or_else(|| "never".to_owned(), |at| relative(at, now)),
                    last_sync_iso: c.last_sync_at.map(|at| at.to_rfc3339()).unwrap_or_default(),
                    silent: c
                        .last_sync_at
                        .is_none_or(|at| (now - at).num_hours() >= SILENT_AFTER_HOURS),
                })
                .collect(),
            empty: summary.total_centers == 0 || data.trend.is_empty(),
            no_centers: summary.total_centers == 0,
        }
    }
}

/// Formats a count with thin groups of three digits: 12 345.
fn group(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push('\u{202f}');
        }
        grouped.push(digit);
    }
    if value < 0 {
        grouped.insert(0, '-');
    }
    grouped
}

/// Describes how long ago `at` was: "5 min ago", "3 h ago", "2 days ago".
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let minutes = (now - at).num_minutes().max(0);
    match minutes {
        0 => "just now".to_owned(),
        1..=59 => format!("{minutes} min ago"),
        60..=2879 => format!("{} h ago", minutes / 60),
        _ => format!("{} days ago", minutes / 1440),
    }
}

fn bars(counts: &[LabelCount]) -> Vec<Bar> {
    let max = counts.iter().map(|c| c.count).max().unwrap_or(0).max(1) as f64;
    let total: i64 = counts.iter().map(|c| c.count).sum();
    counts
        .iter()
        .map(|c| Bar {
            label: c.label.clone(),
            detail: c
                .detail
                .clone()
                .filter(|d| d != &c.label)
                .unwrap_or_default(),
            value: group(c.count),
            width: format!("{:.1}", c.count as f64 / max * 100.0),
            share: if total > 0 {
                format!("{:.0}%", c.count as f64 / total as f64 * 100.0)
            } else {
                String::new()
            },
        })
        .collect()
}

/// Lays the days from `from` to `to` along x (days without data count as 0)
/// and orders and results along y.
fn trend_chart(trend: &[DayTrend], from: NaiveDate, to: NaiveDate) -> TrendChart {
    const WIDTH: f64 = 600.0;
    const HEIGHT: f64 = 200.0;
    let span = (to - from).num_days().max(1) as f64;
    let max = trend
        .iter()
        .map(|d| d.orders.max(d.results))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let point = |date: NaiveDate, value: i64| {
        let x = (date - from).num_days() as f64 / span * WIDTH;
        let y = HEIGHT - value as f64 / max * HEIGHT;
        format!("{x:.1},{y:.1}")
    };
    let by_date: HashMap<NaiveDate, &DayTrend> = trend.iter().map(|day| (day.date, day)).collect();
    let mut orders = Vec::new();
    let mut results = Vec::new();
    for offset in 0..=(to - from).num_days().max(0) {
        let date = from + Days::new(offset as u64);
        let day = by_date.get(&date);
        orders.push(point(date, day.map_or(0, |d| d.orders)));
        results.push(point(date, day.map_or(0, |d| d.results)));
    }
    TrendChart {
        orders_points: orders.join(" "),
        results_points: results.join(" "),
        max_label: group(max as i64),
        first_day: from.to_string(),
        last_day: to.to_string(),
        days: trend
            .iter()
            .rev()
            .map(|d| TrendDay {
                date: d.date.to_string(),
                orders: group(d.orders),
                results: group(d.results),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1\u{202f}000");
        assert_eq!(group(1_234_567), "1\u{202f}234\u{202f}567");
    }

    #[test]
    fn last_sync_reads_relative_to_now() {
        let now = Utc::now();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - Duration::minutes(5), now), "5 min ago");
        assert_eq!(relative(now - Duration::hours(3), now), "3 h ago");
        assert_eq!(relative(now - Duration::days(3), now), "3 days ago");
    }

    #[test]
    fn trend_has_one_point_per_day() {
        let to = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let from = to - chrono::Days::new(6);
        let trend = vec![DayTrend {
            date: to,
            orders: 10,
            results: 5,
        }];
        let chart = trend_chart(&trend, from, to);
        assert_eq!(chart.orders_points.split(' ').count(), 7);
        assert!(chart.orders_points.ends_with("600.0,0.0"));
        assert!(chart.results_points.ends_with("600.0,100.0"));
    }
}
