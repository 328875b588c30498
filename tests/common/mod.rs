//! The integration-test harness: an in-process proxy with the demo provider behind it, and a
//! blocking consumer that speaks raw HTTP/1.1 over mutual TLS.
//!
//! Every test starts its own proxy (one worker, loopback, port 0) and provider, so tests never
//! share state and can run in parallel. The proxy thread runs until the test process exits.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod mint;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sha2::{Digest, Sha256};
use ssp::demo::provider::{self, Handler, Reply, SeenRequest};
use ssp::http::body::BodyReader;
use ssp::http::response::{self, ResponseFraming};
use ssp::proxy::{Runtime, Shared};
use ssp::tls::files;

pub const INTERACTION: &str =
    "urn:nhs:names:services:prescription-exemptions:custom:operation:search:prescription-exemptions";
pub const TRACE_ID: &str = "5b6f3f8e-7a1d-4c1e-9d3a-2f0b6c1e8a44";
/// `Bearer` + an unsigned JWT: {"alg":"none","typ":"JWT"}.{"iss":"x"}.
pub const JWT: &str = "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ4In0.";
pub const PROVIDER_ASID: &str = "200000000999";
pub const ROOT: &str = "/Prescription-Exemptions/1.0.0";
pub const SEARCH: &str = "/search?patient=9000000009";
/// What the default provider handler answers.
pub const PROVIDER_BODY: &str = r#"{"resourceType":"Bundle","type":"searchset","total":0}"#;

/// A consumer from the fixture PKI and the ASID the harness configuration gives it.
#[derive(Debug, Clone, Copy)]
pub struct Who {
    /// `fixtures/pki/<file>.pem` and `.key`.
    pub file: &'static str,
    pub asid: &'static str,
    pub fqdn: &'static str,
    /// Whether it has a data-sharing agreement with the provider.
    pub agreement: bool,
}

pub const CONSUMER_A: Who = who("consumer-a", "200000000001", "dispenser-a.example.nhs.uk", true);
pub const CONSUMER_B: Who = who("consumer-b", "200000000002", "dispenser-b.example.nhs.uk", false);
pub const ECDSA: Who = who(
    "consumer-ecdsa",
    "200000000003",
    "dispenser-ecdsa.example.nhs.uk",
    true,
);
pub const RSA4096: Who = who(
    "consumer-rsa4096",
    "200000000004",
    "dispenser-c.example.nhs.uk",
    true,
);
pub const REVOKED: Who = who(
    "consumer-revoked",
    "200000000005",
    "dispenser-revoked.example.nhs.uk",
    true,
);
pub const WRONG_OU: Who = who(
    "consumer-wrong-ou",
    "200000000006",
    "dispenser-wrong-ou.example.nhs.uk",
    true,
);
pub const EXPIRED: Who = who(
    "consumer-expired",
    "200000000007",
    "dispenser-expired.example.nhs.uk",
    true,
);
/// Consumer A's name issued by another root: it claims A's ASID.
pub const OTHER_CA: Who = who(
    "consumer-other-ca",
    "200000000001",
    "dispenser-a.example.nhs.uk",
    true,
);

/// Every consumer the harness configuration registers (OTHER_CA shares A's entry).
const REGISTERED: [Who; 7] = [CONSUMER_A, CONSUMER_B, ECDSA, RSA4096, REVOKED, WRONG_OU, EXPIRED];

const fn who(file: &'static str, asid: &'static str, fqdn: &'static str, agreement: bool) -> Who {
    Who {
        file,
        asid,
        fqdn,
        agreement,
    }
}

pub fn pki_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki")
}

pub fn pki(name: &str) -> PathBuf {
    pki_dir().join(name)
}

/// A fresh, empty folder under the system temp dir, unique in this process, removed when
/// dropped (also when the test fails).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ssp-test-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a test changes in the harness configuration. Strings are TOML lines added to their
/// table (e.g. `limits: "header_timeout = \"1s\"".into()`).
pub struct Options {
    pub server: String,
    /// `server.client_ca`: a file under fixtures/pki.
    pub client_ca: &'static str,
    /// Files under fixtures/pki for `server.crl`, or inline tables (`{ path = ..., url = ... }`);
    /// empty for `crl = []`.
    pub crl: Vec<&'static str>,
    pub upstream: String,
    pub limits: String,
    /// `[throttle]` lines; by default limits high enough never to be met.
    pub throttle: String,
    /// `[jwt]` lines; none by default (shape only).
    pub jwt: String,
    /// The provider's registered endpoint; `{port}` is replaced by the provider's port.
    pub endpoint: String,
    /// The certificate the provider presents (`fixtures/pki/<name>.pem`).
    pub provider_identity: &'static str,
    /// No provider at all: the configured address has nothing listening.
    pub dead_provider: bool,
    /// A provider the test runs itself (`common/scripted_provider.rs`) at this address: the
    /// harness starts none, and `seen` stays empty.
    pub provider_at: Option<SocketAddr>,
    /// Addresses listed in `connect` before the provider's, tried first.
    pub connect_first: Vec<SocketAddr>,
    pub handler: Handler,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server: String::new(),
            client_ca: "nhs-ca.pem",
            crl: vec!["level1c.crl"],
            upstream: String::new(),
            limits: String::new(),
            throttle: "rate = 10000\nburst = 10000".into(),
            jwt: String::new(),
            endpoint: format!("https://localhost:{{port}}{ROOT}"),
            provider_identity: "provider",
            dead_provider: false,
            provider_at: None,
            connect_first: Vec::new(),
            handler: default_handler(),
        }
    }
}

/// Answers 200 with a small FHIR Bundle and tells which target it saw.
pub fn default_handler() -> Handler {
    Arc::new(|req: &SeenRequest| {
        let mut reply = Reply::json(200, PROVIDER_BODY);
        reply.fields.push(("X-Seen-Target".into(), req.target.clone()));
        reply
    })
}

/// A provider started and a configuration written for a proxy in front of it; `Proxy::with`
/// runs that proxy in-process, `tests/cli.rs` runs the binary on it.
pub struct Setup {
    pub dir: TempDir,
    pub config: PathBuf,
    pub provider_addr: SocketAddr,
    /// The registered endpoint, as configured.
    pub endpoint: String,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl Setup {
    pub fn new(options: &Options) -> Setup {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = TempDir::new("proxy");
        let (provider_addr, seen) = if let Some(addr) = options.provider_at {
            (addr, Arc::new(Mutex::new(Vec::new())))
        } else if options.dead_provider {
            (unused_port(), Arc::new(Mutex::new(Vec::new())))
        } else {
            let id = options.provider_identity;
            let tls = provider::server_config(
                &pki(&format!("{id}.pem")),
                &pki(&format!("{id}.key")),
                &pki("nhs-ca.pem"),
            )
            .expect("provider TLS");
            let p = provider::start(loopback(), tls, options.handler.clone()).expect("start provider");
            (p.addr, p.seen)
        };
        let endpoint = options
            .endpoint
            .replace("{port}", &provider_addr.port().to_string());
        // A real sealing key, as an operator makes with `ssp audit keygen`.
        assert_eq!(
            ssp::audit::cli::keygen(&dir.path().join("audit.key")),
            0,
            "audit keygen"
        );
        // The initial key stays with the "auditor": the proxy's copy evolves at every seal.
        std::fs::copy(dir.path().join("audit.key"), dir.path().join("audit.k0")).unwrap();
        let config = dir.path().join("ssp.toml");
        std::fs::write(
            &config,
            config_text(options, dir.path(), &endpoint, provider_addr),
        )
        .unwrap();
        Setup {
            dir,
            config,
            provider_addr,
            endpoint,
            seen,
        }
    }
}

/// A running proxy and the provider behind it.
pub struct Proxy {
    pub addr: SocketAddr,
    pub provider_addr: SocketAddr,
    /// The registered endpoint, as configured.
    pub endpoint: String,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    /// The configuration in force, replaceable as a reload would.
    pub runtime: Arc<Runtime>,
    serving: Mutex<Option<std::thread::JoinHandle<std::io::Result<()>>>>,
    /// Holds the temp folder until the test ends.
    _setup: Setup,
}

impl Proxy {
    pub fn start() -> Proxy {
        Proxy::with(Options::default())
    }

    pub fn with(options: Options) -> Proxy {
        Proxy::on(Setup::new(&options))
    }

    /// Runs a proxy on a prepared setup (e.g. with its audit folder on a small tmpfs).
    pub fn on(setup: Setup) -> Proxy {
        let config = ssp::config::load(&setup.config).unwrap_or_else(|e| panic!("harness config: {e}"));
        let shared = Shared::load(config).unwrap_or_else(|e| panic!("harness config: {e}"));
        let listeners = ssp::proxy::bind(&shared).expect("bind");
        let addr = listeners[0].local_addr().unwrap();
        let runtime = Arc::new(Runtime::start(shared).unwrap_or_else(|e| panic!("harness audit: {e}")));
        let serving = runtime.clone();
        let serving = std::thread::Builder::new()
            .name("ssp-under-test".into())
            .spawn(move || ssp::proxy::serve(serving, listeners))
            .unwrap();
        Proxy {
            addr,
            runtime,
            serving: Mutex::new(Some(serving)),
            provider_addr: setup.provider_addr,
            endpoint: setup.endpoint.clone(),
            seen: setup.seen.clone(),
            _setup: setup,
        }
    }

    /// Stops as SIGTERM does: the workers drain and hand over their last records, then the
    /// audit is sealed and closed.
    pub fn stop(&self) {
        self.runtime.stop();
        if let Some(serving) = self.serving.lock().unwrap().take() {
            serving
                .join()
                .expect("the proxy thread")
                .expect("the proxy stopped cleanly");
        }
        self.runtime.shutdown("test over");
    }

    /// The test's folder: `audit/`, `audit.k0` (the initial key), `transactions.log`.
    pub fn dir(&self) -> &Path {
        self._setup.dir.path()
    }

    /// Loads a configuration written from `options` (same provider) and puts it in force, as
    /// a reload does.
    pub fn reload(&self, options: &Options) {
        let setup = &self._setup;
        let text = config_text(options, setup.dir.path(), &self.endpoint, self.provider_addr);
        std::fs::write(&setup.config, text).unwrap();
        let config = ssp::config::load(&setup.config).unwrap_or_else(|e| panic!("reload config: {e}"));
        let shared = Shared::load(config).unwrap_or_else(|e| panic!("reload config: {e}"));
        self.runtime.replace(shared);
    }

    /// The request-target for `suffix` under the registered endpoint.
    pub fn target(&self, suffix: &str) -> String {
        format!("/{}{suffix}", self.endpoint)
    }

    /// The provider URL a target names, as it appears in tokens.
    pub fn url(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.endpoint)
    }

    /// A complete, allowed request from consumer A: the four Ssp headers, a JWT, and a
    /// `Content-Length` when there is a body.
    pub fn valid_request(&self, method: &str, suffix: &str, extra: &[(&str, &str)], body: &[u8]) -> Request {
        let mut r = Request {
            method: method.into(),
            target: self.target(suffix),
            version: "HTTP/1.1",
            fields: vec![
                ("Host".into(), format!("localhost:{}", self.addr.port())),
                ("Ssp-TraceID".into(), TRACE_ID.into()),
                ("Ssp-From".into(), CONSUMER_A.asid.into()),
                ("Ssp-To".into(), PROVIDER_ASID.into()),
                ("Ssp-InteractionID".into(), INTERACTION.into()),
                ("Authorization".into(), JWT.into()),
            ],
            body: body.to_vec(),
        };
        for (n, v) in extra {
            r = r.add(n, v);
        }
        if !body.is_empty() {
            r = r.add("Content-Length", &body.len().to_string());
        }
        r
    }

    pub fn get(&self) -> Request {
        self.valid_request("GET", SEARCH, &[], b"")
    }

    pub fn consumer(&self, who: &Who) -> Consumer {
        Consumer::connect(self.addr, client_config(who))
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// SPEC section 4: nothing that is refused reaches a provider.
    #[track_caller]
    pub fn assert_nothing_forwarded(&self, context: &str) {
        let seen = self.seen();
        assert!(
            seen.is_empty(),
            "{context}: the provider saw {} request(s), first {} {}",
            seen.len(),
            seen[0].method,
            seen[0].target
        );
    }
}

fn config_text(o: &Options, dir: &Path, endpoint: &str, provider: SocketAddr) -> String {
    let pki = pki_dir();
    let pki = pki.display();
    let dir = dir.display();
    let mut text = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
certificate = "{pki}/ssp.pem"
private_key = "{pki}/ssp.key"
client_ca = "{pki}/{client_ca}"
crl = [{crl}]
{server}

[upstream]
ca = "{pki}/nhs-ca.pem"
{upstream}

[limits]
{limits}

[throttle]
{throttle}

[audit]
dir = "{dir}/audit"
key = "{dir}/audit.key"
sync = "off"

[transactions]
path = "{dir}/transactions.log"

[admin]
listen = ""

[jwt]
{jwt}

[[provider]]
asid = "{PROVIDER_ASID}"
endpoint = "{endpoint}"
interactions = ["{INTERACTION}"]
connect = "{connect}"
"#,
        connect = o
            .connect_first
            .iter()
            .chain([&provider])
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        crl = o
            .crl
            .iter()
            // A `{ path = ..., url = ... }` table is written as given.
            .map(|f| if f.starts_with('{') {
                f.to_string()
            } else {
                format!("\"{pki}/{f}\"")
            })
            .collect::<Vec<_>>()
            .join(", "),
        server = o.server,
        client_ca = o.client_ca,
        upstream = o.upstream,
        limits = o.limits,
        throttle = o.throttle,
        jwt = o.jwt,
    );
    for c in REGISTERED {
        let providers = if c.agreement {
            format!("\"{PROVIDER_ASID}\"")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "\n[[consumer]]\nasid = \"{}\"\nfqdn = \"{}\"\ninteractions = [\"{INTERACTION}\"]\nproviders = [{providers}]\n",
            c.asid, c.fqdn
        ));
    }
    text
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A loopback address with (very likely) nothing listening: bound once, then released.
pub fn unused_port() -> SocketAddr {
    TcpListener::bind(loopback()).unwrap().local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The consumer side.

/// A TLS client for `who`, trusting the fixture root, with ring's default suites.
pub fn client_config(who: &Who) -> Arc<ClientConfig> {
    client_config_with(
        who,
        Arc::new(rustls::crypto::ring::default_provider()),
        rustls::DEFAULT_VERSIONS,
    )
}

pub fn client_config_with(
    who: &Who,
    crypto: Arc<CryptoProvider>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let chain = files::certificates(&pki(&format!("{}.pem", who.file))).unwrap();
    let key = files::private_key(&pki(&format!("{}.key", who.file))).unwrap();
    let config = ClientConfig::builder_with_provider(crypto)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots())
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// A client that presents no certificate at all.
pub fn anonymous_client_config() -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots())
        .with_no_client_auth();
    Arc::new(config)
}

pub fn roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in files::certificates(&pki("nhs-ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    roots
}

/// A request as bytes on the wire: fields are written exactly as given, nothing is added.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: &'static str,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Replaces every field called `name` (case-insensitive) by one with `value`.
    pub fn set(self, name: &str, value: &str) -> Request {
        self.remove(name).add(name, value)
    }

    pub fn remove(mut self, name: &str) -> Request {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub fn add(mut self, name: &str, value: &str) -> Request {
        self.fields.push((name.into(), value.into()));
        self
    }

    pub fn target(mut self, target: &str) -> Request {
        self.target = target.into();
        self
    }

    /// Replaces the body bytes, leaving the framing fields alone.
    pub fn raw_body(mut self, body: &[u8]) -> Request {
        self.body = body.to_vec();
        self
    }

    /// The head only, blank line included.
    pub fn head(&self) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.target, self.version);
        for (n, v) in &self.fields {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.head();
        out.extend_from_slice(&self.body);
        out
    }
}

/// `payload` in chunked framing, `size` bytes per chunk, with the last-chunk and no trailers.
pub fn chunked(payload: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / size.max(1) * 8 + 8);
    for chunk in payload.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Deterministic bytes that do not compress into a pattern.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How long a consumer waits for any read before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One consumer connection: blocking mutual TLS over TCP.
pub struct Consumer {
    pub tls: StreamOwned<ClientConnection, TcpStream>,
    /// Plaintext received and not yet taken as a response.
    buf: Vec<u8>,
}

impl Consumer {
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Consumer {
        Consumer::connect_after(addr, config, b"")
    }

    /// Connects and writes `preamble` (e.g. a PROXY protocol header) before any TLS byte.
    pub fn connect_after(addr: SocketAddr, config: Arc<ClientConfig>, preamble: &[u8]) -> Consumer {
        let mut sock = TcpStream::connect(addr).expect("connect to the proxy");
        io::Write::write_all(&mut sock, preamble).expect("write the preamble");
        Consumer::over(sock, config)
    }

    /// As `connect`, for a proxy that may be gone (killed under load).
    pub fn try_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<Consumer> {
        Ok(Consumer::over(TcpStream::connect(addr)?, config))
    }

    /// Over a socket the caller connected (e.g. from a chosen source address).
    pub fn over(sock: TcpStream, config: Arc<ClientConfig>) -> Consumer {
        sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        Consumer {
            tls: StreamOwned::new(conn, sock),
            buf: Vec::new(),
        }
    }

    /// Completes the handshake (as far as the client can tell).
    pub fn handshake(&mut self) -> io::Result<()> {
        while self.tls.conn.is_handshaking() {
            self.tls.conn.complete_io(&mut self.tls.sock)?;
        }
        Ok(())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tls.sock.local_addr().unwrap()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    pub fn send(&mut self, request: &Request) -> io::Result<()> {
        self.send_raw(&request.bytes())
    }

    /// Sends `request` and reads its final response; panics on any I/O error.
    #[track_caller]
    pub fn exchange(&mut self, request: &Request) -> Response {
        self.send(request).expect("send request");
        self.read_response().expect("read response")
    }

    /// Reads the next final response, skipping interim (1xx) ones.
    pub fn read_response(&mut self) -> io::Result<Response> {
        loop {
            let r = self.read_any_response()?;
            if !(100..200).contains(&r.status) {
                return Ok(r);
            }
        }
    }

    /// Reads the next response, interim ones included. A response to HEAD is not expected.
    pub fn read_any_response(&mut self) -> io::Result<Response> {
        let head = loop {
            match response::parse(&self.buf, 1 << 20, "GET") {
                Ok(Some(head)) => break head,
                Ok(None) => self.fill()?,
                Err(e) => return Err(io::Error::other(format!("bad response head: {e:?}"))),
            }
        };
        self.buf.drain(..head.len());
        let fields = head
            .fields()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        let mut reader = match head.framing {
            ResponseFraming::None => None,
            ResponseFraming::Length(n) => Some(BodyReader::length(n)),
            ResponseFraming::Chunked => Some(BodyReader::chunked()),
            ResponseFraming::UntilClose => Some(BodyReader::until_close()),
        };
        let mut body = Vec::new();
        while let Some(r) = reader.as_mut() {
            if self.buf.is_empty() {
                match self.fill() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && r.finish_at_eof(true).is_ok() => {
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            let p = r
                .feed(&self.buf, Some(&mut body))
                .map_err(|e| io::Error::other(format!("bad response body: {e:?}")))?;
            self.buf.drain(..p.consumed);
            if p.done {
                reader = None;
            }
        }
        Ok(Response {
            status: head.status,
            fields,
            body,
        })
    }

    /// Reads more plaintext; a closed connection is `UnexpectedEof`.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        match self.tls.read(&mut chunk)? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// The proxy closed the connection: nothing more arrives, and it does not just hang.
    #[track_caller]
    pub fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.fill() {
            Ok(()) => panic!(
                "connection still open; it sent {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => assert!(
                !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
                "connection still open after {READ_TIMEOUT:?}"
            ),
        }
    }

    /// Sends a request and expects the connection to die instead of answering: a TLS alert
    /// (handshake refused) or a close, never a response and never a hang. Returns the error,
    /// which names the alert.
    #[track_caller]
    pub fn assert_refused_at_handshake(&mut self, request: &Request) -> io::Error {
        let outcome = self
            .handshake()
            .and_then(|()| self.send(request))
            .and_then(|()| self.read_response());
        match outcome {
            Ok(r) => panic!(
                "expected the handshake to be refused, got {} {}",
                r.status,
                r.text()
            ),
            Err(e) => {
                assert!(
                    !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
                    "expected a refused handshake, the proxy hung: {e}"
                );
                e
            }
        }
    }
}

/// An `OperationOutcome` answer of SPEC section 4: status, JSON content type, `issue.code` and
/// the token in `diagnostics` and `details.coding[0].code`; the trace id echoed when given.
#[track_caller]
/// A lowercase `8-4-4-4-12` UUID.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

pub fn assert_outcome(r: &Response, status: u16, code: &str, token: &str, trace: Option<&str>) {
    assert_eq!(r.status, status, "status; body: {}", r.text());
    assert_eq!(r.field("content-type"), Some("application/fhir+json"));
    let v = r.json();
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert!(is_uuid(v["id"].as_str().unwrap_or("")), "id: {}", r.text());
    let issue = &v["issue"][0];
    assert_eq!(issue["code"], code, "issue.code; body: {}", r.text());
    assert_eq!(issue["severity"], "error");
    assert_eq!(issue["diagnostics"], token, "diagnostics");
    // The Spine SSP's shape: the status as the code, the token as the display.
    let coding = &issue["details"]["coding"][0];
    assert_eq!(coding["code"], status.to_string(), "details.coding[0].code");
    assert_eq!(coding["display"], token, "details.coding[0].display");
    assert_eq!(
        coding["system"],
        "http://fhir.nhs.net/ValueSet/gpconnect-schedule-response-code-1-0"
    );
    if let Some(trace) = trace {
        assert_eq!(r.field("ssp-traceid"), Some(trace), "echoed Ssp-TraceID");
    }
}

/// `curl` when it is on PATH; tests that need it print a note and pass without it.
pub fn curl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("curl"))
        .find(|p| p.is_file())
}
