//! What a session works with besides itself: the configuration in force, the counters its
//! decisions share with other connections, the time, and the actions it asks its driver to
//! carry out. No sockets, no channels, no clock reads: the worker (or the simulator) fills in
//! `now`-dependent values and carries out `actions` after every call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::buffers::Buffers;
use super::refusals::RefusalTally;
use super::shared::{Runtime, Shared};
use super::upstream::{Kept, KeptCounts, Upstream};
use crate::audit::{Event, Transaction};
use crate::http::answer::OutcomeId;
use crate::metrics::Metrics;
use crate::policy::throttle::{HandshakeFailures, RefusalStrikes};

/// What a session asks its driver to do. Each names what answers it, if anything.
pub enum Action {
    /// An audit record nobody waits for.
    Audit(Event),
    /// A `req` record: `Input::Audited` with this ticket says whether it became durable.
    AuditDurable { event: Event, ticket: u64 },
    /// A transactions-log line.
    Transaction(Transaction),
    /// Find a provider's addresses: `Input::Resolved` with this ticket.
    Resolve { host: String, port: u16, ticket: u64 },
    /// Open a TCP connection to `addr` as provider connection `id`: `Input::Connected`.
    /// The driver closes it when the session no longer names it (`Session::holds_provider`).
    Connect { id: u64, addr: SocketAddr },
}

/// The counters a session's decisions share with every other connection of the process.
#[derive(Clone)]
pub struct Counters {
    pub metrics: Arc<Metrics>,
    /// Refused handshakes per address (`[limits] refused_handshakes`).
    pub handshake_failures: Arc<HandshakeFailures>,
    /// Refused requests per consumer certificate (`[limits] refusals`).
    pub refusal_strikes: Arc<RefusalStrikes>,
    /// The zero of the nanosecond clock the rate limits run on, the same for every worker.
    pub started: Instant,
}

impl Counters {
    pub fn of(runtime: &Runtime) -> Counters {
        Counters {
            metrics: runtime.metrics.clone(),
            handshake_failures: runtime.handshake_failures.clone(),
            refusal_strikes: runtime.refusals.clone(),
            started: runtime.started(),
        }
    }

    /// Nanoseconds since `started`, for the rate limits (monotonic, never wall time).
    pub fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_nanos() as u64
    }
}

pub struct Cx {
    /// The configuration in force for new connections and requests.
    pub shared: Arc<Shared>,
    /// Its generation (`Runtime::generation`), for row 8's judgement.
    pub generation: u64,
    pub counters: Counters,
    /// Row 16: whether the audit can be written, as of this turn.
    pub audit_healthy: bool,
    /// Whether the kernel says the clock is synchronised, as of this turn.
    pub clock_synced: bool,
    /// Wall time in seconds since the epoch, as of this turn (certificate dates, JWTs).
    pub wall: i64,
    /// Byte buffers for exchanges, reused from one request to the next.
    pub buffers: Buffers,
    /// Provider connections kept by consumer connections between requests, per endpoint.
    pub kept: KeptCounts,
    /// Refusals past their certificate's allowance, counted rather than recorded one each.
    pub refusals: RefusalTally,
    /// What the calls since the driver last looked asked for.
    pub actions: Vec<Action>,
    next_ticket: u64,
    /// For the `id`s of our own answers.
    random: &'static dyn rustls::crypto::SecureRandom,
    answers: u64,
}

impl Cx {
    pub fn new(shared: Arc<Shared>, generation: u64, counters: Counters) -> Cx {
        Cx {
            kept: KeptCounts::new(shared.routes.len()),
            shared,
            generation,
            counters,
            audit_healthy: true,
            clock_synced: true,
            wall: 0,
            buffers: Buffers::default(),
            refusals: RefusalTally::default(),
            actions: Vec::new(),
            next_ticket: 0,
            random: crate::tls::crypto_provider().secure_random,
            answers: 0,
        }
    }

    /// Puts a newly loaded configuration in force for what starts from now on.
    pub fn refresh(&mut self, shared: Arc<Shared>, generation: u64) {
        self.generation = generation;
        let previous = std::mem::replace(&mut self.shared, shared);
        // A CRL refresh keeps the provider side (same TLS config, same routes): kept
        // connections stay good. A reload may change either: connections kept under the old
        // one are not used again (`Kept::fits`), and the counts start afresh.
        if !Arc::ptr_eq(&previous.client_tls, &self.shared.client_tls) {
            self.kept = KeptCounts::new(self.shared.routes.len());
        }
    }

    /// A number for a ticket or a provider connection, unique on this `Cx`.
    pub fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    pub fn nanos(&self, now: Instant) -> u64 {
        self.counters.nanos(now)
    }

    /// A fresh `id` for one of our own answers (and its audit record).
    pub fn outcome_id(&mut self, now: Instant) -> OutcomeId {
        let mut bytes = [0u8; 16];
        if self.random.fill(&mut bytes).is_err() {
            // The kernel's generator failing is not a reason to leave a consumer unanswered;
            // the id need only be unique, which this worker's count and the clock make it.
            self.answers += 1;
            bytes[..8].copy_from_slice(&self.answers.to_be_bytes());
            bytes[8..].copy_from_slice(&self.nanos(now).to_be_bytes());
        }
        OutcomeId::from_random(bytes)
    }

    pub fn audit(&mut self, event: Event) {
        self.actions.push(Action::Audit(event));
    }

    /// Queues a record that must be durable before the exchange goes on; returns the ticket
    /// `Input::Audited` will carry.
    pub fn audit_durable(&mut self, event: Event) -> u64 {
        let ticket = self.ticket();
        self.actions.push(Action::AuditDurable { event, ticket });
        ticket
    }

    pub fn transaction(&mut self, line: Transaction) {
        self.actions.push(Action::Transaction(line));
    }

    /// Keeps a clean provider connection for the next request of the consumer connection that
    /// used it, unless it was made under a provider TLS configuration since replaced or the
    /// provider has `pool_max_idle` kept already.
    pub fn keep(&mut self, up: Box<Upstream>, made_under: &Arc<Shared>, now: Instant) -> Option<Kept> {
        let config = &self.shared.client_tls;
        if !Arc::ptr_eq(&made_under.client_tls, config) {
            return None;
        }
        let upstream = &self.shared.config.upstream;
        if upstream.pool_idle_timeout.is_zero() {
            return None;
        }
        self.kept.keep(up, config.clone(), upstream.pool_max_idle, now)
    }
}
