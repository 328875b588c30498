//! SPEC section 6 admin endpoint: `/healthz`, `/readyz` and `/metrics` over plain HTTP/1.1.
//!
//! One thread with a blocking listener answers one request per connection and closes it. It is
//! never on the proxy's path: the event loops only bump atomics in [`Metrics`]; everything slow
//! (rendering, the health and sample closures, a client that stalls) happens on this thread.
//! A client that stalls holds it for at most `HEAD_DEADLINE` in all, not per read, so a
//! scraper queued behind it is answered soon after.
//!
//! There is no authentication, so by default it only listens on loopback.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, Sample};

/// Time to receive a whole request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time for a client to take the answer; a scrape is a few KiB.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so the thread does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    if !allow_remote && !is_loopback(addr.ip()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "admin endpoint {addr}: not a loopback address; it is plain HTTP without \
                 authentication, so it must be explicitly allowed to listen beyond this host"
            ),
        ));
    }
    let context = |e: io::Error| io::Error::new(e.kind(), format!("admin endpoint {addr}: {e}"));
    let listener = TcpListener::bind(addr).map_err(context)?;
    let bound = listener.local_addr().map_err(context)?;
    let endpoint = Endpoint {
        metrics,
        health,
        extra,
    };
    let thread = thread::Builder::new()
        .name("ssp-admin".into())
        .spawn(move || serve(&listener, &endpoint))
        .map_err(context)?;
    Ok((bound, thread))
}

/// `127.0.0.0/8`, `::1`, and `::ffff:127.x.y.z` (what a dual-stack socket shows for IPv4).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

fn serve(listener: &TcpListener, endpoint: &Endpoint) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                // A probe that goes wrong is the prober's problem; it must not stop the thread.
                if let Err(e) = answer(stream, endpoint) {
                    log::debug!("admin endpoint: {peer}: {e}");
                }
            }
            Err(e) => {
                log::warn!("admin endpoint: accept: {e}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
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

enum HeadError {
    /// The client went away before sending a whole head: nothing to answer.
    Closed,
    Timeout,
    TooLarge,
    Io(io::Error),
}

fn answer(mut stream: TcpStream, endpoint: &Endpoint) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut buf = [0u8; MAX_HEAD_BYTES];
    let (reply, head_only) = match read_head(&mut stream, &mut buf, Instant::now() + HEAD_DEADLINE) {
        Ok(len) => match request_line(&buf[..len]) {
            Some((method, target)) => (route(method, target, endpoint), method == "HEAD"),
            None => (Reply::text(400, "bad request\n"), false),
        },
        Err(HeadError::Closed) => return Ok(()),
        Err(HeadError::Timeout) => (Reply::text(408, "request timeout\n"), false),
        Err(HeadError::TooLarge) => (Reply::text(431, "request head too large\n"), false),
        Err(HeadError::Io(e)) => return Err(e),
    };
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
    // One write: a second small one would wait on the client's delayed ACK (Nagle).
    stream.write_all(out.as_bytes())?;
    // Half-close, so the client reads the whole answer before it sees the end.
    stream.shutdown(Shutdown::Write)?;
    // Closing with unread input makes the kernel send a reset, which can destroy the answer
    // before the client reads it (a 431's oversized head, a body we ignored). Discard what has
    // already arrived, without waiting for more.
    stream.set_nonblocking(true)?;
    let mut discarded = 0;
    while discarded < 16 * MAX_HEAD_BYTES {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
    Ok(())
}

/// Reads until the blank line ending the head; returns the bytes read. The deadline covers
/// the whole head, so trickling a byte at a time buys a client nothing.
fn read_head(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize, HeadError> {
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HeadError::Timeout);
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        // Only the new bytes and the three before them can complete the terminator.
        let from = len.saturating_sub(3);
        len += n;
        if find(&buf[from..len], b"\r\n\r\n") || find(&buf[from..len], b"\n\n") {
            return Ok(len);
        }
        if len == buf.len() {
            return Err(HeadError::TooLarge);
        }
    }
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
    fn loopback_includes_ipv4_mapped_addresses() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "10.0.0.7", "::", "::ffff:10.0.0.7"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

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
