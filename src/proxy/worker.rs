//! A worker thread: one mio `Poll`, the consumer connections it accepted and the provider
//! connections they hold. `drive` is the one entry point per connection and always takes the
//! same steps: read, decide, service the provider side, flush.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use rustls::ServerConnection;
use slab::Slab;

use super::buffers::Buffers;
use super::client::{Client, Phase};
use super::exchange::{self, RateFields};
use super::refusals::RefusalTally;
use super::resolver::{self, Question};
use super::tls_io;
use super::upstream::{Kept, KeptCounts, Owner, Owners, Upstream};
use super::{Runtime, Shared, report};
use crate::audit::{Durable, Event, Notifier, Outbox, Transaction};
use crate::config::ClockUnsynced;
use crate::http::answer::{self, Context, OutcomeId};
use crate::http::head;
use crate::http::request::{BodyFraming, RequestHead};
use crate::policy;
use crate::policy::Admission;
use crate::policy::refusal::Refusal;
use crate::policy::throttle::{Busy, Permit};

/// How often deadlines are checked; timeouts fire at most this late.
const TICK: Duration = Duration::from_millis(100);
/// Bound on `drive` rounds per event so one busy connection cannot starve the others.
const MAX_ROUNDS: usize = 32;
/// Records and lines nobody waits for (`res`, `deny`, transactions) stay in the worker until
/// a `req` record has to go, `HELD_MAX` of them gather, or the oldest is `HOLD` old. Every
/// hand-over wakes a writer thread, and on a small box each wake-up is a context switch the
/// worker pays for; a turn that only finished responses need not cause one.
const HOLD: Duration = Duration::from_millis(20);
const HELD_MAX: usize = 64;

const LISTENER: usize = 0;
const CLIENT: usize = 1;
/// A provider connection, by `Upstream::id`, wherever it is (`Cx::owners`).
const UPSTREAM: usize = 2;
const WAKER: Token = Token(usize::MAX);

fn token(kind: usize, key: usize) -> Token {
    Token(key << 2 | kind)
}

pub fn upstream_token(id: usize) -> Token {
    token(UPSTREAM, id)
}

/// What a connection needs from its worker besides itself.
pub struct Cx {
    pub registry: Registry,
    /// Provider connections kept by consumer connections between requests, per provider.
    kept: KeptCounts,
    pub owners: Owners,
    /// Byte buffers for exchanges, reused from one request to the next.
    pub buffers: Buffers,
    /// The configuration in force, refreshed from `runtime` before each batch of events.
    pub shared: Arc<Shared>,
    pub runtime: Arc<Runtime>,
    generation: u64,
    resolver: Sender<Question>,
    replies: Sender<resolver::Answer>,
    waker: Arc<Waker>,
    /// Resolver tickets in flight, to the connection that asked.
    tickets: HashMap<u64, usize>,
    next_ticket: u64,
    /// How the audit writer answers this worker about durable records.
    notifier: Notifier,
    /// Audit tickets in flight, to the connection whose `req` record it is.
    audit_waits: HashMap<u64, usize>,
    /// Audit records and transactions lines not yet handed to their writers, and since when.
    audit: Outbox,
    /// Refusals past their certificate's allowance, counted rather than recorded one each.
    refusals: RefusalTally,
    /// For the `id`s of our own answers.
    random: &'static dyn rustls::crypto::SecureRandom,
    answers: u64,
    transactions: Vec<Transaction>,
    held_since: Option<Instant>,
}

impl Cx {
    /// Asks the resolver thread for a provider's address; the answer arrives via the waker.
    pub fn ask_resolver(&mut self, host: &str, port: u16, key: usize) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let question = Question {
            host: host.to_string(),
            port,
            ticket,
            reply: self.replies.clone(),
            waker: self.waker.clone(),
        };
        // If the resolver is gone the connect deadline answers 502.
        if self.resolver.send(question).is_ok() {
            self.tickets.insert(ticket, key);
        }
        ticket
    }

    /// Queues a record that must be durable before the exchange goes on; it is handed over at
    /// the end of this turn, and the answer comes through the waker as `Durable` with the
    /// returned ticket.
    pub fn audit_durable(&mut self, event: Event, key: usize) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.audit_waits.insert(ticket, key);
        self.audit.record_durable(event, ticket, &self.notifier);
        ticket
    }

    /// A fresh `id` for one of our own answers (and its audit record).
    pub fn outcome_id(&mut self) -> OutcomeId {
        let mut bytes = [0u8; 16];
        if self.random.fill(&mut bytes).is_err() {
            // The kernel's generator failing is not a reason to leave a consumer unanswered;
            // the id need only be unique, which this worker's count and the clock make it.
            self.answers += 1;
            bytes[..8].copy_from_slice(&self.answers.to_be_bytes());
            bytes[8..].copy_from_slice(&self.runtime.nanos(Instant::now()).to_be_bytes());
        }
        OutcomeId::from_random(bytes)
    }

    /// Queues an audit record (handed over within `HOLD`).
    pub fn audit(&mut self, event: Event) {
        self.audit.record(event);
    }

    /// Queues a transactions-log line (handed over within `HOLD`).
    pub fn transaction(&mut self, line: Transaction) {
        self.transactions.push(line);
    }

    /// Hands records and lines to their writer threads when due (see `HOLD`), or all of them
    /// with `force`. Returns when the ones still held are due.
    fn flush_logs(&mut self, now: Instant, force: bool) -> Option<Instant> {
        for record in self.refusals.due(now, force) {
            self.audit.record(record);
        }
        let due = force || self.held_since.is_some_and(|t| now >= t + HOLD);
        if due || self.audit.has_waiter() || self.audit.len() >= HELD_MAX {
            self.audit.flush();
        }
        if due || self.transactions.len() >= HELD_MAX {
            self.runtime
                .transactions
                .log_all(std::mem::take(&mut self.transactions));
        }
        if self.audit.is_empty() && self.transactions.is_empty() {
            self.held_since = None;
        } else if due || self.held_since.is_none() {
            self.held_since = Some(now);
        }
        self.held_since.map(|t| t + HOLD)
    }

    /// Keeps a clean provider connection for the next request of the consumer connection that
    /// used it, unless it was made under a provider TLS configuration since replaced or the
    /// provider has `pool_max_idle` kept already.
    pub fn keep(&mut self, up: Upstream, made_under: &Arc<Shared>, now: Instant) -> Option<Kept> {
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

    /// Takes up a new configuration if one was loaded: new connections and requests use it,
    /// idle provider connections made under the old one are closed.
    pub fn refresh(&mut self) {
        let generation = self.runtime.generation();
        if generation != self.generation {
            self.generation = generation;
            let previous = std::mem::replace(&mut self.shared, self.runtime.current());
            // A CRL refresh keeps the provider side (same TLS config, same routes): kept
            // connections stay good. A reload may change either: connections kept under the
            // old one are not used again (`Kept::fits`), and the counts start afresh.
            if !Arc::ptr_eq(&previous.client_tls, &self.shared.client_tls) {
                self.kept = KeptCounts::new(self.shared.routes.len());
            }
        }
    }
}

struct Worker {
    poll: Poll,
    listeners: Vec<TcpListener>,
    clients: Slab<Client>,
    /// Connections whose `drive` stopped at `MAX_ROUNDS` with work left: no new readiness
    /// edge may come for bytes already buffered, so they are driven again before sleeping.
    busy: Vec<usize>,
    cx: Cx,
    replies: Receiver<resolver::Answer>,
    audit_replies: Receiver<Durable>,
}

/// Binds every `listen` address; done before the workers start so errors surface at once.
pub fn bind(shared: &Shared) -> std::io::Result<Vec<StdListener>> {
    let mut listeners = Vec::new();
    for addr in &shared.config.server.listen {
        let listener = StdListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Runs the workers on already-bound listeners until they stop (they do not, today, except on
/// a fatal error). The configuration can be replaced through `runtime` while they run.
pub fn serve(runtime: Arc<Runtime>, listeners: Vec<StdListener>) -> std::io::Result<()> {
    let resolver = resolver::start()?;
    let shared = runtime.current();
    let workers = match shared.config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut handles = Vec::new();
    for i in 0..workers {
        let mut mine = Vec::new();
        for l in &listeners {
            mine.push(TcpListener::from_std(l.try_clone()?));
        }
        let worker = Worker::new(runtime.clone(), mine, resolver.clone())?;
        handles.push(
            std::thread::Builder::new()
                .name(format!("ssp-worker-{i}"))
                .spawn(move || worker.run())?,
        );
    }
    for l in &listeners {
        log::info!("ssp: listening on {} with {workers} workers", l.local_addr()?);
    }
    for h in handles {
        match h.join() {
            Ok(result) => result?,
            Err(_) => return Err(std::io::Error::other("a worker thread panicked")),
        }
    }
    Ok(())
}

impl Worker {
    fn new(
        runtime: Arc<Runtime>,
        mut listeners: Vec<TcpListener>,
        resolver: Sender<Question>,
    ) -> std::io::Result<Worker> {
        let poll = Poll::new()?;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, token(LISTENER, i), Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (replies_tx, replies) = mpsc::channel();
        let (audit_tx, audit_replies) = mpsc::channel();
        let wake = waker.clone();
        let notifier = Notifier {
            replies: audit_tx,
            wake: Arc::new(move || {
                let _ = wake.wake();
            }),
        };
        let shared = runtime.current();
        let outbox = Outbox::new(runtime.audit.clone());
        let cx = Cx {
            registry: poll.registry().try_clone()?,
            kept: KeptCounts::new(shared.routes.len()),
            owners: Owners::default(),
            shared,
            generation: runtime.generation(),
            runtime,
            resolver,
            replies: replies_tx,
            waker,
            tickets: HashMap::new(),
            next_ticket: 0,
            notifier,
            audit_waits: HashMap::new(),
            audit: outbox,
            refusals: RefusalTally::default(),
            random: crate::tls::crypto_provider().secure_random,
            answers: 0,
            transactions: Vec::new(),
            held_since: None,
            buffers: Buffers::default(),
        };
        Ok(Worker {
            poll,
            listeners,
            clients: Slab::new(),
            busy: Vec::new(),
            cx,
            replies,
            audit_replies,
        })
    }

    fn run(mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let heartbeat = self.cx.runtime.heartbeat();
        let mut drain_until: Option<Instant> = None;
        let mut held_due: Option<Instant> = None;
        loop {
            let timeout = if self.busy.is_empty() {
                let wake_at = held_due.map_or(next_tick, |t| t.min(next_tick));
                wake_at.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.cx.refresh();
            for event in events.iter() {
                self.dispatch(event, now);
            }
            for key in std::mem::take(&mut self.busy) {
                self.drive(key, now);
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            held_due = self.cx.flush_logs(now, false);
            heartbeat.store(self.cx.runtime.nanos(now), Ordering::Release);
            if self.cx.runtime.is_stopping() {
                let until = *drain_until.get_or_insert_with(|| self.stop_accepting(now));
                self.close_idle(now);
                if self.clients.is_empty() || now >= until {
                    log::info!("worker stopping with {} connections left", self.clients.len());
                    for (_, c) in self.clients.iter_mut() {
                        exchange::drain_expired(c, &mut self.cx, now);
                    }
                    self.cx.flush_logs(now, true);
                    return Ok(());
                }
            }
        }
    }

    /// SIGTERM: no new connections on this worker; returns when draining must end.
    fn stop_accepting(&mut self, now: Instant) -> Instant {
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
        }
        self.listeners.clear();
        now + self.cx.shared.config.limits.drain_timeout
    }

    /// While draining: connections with nothing in flight are closed; the others are closed
    /// as soon as their exchange ends.
    fn close_idle(&mut self, now: Instant) {
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                matches!(c.phase, Phase::ProxyHeader | Phase::Handshake | Phase::Head) && c.inbuf.is_empty()
            })
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            if let Some(c) = self.clients.get_mut(key) {
                c.start_closing(now);
            }
            self.drive(key, now);
        }
    }

    fn dispatch(&mut self, event: &mio::event::Event, now: Instant) {
        if event.token() == WAKER {
            self.audit_answers(now);
            return self.resolved(now);
        }
        let (kind, key) = (event.token().0 & 3, event.token().0 >> 2);
        let closing = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || closing;
        match kind {
            LISTENER => self.accept(key, now),
            CLIENT => {
                let Some(c) = self.clients.get_mut(key) else {
                    return;
                };
                c.read_ready |= readable;
                c.peer_closing |= closing;
                drive(c, key, &mut self.cx, now);
                self.reap(key);
            }
            UPSTREAM => match self.cx.owners.get(key) {
                Owner::Consumer(client) => self.upstream_event(client, key, readable, closing, now),
                Owner::Nobody => {}
            },
            _ => {}
        }
    }

    /// Readiness of the provider connection `id`, which the consumer connection `key` holds.
    fn upstream_event(&mut self, key: usize, id: usize, readable: bool, closing: bool, now: Instant) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        // Kept between requests: TLS housekeeping (session tickets) is fine; anything else,
        // data or a close, means it cannot carry another request. Rare.
        if let Some(kept) = c.kept.as_mut().filter(|kept| kept.up.id() == id) {
            if !kept.up.still_idle() {
                c.kept = None;
            }
            return;
        }
        match c.exchange.as_mut().and_then(|ex| ex.upstream.as_mut()) {
            Some(up) if up.id() == id => {
                up.read_ready |= readable;
                up.peer_closing |= closing;
                if !up.connected
                    && let Err(why) = up.check_connected()
                {
                    exchange::connect_failed(c, key, &mut self.cx, &why, now);
                }
            }
            // A connection this exchange no longer holds; its owner entry is stale.
            _ => return,
        }
        self.drive(key, now);
    }

    fn accept(&mut self, index: usize, now: Instant) {
        let shared = self.cx.shared.clone();
        loop {
            let (sock, peer) = match self.listeners[index].accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the next readiness event retries.
                    log::warn!("accept: {e}");
                    return;
                }
            };
            // Behind a balancer the socket's peer is the balancer: the consumer's own address
            // is checked once the PROXY header names it (`drive`).
            let proxied = shared.config.server.proxy_protocol;
            let blocked = !proxied
                && self
                    .cx
                    .runtime
                    .handshake_failures
                    .is_blocked(&peer.ip(), self.cx.runtime.nanos(now));
            if blocked {
                log::debug!("accept: {peer}: too many failed handshakes from its address; resumption only");
            }
            let open = &self.cx.runtime.connections;
            if open.fetch_add(1, Ordering::Relaxed) >= shared.config.limits.max_connections {
                open.fetch_sub(1, Ordering::Relaxed);
                log::debug!("accept: {peer} refused, max_connections reached");
                continue;
            }
            let _ = sock.set_nodelay(true);
            let tls_config = if blocked {
                &shared.server_tls_resumption_only
            } else {
                &shared.server_tls
            };
            let registered = ServerConnection::new(tls_config.clone())
                .map_err(|e| e.to_string())
                .and_then(|tls| {
                    let entry = self.clients.vacant_entry();
                    let mut client = Client::new(sock, tls, peer, proxied, self.cx.generation, now);
                    client.resumption_only = blocked;
                    client
                        .register(&self.cx.registry, token(CLIENT, entry.key()))
                        .map_err(|e| e.to_string())?;
                    entry.insert(client);
                    self.cx.runtime.metrics.connection_opened();
                    Ok(())
                });
            if let Err(e) = registered {
                self.cx.runtime.connections.fetch_sub(1, Ordering::Relaxed);
                log::warn!("accept: {peer}: {e}");
            }
        }
    }

    /// The audit writer answered: `req` records are durable (or not).
    fn audit_answers(&mut self, now: Instant) {
        while let Ok(durable) = self.audit_replies.try_recv() {
            let Some(key) = self.cx.audit_waits.remove(&durable.ticket) else {
                continue;
            };
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            if c.exchange.as_ref().and_then(|ex| ex.audit_ticket) != Some(durable.ticket) {
                continue;
            }
            exchange::audited(c, &mut self.cx, durable.seq, now);
            self.drive(key, now);
        }
    }

    fn resolved(&mut self, now: Instant) {
        while let Ok(answer) = self.replies.try_recv() {
            let Some(key) = self.cx.tickets.remove(&answer.ticket) else {
                continue;
            };
            let Some(c) = self.clients.get_mut(key) else {
                continue;
            };
            if c.exchange.as_ref().and_then(|ex| ex.ticket) != Some(answer.ticket) {
                continue;
            }
            match answer.addrs {
                Ok(addrs) => exchange::open(c, key, &mut self.cx, addrs, now),
                Err(why) => exchange::unresolved(c, key, &mut self.cx, &why, now),
            }
            self.drive(key, now);
        }
    }

    fn tick(&mut self, now: Instant) {
        let limits = &self.cx.shared.config.limits;
        let (header_timeout, idle_timeout) = (limits.header_timeout, limits.idle_timeout);
        let expired: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline(header_timeout, idle_timeout).is_some_and(|d| d <= now))
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            if let Some(c) = self.clients.get_mut(key) {
                timed_out(c, key, &mut self.cx, now);
            }
            self.drive(key, now);
        }
        let kept_for = self.cx.shared.config.upstream.pool_idle_timeout;
        for (_, c) in self.clients.iter_mut() {
            if c.kept.as_ref().is_some_and(|kept| kept.expired(now, kept_for)) {
                c.kept = None;
            }
        }
    }

    /// Drives one connection, then drops it if it is finished or remembers it if it is busy.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if drive(c, key, &mut self.cx, now) && !self.busy.contains(&key) {
            self.busy.push(key);
        }
        self.reap(key);
    }

    fn reap(&mut self, key: usize) {
        if self.clients.get(key).is_some_and(|c| c.done) {
            let mut c = self.clients.remove(key);
            // A request still in flight (the consumer's TLS broke, or writing to it failed)
            // gets its `res` record: nothing admitted leaves the audit without one.
            exchange::consumer_gone(&mut c, &mut self.cx, Instant::now());
            let runtime = &self.cx.runtime;
            runtime.metrics.connection_closed();
            if let Some(error) = c.refused_handshake {
                if c.resumption_only {
                    // Counted, but neither audited one record each (the failures that put the
                    // address here were) nor held against the address: a consumer retrying
                    // full handshakes would otherwise keep it blocked for good.
                    runtime.metrics.handshake_failed("blocked");
                } else {
                    runtime
                        .handshake_failures
                        .record(c.peer.ip(), runtime.nanos(Instant::now()));
                    runtime.metrics.handshake_failed(report::handshake_reason(&error));
                    self.cx.audit(Event::Tls {
                        peer: c.peer,
                        reason: crate::tls::describe(&error),
                        certificate: c.refused_certificate.take(),
                    });
                }
            }
            self.cx.runtime.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Everything that can happen on a consumer connection after an event, until nothing moves
/// or `MAX_ROUNDS` is reached; returns whether work may be left.
fn drive(c: &mut Client, key: usize, cx: &mut Cx, now: Instant) -> bool {
    let max_head = cx.shared.config.limits.max_header_bytes;
    for _ in 0..MAX_ROUNDS {
        let before = c.phase;
        let mut progress = c.read(max_head, now);
        if before == Phase::ProxyHeader
            && c.phase == Phase::Handshake
            && cx
                .runtime
                .handshake_failures
                .is_blocked(&c.peer.ip(), cx.runtime.nanos(now))
        {
            log::debug!(
                "{}: too many failed handshakes from its address; resumption only",
                c.peer
            );
            match ServerConnection::new(cx.shared.server_tls_resumption_only.clone()) {
                Ok(tls) => {
                    c.tls = tls;
                    c.resumption_only = true;
                }
                Err(_) => c.done = true,
            }
        }
        progress |= match c.phase {
            Phase::Handshake if !c.tls.is_handshaking() && !c.done => {
                c.finish_handshake(now);
                true
            }
            Phase::ProxyHeader | Phase::Handshake | Phase::Closing => false,
            Phase::Head => on_head(c, key, cx, now),
            Phase::Exchange => exchange::pump(c, key, cx, now),
        };
        if c.eof && matches!(c.phase, Phase::ProxyHeader | Phase::Handshake | Phase::Head) {
            c.done = true;
        }
        // A flush that wrote counts: staged bytes may now fit where they did not.
        progress |= flush_upstream(c, key, cx, now);
        progress |= c.flush();
        if c.done || !progress {
            return false;
        }
    }
    !c.done
}

/// Writes what is queued for the provider; returns whether anything went out or failed.
fn flush_upstream(c: &mut Client, key: usize, cx: &mut Cx, now: Instant) -> bool {
    let Some(up) = c.exchange.as_mut().and_then(|ex| ex.upstream.as_mut()) else {
        return false;
    };
    if !up.connected {
        return false;
    }
    match tls_io::flush(&mut up.sock, &mut up.tls) {
        Ok(written) => written > 0,
        Err(e) => {
            exchange::provider_failed(c, key, cx, &format!("write: {e}"), now);
            true
        }
    }
}

/// A complete head arrived: SPEC section 4 rows 3–13, then forward or answer.
fn on_head(c: &mut Client, key: usize, cx: &mut Cx, now: Instant) -> bool {
    let head = match c.take_head(cx.shared.config.limits.max_header_bytes) {
        Ok(Some(head)) => head,
        Ok(None) => return false,
        Err(refusal) => {
            log::debug!("{} {} {}", c.peer, refusal.status(), refusal.token());
            let trace_id = head::sniff_field(&c.inbuf, "ssp-traceid").map(<[u8]>::to_vec);
            let shared = cx.shared.clone();
            let ctx = Context {
                trace_id: trace_id.as_deref(),
                xml: answer::prefers_xml(head::sniff_field(&c.inbuf, "accept")),
                head_request: false,
                hsts: shared.config.server.hsts.as_deref(),
            };
            let id = cx.outcome_id();
            refused(c, cx, None, &refusal, id, now);
            c.answer(&refusal, id, ctx, true, now);
            return true;
        }
    };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let shared = cx.shared.clone();
    // Verifies the chain again only if the configuration changed since it last was.
    let judgement = c.judge(&shared.consumer_verifier, cx.generation, wall);
    let Some(identity) = c.identity.as_ref() else {
        c.done = true;
        return true;
    };
    let admitted = policy::admit(&shared.rules, &head, identity, judgement, wall).and_then(|admission| {
        let permits = limits(&shared, &admission, cx.runtime.nanos(now))?;
        // Row 16: while the audit cannot be written, nothing is admitted.
        if !cx.runtime.audit.healthy() {
            return Err(Refusal::AuditUnavailable);
        }
        if shared.config.server.clock_unsynced == ClockUnsynced::Deny && !cx.runtime.clock.synchronized() {
            return Err(Refusal::ClockNotSynchronised);
        }
        Ok((admission, permits))
    });
    match admitted {
        Ok((admission, (permit, rate_fields))) => {
            exchange::start(c, key, cx, &head, admission, permit, rate_fields, now)
        }
        Err(refusal) => {
            log::debug!(
                "{} {} {} {}",
                c.peer,
                identity.subject,
                refusal.status(),
                refusal.token()
            );
            let ctx = Context {
                trace_id: head.field("ssp-traceid"),
                xml: answer::prefers_xml(head.field("accept")),
                head_request: head.method() == "HEAD",
                hsts: shared.config.server.hsts.as_deref(),
            };
            // An unread body would be taken for the next request: close instead.
            let close = head.framing != BodyFraming::None || !head.keep_alive;
            let id = cx.outcome_id();
            let close = refused(c, cx, Some(&head), &refusal, id, now) || close;
            c.served += 1;
            c.answer(&refusal, id, ctx, close, now);
        }
    }
    true
}

/// Rows 14 and 15 for an admitted request: the sender's rate, then a place among the
/// receiver's requests in flight. Returns the permit (released when the exchange ends) and the
/// `X-Rate-Limit-*` fields for the answer.
fn limits(shared: &Shared, admission: &Admission, nanos: u64) -> Result<(Permit, RateFields), Refusal> {
    let route = admission.route;
    let limit = shared.rates.limit(route.consumer).map_or(0, |l| l.burst);
    // An index the limiter does not know cannot happen; refuse rather than skip the limit.
    let verdict = shared
        .rates
        .acquire(route.consumer, nanos)
        .ok_or(Refusal::Throttled {
            from: admission.ssp.from.to_string(),
            limit,
            retry_after: 1,
            reset: 1,
        })?;
    if !verdict.allowed {
        return Err(Refusal::Throttled {
            from: admission.ssp.from.to_string(),
            limit,
            retry_after: whole_seconds(verdict.retry_after),
            reset: whole_seconds(verdict.reset),
        });
    }
    let busy = |why| match why {
        Some(Busy::ConsumerShare { .. }) => Refusal::Throttled {
            from: admission.ssp.from.to_string(),
            limit,
            retry_after: 1,
            reset: whole_seconds(verdict.reset),
        },
        _ => Refusal::ProviderBusy {
            to: admission.ssp.to.to_string(),
        },
    };
    let permit = match shared.in_flight.try_acquire(route.consumer, route.provider) {
        Some(Ok(permit)) => permit,
        Some(Err(why)) => return Err(busy(Some(why))),
        // An index the counters do not know cannot happen; refuse rather than skip the cap.
        None => return Err(busy(None)),
    };
    let fields = [
        ("X-Rate-Limit-Limit", u64::from(limit)),
        ("X-Rate-Limit-Remaining", u64::from(verdict.remaining)),
        ("X-Rate-Limit-Reset", whole_seconds(verdict.reset)),
    ];
    Ok((permit, fields))
}

/// Nanoseconds as whole seconds, rounded up so a client that waits that long is not early.
fn whole_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// A request refused before it became an exchange: its `deny` record and its metrics.
/// Returns whether its certificate is past `[limits] refusals`: its connection is then closed
/// after the answer, so that a storm of refusals costs the sender a new connection each, and
/// the record is counted into one a second (`refusals.rs`).
fn refused(
    c: &Client,
    cx: &mut Cx,
    head: Option<&RequestHead>,
    refusal: &Refusal,
    outcome_id: OutcomeId,
    now: Instant,
) -> bool {
    let metrics = &cx.runtime.metrics;
    match refusal {
        Refusal::Throttled { .. } => metrics.throttled(),
        Refusal::ProviderBusy { .. } => metrics.provider_busy(),
        _ => {}
    }
    let since = c.head_started.unwrap_or(c.since);
    metrics.request(
        refusal.status(),
        Some(&refusal.token()),
        now.saturating_duration_since(since),
    );
    let record = report::deny(c, head, refusal, outcome_id);
    let runtime = &cx.runtime;
    let struck = c
        .identity
        .as_ref()
        .is_some_and(|i| runtime.refusals.record(i.fingerprint.clone(), runtime.nanos(now)));
    if struck {
        cx.refusals.add(record, now);
    } else {
        cx.audit(record);
    }
    struck
}

fn timed_out(c: &mut Client, key: usize, cx: &mut Cx, now: Instant) {
    match c.phase {
        Phase::ProxyHeader | Phase::Handshake | Phase::Closing => c.done = true,
        Phase::Head if c.inbuf.is_empty() && c.served > 0 => c.start_closing(now),
        Phase::Head => {
            log::debug!("{} 408 REQUEST_TIMEOUT", c.peer);
            let id = cx.outcome_id();
            refused(c, cx, None, &Refusal::RequestTimeout, id, now);
            let shared = cx.shared.clone();
            let ctx = Context {
                hsts: shared.config.server.hsts.as_deref(),
                ..Context::default()
            };
            c.answer(&Refusal::RequestTimeout, id, ctx, true, now);
        }
        Phase::Exchange => exchange::timed_out(c, key, cx, now),
    }
}
