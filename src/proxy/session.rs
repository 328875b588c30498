//! One consumer connection's whole life, as a state machine without sockets: its PROXY header,
//! its TLS handshake, each request's head and decision (SPEC section 4), the exchange with the
//! provider, our own answers, and the close. The driver (the worker's mio loop, or the
//! simulator) hands it `Input`s with the time and the pipes (`wire::Io`), and carries out the
//! `Action`s it leaves in `Cx`. See ARCHITECTURE.md, "Connection state machine".

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustls::pki_types::UnixTime;
use rustls::{HandshakeKind, ServerConnection};

use super::consumer::Consumer;
use super::cx::Cx;
use super::exchange::{self, End, Exchange, STAGE_LIMIT, Step};
use super::report;
use super::upstream::Kept;
use super::wire::Io;
use crate::audit::Event;
use crate::http::answer::{self, Context, OutcomeId};
use crate::http::head::{self, HeadError};
use crate::http::request::{self, BodyFraming, RequestHead};
use crate::policy;
use crate::policy::identity::Identity;
use crate::policy::refusal::Refusal;
use crate::policy::revocation::Judgement;
use crate::proxy_protocol;
use crate::tls::{self, verifier};

/// How long a closing connection is drained after our last byte, so that unread input does
/// not turn our close into a reset that destroys the answer in flight.
const LINGER: Duration = Duration::from_secs(2);
/// Input buffer capacity an idle connection may keep (bytes).
const IDLE_BUFFER: usize = 4096;
/// Rounds of `drive` per input, so that one busy connection cannot starve the others; a
/// session that stops here with work left says so, and is driven again before the loop sleeps.
const MAX_ROUNDS: usize = 32;

/// What happened, as its driver tells it.
pub enum Input {
    /// Either side's pipe may have moved (readiness), or the driver asks it to look again.
    Ready,
    /// Readiness on provider connection `id`.
    ProviderReady { id: u64 },
    /// Provider connection `id`'s TCP connect finished, or failed (`Action::Connect`).
    Connected { id: u64, result: Result<(), String> },
    /// The resolver's answer (`Action::Resolve`).
    Resolved {
        ticket: u64,
        addrs: Result<Vec<SocketAddr>, String>,
    },
    /// The audit's answer about a `req` record: its `seq` once durable, `None` if it cannot
    /// be (`Action::AuditDurable`).
    Audited { ticket: u64, seq: Option<u64> },
    /// Time passed: deadlines are checked.
    Tick,
    /// A stop is coming (`[server] stop_delay`): every answer from now on closes its
    /// connection, so that its consumer comes back through the balancer, elsewhere.
    Leaving,
    /// SIGTERM: an idle connection closes; one that is busy, or has not yet made its first
    /// request, is served once more and closes after that answer.
    Drain,
    /// The process stops now (`drain_timeout` ran out): whatever is in flight ends here.
    Stop,
}

/// Where the connection is. Each state holds what only it needs.
enum State {
    /// Reading the PROXY protocol v2 header a balancer sends before the TLS bytes.
    ProxyHeader,
    Handshake,
    /// Waiting for or reading a request head: when its first byte came, and how far it has
    /// been searched for its end (`request::parse_from`).
    Head {
        started: Option<Instant>,
        scanned: usize,
    },
    /// A request is being forwarded and its response returned.
    Exchange(Box<Exchange>),
    /// Our last bytes are queued; then the write side is shut (`shut`) and input drained.
    Closing {
        shut: bool,
    },
    /// Finished: the driver drops it.
    Done,
}

pub struct Session {
    con: Consumer,
    state: State,
    /// When the current state (or, in `Head`, the current wait) began.
    since: Instant,
    /// Requests completed on this connection.
    served: u64,
    /// The provider connection its last exchange used, kept for its next request only.
    kept: Option<Kept>,
    /// The configuration generation whose TLS config the handshake was verified under.
    tls_generation: u64,
    /// The last full verification of the chain the consumer presented (rustls keeps the
    /// chain: `tls.peer_certificates()`), for row 8.
    judgement: Option<Judgement>,
    /// Why the TLS handshake was refused, and the certificate it presented (audited).
    refused_handshake: Option<(rustls::Error, Option<Box<Identity>>)>,
    /// Its address is past `[limits] refused_handshakes`: only a resumed session is served
    /// (`tls::resumption`).
    resumption_only: bool,
    /// SIGTERM: the connection closes after its next answer.
    draining: bool,
}

impl Session {
    /// A connection just accepted from `peer` (the balancer's address when `proxied`: the
    /// consumer's own comes with the PROXY header).
    pub fn accept(cx: &Cx, peer: SocketAddr, proxied: bool, now: Instant) -> Result<Session, rustls::Error> {
        let blocked = !proxied
            && cx
                .counters
                .handshake_failures
                .is_blocked(&peer.ip(), cx.nanos(now));
        let config = if blocked {
            &cx.shared.server_tls_resumption_only
        } else {
            &cx.shared.server_tls
        };
        let tls = ServerConnection::new(config.clone())?;
        Ok(Session {
            con: Consumer::new(tls, peer, now),
            state: if proxied {
                State::ProxyHeader
            } else {
                State::Handshake
            },
            since: now,
            served: 0,
            kept: None,
            tls_generation: cx.generation,
            judgement: None,
            refused_handshake: None,
            resumption_only: blocked,
            draining: false,
        })
    }

    pub fn peer(&self) -> SocketAddr {
        self.con.peer
    }

    /// Plaintext it holds in buffers right now, both sides together (bounded by the stage
    /// limit, `max_header_bytes` and one TLS record per side; `tests/simulate.rs` checks).
    pub fn buffered(&self) -> usize {
        let exchange = match &self.state {
            State::Exchange(ex) => {
                ex.to_upstream.len()
                    + ex.to_client.len()
                    + ex.upstream.as_ref().map_or(0, |up| up.inbuf.len())
            }
            _ => 0,
        };
        self.con.inbuf.len() + exchange
    }

    /// The request state it is in, for the simulator's reports.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::ProxyHeader => "proxy-header",
            State::Handshake => "handshake",
            State::Head { .. } => "head",
            State::Exchange(_) => "exchange",
            State::Closing { .. } => "closing",
            State::Done => "done",
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether it still uses provider connection `id`; the driver closes those it does not.
    pub fn holds_provider(&self, id: u64) -> bool {
        let in_exchange = match &self.state {
            State::Exchange(ex) => ex.provider_id() == Some(id),
            _ => false,
        };
        in_exchange || self.kept.as_ref().is_some_and(|k| k.up.id == id)
    }

    /// When it must next have moved: the deadline of its state, from `[limits]` and
    /// `[upstream]` (SPEC row 2), or the idle end of its kept provider connection.
    pub fn deadline(&self, cx: &Cx) -> Option<Instant> {
        let kept = self
            .kept
            .as_ref()
            .map(|k| k.since + cx.shared.config.upstream.pool_idle_timeout);
        match (self.state_deadline(cx), kept) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn state_deadline(&self, cx: &Cx) -> Option<Instant> {
        let limits = &cx.shared.config.limits;
        match &self.state {
            State::ProxyHeader | State::Handshake => Some(self.since + limits.header_timeout),
            State::Head { started: None, .. } if self.served > 0 => Some(self.since + limits.idle_timeout),
            State::Head { started, .. } => Some(started.unwrap_or(self.since) + limits.header_timeout),
            State::Exchange(ex) => Some(ex.deadline()),
            State::Closing { .. } => Some(self.since + LINGER),
            State::Done => None,
        }
    }

    /// Takes one input at `now`; returns whether work may be left (`MAX_ROUNDS` reached).
    pub fn handle(&mut self, input: Input, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> bool {
        match input {
            Input::Ready => {}
            Input::ProviderReady { id } => {
                // Kept between requests: TLS housekeeping (session tickets) is fine; anything
                // else, data or a close, means it cannot carry another request. Rare.
                if let Some(kept) = self.kept.as_mut().filter(|k| k.up.id == id) {
                    if !io.provider(id).is_some_and(|pipe| kept.up.still_idle(pipe)) {
                        self.kept = None;
                    }
                    return false;
                }
            }
            Input::Connected { id, result } => {
                if let State::Exchange(ex) = &mut self.state {
                    let step = exchange::connected(ex, &mut self.con, cx, io, id, result, now);
                    self.apply(step, cx, now);
                }
            }
            Input::Resolved { ticket, addrs } => {
                if let State::Exchange(ex) = &mut self.state {
                    let step = exchange::resolved(ex, &mut self.con, cx, io, ticket, addrs, now);
                    self.apply(step, cx, now);
                }
            }
            Input::Audited { ticket, seq } => {
                if let State::Exchange(ex) = &mut self.state {
                    let step = exchange::audited(ex, &mut self.con, cx, ticket, seq, now);
                    self.apply(step, cx, now);
                }
            }
            Input::Tick => {
                let idle_for = cx.shared.config.upstream.pool_idle_timeout;
                if self.kept.as_ref().is_some_and(|k| k.expired(now, idle_for)) {
                    self.kept = None;
                }
                if self.state_deadline(cx).is_some_and(|d| d <= now) {
                    self.timed_out(cx, io, now);
                }
            }
            Input::Leaving => self.draining = true,
            Input::Drain => {
                self.draining = true;
                let idle = matches!(self.state, State::Head { started: None, .. })
                    && self.served > 0
                    && self.con.inbuf.is_empty();
                if idle {
                    self.start_closing(now);
                }
            }
            Input::Stop => {
                if let State::Exchange(mut ex) = std::mem::replace(&mut self.state, State::Done) {
                    exchange::drain_expired(&mut ex, &self.con, cx, now);
                    exchange::retire(ex, cx);
                }
                self.finish(cx, now);
                return false;
            }
        }
        self.drive(cx, io, now)
    }

    /// Everything that can happen after an input, until nothing moves or `MAX_ROUNDS` is
    /// reached: read, decide, service the provider side, flush.
    fn drive(&mut self, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> bool {
        let max_head = cx.shared.config.limits.max_header_bytes;
        for _ in 0..MAX_ROUNDS {
            if self.is_done() {
                return false;
            }
            let mut progress = self.read(cx, io, max_head, now);
            progress |= match &mut self.state {
                State::Handshake if !self.con.tls.is_handshaking() => {
                    self.finish_handshake(cx, now);
                    true
                }
                State::ProxyHeader | State::Handshake | State::Closing { .. } | State::Done => false,
                State::Head { .. } => self.on_head(cx, io, now),
                State::Exchange(ex) => {
                    let step = exchange::pump(ex, &mut self.con, cx, io, now);
                    self.apply(step, cx, now)
                }
            };
            if self.con.eof
                && matches!(
                    self.state,
                    State::ProxyHeader | State::Handshake | State::Head { .. }
                )
            {
                self.finish(cx, now);
            }
            progress |= self.flush(cx, io, now);
            if self.is_done() || !progress {
                return false;
            }
        }
        !self.is_done()
    }

    /// Acts on what became of the exchange; returns whether anything moved.
    fn apply(&mut self, step: Step, cx: &mut Cx, now: Instant) -> bool {
        let end = match step {
            Step::Idle => return false,
            Step::Moved => return true,
            Step::End(end) => end,
        };
        // Until the end says what follows, the connection is between requests.
        let between = State::Head {
            started: None,
            scanned: 0,
        };
        let State::Exchange(ex) = std::mem::replace(&mut self.state, between) else {
            return true;
        };
        let made_under = ex.shared.clone();
        exchange::retire(ex, cx);
        match end {
            End::Next { close, kept } => {
                self.served += 1;
                if let Some(up) = kept
                    && !close
                    && !self.draining
                {
                    self.kept = cx.keep(up, &made_under, now);
                }
                if close || self.draining {
                    self.start_closing(now);
                } else {
                    self.enter_head(now);
                }
            }
            End::Abort => self.finish(cx, now),
        }
        true
    }

    /// How many plaintext bytes we are willing to hold from this consumer right now: enough for
    /// a maximal head, and for bodies only while the provider keeps up.
    fn read_cap(&self, max_head: usize) -> usize {
        match &self.state {
            State::Exchange(ex) if ex.wants_request_body() => {
                if ex.to_upstream.len() < STAGE_LIMIT {
                    STAGE_LIMIT
                } else {
                    0
                }
            }
            _ => max_head + 1,
        }
    }

    /// Reads what the consumer sent; returns whether anything changed.
    fn read(&mut self, cx: &mut Cx, io: &mut dyn Io, max_head: usize, now: Instant) -> bool {
        if self.con.eof || self.is_done() {
            return false;
        }
        if matches!(self.state, State::ProxyHeader) {
            return self.read_proxy_header(cx, io, now);
        }
        let cap = self.read_cap(max_head);
        if self.con.inbuf.len() >= cap {
            return false;
        }
        let was_handshaking = self.con.tls.is_handshaking();
        match self.con.read(io.consumer(), cap) {
            Ok(outcome) => {
                match &mut self.state {
                    State::Closing { .. } => self.con.inbuf.clear(),
                    State::Head { started, .. } if started.is_none() && !self.con.inbuf.is_empty() => {
                        *started = Some(now);
                    }
                    _ => {}
                }
                outcome.bytes > 0 || outcome.eof || was_handshaking != self.con.tls.is_handshaking()
            }
            Err(e) => {
                let presented = verifier::take_refused();
                if matches!(self.state, State::Handshake) {
                    let certificate = presented
                        .as_ref()
                        .map_or(String::new(), |c| format!("; it presented {}", tls::presented(c)));
                    log::warn!(
                        "tls: handshake from {} refused: {}{certificate}",
                        self.con.peer,
                        tls::describe(&e)
                    );
                    self.refused_handshake = Some((e, presented.map(Box::new)));
                } else {
                    log::warn!("tls: error from {}: {}", self.con.peer, tls::describe(&e));
                }
                // rustls has queued an alert; send it, then close.
                let _ = self.con.flush(io.consumer());
                self.finish(cx, now);
                true
            }
        }
    }

    /// Reads the PROXY v2 header, takes the consumer's address from it, and hands the TLS
    /// bytes read along with it to rustls.
    fn read_proxy_header(&mut self, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> bool {
        let mut chunk = [0u8; 512];
        let room = proxy_protocol::MAX_HEADER
            .saturating_sub(self.con.inbuf.len())
            .min(chunk.len());
        match io.consumer().read(&mut chunk[..room]) {
            Ok(0) => self.con.eof = true,
            Ok(n) => self.con.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(_) => self.con.eof = true,
        }
        match proxy_protocol::parse(&self.con.inbuf) {
            Ok(proxy_protocol::Header::Incomplete) => true,
            Ok(proxy_protocol::Header::Done { consumed, source }) => {
                if let Some(source) = source {
                    self.con.peer = source;
                }
                // The consumer's own address is known only now: past `refused_handshakes`,
                // it is served resumed sessions only.
                if cx
                    .counters
                    .handshake_failures
                    .is_blocked(&self.con.peer.ip(), cx.nanos(now))
                {
                    log::debug!(
                        "{}: too many failed handshakes from its address; resumption only",
                        self.con.peer
                    );
                    match ServerConnection::new(cx.shared.server_tls_resumption_only.clone()) {
                        Ok(tls) => {
                            self.con.tls = tls;
                            self.resumption_only = true;
                        }
                        Err(_) => {
                            self.finish(cx, now);
                            return true;
                        }
                    }
                }
                let mut rest = &self.con.inbuf[consumed..];
                while !rest.is_empty() {
                    if self.con.tls.read_tls(&mut rest).is_err() {
                        self.con.inbuf.clear();
                        self.finish(cx, now);
                        return true;
                    }
                }
                self.con.inbuf.clear();
                self.state = State::Handshake;
                self.since = now;
                true
            }
            Err(why) => {
                log::warn!(
                    "proxy protocol: {} (from the balancer at {}): {why}",
                    self.con.peer,
                    self.con.peer
                );
                self.finish(cx, now);
                true
            }
        }
    }

    /// After the handshake: take the identity once, from the verified certificate.
    fn finish_handshake(&mut self, cx: &mut Cx, now: Instant) {
        let identity = self
            .con
            .tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| Identity::from_certificate(leaf));
        let Some(identity) = identity else {
            log::warn!("tls: {} presented no usable certificate", self.con.peer);
            self.finish(cx, now);
            return;
        };
        self.con.handshake_ms = Some(report::ms(self.con.accepted, now));
        log::debug!(
            "tls: {} is {} (serial {})",
            self.con.peer,
            identity.subject,
            identity.serial_hex
        );
        self.con.identity = Some(identity);
        // A full handshake has just verified the chain under the configuration the
        // connection was accepted with; a resumed one verified nothing, and is judged at its
        // first request.
        if self.con.tls.handshake_kind() != Some(HandshakeKind::Resumed) {
            self.judgement = Some(Judgement {
                generation: self.tls_generation,
                fault: None,
            });
        }
        self.enter_head(now);
    }

    /// Row 8's judgement of this connection's chain under the configuration in force at
    /// `cx.wall`: the last one while it holds, else the chain is verified again in full.
    fn judge(&mut self, cx: &Cx) -> Judgement {
        if let Some(holding) = Judgement::holding(self.judgement, cx.generation) {
            return holding;
        }
        let chain = self.con.tls.peer_certificates().unwrap_or_default();
        let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(cx.wall).unwrap_or(0)));
        let fault = cx.shared.consumer_verifier.judge(chain, at).err().map(|e| {
            log::info!(
                "tls: {} ({}) fails the certificate check in force: {}",
                self.con.peer,
                self.con
                    .identity
                    .as_ref()
                    .map_or("no certificate", |i| &i.subject),
                tls::describe(&e)
            );
            verifier::fault(&e)
        });
        let judgement = Judgement {
            generation: cx.generation,
            fault,
        };
        self.judgement = Some(judgement);
        judgement
    }

    /// Tries to take a complete request head off the input.
    fn take_head(&mut self, max_head: usize) -> Result<Option<RequestHead>, Refusal> {
        let State::Head { scanned, .. } = &mut self.state else {
            return Ok(None);
        };
        if self.con.inbuf.is_empty() {
            return Ok(None);
        }
        match request::parse_from(&self.con.inbuf, max_head, scanned) {
            Ok(Some(head)) => {
                self.con.inbuf.drain(..head.len());
                *scanned = 0;
                Ok(Some(head))
            }
            Ok(None) => Ok(None),
            Err(HeadError::TooLarge) => Err(Refusal::HeadTooLarge),
            Err(HeadError::Malformed(why)) => {
                log::info!("http: {} sent a malformed head: {why}", self.con.peer);
                Err(Refusal::InvalidRequest)
            }
        }
    }

    /// A complete head arrived: SPEC section 4 rows 3–16, then forward or answer.
    fn on_head(&mut self, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> bool {
        let head = match self.take_head(cx.shared.config.limits.max_header_bytes) {
            Ok(Some(head)) => head,
            Ok(None) => return false,
            Err(refusal) => {
                log::debug!("{} {} {}", self.con.peer, refusal.status(), refusal.token());
                let trace_id = head::sniff_field(&self.con.inbuf, "ssp-traceid").map(<[u8]>::to_vec);
                let xml = answer::prefers_xml(head::sniff_field(&self.con.inbuf, "accept"));
                let id = cx.outcome_id(now);
                self.refused(cx, None, &refusal, id, now);
                let shared = cx.shared.clone();
                let ctx = Context {
                    trace_id: trace_id.as_deref(),
                    xml,
                    head_request: false,
                    hsts: shared.config.server.hsts.as_deref(),
                };
                self.answer(&refusal, id, ctx, true, now);
                return true;
            }
        };
        let shared = cx.shared.clone();
        // Verifies the chain again only if the configuration changed since it last was.
        let judgement = self.judge(cx);
        let Some(identity) = self.con.identity.as_ref() else {
            self.finish(cx, now);
            return true;
        };
        let admitted =
            policy::admit(&shared.rules, &head, identity, judgement, cx.wall).and_then(|admission| {
                let grant =
                    policy::limits::acquire(&shared.rates, &shared.in_flight, &admission, cx.nanos(now))?;
                policy::limits::ready(
                    cx.audit_healthy,
                    shared.config.server.clock_unsynced,
                    cx.clock_synced,
                )?;
                Ok((admission, grant))
            });
        match admitted {
            Ok((admission, (permit, rate_fields))) => {
                let kept = self.kept.take();
                let (mut ex, step) = exchange::start(
                    &mut self.con,
                    cx,
                    io,
                    &head,
                    admission,
                    permit,
                    rate_fields,
                    kept,
                    now,
                );
                // Draining: this is the connection's last request, and its answer says so.
                ex.close_client |= self.draining;
                self.state = State::Exchange(ex);
                self.since = now;
                self.apply(step, cx, now);
            }
            Err(refusal) => {
                log::debug!(
                    "{} {} {} {}",
                    self.con.peer,
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
                let id = cx.outcome_id(now);
                let close = self.refused(cx, Some(&head), &refusal, id, now) || close;
                self.served += 1;
                self.answer(&refusal, id, ctx, close, now);
            }
        }
        true
    }

    /// A request refused before it became an exchange: its `deny` record and its metrics.
    /// Returns whether its certificate is past `[limits] refusals`: its connection is then
    /// closed after the answer, so that a storm of refusals costs the sender a new connection
    /// each, and the record is counted into one a second (`refusals.rs`).
    fn refused(
        &self,
        cx: &mut Cx,
        head: Option<&RequestHead>,
        refusal: &Refusal,
        outcome_id: OutcomeId,
        now: Instant,
    ) -> bool {
        let metrics = &cx.counters.metrics;
        match refusal {
            Refusal::Throttled { .. } => metrics.throttled(),
            Refusal::ProviderBusy { .. } => metrics.provider_busy(),
            _ => {}
        }
        let since = match &self.state {
            State::Head {
                started: Some(started),
                ..
            } => *started,
            _ => self.since,
        };
        metrics.request(
            refusal.status(),
            Some(&refusal.token()),
            now.saturating_duration_since(since),
        );
        let record = report::deny(&self.con, head, refusal, outcome_id);
        let nanos = cx.nanos(now);
        let struck = self
            .con
            .identity
            .as_ref()
            .is_some_and(|i| cx.counters.refusal_strikes.record(i.fingerprint.clone(), nanos));
        if struck {
            cx.refusals.add(record, now);
        } else {
            cx.audit(record);
        }
        struck
    }

    /// Queues our own answer for `refusal`, its `OperationOutcome` under `id` (the one its
    /// audit record names); `close` forces the connection closed after it (e.g. a request
    /// body was left unread).
    fn answer(&mut self, refusal: &Refusal, id: OutcomeId, ctx: Context<'_>, close: bool, now: Instant) {
        let mut a = refusal.answer(id);
        a.close |= close || self.draining;
        let mut out = Vec::with_capacity(512);
        answer::render(&a, ctx, &mut out);
        if !self.con.write_plaintext(&out) {
            self.state = State::Done;
            return;
        }
        if a.close {
            self.start_closing(now);
        } else {
            self.enter_head(now);
        }
    }

    fn enter_head(&mut self, now: Instant) {
        // An idle connection gives back what a large head or body made its buffer grow to.
        if self.con.inbuf.is_empty() && self.con.inbuf.capacity() > IDLE_BUFFER {
            self.con.inbuf = Vec::new();
        }
        // Pipelined bytes already waiting start their head clock now.
        self.state = State::Head {
            started: (!self.con.inbuf.is_empty()).then_some(now),
            scanned: 0,
        };
        self.since = now;
    }

    fn start_closing(&mut self, now: Instant) {
        if !matches!(self.state, State::Closing { .. } | State::Done) {
            // Nothing it sent from here on is handled: what is held would only stop the
            // reads that drain the input and see the consumer's close (`tests/simulate.rs`
            // found a closing connection waiting out its linger behind a body it held).
            self.con.inbuf.clear();
            self.con.tls.send_close_notify();
            self.state = State::Closing { shut: false };
            self.since = now;
        }
    }

    /// Sends queued TLS records to both sides; in `Closing`, shuts the write side once they
    /// are out. Returns whether anything went out or failed.
    fn flush(&mut self, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> bool {
        if self.is_done() {
            return false;
        }
        let mut moved = false;
        if let State::Exchange(ex) = &mut self.state {
            let step = exchange::flush_provider(ex, &mut self.con, cx, io, now);
            moved |= self.apply(step, cx, now);
        }
        let Ok(written) = self.con.flush(io.consumer()) else {
            self.finish(cx, now);
            return true;
        };
        if let State::Closing { shut } = &mut self.state {
            if !*shut && !self.con.tls.wants_write() {
                io.consumer().shutdown_write();
                *shut = true;
            }
            if *shut && self.con.eof {
                self.state = State::Done;
            }
        }
        moved || written > 0
    }

    fn timed_out(&mut self, cx: &mut Cx, io: &mut dyn Io, now: Instant) {
        match &mut self.state {
            State::ProxyHeader | State::Handshake | State::Closing { .. } => self.finish(cx, now),
            State::Head { started: None, .. } if self.served > 0 => self.start_closing(now),
            State::Head { .. } => {
                log::debug!("{} 408 REQUEST_TIMEOUT", self.con.peer);
                let id = cx.outcome_id(now);
                self.refused(cx, None, &Refusal::RequestTimeout, id, now);
                let shared = cx.shared.clone();
                let ctx = Context {
                    hsts: shared.config.server.hsts.as_deref(),
                    ..Context::default()
                };
                self.answer(&Refusal::RequestTimeout, id, ctx, true, now);
            }
            State::Exchange(ex) => {
                let step = exchange::timed_out(ex, &mut self.con, cx, io, now);
                self.apply(step, cx, now);
            }
            State::Done => {}
        }
    }

    /// The connection ends here, whichever way: an exchange in flight gets its `res` record
    /// (nothing admitted leaves the audit without one), and a refused handshake is counted
    /// against its address and audited.
    fn finish(&mut self, cx: &mut Cx, now: Instant) {
        if let State::Exchange(mut ex) = std::mem::replace(&mut self.state, State::Done) {
            exchange::consumer_gone(&mut ex, &self.con, cx, now);
            exchange::retire(ex, cx);
        }
        self.kept = None;
        let Some((error, certificate)) = self.refused_handshake.take() else {
            return;
        };
        let metrics = &cx.counters.metrics;
        if self.resumption_only {
            // Counted, but neither audited one record each (the failures that put the
            // address here were) nor held against the address: a consumer retrying full
            // handshakes would otherwise keep it blocked for good.
            metrics.handshake_failed("blocked");
            return;
        }
        cx.counters
            .handshake_failures
            .record(self.con.peer.ip(), cx.nanos(now));
        metrics.handshake_failed(report::handshake_reason(&error));
        cx.audit(Event::Tls {
            peer: self.con.peer,
            reason: tls::describe(&error),
            certificate,
        });
    }
}
