//! The load generator of `scripts/bench` and `scripts/soak`: blocking mutual-TLS clients, one
//! thread per connection, with an HDR latency histogram.
//!
//!     cargo run --release --example loadgen -- [OPTIONS]
//!
//! Modes (`--mode`):
//! - `keepalive` (default): each connection sends requests one after another on one kept-alive
//!   TLS connection (reconnecting only if the server closes it).
//! - `connect`: a new TCP + mutual-TLS connection per request, full handshake every time
//!   (session resumption is off in every mode), `close_notify` after the response.
//! - `idle`: opens `--connections` kept-alive connections (`--threads` at a time), proves each
//!   with one request (2xx required), prints its result line and then holds them, sending
//!   nothing, until it is killed (SIGTERM/SIGINT): for measuring a server's memory per
//!   connection.
//!
//! Load shape: closed loop by default (each connection sends its next request as soon as the
//! previous answer is complete). With `--rate R` it is open loop at R requests/s in total:
//! connection i of N sends its k-th request at the intended time start + (k*N + i) / R, and
//! latency is measured from that intended time, not from when the request was actually
//! written, so a server that stalls is charged for every request that queued behind the stall
//! (no coordinated omission). If the generator falls behind it sends at once and the lateness
//! counts. `service_*` fields are measured from the actual write, for comparison.
//!
//! Options (defaults in brackets): `--target ADDR` [127.0.0.1:8443], `--server-name NAME`
//! [localhost], `--ca PEM` [fixtures/pki/nhs-ca.pem], `--cert PEM` [fixtures/pki/consumer-a.pem],
//! `--key PEM` [fixtures/pki/consumer-a.key], `--path TARGET` (request target of the built-in
//! SSP request) [/https://localhost:9443/Prescription-Exemptions/1.0.0/search?patient=9000000009],
//! `--request-file FILE` (raw request bytes sent as they are, instead of the built-in one),
//! `--connections N` [8], `--duration SECONDS` [5], `--warmup SECONDS` [0] (run, but do not
//! count, before the measured window), `--rate R` [0 = closed loop], `--threads N` [4] (idle
//! mode: handshakes in parallel), `--label TEXT` (copied to the output).
//!
//! Output: one JSON line on stdout (requests, ok = 2xx, non2xx, errors = I/O or TLS failures
//! and broken responses, statuses, rps over the measured window (the scheduled duration, or up
//! to the last answer when an open-loop run fell behind and ended late), latency percentiles in
//! microseconds, the generator's own CPU seconds, the negotiated TLS suite and group), and a
//! one-line summary on stderr.
//!
//! It must not be the bottleneck: `scripts/bench` pins it to its own CPU, reports its CPU use
//! (`cpu_s` / wall time) next to every figure, and measures the provider called directly with
//! the same generator as the ceiling the proxies are compared to.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// An unsigned (`alg: none`) JWT as PECS consumers send (the one `ssp demo` prints).
const JWT: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2Rpc3BlbnNlci1hLmV4YW1wbGUubmhzLnVrIiwic3ViIjoiMSIsInJlYXNvbl9mb3JfcmVxdWVzdCI6ImRpcmVjdGNhcmUiLCJyZXF1ZXN0aW5nX29yZ2FuaXphdGlvbiI6IkZBMTIzIn0.";
const INTERACTION: &str =
    "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions";

const HELP: &str = "loadgen: mutual-TLS load generator (scripts/bench, scripts/soak)
  --mode keepalive|connect|idle   [keepalive]  connect: a full handshake per request;
                                  idle: open --connections, one request each, then hold until killed
  --target IP:PORT [127.0.0.1:8443]   --server-name NAME [localhost]
  --ca PEM --cert PEM --key PEM   [fixtures/pki/nhs-ca.pem, consumer-a.pem, consumer-a.key]
  --path TARGET                   request target of the built-in SSP request
  --request-file FILE             raw request bytes instead of the built-in request
  --connections N [8]  --duration S [5]  --warmup S [0]  --threads N [4] (idle mode)
  --rate R [0]                    0: closed loop; else open loop at R req/s in total,
                                  latency from each request's intended send time
  --label TEXT                    copied to the output
Output: one JSON line on stdout, a summary on stderr.";

type Stream = StreamOwned<ClientConnection, TcpStream>;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    KeepAlive,
    Connect,
    Idle,
}

struct Opts {
    target: SocketAddr,
    server_name: ServerName<'static>,
    request: Vec<u8>,
    mode: Mode,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    rate: f64,
    threads: usize,
    label: String,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg} (see the comment at the top of examples/loadgen.rs)");
    std::process::exit(2)
}

fn parse_args() -> (Opts, Arc<ClientConfig>) {
    let pki = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pki/");
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--help" || a == "-h" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let Some(name) = a.strip_prefix("--") else {
            usage(&format!("unexpected argument {a}"))
        };
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("--{name} needs a value")));
        kv.insert(name.to_string(), value);
    }
    let mut take = |name: &str, default: &str| {
        kv.remove(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let num = |name: &str, v: String| -> f64 {
        v.parse()
            .unwrap_or_else(|_| usage(&format!("--{name}: not a number: {v}")))
    };
    let target = take("target", "127.0.0.1:8443")
        .parse()
        .unwrap_or_else(|_| usage("--target: IP:port expected"));
    let server_name = ServerName::try_from(take("server-name", "localhost"))
        .unwrap_or_else(|_| usage("--server-name: not a DNS name or IP"));
    let ca = take("ca", &format!("{pki}nhs-ca.pem"));
    let cert = take("cert", &format!("{pki}consumer-a.pem"));
    let key = take("key", &format!("{pki}consumer-a.key"));
    let path = take(
        "path",
        "/https://localhost:9443/Prescription-Exemptions/1.0.0/search?patient=9000000009",
    );
    let request = match take("request-file", "") {
        f if !f.is_empty() => std::fs::read(&f).unwrap_or_else(|e| usage(&format!("{f}: {e}"))),
        _ => format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n\
             Ssp-TraceID: 5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44\r\nSsp-From: 200000000001\r\n\
             Ssp-To: 200000000999\r\nSsp-InteractionID: {INTERACTION}\r\n\
             Authorization: Bearer {JWT}\r\nAccept: application/fhir+json\r\n\r\n"
        )
        .into_bytes(),
    };
    let mode = match take("mode", "keepalive").as_str() {
        "keepalive" => Mode::KeepAlive,
        "connect" => Mode::Connect,
        "idle" => Mode::Idle,
        m => usage(&format!("--mode: keepalive, connect or idle, not {m}")),
    };
    let connections = num("connections", take("connections", "8")) as usize;
    let duration = Duration::from_secs_f64(num("duration", take("duration", "5")));
    let warmup = Duration::from_secs_f64(num("warmup", take("warmup", "0")));
    let rate = num("rate", take("rate", "0"));
    let threads = (num("threads", take("threads", "4")) as usize).max(1);
    let label = take("label", "");
    if let Some(k) = kv.keys().next() {
        usage(&format!("unknown option --{k}"));
    }
    if connections == 0 {
        usage("--connections must be at least 1");
    }

    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca)
        .unwrap_or_else(|e| usage(&format!("{ca}: {e}")))
        .flatten()
    {
        roots.add(c).unwrap_or_else(|e| usage(&format!("{ca}: {e}")));
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&cert)
        .unwrap_or_else(|e| usage(&format!("{cert}: {e}")))
        .flatten()
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| usage(&format!("{key}: {e}")));
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| usage(&format!("client certificate: {e}")));
    // Every new connection is a full handshake: what a new consumer costs the server.
    config.resumption = Resumption::disabled();
    let opts = Opts {
        target,
        server_name,
        request,
        mode,
        connections,
        duration,
        warmup,
        rate,
        threads,
        label,
    };
    (opts, Arc::new(config))
}

/// What one thread saw; merged at the end.
struct Stats {
    /// From the intended send time (open loop) or the actual one (closed loop), nanoseconds.
    latency: Histogram<u64>,
    /// From the actual write of the request, nanoseconds.
    service: Histogram<u64>,
    ok: u64,
    non2xx: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    first_error: Option<String>,
    tls: Option<String>,
    /// When the last counted answer arrived: an open-loop run that fell behind ends late, and
    /// its achieved rate is over the real span, not the scheduled one.
    last: Option<Instant>,
}

impl Stats {
    fn new() -> Stats {
        let h = || Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds");
        Stats {
            latency: h(),
            service: h(),
            ok: 0,
            non2xx: 0,
            errors: 0,
            statuses: BTreeMap::new(),
            first_error: None,
            tls: None,
            last: None,
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, other: Stats) {
        self.latency.add(&other.latency).expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
        self.ok += other.ok;
        self.non2xx += other.non2xx;
        self.errors += other.errors;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if self.tls.is_none() {
            self.tls = other.tls;
        }
        self.last = self.last.max(other.last);
    }
}

fn connect(o: &Opts, config: &Arc<ClientConfig>) -> Result<Stream, String> {
    let mut sock = TcpStream::connect_timeout(&o.target, Duration::from_secs(5))
        .map_err(|e| format!("connect {}: {e}", o.target))?;
    sock.set_nodelay(true).ok();
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    sock.set_write_timeout(Some(Duration::from_secs(30))).ok();
    let mut conn =
        ClientConnection::new(config.clone(), o.server_name.clone()).map_err(|e| format!("tls: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(StreamOwned::new(conn, sock))
}

fn tls_name(s: &Stream) -> String {
    let suite = s
        .conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    let group = s
        .conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_default();
    format!("{suite}/{group}")
}

/// Writes the request and reads one whole response. Returns (status, server keeps it open).
fn exchange(s: &mut Stream, request: &[u8], got: &mut Vec<u8>) -> Result<(u16, bool), String> {
    s.write_all(request).map_err(|e| format!("write: {e}"))?;
    got.clear();
    let mut scratch = [0u8; 16 * 1024];
    // (status, head length, body framing, keep-alive) once the head is complete.
    let mut head: Option<(u16, usize, Option<usize>, bool, bool)> = None;
    loop {
        let n = match s.read(&mut scratch) {
            Ok(n) => n,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            return match head {
                // Framed by the end of the connection.
                Some((status, _, None, false, _)) => Ok((status, false)),
                _ => Err("connection closed before the response was complete".into()),
            };
        }
        got.extend_from_slice(&scratch[..n]);
        if head.is_none() {
            let mut fields = [httparse::EMPTY_HEADER; 48];
            let mut resp = httparse::Response::new(&mut fields);
            match resp.parse(got) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let (mut length, mut chunked, mut close) = (None, false, false);
                    for f in resp.headers.iter() {
                        let value = String::from_utf8_lossy(f.value).to_ascii_lowercase();
                        if f.name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().ok();
                        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.contains("chunked");
                        } else if f.name.eq_ignore_ascii_case("connection") {
                            close = value.contains("close");
                        }
                    }
                    if status == 204 || status == 304 {
                        length = Some(0);
                    }
                    let keep = !close && (length.is_some() || chunked);
                    head = Some((status, len, length, chunked, keep));
                }
                Ok(httparse::Status::Partial) => continue,
                Err(e) => return Err(format!("bad response head: {e}")),
            }
        }
        if let Some((status, len, length, chunked, keep)) = head {
            let body = &got[len..];
            let complete = match (length, chunked) {
                (Some(l), _) => body.len() >= l,
                // Good enough for a benchmark: the last chunk, no trailers.
                (None, true) => body.ends_with(b"0\r\n\r\n"),
                (None, false) => false,
            };
            if complete {
                return Ok((status, keep));
            }
        }
    }
}

fn close(mut s: Stream) {
    s.conn.send_close_notify();
    let _ = s.conn.complete_io(&mut s.sock);
}

/// One connection's loop for the keepalive and connect modes.
fn drive(
    o: Arc<Opts>,
    config: Arc<ClientConfig>,
    index: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Stats {
    let mut stats = Stats::new();
    let mut stream: Option<Stream> = None;
    let mut got = Vec::with_capacity(64 * 1024);
    // Open loop: this connection's share of the schedule.
    let interval = if o.rate > 0.0 {
        Some(Duration::from_secs_f64(o.connections as f64 / o.rate))
    } else {
        None
    };
    // Everyone starts together (the threads are spawned just before `start`).
    if let Some(wait) = start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let mut next = start + Duration::from_secs_f64(if o.rate > 0.0 { index as f64 / o.rate } else { 0.0 });
    loop {
        let now = Instant::now();
        let intended = match interval {
            Some(step) => {
                let t = next;
                next += step;
                if t >= end {
                    break;
                }
                if t > now {
                    std::thread::sleep(t - now);
                }
                t
            }
            None => {
                if now >= end {
                    break;
                }
                now
            }
        };
        let counted = intended >= measure_from;
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match connect(&o, &config) {
                Ok(s) => {
                    if stats.tls.is_none() {
                        stats.tls = Some(tls_name(&s));
                    }
                    stream.insert(s)
                }
                Err(e) => {
                    if counted {
                        stats.error(e);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match exchange(s, &o.request, &mut got) {
            Ok((status, keep)) => {
                let done = Instant::now();
                if counted {
                    stats.last = Some(done);
                    *stats.statuses.entry(status).or_default() += 1;
                    if (200..300).contains(&status) {
                        stats.ok += 1;
                        let ns = |d: Duration| (d.as_nanos() as u64).max(1_000);
                        stats.latency.saturating_record(ns(done - intended));
                        stats.service.saturating_record(ns(done - sent));
                    } else {
                        stats.non2xx += 1;
                    }
                }
                if (!keep || o.mode == Mode::Connect)
                    && let Some(s) = stream.take()
                {
                    close(s);
                }
            }
            Err(e) => {
                if counted {
                    stats.error(e);
                }
                stream = None;
            }
        }
    }
    if let Some(s) = stream.take() {
        close(s);
    }
    stats
}

/// Idle mode: open, prove with one request, hand back the held connections.
fn open_idle(o: &Opts, config: &Arc<ClientConfig>, count: usize, stats: &mut Stats) -> Vec<Stream> {
    let mut held = Vec::with_capacity(count);
    let mut got = Vec::with_capacity(16 * 1024);
    for _ in 0..count {
        let mut s = match connect(o, config) {
            Ok(s) => s,
            Err(e) => {
                stats.error(e);
                continue;
            }
        };
        if stats.tls.is_none() {
            stats.tls = Some(tls_name(&s));
        }
        match exchange(&mut s, &o.request, &mut got) {
            Ok((status, keep)) => {
                *stats.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) && keep {
                    stats.ok += 1;
                    held.push(s);
                } else {
                    stats.non2xx += 1;
                }
            }
            Err(e) => stats.error(e),
        }
    }
    held
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let (o, config) = parse_args();
    let o = Arc::new(o);
    // Sleeps end when asked (default timer slack is 50 µs), so the open-loop schedule is kept
    // closely; a late wake-up still counts as latency, for every target alike.
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack (inherited by threads).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let t0 = Instant::now();

    if o.mode == Mode::Idle {
        let threads = o.threads.min(o.connections);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (o, config) = (o.clone(), config.clone());
                let count = o.connections / threads + usize::from(t < o.connections % threads);
                std::thread::spawn(move || {
                    let mut stats = Stats::new();
                    let held = open_idle(&o, &config, count, &mut stats);
                    (held, stats)
                })
            })
            .collect();
        let mut stats = Stats::new();
        let mut held = Vec::new();
        for h in handles {
            let (h, s) = h.join().expect("idle thread");
            held.extend(h);
            stats.merge(s);
        }
        let wall = t0.elapsed().as_secs_f64();
        report(&o, &stats, wall, Some(held.len()));
        // Hold them until killed; nothing is sent or read.
        loop {
            std::thread::park();
        }
    }

    let start = t0 + Duration::from_millis(20);
    let measure_from = start + o.warmup;
    let end = measure_from + o.duration;
    let handles: Vec<_> = (0..o.connections)
        .map(|i| {
            let (o, config) = (o.clone(), config.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || drive(o, config, i, start, measure_from, end))
                .expect("spawn")
        })
        .collect();
    let mut stats = Stats::new();
    for h in handles {
        stats.merge(h.join().expect("connection thread"));
    }
    // The measured window: as scheduled, or longer when answers came in late.
    let window = stats
        .last
        .map_or(o.duration, |last| (last - measure_from).max(o.duration));
    report(&o, &stats, window.as_secs_f64(), None);
}

fn report(o: &Opts, s: &Stats, window: f64, held: Option<usize>) {
    let us = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            (h.value_at_quantile(q) as f64 / 1000.0 * 10.0).round() / 10.0
        }
    };
    let requests = s.ok + s.non2xx;
    let statuses: serde_json::Map<String, serde_json::Value> = s
        .statuses
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    let line = serde_json::json!({
        "label": o.label,
        "mode": match o.mode { Mode::KeepAlive => "keepalive", Mode::Connect => "connect", Mode::Idle => "idle" },
        "target": o.target.to_string(),
        "connections": o.connections,
        "rate": o.rate,
        "duration_s": window,
        "requests": requests,
        "ok": s.ok,
        "non2xx": s.non2xx,
        "errors": s.errors,
        "statuses": statuses,
        "first_error": s.first_error,
        "rps": if held.is_some() { 0.0 } else { (s.ok as f64 / window * 10.0).round() / 10.0 },
        "p50_us": us(&s.latency, 0.50),
        "p90_us": us(&s.latency, 0.90),
        "p99_us": us(&s.latency, 0.99),
        "p999_us": us(&s.latency, 0.999),
        "max_us": us(&s.latency, 1.0),
        "mean_us": (s.latency.mean() / 100.0).round() / 10.0,
        "service_p50_us": us(&s.service, 0.50),
        "service_p99_us": us(&s.service, 0.99),
        "service_p999_us": us(&s.service, 0.999),
        "held": held,
        "cpu_s": (cpu_seconds() * 1000.0).round() / 1000.0,
        "tls": s.tls,
    });
    println!("{line}");
    io::stdout().flush().ok();
    eprintln!(
        "loadgen {}: {} ok, {} non-2xx, {} errors{}; p50 {} µs, p99 {} µs, p99.9 {} µs{}",
        o.target,
        s.ok,
        s.non2xx,
        s.errors,
        match held {
            Some(n) => format!(", {n} connections held"),
            None => format!(", {:.0} req/s", s.ok as f64 / window),
        },
        us(&s.latency, 0.5),
        us(&s.latency, 0.99),
        us(&s.latency, 0.999),
        s.first_error
            .as_ref()
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default()
    );
}
