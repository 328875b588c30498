//! The `ssp-crl` thread: fetches each CRL that has a `url` when it is due, and puts a newer
//! one in force without a reload. It never blocks a worker: workers only ever see a new
//! `Shared` appear in `Runtime`, as after SIGHUP, with the same rate limits and in-flight
//! permits as before.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::decide::next_attempt;
use super::{Failure, Outcome, fetch, unix_now};
use crate::audit::Event;
use crate::durable_file;
use crate::proxy::Runtime;
use crate::tls::CrlSummary;
use crate::x509::format_utc;

/// The longest the thread sleeps, so it notices a reload (new CRLs, new settings) or a stop.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub fn start(runtime: Arc<Runtime>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ssp-crl".into())
        .spawn(move || {
            let mut refresher = Refresher {
                runtime,
                due: HashMap::new(),
                seed: seed(),
            };
            while !refresher.runtime.is_stopping() {
                let sleep = refresher.turn(Instant::now());
                std::thread::sleep(sleep);
            }
        })?;
    Ok(())
}

struct Refresher {
    runtime: Arc<Runtime>,
    /// When each CRL (by path) is next fetched. A CRL not yet seen is due at once.
    due: HashMap<PathBuf, Instant>,
    /// xorshift state for the jitter; spreading fetches needs no cryptographic randomness.
    seed: u64,
}

impl Refresher {
    /// Refreshes every CRL that is due at `now`; returns how long to sleep.
    fn turn(&mut self, now: Instant) -> Duration {
        let shared = self.runtime.current();
        let fetched: Vec<PathBuf> = shared
            .crls
            .iter()
            .filter(|c| c.url.is_some())
            .map(|c| c.path.clone())
            .collect();
        self.due.retain(|path, _| fetched.contains(path));
        for path in fetched {
            let due = *self.due.entry(path.clone()).or_insert(now);
            if due > now {
                continue;
            }
            let wait = self.refresh(&path);
            self.due.insert(path, Instant::now() + wait);
        }
        let next = self
            .due
            .values()
            .min()
            .map_or(MAX_SLEEP, |due| due.saturating_duration_since(Instant::now()));
        next.clamp(Duration::from_millis(5), MAX_SLEEP)
    }

    /// One attempt for the CRL at `path`; returns the wait until the next one.
    fn refresh(&mut self, path: &PathBuf) -> Duration {
        let basis = self.runtime.current();
        let Some(held) = basis.crls.iter().find(|c| &c.path == path) else {
            return Duration::ZERO;
        };
        let settings = &basis.config.server.crl_refresh;
        let now = unix_now();
        let outcome = match fetch(held, &basis.tls_material, settings, now) {
            Ok(None) => Outcome::Unchanged,
            Err(failure) => Outcome::Failed(failure),
            Ok(Some((new, bytes))) => {
                let written = durable_file::replace(&held.path, &bytes, 0o644);
                let crls = basis
                    .crls
                    .iter()
                    .map(|c| if &c.path == path { new.clone() } else { c.clone() })
                    .collect();
                match basis.with_crls(crls) {
                    Ok(shared) => {
                        if !self.runtime.replace_if_current(&basis, shared) {
                            // A reload came first; try again on top of it.
                            return Duration::ZERO;
                        }
                        match written {
                            Ok(()) => Outcome::Updated(new),
                            Err(e) => {
                                self.report(held, &Outcome::Updated(new));
                                Outcome::Failed(Failure::Write(format!("{}: {e}", held.path.display())))
                            }
                        }
                    }
                    Err(e) => Outcome::Failed(Failure::NotACrl(e.to_string())),
                }
            }
        };
        self.report(held, &outcome);
        // The schedule follows the CRL now in force.
        let current = self.runtime.current();
        let in_force = current.crls.iter().find(|c| &c.path == path).unwrap_or(held);
        let failed = matches!(outcome, Outcome::Failed(_));
        next_attempt(settings, in_force.next_update, unix_now(), failed, self.jitter())
    }

    fn report(&self, held: &CrlSummary, outcome: &Outcome) {
        match outcome {
            Outcome::Updated(_) => log::info!("CRL refresh: {}", outcome.line(held)),
            Outcome::Unchanged => log::debug!("CRL refresh: {}", outcome.line(held)),
            Outcome::Failed(failure) => {
                let url = held.url.as_ref().map_or(String::new(), ToString::to_string);
                let message = match failure {
                    // The newer CRL is in force; only its file is behind.
                    Failure::Write(_) => format!(
                        "CRL refresh from {url}: {failure}; a reload or restart would bring the older file back"
                    ),
                    _ => format!(
                        "CRL refresh from {url} failed: {failure}; {} stays in force (thisUpdate {}, nextUpdate {})",
                        held.path.display(),
                        format_utc(held.this_update),
                        held.next_update.map_or("none".into(), format_utc),
                    ),
                };
                log::warn!("{message}");
                self.runtime.metrics.crl_refresh_failed(failure.label());
                self.runtime.audit.record(Event::Alarm { message });
            }
        }
        if let Outcome::Updated(_) = outcome {
            self.runtime.metrics.crl_updated();
        }
    }

    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos << 32 | u64::from(std::process::id())) | 1
}
