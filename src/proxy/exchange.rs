//! One request in flight: forwarding its head and body to the provider and streaming the
//! provider's response back, with the failure answers of SPEC section 4 rows 13, 17 and 18.
//! Each function takes the exchange, the consumer's side and the pipes, and says what became
//! of the exchange (`Step`); the session acts on the end of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::consumer::Consumer;
use super::cx::{Action, Cx};
use super::outcome::{Outcome, ProviderFailure};
use super::report;
use super::shared::Shared;
use super::tls_io;
use super::upstream::{Kept, Upstream};
use super::wire::Io;
use crate::audit::{Event, RequestFacts, Transaction};
use crate::http::answer::{self, Context, OutcomeId};
use crate::http::body::BodyReader;
use crate::http::forward::{self, Persistence};
use crate::http::head::trim_ows;
use crate::http::request::{BodyFraming, RequestHead, Version};
use crate::http::response::{self, ResponseFraming};
use crate::policy::Admission;
use crate::policy::limits::RateFields;
use crate::policy::refusal::Refusal;
use crate::policy::throttle::{self, Permit};

/// What became of an exchange after a call.
pub enum Step {
    /// Nothing moved.
    Idle,
    /// Bytes or state moved; another round may move more.
    Moved,
    /// It ended, reported (`res` record, transactions line, metrics); the session goes on.
    End(End),
}

/// How the consumer connection goes on after an exchange.
pub enum End {
    /// Its answer (the provider's, or our own) is queued: the next request may follow, with
    /// the provider connection `kept` for it, unless `close`.
    Next {
        close: bool,
        kept: Option<Box<Upstream>>,
    },
    /// Nothing sensible can be said on the connection any more: close it now.
    Abort,
}

/// Plaintext staged for one side before we stop reading from the other (backpressure).
pub const STAGE_LIMIT: usize = 64 * 1024;

pub enum ResponseState {
    AwaitingHead,
    Body { reader: BodyReader, dechunk: bool },
    Done,
}

/// When each step of an exchange happened, for the transactions log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub connect_started: Option<Instant>,
    pub tcp_connected: Option<Instant>,
    pub tls_done: Option<Instant>,
    /// The request's first bytes went to the provider (after its `req` record was durable).
    pub forwarded: Option<Instant>,
    pub response_head: Option<Instant>,
}

pub struct Exchange {
    /// The `req` record's durability: the ticket the audit will answer, then its `seq`. Nothing
    /// is sent to the provider before `audited` (SPEC section 5).
    pub audit_ticket: Option<u64>,
    /// The request's facts, shared with its `req` record: if that cannot be made durable, the
    /// refusal is recorded as a `deny` with them; the `res` record and the logs name them.
    pub facts: Arc<RequestFacts>,
    pub audited: bool,
    pub req_seq: Option<u64>,
    pub timings: Timings,
    /// The configuration this request was admitted under; a reload does not change it.
    pub shared: Arc<Shared>,
    /// This request's place among the provider's in flight (row 15): held, never read, so
    /// that dropping the exchange on any path releases it.
    _permit: Permit,
    /// `X-Rate-Limit-*` fields for the consumer's answer (row 14).
    pub rate_fields: RateFields,
    /// The provider endpoint it goes to: its index in `Shared::routes`.
    pub route: usize,
    pub xml: bool,
    pub http10: bool,
    /// Whether the consumer's connection may carry another request after this one.
    pub keep_alive: bool,
    pub upstream: Option<Box<Upstream>>,
    /// The resolver question this exchange waits on.
    pub ticket: Option<u64>,
    /// Provider addresses not tried yet, should the connect under way fail.
    pub untried: Vec<SocketAddr>,
    /// When the provider's TLS must be up, whichever address it comes from.
    pub connect_by: Instant,
    /// The provider connection is the one this consumer connection kept from its last request.
    pub reused: bool,
    /// The forward head, kept to retry once when a reused connection turns out to be dead
    /// before answering; only for idempotent requests without a body (RFC 9110 9.2.2).
    pub replay: Option<Vec<u8>>,
    pub to_upstream: Vec<u8>,
    /// `None` once the whole request body has been staged for the provider.
    pub request_body: Option<BodyReader>,
    pub to_client: Vec<u8>,
    pub response: ResponseState,
    pub response_started: bool,
    /// We told the consumer `100 Continue` ourselves; the provider's own is not repeated.
    pub continue_sent: bool,
    /// The provider allows reuse of its connection after this response.
    pub provider_keeps_alive: bool,
    pub close_client: bool,
    /// Connect deadline until the provider's TLS is up, then response deadline.
    pub deadline: Instant,
    pub awaiting_handshake: bool,
    pub started: Instant,
    pub status: u16,
    /// The `id` of our own answer, when the proxy answered instead of the provider.
    pub answered_with: Option<OutcomeId>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Exchange {
    pub fn wants_request_body(&self) -> bool {
        self.request_body.is_some()
    }

    /// The provider connection it holds, by id (`Action::Connect`).
    pub fn provider_id(&self) -> Option<u64> {
        self.upstream.as_ref().map(|up| up.id)
    }

    /// When it must next have moved.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn context(&self) -> Context<'_> {
        Context {
            trace_id: self.facts.text.trace_id().map(str::as_bytes),
            xml: self.xml,
            head_request: self.facts.text.method() == "HEAD",
            hsts: self.shared.config.server.hsts.as_deref(),
        }
    }

    /// The provider URL as the consumer wrote it, for log lines.
    fn target(&self) -> &str {
        let target = self.facts.text.target();
        target.strip_prefix('/').unwrap_or(target)
    }
}

/// How long an exchange may wait for the other side now: the consumer's next body bytes while
/// its body is incomplete, else the provider's response head.
fn wait_limit(shared: &Shared, body_pending: bool) -> std::time::Duration {
    let cfg = &shared.config;
    if body_pending {
        cfg.limits.header_timeout
    } else {
        cfg.upstream.response_timeout
    }
}

/// Begins forwarding an admitted request: stages its head, asks for its `req` record to be
/// made durable, and finds a provider connection (`kept`, this consumer connection's own from
/// its last request, if it fits).
#[allow(clippy::too_many_arguments)]
pub fn start(
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    head: &RequestHead,
    admission: Admission,
    permit: Permit,
    rate_fields: RateFields,
    kept: Option<Kept>,
    now: Instant,
) -> (Box<Exchange>, Step) {
    let shared = cx.shared.clone();
    let mut to_upstream = cx.buffers.take();
    to_upstream.reserve(head.len() + 96);
    let forwarded_for = shared.config.server.forwarded.then_some(con.peer);
    forward::write_request(&mut to_upstream, head, &admission.target, forwarded_for);
    let request_body = match head.framing {
        BodyFraming::None => None,
        BodyFraming::Length(n) => Some(BodyReader::length(n)),
        BodyFraming::Chunked => Some(BodyReader::chunked()),
    };
    // The request is admitted: a consumer waiting to send its body need not wait for the
    // provider (curl would otherwise pause a second).
    let continue_sent = request_body.is_some()
        && head.version() == Version::Http11
        && head
            .field("expect")
            .is_some_and(|e| trim_ows(e).eq_ignore_ascii_case(b"100-continue"));
    if continue_sent {
        con.write_plaintext(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let facts = Arc::new(report::facts(con, Some(head)));
    let ticket = cx.audit_durable(Event::Req {
        request: facts.clone(),
    });
    let mut ex = Box::new(Exchange {
        audit_ticket: Some(ticket),
        facts,
        audited: false,
        req_seq: None,
        timings: Timings::default(),
        xml: answer::prefers_xml(head.field("accept")),
        http10: head.version() == Version::Http10,
        keep_alive: head.keep_alive,
        route: admission.route.endpoint,
        upstream: None,
        ticket: None,
        untried: Vec::new(),
        connect_by: now + shared.config.upstream.connect_timeout,
        reused: false,
        replay: (request_body.is_none() && head.is_idempotent()).then(|| {
            let mut replay = cx.buffers.take();
            replay.extend_from_slice(&to_upstream);
            replay
        }),
        to_upstream,
        request_body,
        to_client: cx.buffers.take(),
        response: ResponseState::AwaitingHead,
        response_started: false,
        continue_sent,
        provider_keeps_alive: false,
        close_client: false,
        deadline: now + shared.config.upstream.connect_timeout,
        shared,
        _permit: permit,
        rate_fields,
        awaiting_handshake: true,
        started: now,
        status: 0,
        answered_with: None,
        bytes_up: 0,
        bytes_down: 0,
    });
    let step = connect(&mut ex, con, cx, io, kept, now);
    (ex, step)
}

/// Finds a provider connection: `kept` if it fits and is still idle, else a new one (via the
/// resolver unless the provider has a fixed address).
fn connect(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    kept: Option<Kept>,
    now: Instant,
) -> Step {
    ex.timings = Timings {
        connect_started: Some(now),
        ..Timings::default()
    };
    let route_index = ex.route;
    // Only the connection this consumer connection kept from its own last request (see
    // `upstream::Kept`). Anything the provider sent, or a close, while it was kept drops it
    // (`Input::ProviderReady`), but that event may still be queued behind this request's, and
    // bytes may come while the request waits for its `req` record: so it is looked at once
    // more just before the request's first byte goes (`pump`), one read that finds nothing.
    if let Some(kept) = kept
        && kept.fits(
            route_index,
            &ex.shared.client_tls,
            now,
            ex.shared.config.upstream.pool_idle_timeout,
        )
    {
        ex.upstream = Some(kept.up);
        ex.reused = true;
        ex.timings.tcp_connected = Some(now);
        ex.timings.tls_done = Some(now);
        ex.awaiting_handshake = false;
        ex.deadline = now + wait_limit(&ex.shared, ex.request_body.is_some());
        return Step::Moved;
    }
    ex.reused = false;
    ex.awaiting_handshake = true;
    ex.connect_by = now + ex.shared.config.upstream.connect_timeout;
    ex.deadline = ex.connect_by;
    let route = &ex.shared.routes[route_index];
    if route.fixed_addrs.is_empty() {
        let ticket = cx.ticket();
        cx.actions.push(Action::Resolve {
            host: route.host.clone(),
            port: route.port,
            ticket,
        });
        ex.ticket = Some(ticket);
        Step::Moved
    } else {
        let addrs = route.fixed_addrs.clone();
        open(ex, con, cx, io, addrs, now)
    }
}

/// The resolver's answer for this exchange's `ticket`.
pub fn resolved(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    ticket: u64,
    addrs: Result<Vec<SocketAddr>, String>,
    now: Instant,
) -> Step {
    if ex.ticket != Some(ticket) {
        return Step::Idle;
    }
    match addrs {
        Ok(addrs) => open(ex, con, cx, io, addrs, now),
        Err(why) => provider_failed(ex, con, cx, io, ProviderFailure::Resolve(why), now),
    }
}

/// Asks for a new provider connection to the first of `addrs` (the fixed addresses or the
/// resolver's answer); the others are kept for `connect_failed`.
fn open(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    mut addrs: Vec<SocketAddr>,
    now: Instant,
) -> Step {
    ex.ticket = None;
    let route_index = ex.route;
    let route = &ex.shared.routes[route_index];
    if addrs.is_empty() {
        return provider_failed(
            ex,
            con,
            cx,
            io,
            ProviderFailure::Connect("no address".into()),
            now,
        );
    }
    // Tried from the front; few enough that removing the first is cheaper than a deque.
    let addr = addrs.remove(0);
    let id = cx.ticket();
    match Upstream::new(
        id,
        ex.shared.client_tls.clone(),
        route.server_name.clone(),
        route_index,
    ) {
        Ok(up) => {
            cx.actions.push(Action::Connect { id, addr });
            ex.upstream = Some(up);
            // Each address gets an equal share of what is left of `connect_timeout`, so
            // one that never answers leaves time for the others.
            let left = ex.connect_by.saturating_duration_since(now);
            ex.deadline = now + left / (addrs.len() as u32 + 1);
            ex.untried = addrs;
            Step::Moved
        }
        Err(why) => provider_failed(ex, con, cx, io, ProviderFailure::Tls(why), now),
    }
}

/// The driver's word on the TCP connect of provider connection `id`.
pub fn connected(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    id: u64,
    result: Result<(), String>,
    now: Instant,
) -> Step {
    let Some(up) = ex.upstream.as_mut().filter(|up| up.id == id) else {
        return Step::Idle;
    };
    match result {
        Ok(()) => {
            up.connected = true;
            Step::Moved
        }
        Err(why) => connect_failed(ex, con, cx, io, why, now),
    }
}

/// The TCP connect to the provider failed (refused, unreachable) or its share of the connect
/// time ran out: nothing reached the provider, so the next address, if there is one, gets the
/// same request within what is left of `connect_timeout`.
fn connect_failed(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    why: String,
    now: Instant,
) -> Step {
    if ex.untried.is_empty() {
        return provider_failed(ex, con, cx, io, ProviderFailure::Connect(why), now);
    }
    log::warn!("upstream: {}: {why}; trying the next address", ex.target());
    ex.upstream = None;
    let addrs = std::mem::take(&mut ex.untried);
    open(ex, con, cx, io, addrs, now)
}

/// Moves bytes one step in every direction.
pub fn pump(ex: &mut Exchange, con: &mut Consumer, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> Step {
    if con.eof {
        return Step::End(ended(ex, con, cx, Outcome::ConsumerGone, End::Abort, now));
    }
    let mut progress = false;

    // The consumer's body, as far as its framing goes and the provider keeps up.
    if let Some(reader) = ex.request_body.as_mut()
        && !con.inbuf.is_empty()
        && ex.to_upstream.len() < STAGE_LIMIT
    {
        let take = con.inbuf.len().min(STAGE_LIMIT - ex.to_upstream.len());
        // Staged as framed, less a chunked body's trailer fields (`BodyReader::relay`).
        match reader.relay(&con.inbuf[..take], &mut ex.to_upstream) {
            Ok(p) => {
                con.inbuf.drain(..p.consumed);
                ex.bytes_up += p.consumed as u64;
                let too_large = match reader {
                    BodyReader::Chunked(d) => d.payload_len() > ex.shared.rules.max_body_bytes,
                    _ => false,
                };
                if p.done {
                    ex.request_body = None;
                }
                // While the body uploads, a stall is the consumer's (header_timeout between
                // reads, and `min_upload_rate` on average); the response clock starts once the
                // request is out.
                if p.consumed > 0 && !ex.awaiting_handshake {
                    let limits = &ex.shared.config.limits;
                    ex.deadline = match ex.request_body {
                        Some(_) => throttle::body_deadline(
                            ex.started,
                            ex.bytes_up,
                            now,
                            limits.header_timeout,
                            limits.min_upload_rate,
                        ),
                        None => now + wait_limit(&ex.shared, false),
                    };
                }
                progress |= p.consumed > 0 || p.done;
                if too_large {
                    return request_failed(ex, con, cx, Refusal::PayloadTooLarge, now);
                }
            }
            Err(e) => {
                log::info!("http: {} sent a malformed body: {e}", con.peer);
                return request_failed(ex, con, cx, Refusal::InvalidRequest, now);
            }
        }
    }

    // The provider's side: send what is staged, read what came back.
    let Some(up) = ex.upstream.as_mut() else {
        return moved(progress);
    };
    if !up.connected {
        return moved(progress);
    }
    let Some(pipe) = io.provider(up.id) else {
        return moved(progress);
    };
    ex.timings.tcp_connected.get_or_insert(now);
    // A kept connection is looked at just before the request's first byte goes (not when the
    // request takes it: it waits for its `req` record after that, and whatever the provider
    // sends meanwhile would be read as the answer; `tests/simulate.rs` found that, seed 8952).
    // Nothing has gone yet, so a new connection can take the request whole.
    if ex.audited && ex.reused && ex.timings.forwarded.is_none() && !up.still_idle(pipe) {
        return replace_kept(ex, con, cx, io, now);
    }
    // Nothing goes to the provider before its `req` record is durable (SPEC section 5).
    if ex.audited && tls_io::stage(&mut up.tls, &mut ex.to_upstream) > 0 {
        ex.timings.forwarded.get_or_insert(now);
        progress = true;
    }
    match tls_io::flush(pipe, &mut up.tls) {
        Ok(written) => progress |= written > 0,
        Err(e) => return provider_failed(ex, con, cx, io, ProviderFailure::Write(e.to_string()), now),
    }
    if ex.awaiting_handshake && !up.tls.is_handshaking() {
        ex.awaiting_handshake = false;
        ex.timings.tls_done = Some(now);
        ex.deadline = now + wait_limit(&ex.shared, ex.request_body.is_some());
        progress = true;
    }
    if ex.to_client.len() < STAGE_LIMIT {
        match tls_io::read(
            pipe,
            &mut up.tls,
            &mut up.inbuf,
            STAGE_LIMIT,
            Some(&mut up.framing),
        ) {
            Ok(o) => {
                up.drained = o.drained;
                up.eof |= o.eof;
                up.close_notify |= o.close_notify;
                progress |= o.bytes > 0 || o.eof;
            }
            Err(e) => {
                let why = ProviderFailure::Tls(crate::tls::describe(&e).to_string());
                return provider_failed(ex, con, cx, io, why, now);
            }
        }
    }
    // Nothing the provider sends before the request has gone can be its answer: on a kept
    // connection it is what the provider sent after its last answer (a new connection takes
    // the request whole, since nothing has gone); on a new one the provider is broken.
    // (`tests/simulate.rs` found such bytes read as the answer while the request waited for
    // its `req` record, seed 553848.)
    if ex.timings.forwarded.is_none() && !up.inbuf.is_empty() {
        if ex.reused {
            return replace_kept(ex, con, cx, io, now);
        }
        return provider_failed(ex, con, cx, io, ProviderFailure::Unasked, now);
    }
    // Head and body in one go when both are in: one TLS record and one write to the consumer.
    loop {
        match response_step(ex, con, cx, io, now) {
            Step::Idle => break,
            Step::Moved => progress = true,
            end @ Step::End(_) => return end,
        }
    }

    // What the provider sent, on to the consumer.
    if !ex.to_client.is_empty() {
        progress |= tls_io::stage(&mut con.tls, &mut ex.to_client) > 0;
    }
    if matches!(ex.response, ResponseState::Done) && ex.to_client.is_empty() {
        // The answer leaves before the bookkeeping (records, keeping) that follows it.
        let _ = con.flush(io.consumer());
        return Step::End(finish(ex, con, cx, now));
    }
    moved(progress)
}

/// Writes what is queued for the provider.
pub fn flush_provider(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    now: Instant,
) -> Step {
    let Some(up) = ex.upstream.as_mut().filter(|up| up.connected) else {
        return Step::Idle;
    };
    let Some(pipe) = io.provider(up.id) else {
        return Step::Idle;
    };
    match tls_io::flush(pipe, &mut up.tls) {
        Ok(written) => moved(written > 0),
        Err(e) => provider_failed(ex, con, cx, io, ProviderFailure::Write(e.to_string()), now),
    }
}

/// The kept connection the request took spoke before the request went: a new connection takes
/// the request whole (nothing has gone).
fn replace_kept(ex: &mut Exchange, con: &mut Consumer, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> Step {
    log::debug!(
        "upstream: {}: the kept connection spoke while idle; a new one",
        ex.target()
    );
    ex.upstream = None;
    connect(ex, con, cx, io, None, now)
}

fn moved(progress: bool) -> Step {
    if progress { Step::Moved } else { Step::Idle }
}

fn response_step(ex: &mut Exchange, con: &mut Consumer, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> Step {
    // The provider's input is read a stage (64 KiB) at a time: a head that fills a stage
    // without ending can never be read whole, and would wait for `response_timeout` instead
    // of being refused.
    let max_head = ex.shared.config.limits.max_header_bytes.min(STAGE_LIMIT - 1);
    let Some(up) = ex.upstream.as_mut() else {
        return Step::Idle;
    };
    match &mut ex.response {
        ResponseState::AwaitingHead => {
            let head = match response::parse(&up.inbuf, max_head, ex.facts.text.method()) {
                Ok(Some(head)) => head,
                Ok(None) if up.eof => {
                    let why = if up.inbuf.is_empty() {
                        ProviderFailure::ClosedWithoutAnswer
                    } else {
                        ProviderFailure::ClosedMidHead
                    };
                    return provider_failed(ex, con, cx, io, why, now);
                }
                Ok(None) => return Step::Idle,
                Err(e) => {
                    return provider_failed(
                        ex,
                        con,
                        cx,
                        io,
                        ProviderFailure::InvalidHead(e.to_string()),
                        now,
                    );
                }
            };
            up.inbuf.drain(..head.len());
            if head.is_interim() {
                if head.status == 101 {
                    return provider_failed(ex, con, cx, io, ProviderFailure::SwitchedProtocols, now);
                }
                // HTTP/1.0 consumers do not understand interim answers.
                let repeat_of_ours = head.status == 100 && ex.continue_sent;
                if !ex.http10 && !repeat_of_ours {
                    forward::write_response(&mut ex.to_client, &head, Persistence::Default, false, &[]);
                }
                return Step::Moved;
            }
            let dechunk = ex.http10 && head.framing == ResponseFraming::Chunked;
            // A provider that answers before the consumer's body is all read: the rest of the
            // body cannot be told from a next request, so the connection ends with this answer
            // and says so (RFC 9112 section 9.6).
            let body_unread = ex.request_body.is_some();
            ex.close_client |=
                !ex.keep_alive || head.framing == ResponseFraming::UntilClose || dechunk || body_unread;
            let persistence = match (ex.close_client, ex.http10) {
                (true, _) => Persistence::Close,
                (false, true) => Persistence::KeepAlive,
                (false, false) => Persistence::Default,
            };
            forward::write_response(&mut ex.to_client, &head, persistence, dechunk, &ex.rate_fields);
            ex.status = head.status;
            ex.timings.response_head = Some(now);
            cx.counters
                .metrics
                .upstream(now.saturating_duration_since(ex.timings.forwarded.unwrap_or(ex.started)));
            ex.provider_keeps_alive = head.reusable;
            ex.response_started = true;
            ex.deadline = now + ex.shared.config.upstream.response_timeout;
            ex.response = match head.framing {
                ResponseFraming::None => ResponseState::Done,
                ResponseFraming::Length(n) => ResponseState::Body {
                    reader: BodyReader::length(n),
                    dechunk: false,
                },
                ResponseFraming::Chunked => ResponseState::Body {
                    reader: BodyReader::chunked(),
                    dechunk,
                },
                ResponseFraming::UntilClose => ResponseState::Body {
                    reader: BodyReader::until_close(),
                    dechunk: false,
                },
            };
            Step::Moved
        }
        ResponseState::Body { reader, dechunk } => {
            if !up.inbuf.is_empty() && ex.to_client.len() < STAGE_LIMIT {
                let before = ex.to_client.len();
                let fed = if *dechunk {
                    reader.feed(&up.inbuf, Some(&mut ex.to_client))
                } else {
                    reader.feed(&up.inbuf, None)
                };
                match fed {
                    Ok(p) => {
                        if !*dechunk {
                            ex.to_client.extend_from_slice(&up.inbuf[..p.consumed]);
                        }
                        up.inbuf.drain(..p.consumed);
                        ex.bytes_down += (ex.to_client.len() - before) as u64;
                        ex.deadline = now + ex.shared.config.upstream.response_timeout;
                        if p.done {
                            ex.response = ResponseState::Done;
                        }
                        Step::Moved
                    }
                    Err(e) => {
                        let failure = ProviderFailure::BrokenBody(e.to_string());
                        Step::End(cut(ex, con, cx, failure, now))
                    }
                }
            } else if up.inbuf.is_empty() && up.eof {
                match reader.finish_at_eof(up.close_notify) {
                    Ok(()) => {
                        ex.provider_keeps_alive = false;
                        ex.response = ResponseState::Done;
                        Step::Moved
                    }
                    Err(_) => {
                        let failure = ProviderFailure::BrokenBody(
                            "closed mid-response (or without close_notify)".into(),
                        );
                        Step::End(cut(ex, con, cx, failure, now))
                    }
                }
            } else {
                Step::Idle
            }
        }
        ResponseState::Done => Step::Idle,
    }
}

/// The response is out: keep the provider connection for this consumer connection's next
/// request if it is clean, and report.
fn finish(ex: &mut Exchange, con: &Consumer, cx: &mut Cx, now: Instant) -> End {
    let request_complete = ex.request_body.is_none() && ex.to_upstream.is_empty();
    let consumer_stays = !ex.close_client && request_complete;
    let kept = ex
        .upstream
        .take()
        .filter(|up| consumer_stays && ex.provider_keeps_alive && up.is_clean());
    let status = ex.status;
    ended(
        ex,
        con,
        cx,
        Outcome::Relayed { status },
        End::Next {
            close: !consumer_stays,
            kept,
        },
        now,
    )
}

/// The exchange's byte buffers go back to the worker for the next request.
pub fn retire(mut ex: Box<Exchange>, cx: &mut Cx) {
    for buf in [
        std::mem::take(&mut ex.to_upstream),
        std::mem::take(&mut ex.to_client),
        ex.replay.take().unwrap_or_default(),
    ] {
        cx.buffers.give(buf);
    }
}

/// The audit's answer about this exchange's `req` record (row 16).
pub fn audited(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    ticket: u64,
    seq: Option<u64>,
    now: Instant,
) -> Step {
    if ex.audit_ticket != Some(ticket) {
        return Step::Idle;
    }
    ex.audit_ticket = None;
    if let Some(seq) = seq {
        ex.audited = true;
        ex.req_seq = Some(seq);
        return Step::Moved;
    }
    log::error!(
        "audit: the req record of {} is not durable; refusing",
        ex.facts.text.trace_id().unwrap_or("-")
    );
    // No `req` was written, so no `res` either: the refusal is a `deny`.
    let refusal = Refusal::AuditUnavailable;
    let outcome_id = cx.outcome_id(now);
    cx.audit(Event::Deny {
        request: ex.facts.clone(),
        status: refusal.status(),
        token: refusal.token(),
        refusals: 1,
        outcome_id,
    });
    cx.counters.metrics.request(
        refusal.status(),
        Some(&refusal.token()),
        now.saturating_duration_since(ex.started),
    );
    ex.upstream = None;
    let close = ex.request_body.is_some() || !ex.keep_alive;
    Step::End(answer(ex, con, &refusal, outcome_id, close))
}

/// Rows 17 and 18 before the response started; a cut-off response after.
fn provider_failed(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    io: &mut dyn Io,
    failure: ProviderFailure,
    now: Instant,
) -> Step {
    let target = ex.target().to_string();
    log::warn!("upstream: {target}: {failure}");
    let dead = ex.upstream.take();
    if ex.response_started {
        return Step::End(cut(ex, con, cx, failure, now));
    }
    // A kept connection the provider had already closed: try once more on a new one.
    let nothing_received = dead.as_ref().is_none_or(|up| up.inbuf.is_empty());
    if ex.reused && nothing_received && ex.replay.is_some() && restage(ex) {
        // Once only: a second failure is the provider's.
        if let Some(spent) = ex.replay.take() {
            cx.buffers.give(spent);
        }
        return connect(ex, con, cx, io, None, now);
    }
    Step::End(respond_with(
        ex,
        con,
        cx,
        Refusal::ProviderFailed { target },
        Some(failure),
        false,
        now,
    ))
}

/// Before the request moves to another provider connection (a kept one found dead, or one
/// whose handshake did not finish): what was handed to the old one is lost with it, so the
/// bytes to send are the request's again. Possible when nothing was handed over, or when the
/// whole request is kept for replay (it has no body).
fn restage(ex: &mut Exchange) -> bool {
    if ex.timings.forwarded.is_none() {
        return true;
    }
    let Some(replay) = &ex.replay else {
        return false;
    };
    ex.to_upstream.clear();
    ex.to_upstream.extend_from_slice(replay);
    true
}

/// A deadline passed while the exchange was in flight.
pub fn timed_out(ex: &mut Exchange, con: &mut Consumer, cx: &mut Cx, io: &mut dyn Io, now: Instant) -> Step {
    if ex.response_started {
        log::warn!("upstream: {}: response stalled", ex.target());
        Step::End(cut(ex, con, cx, ProviderFailure::Stalled, now))
    } else if ex.awaiting_handshake {
        if ex.upstream.is_some() && !ex.untried.is_empty() && restage(ex) {
            return connect_failed(ex, con, cx, io, "connect timeout".into(), now);
        }
        ex.replay = None;
        provider_failed(ex, con, cx, io, ProviderFailure::ConnectTimeout, now)
    } else if ex.request_body.is_some() {
        // The consumer stopped sending its body: the provider never had the whole request.
        log::debug!("{}: request body stalled", con.peer);
        ex.upstream = None;
        Step::End(respond_with(
            ex,
            con,
            cx,
            Refusal::RequestTimeout,
            None,
            true,
            now,
        ))
    } else {
        let target = ex.target().to_string();
        log::warn!("upstream: {target}: no response head within response_timeout");
        ex.upstream = None;
        Step::End(respond_with(
            ex,
            con,
            cx,
            Refusal::ProviderTimeout { target },
            None,
            false,
            now,
        ))
    }
}

/// Answers the exchange with one of our own answers and ends it; the connection closes when
/// asked, when the consumer's body was not read to its end, or when it asked for it.
fn respond_with(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    refusal: Refusal,
    failure: Option<ProviderFailure>,
    close: bool,
    now: Instant,
) -> End {
    ex.upstream = None;
    let close = close || ex.request_body.is_some() || !ex.keep_alive;
    let outcome_id = cx.outcome_id(now);
    ex.answered_with = Some(outcome_id);
    let end = answer(ex, con, &refusal, outcome_id, close);
    ended(ex, con, cx, Outcome::Answered { refusal, failure }, end, now)
}

/// Queues our own answer to the consumer.
fn answer(ex: &Exchange, con: &mut Consumer, refusal: &Refusal, id: OutcomeId, close: bool) -> End {
    let mut a = refusal.answer(id);
    a.close |= close;
    let mut out = Vec::with_capacity(512);
    answer::render(&a, ex.context(), &mut out);
    if !con.write_plaintext(&out) {
        return End::Abort;
    }
    End::Next {
        close: a.close,
        kept: None,
    }
}

/// The consumer's request broke a rule while its body streamed (rows 3 and 13). Part of it
/// may have reached the provider, whose connection is dropped: the connection closes too.
fn request_failed(
    ex: &mut Exchange,
    con: &mut Consumer,
    cx: &mut Cx,
    refusal: Refusal,
    now: Instant,
) -> Step {
    if ex.response_started {
        let status = ex.status;
        Step::End(ended(
            ex,
            con,
            cx,
            Outcome::BrokenRequest { status },
            End::Abort,
            now,
        ))
    } else {
        Step::End(respond_with(ex, con, cx, refusal, None, true, now))
    }
}

/// The consumer went away before its answer was complete: SPEC section 4's 499. Also how a
/// connection dropped for a broken TLS session or a failed write ends its exchange.
pub fn consumer_gone(ex: &mut Exchange, con: &Consumer, cx: &mut Cx, now: Instant) {
    let _ = ended(ex, con, cx, Outcome::ConsumerGone, End::Abort, now);
}

/// SIGTERM's `drain_timeout` ran out with this exchange in flight: the proxy stops without
/// answering (or mid-answer). Its `res` record says so, so no `req` is left without a `res`.
pub fn drain_expired(ex: &mut Exchange, con: &Consumer, cx: &mut Cx, now: Instant) {
    let status = if ex.response_started { ex.status } else { 503 };
    let _ = ended(ex, con, cx, Outcome::Drained { status }, End::Abort, now);
}

/// The provider's response broke off after it began: the consumer got a truncated answer,
/// and the connection is closed; the record keeps the status it started with.
fn cut(ex: &mut Exchange, con: &Consumer, cx: &mut Cx, failure: ProviderFailure, now: Instant) -> End {
    let status = ex.status;
    ended(ex, con, cx, Outcome::Cut { status, failure }, End::Abort, now)
}

/// Every exchange ends here, whichever way: its `res` record, its transactions line, its
/// metrics, a log line. Returns `end`.
fn ended(ex: &Exchange, con: &Consumer, cx: &mut Cx, outcome: Outcome, end: End, now: Instant) -> End {
    let status = outcome.status();
    let token = outcome.token();
    let text = ex.facts.text.get();
    log::debug!(
        "{} {}->{} {} {} {} up={} down={} reused={} {}ms",
        con.peer,
        text.from.unwrap_or("-"),
        text.to.unwrap_or("-"),
        text.method,
        ex.target(),
        status,
        ex.bytes_up,
        ex.bytes_down,
        ex.reused,
        now.saturating_duration_since(ex.started).as_millis()
    );
    let metrics = &cx.counters.metrics;
    metrics.request(
        status,
        token.as_deref(),
        now.saturating_duration_since(ex.started),
    );
    if let Some(failure) = outcome.failure() {
        metrics.provider_failed(failure.label());
    }
    cx.transaction(transaction(con, ex, status, now));
    cx.audit(res(ex, status, token, now));
    end
}

/// The `res` record of an exchange that ended with `status` (and `token` when the proxy
/// answered itself).
fn res(ex: &Exchange, status: u16, token: Option<String>, now: Instant) -> Event {
    Event::Res {
        request: ex.facts.clone(),
        req_seq: ex.req_seq,
        status,
        token,
        outcome_id: ex.answered_with,
        bytes_in: ex.bytes_up,
        bytes_out: ex.bytes_down,
        duration_ms: report::ms(ex.started, now),
        upstream_ms: ex
            .timings
            .response_head
            .map(|t| report::ms(ex.timings.forwarded.unwrap_or(ex.started), t)),
    }
}

/// The transactions-log line of an exchange.
fn transaction(con: &Consumer, ex: &Exchange, status: u16, now: Instant) -> Transaction {
    let t = &ex.timings;
    let ms = report::ms;
    Transaction {
        request: ex.facts.clone(),
        status,
        bytes_in: ex.bytes_up,
        bytes_out: ex.bytes_down,
        tls_handshake_ms: con.handshake_ms,
        queue_ms: t.connect_started.map_or(0.0, |s| ms(ex.started, s)),
        upstream_connect_ms: t.connect_started.zip(t.tcp_connected).map(|(a, b)| ms(a, b)),
        upstream_tls_ms: t.tcp_connected.zip(t.tls_done).map(|(a, b)| ms(a, b)),
        ttfb_ms: t.response_head.map(|h| ms(ex.started, h)),
        total_ms: ms(ex.started, now),
        reused: ex.reused,
    }
}
