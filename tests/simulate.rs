//! Deterministic simulation of the proxy core (issue 19): `Session`s, the same type the
//! workers run, driven against simulated consumers and providers over in-memory TCP, with real
//! rustls on every end and the real HTTP and policy code, by a seeded scheduler. The scheduler
//! chooses the order of everything: which bytes arrive when and in what pieces, which
//! readiness event is delivered next, when the audit answers (and whether it fails), when a
//! connect completes (or is refused), when a side resets, how a provider misbehaves, and when
//! the clock moves.
//!
//! After every step it checks the invariants; at every quiescent point, liveness; at the end
//! of a seed, the audit's books. A failing seed prints itself and replays exactly:
//!     SSP_SIM_FIRST=<seed> SSP_SIM_SEEDS=1 cargo test --release --test simulate -- --nocapture
//! `scripts/simulate [SEEDS]` runs many.

mod common;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{CONSUMER_A, CONSUMER_B, INTERACTION, JWT, Options, PROVIDER_ASID, Setup, Who, pki};
use rustls::pki_types::ServerName;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use ssp::audit::{Event, RequestFacts};
use ssp::http::body::BodyReader;
use ssp::http::request::{self, BodyFraming};
use ssp::http::response::{self, ResponseFraming};
use ssp::metrics::Metrics;
use ssp::policy::throttle::{HandshakeFailures, RefusalStrikes};
use ssp::proxy::Shared;
use ssp::proxy::cx::{Action, Counters, Cx};
use ssp::proxy::session::{Input, Session};
use ssp::proxy::wire::{Io, Pipe, Socket, Wire};

// ---------------------------------------------------------------------------------------
// The seeded choices.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    /// A size in 1..=max, most often small, sometimes all of it.
    fn piece(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 => max,
            1 => 1 + self.below(max.min(8)),
            _ => 1 + self.below(max),
        }
    }
}

// ---------------------------------------------------------------------------------------
// In-memory TCP: each direction holds bytes in flight (sent, not yet arrived) and bytes
// arrived (readable). The scheduler moves pieces from one to the other. A reader gets all
// that has arrived up to its buffer, as a kernel socket does: a short read means empty.

#[derive(Default)]
struct Direction {
    in_flight: VecDeque<u8>,
    arrived: VecDeque<u8>,
    fin_sent: bool,
    fin_arrived: bool,
    /// The sender reset the connection: after the bytes in flight, the reset arrives.
    rst_sent: bool,
    rst_arrived: bool,
    /// A write was refused for want of room: the writer is owed an event when room comes.
    writer_blocked: bool,
}

impl Direction {
    fn room(&self, window: usize) -> usize {
        window.saturating_sub(self.in_flight.len() + self.arrived.len())
    }

    fn can_transmit(&self) -> bool {
        !self.in_flight.is_empty()
            || (self.fin_sent && !self.fin_arrived)
            || (self.rst_sent && !self.rst_arrived)
    }
}

struct Link {
    to_proxy: Direction,
    from_proxy: Direction,
    reset: bool,
    /// The proxy's side is owed a readiness event.
    event: bool,
    /// The proxy dropped its socket.
    proxy_closed: bool,
    window: usize,
    /// A provider's link: it has answered every request it was sent.
    provider_idle: bool,
    /// The proxy has written since the provider last became idle (a next request began).
    written_since_idle: bool,
    /// What the proxy did on this link that it must not.
    violation: Option<String>,
}

type LinkRef = Rc<RefCell<Link>>;

fn link(window: usize) -> LinkRef {
    Rc::new(RefCell::new(Link {
        to_proxy: Direction::default(),
        from_proxy: Direction::default(),
        reset: false,
        event: false,
        proxy_closed: false,
        window,
        provider_idle: false,
        written_since_idle: false,
        violation: None,
    }))
}

/// Moves a piece of one direction's bytes in flight to its arrived bytes.
fn transmit(link: &LinkRef, toward_proxy: bool, rng: &mut Rng) {
    let mut l = link.borrow_mut();
    let dir = if toward_proxy {
        &mut l.to_proxy
    } else {
        &mut l.from_proxy
    };
    if !dir.in_flight.is_empty() {
        let n = rng.piece(dir.in_flight.len());
        let (a, b) = dir.in_flight.as_slices();
        let from_a = n.min(a.len());
        dir.arrived.extend(a[..from_a].iter());
        dir.arrived.extend(b[..n - from_a].iter());
        dir.in_flight.drain(..n);
    } else if dir.rst_sent && !dir.rst_arrived {
        dir.rst_arrived = true;
    } else if dir.fin_sent {
        dir.fin_arrived = true;
    }
    if toward_proxy {
        l.event = true;
    }
}

/// Moves the first `out.len()` bytes of `queue` into `out` (slice copies, not byte by byte:
/// a seed moves hundreds of kilobytes).
fn take_front(queue: &mut VecDeque<u8>, out: &mut [u8]) {
    let n = out.len();
    let (a, b) = queue.as_slices();
    let from_a = n.min(a.len());
    out[..from_a].copy_from_slice(&a[..from_a]);
    out[from_a..].copy_from_slice(&b[..n - from_a]);
    queue.drain(..n);
}

/// The proxy's end of a link, as its `Wire` sees a socket.
struct ProxyEnd(LinkRef);

impl Read for ProxyEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut l = self.0.borrow_mut();
        if l.reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let dir = &mut l.to_proxy;
        // What arrived before a reset is read first, then the reset, as on Linux.
        if dir.arrived.is_empty() {
            return if dir.rst_arrived {
                Err(ErrorKind::ConnectionReset.into())
            } else if dir.fin_arrived {
                Ok(0)
            } else {
                Err(ErrorKind::WouldBlock.into())
            };
        }
        let n = dir.arrived.len().min(buf.len());
        take_front(&mut dir.arrived, &mut buf[..n]);
        Ok(n)
    }
}

impl Write for ProxyEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut l = self.0.borrow_mut();
        if l.reset || l.to_proxy.rst_arrived {
            return Err(ErrorKind::ConnectionReset.into());
        }
        if l.from_proxy.fin_sent {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let room = l.from_proxy.room(l.window);
        if room == 0 {
            l.from_proxy.writer_blocked = true;
            return Err(ErrorKind::WouldBlock.into());
        }
        // A kept provider connection must hold no unread byte when it carries a request: bytes
        // that had arrived before the request was sent would be read as its answer.
        // (Only its first write: after that, bytes that arrive may be an early answer, or
        // late ones no reader could tell from it, as on a direct connection.)
        if l.provider_idle && !l.written_since_idle && !l.to_proxy.arrived.is_empty() && l.violation.is_none()
        {
            l.violation = Some(format!(
                "a request went to a provider connection with {} unread bytes",
                l.to_proxy.arrived.len()
            ));
        }
        let n = room.min(buf.len());
        l.from_proxy.in_flight.extend(&buf[..n]);
        if l.provider_idle {
            l.written_since_idle = true;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for ProxyEnd {
    fn shutdown_write(&self) {
        self.0.borrow_mut().from_proxy.fin_sent = true;
    }
}

impl Drop for ProxyEnd {
    /// Closing a socket with input unread resets the connection, as Linux does; else a FIN.
    fn drop(&mut self) {
        let mut l = self.0.borrow_mut();
        l.proxy_closed = true;
        if !l.to_proxy.arrived.is_empty() || !l.to_proxy.in_flight.is_empty() {
            l.reset = true;
        } else {
            l.from_proxy.fin_sent = true;
        }
    }
}

/// The simulated peer's end of a link (a consumer or a provider).
struct PeerEnd(LinkRef);

impl Read for PeerEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut l = self.0.borrow_mut();
        if l.reset {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let dir = &mut l.from_proxy;
        if dir.arrived.is_empty() {
            return if dir.fin_arrived {
                Ok(0)
            } else {
                Err(ErrorKind::WouldBlock.into())
            };
        }
        let n = dir.arrived.len().min(buf.len());
        take_front(&mut dir.arrived, &mut buf[..n]);
        if dir.writer_blocked {
            // Room again: epoll reports the socket writable.
            dir.writer_blocked = false;
            l.event = true;
        }
        Ok(n)
    }
}

impl Write for PeerEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut l = self.0.borrow_mut();
        if l.reset || l.proxy_closed || l.to_proxy.rst_sent {
            return Err(ErrorKind::ConnectionReset.into());
        }
        let room = l.to_proxy.room(l.window);
        if room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        l.to_proxy.in_flight.extend(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hands plaintext to rustls as it takes it and its records to the link as it has room.
fn write_out<C, D>(tls: &mut C, pending: &mut Vec<u8>, end: &mut PeerEnd)
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
{
    loop {
        let taken = if pending.is_empty() {
            0
        } else {
            tls.writer().write(pending).unwrap_or(0)
        };
        pending.drain(..taken);
        let mut wrote = false;
        while tls.wants_write() {
            match tls.write_tls(end) {
                Ok(n) if n > 0 => wrote = true,
                _ => break,
            }
        }
        if taken == 0 && !wrote {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The proxy side: sessions and their pipes.

struct Pipes {
    consumer: Wire<ProxyEnd>,
    providers: Vec<(u64, Wire<ProxyEnd>, LinkRef)>,
}

impl Io for Pipes {
    fn consumer(&mut self) -> &mut dyn Pipe {
        &mut self.consumer
    }

    fn provider(&mut self, id: u64) -> Option<&mut dyn Pipe> {
        self.providers
            .iter_mut()
            .find(|(i, ..)| *i == id)
            .map(|(_, wire, _)| wire as &mut dyn Pipe)
    }
}

struct Proxied {
    session: Session,
    pipes: Pipes,
    link: LinkRef,
}

// ---------------------------------------------------------------------------------------
// Simulated consumers.

/// How a simulated provider behaves toward one consumer connection's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers each request once it is all read.
    Prompt,
    /// Answers as soon as the head is read, before the body.
    Early,
    /// Answers, then sends the answer again (bytes nobody asked for).
    Doubled,
    /// Answers with something that is not HTTP.
    Malformed,
    /// Closes without answering.
    Closes,
    /// Never answers: only the clock ends the exchange.
    Silent,
    /// Starts its answer, then resets the connection.
    ResetsMidAnswer,
}

struct Planned {
    trace: String,
    method: &'static str,
    bytes: Vec<u8>,
    /// Bytes actually sent (less than `bytes` when the consumer stalls its body).
    send: usize,
}

#[derive(Debug)]
enum Got {
    Answer { status: u16 },
    Cut,
}

struct ConsumerSim {
    who: Who,
    tls: ClientConnection,
    link: LinkRef,
    plan: VecDeque<Planned>,
    /// The request awaiting its answer: its trace id and method.
    current: Option<(String, &'static str)>,
    inbuf: Vec<u8>,
    /// Plaintext not yet taken by rustls (it holds a bounded amount).
    pending: Vec<u8>,
    /// Every trace id this connection sent.
    mine: HashSet<String>,
    behaviour: Behaviour,
    /// It will reset its connection after this many steps.
    reset_after: Option<usize>,
    stalls: bool,
    steps: usize,
    closed: bool,
    eof: bool,
    done: bool,
    results: Vec<(String, Got)>,
    /// Once an answer says `Connection: close`, nothing more is sent.
    closing: bool,
}

impl ConsumerSim {
    /// Whether its current request should be answered without the clock moving.
    fn expects_prompt_answer(&self) -> bool {
        self.current.is_some()
            && !self.stalls
            && self.reset_after.is_none()
            && !matches!(self.behaviour, Behaviour::Silent)
    }
}

// ---------------------------------------------------------------------------------------
// Simulated providers.

struct ProviderSim {
    tls: ServerConnection,
    link: LinkRef,
    behaviour: Behaviour,
    inbuf: Vec<u8>,
    /// The request being read: its trace id and body reader.
    reading: Option<(String, Option<BodyReader>, bool)>,
    /// Plaintext not yet taken by rustls.
    pending: Vec<u8>,
    /// The answer a `Doubled` provider owes a second time.
    last_answer: Option<Vec<u8>>,
    dead: bool,
    /// Requests it has answered.
    answered: usize,
    answer_size: usize,
    consumer: usize,
}

// ---------------------------------------------------------------------------------------
// The world of one seed.

struct World {
    seed: u64,
    rng: Rng,
    cx: Cx,
    start: Instant,
    now: Instant,
    proxied: Vec<Option<Proxied>>,
    consumers: Vec<ConsumerSim>,
    providers: HashMap<u64, ProviderSim>,
    /// Connects the scheduler has yet to complete: (session, id, refused).
    connects: Vec<(usize, u64, bool)>,
    /// `req` records awaiting durability: (session, ticket, facts).
    audit_waits: Vec<(usize, u64, Arc<RequestFacts>)>,
    /// Trace ids whose `req` record is durable.
    durable: HashSet<String>,
    reqs: Vec<(Arc<RequestFacts>, Option<u64>)>,
    records: Vec<Event>,
    provider_config: Arc<ServerConfig>,
    trace_count: u64,
    steps: usize,
    log: Vec<String>,
    shared: Arc<Shared>,
    /// Some seeds stop the proxy: at the first step a stop is announced
    /// (`[server] stop_delay`), at the second SIGTERM's drain begins; the drain runs out
    /// (`Input::Stop`) when nothing else can happen.
    stop: Option<(usize, usize)>,
    draining: bool,
    /// Sessions that stopped at their round limit with work left.
    busy: Vec<usize>,
}

const MAX_STEPS: usize = 60_000;
/// Plaintext a session may hold: a stage each way, the provider's stage, a maximal head.
const BUFFER_BOUND: usize = 4 * 64 * 1024 + 64 * 1024;

impl World {
    fn new(seed: u64, fixture: &Fixture) -> World {
        let mut rng = Rng(seed);
        let counters = Counters {
            metrics: Metrics::new(),
            handshake_failures: Arc::new(HandshakeFailures::new(None)),
            refusal_strikes: Arc::new(RefusalStrikes::new(None)),
            started: fixture.start,
        };
        let mut cx = Cx::new(fixture.shared.clone(), 0, counters);
        cx.wall = fixture.wall;
        // Each seed has its own hour on the clock: state the configuration keeps between
        // seeds (the rate limiters' arrival times) is then always in a seed's past, and a seed
        // run alone replays exactly as it ran among others.
        let start = fixture.start + Duration::from_secs(3600 * seed);
        let mut world = World {
            seed,
            cx,
            start,
            now: start,
            proxied: Vec::new(),
            consumers: Vec::new(),
            providers: HashMap::new(),
            connects: Vec::new(),
            audit_waits: Vec::new(),
            durable: HashSet::new(),
            reqs: Vec::new(),
            records: Vec::new(),
            provider_config: fixture.provider.clone(),
            trace_count: 0,
            steps: 0,
            log: Vec::new(),
            shared: fixture.shared.clone(),
            rng: Rng(0),
            stop: None,
            draining: false,
            busy: Vec::new(),
        };
        if rng.percent(15) {
            let announce = rng.below(400);
            world.stop = Some((announce, announce + rng.below(200)));
        }
        let connections = 1 + rng.below(3);
        for _ in 0..connections {
            world.add_consumer(&mut rng, fixture);
        }
        world.rng = rng;
        world
    }

    fn add_consumer(&mut self, rng: &mut Rng, fixture: &Fixture) {
        let who = if rng.percent(85) { CONSUMER_A } else { CONSUMER_B };
        let window = [512, 4096, 16 * 1024, 96 * 1024, 256 * 1024][rng.below(5)];
        let l = link(window);
        let peer: SocketAddr = format!("10.0.0.{}:{}", 1 + self.consumers.len(), 40000 + rng.below(1000))
            .parse()
            .expect("address");
        let session = Session::accept(&self.cx, peer, false, self.now).expect("session");
        let index = self.proxied.len();
        self.proxied.push(Some(Proxied {
            session,
            pipes: Pipes {
                consumer: Wire::new(ProxyEnd(l.clone()), false),
                providers: Vec::new(),
            },
            link: l.clone(),
        }));
        let behaviour = match rng.below(20) {
            0 => Behaviour::Early,
            1 | 2 => Behaviour::Doubled,
            3 => Behaviour::Malformed,
            4 => Behaviour::Closes,
            5 => Behaviour::Silent,
            6 => Behaviour::ResetsMidAnswer,
            _ => Behaviour::Prompt,
        };
        let stalls = rng.percent(4);
        let requests = 1 + rng.below(3);
        let mut plan = VecDeque::new();
        for _ in 0..requests {
            plan.push_back(self.plan_request(rng, who, fixture, stalls));
        }
        let config = if who.file == CONSUMER_A.file {
            &fixture.consumer_a
        } else {
            &fixture.consumer_b
        };
        let tls = ClientConnection::new(config.clone(), ServerName::try_from("localhost").expect("name"))
            .expect("client");
        self.consumers.push(ConsumerSim {
            who,
            tls,
            link: l,
            plan,
            current: None,
            inbuf: Vec::new(),
            pending: Vec::new(),
            mine: HashSet::new(),
            behaviour,
            reset_after: rng.percent(6).then(|| rng.below(40)),
            stalls,
            steps: 0,
            closed: false,
            eof: false,
            done: false,
            results: Vec::new(),
            closing: false,
        });
        let _ = index;
    }

    fn plan_request(&mut self, rng: &mut Rng, who: Who, fixture: &Fixture, stalls: bool) -> Planned {
        self.trace_count += 1;
        let trace = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            self.seed as u32, self.trace_count
        );
        let method = if rng.percent(60) { "GET" } else { "POST" };
        let body_len = match (method, rng.below(10)) {
            ("GET", _) => 0,
            (_, 0) => 100_000 + rng.below(200_000),
            _ => rng.below(3000),
        };
        let chunked = method == "POST" && rng.percent(30);
        let mut head = format!(
            "{method} /{}/search?patient=9000000009 HTTP/1.1\r\nHost: proxy\r\nSsp-TraceID: {trace}\r\nSsp-From: {}\r\nSsp-To: {PROVIDER_ASID}\r\nSsp-InteractionID: {INTERACTION}\r\nAuthorization: {JWT}\r\n",
            fixture.endpoint, who.asid
        );
        let body: Vec<u8> = (0..body_len).map(|i| b'a' + (i % 26) as u8).collect();
        let mut bytes;
        if method == "POST" && chunked {
            head.push_str("Transfer-Encoding: chunked\r\n\r\n");
            bytes = head.into_bytes();
            bytes.extend_from_slice(&common::chunked(&body, 1 + rng.below(5000)));
        } else if method == "POST" {
            head.push_str(&format!("Content-Length: {body_len}\r\n\r\n"));
            bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
        } else {
            head.push_str("\r\n");
            bytes = head.into_bytes();
        }
        let send = if stalls && body_len > 10 {
            bytes.len() - body_len / 2
        } else {
            bytes.len()
        };
        Planned {
            trace,
            method,
            bytes,
            send,
        }
    }

    fn fail(&self, why: &str) -> ! {
        let keep = env_u64("SSP_SIM_LOG", 30) as usize;
        let tail: Vec<&String> = self.log.iter().rev().take(keep).collect();
        panic!(
            "seed {} failed at step {}: {why}\nlast steps (newest first):\n  {}\nreplay: SSP_SIM_FIRST={} SSP_SIM_SEEDS=1 cargo test --release --test simulate -- --nocapture",
            self.seed,
            self.steps,
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
            self.seed
        );
    }

    // -- the proxy side ------------------------------------------------------------------

    /// One input to session `i`, then its actions and the sockets it let go.
    fn handle(&mut self, i: usize, input: Input) {
        let now = self.now;
        let Some(p) = self.proxied[i].as_mut() else {
            return;
        };
        // Work left after its round limit: driven again before anything else can wake it, as
        // the worker's `busy` list does.
        if p.session.handle(input, &mut self.cx, &mut p.pipes, now) && !self.busy.contains(&i) {
            self.busy.push(i);
        }
        for action in std::mem::take(&mut self.cx.actions) {
            match action {
                Action::Audit(event) => self.records.push(event),
                Action::AuditDurable { event, ticket } => {
                    if let Event::Req { request } = &event {
                        self.audit_waits.push((i, ticket, request.clone()));
                    }
                    self.records.push(event);
                }
                Action::Transaction(_) => {}
                Action::Resolve { ticket, .. } => {
                    // The harness configuration gives the provider a fixed address.
                    self.fail(&format!("unexpected resolve (ticket {ticket})"));
                }
                Action::Connect { id, .. } => {
                    let window = [512, 4096, 64 * 1024, 256 * 1024][self.rng.below(4)];
                    let l = link(window);
                    let consumer = i;
                    let behaviour = self.consumers[consumer].behaviour;
                    let tls = ServerConnection::new(self.provider_config.clone()).expect("provider tls");
                    let answer_size = if self.rng.percent(10) {
                        70_000 + self.rng.below(200_000)
                    } else {
                        self.rng.below(2000)
                    };
                    self.providers.insert(
                        id,
                        ProviderSim {
                            tls,
                            link: l.clone(),
                            behaviour,
                            inbuf: Vec::new(),
                            reading: None,
                            pending: Vec::new(),
                            last_answer: None,
                            dead: false,
                            answered: 0,
                            answer_size,
                            consumer,
                        },
                    );
                    let refused = self.rng.percent(3);
                    self.connects.push((i, id, refused));
                    if let Some(p) = self.proxied[i].as_mut() {
                        p.pipes
                            .providers
                            .push((id, Wire::new(ProxyEnd(l.clone()), false), l));
                    }
                }
            }
        }
        let Some(p) = self.proxied[i].as_mut() else {
            return;
        };
        let violation = p
            .pipes
            .providers
            .iter()
            .find_map(|(id, _, l)| l.borrow().violation.clone().map(|why| (*id, why)));
        if let Some((id, why)) = violation {
            self.fail(&format!("session {i}, provider {id}: {why}"));
        }
        let Some(p) = self.proxied[i].as_mut() else {
            return;
        };
        let session = &p.session;
        p.pipes.providers.retain(|(id, ..)| session.holds_provider(*id));
        if session.buffered() > BUFFER_BOUND {
            let held = session.buffered();
            self.fail(&format!("session {i} holds {held} bytes, over {BUFFER_BOUND}"));
        }
        if session.is_done() {
            self.proxied[i] = None;
        }
    }

    // -- the simulated consumer ----------------------------------------------------------

    fn consumer_step(&mut self, c: usize) {
        let now_step = self.steps;
        let con = &mut self.consumers[c];
        con.steps += 1;
        if let Some(after) = con.reset_after
            && con.steps > after
            && !con.done
        {
            con.link.borrow_mut().to_proxy.rst_sent = true;
            con.done = true;
            if let Some((trace, _)) = con.current.take() {
                con.results.push((trace, Got::Cut));
            }
            self.log.push(format!("{now_step}: consumer {c} resets"));
            return;
        }
        // A new request once the last is answered.
        if con.current.is_none()
            && !con.closing
            && !con.tls.is_handshaking()
            && !con.eof
            && let Some(next) = con.plan.pop_front()
        {
            con.pending.extend_from_slice(&next.bytes[..next.send]);
            con.mine.insert(next.trace.clone());
            self.log.push(format!(
                "{now_step}: consumer {c} sends {} {}",
                next.method, next.trace
            ));
            con.current = Some((next.trace, next.method));
        }
        // Done with its plan: say goodbye.
        if con.current.is_none()
            && con.pending.is_empty()
            && (con.plan.is_empty() || con.closing)
            && !con.closed
            && !con.tls.is_handshaking()
        {
            con.tls.send_close_notify();
            con.closed = true;
        }
        let mut end = PeerEnd(con.link.clone());
        write_out(&mut con.tls, &mut con.pending, &mut end);
        if con.closed && !con.tls.wants_write() {
            con.link.borrow_mut().to_proxy.fin_sent = true;
        }
        // Read what arrived.
        loop {
            match con.tls.read_tls(&mut end) {
                Ok(0) => {
                    con.eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    con.eof = true;
                    break;
                }
            }
            if con.tls.process_new_packets().is_err() {
                con.eof = true;
                break;
            }
            // Taken at once, so rustls's plaintext buffer never fills.
            let _ = con.tls.reader().read_to_end(&mut con.inbuf);
        }
        let _ = con.tls.reader().read_to_end(&mut con.inbuf);
        self.consumer_parse(c);
        let con = &mut self.consumers[c];
        if con.eof {
            if let Some((trace, _)) = con.current.take() {
                con.results.push((trace, Got::Cut));
            }
            con.done = true;
        }
    }

    /// Takes whole answers off the consumer's input and checks each is its own.
    fn consumer_parse(&mut self, c: usize) {
        loop {
            let con = &mut self.consumers[c];
            let Some((trace, method)) = con.current.clone() else {
                if !con.inbuf.is_empty() && !con.eof {
                    let stray = String::from_utf8_lossy(&con.inbuf[..con.inbuf.len().min(80)]).into_owned();
                    // Bytes with no request outstanding: only a doubled answer may do that.
                    if con.behaviour != Behaviour::Doubled {
                        self.fail(&format!(
                            "consumer {c} received bytes it did not ask for: {stray:?}"
                        ));
                    }
                    con.inbuf.clear();
                }
                return;
            };
            let head = match response::parse(&con.inbuf, 1 << 20, method) {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(e) => self.fail(&format!(
                    "consumer {c}: the proxy sent a bad response head: {e:?}"
                )),
            };
            let got_trace = head
                .fields()
                .find(|(n, _)| n.eq_ignore_ascii_case(b"ssp-traceid"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
            let close = head
                .fields()
                .any(|(n, v)| n.eq_ignore_ascii_case(b"connection") && v.eq_ignore_ascii_case(b"close"));
            let mut reader = match head.framing {
                ResponseFraming::None => None,
                ResponseFraming::Length(n) => Some(BodyReader::length(n)),
                ResponseFraming::Chunked => Some(BodyReader::chunked()),
                ResponseFraming::UntilClose => Some(BodyReader::until_close()),
            };
            let body_start = head.len();
            let mut consumed = 0;
            if let Some(r) = reader.as_mut() {
                match r.feed(&con.inbuf[body_start..], None) {
                    Ok(p) if p.done => consumed = p.consumed,
                    Ok(_) if con.eof && r.finish_at_eof(true).is_ok() => {
                        consumed = con.inbuf.len() - body_start
                    }
                    Ok(_) => return,
                    Err(e) => self.fail(&format!("consumer {c}: broken response body: {e:?}")),
                }
            }
            let con = &mut self.consumers[c];
            con.inbuf.drain(..body_start + consumed);
            if (100..200).contains(&head.status) {
                continue;
            }
            // A consumer only ever receives the answer to its own request: another
            // connection's trace id is a leak; an earlier one of its own is allowed only when
            // its provider answered twice (as it would be on a direct connection).
            match &got_trace {
                Some(t) if *t == trace => {}
                Some(t) if con.mine.contains(t) && con.behaviour == Behaviour::Doubled => {}
                Some(t) if self.consumers.iter().any(|o| o.mine.contains(t)) => self.fail(&format!(
                    "consumer {c} got the answer to another connection's request {t} (asked {trace})"
                )),
                other => self.fail(&format!(
                    "consumer {c} got an answer for {other:?}, asked {trace}"
                )),
            }
            let step = self.steps;
            self.log.push(format!(
                "{step}: consumer {c} answered {} for {trace}",
                head.status
            ));
            let con = &mut self.consumers[c];
            con.results.push((trace, Got::Answer { status: head.status }));
            con.current = None;
            con.closing |= close;
        }
    }

    fn consumer_wants_step(&self, c: usize) -> bool {
        let con = &self.consumers[c];
        if con.done {
            return false;
        }
        let l = con.link.borrow();
        let arrived = !l.from_proxy.arrived.is_empty() || (l.from_proxy.fin_arrived && !con.eof) || l.reset;
        let open = !(l.reset || l.proxy_closed || l.to_proxy.rst_sent);
        let can_write =
            open && (con.tls.wants_write() || !con.pending.is_empty()) && l.to_proxy.room(l.window) > 0;
        let next = open && con.current.is_none() && !con.tls.is_handshaking() && !con.closed;
        let resets = con.reset_after.is_some_and(|a| con.steps <= a);
        arrived || can_write || next || (resets && !con.tls.is_handshaking())
    }

    // -- the simulated provider ----------------------------------------------------------

    fn provider_step(&mut self, id: u64) {
        let step = self.steps;
        let Some(p) = self.providers.get_mut(&id) else {
            return;
        };
        let mut end = PeerEnd(p.link.clone());
        loop {
            match p.tls.read_tls(&mut end) {
                Ok(0) => {
                    p.dead = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    p.dead = true;
                    break;
                }
            }
            if p.tls.process_new_packets().is_err() {
                p.dead = true;
                break;
            }
            let _ = p.tls.reader().read_to_end(&mut p.inbuf);
        }
        let _ = p.tls.reader().read_to_end(&mut p.inbuf);
        let mut outgoing: Vec<u8> = Vec::new();
        let mut reset = false;
        let mut close = false;
        loop {
            let p = self.providers.get_mut(&id).expect("provider");
            if p.reading.is_none() {
                let head = match request::parse(&p.inbuf, 1 << 20) {
                    Ok(Some(head)) => head,
                    Ok(None) => break,
                    Err(e) => {
                        let seen = String::from_utf8_lossy(&p.inbuf[..p.inbuf.len().min(120)]).into_owned();
                        self.fail(&format!("provider {id} got a bad request head: {e:?}: {seen:?}"))
                    }
                };
                let trace = head
                    .field("ssp-traceid")
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                // Nothing reaches a provider before its `req` record is durable.
                if !self.durable.contains(&trace) {
                    self.fail(&format!(
                        "provider {id} got request {trace} before its req record was durable"
                    ));
                }
                let p = self.providers.get_mut(&id).expect("provider");
                let reader = match head.framing {
                    BodyFraming::None => None,
                    BodyFraming::Length(n) => Some(BodyReader::length(n)),
                    BodyFraming::Chunked => Some(BodyReader::chunked()),
                };
                p.inbuf.drain(..head.len());
                self.log
                    .push(format!("{step}: provider {id} reads the head of {trace}"));
                let p = self.providers.get_mut(&id).expect("provider");
                p.reading = Some((trace, reader, false));
            }
            let p = self.providers.get_mut(&id).expect("provider");
            let Some((trace, reader, answered)) = p.reading.as_mut() else {
                break;
            };
            let body_done = match reader {
                None => true,
                Some(r) => match r.feed(&p.inbuf, None) {
                    Ok(progress) => {
                        p.inbuf.drain(..progress.consumed);
                        progress.done
                    }
                    Err(_) => true,
                },
            };
            let answer_now = !*answered && (body_done || p.behaviour == Behaviour::Early);
            if answer_now {
                *answered = true;
                p.answered += 1;
                let trace = trace.clone();
                match p.behaviour {
                    Behaviour::Silent => {}
                    Behaviour::Closes => close = true,
                    Behaviour::Malformed => outgoing.extend_from_slice(b"HTTP/1.1 abc\r\n\r\n"),
                    _ => {
                        let body: Vec<u8> = (0..p.answer_size).map(|i| b'0' + (i % 10) as u8).collect();
                        let mut answer = format!(
                            "HTTP/1.1 200 OK\r\nSsp-TraceID: {trace}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        answer.extend_from_slice(&body);
                        if p.behaviour == Behaviour::ResetsMidAnswer {
                            answer.truncate(answer.len() / 2);
                            reset = true;
                        }
                        outgoing.extend_from_slice(&answer);
                        // The copy goes as a write of its own, whenever the scheduler says:
                        // at once, or after the proxy has sent its next request.
                        if p.behaviour == Behaviour::Doubled {
                            p.last_answer = Some(answer);
                        }
                    }
                }
            }
            if body_done && *answered {
                p.reading = None;
                continue;
            }
            break;
        }
        if let Some(p) = self.providers.get(&id) {
            let idle = p.reading.is_none() && p.answered > 0;
            let mut l = p.link.borrow_mut();
            if idle && !l.provider_idle {
                l.written_since_idle = false;
            }
            l.provider_idle = idle;
        }
        let p = self.providers.get_mut(&id).expect("provider");
        p.pending.extend_from_slice(&outgoing);
        if close {
            p.tls.send_close_notify();
        }
        write_out(&mut p.tls, &mut p.pending, &mut end);
        if close && !p.tls.wants_write() {
            p.link.borrow_mut().to_proxy.fin_sent = true;
            p.dead = true;
        }
        if reset {
            p.link.borrow_mut().to_proxy.rst_sent = true;
            p.dead = true;
        }
    }

    fn provider_wants_step(&self, id: u64) -> bool {
        let p = &self.providers[&id];
        if p.dead {
            return false;
        }
        let l = p.link.borrow();
        if l.reset || l.proxy_closed && l.from_proxy.arrived.is_empty() {
            return false;
        }
        !l.from_proxy.arrived.is_empty()
            || l.from_proxy.fin_arrived
            || ((p.tls.wants_write() || !p.pending.is_empty()) && l.to_proxy.room(l.window) > 0)
    }

    // -- the scheduler -------------------------------------------------------------------

    /// Everything that may happen next.
    fn enabled(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        for (i, p) in self.proxied.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.link.borrow().event {
                steps.push(Step::ConsumerEvent(i));
            }
            for (id, _, l) in &p.pipes.providers {
                if l.borrow().event {
                    steps.push(Step::ProviderEvent(i, *id));
                }
            }
        }
        for (c, con) in self.consumers.iter().enumerate() {
            let l = con.link.borrow();
            if l.to_proxy.can_transmit() && !l.reset {
                steps.push(Step::Transmit(c, None, true));
            }
            if l.from_proxy.can_transmit() && !l.reset {
                steps.push(Step::Transmit(c, None, false));
            }
            drop(l);
            if self.consumer_wants_step(c) {
                steps.push(Step::Consumer(c));
            }
        }
        let mut ids: Vec<u64> = self.providers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let p = &self.providers[&id];
            let l = p.link.borrow();
            if l.to_proxy.can_transmit() && !l.reset {
                steps.push(Step::Transmit(p.consumer, Some(id), true));
            }
            if l.from_proxy.can_transmit() && !l.reset {
                steps.push(Step::Transmit(p.consumer, Some(id), false));
            }
            drop(l);
            if self.provider_wants_step(id) {
                steps.push(Step::Provider(id));
            }
            if p.last_answer.is_some() && !p.dead {
                steps.push(Step::Stale(id));
            }
        }
        for k in 0..self.connects.len() {
            steps.push(Step::Connect(k));
        }
        for &i in &self.busy {
            steps.push(Step::Busy(i));
        }
        for k in 0..self.audit_waits.len() {
            steps.push(Step::Audit(k));
        }
        steps
    }

    fn run(mut self) -> Tally {
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                self.fail("no end in sight (livelock?)");
            }
            if let Some((announce, drain)) = self.stop {
                if self.steps == announce {
                    self.log.push(format!("{}: a stop is announced", self.steps));
                    self.each(|| Input::Leaving);
                }
                if self.steps == drain {
                    self.log
                        .push(format!("{}: SIGTERM: the drain begins", self.steps));
                    self.draining = true;
                    self.each(|| Input::Drain);
                }
            }
            let steps = self.enabled();
            if steps.is_empty() {
                self.check_liveness();
                if self.draining && self.proxied.iter().flatten().next().is_some() {
                    // Everything left waits for the clock: the drain runs out.
                    self.log.push(format!("{}: the drain runs out", self.steps));
                    self.each(|| Input::Stop);
                    continue;
                }
                if !self.advance_clock() {
                    break;
                }
                continue;
            }
            let chosen = steps[self.rng.below(steps.len())];
            if self.steps > MAX_STEPS - 5 {
                self.log.push(format!("{}: (looping) {chosen:?}", self.steps));
            }
            self.take(chosen);
        }
        self.check_books();
        let mut tally = Tally::default();
        for con in &self.consumers {
            for (_, got) in &con.results {
                match got {
                    Got::Answer { status } => *tally.statuses.entry(*status).or_default() += 1,
                    Got::Cut => tally.cut += 1,
                }
            }
        }
        tally.steps = self.steps;
        tally.drained = self
            .records
            .iter()
            .filter(|r| matches!(r, Event::Res { token: Some(t), .. } if t == "DRAIN_TIMEOUT"))
            .count();
        tally
    }

    fn each(&mut self, input: fn() -> Input) {
        for i in 0..self.proxied.len() {
            self.handle(i, input());
        }
    }

    fn take(&mut self, step: Step) {
        let n = self.steps;
        match step {
            Step::ConsumerEvent(i) => {
                let Some(p) = self.proxied[i].as_mut() else { return };
                let (closing, readable) = {
                    let mut l = p.link.borrow_mut();
                    l.event = false;
                    (l.reset || l.to_proxy.fin_arrived || l.to_proxy.rst_arrived, true)
                };
                p.pipes.consumer.ready(readable, closing);
                self.log
                    .push(format!("{n}: session {i} consumer event (closing {closing})"));
                self.handle(i, Input::Ready);
            }
            Step::ProviderEvent(i, id) => {
                let Some(p) = self.proxied[i].as_mut() else { return };
                let Some((_, wire, l)) = p.pipes.providers.iter_mut().find(|(pid, ..)| *pid == id) else {
                    return;
                };
                let closing = {
                    let mut l = l.borrow_mut();
                    l.event = false;
                    l.reset || l.to_proxy.fin_arrived || l.to_proxy.rst_arrived
                };
                wire.ready(true, closing);
                self.log.push(format!(
                    "{n}: session {i} provider {id} event (closing {closing})"
                ));
                self.handle(i, Input::ProviderReady { id });
            }
            Step::Transmit(c, provider, toward_proxy) => {
                let l = match provider {
                    None => self.consumers[c].link.clone(),
                    Some(id) => self.providers[&id].link.clone(),
                };
                transmit(&l, toward_proxy, &mut self.rng);
            }
            Step::Consumer(c) => self.consumer_step(c),
            Step::Busy(i) => {
                self.busy.retain(|&b| b != i);
                self.handle(i, Input::Ready);
            }
            Step::Provider(id) => self.provider_step(id),
            Step::Stale(id) => {
                let Some(p) = self.providers.get_mut(&id) else {
                    return;
                };
                if let Some(copy) = p.last_answer.take() {
                    p.pending.extend_from_slice(&copy);
                    let mut end = PeerEnd(p.link.clone());
                    write_out(&mut p.tls, &mut p.pending, &mut end);
                    self.log
                        .push(format!("{n}: provider {id} sends its answer again"));
                }
            }
            Step::Connect(k) => {
                let (i, id, refused) = self.connects.remove(k);
                let result = if refused {
                    Err("connect: refused".to_string())
                } else {
                    Ok(())
                };
                self.log
                    .push(format!("{n}: session {i} provider {id} connect {result:?}"));
                if refused && let Some(p) = self.providers.get_mut(&id) {
                    p.dead = true;
                }
                self.handle(i, Input::Connected { id, result });
            }
            Step::Audit(k) => {
                let (i, ticket, facts) = self.audit_waits.remove(k);
                let seq = if self.rng.percent(2) {
                    None
                } else {
                    Some(self.reqs.len() as u64)
                };
                let trace = facts.text.trace_id().unwrap_or("").to_string();
                if seq.is_some() {
                    self.durable.insert(trace.clone());
                }
                self.log.push(format!("{n}: audit answers {trace}: {seq:?}"));
                self.reqs.push((facts, seq));
                self.handle(i, Input::Audited { ticket, seq });
            }
        }
    }

    /// Nothing is left to happen without the clock: every exchange whose peers are both
    /// willing must be finished.
    fn check_liveness(&self) {
        for (i, p) in self.proxied.iter().enumerate() {
            let Some(p) = p else { continue };
            let (reset, unread) = {
                let l = p.link.borrow();
                (l.to_proxy.rst_arrived, l.to_proxy.arrived.len())
            };
            let provider_willing = !matches!(self.consumers[i].behaviour, Behaviour::Silent);
            if reset && provider_willing {
                self.fail(&format!(
                    "session {i} ({}) has not noticed its consumer's reset ({unread} bytes unread before it) with nothing left to happen",
                    p.session.state_name()
                ));
            }
        }
        for (c, con) in self.consumers.iter().enumerate() {
            if con.done || !con.expects_prompt_answer() {
                continue;
            }
            if con.who.file == CONSUMER_B.file || con.closing {
                // Refused at once, or closing: either way it must have its answer too.
            }
            let state = self.proxied[c].as_ref().map_or("gone".to_string(), |p| {
                let links: Vec<String> = std::iter::once(("consumer".to_string(), p.link.clone()))
                    .chain(
                        p.pipes
                            .providers
                            .iter()
                            .map(|(id, _, l)| (format!("provider {id}"), l.clone())),
                    )
                    .map(|(name, l)| {
                        let l = l.borrow();
                        format!(
                            "{name}: to proxy {}+{} fin {}, from proxy {}+{} fin {} blocked {}",
                            l.to_proxy.in_flight.len(),
                            l.to_proxy.arrived.len(),
                            l.to_proxy.fin_arrived,
                            l.from_proxy.in_flight.len(),
                            l.from_proxy.arrived.len(),
                            l.from_proxy.fin_sent,
                            l.from_proxy.writer_blocked
                        )
                    })
                    .collect();
                format!(
                    "{} holding {} bytes; {}",
                    p.session.state_name(),
                    p.session.buffered(),
                    links.join("; ")
                )
            });
            self.fail(&format!(
                "stalled: consumer {c} ({:?} provider) waits for {:?} with nothing left to happen; its session is in {state}",
                con.behaviour, con.current
            ));
        }
    }

    /// Moves the clock to the next deadline and ticks the sessions it reaches; false when no
    /// session has one (the seed is over).
    fn advance_clock(&mut self) -> bool {
        let next = self
            .proxied
            .iter()
            .flatten()
            .filter_map(|p| p.session.deadline(&self.cx))
            .min();
        let Some(next) = next else {
            return false;
        };
        if next.saturating_duration_since(self.start) > Duration::from_secs(3000) {
            self.fail("a deadline an hour away");
        }
        self.now = self.now.max(next);
        let n = self.steps;
        self.log
            .push(format!("{n}: clock to +{:?}", self.now - self.start));
        for i in 0..self.proxied.len() {
            let due = self.proxied[i]
                .as_ref()
                .and_then(|p| p.session.deadline(&self.cx))
                .is_some_and(|d| d <= self.now);
            if due {
                self.handle(i, Input::Tick);
            }
        }
        true
    }

    /// Every `req` record has exactly one `res` (or, if it never became durable, one `deny`
    /// instead when its exchange was still waiting for it); no `res` without its `req`.
    fn check_books(&self) {
        let same = |a: &Arc<RequestFacts>, b: &Arc<RequestFacts>| Arc::ptr_eq(a, b);
        for (facts, seq) in &self.reqs {
            let res = self
                .records
                .iter()
                .filter(|r| matches!(r, Event::Res { request, .. } if same(request, facts)))
                .count();
            let deny = self
                .records
                .iter()
                .filter(|r| matches!(r, Event::Deny { request, .. } if same(request, facts)))
                .count();
            let trace = facts.text.trace_id().unwrap_or("-");
            match seq {
                Some(_) if res != 1 || deny != 0 => {
                    self.fail(&format!("req {trace} has {res} res and {deny} deny records"))
                }
                // Not durable: a `deny` if the exchange was waiting for it; a `res` (with no
                // `req_seq`) if it had already ended, e.g. its provider refused the connect.
                None if res + deny != 1 => self.fail(&format!(
                    "req {trace} (not durable) has {res} res and {deny} deny records"
                )),
                _ => {}
            }
        }
        let asked: Vec<&Arc<RequestFacts>> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Event::Req { request } => Some(request),
                _ => None,
            })
            .collect();
        if asked.len() != self.reqs.len() {
            self.fail(&format!(
                "{} req records but {} were answered by the audit",
                asked.len(),
                self.reqs.len()
            ));
        }
        for r in &self.records {
            if let Event::Res { request, .. } = r
                && !asked.iter().any(|a| same(a, request))
            {
                self.fail("a res record without its req");
            }
        }
        let left = self.proxied.iter().flatten().count();
        if left > 0 {
            self.fail(&format!("{left} sessions never closed"));
        }
        let _ = &self.shared;
    }
}

/// What a run of seeds came to, so that a run that exercised nothing shows.
#[derive(Debug, Default)]
struct Tally {
    statuses: std::collections::BTreeMap<u16, usize>,
    cut: usize,
    steps: usize,
    /// Exchanges a drain that ran out ended (`res` records with `DRAIN_TIMEOUT`).
    drained: usize,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    ConsumerEvent(usize),
    ProviderEvent(usize, u64),
    /// Bytes of consumer `.0`'s link (or of provider connection `.1`'s), toward the proxy or not.
    Transmit(usize, Option<u64>, bool),
    Consumer(usize),
    Provider(u64),
    /// A `Doubled` provider sends its answer again.
    Stale(u64),
    /// A session with work left is driven again.
    Busy(usize),
    Connect(usize),
    Audit(usize),
}

// ---------------------------------------------------------------------------------------

/// What every seed shares: the configuration and the TLS configurations, loaded once.
struct Fixture {
    shared: Arc<Shared>,
    provider: Arc<ServerConfig>,
    consumer_a: Arc<ClientConfig>,
    consumer_b: Arc<ClientConfig>,
    endpoint: String,
    start: Instant,
    wall: i64,
    _setup: Setup,
}

/// A leaf certificate under the fixture PKI's Level 1C CA with an Ed25519 key, written to
/// `dir` as `<name>.pem` (leaf, then Level 1C) and `<name>.key`. Ed25519 because a seed is
/// mostly handshakes: its signatures cost a small fraction of RSA's, and are the same length
/// every time, so a seed's bytes (and so its schedule) replay exactly.
fn ed25519_leaf(
    dir: &std::path::Path,
    name: &str,
    cn: &str,
    sans: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nhs");
    dn.push(DnType::OrganizationalUnitName, "Devices");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &common::mint::level1c())
        .expect("certificate");
    let mut chain = cert.pem();
    chain.push_str(&std::fs::read_to_string(pki("level1c.pem")).expect("level1c.pem"));
    let (pem, key_file) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&pem, chain).expect("write certificate");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    (pem, key_file)
}

fn fixture() -> Fixture {
    let setup = Setup::new(&Options {
        dead_provider: true,
        ..Options::default()
    });
    let dir = setup.dir.path();
    let (ssp_pem, ssp_key) = ed25519_leaf(
        dir,
        "ssp",
        "ssp.localhost",
        &["localhost", "ssp.localhost", "127.0.0.1"],
    );
    let (provider_pem, provider_key) =
        ed25519_leaf(dir, "provider", "localhost", &["localhost", "127.0.0.1"]);
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let text = text
        .replace(
            &pki("ssp.pem").display().to_string(),
            &ssp_pem.display().to_string(),
        )
        .replace(
            &pki("ssp.key").display().to_string(),
            &ssp_key.display().to_string(),
        );
    std::fs::write(&setup.config, text).expect("config");
    let config = ssp::config::load(&setup.config).expect("config");
    let shared = Arc::new(Shared::load(config).expect("shared"));
    let provider = ssp::demo::provider::server_config(&provider_pem, &provider_key, &pki("nhs-ca.pem"))
        .expect("provider tls");
    // No session tickets to the proxy: every seed's provider handshakes are full ones, so a
    // seed replays the same bytes whatever ran before it.
    let mut provider = (*provider).clone();
    provider.send_tls13_tickets = 0;
    provider.session_storage = Arc::new(NoServerSessionStorage {});
    let consumer = |who: &Who| {
        let (pem, key) = ed25519_leaf(dir, who.file, who.fqdn, &[who.fqdn]);
        let chain = ssp::tls::files::certificates(&pem).expect("chain");
        let key = ssp::tls::files::private_key(&key).expect("key");
        let mut c = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(common::roots())
            .with_client_auth_cert(chain, key)
            .expect("client config");
        c.resumption = rustls::client::Resumption::disabled();
        Arc::new(c)
    };
    Fixture {
        shared,
        provider: Arc::new(provider),
        consumer_a: consumer(&CONSUMER_A),
        consumer_b: consumer(&CONSUMER_B),
        endpoint: setup.endpoint.clone(),
        start: Instant::now(),
        wall: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        _setup: setup,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_interleaving_keeps_the_invariants() {
    let first = env_u64("SSP_SIM_FIRST", 0);
    let seeds = env_u64("SSP_SIM_SEEDS", 1000);
    let fixture = fixture();
    let started = Instant::now();
    let mut total = Tally::default();
    for seed in first..first + seeds {
        let tally = World::new(seed, &fixture).run();

        for (status, n) in tally.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.cut += tally.cut;
        total.drained += tally.drained;
        total.steps += tally.steps;
    }
    eprintln!(
        "simulated {seeds} seeds from {first} in {:.1} s: {} steps; answers by status {:?}, {} cut off, {} ended by a drain that ran out",
        started.elapsed().as_secs_f64(),
        total.steps,
        total.statuses,
        total.cut,
        total.drained
    );
    // The seeds must have exercised the proxy: forwarded answers, refusals and failures.
    if seeds >= 100 {
        for status in [200, 403, 502] {
            assert!(
                total.statuses.contains_key(&status),
                "no {status} in {seeds} seeds"
            );
        }
    }
}
