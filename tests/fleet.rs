//! Issue 21: a fleet of two `ssp` behind Debian's HAProxy, as `packaging/fleet/haproxy.cfg`
//! has it (TCP mode, `send-proxy-v2`, `/readyz` checked every 200 ms, `balance source`), with
//! a closed-loop load through HAProxy only (new connection per request, and kept-alive), over
//! steady state, a reload of each instance with a new allowlist (SIGHUP) and a rolling restart
//! (SIGTERM, `[server] stop_delay`, start again, one at a time): no request fails. Both
//! instances serve, the consumer's own address reaches each audit through PROXY v2, a
//! rate-limited consumer stays limited through the balancer, and both audits verify.
//!
//! With Debian's `rsyslog` too, each instance's audit is shipped as `packaging/fleet` has it
//! (imfile across rotations, TCP, a central rsyslogd writing a file per instance), and the
//! central copy must be the audit byte for byte and pass `ssp audit verify --witness`.
//!
//! Needs `haproxy` and `rsyslogd` (Debian: `apt-get install haproxy rsyslog`; `.ci/run`
//! installs them). Without haproxy the test says so and passes, without rsyslogd it does not
//! ship; under CI (`CI` set) either missing fails it.
//!
//! Sized for a 2-core box: debug binaries, four load threads, about 20 s.

mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Consumers connect from these loopback addresses (HAProxy hashes on them), so the load is
/// spread over both instances and the audit can tell the consumer's address from HAProxy's.
const SOURCES: [Ipv4Addr; 8] = [
    Ipv4Addr::new(127, 0, 0, 11),
    Ipv4Addr::new(127, 0, 0, 12),
    Ipv4Addr::new(127, 0, 0, 13),
    Ipv4Addr::new(127, 0, 0, 14),
    Ipv4Addr::new(127, 0, 0, 15),
    Ipv4Addr::new(127, 0, 0, 16),
    Ipv4Addr::new(127, 0, 0, 17),
    Ipv4Addr::new(127, 0, 0, 18),
];

/// Between one answer and the next request, per load thread.
const THINK: Duration = Duration::from_millis(4);

/// A program on PATH or in the sbin folders (Debian puts haproxy and rsyslogd there).
fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

/// `template` from packaging/fleet with its @VARS@ filled in.
fn packaged(template: &str, vars: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/fleet")
        .join(template);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (name, value) in vars {
        text = text.replace(&format!("@{name}@"), value);
    }
    text
}

/// A running program, killed when dropped (the test's end, or its failure).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rsyslogd -n` on `config` (written into `dir`), its messages in `dir/rsyslogd.log`.
fn rsyslogd(binary: &Path, dir: &Path, config: String) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("rsyslogd.log")).unwrap();
    let child = Command::new(binary)
        .arg("-n")
        .arg("-f")
        .arg(&path)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rsyslogd");
    Daemon(child)
}

/// A TCP connection to `to` from `source` (a loopback address other than 127.0.0.1).
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::other("IPv4 only"));
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, owned by the TcpStream from here on (closed on every path);
    // bind/connect get a valid sockaddr_in of the length given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        // The port is chosen at connect, per destination: many short connections from one
        // address do not run out of ports.
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = sin(source, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sin(*to.ip(), to.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Plain HTTP GET (the admin endpoint, HAProxy's stats): status and body.
fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok((status, body.to_string()));
    }
    // HAProxy's stats page comes chunked even to HTTP/1.0.
    let (mut plain, mut rest) = (String::new(), body);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).map_err(io::Error::other)?;
        if size == 0 || after.len() < size {
            break;
        }
        plain.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok((status, plain))
}

/// One `ssp run` of the fleet: its own ports, folder, audit and key.
struct Instance {
    name: &'static str,
    setup: Setup,
    port: u16,
    admin: SocketAddr,
    child: Option<Child>,
    /// Starts, counted to name each run's log file.
    runs: usize,
}

impl Instance {
    fn new(name: &'static str, provider: Option<SocketAddr>) -> Instance {
        let setup = Setup::new(&Options {
            server: "proxy_protocol = true\nstop_delay = \"1s\"".into(),
            provider_at: provider,
            ..Options::default()
        });
        let port = unused_port().port();
        let admin = unused_port();
        let text = std::fs::read_to_string(&setup.config).unwrap();
        let text = text
            .replace(
                "listen = [\"127.0.0.1:0\"]",
                &format!("listen = [\"127.0.0.1:{port}\"]"),
            )
            .replace(
                "[admin]\nlisten = \"\"",
                &format!("[admin]\nlisten = \"{admin}\""),
            )
            // Issue 21: a consumer limited to 1 request/s (3 at once), to show it stays
            // limited through the balancer.
            .replace(
                &format!("asid = \"{}\"\n", ECDSA.asid),
                &format!("asid = \"{}\"\nrate = 1\nburst = 3\n", ECDSA.asid),
            )
            // Rotations (renames) while the shipper follows the audit, and seals to witness.
            .replace(
                "sync = \"off\"",
                "sync = \"off\"\nrotate_bytes = 262144\nseal_interval = \"1s\"",
            );
        std::fs::write(&setup.config, text).unwrap();
        Instance {
            name,
            setup,
            port,
            admin,
            child: None,
            runs: 0,
        }
    }

    fn start(&mut self) {
        self.runs += 1;
        let log =
            std::fs::File::create(self.setup.dir.path().join(format!("ssp-{}.log", self.runs))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ssp"))
            .args(["run", "--config"])
            .arg(&self.setup.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ssp run");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http_get(self.admin, "/readyz"), Ok((200, _))) {
            assert!(Instant::now() < deadline, "{}: not ready within 20 s", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("running");
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    }

    /// SIGTERM, then waits for the exit (stop_delay + drain); it must be 0.
    fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{}: exit {status} after SIGTERM", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still running 20 s after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                std::fs::read_to_string(self.setup.dir.path().join(format!("ssp-{run}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The audit's bytes, file after file in chain order: what the central copy must be.
    fn chain_bytes(&self) -> Vec<u8> {
        self.chain()
            .iter()
            .flat_map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    /// Every audit record, in chain order, parsed.
    fn records(&self) -> Vec<serde_json::Value> {
        self.chain()
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The audit files, rotated ones by first seq, then the active one.
    fn chain(&self) -> Vec<PathBuf> {
        let dir = self.setup.dir.path().join("audit");
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?.to_owned();
                let order = if name == "audit.jsonl" {
                    u64::MAX
                } else {
                    name.strip_suffix(".jsonl")?.rsplit('-').next()?.parse().ok()?
                };
                Some((order, path))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, p)| p).collect()
    }

    /// `ssp audit verify DIR --key-file K0 [--witness W]`: exit code and output.
    fn verify(&self, witness: Option<&Path>) -> (Option<i32>, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ssp"));
        command
            .args(["audit", "verify"])
            .arg(self.setup.dir.path().join("audit"))
            .arg("--key-file")
            .arg(self.setup.dir.path().join("audit.k0"));
        if let Some(w) = witness {
            command.arg("--witness").arg(w);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Haproxy {
    child: Child,
    front: SocketAddr,
    stats: SocketAddr,
}

impl Haproxy {
    fn start(binary: &Path, dir: &Path, a: &Instance, b: &Instance) -> Haproxy {
        let front = unused_port();
        let stats = unused_port();
        let config = packaged(
            "haproxy.cfg",
            &[
                ("FRONT", front.to_string()),
                ("STATS", stats.to_string()),
                ("A", format!("127.0.0.1:{}", a.port)),
                ("B", format!("127.0.0.1:{}", b.port)),
                ("A_ADMIN", a.admin.port().to_string()),
                ("B_ADMIN", b.admin.port().to_string()),
            ],
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let haproxy = Haproxy { child, front, stats };
        haproxy.wait_status("ssp-a", "UP");
        haproxy.wait_status("ssp-b", "UP");
        haproxy
    }

    /// The server's status in HAProxy's stats CSV (column `status`).
    fn status(&self, server: &str) -> Option<String> {
        let (_, csv) = http_get(self.stats, "/stats;csv").ok()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let at = header.iter().position(|h| *h == "status")?;
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"ssp") && f.get(1) == Some(&server))
            .and_then(|f| f.get(at).map(|s| s.to_string()))
    }

    fn wait_status(&self, server: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.status(server);
            if now.as_deref().is_some_and(|s| s.starts_with(want)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy: {server} is {now:?}, not {want}, after 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the load saw, per phase.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    /// A kept-alive connection closed by a draining instance before it answered: the request
    /// was sent again on a new connection (RFC 9112 9.3.1, as curl and browsers do for GET).
    retried: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 10 {
            failures.push(why);
        }
    }

    fn line(&self, phase: &str) -> String {
        format!(
            "{phase:<16} sent {:>5}  answered {:>5}  failed {:>3}  retried on a new connection {:>3}",
            self.sent.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.retried.load(Ordering::Relaxed),
        )
    }
}

/// A request of consumer A through the fleet, with a fresh trace id.
fn fleet_request(endpoint: &str, n: u64) -> Request {
    Request {
        method: "GET".into(),
        target: format!("/{endpoint}{SEARCH}"),
        version: "HTTP/1.1",
        fields: vec![
            ("Host".into(), "fleet".into()),
            ("Ssp-TraceID".into(), format!("5b6f3f8e-7a1d-4c1e-9d3a-{n:012x}")),
            ("Ssp-From".into(), CONSUMER_A.asid.into()),
            ("Ssp-To".into(), PROVIDER_ASID.into()),
            ("Ssp-InteractionID".into(), INTERACTION.into()),
            ("Authorization".into(), JWT.into()),
        ],
        body: Vec::new(),
    }
}

/// Closed-loop load until `stop`: `fresh` threads open a new connection per request (each
/// from the next source address), the others keep theirs alive. Counts go to the current
/// phase's tally.
fn load(
    front: SocketAddr,
    endpoint: String,
    fresh: usize,
    kept: usize,
    phase: Arc<Mutex<Arc<Tally>>>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let config = client_config(&CONSUMER_A);
    let ids = Arc::new(AtomicU64::new(1));
    (0..fresh + kept)
        .map(|t| {
            let (config, phase, stop, ids, endpoint) = (
                config.clone(),
                phase.clone(),
                stop.clone(),
                ids.clone(),
                endpoint.clone(),
            );
            let new_per_request = t < fresh;
            std::thread::spawn(move || {
                let mut conn: Option<Consumer> = None;
                let mut source = t;
                while !stop.load(Ordering::Relaxed) {
                    // A consumer's think time: keeps the load small on a shared 2-core box.
                    std::thread::sleep(THINK);
                    let tally = phase.lock().unwrap().clone();
                    let request = fleet_request(&endpoint, ids.fetch_add(1, Ordering::Relaxed));
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    let mut reused = conn.is_some();
                    let outcome = loop {
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => {
                                source = (source + 1) % SOURCES.len();
                                match connect_from(SOURCES[source], front) {
                                    Ok(sock) => conn.insert(Consumer::over(sock, config.clone())),
                                    Err(e) => break Err(format!("connect: {e}")),
                                }
                            }
                        };
                        match c.send(&request).and_then(|()| c.read_response()) {
                            Ok(r) => break Ok(r),
                            Err(e) if reused => {
                                tally.retried.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                                reused = false;
                                let _ = e;
                            }
                            Err(e) => break Err(format!("{e}")),
                        }
                    };
                    match outcome {
                        Ok(r) if r.status == 200 => {
                            tally.answered.fetch_add(1, Ordering::Relaxed);
                            let closes = r
                                .field("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                            if new_per_request || closes {
                                conn = None;
                            }
                        }
                        Ok(r) => {
                            tally.fail(format!("status {}: {}", r.status, r.text()));
                            conn = None;
                        }
                        Err(e) => {
                            tally.fail(e);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Sends `n` requests as `who` from one source address, a new connection each: statuses.
fn burst(front: SocketAddr, endpoint: &str, who: &Who, source: Ipv4Addr, n: usize) -> Vec<u16> {
    let config = client_config(who);
    (0..n)
        .map(|i| {
            let sock = connect_from(source, front).expect("connect to HAProxy");
            let mut c = Consumer::over(sock, config.clone());
            let mut request = fleet_request(endpoint, 0xb000 + i as u64);
            for (name, value) in request.fields.iter_mut() {
                if name == "Ssp-From" {
                    *value = who.asid.into();
                }
            }
            c.exchange(&request).status
        })
        .collect()
}

#[test]
fn a_fleet_behind_haproxy_loses_no_request_to_reloads_or_a_rolling_restart() {
    let ci = std::env::var_os("CI").is_some();
    let Some(haproxy_bin) = find("haproxy") else {
        assert!(
            !ci,
            "haproxy is not installed, and CI must run this test (.ci/run installs it)"
        );
        eprintln!("note: haproxy not installed (apt-get install haproxy); skipping the fleet test");
        return;
    };
    let rsyslog_bin = find("rsyslogd");
    assert!(
        rsyslog_bin.is_some() || !ci,
        "rsyslogd is not installed, and CI must ship the audit (.ci/run installs rsyslog)"
    );
    if rsyslog_bin.is_none() {
        eprintln!("note: rsyslogd not installed (apt-get install rsyslog); not shipping the audit");
    }
    let mut a = Instance::new("ssp-a", None);
    let mut b = Instance::new("ssp-b", Some(a.setup.provider_addr));
    a.start();
    b.start();
    // The central store and a shipper per instance, as packaging/fleet has them.
    let store = a.setup.dir.path().join("central/store");
    let mut shipping = Vec::new();
    if let Some(bin) = &rsyslog_bin {
        let port = unused_port().port();
        let central = a.setup.dir.path().join("central");
        std::fs::create_dir_all(&store).unwrap();
        shipping.push(rsyslogd(
            bin,
            &central,
            packaged(
                "rsyslog-central.conf",
                &[
                    ("WORK", central.display().to_string()),
                    ("LISTEN_HOST", "127.0.0.1".into()),
                    ("LISTEN_PORT", port.to_string()),
                    ("STORE", store.display().to_string()),
                ],
            ),
        ));
        for instance in [&a, &b] {
            let dir = instance.setup.dir.path();
            shipping.push(rsyslogd(
                bin,
                &dir.join("shipper"),
                packaged(
                    "rsyslog-instance.conf",
                    &[
                        ("WORK", dir.join("shipper").display().to_string()),
                        ("AUDIT_DIR", dir.join("audit").display().to_string()),
                        ("NAME", instance.name.into()),
                        ("CENTRAL_HOST", "127.0.0.1".into()),
                        ("CENTRAL_PORT", port.to_string()),
                    ],
                ),
            ));
        }
    }
    let haproxy = Haproxy::start(&haproxy_bin, a.setup.dir.path(), &a, &b);
    let endpoint = a.setup.endpoint.clone();

    // A rate-limited consumer (1/s, burst 3) is still limited through the balancer: one
    // address hashes to one instance, so it meets one bucket.
    // Two buckets (a balancer spreading it) would admit 6 at once.
    let began = Instant::now();
    let statuses = burst(haproxy.front, &endpoint, &ECDSA, SOURCES[0], 8);
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    // The burst, plus one a second refilled while the 8 handshakes took their time.
    let refilled = began.elapsed().as_secs() as usize + 1;
    assert!(
        (3..=3 + refilled).contains(&admitted)
            && admitted < 6
            && statuses.iter().all(|s| *s == 200 || *s == 429),
        "limited consumer through HAProxy: {statuses:?} in {:?}",
        began.elapsed()
    );
    // Consumer B has no agreement yet: refused by whichever instance it reaches.
    assert_eq!(burst(haproxy.front, &endpoint, &CONSUMER_B, SOURCES[1], 1), [403]);

    let phases: Vec<(&str, Arc<Tally>)> = ["steady", "reload", "rolling restart"]
        .iter()
        .map(|p| (*p, Arc::new(Tally::default())))
        .collect();
    let phase = Arc::new(Mutex::new(phases[0].1.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(haproxy.front, endpoint.clone(), 2, 2, phase.clone(), stop.clone());

    std::thread::sleep(Duration::from_secs(3));

    // Reload: consumer B gets its agreement, on each instance in turn.
    *phase.lock().unwrap() = phases[1].1.clone();
    for instance in [&a, &b] {
        let text = std::fs::read_to_string(&instance.setup.config).unwrap();
        let without = format!(
            "asid = \"{}\"\nfqdn = \"{}\"\ninteractions = [\"{INTERACTION}\"]\nproviders = []",
            CONSUMER_B.asid, CONSUMER_B.fqdn
        );
        assert!(text.contains(&without), "harness config changed shape");
        let with = without.replace("providers = []", &format!("providers = [\"{PROVIDER_ASID}\"]"));
        std::fs::write(&instance.setup.config, text.replace(&without, &with)).unwrap();
        let before = instance.log().matches("is in force").count();
        instance.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while instance.log().matches("is in force").count() == before {
            assert!(
                Instant::now() < deadline,
                "{}: reload not in force",
                instance.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for source in &SOURCES[..4] {
        assert_eq!(
            burst(haproxy.front, &endpoint, &CONSUMER_B, *source, 1),
            [200],
            "B after the reloads"
        );
    }

    // Rolling restart: SIGTERM (HAProxy sees /readyz 503 and takes it out during stop_delay),
    // drain, exit 0, start again, back in HAProxy; then the next one.
    *phase.lock().unwrap() = phases[2].1.clone();
    for (instance, server) in [(&mut a, "ssp-a"), (&mut b, "ssp-b")] {
        instance.signal(libc::SIGTERM);
        haproxy.wait_status(server, "DOWN");
        // Put back: the instance's `stop` sends SIGTERM again only after this one ends it.
        let mut child = instance.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{server}: still running 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{server}: exit {status}");
        instance.start();
        haproxy.wait_status(server, "UP");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a load thread");
    }

    let mut report = String::new();
    for (name, tally) in &phases {
        report.push_str(&tally.line(name));
        report.push('\n');
    }
    eprintln!("{report}");
    for (name, tally) in &phases {
        assert_eq!(
            tally.failed.load(Ordering::Relaxed),
            0,
            "{name}: failed requests: {:?}\n{report}",
            tally.failures.lock().unwrap()
        );
        assert!(
            tally.answered.load(Ordering::Relaxed) > 10,
            "{name}: too little load\n{report}"
        );
    }

    a.stop();
    b.stop();
    for instance in [&a, &b] {
        let records = instance.records();
        let reqs: Vec<_> = records.iter().filter(|r| r["type"] == "req").collect();
        assert!(!reqs.is_empty(), "{}: served nothing", instance.name);
        // PROXY v2: the consumer's address, not HAProxy's (127.0.0.1).
        for r in &reqs {
            let peer = r["peer"].as_str().unwrap_or_default();
            assert!(
                SOURCES.iter().any(|s| peer.starts_with(&format!("{s}:"))),
                "{}: req record with peer {peer}",
                instance.name
            );
        }
        eprintln!("{}: {} req records", instance.name, reqs.len());
        let (code, out) = instance.verify(None);
        assert_eq!(code, Some(0), "{}: audit verify: {out}", instance.name);
        if rsyslog_bin.is_some() {
            // The central copy: every record, byte for byte, once the shipper has caught up.
            let box_bytes = instance.chain_bytes();
            let central = store.join(format!("{}.jsonl", instance.name));
            // rsyslog polls and ships in its own time; a loaded CI box can take a while.
            let deadline = Instant::now() + Duration::from_secs(60);
            let box_lines: Vec<&[u8]> = box_bytes.split_inclusive(|c| *c == b'\n').collect();
            let shipped = loop {
                let shipped = std::fs::read(&central).unwrap_or_default();
                if distinct_lines(&shipped).0.len() >= box_lines.len() || Instant::now() >= deadline {
                    break shipped;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            // rsyslog forwards at least once: around a restart of either end a line can arrive
            // twice (seen in 2 of about 8 runs under load, a whole line repeated at once). The
            // central copy must hold every record, byte for byte and in order; a line that
            // repeats the one before it is counted and shown, not taken for a record.
            let (central_lines, repeated) = distinct_lines(&shipped);
            let same = central_lines
                .iter()
                .zip(&box_lines)
                .take_while(|(a, b)| a == b)
                .count();
            assert!(
                central_lines == box_lines,
                "{}: the central copy ({} lines, {repeated} repeated) is not the audit ({} lines): {}",
                instance.name,
                central_lines.len(),
                box_lines.len(),
                if same == central_lines.len() {
                    "a prefix of it (the shipper is behind)".to_string()
                } else {
                    format!("they differ from line {}", same + 1)
                }
            );
            if repeated > 0 {
                eprintln!(
                    "{}: the shipper delivered {repeated} line(s) twice (at-least-once)",
                    instance.name
                );
            }
            let (code, out) = instance.verify(Some(&central));
            assert_eq!(code, Some(0), "{}: audit verify --witness: {out}", instance.name);
            eprintln!("{}: central copy byte for byte; {}", instance.name, out.trim());
        }
        assert_eq!(
            records.iter().filter(|r| r["type"] == "start").count(),
            2,
            "{}: one start per run",
            instance.name
        );
    }
}

/// `bytes`' lines, less each line equal to the one before it, and how many those were.
fn distinct_lines(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut repeated = 0;
    for line in bytes.split_inclusive(|c| *c == b'\n') {
        if lines.last() == Some(&line) {
            repeated += 1;
        } else {
            lines.push(line);
        }
    }
    (lines, repeated)
}
