//! One consumer connection: its TLS session, its identity, and the phases it moves through
//! (see ARCHITECTURE.md, "Connection state machine"). Decisions come from `http` and `policy`;
//! this file only sequences them and moves bytes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::UnixTime;
use rustls::{HandshakeKind, ServerConnection};

use super::exchange::Exchange;
use super::tls_io;
use super::upstream::Kept;
use crate::http::answer::{self, Answer, Context, OutcomeId};
use crate::http::head::HeadError;
use crate::http::request::{self, RequestHead};
use crate::policy::identity::Identity;
use crate::policy::refusal::Refusal;
use crate::policy::revocation::Judgement;
use crate::proxy_protocol;
use crate::tls::{
    self,
    verifier::{self, ConsumerVerifier},
};

/// How long a closing connection is drained after our last byte, so that unread input does
/// not turn our close into a reset that destroys the answer in flight.
const LINGER: Duration = Duration::from_secs(2);
/// Input buffer capacity an idle connection may keep (bytes).
const IDLE_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the PROXY protocol v2 header a balancer sends before the TLS bytes.
    ProxyHeader,
    Handshake,
    /// Waiting for or reading a request head.
    Head,
    /// A request is being forwarded and its response returned.
    Exchange,
    /// Our last bytes are queued; then the write side is shut and input drained.
    Closing,
}

pub struct Client {
    pub sock: TcpStream,
    pub tls: ServerConnection,
    pub peer: SocketAddr,
    pub identity: Option<Identity>,
    /// The configuration generation whose TLS config `tls` was made with (its handshake is
    /// verified under that configuration).
    tls_generation: u64,
    /// The last full verification of the chain the consumer presented (rustls keeps the
    /// chain: `tls.peer_certificates()`), for row 8.
    judgement: Option<Judgement>,
    /// Plaintext from the consumer not yet handled (a head, body bytes, pipelined requests).
    pub inbuf: Vec<u8>,
    pub read_ready: bool,
    /// epoll reported the consumer's close or reset (see `tls_io::read`).
    pub peer_closing: bool,
    pub eof: bool,
    pub phase: Phase,
    /// When the current phase (or, in `Head`, the current wait) began.
    pub since: Instant,
    /// When the first byte of the current head arrived.
    pub head_started: Option<Instant>,
    /// How far the head being received has been searched for its end (`request::parse_from`).
    head_scanned: usize,
    /// Requests completed on this connection.
    pub served: u64,
    pub exchange: Option<Box<Exchange>>,
    /// The provider connection its last exchange used, kept for its next request only.
    pub kept: Option<Kept>,
    /// Set once the write side is shut in `Closing`.
    pub shut: bool,
    /// The connection is finished and can be dropped.
    pub done: bool,
    /// Why the TLS handshake was refused (counted against the peer's address, audited).
    pub refused_handshake: Option<rustls::Error>,
    /// The certificate that handshake presented (`tls::verifier` kept it).
    pub refused_certificate: Option<Box<Identity>>,
    /// Its address is past `[limits] refused_handshakes`: only a resumed session is served
    /// (`tls::resumption`).
    pub resumption_only: bool,
    pub accepted: Instant,
    pub handshake_ms: Option<f64>,
}

impl Client {
    /// `proxy_header`: the listener sits behind a balancer speaking PROXY protocol v2.
    /// `generation`: the configuration `tls` was made under.
    pub fn new(
        sock: TcpStream,
        tls: ServerConnection,
        peer: SocketAddr,
        proxy_header: bool,
        generation: u64,
        now: Instant,
    ) -> Client {
        Client {
            sock,
            tls,
            peer,
            identity: None,
            tls_generation: generation,
            judgement: None,
            inbuf: Vec::new(),
            read_ready: true,
            peer_closing: false,
            eof: false,
            phase: if proxy_header {
                Phase::ProxyHeader
            } else {
                Phase::Handshake
            },
            since: now,
            head_started: None,
            head_scanned: 0,
            served: 0,
            exchange: None,
            kept: None,
            shut: false,
            done: false,
            refused_handshake: None,
            refused_certificate: None,
            resumption_only: false,
            accepted: now,
            handshake_ms: None,
        }
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        registry.register(&mut self.sock, token, Interest::READABLE | Interest::WRITABLE)
    }

    /// How many plaintext bytes we are willing to hold from this consumer right now: enough for
    /// a maximal head, and for bodies only while the provider keeps up.
    pub fn read_cap(&self, max_head: usize) -> usize {
        match (&self.phase, &self.exchange) {
            (Phase::Exchange, Some(ex)) if ex.wants_request_body() => {
                if ex.to_upstream.len() < super::exchange::STAGE_LIMIT {
                    super::exchange::STAGE_LIMIT
                } else {
                    0
                }
            }
            _ => max_head + 1,
        }
    }

    /// Reads what the consumer sent; returns whether anything changed.
    pub fn read(&mut self, max_head: usize, now: Instant) -> bool {
        if !self.read_ready || self.eof || self.done {
            return false;
        }
        if self.phase == Phase::ProxyHeader {
            return self.read_proxy_header(now);
        }
        let cap = self.read_cap(max_head);
        if self.inbuf.len() >= cap {
            return false;
        }
        let was_handshaking = self.tls.is_handshaking();
        match tls_io::read(
            &mut self.sock,
            &mut self.tls,
            &mut self.inbuf,
            cap,
            self.peer_closing,
            None,
        ) {
            Ok(outcome) => {
                if outcome.drained {
                    self.read_ready = false;
                }
                if outcome.eof {
                    self.eof = true;
                }
                if self.phase == Phase::Closing {
                    self.inbuf.clear();
                }
                if self.phase == Phase::Head && self.head_started.is_none() && !self.inbuf.is_empty() {
                    self.head_started = Some(now);
                }
                outcome.bytes > 0 || outcome.eof || was_handshaking != self.tls.is_handshaking()
            }
            Err(e) => {
                let presented = tls::verifier::take_refused();
                if self.phase == Phase::Handshake {
                    let certificate = presented
                        .as_ref()
                        .map_or(String::new(), |c| format!("; it presented {}", tls::presented(c)));
                    log::warn!(
                        "tls: handshake from {} refused: {}{certificate}",
                        self.peer,
                        tls::describe(&e)
                    );
                    self.refused_handshake = Some(e.clone());
                    self.refused_certificate = presented.map(Box::new);
                } else {
                    log::warn!("tls: error from {}: {}", self.peer, tls::describe(&e));
                }
                // rustls has queued an alert; send it, then close.
                let _ = tls_io::flush(&mut self.sock, &mut self.tls);
                self.done = true;
                true
            }
        }
    }

    /// Reads the PROXY v2 header, takes the consumer's address from it, and hands the TLS
    /// bytes read along with it to rustls.
    fn read_proxy_header(&mut self, now: Instant) -> bool {
        use std::io::Read;
        let mut chunk = [0u8; 512];
        let room = proxy_protocol::MAX_HEADER
            .saturating_sub(self.inbuf.len())
            .min(chunk.len());
        match self.sock.read(&mut chunk[..room]) {
            Ok(0) => self.eof = true,
            Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.read_ready = false;
                return false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(_) => self.eof = true,
        }
        match proxy_protocol::parse(&self.inbuf) {
            Ok(proxy_protocol::Header::Incomplete) => true,
            Ok(proxy_protocol::Header::Done { consumed, source }) => {
                if let Some(source) = source {
                    self.peer = source;
                }
                let mut rest = &self.inbuf[consumed..];
                while !rest.is_empty() {
                    if self.tls.read_tls(&mut rest).is_err() {
                        self.done = true;
                        break;
                    }
                }
                self.inbuf.clear();
                self.enter(Phase::Handshake, now);
                true
            }
            Err(why) => {
                log::warn!(
                    "proxy protocol: {} (from the balancer at {}): {why}",
                    self.peer,
                    self.peer
                );
                self.done = true;
                true
            }
        }
    }

    /// After the handshake: take the identity once, from the verified certificate.
    pub fn finish_handshake(&mut self, now: Instant) {
        let identity = self
            .tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| Identity::from_certificate(leaf));
        match identity {
            Some(identity) => {
                self.handshake_ms = Some(super::report::ms(self.accepted, now));
                log::debug!(
                    "tls: {} is {} (serial {})",
                    self.peer,
                    identity.subject,
                    identity.serial_hex
                );
                self.identity = Some(identity);
                // A full handshake has just verified the chain under the configuration the
                // connection was accepted with; a resumed one verified nothing, and is judged
                // at its first request.
                if self.tls.handshake_kind() != Some(HandshakeKind::Resumed) {
                    self.judgement = Some(Judgement {
                        generation: self.tls_generation,
                        fault: None,
                    });
                }
                self.enter(Phase::Head, now);
            }
            None => {
                log::warn!("tls: {} presented no usable certificate", self.peer);
                self.done = true;
            }
        }
    }

    /// Row 8's judgement of this connection's chain under the configuration `generation`
    /// (whose client certificate check is `verifier`) at `now` (seconds since the epoch): the
    /// last one while it holds, else the chain is verified again in full.
    pub fn judge(&mut self, verifier: &ConsumerVerifier, generation: u64, now: i64) -> Judgement {
        if let Some(holding) = Judgement::holding(self.judgement, generation) {
            return holding;
        }
        let chain = self.tls.peer_certificates().unwrap_or_default();
        let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
        let fault = verifier.judge(chain, at).err().map(|e| {
            log::info!(
                "tls: {} ({}) fails the certificate check in force: {}",
                self.peer,
                self.identity.as_ref().map_or("no certificate", |i| &i.subject),
                tls::describe(&e)
            );
            verifier::fault(&e)
        });
        let judgement = Judgement { generation, fault };
        self.judgement = Some(judgement);
        judgement
    }

    pub fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.since = now;
        // An idle connection gives back what a large head or body made its buffer grow to.
        if self.inbuf.is_empty() && self.inbuf.capacity() > IDLE_BUFFER {
            self.inbuf = Vec::new();
        }
        // Pipelined bytes already waiting start their head clock now.
        self.head_started = (!self.inbuf.is_empty()).then_some(now);
        self.head_scanned = 0;
    }

    /// Tries to take a complete request head off the input.
    pub fn take_head(&mut self, max_head: usize) -> Result<Option<RequestHead>, Refusal> {
        if self.inbuf.is_empty() {
            return Ok(None);
        }
        match request::parse_from(&self.inbuf, max_head, &mut self.head_scanned) {
            Ok(Some(head)) => {
                self.inbuf.drain(..head.len());
                self.head_scanned = 0;
                Ok(Some(head))
            }
            Ok(None) => Ok(None),
            Err(HeadError::TooLarge) => Err(Refusal::HeadTooLarge),
            Err(HeadError::Malformed(why)) => {
                log::info!("http: {} sent a malformed head: {why}", self.peer);
                Err(Refusal::InvalidRequest)
            }
        }
    }

    /// Queues one of the proxy's own answers. `close` forces the connection closed after it
    /// (e.g. a request body was left unread).
    /// Queues our own answer for `refusal`, its `OperationOutcome` under `id` (the one its
    /// audit record names).
    pub fn answer(&mut self, refusal: &Refusal, id: OutcomeId, ctx: Context<'_>, close: bool, now: Instant) {
        let mut a: Answer = refusal.answer(id);
        a.close |= close;
        let mut out = Vec::with_capacity(512);
        answer::render(&a, ctx, &mut out);
        self.write_plaintext(&out);
        if a.close {
            self.start_closing(now);
        } else {
            self.enter(Phase::Head, now);
        }
    }

    pub fn write_plaintext(&mut self, bytes: &[u8]) {
        use std::io::Write;
        // Answers are small and written only when nothing else is queued, so rustls takes
        // them whole; a failure here means the session is already broken.
        if self.tls.writer().write_all(bytes).is_err() {
            self.done = true;
        }
    }

    pub fn start_closing(&mut self, now: Instant) {
        if self.phase != Phase::Closing {
            self.tls.send_close_notify();
            self.enter(Phase::Closing, now);
        }
    }

    /// Sends queued TLS records; in `Closing`, shuts the write side once they are out.
    /// Returns whether anything went out (see `tls_io::flush`).
    pub fn flush(&mut self) -> bool {
        if self.done {
            return false;
        }
        let Ok(written) = tls_io::flush(&mut self.sock, &mut self.tls) else {
            self.done = true;
            return true;
        };
        if self.phase == Phase::Closing && !self.shut && !self.tls.wants_write() {
            tls_io::shutdown_write(&self.sock);
            self.shut = true;
        }
        if self.phase == Phase::Closing && self.shut && self.eof {
            self.done = true;
        }
        written > 0
    }

    /// The deadline of the current phase, from `[limits]` and `[upstream]` (SPEC row 2).
    pub fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        match self.phase {
            Phase::ProxyHeader | Phase::Handshake => Some(self.since + header_timeout),
            Phase::Head if self.inbuf.is_empty() && self.served > 0 => Some(self.since + idle_timeout),
            Phase::Head => Some(self.head_started.unwrap_or(self.since) + header_timeout),
            Phase::Exchange => self.exchange.as_ref().map(|ex| ex.deadline),
            Phase::Closing => Some(self.since + LINGER),
        }
    }
}
