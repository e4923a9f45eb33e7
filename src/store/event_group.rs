//! What one group of events adds to the tables, summed per row.
//!
//! Events that arrive together are written in one transaction (see
//! [`crate::event_writer`]). Their increments are summed per row first, so
//! that the transaction touches each row once, and the rows are kept in key
//! order, so that two transactions lock shared rows in the same order and
//! cannot deadlock on them.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;

use super::{EventCenter, EventOutcome, EventWrite, Total};

/// The summed increments of a group's counted events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GroupSums {
    /// Orders, results, pets and owners added to each center's day.
    pub totals: BTreeMap<(i32, NaiveDate), [i32; 4]>,
    pub tests: BTreeMap<(i32, NaiveDate, String), i32>,
    pub species: BTreeMap<(i32, NaiveDate, String), i32>,
    /// Keyed by breed, then species.
    pub breeds: BTreeMap<(i32, NaiveDate, String, String), i32>,
}

impl GroupSums {
    /// Adds one event's increments to the sums.
    pub fn add(&mut self, center_id: i32, event: &EventWrite) {
        let increments = &event.increments;
        let date = increments.date;
        let column = match increments.total {
            Total::Orders => 0,
            Total::Results => 1,
            Total::Pets => 2,
            Total::Owners => 3,
        };
        self.totals.entry((center_id, date)).or_default()[column] += 1;
        for (code, count) in &increments.tests {
            *self
                .tests
                .entry((center_id, date, code.clone()))
                .or_default() += count;
        }
        if let Some(species) = &increments.species {
            *self
                .species
                .entry((center_id, date, species.clone()))
                .or_default() += 1;
        }
        if let Some((breed, species)) = &increments.breed {
            *self
                .breeds
                .entry((center_id, date, breed.clone(), species.clone()))
                .or_default() += 1;
        }
    }

    /// Returns the centers whose data changed, in id order.
    pub fn centers(&self) -> Vec<i32> {
        let mut centers: Vec<i32> = self.totals.keys().map(|(center, _)| *center).collect();
        centers.dedup();
        centers
    }
}

/// Returns the codes of the centers a group registers, sorted and without repeats.
pub fn codes_to_register(events: &[EventWrite]) -> Vec<&str> {
    let mut codes: Vec<&str> = events
        .iter()
        .filter_map(|event| match &event.center {
            EventCenter::Register(code) => Some(code.as_str()),
            EventCenter::Known(_) => None,
        })
        .collect();
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// Resolves each event's center id, given the ids of the registered codes.
pub fn center_ids(events: &[EventWrite], registered: &HashMap<String, i32>) -> Vec<i32> {
    events
        .iter()
        .map(|event| match &event.center {
            EventCenter::Known(id) => *id,
            EventCenter::Register(code) => registered[code],
        })
        .collect()
}

/// An event id to record, with the response that repeats will get.
#[derive(Debug, Clone, Copy)]
pub struct NewId<'a> {
    pub center_id: i32,
    pub event_id: &'a str,
    pub response: &'a str,
}

/// The place of an event's id among the group's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No id: the event always counts.
    Anonymous,
    /// The group's first event with this id; the receipt decides.
    First,
    /// A later copy of the event at this index of the group.
    CopyOf(usize),
}

/// Finds, for each event, whether an earlier event of the group carries the
/// same id for the same center.
pub fn claims(events: &[EventWrite], center_ids: &[i32]) -> Vec<Claim> {
    let mut first: HashMap<(i32, &str), usize> = HashMap::new();
    events
        .iter()
        .zip(center_ids)
        .enumerate()
        .map(|(index, (event, &center_id))| match &event.event_id {
            None => Claim::Anonymous,
            Some(id) => match first.get(&(center_id, id.as_str())) {
                Some(&original) => Claim::CopyOf(original),
                None => {
                    first.insert((center_id, id.as_str()), index);
                    Claim::First
                }
            },
        })
        .collect()
}

/// Gives every copy the outcome of its group's first event with that id: a
/// repeat of the first event's response, whether that one counted or not.
pub fn settle_copies(events: &[EventWrite], claims: &[Claim], outcomes: &mut [EventOutcome]) {
    for (index, claim) in claims.iter().enumerate() {
        if let Claim::CopyOf(original) = *claim {
            outcomes[index] = match &outcomes[original] {
                EventOutcome::Counted => EventOutcome::Repeated(events[original].response.clone()),
                repeated => repeated.clone(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventIncrements;

    fn event(center: EventCenter, id: Option<&str>, tests: &[(&str, i32)]) -> EventWrite {
        EventWrite {
            center,
            event_id: id.map(str::to_owned),
            increments: EventIncrements {
                date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                total: Total::Orders,
                tests: tests.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
                species: Some("dog".to_owned()),
                breed: Some(("Beagle".to_owned(), "dog".to_owned())),
            },
            response: format!("{id:?}"),
        }
    }

    #[test]
    fn sums_add_up_per_row() {
        let events = [
            event(EventCenter::Known(2), None, &[("CBC", 2)]),
            event(EventCenter::Known(2), None, &[("CBC", 1), ("XR", 1)]),
            event(EventCenter::Known(1), None, &[]),
        ];
        let mut sums = GroupSums::default();
        for event in &events {
            let EventCenter::Known(id) = event.center else {
                unreachable!()
            };
            sums.add(id, event);
        }
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(sums.totals[&(2, day)], [2, 0, 0, 0]);
        assert_eq!(sums.tests[&(2, day, "CBC".to_owned())], 3);
        assert_eq!(sums.tests[&(2, day, "XR".to_owned())], 1);
        assert_eq!(sums.species[&(2, day, "dog".to_owned())], 2);
        assert_eq!(sums.centers(), vec![1, 2]);
    }

    #[test]
    fn copies_within_a_group_follow_the_first() {
        let events = [
            event(EventCenter::Known(1), Some("a"), &[]),
            event(EventCenter::Known(1), Some("a"), &[]),
            event(EventCenter::Known(2), Some("a"), &[]),
            event(EventCenter::Known(1), None, &[]),
        ];
        let claims = claims(&events, &[1, 1, 2, 1]);
        assert_eq!(
            claims,
            [
                Claim::First,
                Claim::CopyOf(0),
                Claim::First,
                Claim::Anonymous
            ]
        );
        let mut outcomes = vec![EventOutcome::Counted; 4];
        settle_copies(&events, &claims, &mut outcomes);
        assert_eq!(
            outcomes[1],
            EventOutcome::Repeated(events[0].response.clone())
        );
        assert_eq!(outcomes[2], EventOutcome::Counted);
    }

    #[test]
    fn registered_codes_are_listed_once() {
        let events = [
            event(EventCenter::Register("B".to_owned()), None, &[]),
            event(EventCenter::Register("A".to_owned()), None, &[]),
            event(EventCenter::Register("B".to_owned()), None, &[]),
            event(EventCenter::Known(3), None, &[]),
        ];
        assert_eq!(codes_to_register(&events), vec!["A", "B"]);
    }
}
