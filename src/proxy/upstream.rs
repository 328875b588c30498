//! Connections to providers, without their sockets: the proxy's own mutual TLS, what came
//! back, and the provider connection a consumer connection keeps for its next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::ClientConnection;
use rustls::pki_types::ServerName;

use super::tls_io::{self, RecordFraming};
use super::wire::Pipe;

/// One TLS connection to a provider. Its socket is the driver's, asked for with
/// `Action::Connect` under the same `id`.
pub struct Upstream {
    pub id: u64,
    pub tls: ClientConnection,
    /// The provider endpoint it is connected to (`Shared::routes`).
    pub route: usize,
    /// Plaintext received and not yet handled.
    pub inbuf: Vec<u8>,
    /// The last read found the pipe empty (rather than stopping at the stage limit).
    pub drained: bool,
    pub eof: bool,
    /// The provider ended its data with close_notify (see `BodyReader::finish_at_eof`).
    pub close_notify: bool,
    /// How far the provider's TLS records have arrived (see `is_clean`).
    pub framing: RecordFraming,
    /// Set once the TCP connect is known to have completed.
    pub connected: bool,
}

impl Upstream {
    /// A connection whose TCP connect the driver is about to start.
    pub fn new(
        id: u64,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        route: usize,
    ) -> Result<Box<Upstream>, String> {
        let tls = ClientConnection::new(config, server_name).map_err(|e| format!("tls: {e}"))?;
        Ok(Box::new(Upstream {
            id,
            tls,
            route,
            inbuf: Vec::new(),
            drained: false,
            eof: false,
            close_notify: false,
            framing: RecordFraming::default(),
            connected: false,
        }))
    }

    /// Whether an idle connection is still fit to carry a request: reads whatever arrived and
    /// answers no to a close, any plaintext (nothing is owed before a request) or a record
    /// still arriving. TLS traffic of its own, such as a session ticket, is fine.
    pub fn still_idle(&mut self, pipe: &mut dyn Pipe) -> bool {
        let mut unexpected = Vec::new();
        pipe.recheck();
        match tls_io::read(pipe, &mut self.tls, &mut unexpected, 1, Some(&mut self.framing)) {
            Ok(o) => {
                !o.eof
                    && unexpected.is_empty()
                    && self.framing.at_boundary()
                    && tls_io::flush(pipe, &mut self.tls).is_ok()
            }
            Err(_) => false,
        }
    }

    /// Whether it can carry another request: handshake done, nothing unread, peer still open.
    /// Not `drained`: the last read stopped at the stage limit, not at an empty pipe:
    /// bytes the provider sent after its response may still be in the socket. A record only
    /// partly received (`framing`) holds such bytes too. Pooled, either would be read as the
    /// answer to the next request, perhaps another consumer's (`tests/provider_responses.rs`).
    pub fn is_clean(&self) -> bool {
        !self.eof
            && self.drained
            && self.framing.at_boundary()
            && self.inbuf.is_empty()
            && !self.tls.is_handshaking()
            && !self.tls.wants_write()
    }
}

/// The provider connection a consumer connection keeps between its requests, for its own next
/// request only. A provider connection is never handed to another consumer connection: bytes
/// a provider sends after its response (a bug, or a second answer) can arrive at any time,
/// after any check made when the connection is taken, and would be read as the answer to the
/// next request on it. Kept this way, they can only reach the consumer connection whose
/// request they followed, as they would on a direct connection (SECURITY.md).
pub struct Kept {
    pub up: Box<Upstream>,
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
        up: Box<Upstream>,
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
