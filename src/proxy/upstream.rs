//! Connections to providers: a nonblocking connect, the proxy's own mutual TLS, and the
//! provider connection a consumer connection keeps for its next request.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use super::tls_io::{self, RecordFraming};

/// One TLS connection to a provider.
pub struct Upstream {
    pub sock: TcpStream,
    pub tls: ClientConnection,
    /// The provider endpoint it is connected to (`Shared::routes`).
    pub route: usize,
    /// Plaintext received and not yet handled.
    pub inbuf: Vec<u8>,
    /// The socket may have bytes we have not read (edge-triggered readiness).
    pub read_ready: bool,
    /// epoll reported the provider's close or reset (see `tls_io::read`).
    pub peer_closing: bool,
    pub eof: bool,
    /// The provider ended its data with close_notify (see `BodyReader::finish_at_eof`).
    pub close_notify: bool,
    /// How far the provider's TLS records have arrived (see `is_clean`).
    pub framing: RecordFraming,
    /// Set once the TCP connect is known to have completed.
    pub connected: bool,
}

impl Upstream {
    /// Starts a nonblocking connect; completion shows as a writable event.
    pub fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        route: usize,
    ) -> Result<Upstream, String> {
        let sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = sock.set_nodelay(true);
        let tls = ClientConnection::new(config, server_name).map_err(|e| format!("tls: {e}"))?;
        Ok(Upstream {
            sock,
            tls,
            route,
            inbuf: Vec::new(),
            read_ready: false,
            peer_closing: false,
            eof: false,
            close_notify: false,
            framing: RecordFraming::default(),
            connected: false,
        })
    }

    /// What its readiness events carry: the socket's descriptor, which stays the same while
    /// the connection moves between exchanges and the pool, so it is registered once and
    /// never again (`Owners` says who it belongs to now).
    pub fn id(&self) -> usize {
        self.sock.as_raw_fd() as usize
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> std::io::Result<()> {
        registry.register(&mut self.sock, token, Interest::READABLE | Interest::WRITABLE)
    }

    /// After a writable event: did the connect succeed?
    pub fn check_connected(&mut self) -> Result<bool, String> {
        if self.connected {
            return Ok(true);
        }
        if let Ok(Some(e)) | Err(e) = self.sock.take_error() {
            return Err(format!("connect: {e}"));
        }
        match self.sock.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(format!("connect: {e}")),
        }
    }

    /// Whether an idle connection is still fit to carry a request: reads whatever arrived and
    /// answers no to a close, any plaintext (nothing is owed before a request) or a record
    /// still arriving. TLS traffic of its own, such as a session ticket, is fine.
    pub fn still_idle(&mut self) -> bool {
        let mut unexpected = Vec::new();
        match tls_io::read(
            &mut self.sock,
            &mut self.tls,
            &mut unexpected,
            1,
            true,
            Some(&mut self.framing),
        ) {
            Ok(o) => {
                !o.eof
                    && unexpected.is_empty()
                    && self.framing.at_boundary()
                    && tls_io::flush(&mut self.sock, &mut self.tls).is_ok()
            }
            Err(_) => false,
        }
    }

    /// Whether it can carry another request: handshake done, nothing unread, peer still open.
    /// `read_ready` means the last read stopped at the stage limit, not at an empty socket:
    /// bytes the provider sent after its response may still be in the socket. A record only
    /// partly received (`framing`) holds such bytes too. Pooled, either would be read as the
    /// answer to the next request, perhaps another consumer's (`tests/provider_responses.rs`).
    pub fn is_clean(&self) -> bool {
        !self.eof
            && !self.read_ready
            && self.framing.at_boundary()
            && self.inbuf.is_empty()
            && !self.tls.is_handshaking()
            && !self.tls.wants_write()
    }
}

/// Who a provider connection belongs to, by `Upstream::id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Nobody,
    /// The consumer connection with this key: in its exchange, or kept between its requests.
    Consumer(usize),
}

/// The owner of every provider connection on one worker, indexed by descriptor. An entry is
/// written whenever a connection changes hands and never removed: a closed descriptor gets no
/// more events, and the next socket given the same number writes its own entry when it is
/// registered. So an entry may be stale, and whoever it names checks that it still holds
/// a connection with that id before acting on an event.
#[derive(Debug, Default)]
pub struct Owners(Vec<Owner>);

impl Owners {
    pub fn set(&mut self, id: usize, owner: Owner) {
        if self.0.len() <= id {
            self.0.resize(id + 1, Owner::Nobody);
        }
        self.0[id] = owner;
    }

    pub fn get(&self, id: usize) -> Owner {
        self.0.get(id).copied().unwrap_or(Owner::Nobody)
    }
}

/// The provider connection a consumer connection keeps between its requests, for its own next
/// request only. A provider connection is never handed to another consumer connection: bytes
/// a provider sends after its response (a bug, or a second answer) can arrive at any time,
/// after any check made when the connection is taken, and would be read as the answer to the
/// next request on it. Kept this way, they can only reach the consumer connection whose
/// request they followed, as they would on a direct connection (SECURITY.md).
pub struct Kept {
    pub up: Upstream,
    pub since: Instant,
    /// The provider TLS configuration it was made under: a reload that replaces it (and so
    /// perhaps the routes, whose index `up.route` is) retires the connection.
    made_under: Arc<rustls::ClientConfig>,
    _slot: Slot,
}

impl Kept {
    /// Whether it may carry a request to the provider endpoint `route` under the provider TLS
    /// configuration `config`, at `now`: same provider endpoint (`Shared::routes`), same configuration, not
    /// idle past `idle_timeout`.
    pub fn fits(
        &self,
        route: usize,
        config: &Arc<rustls::ClientConfig>,
        now: Instant,
        idle_timeout: Duration,
    ) -> bool {
        self.up.route == route && Arc::ptr_eq(&self.made_under, config) && !self.expired(now, idle_timeout)
    }

    pub fn expired(&self, now: Instant, idle_timeout: Duration) -> bool {
        now.saturating_duration_since(self.since) >= idle_timeout
    }
}

/// How many provider connections consumer connections keep, per provider endpoint, on one
/// worker, for `pool_max_idle`.
#[derive(Default)]
pub struct KeptCounts(Vec<Arc<AtomicUsize>>);

impl KeptCounts {
    pub fn new(providers: usize) -> KeptCounts {
        KeptCounts((0..providers).map(|_| Arc::default()).collect())
    }

    /// Keeps `up` if its endpoint has fewer than `max` kept (`None`: no cap); else it is
    /// dropped, which closes it.
    pub fn keep(
        &self,
        up: Upstream,
        made_under: Arc<rustls::ClientConfig>,
        max: Option<usize>,
        now: Instant,
    ) -> Option<Kept> {
        let count = self.0.get(up.route)?;
        if max.is_some_and(|max| count.load(Ordering::Relaxed) >= max) {
            return None;
        }
        count.fetch_add(1, Ordering::Relaxed);
        Some(Kept {
            up,
            since: now,
            made_under,
            _slot: Slot(count.clone()),
        })
    }
}

/// One place in a `KeptCounts` count, given back when the kept connection is used or dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
