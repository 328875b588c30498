//! One request in flight: forwarding its head and body to the provider and streaming the
//! provider's response back, with the failure answers of SPEC section 4 rows 13, 17 and 18.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::Shared;
use super::client::{Client, Phase};
use super::report;
use super::tls_io;
use super::upstream::{Owner, Upstream};
use super::worker::{Cx, upstream_token};
use crate::audit::{Event, RequestFacts};
use crate::http::answer::{self, Context, OutcomeId};
use crate::http::body::BodyReader;
use crate::http::forward::{self, Persistence};
use crate::http::head::trim_ows;
use crate::http::request::{BodyFraming, RequestHead, Version};
use crate::http::response::{self, ResponseFraming};
use crate::policy::Admission;
use crate::policy::refusal::Refusal;
use crate::policy::throttle::{self, Permit};

/// `X-Rate-Limit-Limit`, `-Remaining` and `-Reset` for an admitted request's answer (row 14).
pub type RateFields = [(&'static str, u64); 3];

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
    pub upstream: Option<Upstream>,
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

/// Begins forwarding an admitted request.
#[allow(clippy::too_many_arguments)]
pub fn start(
    c: &mut Client,
    key: usize,
    cx: &mut Cx,
    head: &RequestHead,
    admission: Admission,
    permit: Permit,
    rate_fields: RateFields,
    now: Instant,
) {
    let shared = cx.shared.clone();
    let mut to_upstream = cx.buffers.take();
    to_upstream.reserve(head.len() + 96);
    let forwarded_for = shared.config.server.forwarded.then_some(c.peer);
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
        c.write_plaintext(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let facts = Arc::new(report::facts(c, Some(head)));
    let ticket = cx.audit_durable(
        Event::Req {
            request: facts.clone(),
        },
        key,
    );
    let ex = Exchange {
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
    };
    c.exchange = Some(Box::new(ex));
    c.enter(Phase::Exchange, now);
    connect(c, key, cx, true, now);
}

/// Finds a provider connection: a pooled one if allowed, else a new one (via the resolver
/// unless the provider has a fixed address).
fn connect(c: &mut Client, key: usize, cx: &mut Cx, allow_pooled: bool, now: Instant) {
    let Some(ex) = c.exchange.as_mut() else { return };
    ex.timings = Timings {
        connect_started: Some(now),
        ..Timings::default()
    };
    let route_index = ex.route;
    // Only the connection this consumer connection kept from its own last request (see
    // `upstream::Kept`). Anything the provider sent, or a close, while it was kept is read by
    // `Worker::upstream_event`, which drops it, but that event may still be queued behind this
    // request's: so it is checked once more here, one recv(2) that finds nothing.
    if let Some(kept) = c.kept.take()
        && allow_pooled
        && kept.fits(
            route_index,
            &ex.shared.client_tls,
            now,
            ex.shared.config.upstream.pool_idle_timeout,
        )
    {
        let mut up = kept.up;
        if up.still_idle() {
            cx.owners.set(up.id(), Owner::Consumer(key));
            ex.upstream = Some(up);
            ex.reused = true;
            ex.timings.tcp_connected = Some(now);
            ex.timings.tls_done = Some(now);
            ex.awaiting_handshake = false;
            ex.deadline = now + wait_limit(&ex.shared, ex.request_body.is_some());
            return;
        }
    }
    ex.reused = false;
    ex.awaiting_handshake = true;
    ex.connect_by = now + ex.shared.config.upstream.connect_timeout;
    ex.deadline = ex.connect_by;
    let route = &ex.shared.routes[route_index];
    if route.fixed_addrs.is_empty() {
        let ticket = cx.ask_resolver(&route.host, route.port, key);
        ex.ticket = Some(ticket);
    } else {
        let addrs = route.fixed_addrs.clone();
        open(c, key, cx, addrs, now);
    }
}

/// Opens a new provider connection to the first of `addrs` (the fixed addresses or the
/// resolver's answer) that takes a connect; the others are kept for `connect_failed`.
pub fn open(c: &mut Client, key: usize, cx: &mut Cx, mut addrs: Vec<SocketAddr>, now: Instant) {
    let Some(ex) = c.exchange.as_mut() else { return };
    ex.ticket = None;
    let route_index = ex.route;
    let route = &ex.shared.routes[route_index];
    let mut why = String::from("no address");
    // Tried from the front; few enough that removing the first is cheaper than a deque.
    while !addrs.is_empty() {
        let addr = addrs.remove(0);
        let opened = Upstream::connect(
            addr,
            ex.shared.client_tls.clone(),
            route.server_name.clone(),
            route_index,
        )
        .and_then(|mut up| {
            up.register(&cx.registry, upstream_token(up.id()))
                .map_err(|e| e.to_string())?;
            cx.owners.set(up.id(), Owner::Consumer(key));
            Ok(up)
        });
        match opened {
            Ok(up) => {
                ex.upstream = Some(up);
                // Each address gets an equal share of what is left of `connect_timeout`, so
                // one that never answers leaves time for the others.
                let left = ex.connect_by.saturating_duration_since(now);
                ex.deadline = now + left / (addrs.len() as u32 + 1);
                ex.untried = addrs;
                return;
            }
            Err(e) => {
                log::warn!("upstream: {}: {e}", ex.target());
                why = e;
            }
        }
    }
    provider_failed(c, key, cx, &why, now);
}

/// The TCP connect to the provider failed (refused, unreachable) or its share of the connect
/// time ran out: nothing reached the provider, so the next address, if there is one, gets the
/// same request within what is left of `connect_timeout`.
pub fn connect_failed(c: &mut Client, key: usize, cx: &mut Cx, why: &str, now: Instant) {
    let Some(ex) = c.exchange.as_mut() else { return };
    if ex.untried.is_empty() {
        provider_failed(c, key, cx, why, now);
        return;
    }
    log::warn!("upstream: {}: {why}; trying the next address", ex.target());
    ex.upstream = None;
    let addrs = std::mem::take(&mut ex.untried);
    open(c, key, cx, addrs, now);
}

/// The resolver could not find the provider.
pub fn unresolved(c: &mut Client, key: usize, cx: &mut Cx, why: &str, now: Instant) {
    provider_failed(c, key, cx, &format!("resolve: {why}"), now);
}

/// Moves bytes one step in every direction; returns whether anything changed.
pub fn pump(c: &mut Client, key: usize, cx: &mut Cx, now: Instant) -> bool {
    let Some(ex) = c.exchange.as_mut() else {
        return false;
    };
    if c.eof {
        consumer_gone(c, cx, now);
        return true;
    }
    let mut progress = false;

    // The consumer's body, as far as its framing goes and the provider keeps up.
    if let Some(reader) = ex.request_body.as_mut()
        && !c.inbuf.is_empty()
        && ex.to_upstream.len() < STAGE_LIMIT
    {
        let take = c.inbuf.len().min(STAGE_LIMIT - ex.to_upstream.len());
        // Staged as framed, less a chunked body's trailer fields (`BodyReader::relay`).
        match reader.relay(&c.inbuf[..take], &mut ex.to_upstream) {
            Ok(p) => {
                c.inbuf.drain(..p.consumed);
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
                    return request_failed(c, cx, Refusal::PayloadTooLarge, now);
                }
            }
            Err(e) => {
                log::info!("http: {} sent a malformed body: {e}", c.peer);
                return request_failed(c, cx, Refusal::InvalidRequest, now);
            }
        }
    }

    // The provider's side: send what is staged, read what came back.
    let Some(up) = ex.upstream.as_mut() else {
        return progress;
    };
    if !up.connected {
        return progress;
    }
    ex.timings.tcp_connected.get_or_insert(now);
    // Nothing goes to the provider before its `req` record is durable (SPEC section 5).
    if ex.audited && tls_io::stage(&mut up.tls, &mut ex.to_upstream) > 0 {
        ex.timings.forwarded.get_or_insert(now);
        progress = true;
    }
    match tls_io::flush(&mut up.sock, &mut up.tls) {
        Ok(written) => progress |= written > 0,
        Err(e) => {
            provider_failed(c, key, cx, &format!("write: {e}"), now);
            return true;
        }
    }
    if ex.awaiting_handshake && !up.tls.is_handshaking() {
        ex.awaiting_handshake = false;
        ex.timings.tls_done = Some(now);
        ex.deadline = now + wait_limit(&ex.shared, ex.request_body.is_some());
        progress = true;
    }
    if up.read_ready && ex.to_client.len() < STAGE_LIMIT {
        match tls_io::read(
            &mut up.sock,
            &mut up.tls,
            &mut up.inbuf,
            STAGE_LIMIT,
            up.peer_closing,
            Some(&mut up.framing),
        ) {
            Ok(o) => {
                up.read_ready = !o.drained;
                up.eof |= o.eof;
                up.close_notify |= o.close_notify;
                progress |= o.bytes > 0 || o.eof;
            }
            Err(e) => {
                provider_failed(c, key, cx, &format!("tls: {}", crate::tls::describe(&e)), now);
                return true;
            }
        }
    }
    // Head and body in one go when both are in: one TLS record and one write to the consumer.
    while response_step(c, key, cx, now) {
        progress = true;
    }

    // What the provider sent, on to the consumer.
    let Some(ex) = c.exchange.as_mut() else {
        return true;
    };
    if !ex.to_client.is_empty() {
        progress |= tls_io::stage(&mut c.tls, &mut ex.to_client) > 0;
    }
    if matches!(ex.response, ResponseState::Done) && ex.to_client.is_empty() {
        // The answer leaves before the bookkeeping (records, pool) that follows it.
        c.flush();
        finish(c, cx, now);
        progress = true;
    }
    progress
}

fn response_step(c: &mut Client, key: usize, cx: &mut Cx, now: Instant) -> bool {
    let Some(ex) = c.exchange.as_mut() else {
        return false;
    };
    // The provider's input is read a stage (64 KiB) at a time: a head that fills a stage
    // without ending can never be read whole, and would wait for `response_timeout` instead
    // of being refused.
    let max_head = ex.shared.config.limits.max_header_bytes.min(STAGE_LIMIT - 1);
    let Some(up) = ex.upstream.as_mut() else {
        return false;
    };
    match &mut ex.response {
        ResponseState::AwaitingHead => {
            let head = match response::parse(&up.inbuf, max_head, ex.facts.text.method()) {
                Ok(Some(head)) => head,
                Ok(None) if up.eof => {
                    let why = if up.inbuf.is_empty() {
                        "closed without answering"
                    } else {
                        "closed mid-head"
                    };
                    provider_failed(c, key, cx, why, now);
                    return true;
                }
                Ok(None) => return false,
                Err(e) => {
                    provider_failed(c, key, cx, &format!("invalid response head: {e}"), now);
                    return true;
                }
            };
            up.inbuf.drain(..head.len());
            if head.is_interim() {
                if head.status == 101 {
                    provider_failed(c, key, cx, "provider switched protocols", now);
                    return true;
                }
                // HTTP/1.0 consumers do not understand interim answers.
                let repeat_of_ours = head.status == 100 && ex.continue_sent;
                if !ex.http10 && !repeat_of_ours {
                    forward::write_response(&mut ex.to_client, &head, Persistence::Default, false, &[]);
                }
                return true;
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
            cx.runtime
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
            true
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
                        true
                    }
                    Err(e) => {
                        log::warn!("upstream: provider broke its response framing: {e}");
                        abort(c, cx, now);
                        true
                    }
                }
            } else if up.inbuf.is_empty() && up.eof {
                match reader.finish_at_eof(up.close_notify) {
                    Ok(()) => {
                        ex.provider_keeps_alive = false;
                        ex.response = ResponseState::Done;
                    }
                    Err(_) => {
                        log::warn!("upstream: provider closed mid-response (or without close_notify)");
                        abort(c, cx, now);
                    }
                }
                true
            } else {
                false
            }
        }
        ResponseState::Done => false,
    }
}

/// The response is out: keep the provider connection for this consumer connection's next
/// request if it is clean, report, and get ready for that request.
fn finish(c: &mut Client, cx: &mut Cx, now: Instant) {
    let Some(mut ex) = c.exchange.take() else { return };
    let request_complete = ex.request_body.is_none() && ex.to_upstream.is_empty();
    let consumer_stays = !ex.close_client && request_complete;
    ended(c, cx, &ex, ex.status, None, now);
    give_back_buffers(cx, &mut ex);
    if let Some(up) = ex.upstream
        && consumer_stays
        && ex.provider_keeps_alive
        && up.is_clean()
    {
        c.kept = cx.keep(up, &ex.shared, now);
    }
    c.served += 1;
    if !consumer_stays {
        c.start_closing(now);
    } else {
        c.enter(Phase::Head, now);
    }
}

/// The exchange's byte buffers go back to the worker for the next request.
fn give_back_buffers(cx: &mut Cx, ex: &mut Exchange) {
    for buf in [
        std::mem::take(&mut ex.to_upstream),
        std::mem::take(&mut ex.to_client),
        ex.replay.take().unwrap_or_default(),
    ] {
        cx.buffers.give(buf);
    }
}

/// The audit's answer about this exchange's `req` record (row 16).
pub fn audited(c: &mut Client, cx: &mut Cx, seq: Option<u64>, now: Instant) {
    let Some(ex) = c.exchange.as_mut() else { return };
    ex.audit_ticket = None;
    match seq {
        Some(seq) => {
            ex.audited = true;
            ex.req_seq = Some(seq);
        }
        None => {
            log::error!(
                "audit: the req record of {} is not durable; refusing",
                ex.facts.text.trace_id().unwrap_or("-")
            );
            // No `req` was written, so no `res` either: the refusal is a `deny`.
            let refusal = Refusal::AuditUnavailable;
            let outcome_id = cx.outcome_id();
            cx.audit(Event::Deny {
                request: ex.facts.clone(),
                status: refusal.status(),
                token: refusal.token(),
                refusals: 1,
                outcome_id,
            });
            cx.runtime.metrics.request(
                refusal.status(),
                Some(&refusal.token()),
                now.saturating_duration_since(ex.started),
            );
            let Some(ex) = c.exchange.take() else { return };
            c.served += 1;
            c.answer(
                &refusal,
                outcome_id,
                ex.context(),
                ex.request_body.is_some() || !ex.keep_alive,
                now,
            );
        }
    }
}

/// Rows 17 and 18 before the response started; a cut-off response after.
pub fn provider_failed(c: &mut Client, key: usize, cx: &mut Cx, why: &str, now: Instant) {
    let Some(ex) = c.exchange.as_mut() else { return };
    let target = ex.target().to_string();
    log::warn!("upstream: {target}: {why}");
    let dead = ex.upstream.take();
    if ex.response_started {
        abort(c, cx, now);
        return;
    }
    // A pooled connection the provider had already closed: try once more on a new one.
    let nothing_received = dead.as_ref().is_none_or(|up| up.inbuf.is_empty());
    if ex.reused && nothing_received && ex.replay.is_some() && restage(ex) {
        // Once only: a second failure is the provider's.
        if let Some(spent) = ex.replay.take() {
            cx.buffers.give(spent);
        }
        connect(c, key, cx, false, now);
        return;
    }
    respond_with(c, cx, Refusal::ProviderFailed { target }, false, now);
}

/// Before the request moves to another provider connection (a pooled one found dead, or one
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
pub fn timed_out(c: &mut Client, key: usize, cx: &mut Cx, now: Instant) {
    let Some(ex) = c.exchange.as_mut() else { return };
    if ex.response_started {
        log::warn!("upstream: {}: response stalled", ex.target());
        abort(c, cx, now);
    } else if ex.awaiting_handshake {
        if ex.upstream.is_some() && !ex.untried.is_empty() && restage(ex) {
            connect_failed(c, key, cx, "connect timeout", now);
            return;
        }
        ex.replay = None;
        provider_failed(c, key, cx, "connect timeout", now);
    } else if ex.request_body.is_some() {
        // The consumer stopped sending its body: the provider never had the whole request.
        log::debug!("{}: request body stalled", c.peer);
        ex.upstream = None;
        respond_with(c, cx, Refusal::RequestTimeout, true, now);
    } else {
        let target = ex.target().to_string();
        log::warn!("upstream: {target}: no response head within response_timeout");
        ex.upstream = None;
        respond_with(c, cx, Refusal::ProviderTimeout { target }, false, now);
    }
}

/// Answers the exchange with one of our own answers and ends it; the connection closes when
/// asked, when the consumer's body was not read to its end, or when it asked for it.
fn respond_with(c: &mut Client, cx: &mut Cx, refusal: Refusal, close: bool, now: Instant) {
    let Some(mut ex) = c.exchange.take() else { return };
    let unread_body = ex.request_body.is_some();
    let outcome_id = cx.outcome_id();
    ex.answered_with = Some(outcome_id);
    ended(c, cx, &ex, refusal.status(), Some(refusal.token()), now);
    give_back_buffers(cx, &mut ex);
    c.served += 1;
    c.answer(
        &refusal,
        outcome_id,
        ex.context(),
        close || unread_body || !ex.keep_alive,
        now,
    );
}

/// The consumer's request broke a rule while its body streamed (rows 3 and 13). Part of it
/// may have reached the provider, whose connection is dropped: the connection closes too.
fn request_failed(c: &mut Client, cx: &mut Cx, refusal: Refusal, now: Instant) -> bool {
    if c.exchange.as_ref().is_some_and(|ex| ex.response_started) {
        abort(c, cx, now);
    } else {
        respond_with(c, cx, refusal, true, now);
    }
    true
}

/// The consumer went away before its answer was complete: SPEC section 4's 499. Also how a
/// connection dropped for a broken TLS session or a failed write ends its exchange.
pub fn consumer_gone(c: &mut Client, cx: &mut Cx, now: Instant) {
    if let Some(ex) = c.exchange.take() {
        ended(c, cx, &ex, 499, None, now);
    }
    c.done = true;
}

/// SIGTERM's `drain_timeout` ran out with this exchange in flight: the proxy stops without
/// answering (or mid-answer). Its `res` record says so, with the status the consumer was
/// given (503 if none) and the token `DRAIN_TIMEOUT`, so no `req` is left without a `res`.
pub fn drain_expired(c: &mut Client, cx: &mut Cx, now: Instant) {
    if let Some(ex) = c.exchange.take() {
        let status = if ex.response_started { ex.status } else { 503 };
        ended(c, cx, &ex, status, Some("DRAIN_TIMEOUT".to_string()), now);
    }
    c.done = true;
}

/// Nothing sensible can be said on this connection any more: close it. The consumer got a
/// truncated answer; the record keeps the status it started with.
fn abort(c: &mut Client, cx: &mut Cx, now: Instant) {
    if let Some(ex) = c.exchange.take() {
        ended(c, cx, &ex, ex.status, None, now);
    }
    c.done = true;
}

/// Every exchange ends here, whichever way: its `res` record, its transactions line, a log
/// line.
fn ended(c: &Client, cx: &mut Cx, ex: &Exchange, status: u16, token: Option<String>, now: Instant) {
    let text = ex.facts.text.get();
    log::debug!(
        "{} {}->{} {} {} {} up={} down={} reused={} {}ms",
        c.peer,
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
    cx.runtime.metrics.request(
        status,
        token.as_deref(),
        now.saturating_duration_since(ex.started),
    );
    cx.transaction(report::transaction(c, ex, status, now));
    cx.audit(report::res(ex, status, token, now));
}
