//! A first, simple load generator: blocking mutual-TLS clients on threads, closed loop.
//! `cargo run --release --example loadgen -- ADDR SECONDS THREADS [keepalive|connect]`
//! against `ssp demo` (ADDR 127.0.0.1:8443). Prints requests/s and latency percentiles.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const REQUEST: &str = "GET /https://localhost:9443/Prescription-Exemptions/1.0.0/search?patient=9000000009 HTTP/1.1\r\n\
Host: localhost\r\nSsp-TraceID: 5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44\r\nSsp-From: 200000000001\r\nSsp-To: 200000000999\r\n\
Ssp-InteractionID: urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions\r\n\
Authorization: Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.\r\n\r\n";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:8443".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let keepalive = args.get(4).is_none_or(|m| m != "connect");
    let pki = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pki/");
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(format!("{pki}nhs-ca.pem"))
        .expect("ca")
        .flatten()
    {
        roots.add(c).expect("root");
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(format!("{pki}consumer-a.pem"))
        .expect("cert")
        .flatten()
        .collect();
    let key = PrivateKeyDer::from_pem_file(format!("{pki}consumer-a.key")).expect("key");
    let config = Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client config"),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (config, addr) = (config.clone(), addr.clone());
            std::thread::spawn(move || run(config, &addr, deadline, keepalive))
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    latencies.sort();
    let n = latencies.len();
    let pct = |p: f64| {
        latencies
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} mode, {threads} threads, {seconds}s: {n} requests, {:.0} req/s, p50 {:?}, p99 {:?}, p99.9 {:?}",
        if keepalive {
            "keep-alive"
        } else {
            "new connection per request"
        },
        n as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
}

fn run(config: Arc<ClientConfig>, addr: &str, deadline: Instant, keepalive: bool) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut stream: Option<StreamOwned<ClientConnection, TcpStream>> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        let start = Instant::now();
        let s = stream.get_or_insert_with(|| {
            let sock = TcpStream::connect(addr).expect("connect");
            sock.set_nodelay(true).ok();
            let conn =
                ClientConnection::new(config.clone(), ServerName::try_from("localhost").expect("name"))
                    .expect("tls");
            StreamOwned::new(conn, sock)
        });
        if s.write_all(REQUEST.as_bytes()).is_err() {
            stream = None;
            continue;
        }
        // Read one response: head, then Content-Length bytes.
        let mut got = Vec::new();
        let complete = loop {
            let Ok(n) = s.read(&mut buf) else { break false };
            if n == 0 {
                break false;
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break head.starts_with("http/1.1 200");
                }
            }
        };
        if complete {
            latencies.push(start.elapsed());
        }
        if !complete || !keepalive {
            stream = None;
        }
    }
    latencies
}
