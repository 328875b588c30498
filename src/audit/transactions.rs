//! The transactions log (SPEC section 5): one JSON line per completed request with its timings.
//! It is a performance log, not evidence: not hash-chained, not synced, and a record that
//! cannot be queued or written is dropped (and counted in the error log) rather than ever
//! slowing a worker down.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use super::json::{self, Val};
use super::record::format_ts;
use super::{AuditError, RequestFacts};
use crate::durable_file::WRITEBACK_EVERY;

/// Lines queued at most; beyond that they are dropped.
const MAX_QUEUE: usize = 1 << 16;
/// After a failed write, how long before the file is opened again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// One completed request. Durations in milliseconds; `None` where the step did not happen
/// (no new TLS handshake on a kept-alive connection, a pooled upstream connection, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// Shared with the exchange and its audit records: nothing is copied per line.
    pub request: Arc<RequestFacts>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub tls_handshake_ms: Option<f64>,
    pub queue_ms: f64,
    pub upstream_connect_ms: Option<f64>,
    pub upstream_tls_ms: Option<f64>,
    pub ttfb_ms: Option<f64>,
    pub total_ms: f64,
    /// Whether a pooled upstream connection was reused.
    pub reused: bool,
}

/// Appends the line written for `t`, newline included.
fn write_line(out: &mut String, t: &Transaction, ts: &str) {
    let text = t.request.text.get();
    let fields = [
        ("ts", Val::str(ts)),
        ("trace_id", Val::opt_str(text.trace_id)),
        ("from", Val::opt_str(text.from)),
        ("to", Val::opt_str(text.to)),
        ("interaction", Val::opt_str(text.interaction)),
        ("status", Val::U64(u64::from(t.status))),
        ("bytes_in", Val::U64(t.bytes_in)),
        ("bytes_out", Val::U64(t.bytes_out)),
        ("tls_handshake_ms", Val::opt_f64(t.tls_handshake_ms)),
        ("queue_ms", Val::F64(t.queue_ms)),
        ("upstream_connect_ms", Val::opt_f64(t.upstream_connect_ms)),
        ("upstream_tls_ms", Val::opt_f64(t.upstream_tls_ms)),
        ("ttfb_ms", Val::opt_f64(t.ttfb_ms)),
        ("total_ms", Val::F64(t.total_ms)),
        ("reused", Val::Bool(t.reused)),
    ];
    json::write_obj(out, &fields);
    out.push('\n');
}

enum Msg {
    /// A worker's lines of one event-loop turn, in order.
    Log(Vec<Transaction>),
    Reopen,
    Shutdown,
}

/// The handle workers log through. Cheap to clone; a no-op when the log is switched off.
#[derive(Debug, Clone)]
pub struct Transactions {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Msg>,
    queued: Arc<AtomicUsize>,
    dropped: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Transactions {
    /// Opens (appending, creating) the log and starts its writer thread; `None` switches the
    /// log off.
    pub fn start(path: Option<PathBuf>) -> Result<Transactions, AuditError> {
        let Some(path) = path else {
            return Ok(Transactions { inner: None });
        };
        let file = open(&path).map_err(|e| AuditError::io(&path, e))?;
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = LogWriter {
            path: path.clone(),
            out: Some(BufWriter::new(file)),
            queued: queued.clone(),
            unflushed: 0,
        };
        let thread = thread::Builder::new()
            .name("ssp-transactions".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io(&path, e))?;
        let inner = Inner {
            tx,
            queued,
            dropped: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
        };
        Ok(Transactions {
            inner: Some(Arc::new(inner)),
        })
    }

    /// Queues one line. Never blocks.
    pub fn log(&self, t: Transaction) {
        self.log_all(vec![t]);
    }

    /// Queues lines gathered by a worker over one turn of its loop, as one message: the
    /// writer thread wakes once per turn, not once per line. Never blocks.
    pub fn log_all(&self, lines: Vec<Transaction>) {
        let Some(inner) = &self.inner else { return };
        let n = lines.len();
        if n == 0 {
            return;
        }
        if inner.queued.fetch_add(n, Ordering::Relaxed) >= MAX_QUEUE
            || inner.tx.send(Msg::Log(lines)).is_err()
        {
            inner.queued.fetch_sub(n, Ordering::Relaxed);
            let before = inner.dropped.fetch_add(n as u64, Ordering::Relaxed);
            // Warn when the count passes a power of two, not on every loss.
            if (before + n as u64).ilog2() != before.checked_ilog2().unwrap_or(u32::MAX) {
                log::warn!(
                    "transactions log: {} lines dropped (queue full or writer stopped)",
                    before + n as u64
                );
            }
        }
    }

    /// Closes and reopens the file by name (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(inner) = &self.inner {
            let _ = inner.tx.send(Msg::Reopen);
        }
    }

    /// Writes what is queued and stops the thread. Later calls do nothing.
    pub fn shutdown(&self) {
        let Some(inner) = &self.inner else { return };
        let Some(thread) = inner.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let _ = inner.tx.send(Msg::Shutdown);
        let _ = thread.join();
    }
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

struct LogWriter {
    path: PathBuf,
    /// `None` after a failure, until the file can be opened again.
    out: Option<BufWriter<File>>,
    queued: Arc<AtomicUsize>,
    /// Bytes handed to the file since writeback was last started.
    unflushed: u64,
}

impl LogWriter {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut retry_at = Instant::now();
        // One buffer for every batch of lines: no allocation per line once it has grown.
        let mut text = String::new();
        while let Ok(first) = rx.recv() {
            let mut msg = Some(first);
            let mut stop = false;
            // Drain what is queued, then flush once.
            while let Some(m) = msg {
                match m {
                    Msg::Log(lines) => {
                        self.queued.fetch_sub(lines.len(), Ordering::Relaxed);
                        if self.out.is_none() && Instant::now() >= retry_at {
                            retry_at = Instant::now() + RETRY_EVERY;
                            self.out = open(&self.path).ok().map(BufWriter::new);
                        }
                        let ts = format_ts(SystemTime::now());
                        text.clear();
                        for t in &lines {
                            write_line(&mut text, t, &ts);
                        }
                        if let Some(out) = &mut self.out
                            && let Err(e) = out.write_all(text.as_bytes())
                        {
                            self.failed(&e);
                        }
                        self.unflushed += text.len() as u64;
                    }
                    Msg::Reopen => {
                        self.flush();
                        match open(&self.path) {
                            Ok(file) => self.out = Some(BufWriter::new(file)),
                            Err(e) => self.failed(&e),
                        }
                    }
                    Msg::Shutdown => stop = true,
                }
                msg = rx.try_recv().ok();
            }
            self.flush();
            if stop {
                return;
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        let Some(out) = &mut self.out else {
            return;
        };
        if let Err(e) = out.flush() {
            self.failed(&e);
        } else if self.unflushed >= WRITEBACK_EVERY {
            crate::durable_file::start_writeback(out.get_ref());
            self.unflushed = 0;
        }
    }

    fn failed(&mut self, error: &io::Error) {
        if self.out.take().is_some() {
            log::error!(
                "transactions log {}: {error}; lines are dropped until it can be written",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{RequestText, Text};

    #[test]
    fn a_transaction_is_one_json_line_with_every_timing() {
        let request = RequestFacts {
            text: RequestText::new(&Text {
                trace_id: Some("t-1"),
                from: Some("200000000001"),
                to: None,
                interaction: Some("urn:x"),
                method: "GET",
                target: "/",
            }),
            peer: "10.0.0.1:5000".parse().unwrap(),
            subject: "CN=a".into(),
            issuer: "CN=b".into(),
            serial: "01".into(),
            fingerprint: "00".into(),
            claims: None,
        };
        let t = Transaction {
            request: Arc::new(request),
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            tls_handshake_ms: Some(1.5),
            queue_ms: 0.01,
            upstream_connect_ms: None,
            upstream_tls_ms: None,
            ttfb_ms: Some(3.0),
            total_ms: 4.25,
            reused: true,
        };
        assert_eq!(
            {
                let mut out = String::new();
                write_line(&mut out, &t, "2026-03-21T10:04:05.123Z");
                out
            },
            "{\"ts\":\"2026-03-21T10:04:05.123Z\",\"trace_id\":\"t-1\",\"from\":\"200000000001\",\"to\":null,\
             \"interaction\":\"urn:x\",\"status\":200,\"bytes_in\":10,\"bytes_out\":20,\"tls_handshake_ms\":1.500,\
             \"queue_ms\":0.010,\"upstream_connect_ms\":null,\"upstream_tls_ms\":null,\"ttfb_ms\":3.000,\
             \"total_ms\":4.250,\"reused\":true}\n"
        );
    }
}
