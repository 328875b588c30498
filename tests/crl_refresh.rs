//! CRL freshness (README "CRL refresh"): CRLs with a `url` are fetched by the `ssp-crl`
//! thread, checked (parsed, signed by their issuer, newer, not stale) and put in force without
//! a reload; anything else leaves the CRL held in force, counted and audited as an alarm. The
//! CRLs are made at test time with Level 1C's fixture key (or a stranger's) and served by a
//! plain-HTTP server thread in the test.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mint::{crl, level1c, level1c_impostor as impostor, serial_of, unix_now};
use common::*;

// ---------------------------------------------------------------------------------------------
// The CRL distribution point.

/// What the distribution point answers.
#[derive(Clone)]
enum Serve {
    /// 200 with these bytes.
    Crl(Vec<u8>),
    /// This whole answer, head included.
    Raw(Vec<u8>),
    /// Nothing listens: connections are refused.
    Down,
}

struct CrlServer {
    addr: SocketAddr,
    serve: Arc<Mutex<Serve>>,
    hits: Arc<AtomicUsize>,
    /// The head of the last request, as received.
    last_head: Arc<Mutex<Vec<u8>>>,
}

impl CrlServer {
    fn start(first: Serve) -> CrlServer {
        let addr = unused_port();
        let serve = Arc::new(Mutex::new(first));
        let hits = Arc::new(AtomicUsize::new(0));
        let last_head = Arc::new(Mutex::new(Vec::new()));
        let (state, count, last) = (serve.clone(), hits.clone(), last_head.clone());
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            loop {
                let now = state.lock().unwrap().clone();
                if let Serve::Down = now {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                if listener.is_none() {
                    // std sets SO_REUSEADDR, so the port can be taken again at once.
                    listener = TcpListener::bind(addr).ok();
                    listener.as_ref().map(|l| l.set_nonblocking(true));
                }
                let Some(Ok((mut stream, _))) = listener.as_ref().map(TcpListener::accept) else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                *last.lock().unwrap() = head;
                count.fetch_add(1, Ordering::SeqCst);
                let answer = match state.lock().unwrap().clone() {
                    Serve::Crl(body) => {
                        let mut a = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        a.extend_from_slice(&body);
                        a
                    }
                    Serve::Raw(raw) => raw,
                    Serve::Down => Vec::new(),
                };
                let _ = stream.write_all(&answer);
            }
        });
        let server = CrlServer {
            addr,
            serve,
            hits,
            last_head,
        };
        server.wait_until_listening();
        server
    }

    fn serve(&self, what: Serve) {
        *self.serve.lock().unwrap() = what;
        self.wait_until_listening();
    }

    fn wait_until_listening(&self) {
        if !matches!(*self.serve.lock().unwrap(), Serve::Down) {
            assert!(
                eventually(Duration::from_secs(5), || std::net::TcpStream::connect(self.addr)
                    .is_ok()),
                "CRL server listening"
            );
        }
    }

    fn url(&self) -> String {
        format!("http://{}/live/1c/crlc4519.crl", self.addr)
    }
}

// ---------------------------------------------------------------------------------------------
// A proxy whose Level 1C CRL is fetched from a `CrlServer`.

struct Rig {
    proxy: Proxy,
    server: CrlServer,
    crl_path: PathBuf,
    _dir: TempDir,
}

/// Sub-second refreshes so the file runs in seconds; no jitter so it is deterministic.
const FAST: &str = "crl_refresh = \"200ms\"\ncrl_refresh_jitter = \"0s\"\ncrl_refresh_margin = \"0s\"\ncrl_retry = \"100ms\"\ncrl_connect_timeout = \"1s\"\ncrl_read_timeout = \"1s\"";

fn options(held: &[u8], server: &CrlServer, dir: &TempDir, throttle: &str) -> (Options, PathBuf) {
    let crl_path = dir.path().join("level1c.crl");
    std::fs::write(&crl_path, held).unwrap();
    let entry = format!(
        "{{ path = \"{}\", url = \"{}\", issuer = \"{}\" }}",
        crl_path.display(),
        server.url(),
        pki("level1c.pem").display()
    );
    let mut options = Options {
        crl: vec![Box::leak(entry.into_boxed_str())],
        server: FAST.into(),
        ..Options::default()
    };
    if !throttle.is_empty() {
        options.throttle = throttle.into();
    }
    (options, crl_path)
}

fn rig(held: &[u8], first: Serve, throttle: &str) -> Rig {
    rig_with(held, first, throttle, |_, _| {})
}

fn rig_with(held: &[u8], first: Serve, throttle: &str, edit: impl FnOnce(&mut Options, &CrlServer)) -> Rig {
    let dir = TempDir::new("crl");
    let server = CrlServer::start(first);
    let (mut options, crl_path) = options(held, &server, &dir, throttle);
    edit(&mut options, &server);
    let proxy = Proxy::with(options);
    ssp::service::start_crl_refresher(&proxy.runtime).unwrap();
    Rig {
        proxy,
        server,
        crl_path,
        _dir: dir,
    }
}

fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

const WITHIN: Duration = Duration::from_secs(5);

/// A sample of the proxy's `/metrics` text, 0 when absent.
fn metric(proxy: &Proxy, line_prefix: &str) -> u64 {
    let text = proxy.runtime.metrics.render(&[]);
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn failures(proxy: &Proxy, reason: &str) -> u64 {
    metric(
        proxy,
        &format!("ssp_crl_refresh_failures_total{{reason=\"{reason}\"}} "),
    )
}

fn all_failures(proxy: &Proxy) -> u64 {
    ssp::metrics::CRL_FAILURES
        .iter()
        .map(|r| failures(proxy, r))
        .sum()
}

fn updates(proxy: &Proxy) -> u64 {
    metric(proxy, "ssp_crl_updates_total ")
}

/// The `message` of every `alarm` record written so far.
fn alarms(proxy: &Proxy) -> Vec<String> {
    let text = std::fs::read_to_string(proxy.dir().join("audit/audit.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "alarm")
        .filter_map(|r| r["message"].as_str().map(str::to_string))
        .collect()
}

fn held_this_update(proxy: &Proxy) -> i64 {
    proxy.runtime.current().crls[0].this_update
}

// ---------------------------------------------------------------------------------------------

#[test]
fn newer_crl_revoking_a_consumer_is_picked_up_without_a_reload() {
    let now = unix_now();
    let held = crl(&level1c(), now - 3600, now + 86_400, 10, &[]);
    // A burst of 4 at a rate that never refills within the test: the 5th request of a
    // consumer is throttled unless a refresh reset its bucket.
    let rig = rig(&held, Serve::Crl(held.clone()), "rate = 0.001\nburst = 4");
    let proxy = &rig.proxy;
    let revoked_request = proxy.get().set("Ssp-From", REVOKED.asid);
    let mut revoked = proxy.consumer(&REVOKED);
    assert_eq!(revoked.exchange(&revoked_request).status, 200, "not revoked yet");
    let mut a = proxy.consumer(&CONSUMER_A);
    for _ in 0..3 {
        assert_eq!(a.exchange(&proxy.get()).status, 200);
    }
    assert!(
        eventually(WITHIN, || rig.server.hits.load(Ordering::SeqCst) >= 2),
        "the refresher fetches on its own"
    );
    assert_eq!(
        (updates(proxy), all_failures(proxy)),
        (0, 0),
        "the same CRL is nothing to do"
    );

    let newer = crl(
        &level1c(),
        now - 60,
        now + 86_400,
        11,
        &[&serial_of(REVOKED.file)],
    );
    rig.server.serve(Serve::Crl(newer.clone()));
    assert!(
        eventually(WITHIN, || updates(proxy) == 1),
        "the newer CRL is put in force"
    );
    assert_eq!(held_this_update(proxy), now - 60);
    assert_eq!(proxy.runtime.current().crls[0].revoked, 1);
    assert_eq!(
        std::fs::read(&rig.crl_path).unwrap(),
        newer,
        "stored where it is loaded from"
    );

    // Row 8 on the connection that was already open...
    let r = revoked.exchange(&revoked_request);
    assert_outcome(&r, 403, "forbidden", "CERTIFICATE_REVOKED", Some(TRACE_ID));
    revoked.assert_closed();
    // ...and row 1 for a new one.
    let e = proxy
        .consumer(&REVOKED)
        .assert_refused_at_handshake(&revoked_request);
    assert!(e.to_string().contains("CertificateRevoked"), "{e}");

    // Everyone else carries on, and the rate limits were not reset by the swap.
    assert_eq!(a.exchange(&proxy.get()).status, 200, "4th of a burst of 4");
    assert_eq!(
        a.exchange(&proxy.get()).status,
        429,
        "5th: the bucket kept its state"
    );
    assert_eq!(all_failures(proxy), 0);
    assert_eq!(
        proxy.seen().len(),
        1 + 4,
        "refused requests never reach the provider"
    );
}

#[test]
fn bad_candidates_leave_the_held_crl_in_force() {
    let now = unix_now();
    let held = crl(&level1c(), now - 3600, now + 86_400, 10, &[]);
    // CRLs with one entry are about 500 bytes.
    let rig = rig_with(&held, Serve::Crl(held.clone()), "", |options, _| {
        options.server.push_str("\ncrl_max_bytes = 1024")
    });
    let proxy = &rig.proxy;
    let revoking = [serial_of(REVOKED.file)];
    let revoking: Vec<&[u8]> = revoking.iter().map(Vec::as_slice).collect();
    let newer = crl(&level1c(), now - 60, now + 86_400, 11, &revoking);
    let html = "<html><body><h1>Welcome to the proxy</h1></body></html>";
    let page = |status: &str| {
        Serve::Raw(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{html}",
                html.len()
            )
            .into_bytes(),
        )
    };
    let cases = [
        (
            "older",
            Serve::Crl(crl(&level1c(), now - 7200, now + 86_400, 9, &revoking)),
            "older",
            "older than the CRL held",
        ),
        (
            "signed by another key",
            Serve::Crl(crl(&impostor(), now - 60, now + 86_400, 11, &revoking)),
            "bad_signature",
            "signature check failed",
        ),
        (
            "truncated file",
            Serve::Crl(newer[..newer.len() / 2].to_vec()),
            "not_a_crl",
            "not a CRL",
        ),
        (
            "truncated transfer",
            Serve::Raw(
                [
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", newer.len()).as_bytes(),
                    &newer[..100],
                ]
                .concat(),
            ),
            "bad_response",
            "truncated",
        ),
        ("HTML page with 200", page("200 OK"), "not_a_crl", "HTML page"),
        (
            "HTML error page",
            page("404 Not Found"),
            "http_status",
            "HTTP status 404",
        ),
        (
            "garbage",
            Serve::Crl(b"\x30\x82garbage".to_vec()),
            "not_a_crl",
            "not a CRL",
        ),
        (
            "stale on arrival",
            Serve::Crl(crl(&level1c(), now - 120, now - 60, 12, &revoking)),
            "expired",
            "already past its nextUpdate",
        ),
        (
            "over crl_max_bytes",
            Serve::Crl([newer.clone(), vec![0; 1024]].concat()),
            "too_large",
            "larger than crl_max_bytes",
        ),
        ("unreachable", Serve::Down, "unreachable", "unreachable"),
    ];
    for (what, serve, reason, message) in cases {
        let before = failures(proxy, reason);
        let alarms_before = alarms(proxy).len();
        rig.server.serve(serve);
        assert!(
            eventually(WITHIN, || failures(proxy, reason) > before),
            "{what}: counted as {reason}"
        );
        assert!(
            eventually(WITHIN, || alarms(proxy)[alarms_before.min(alarms(proxy).len())..]
                .iter()
                .any(|m| m.contains(&rig.server.url()) && m.contains(message))),
            "{what}: an alarm naming the URL and {message:?}; alarms: {:#?}",
            alarms(proxy)
        );
        assert_eq!(held_this_update(proxy), now - 3600, "{what}: the held CRL stays");
        assert_eq!(
            std::fs::read(&rig.crl_path).unwrap(),
            held,
            "{what}: the file stays"
        );
    }
    assert_eq!(updates(proxy), 0);
    // Every candidate revoked this consumer; none of them was put in force.
    let request = proxy.get().set("Ssp-From", REVOKED.asid);
    assert_eq!(proxy.consumer(&REVOKED).exchange(&request).status, 200);
}

#[test]
fn crl_gone_stale_while_unreachable_refuses_everyone_until_a_fresh_one_arrives() {
    let now = unix_now();
    // Stale in three seconds; the distribution point is down meanwhile.
    let held = crl(&level1c(), now - 3600, now + 3, 10, &[]);
    let rig = rig(&held, Serve::Down, "");
    let proxy = &rig.proxy;
    let health = || ssp::service::health(&proxy.runtime);
    assert!(health().ready, "fresh for now: {:?}", health().reasons);
    let mut a = proxy.consumer(&CONSUMER_A);
    assert_eq!(a.exchange(&proxy.get()).status, 200);

    assert!(
        eventually(Duration::from_secs(8), || !health().ready),
        "not ready once stale"
    );
    assert!(
        health().reasons.iter().any(|r| r.contains("past its nextUpdate")),
        "{:?}",
        health().reasons
    );
    let gauge = ssp::service::crl_samples(&proxy.runtime.current().crls, unix_now());
    assert!(
        gauge[0].value < 0.0,
        "ssp_crl_next_update_seconds is negative when stale: {gauge:?}"
    );
    assert!(failures(proxy, "unreachable") > 0);
    // crl_expired = "deny" (the default): new handshakes and open connections are refused.
    proxy
        .consumer(&CONSUMER_A)
        .assert_refused_at_handshake(&proxy.get());
    assert_outcome(
        &a.exchange(&proxy.get()),
        403,
        "forbidden",
        "CERTIFICATE_REVOKED",
        Some(TRACE_ID),
    );

    let fresh = crl(&level1c(), unix_now() - 1, unix_now() + 86_400, 11, &[]);
    rig.server.serve(Serve::Crl(fresh));
    assert!(
        eventually(WITHIN, || health().ready),
        "ready again: {:?}",
        health().reasons
    );
    assert_eq!(
        proxy.consumer(&CONSUMER_A).exchange(&proxy.get()).status,
        200,
        "recovered by itself"
    );
}

#[test]
fn a_newer_crl_that_cannot_be_stored_is_still_put_in_force_and_alarmed() {
    let now = unix_now();
    let held = crl(&level1c(), now - 3600, now + 86_400, 10, &[]);
    let rig = rig(&held, Serve::Crl(held.clone()), "");
    let proxy = &rig.proxy;
    // Its folder vanishes after start-up (a read-only /etc under ProtectSystem=strict fails
    // the same way, but root, as tests often run, may write anywhere).
    std::fs::remove_dir_all(rig.crl_path.parent().unwrap()).unwrap();
    rig.server.serve(Serve::Crl(crl(
        &level1c(),
        now - 60,
        now + 86_400,
        11,
        &[&serial_of(REVOKED.file)],
    )));
    assert!(
        eventually(WITHIN, || failures(proxy, "write") == 1),
        "counted as a write failure"
    );
    assert_eq!(
        updates(proxy),
        1,
        "in force all the same: fresher revocations win"
    );
    assert!(
        eventually(WITHIN, || alarms(proxy)
            .iter()
            .any(|m| m.contains("file was not replaced"))),
        "{:#?}",
        alarms(proxy)
    );
    let request = proxy.get().set("Ssp-From", REVOKED.asid);
    proxy.consumer(&REVOKED).assert_refused_at_handshake(&request);
}

#[test]
fn a_forward_proxy_is_asked_with_an_absolute_form_get() {
    let now = unix_now();
    let held = crl(&level1c(), now - 3600, now + 86_400, 10, &[]);
    let newer = crl(&level1c(), now - 60, now + 86_400, 11, &[]);
    // The "proxy" is the test server; the CRL's own host does not even resolve.
    let rig = rig_with(&held, Serve::Crl(newer), "", |options, server| {
        let entry = options.crl[0].replace(&server.url(), "http://crl.example.invalid/live/1c/crlc4519.crl");
        options.crl[0] = Box::leak(entry.into_boxed_str());
        options
            .server
            .push_str(&format!("\ncrl_proxy = \"http://{}\"", server.addr));
    });
    assert!(
        eventually(WITHIN, || updates(&rig.proxy) == 1),
        "fetched through the proxy"
    );
    let head = String::from_utf8(rig.server.last_head.lock().unwrap().clone()).unwrap();
    assert!(
        head.starts_with(
            "GET http://crl.example.invalid/live/1c/crlc4519.crl HTTP/1.1\r\nHost: crl.example.invalid\r\n"
        ),
        "{head}"
    );
}

// ---------------------------------------------------------------------------------------------
// The command line.

fn ssp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssp"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn crl_fetch_updates_once_in_the_foreground_and_check_shows_each_crl() {
    let now = unix_now();
    let held = crl(&level1c(), now - 3600, now + 86_400, 10, &[]);
    let dir = TempDir::new("crl-cli");
    let server = CrlServer::start(Serve::Crl(held.clone()));
    let (options, crl_path) = options(&held, &server, &dir, "");
    let setup = Setup::new(&options);
    let config = setup.config.to_str().unwrap();

    let (code, out, err) = ssp(&["check", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("level1c.crl"))
        .unwrap_or_else(|| panic!("{out}"));
    for part in [
        "issuer \"CN=SSP Test NHS Level 1C, O=nhs\"",
        "thisUpdate",
        "nextUpdate",
        "0 revoked",
        &server.url(),
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }

    let (code, out, err) = ssp(&["crl", "fetch", "--config", config]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("{}: unchanged ({})", crl_path.display(), server.url()).as_str()
        ),
        "{err}"
    );

    let newer = crl(
        &level1c(),
        now - 60,
        now + 86_400,
        11,
        &[&serial_of(REVOKED.file)],
    );
    server.serve(Serve::Crl(newer.clone()));
    let (code, out, err) = ssp(&["crl", "fetch", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(": updated from ") && out.contains("1 revoked"),
        "{out}"
    );
    assert_eq!(std::fs::read(&crl_path).unwrap(), newer);

    server.serve(Serve::Crl(crl(&impostor(), now, now + 86_400, 12, &[])));
    let (code, out, _) = ssp(&["crl", "fetch", "--config", config]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed: ") && out.contains("signature check failed"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&crl_path).unwrap(),
        newer,
        "a failed fetch changes nothing"
    );

    let (code, _, err) = ssp(&["crl", "fetch", "--config", "/nonexistent/ssp.toml"]);
    assert_eq!(code, 2, "{err}");

    // A forged CRL put in place by hand is caught by `ssp check`, not at the first handshake.
    std::fs::write(&crl_path, crl(&impostor(), now, now + 86_400, 12, &[])).unwrap();
    let (code, out, err) = ssp(&["check", "--config", config]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("level1c.crl: CRL signature check failed"), "{err}");
}

#[test]
fn ssp_run_refreshes_by_itself_and_logs_one_warning_per_failure() {
    let now = unix_now();
    let held = crl(&level1c(), now - 3600, now + 86_400, 10, &[]);
    let dir = TempDir::new("crl-run");
    let html = "<html>Service unavailable</html>";
    let server = CrlServer::start(Serve::Raw(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{html}",
            html.len()
        )
        .into_bytes(),
    ));
    let (options, crl_path) = options(&held, &server, &dir, "");
    let setup = Setup::new(&options);
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_ssp"))
            .args(["run", "--config"])
            .arg(&setup.config)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?} within 10 s"),
            }
        }
    };
    let warning = wait_for("CRL refresh from ");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&format!(
            "CRL refresh from {} failed: not a CRL: the server answered with an HTML page",
            server.url()
        )),
        "{warning}"
    );
    let newer = crl(
        &level1c(),
        now - 60,
        now + 86_400,
        11,
        &[&serial_of(REVOKED.file)],
    );
    server.serve(Serve::Crl(newer.clone()));
    let updated = wait_for(": updated from ");
    assert!(updated.contains("1 revoked"), "{updated}");
    assert_eq!(std::fs::read(&crl_path).unwrap(), newer);
}

/// A child process that is killed when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
