//! A provider that misbehaves on request, for `tests/faults.rs`: HTTPS with client
//! certificates required, one blocking thread per connection. Each request picks a `Script`
//! with `fault=<name>` in its target; without one it is answered 200 and the connection stays
//! open for the next request (so the proxy pools it, and later faults may land on a pooled
//! connection). `close_port` / `reopen` take the listening port away and give it back;
//! `stall_handshakes` makes new connections wait in silence instead of answering the TLS
//! handshake.
//!
//! Every connection that runs a fault script is counted in `faults_open` until it ends; the
//! scripts that wait for the proxy to close their connection end when it does (or after
//! `HOLD_LIMIT`), so `faults_open() == 0` says the proxy let go of every faulty connection.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use ssp::http::body::BodyReader;
use ssp::http::request::{self, BodyFraming};

/// What the provider does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Reads the whole request and answers 200 with `BODY`; keeps the connection.
    Answer,
    /// Reads the request head, sends the start of a response head, then resets (RST).
    ResetMidHead,
    /// Sends a head promising `DECLARED` body bytes and `PARTIAL` of them, waits for
    /// `release`, then resets.
    ResetMidBody,
    /// Sends `GARBAGE` instead of a response head, then waits for the proxy to close.
    Garbage,
    /// Sends a status line and then header lines without end.
    EndlessHead,
    /// Sends a small response one byte a second.
    Drip,
    /// Reads the request head and closes (close_notify, FIN) without a byte of answer.
    CloseWithoutAnswer,
    /// Answers 200 with `EARLY_BODY` as soon as the head is in, without reading the request
    /// body, then drains until the proxy closes (as a server doing a lingering close).
    AnswerBeforeBody,
    /// Reads the head, then reads and discards until the proxy closes.
    Hold,
    /// Sends a head promising `DECLARED` bytes and `PARTIAL` of them, then waits for the
    /// proxy to close.
    HoldMidBody,
}

impl Script {
    const NAMED: [(Script, &'static str); 9] = [
        (Script::ResetMidHead, "reset-mid-head"),
        (Script::ResetMidBody, "reset-mid-body"),
        (Script::Garbage, "garbage"),
        (Script::EndlessHead, "endless-head"),
        (Script::Drip, "drip"),
        (Script::CloseWithoutAnswer, "close-without-answer"),
        (Script::AnswerBeforeBody, "answer-before-body"),
        (Script::Hold, "hold"),
        (Script::HoldMidBody, "hold-mid-body"),
    ];

    /// The query that makes the provider run this script, e.g. `fault=drip`.
    pub fn query(self) -> String {
        let name = Script::NAMED
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("none", |(_, n)| n);
        format!("fault={name}")
    }

    /// The script a request target asks for.
    fn of(target: &str) -> Script {
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let asked = query.split('&').find_map(|p| p.strip_prefix("fault="));
        Script::NAMED
            .iter()
            .find(|(_, name)| asked == Some(*name))
            .map_or(Script::Answer, |(s, _)| *s)
    }
}

/// What `Script::Answer` sends.
pub const BODY: &str = r#"{"resourceType":"Bundle","type":"searchset","total":0}"#;
/// What `Script::AnswerBeforeBody` sends.
pub const EARLY_BODY: &str = r#"{"resourceType":"OperationOutcome","issue":[]}"#;
/// The body length `ResetMidBody` and `HoldMidBody` promise.
pub const DECLARED: usize = 100_000;
/// The body bytes they send of it.
pub const PARTIAL: usize = 1_000;
/// What `Script::Garbage` sends: not HTTP, but a complete "head" so it is judged at once.
pub const GARBAGE: &[u8] = b"\x00\xffSSH-2.0-OpenSSH_9.6 \x1b[31m\r\n\r\n";
/// The longest a script waits for the proxy (or for `release`) before giving up.
pub const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// A request as the provider received it (the head; the body is not kept).
#[derive(Debug, Clone)]
pub struct Seen {
    pub trace_id: Option<String>,
    pub target: String,
}

struct State {
    config: Arc<ServerConfig>,
    seen: Mutex<Vec<Seen>>,
    /// A clone of every open connection's socket, to shut them all in `close_port`.
    open: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    faults_open: AtomicUsize,
    release: Mutex<Receiver<()>>,
    stop: AtomicBool,
    /// New connections get no TLS answer: they are held until the proxy closes them.
    stall: AtomicBool,
}

pub struct ScriptedProvider {
    pub addr: SocketAddr,
    state: Arc<State>,
    release: Sender<()>,
    accepting: Option<JoinHandle<()>>,
}

impl ScriptedProvider {
    /// Starts on a loopback port with `config` (the provider's certificate, client
    /// certificates required).
    pub fn start(config: Arc<ServerConfig>) -> ScriptedProvider {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the scripted provider");
        let addr = listener.local_addr().unwrap();
        let (release, gate) = mpsc::channel();
        let state = Arc::new(State {
            config,
            seen: Mutex::new(Vec::new()),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            faults_open: AtomicUsize::new(0),
            release: Mutex::new(gate),
            stop: AtomicBool::new(false),
            stall: AtomicBool::new(false),
        });
        let accepting = Some(accept_loop(listener, state.clone()));
        ScriptedProvider {
            addr,
            state,
            release,
            accepting,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Connections still running a fault script.
    pub fn faults_open(&self) -> usize {
        self.state.faults_open.load(Ordering::SeqCst)
    }

    /// Lets a waiting `ResetMidBody` reset its connection.
    pub fn release(&self) {
        let _ = self.release.send(());
    }

    /// Stops listening (connections to the port are refused) and shuts every open connection,
    /// pooled ones included.
    pub fn close_port(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            self.state.stop.store(true, Ordering::SeqCst);
            // Wakes the blocking accept, which sees `stop` and drops the listener.
            let _ = TcpStream::connect(self.addr);
            let _ = accepting.join();
        }
        self.shut_open_connections();
    }

    /// While on, new connections are accepted and then get no byte of TLS (a provider that
    /// hangs); turning it on shuts every open connection, so none is reused from the pool.
    pub fn stall_handshakes(&self, on: bool) {
        self.state.stall.store(on, Ordering::SeqCst);
        if on {
            self.shut_open_connections();
        }
    }

    fn shut_open_connections(&self) {
        for (_, sock) in self.state.open.lock().unwrap().drain() {
            let _ = sock.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same address.
    pub fn reopen(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    log::debug!("scripted provider: rebinding {}: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.state.stop.store(false, Ordering::SeqCst);
        self.accepting = Some(accept_loop(listener, self.state.clone()));
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("scripted-provider".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if state.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                let _ = std::thread::Builder::new()
                    .name("scripted-provider-conn".into())
                    .spawn(move || serve(stream, &state));
            }
        })
        .expect("spawn the scripted provider")
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// How a connection ends once its script is done.
enum End {
    Close,
    /// SO_LINGER 0: the close sends RST.
    Reset,
}

/// Counts a connection as running a fault script while alive.
struct FaultGuard<'a>(&'a AtomicUsize);

impl Drop for FaultGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, state: &State) {
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    if let Ok(clone) = stream.try_clone() {
        state.open.lock().unwrap().insert(id, clone);
    }
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(HOLD_LIMIT));
    if state.stall.load(Ordering::SeqCst) {
        state.faults_open.fetch_add(1, Ordering::SeqCst);
        let _counted = FaultGuard(&state.faults_open);
        hold_silent(&stream);
        state.open.lock().unwrap().remove(&id);
        return;
    }
    let Ok(conn) = ServerConnection::new(state.config.clone()) else {
        state.open.lock().unwrap().remove(&id);
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    let end = converse(&mut tls, state);
    // The socket closes (or resets) when its last descriptor goes: drop the clone first.
    state.open.lock().unwrap().remove(&id);
    if matches!(end, End::Reset) {
        reset_on_close(&tls.sock);
    }
}

/// Requests on one connection until a script ends it.
fn converse(tls: &mut Tls, state: &State) -> End {
    let mut buf = Vec::new();
    loop {
        let Some(head) = read_head(tls, &mut buf) else {
            return End::Close;
        };
        let target = head.target().to_string();
        let script = Script::of(&target);
        state.seen.lock().unwrap().push(Seen {
            trace_id: head
                .field("ssp-traceid")
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            target,
        });
        if script == Script::Answer {
            if read_body(tls, &mut buf, head.framing).is_none() || answer(tls, BODY).is_err() {
                return End::Close;
            }
            continue;
        }
        state.faults_open.fetch_add(1, Ordering::SeqCst);
        let _counted = FaultGuard(&state.faults_open);
        return misbehave(tls, state, script);
    }
}

fn misbehave(tls: &mut Tls, state: &State, script: Script) -> End {
    let partial_head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {DECLARED}\r\n\r\n"
    );
    let mut partial = partial_head.into_bytes();
    partial.extend(std::iter::repeat_n(b'x', PARTIAL));
    match script {
        Script::Answer => End::Close,
        Script::ResetMidHead => {
            let _ = send(tls, b"HTTP/1.1 200 OK\r\nContent-Type: appl");
            End::Reset
        }
        Script::ResetMidBody => {
            let _ = send(tls, &partial);
            let _ = state.release.lock().unwrap().recv_timeout(HOLD_LIMIT);
            End::Reset
        }
        Script::Garbage => {
            if send(tls, GARBAGE).is_ok() {
                hold(tls);
            }
            End::Close
        }
        Script::EndlessHead => {
            let line = format!("X-Endless: {}\r\n", "a".repeat(1000));
            let until = Instant::now() + HOLD_LIMIT;
            let mut out = send(tls, b"HTTP/1.1 200 OK\r\n");
            while out.is_ok() && Instant::now() < until {
                out = send(tls, line.as_bytes());
            }
            End::Close
        }
        Script::Drip => {
            let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{BODY}", BODY.len());
            for byte in response.as_bytes() {
                if send(tls, std::slice::from_ref(byte)).is_err()
                    || closed_within(tls, Duration::from_secs(1))
                {
                    break;
                }
            }
            End::Close
        }
        Script::CloseWithoutAnswer => {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            End::Close
        }
        Script::AnswerBeforeBody => {
            if answer(tls, EARLY_BODY).is_ok() {
                hold(tls);
            }
            End::Close
        }
        Script::Hold => {
            hold(tls);
            End::Close
        }
        Script::HoldMidBody => {
            if send(tls, &partial).is_ok() {
                hold(tls);
            }
            End::Close
        }
    }
}

fn send(tls: &mut Tls, bytes: &[u8]) -> std::io::Result<()> {
    tls.write_all(bytes)?;
    tls.flush()
}

fn answer(tls: &mut Tls, body: &str) -> std::io::Result<()> {
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(tls, reply.as_bytes())
}

/// Reads and discards until the proxy closes the connection (or `HOLD_LIMIT` passes).
fn hold(tls: &mut Tls) {
    let until = Instant::now() + HOLD_LIMIT;
    while Instant::now() < until && !closed_within(tls, until.saturating_duration_since(Instant::now())) {}
}

/// Waits up to `wait` for input, discarding it; true when the proxy closed the connection.
fn closed_within(tls: &mut Tls, wait: Duration) -> bool {
    let _ = tls
        .sock
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
    let mut chunk = [0u8; 16 * 1024];
    match tls.read(&mut chunk) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
        ),
    }
}

/// Reads and discards raw bytes (the proxy's ClientHello) until the proxy closes.
fn hold_silent(mut stream: &TcpStream) {
    let _ = stream.set_read_timeout(Some(HOLD_LIMIT));
    let mut chunk = [0u8; 4096];
    while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
}

fn reset_on_close(sock: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn read_head(tls: &mut Tls, buf: &mut Vec<u8>) -> Option<request::RequestHead> {
    let _ = tls.sock.set_read_timeout(Some(HOLD_LIMIT));
    loop {
        if let Some(head) = request::parse(buf, 64 * 1024).ok()? {
            buf.drain(..head.len());
            return Some(head);
        }
        fill(tls, buf)?;
    }
}

fn read_body(tls: &mut Tls, buf: &mut Vec<u8>, framing: BodyFraming) -> Option<()> {
    let mut reader = match framing {
        BodyFraming::None => return Some(()),
        BodyFraming::Length(n) => BodyReader::length(n),
        BodyFraming::Chunked => BodyReader::chunked(),
    };
    loop {
        if buf.is_empty() {
            fill(tls, buf)?;
        }
        let progress = reader.feed(buf, None).ok()?;
        buf.drain(..progress.consumed);
        if progress.done {
            return Some(());
        }
    }
}

fn fill(tls: &mut Tls, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match tls.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
