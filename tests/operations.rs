//! SPEC section 6 on the real binary: SIGHUP reloads as one swap (and refuses a broken
//! configuration whole), SIGTERM drains and exits 0, and systemd hears about each step.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::*;
use ssp::demo::provider::{Handler, Reply, SeenRequest};

/// `ssp run` on a harness configuration, with its log readable line by line.
struct Ssp {
    child: Child,
    addr: SocketAddr,
    log: Receiver<String>,
}

impl Ssp {
    fn start(config: &Path, notify_socket: Option<&Path>) -> Ssp {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssp"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        if let Some(socket) = notify_socket {
            // A watchdog of 400 ms: pings every 200 ms while the loops turn.
            cmd.env("NOTIFY_SOCKET", socket).env("WATCHDOG_USEC", "400000");
        }
        let mut child = cmd.spawn().expect("start ssp run");
        let stderr = child.stderr.take().unwrap();
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ssp = Ssp {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let line = ssp.wait_for_log("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap();
        ssp.addr = addr.parse().unwrap();
        ssp
    }

    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?} within 10 s"),
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn consumer(&self, who: &Who) -> Consumer {
        Consumer::connect(self.addr, client_config(who))
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ssp did not exit within 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ssp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(setup: &Setup, who: &Who, suffix: &str) -> Request {
    Request {
        method: "GET".into(),
        target: format!("/{}{suffix}", setup.endpoint),
        version: "HTTP/1.1",
        fields: vec![
            ("Host".into(), "localhost".into()),
            ("Ssp-TraceID".into(), TRACE_ID.into()),
            ("Ssp-From".into(), who.asid.into()),
            ("Ssp-To".into(), PROVIDER_ASID.into()),
            ("Ssp-InteractionID".into(), INTERACTION.into()),
            ("Authorization".into(), JWT.into()),
        ],
        body: Vec::new(),
    }
}

/// Gives consumer B the data-sharing agreement it lacks in the harness configuration.
fn grant_b_an_agreement(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    let without = format!(
        "asid = \"{}\"\nfqdn = \"{}\"\ninteractions = [\"{INTERACTION}\"]\nproviders = []",
        CONSUMER_B.asid, CONSUMER_B.fqdn
    );
    assert!(text.contains(&without), "harness config changed shape");
    let with = without.replace("providers = []", &format!("providers = [\"{PROVIDER_ASID}\"]"));
    std::fs::write(config, text.replace(&without, &with)).unwrap();
}

#[test]
fn sighup_puts_a_new_allowlist_in_force_and_open_connections_survive() {
    let setup = Setup::new(&Options::default());
    let ssp = Ssp::start(&setup.config, None);
    let mut a = ssp.consumer(&CONSUMER_A);
    let mut b = ssp.consumer(&CONSUMER_B);
    assert_eq!(a.exchange(&request(&setup, &CONSUMER_A, SEARCH)).status, 200);
    assert_eq!(b.exchange(&request(&setup, &CONSUMER_B, SEARCH)).status, 403);

    grant_b_an_agreement(&setup.config);
    ssp.signal(libc::SIGHUP);
    ssp.wait_for_log("reload:");

    assert_eq!(
        b.exchange(&request(&setup, &CONSUMER_B, SEARCH)).status,
        200,
        "new rules on an old connection"
    );
    assert_eq!(
        a.exchange(&request(&setup, &CONSUMER_A, SEARCH)).status,
        200,
        "kept-alive connection survives"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_serving() {
    let setup = Setup::new(&Options::default());
    let ssp = Ssp::start(&setup.config, None);
    let mut a = ssp.consumer(&CONSUMER_A);
    assert_eq!(a.exchange(&request(&setup, &CONSUMER_A, SEARCH)).status, 200);

    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("[limits]", "[limits]\nno_such_key = 1"),
    )
    .unwrap();
    ssp.signal(libc::SIGHUP);
    let line = ssp.wait_for_log("reload refused");
    assert!(line.contains("no_such_key"), "the refusal names the key: {line}");

    assert_eq!(a.exchange(&request(&setup, &CONSUMER_A, SEARCH)).status, 200);
    assert_eq!(
        ssp.consumer(&CONSUMER_A)
            .exchange(&request(&setup, &CONSUMER_A, SEARCH))
            .status,
        200
    );
}

/// A reload that names a FIFO (which nobody writes) is refused at once, and SIGTERM after it
/// still drains, seals and exits: before, the reload waited on the FIFO forever on the signal
/// thread, SIGTERM was never handled, and only SIGKILL stopped the proxy, its audit unsealed.
#[test]
fn a_reload_naming_a_fifo_is_refused_and_sigterm_still_stops() {
    let setup = Setup::new(&Options::default());
    let mut ssp = Ssp::start(&setup.config, None);
    let fifo = setup.dir.path().join("key.fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let key = format!("\"{}\"", pki("ssp.key").display());
    assert!(text.contains(&key), "harness config changed shape");
    std::fs::write(
        &setup.config,
        text.replace(&key, &format!("\"{}\"", fifo.display())),
    )
    .unwrap();

    ssp.signal(libc::SIGHUP);
    let line = ssp.wait_for_log("reload refused");
    assert!(line.contains("not a regular file"), "{line}");
    assert_eq!(
        ssp.consumer(&CONSUMER_A)
            .exchange(&request(&setup, &CONSUMER_A, SEARCH))
            .status,
        200,
        "the previous configuration keeps serving"
    );
    ssp.signal(libc::SIGTERM);
    assert!(ssp.wait_exit().success(), "exit 0 after draining");
    assert!(
        audit_text(&setup).contains("\"stop\""),
        "the audit was closed with its stop record"
    );
}

/// Every audit file's lines, in no particular file order.
fn audit_text(setup: &Setup) -> String {
    std::fs::read_dir(setup.dir.path().join("audit"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

/// A provider that answers 200 at once, but after `delay` when the target contains `marker`.
fn delaying(marker: &'static str, delay: Duration) -> Handler {
    Arc::new(move |req: &SeenRequest| {
        let mut reply = Reply::json(200, "{}");
        if req.target.contains(marker) {
            reply.delay = delay;
        }
        reply
    })
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let setup = Setup::new(&Options {
        handler: delaying("slow", Duration::from_millis(1000)),
        ..Options::default()
    });
    let mut ssp = Ssp::start(&setup.config, None);
    let mut in_flight = ssp.consumer(&CONSUMER_A);
    let mut idle = ssp.consumer(&CONSUMER_A);
    assert_eq!(idle.exchange(&request(&setup, &CONSUMER_A, SEARCH)).status, 200);
    in_flight.send(&request(&setup, &CONSUMER_A, "/slow")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while setup.seen.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the provider"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    ssp.signal(libc::SIGTERM);
    ssp.wait_for_log("stopping");

    let r = in_flight
        .read_response()
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200);
    idle.assert_closed();
    assert!(ssp.wait_exit().success(), "exit 0 after draining");
}

/// A balancer may hand over a connection just before SIGTERM: it gets its first request
/// served, with `Connection: close`, instead of a close before its request is read (one
/// request in 400 failed that way during a rolling restart behind HAProxy).
#[test]
fn sigterm_serves_the_first_request_of_a_connection_accepted_before_it() {
    let setup = Setup::new(&Options::default());
    let mut ssp = Ssp::start(&setup.config, None);
    let mut early = ssp.consumer(&CONSUMER_A);
    // Accepted (the worker has it), but not a byte sent yet: not even the TLS handshake.
    std::thread::sleep(Duration::from_millis(300));
    ssp.signal(libc::SIGTERM);
    ssp.wait_for_log("stopping");
    let r = early.exchange(&request(&setup, &CONSUMER_A, SEARCH));
    assert_eq!(r.status, 200, "the first request is served");
    assert_eq!(r.field("connection"), Some("close"), "and says it is the last");
    early.assert_closed();
    assert!(ssp.wait_exit().success(), "exit 0 after draining");
}

#[test]
fn sigterm_past_drain_timeout_still_gives_the_request_in_flight_its_res_record() {
    let setup = Setup::new(&Options {
        handler: delaying("stuck", Duration::from_secs(5)),
        limits: "drain_timeout = \"300ms\"".into(),
        ..Options::default()
    });
    let mut ssp = Ssp::start(&setup.config, None);
    let mut in_flight = ssp.consumer(&CONSUMER_A);
    in_flight.send(&request(&setup, &CONSUMER_A, "/stuck")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while setup.seen.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the request never reached the provider"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ssp.signal(libc::SIGTERM);
    assert!(ssp.wait_exit().success(), "exit 0 after the drain timeout");

    let audit = audit_text(&setup);
    let records: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let req = records
        .iter()
        .find(|r| r["type"] == "req")
        .expect("the req record");
    let res = records
        .iter()
        .find(|r| r["type"] == "res" && r["req_seq"] == req["seq"])
        .expect("a res record for the request cut short by the drain timeout");
    assert_eq!(
        (res["status"].as_u64(), res["token"].as_str()),
        (Some(503), Some("DRAIN_TIMEOUT"))
    );
}

/// `[server] stop_delay`: SIGTERM turns `/readyz` 503 at once, and for the delay the proxy
/// still accepts and serves, new connections and kept-alive ones alike; then it drains and
/// exits 0.
#[test]
fn sigterm_says_stopping_on_readyz_and_serves_on_for_the_stop_delay() {
    let setup = Setup::new(&Options {
        server: "stop_delay = \"1500ms\"".into(),
        ..Options::default()
    });
    let admin = unused_port();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace(
            "[admin]\nlisten = \"\"",
            &format!("[admin]\nlisten = \"{admin}\""),
        ),
    )
    .unwrap();
    let mut ssp = Ssp::start(&setup.config, None);
    assert_eq!(http_get(admin, "/readyz"), (200, "ready\n".to_string()));
    let mut kept = ssp.consumer(&CONSUMER_A);
    assert_eq!(kept.exchange(&request(&setup, &CONSUMER_A, SEARCH)).status, 200);

    let signalled = Instant::now();
    ssp.signal(libc::SIGTERM);
    ssp.wait_for_log("stop_delay");
    assert_eq!(http_get(admin, "/readyz"), (503, "stopping\n".to_string()));
    // Still serving, well inside the delay: a new connection and the kept-alive one; each
    // answer closes its connection, so the consumer comes back through the balancer, which
    // no longer sends it here.
    let mut fresh = ssp.consumer(&CONSUMER_A);
    let r = fresh.exchange(&request(&setup, &CONSUMER_A, SEARCH));
    assert_eq!((r.status, r.field("connection")), (200, Some("close")));
    fresh.assert_closed();
    let r = kept.exchange(&request(&setup, &CONSUMER_A, SEARCH));
    assert_eq!((r.status, r.field("connection")), (200, Some("close")));
    kept.assert_closed();
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "the checks above took longer than the delay: the test proves nothing"
    );
    ssp.wait_for_log("no new connections");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "stopped accepting after {:?}, before the delay",
        signalled.elapsed()
    );
    assert!(ssp.wait_exit().success(), "exit 0 after the delay and the drain");
}

/// As `sigterm_serves_the_first_request_of_a_connection_accepted_before_it`, for a connection
/// that has also finished its TLS handshake before the stop, and with the drain already
/// under way when the request comes: it is served, with `Connection: close`.
#[test]
fn sigterm_serves_the_first_request_of_a_connection_that_finished_its_handshake_before_it() {
    let setup = Setup::new(&Options::default());
    let mut ssp = Ssp::start(&setup.config, None);
    // No admin endpoint in the harness: no stop delay, the drain starts at once.
    let mut handshaken = ssp.consumer(&CONSUMER_A);
    handshaken.handshake().expect("handshake");
    ssp.signal(libc::SIGTERM);
    ssp.wait_for_log("no new connections");
    std::thread::sleep(Duration::from_millis(200));
    handshaken
        .send(&request(&setup, &CONSUMER_A, SEARCH))
        .expect("send");
    let r = handshaken
        .read_response()
        .unwrap_or_else(|e| panic!("closed before its first request was read: {e}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.field("connection"), Some("close"));
    assert!(ssp.wait_exit().success());
}

/// SIGINT (Ctrl-C) does not wait for `stop_delay`.
#[test]
fn sigint_skips_the_stop_delay() {
    let setup = Setup::new(&Options {
        server: "stop_delay = \"30s\"".into(),
        ..Options::default()
    });
    let admin = unused_port();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace(
            "[admin]\nlisten = \"\"",
            &format!("[admin]\nlisten = \"{admin}\""),
        ),
    )
    .unwrap();
    let mut ssp = Ssp::start(&setup.config, None);
    ssp.signal(libc::SIGINT);
    assert!(ssp.wait_exit().success(), "exit 0 without waiting 30 s");
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let setup = Setup::new(&Options::default());
    let socket_path = setup.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut ssp = Ssp::start(&setup.config, Some(&socket_path));
    // Watchdog pings arrive between the other notifications: count them, skip them.
    let pings = std::cell::Cell::new(0);
    let next = || loop {
        let state = next();
        if state == "WATCHDOG=1" {
            pings.set(pings.get() + 1);
        } else {
            return state;
        }
    };
    assert_eq!(next(), "READY=1");

    ssp.signal(libc::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1");

    std::thread::sleep(Duration::from_millis(500));
    ssp.signal(libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert!(ssp.wait_exit().success());
    assert!(pings.get() > 0, "WATCHDOG=1 while the worker loops turn");
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

#[test]
fn admin_endpoint_reports_health_and_counts_requests() {
    let setup = Setup::new(&Options::default());
    let admin = unused_port();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace(
            "[admin]\nlisten = \"\"",
            &format!("[admin]\nlisten = \"{admin}\""),
        ),
    )
    .unwrap();
    let ssp = Ssp::start(&setup.config, None);
    assert_eq!(
        ssp.consumer(&CONSUMER_A)
            .exchange(&request(&setup, &CONSUMER_A, SEARCH))
            .status,
        200
    );
    assert_eq!(
        ssp.consumer(&CONSUMER_B)
            .exchange(&request(&setup, &CONSUMER_B, SEARCH))
            .status,
        403
    );

    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert_eq!(http_get(admin, "/readyz"), (200, "ready\n".to_string()));
    let (status, metrics) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ssp_requests_total{status=\"200\",token=\"\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ssp_requests_total{status=\"403\",token=\"FOT_CHECK_FAILED_MESSAGESENDER_MESSAGERECEIVER\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("ssp_request_duration_seconds_count 2"),
        "{metrics}"
    );
    assert!(metrics.contains("ssp_audit_records_total"), "{metrics}");
    assert!(metrics.contains("ssp_connections_active"), "{metrics}");
}

#[test]
fn repeated_reloads_lose_no_request_of_a_concurrent_stream() {
    let setup = Setup::new(&Options::default());
    let ssp = Ssp::start(&setup.config, None);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streams: Vec<_> = (0..2)
        .map(|i| {
            let (addr, stop) = (ssp.addr, stop.clone());
            let request = request(&setup, &CONSUMER_A, SEARCH);
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                // One stream keeps its connection; the other opens one per request.
                let mut kept = Consumer::connect(addr, client_config(&CONSUMER_A));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = if i == 0 {
                        kept.exchange(&request).status
                    } else {
                        Consumer::connect(addr, client_config(&CONSUMER_A))
                            .exchange(&request)
                            .status
                    };
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        ssp.signal(libc::SIGHUP);
        ssp.wait_for_log("reload:");
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for stream in streams {
        let statuses = stream.join().expect("a stream thread");
        assert!(
            statuses.len() > 5,
            "the stream made requests throughout: {}",
            statuses.len()
        );
        assert!(
            statuses.iter().all(|&s| s == 200),
            "a request failed across a reload: {statuses:?}"
        );
    }
}

#[test]
fn kill_9_under_load_then_restart_leaves_a_chain_that_verifies() {
    let setup = Setup::new(&Options::default());
    let mut ssp = Ssp::start(&setup.config, None);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (ssp.addr, stop.clone());
            let request = request(&setup, &CONSUMER_A, SEARCH);
            std::thread::spawn(move || {
                let mut served = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // After the kill, connects and requests fail: that is the point.
                    let Ok(mut c) = Consumer::try_connect(addr, client_config(&CONSUMER_A)) else {
                        break;
                    };
                    match c.send(&request).and_then(|_| c.read_response()) {
                        Ok(r) if r.status == 200 => served += 1,
                        _ => break,
                    }
                }
                served
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    ssp.child.kill().unwrap(); // SIGKILL, mid-load
    ssp.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 0, "the load ran before the kill");

    let mut again = Ssp::start(&setup.config, None);
    assert_eq!(
        again
            .consumer(&CONSUMER_A)
            .exchange(&request(&setup, &CONSUMER_A, SEARCH))
            .status,
        200
    );
    again.signal(libc::SIGTERM);
    assert!(again.wait_exit().success());

    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(["audit", "verify"])
        .arg(setup.dir.path().join("audit"))
        .arg("--key-file")
        .arg(setup.dir.path().join("audit.k0"))
        .arg("--require-sealed")
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = audit_text(&setup);
    let reqs = audit.lines().filter(|l| l.contains("\"type\":\"req\"")).count();
    assert!(
        reqs > served,
        "every forwarded request has its req record ({reqs} for {served} answered)"
    );
    let forwarded = setup.seen.lock().unwrap().len();
    assert!(
        reqs >= forwarded,
        "every request the provider received has its req record ({reqs} for {forwarded})"
    );
}

/// The `/metrics` value of the line starting with `series ` (name and labels).
fn metric(metrics: &str, series: &str) -> Option<String> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The audit's records of `kind`, waiting up to 5 s for at least `n` (the writer is a thread).
fn records(setup: &Setup, kind: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<serde_json::Value> = audit_text(setup)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["type"] == kind)
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 23: a reload's outcome is visible. At start and after each reload put in force, a
/// `config` record (the file's hash, the hash of every file it names, counts, CRL dates) and
/// `ssp_config_hash`; a refused reload sets `ssp_config_last_reload_success` to 0 and leaves
/// an `alarm`; the audit still verifies with the new record type.
#[test]
fn reload_outcome_is_in_metrics_and_in_the_audit() {
    let setup = Setup::new(&Options::default());
    let admin = unused_port();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text = text.replace(
        "[admin]\nlisten = \"\"",
        &format!("[admin]\nlisten = \"{admin}\""),
    );
    std::fs::write(&setup.config, &text).unwrap();
    let started = sha256_hex(text.as_bytes());
    let mut ssp = Ssp::start(&setup.config, None);
    let scrape = || http_get(admin, "/metrics").1;

    let metrics = scrape();
    assert_eq!(
        metric(&metrics, "ssp_config_last_reload_success").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, &format!("ssp_config_hash{{sha256=\"{started}\"}}")).as_deref(),
        Some("1"),
        "{metrics}"
    );
    let loaded_at: i64 = metric(&metrics, "ssp_config_last_reload_timestamp_seconds")
        .and_then(|v| v.parse().ok())
        .expect("a load time");
    assert!(loaded_at > 1_700_000_000, "{loaded_at}");
    let config = records(&setup, "config", 1);
    let first = config.first().expect("a config record at start");
    assert_eq!(first["cause"], "start");
    assert_eq!(first["sha256"], started.as_str());
    assert_eq!(
        (first["consumers"].as_u64(), first["providers"].as_u64()),
        (Some(7), Some(1))
    );
    let ssp_pem = pki("ssp.pem");
    let files = first["files"].as_array().expect("files");
    let named = files
        .iter()
        .find(|f| f["path"] == ssp_pem.display().to_string())
        .expect("the certificate is listed");
    assert_eq!(
        named["sha256"],
        sha256_hex(&std::fs::read(&ssp_pem).unwrap()).as_str()
    );
    assert_eq!(first["crls"][0]["issuer"], "CN=SSP Test NHS Level 1C, O=nhs");
    assert!(
        first["crls"][0]["this_update"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // A broken configuration: refused, counted, raised.
    std::fs::write(
        &setup.config,
        text.replace("[limits]", "[limits]\nno_such_key = 1"),
    )
    .unwrap();
    ssp.signal(libc::SIGHUP);
    ssp.wait_for_log("reload refused");
    let metrics = scrape();
    assert_eq!(
        metric(&metrics, "ssp_config_last_reload_success").as_deref(),
        Some("0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("ssp_config_hash{{sha256=\"{started}\"}} 1")),
        "the configuration in force is still the first: {metrics}"
    );
    // Other alarms may come first (the clock's, on a box without NTP): wait for this one.
    let refused_alarm = |alarms: &[serde_json::Value]| {
        alarms.iter().any(|a| {
            a["message"]
                .as_str()
                .is_some_and(|m| m.contains("reload refused") && m.contains("no_such_key"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut alarms = records(&setup, "alarm", 1);
    while !refused_alarm(&alarms) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        alarms = records(&setup, "alarm", 1);
    }
    assert!(refused_alarm(&alarms), "{alarms:?}");

    // A good one: in force, recorded.
    std::fs::write(&setup.config, &text).unwrap();
    grant_b_an_agreement(&setup.config);
    let granted = sha256_hex(&std::fs::read(&setup.config).unwrap());
    ssp.signal(libc::SIGHUP);
    ssp.wait_for_log("is in force");
    let metrics = scrape();
    assert_eq!(
        metric(&metrics, "ssp_config_last_reload_success").as_deref(),
        Some("1")
    );
    assert!(
        metrics.contains(&format!("ssp_config_hash{{sha256=\"{granted}\"}} 1")),
        "{metrics}"
    );
    let config = records(&setup, "config", 2);
    let reloaded = config.last().expect("a config record after the reload");
    assert_eq!(
        (reloaded["cause"].as_str(), reloaded["sha256"].as_str()),
        (Some("reload"), Some(granted.as_str()))
    );

    ssp.signal(libc::SIGTERM);
    assert!(ssp.wait_exit().success());
    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(["audit", "verify"])
        .arg(setup.dir.path().join("audit"))
        .arg("--key-file")
        .arg(setup.dir.path().join("audit.k0"))
        .arg("--require-sealed")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `systemctl reload` runs the unit's ExecReload lines in order and fails at the first that
/// does: the first is `ssp check`, which refuses a broken configuration before any HUP.
#[test]
fn the_unit_checks_the_configuration_before_it_signals_a_reload() {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ssp.service")).unwrap();
    let reload: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .collect();
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(reload[1].contains("kill -HUP $MAINPID"), "{reload:?}");
    let check: Vec<&str> = reload[0].split_whitespace().collect();
    assert_eq!(check, ["/usr/bin/ssp", "check", "--config", "/etc/ssp/ssp.toml"]);
    // That very command, on this box's binary and a broken configuration, fails.
    let setup = Setup::new(&Options::default());
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("[limits]", "[limits]\nno_such_key = 1"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(&check[1..3])
        .arg(&setup.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
}

/// Issue 23: a refused handshake says why in words (dates in ISO 8601, no Rust values such as
/// `InvalidCertificate(Revoked)` or `1796171838 (UNIX)`), and names the certificate it
/// presented (subject, issuer, serial, expiry) in the log and in its `tls` record, where the
/// subject was null.
#[test]
fn a_refused_handshake_names_its_certificate_in_words() {
    let setup = Setup::new(&Options::default());
    let mut ssp = Ssp::start(&setup.config, None);
    let mut lines = Vec::new();
    for who in [&REVOKED, &EXPIRED] {
        if let Ok(mut c) = Consumer::try_connect(ssp.addr, client_config(who)) {
            let _ = c
                .send(&request(&setup, who, SEARCH))
                .and_then(|()| c.read_response());
        }
        lines.push(ssp.wait_for_log("handshake from"));
    }
    let revoked_serial: String = mint::serial_of("consumer-revoked")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        lines[0].contains("refused: the certificate is revoked"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!(
            "it presented subject \"CN=dispenser-revoked.example.nhs.uk, OU=Devices, O=nhs\", \
             issuer \"CN=SSP Test NHS Level 1C, O=nhs\", serial {revoked_serial}, expires 2049-12-31T"
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("the certificate expired at 2021-01-01T00:00:00Z (it is now 20"),
        "{}",
        lines[1]
    );
    for line in &lines {
        for rust in ["InvalidCertificate", "Context", "(UNIX)", "Other("] {
            assert!(!line.contains(rust), "{line}");
        }
    }
    ssp.signal(libc::SIGTERM);
    assert!(ssp.wait_exit().success());
    let tls = records(&setup, "tls", 2);
    let revoked = tls
        .iter()
        .find(|r| {
            r["subject"]
                .as_str()
                .is_some_and(|s| s.contains("dispenser-revoked"))
        })
        .unwrap_or_else(|| panic!("the revoked certificate's record: {tls:?}"));
    assert_eq!(revoked["issuer"], "CN=SSP Test NHS Level 1C, O=nhs");
    assert_eq!(revoked["serial"], revoked_serial.as_str());
    assert!(
        revoked["not_after"]
            .as_str()
            .is_some_and(|t| t.starts_with("2049-12-31T")),
        "{revoked}"
    );
    assert_eq!(revoked["fingerprint"].as_str().map(str::len), Some(64));
    assert_eq!(
        revoked["reason"],
        "the certificate is revoked (on its issuer's CRL)"
    );
}

/// Issue 23: `/metrics` passes `promtool check metrics` (Prometheus' own linter: names, types,
/// counters ending in `_total`, help text). Skipped with a note where promtool is not
/// installed (Debian: `apt-get install prometheus`; `scripts/promtool-check` does it all).
#[test]
fn metrics_pass_promtool_check() {
    use std::io::Write;
    let Some(promtool) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    }) else {
        eprintln!("note: promtool not on PATH; skipping `promtool check metrics`");
        return;
    };
    let setup = Setup::new(&Options::default());
    let admin = unused_port();
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace(
            "[admin]\nlisten = \"\"",
            &format!("[admin]\nlisten = \"{admin}\""),
        ),
    )
    .unwrap();
    let ssp = Ssp::start(&setup.config, None);
    // A forwarded request and a refused one, so every family has samples.
    ssp.consumer(&CONSUMER_A)
        .exchange(&request(&setup, &CONSUMER_A, SEARCH));
    ssp.consumer(&CONSUMER_B)
        .exchange(&request(&setup, &CONSUMER_B, SEARCH));
    let (status, metrics) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool:\n{said}\n{metrics}"
    );
}
