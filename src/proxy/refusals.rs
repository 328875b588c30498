//! Refusals past a consumer certificate's allowance (`[limits] refusals`): one `deny` record a
//! second per certificate, counting them all (`refusals`), instead of one record each. A
//! refusal storm of thousands a second then costs the audit a line a second, not megabytes,
//! and every refusal is still accounted for in the chain. Worker-local: each worker writes
//! its own count.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::Event;

/// How long refusals are counted before their record is written.
pub const WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct RefusalTally {
    /// By certificate fingerprint.
    counting: HashMap<Arc<str>, Counting>,
}

struct Counting {
    /// The latest refusal's record: the one written, with the count.
    latest: Event,
    count: u64,
    since: Instant,
}

impl RefusalTally {
    /// Counts a `deny` record instead of writing it.
    pub fn add(&mut self, record: Event, now: Instant) {
        let Event::Deny { request, .. } = &record else {
            return;
        };
        match self.counting.get_mut(&request.fingerprint) {
            Some(counting) => {
                counting.latest = record;
                counting.count += 1;
            }
            None => {
                let key = request.fingerprint.clone();
                let counting = Counting {
                    latest: record,
                    count: 1,
                    since: now,
                };
                self.counting.insert(key, counting);
            }
        }
    }

    /// The records whose window has ended (all of them with `all`), each standing for the
    /// refusals counted in it.
    pub fn due(&mut self, now: Instant, all: bool) -> Vec<Event> {
        if self.counting.is_empty() {
            return Vec::new();
        }
        let ended: Vec<Arc<str>> = self
            .counting
            .iter()
            .filter(|(_, c)| all || now.saturating_duration_since(c.since) >= WINDOW)
            .map(|(key, _)| key.clone())
            .collect();
        let mut records = Vec::with_capacity(ended.len());
        for key in ended {
            if let Some(Counting {
                mut latest, count, ..
            }) = self.counting.remove(&key)
            {
                if let Event::Deny { refusals, .. } = &mut latest {
                    *refusals = count;
                }
                records.push(latest);
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{RequestFacts, RequestText, Text};

    fn deny(fingerprint: &str, trace: &str) -> Event {
        Event::Deny {
            request: Arc::new(RequestFacts {
                text: RequestText::new(&Text {
                    trace_id: Some(trace),
                    ..Text::default()
                }),
                peer: "10.0.0.1:5000".parse().unwrap(),
                subject: "".into(),
                issuer: "".into(),
                serial: "".into(),
                fingerprint: fingerprint.into(),
                claims: None,
            }),
            status: 403,
            token: "T".into(),
            refusals: 1,
            outcome_id: crate::http::answer::OutcomeId::ZERO,
        }
    }

    fn summary(e: &Event) -> (String, u64) {
        match e {
            Event::Deny {
                request, refusals, ..
            } => (request.text.trace_id().unwrap_or("").to_string(), *refusals),
            _ => panic!("not a deny record"),
        }
    }

    #[test]
    fn refusals_are_counted_per_certificate_and_written_once_a_window() {
        let t0 = Instant::now();
        let mut tally = RefusalTally::default();
        for n in 0..5 {
            tally.add(deny("a", &format!("a{n}")), t0);
        }
        tally.add(deny("b", "b0"), t0 + WINDOW / 2);
        assert!(
            tally.due(t0 + WINDOW / 2, false).is_empty(),
            "no window has ended"
        );
        let first = tally.due(t0 + WINDOW, false);
        assert_eq!(
            first.iter().map(summary).collect::<Vec<_>>(),
            [("a4".to_string(), 5)]
        );
        tally.add(deny("a", "a5"), t0 + WINDOW);
        let mut rest: Vec<_> = tally.due(t0 + WINDOW, true).iter().map(summary).collect();
        rest.sort();
        assert_eq!(rest, [("a5".to_string(), 1), ("b0".to_string(), 1)]);
        assert!(tally.due(t0 + WINDOW * 9, true).is_empty());
    }
}
