//! SPEC section 6 admin endpoint: `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1.
//!
//! One thread with its own `mio` poll answers one request per connection and closes it, serving
//! every open connection at once. It is never on the proxy's path: the event loops only bump
//! atomics in [`Metrics`]; everything slow (rendering, the health and sample closures) happens
//! on this thread. A client that connects and stalls holds a slot for at most `HEAD_DEADLINE`,
//! never the thread: a probe beside it is answered at once.
//!
//! There is no authentication, so by default it only listens on loopback.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::metrics::{Metrics, Sample};

/// Time to receive a whole request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time for a client to take the answer; a scrape is a few KiB.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Connections served at once; beyond it a new one closes the oldest still sending its head.
const MAX_CONNS: usize = 64;
const LISTENER: Token = Token(usize::MAX);

/// What `/healthz` and `/readyz` report, asked of the caller on every probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The process works at all (its event loops turn).
    pub live: bool,
    /// It can serve requests now.
    pub ready: bool,
    /// Why not ready, one short phrase each, e.g. "audit failing", "CRL stale".
    pub reasons: Vec<String>,
}

/// Everything a request may need; cloned `Arc`s moved onto the admin thread.
struct Endpoint {
    metrics: Arc<Metrics>,
    health: Arc<dyn Fn() -> Health + Send + Sync>,
    extra: Arc<dyn Fn() -> Vec<Sample> + Send + Sync>,
}

/// Binds `addr` and serves it on a thread of its own. Returns the bound address (useful with
/// port 0) and the thread, which runs for the life of the process.
///
/// A non-loopback address is refused with [`io::ErrorKind::InvalidInput`] unless
/// `allow_remote`: the endpoint has no authentication, and metrics name consumers' refusals.
pub fn start(
    addr: SocketAddr,
    allow_remote: bool,
    metrics: Arc<Metrics>,
    health: Arc<dyn Fn() -> Health + Send + Sync>,
    extra: Arc<dyn Fn() -> Vec<Sample> + Send + Sync>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    crate::config::admin_exposure(addr, allow_remote)
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, format!("admin endpoint: {why}")))?;
    let context = |e: io::Error| io::Error::new(e.kind(), format!("admin endpoint {addr}: {e}"));
    let listener = std::net::TcpListener::bind(addr).map_err(context)?;
    listener.set_nonblocking(true).map_err(context)?;
    let bound = listener.local_addr().map_err(context)?;
    let listener = TcpListener::from_std(listener);
    let endpoint = Endpoint {
        metrics,
        health,
        extra,
    };
    let thread = thread::Builder::new()
        .name("ssp-admin".into())
        .spawn(move || {
            if let Err(e) = serve(listener, &endpoint) {
                log::error!("admin endpoint {bound} stopped: {e}");
            }
        })
        .map_err(context)?;
    Ok((bound, thread))
}

/// A synthesised answer; `answer` adds the framing fields.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }
}

/// One admin connection: its request head as it arrives, then its answer as it leaves.
struct Conn {
    stream: TcpStream,
    head: Vec<u8>,
    /// The answer, once the head is in (or could not be).
    out: Option<Vec<u8>>,
    written: usize,
    /// For the head: `HEAD_DEADLINE` from the accept; for the answer: `WRITE_TIMEOUT` from
    /// when it was ready.
    deadline: Instant,
}

/// Serves every connection at once on one `mio` poll: a client that connects and says
/// nothing holds a slot, not the thread, so a probe behind it is answered at once. With
/// `MAX_CONNS` open, a new connection closes the oldest one still sending its head.
fn serve(mut listener: TcpListener, endpoint: &Endpoint) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(64);
    let mut conns: Slab<Conn> = Slab::new();
    loop {
        let next = conns.iter().map(|(_, c)| c.deadline).min();
        let timeout = next.map(|t| t.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut conns);
            } else if let Some(conn) = conns.get_mut(event.token().0)
                && !advance(conn, endpoint, Instant::now())
            {
                close(&poll, &mut conns, event.token().0);
            }
        }
        let now = Instant::now();
        let late: Vec<usize> = conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            let Some(conn) = conns.get_mut(key) else { continue };
            let keep = conn.out.is_none() && {
                // A head not in by its deadline: 408, with its own time to leave.
                conn.out = Some(render(&Reply::text(408, "request timeout\n"), false));
                conn.deadline = now + WRITE_TIMEOUT;
                advance(conn, endpoint, now)
            };
            if !keep {
                close(&poll, &mut conns, key);
            }
        }
    }
}

fn accept(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors and the like: the next readiness event retries.
                log::warn!("admin endpoint: accept: {e}");
                return;
            }
        };
        if conns.len() >= MAX_CONNS {
            let oldest = conns
                .iter()
                .filter(|(_, c)| c.out.is_none())
                .min_by_key(|(_, c)| c.deadline)
                .map(|(k, _)| k);
            match oldest {
                Some(key) => close(poll, conns, key),
                None => {
                    log::debug!("admin endpoint: {peer}: refused, {MAX_CONNS} answers in progress");
                    continue;
                }
            }
        }
        let entry = conns.vacant_entry();
        if let Err(e) = poll.registry().register(
            &mut stream,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::debug!("admin endpoint: {peer}: {e}");
            continue;
        }
        entry.insert(Conn {
            stream,
            head: Vec::new(),
            out: None,
            written: 0,
            deadline: Instant::now() + HEAD_DEADLINE,
        });
    }
}

fn close(poll: &Poll, conns: &mut Slab<Conn>, key: usize) {
    if let Some(mut conn) = conns.try_remove(key) {
        let _ = poll.registry().deregister(&mut conn.stream);
    }
}

/// Reads the head, then writes the answer, as far as the socket allows; returns whether the
/// connection stays open.
fn advance(conn: &mut Conn, endpoint: &Endpoint, now: Instant) -> bool {
    if conn.out.is_none() {
        let answer = match read_head(conn) {
            Ok(None) => return true,
            Ok(Some(HeadEnd::TooLarge)) => render(&Reply::text(431, "request head too large\n"), false),
            Ok(Some(HeadEnd::Complete)) => match request_line(&conn.head) {
                Some((method, target)) => render(&route(method, target, endpoint), method == "HEAD"),
                None => render(&Reply::text(400, "bad request\n"), false),
            },
            Err(()) => return false,
        };
        conn.out = Some(answer);
        conn.deadline = now + WRITE_TIMEOUT;
    }
    let Some(out) = conn.out.as_ref() else { return true };
    while conn.written < out.len() {
        match conn.stream.write(&out[conn.written..]) {
            Ok(0) => return false,
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    // Half-close, so the client reads the whole answer before it sees the end. Closing with
    // unread input makes the kernel send a reset, which can destroy the answer before the
    // client reads it (a 431's oversized head, a body we ignored): discard what has already
    // arrived, without waiting for more.
    let _ = conn.stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < 16 * MAX_HEAD_BYTES {
        match conn.stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
    false
}

enum HeadEnd {
    /// The blank line ending it arrived.
    Complete,
    TooLarge,
}

/// Reads what has arrived; `Some` once the head ends (the blank line) or is too large, `Err`
/// when the client went away before a whole head (nothing to answer).
fn read_head(conn: &mut Conn) -> Result<Option<HeadEnd>, ()> {
    let mut chunk = [0u8; 1024];
    loop {
        let room = (MAX_HEAD_BYTES - conn.head.len()).min(chunk.len());
        if room == 0 {
            return Ok(Some(HeadEnd::TooLarge));
        }
        let n = match conn.stream.read(&mut chunk[..room]) {
            Ok(0) => return Err(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(()),
        };
        // Only the new bytes and the three before them can complete the terminator.
        let from = conn.head.len().saturating_sub(3);
        conn.head.extend_from_slice(&chunk[..n]);
        let tail = &conn.head[from..];
        if find(tail, b"\r\n\r\n") || find(tail, b"\n\n") {
            return Ok(Some(HeadEnd::Complete));
        }
    }
}

/// The whole answer in one buffer, written at once: a second small write would wait on the
/// client's delayed ACK (Nagle).
fn render(reply: &Reply, head_only: bool) -> Vec<u8> {
    let allow = if reply.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}\
         Connection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len(),
    );
    if !head_only {
        out.push_str(&reply.body);
    }
    out.into_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `METHOD SP target SP HTTP/1.x` from the first line; `None` when it is not that.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let well_formed = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && target.starts_with('/')
        && version.starts_with("HTTP/1.");
    well_formed.then_some((method, target))
}

fn route(method: &str, target: &str, endpoint: &Endpoint) -> Reply {
    // A query string changes nothing here, but scrapers and probes may add one.
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return Reply::text(404, "not found: try /healthz, /readyz or /metrics\n");
    }
    if method != "GET" && method != "HEAD" {
        return Reply::text(405, "method not allowed\n");
    }
    match path {
        "/healthz" => {
            if (endpoint.health)().live {
                Reply::text(200, "ok\n")
            } else {
                Reply::text(503, "not live\n")
            }
        }
        "/readyz" => readyz(&(endpoint.health)()),
        _ => Reply {
            status: 200,
            content_type: PROMETHEUS,
            body: endpoint.metrics.render(&(endpoint.extra)()),
        },
    }
}

/// Ready only when live too; otherwise 503 with one reason a line.
fn readyz(health: &Health) -> Reply {
    if health.live && health.ready {
        return Reply::text(200, "ready\n");
    }
    let mut body = String::new();
    if !health.live {
        body.push_str("not live\n");
    }
    for reason in &health.reasons {
        // A reason spanning lines would read as several.
        body.extend(
            reason
                .chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
        body.push('\n');
    }
    if body.is_empty() {
        body.push_str("not ready\n");
    }
    Reply::text(503, body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"HEAD /readyz?x=1 HTTP/1.0\n\n"),
            Some(("HEAD", "/readyz?x=1"))
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(request_line(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn readyz_lists_every_reason_and_counts_not_live_as_not_ready() {
        let health = |live, ready, reasons: &[&str]| Health {
            live,
            ready,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
        };
        let r = readyz(&health(true, true, &[]));
        assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
        let r = readyz(&health(true, false, &["audit failing", "CRL\nstale"]));
        assert_eq!((r.status, r.body.as_str()), (503, "audit failing\nCRL stale\n"));
        let r = readyz(&health(true, false, &[]));
        assert_eq!((r.status, r.body.as_str()), (503, "not ready\n"));
        let r = readyz(&health(false, true, &[]));
        assert_eq!((r.status, r.body.as_str()), (503, "not live\n"));
    }
}
