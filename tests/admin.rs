//! SPEC section 6, the admin endpoint: `/healthz`, `/readyz`, `/metrics` over plain HTTP on
//! loopback, fetched the way a probe or a Prometheus scraper would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ssp::admin::{self, Health};
use ssp::metrics::{Kind, Metrics, Sample};

/// Far beyond the endpoint's 2 s head deadline: only a hang fails a test.
const GENEROUS: Duration = Duration::from_secs(20);

struct Admin {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
}

fn healthy() -> Health {
    Health {
        live: true,
        ready: true,
        reasons: Vec::new(),
    }
}

fn start() -> Admin {
    let metrics = Metrics::new();
    let health = Arc::new(Mutex::new(healthy()));
    let probe = Arc::clone(&health);
    let (addr, _thread) = admin::start(
        "127.0.0.1:0".parse().unwrap(),
        false,
        Arc::clone(&metrics),
        Arc::new(move || probe.lock().unwrap().clone()),
        Arc::new(|| {
            vec![Sample {
                name: "ssp_audit_records_total",
                help: "Audit records written.",
                kind: Kind::Counter,
                labels: Vec::new(),
                value: 7.0,
            }]
        }),
    )
    .expect("admin endpoint starts on loopback");
    Admin {
        addr,
        metrics,
        health,
    }
}

struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// Sends `raw` on a fresh connection and reads the answer to the end (the endpoint closes).
fn send(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    stream.write_all(raw).unwrap();
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> Response {
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the endpoint answers and closes");
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Response {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

#[test]
fn healthz_and_readyz_answer_ok_while_healthy() {
    let admin = start();
    let r = get(admin.addr, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(r.field("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.field("connection"), Some("close"));
    assert_eq!(r.field("content-length"), Some("3"));
    let r = get(admin.addr, "/readyz");
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
}

#[test]
fn readyz_turns_503_with_its_reasons_and_back() {
    let admin = start();
    *admin.health.lock().unwrap() = Health {
        live: true,
        ready: false,
        reasons: vec!["audit failing".into(), "CRL stale".into()],
    };
    let r = get(admin.addr, "/readyz");
    assert_eq!((r.status, r.body.as_str()), (503, "audit failing\nCRL stale\n"));
    assert_eq!(get(admin.addr, "/healthz").status, 200, "not ready is still live");

    admin.health.lock().unwrap().live = false;
    assert_eq!(get(admin.addr, "/healthz").status, 503);

    *admin.health.lock().unwrap() = healthy();
    assert_eq!(get(admin.addr, "/readyz").status, 200);
}

#[test]
fn metrics_show_the_requests_made_with_a_latency_histogram() {
    let admin = start();
    let m = &admin.metrics;
    m.request(200, None, Duration::from_millis(3));
    m.request(200, None, Duration::from_millis(40));
    m.request(
        403,
        Some("ASID_CHECK_FAILED_MESSAGESENDER_200000000001"),
        Duration::from_micros(300),
    );
    m.upstream(Duration::from_millis(2));
    m.connection_opened();
    m.handshake_failed("revoked");
    m.throttled();

    let r = get(admin.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.field("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.field("content-length"), Some(r.body.len().to_string().as_str()));
    let lines: Vec<&str> = r.body.lines().collect();
    for expected in [
        "# TYPE ssp_requests_total counter",
        "ssp_requests_total{status=\"200\",token=\"\"} 2",
        "ssp_requests_total{status=\"403\",token=\"ASID_CHECK_FAILED_MESSAGESENDER\"} 1",
        "# TYPE ssp_request_duration_seconds histogram",
        "ssp_request_duration_seconds_bucket{le=\"0.0005\"} 1",
        "ssp_request_duration_seconds_bucket{le=\"0.005\"} 2",
        "ssp_request_duration_seconds_bucket{le=\"+Inf\"} 3",
        "ssp_request_duration_seconds_count 3",
        "ssp_upstream_duration_seconds_count 1",
        "ssp_connections_active 1",
        "ssp_tls_handshake_failures_total{reason=\"revoked\"} 1",
        "ssp_throttled_total 1",
        "# TYPE ssp_audit_records_total counter",
        "ssp_audit_records_total 7",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{}", r.body);
    }
    // Every sample line is `name{labels} value`.
    for line in lines.iter().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect(line);
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
    }

    m.request(200, None, Duration::from_millis(1));
    let again = get(admin.addr, "/metrics").body;
    assert!(
        again.contains("ssp_requests_total{status=\"200\",token=\"\"} 3\n"),
        "{again}"
    );
}

#[test]
fn head_answers_the_fields_without_the_body() {
    let admin = start();
    let r = send(admin.addr, b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");
    let length: usize = r.field("content-length").unwrap().parse().unwrap();
    assert!(length > 0);
}

#[test]
fn other_paths_methods_and_malformed_heads_are_refused() {
    let admin = start();
    assert_eq!(get(admin.addr, "/").status, 404);
    assert_eq!(get(admin.addr, "/metrics/x").status, 404);
    assert_eq!(get(admin.addr, "/metrics?name[]=ssp_requests_total").status, 200);
    let r = send(
        admin.addr,
        b"POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.field("allow"), Some("GET, HEAD"));
    assert_eq!(send(admin.addr, b"GET /metrics\r\n\r\n").status, 400);
    assert_eq!(
        send(admin.addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n").status,
        400
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(9 * 1024, b'a');
    assert_eq!(send(admin.addr, &huge).status, 431);
    // Still serving after all that.
    assert_eq!(get(admin.addr, "/healthz").status, 200);
}

#[test]
fn a_non_loopback_address_is_refused_unless_allowed() {
    let never = Arc::new(|| -> Health { unreachable!() });
    let none = Arc::new(Vec::new);
    let error = admin::start("0.0.0.0:0".parse().unwrap(), false, Metrics::new(), never, none)
        .expect_err("0.0.0.0 is refused without allow_remote");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("0.0.0.0:0"), "{error}");
    assert!(error.to_string().contains("loopback"), "{error}");
}

#[test]
fn a_silent_client_does_not_hold_up_the_next_request() {
    let admin = start();
    let mut silent = TcpStream::connect(admin.addr).unwrap();
    silent.set_read_timeout(Some(GENEROUS)).unwrap();
    let started = Instant::now();
    let r = get(admin.addr, "/healthz");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < GENEROUS);
    // The silent one was given up on: a 408, or closed if the endpoint had not yet read it.
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("closed by the endpoint, not by our timeout");
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn curl_can_scrape_it() {
    let Ok(version) = Command::new("curl").arg("--version").output() else {
        eprintln!("curl not on PATH; skipped");
        return;
    };
    assert!(version.status.success());
    let admin = start();
    admin.metrics.request(200, None, Duration::from_millis(1));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code} %{content_type}"])
        .arg(format!("http://{}/metrics", admin.addr))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, trailer) = text.rsplit_once('\n').unwrap();
    assert_eq!(trailer, "200 text/plain; version=0.0.4; charset=utf-8");
    assert!(
        body.contains("ssp_requests_total{status=\"200\",token=\"\"} 1\n"),
        "{body}"
    );
}

/// Silent connections hold a slot each, not the endpoint: a probe among them is answered
/// while they are all still waiting (before, each held the one thread for 2 s in turn, and
/// 15 of them kept `/healthz` from answering for 30 s). Past 64, the oldest silent one gives
/// way to the newcomer.
#[test]
fn a_probe_is_answered_while_silent_connections_wait() {
    let admin = start();
    for count in [15, 80] {
        let silent: Vec<TcpStream> = (0..count)
            .map(|_| TcpStream::connect(admin.addr).unwrap())
            .collect();
        assert_eq!(
            get(admin.addr, "/healthz").status,
            200,
            "{count} silent connections"
        );
        let mut waiting = 0;
        for mut s in silent {
            s.set_nonblocking(true).unwrap();
            let still_open =
                matches!(s.read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            waiting += usize::from(still_open);
        }
        // All of them with 15; the newest 64, less the probe's own slot, with 80.
        assert!(
            waiting >= count.min(63),
            "{count} silent, {waiting} still waiting"
        );
    }
}
