//! A worker thread: one mio `Poll`, the consumer connections it accepted and their provider
//! sockets. It only maps readiness, resolver answers, audit answers and the time to
//! `session::Input`s, and carries out the `cx::Action`s sessions leave; every decision is the
//! session's. See ARCHITECTURE.md, "Threads".

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use super::cx::{Action, Counters, Cx};
use super::resolver::{self, Question};
use super::session::{Input, Session};
use super::shared::{Runtime, Shared};
use super::wire::{Io, Pipe, Socket, Wire};
use crate::audit::{Durable, Notifier, Outbox, Transaction};

/// How often deadlines are checked; timeouts fire at most this late.
const TICK: Duration = Duration::from_millis(100);
/// Records and lines nobody waits for (`res`, `deny`, transactions) stay in the worker until
/// a `req` record has to go, `HELD_MAX` of them gather, or the oldest is `HOLD` old. Every
/// hand-over wakes a writer thread, and on a small box each wake-up is a context switch the
/// worker pays for; a turn that only finished responses need not cause one.
const HOLD: Duration = Duration::from_millis(20);
const HELD_MAX: usize = 64;
/// Connections the kernel may hold completed before they are accepted (nginx uses 511).
const LISTEN_BACKLOG: i32 = 1024;

const LISTENER: usize = 0;
const CONSUMER: usize = 1;
/// A provider socket of the consumer connection with the same key.
const PROVIDER: usize = 2;
const WAKER: Token = Token(usize::MAX);

fn token(kind: usize, key: usize) -> Token {
    Token(key << 2 | kind)
}

impl Socket for TcpStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// A provider socket and whether its connect is known to have completed.
struct ProviderSocket {
    id: u64,
    wire: Wire<TcpStream>,
    connected: bool,
}

/// The sockets of one consumer connection.
struct Sockets {
    consumer: Wire<TcpStream>,
    /// Its provider connections' (one, or two for a moment while one replaces another).
    providers: Vec<ProviderSocket>,
}

impl Io for Sockets {
    fn consumer(&mut self) -> &mut dyn Pipe {
        &mut self.consumer
    }

    fn provider(&mut self, id: u64) -> Option<&mut dyn Pipe> {
        self.providers
            .iter_mut()
            .find(|p| p.id == id)
            .map(|p| &mut p.wire as &mut dyn Pipe)
    }
}

struct Conn {
    session: Session,
    sockets: Sockets,
}

/// Where the records and lines sessions produce wait to be handed to their writers.
struct Logs {
    audit: Outbox,
    transactions: Vec<Transaction>,
    held_since: Option<Instant>,
    /// How the audit writer answers this worker about durable records.
    notifier: Notifier,
}

struct Worker {
    poll: Poll,
    registry: Registry,
    listeners: Vec<TcpListener>,
    conns: Slab<Conn>,
    /// Connections whose session stopped at its round limit with work left: no new readiness
    /// edge may come for bytes already buffered, so they are driven again before sleeping.
    busy: Vec<usize>,
    cx: Cx,
    runtime: Arc<Runtime>,
    logs: Logs,
    resolver: Sender<Question>,
    replies_tx: Sender<resolver::Answer>,
    replies: Receiver<resolver::Answer>,
    audit_replies: Receiver<Durable>,
    waker: Arc<Waker>,
    /// Resolver and audit tickets in flight, to the connection that asked.
    waits: HashMap<u64, usize>,
    /// A stop was announced (`Runtime::is_leaving`) and the sessions told.
    leaving: bool,
}

/// Binds every `listen` address; done before the workers start so errors surface at once.
pub fn bind(shared: &Shared) -> std::io::Result<Vec<StdListener>> {
    let mut listeners = Vec::new();
    for addr in &shared.config.server.listen {
        let listener = StdListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        // The standard library listens with a backlog of 128: 512 consumers connecting at
        // once overflowed it hundreds of times, each overflow a SYN retried a second later
        // (issue 22). Listening again on a listening socket only sets the backlog; the kernel
        // caps it at `net.core.somaxconn`.
        // SAFETY: listen(2) on a descriptor this function owns; no memory is passed.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr}: {e}"),
            ));
        }
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
        let cx = Cx::new(runtime.current(), runtime.generation(), Counters::of(&runtime));
        Ok(Worker {
            registry: poll.registry().try_clone()?,
            poll,
            listeners,
            conns: Slab::new(),
            busy: Vec::new(),
            cx,
            logs: Logs {
                audit: Outbox::new(runtime.audit.clone()),
                transactions: Vec::new(),
                held_since: None,
                notifier,
            },
            runtime,
            resolver,
            replies_tx,
            replies,
            audit_replies,
            waker,
            waits: HashMap::new(),
            leaving: false,
        })
    }

    fn run(mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let heartbeat = self.runtime.heartbeat();
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
            self.begin_turn();
            for event in events.iter() {
                self.dispatch(event, now);
            }
            for key in std::mem::take(&mut self.busy) {
                self.handle(key, Input::Ready, now);
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            if !self.leaving && self.runtime.is_leaving() {
                self.leaving = true;
                self.each(|| Input::Leaving, now);
            }
            held_due = self.flush_logs(now, false);
            heartbeat.store(self.runtime.nanos(now), Ordering::Release);
            if self.runtime.is_stopping() {
                if drain_until.is_none() {
                    drain_until = Some(self.stop_accepting(now));
                    self.each(|| Input::Drain, now);
                }
                if self.conns.is_empty() || drain_until.is_some_and(|until| now >= until) {
                    log::info!("worker stopping with {} connections left", self.conns.len());
                    self.each(|| Input::Stop, now);
                    self.flush_logs(now, true);
                    return Ok(());
                }
            }
        }
    }

    /// What sessions read of the world this turn: a reload, the audit's and the clock's
    /// health, the wall clock.
    fn begin_turn(&mut self) {
        let generation = self.runtime.generation();
        if generation != self.cx.generation {
            self.cx.refresh(self.runtime.current(), generation);
        }
        self.cx.audit_healthy = self.runtime.audit.healthy();
        self.cx.clock_synced = self.runtime.clock.synchronized();
        self.cx.wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
    }

    /// SIGTERM: no new connections on this worker; returns when draining must end.
    fn stop_accepting(&mut self, now: Instant) -> Instant {
        for listener in &mut self.listeners {
            let _ = self.registry.deregister(listener);
        }
        self.listeners.clear();
        now + self.cx.shared.config.limits.drain_timeout
    }

    fn each(&mut self, input: fn() -> Input, now: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.handle(key, input(), now);
        }
    }

    /// One input to one session; then its actions are carried out, the provider sockets it no
    /// longer names are closed, and a finished session is dropped.
    fn handle(&mut self, key: usize, input: Input, now: Instant) {
        let mut inputs = vec![input];
        while let Some(input) = inputs.pop() {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let more = conn.session.handle(input, &mut self.cx, &mut conn.sockets, now);
            if more && !self.busy.contains(&key) {
                self.busy.push(key);
            }
            self.carry_out(key, &mut inputs);
        }
        self.settle(key);
    }

    /// Carries out what the session asked for; a connect that fails at once is answered
    /// through `inputs`.
    fn carry_out(&mut self, key: usize, inputs: &mut Vec<Input>) {
        for action in std::mem::take(&mut self.cx.actions) {
            match action {
                Action::Audit(event) => self.logs.audit.record(event),
                Action::AuditDurable { event, ticket } => {
                    self.waits.insert(ticket, key);
                    self.logs.audit.record_durable(event, ticket, &self.logs.notifier);
                }
                Action::Transaction(line) => self.logs.transactions.push(line),
                Action::Resolve { host, port, ticket } => {
                    let question = Question {
                        host,
                        port,
                        ticket,
                        reply: self.replies_tx.clone(),
                        waker: self.waker.clone(),
                    };
                    // If the resolver is gone the connect deadline answers 502.
                    if self.resolver.send(question).is_ok() {
                        self.waits.insert(ticket, key);
                    }
                }
                Action::Connect { id, addr } => {
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    let opened = TcpStream::connect(addr).and_then(|mut sock| {
                        let _ = sock.set_nodelay(true);
                        self.registry.register(
                            &mut sock,
                            token(PROVIDER, key),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        Ok(sock)
                    });
                    match opened {
                        Ok(sock) => conn.sockets.providers.push(ProviderSocket {
                            id,
                            wire: Wire::new(sock, false),
                            connected: false,
                        }),
                        Err(e) => inputs.push(Input::Connected {
                            id,
                            result: Err(format!("connect {addr}: {e}")),
                        }),
                    }
                }
            }
        }
    }

    /// Closes the provider sockets a session no longer names; drops a finished session.
    fn settle(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let session = &conn.session;
        conn.sockets.providers.retain(|p| session.holds_provider(p.id));
        if session.is_done() {
            self.conns.remove(key);
            self.runtime.metrics.connection_closed();
            self.runtime.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn dispatch(&mut self, event: &mio::event::Event, now: Instant) {
        if event.token() == WAKER {
            return self.answers(now);
        }
        let (kind, key) = (event.token().0 & 3, event.token().0 >> 2);
        let closing = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || closing;
        match kind {
            LISTENER => self.accept(key, now),
            CONSUMER => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                conn.sockets.consumer.ready(readable, closing);
                self.handle(key, Input::Ready, now);
            }
            PROVIDER => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                let mut inputs = Vec::new();
                for p in &mut conn.sockets.providers {
                    p.wire.ready(readable, closing);
                    if !p.connected {
                        match connect_result(&p.wire.sock) {
                            Ok(false) => continue,
                            Ok(true) => {
                                p.connected = true;
                                inputs.push(Input::Connected {
                                    id: p.id,
                                    result: Ok(()),
                                });
                            }
                            Err(why) => {
                                inputs.push(Input::Connected {
                                    id: p.id,
                                    result: Err(why),
                                });
                                continue;
                            }
                        }
                    }
                    inputs.push(Input::ProviderReady { id: p.id });
                }
                for input in inputs {
                    self.handle(key, input, now);
                }
            }
            _ => {}
        }
    }

    /// The resolver's and the audit writer's answers.
    fn answers(&mut self, now: Instant) {
        while let Ok(durable) = self.audit_replies.try_recv() {
            if let Some(key) = self.waits.remove(&durable.ticket) {
                let input = Input::Audited {
                    ticket: durable.ticket,
                    seq: durable.seq,
                };
                self.handle(key, input, now);
            }
        }
        while let Ok(answer) = self.replies.try_recv() {
            if let Some(key) = self.waits.remove(&answer.ticket) {
                let input = Input::Resolved {
                    ticket: answer.ticket,
                    addrs: answer.addrs,
                };
                self.handle(key, input, now);
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session.deadline(&self.cx).is_some_and(|d| d <= now))
            .map(|(key, _)| key)
            .collect();
        for key in due {
            self.handle(key, Input::Tick, now);
        }
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
            let open = &self.runtime.connections;
            if open.fetch_add(1, Ordering::Relaxed) >= shared.config.limits.max_connections {
                open.fetch_sub(1, Ordering::Relaxed);
                log::debug!("accept: {peer} refused, max_connections reached");
                continue;
            }
            let _ = sock.set_nodelay(true);
            // Behind a balancer the socket's peer is the balancer: the consumer's own address
            // is checked once the PROXY header names it.
            let proxied = shared.config.server.proxy_protocol;
            let registered = Session::accept(&self.cx, peer, proxied, now)
                .map_err(|e| e.to_string())
                .and_then(|session| {
                    let entry = self.conns.vacant_entry();
                    let mut sock = sock;
                    self.registry
                        .register(
                            &mut sock,
                            token(CONSUMER, entry.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .map_err(|e| e.to_string())?;
                    let key = entry.key();
                    entry.insert(Conn {
                        session,
                        sockets: Sockets {
                            consumer: Wire::new(sock, true),
                            providers: Vec::new(),
                        },
                    });
                    self.runtime.metrics.connection_opened();
                    Ok(key)
                });
            match registered {
                Ok(key) if self.leaving => self.handle(key, Input::Leaving, now),
                Ok(_) => {}
                Err(e) => {
                    self.runtime.connections.fetch_sub(1, Ordering::Relaxed);
                    log::warn!("accept: {peer}: {e}");
                }
            }
        }
    }

    /// Hands records and lines to their writer threads when due (see `HOLD`), or all of them
    /// with `force`. Returns when the ones still held are due.
    fn flush_logs(&mut self, now: Instant, force: bool) -> Option<Instant> {
        for record in self.cx.refusals.due(now, force) {
            self.logs.audit.record(record);
        }
        let logs = &mut self.logs;
        let due = force || logs.held_since.is_some_and(|t| now >= t + HOLD);
        if due || logs.audit.has_waiter() || logs.audit.len() >= HELD_MAX {
            logs.audit.flush();
        }
        if due || logs.transactions.len() >= HELD_MAX {
            self.runtime
                .transactions
                .log_all(std::mem::take(&mut logs.transactions));
        }
        if logs.audit.is_empty() && logs.transactions.is_empty() {
            logs.held_since = None;
        } else if due || logs.held_since.is_none() {
            logs.held_since = Some(now);
        }
        logs.held_since.map(|t| t + HOLD)
    }
}

/// After a provider socket's event: did its connect complete (`Ok(false)`: not yet)?
fn connect_result(sock: &TcpStream) -> Result<bool, String> {
    if let Ok(Some(e)) | Err(e) = sock.take_error() {
        return Err(format!("connect: {e}"));
    }
    match sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(format!("connect: {e}")),
    }
}
