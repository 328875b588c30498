//! The audit (SPEC section 5): append-only, hash-chained, sealed JSON Lines files written by
//! one thread, and the transactions log. `audit` never imports `proxy`: the proxy hands it
//! [`Event`]s and is told through a [`Notifier`] when a `req` record is durable.
//!
//! | file | concern |
//! | --- | --- |
//! | `event.rs` | what the proxy reports |
//! | `json.rs`, `record.rs` | a record's exact bytes and hash (pure) |
//! | `seal.rs` | the evolving key, seal MACs, the key file |
//! | `files.rs` | names in the audit directory |
//! | `recover.rs` | start-up: the chain head and a torn tail |
//! | `writer.rs` | the writer thread: batching, syncing, failures, rotation, seals |
//! | `verify.rs` | the verifier (pure); `cli.rs` its I/O and `keygen` |
//! | `witness.rs` | `verify --witness`: the seals shipped off the box against the folder (pure) |
//! | `query.rs` | what `find` selects and `stats` counts (pure) |
//! | `extract.rs` | `find --proof` extracts and `verify-extract` (pure) |
//! | `transactions.rs` | the performance log |

pub mod cli;
mod event;
mod extract;
mod files;
mod hex;
mod json;
mod query;
pub mod record;
mod recover;
pub mod seal;
mod transactions;
pub mod verify;
mod witness;
mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use event::{ConfigFacts, CrlFacts, Event, RequestFacts, RequestText, Text};
pub(crate) use json::floor_char_boundary;
pub use transactions::{Transaction, Transactions};

use crate::config::AuditSync;
use writer::{MAX_QUEUE, Msg, Shared, Writer};

/// What the audit needs from `[audit]` and the running binary.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    /// `None`: keys disabled (a loud warning, no seals).
    pub key: Option<PathBuf>,
    pub sync: AuditSync,
    pub rotate_bytes: u64,
    pub seal_interval: Duration,
    /// SHA-256 of the configuration, recorded in `start`.
    pub config_hash: [u8; 32],
    pub version: &'static str,
}

/// How the writer tells a worker that its `req` record is durable: a reply on `replies`, then
/// `wake` (the worker's `mio::Waker`), so no worker ever blocks on the audit.
#[derive(Clone)]
pub struct Notifier {
    pub replies: mpsc::Sender<Durable>,
    pub wake: Arc<dyn Fn() + Send + Sync>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

/// The answer to [`Audit::record_durable`]: `seq` is `None` when the record could not be made
/// durable, and the request must then be refused (503 `AUDIT_UNAVAILABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub ticket: u64,
    pub seq: Option<u64>,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Records written since start.
    pub records: u64,
    /// Total time spent in fdatasync, and how many there were.
    pub sync_seconds: f64,
    pub syncs: u64,
    /// Records dropped because the queue was full (each loss is also an alarm).
    pub lost: u64,
}

/// A start-up failure, naming the file.
#[derive(Debug)]
pub struct AuditError {
    pub path: PathBuf,
    pub message: String,
}

impl AuditError {
    pub(crate) fn new(path: &Path, message: impl Into<String>) -> AuditError {
        AuditError {
            path: path.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, error: io::Error) -> AuditError {
        AuditError::new(path, error.to_string())
    }
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for AuditError {}

/// The handle the proxy holds. Cheap to clone; every clone talks to the one writer thread.
#[derive(Debug, Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Audit {
    /// Opens (creating) the directory, declares a torn tail, writes `start`, and starts the
    /// writer thread. Refuses to start if a configured key cannot be read or nothing can be
    /// written.
    pub fn start(settings: Settings) -> Result<Audit, AuditError> {
        let shared = Arc::new(Shared::default());
        let writer = Writer::start(&settings, shared.clone())?;
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("ssp-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io(&settings.dir, e))?;
        Ok(Audit {
            inner: Arc::new(Inner {
                tx,
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Queues a record. Never blocks, never fails: a record that cannot be queued (the queue
    /// is full or the writer has stopped) is counted as lost and raised as an alarm.
    pub fn record(&self, event: Event) {
        if self.enqueue() && self.inner.tx.send(Msg::Record(event)).is_err() {
            self.dequeue_lost();
        }
    }

    /// Queues a record whose durability the caller waits for: `notify` gets
    /// `Durable { ticket, seq: Some(n) }` once it is written (and synced unless sync is off),
    /// or `seq: None` if that cannot be done.
    pub fn record_durable(&self, event: Event, ticket: u64, notify: &Notifier) {
        if self.enqueue() {
            let msg = Msg::Durable {
                event,
                ticket,
                notify: notify.clone(),
            };
            if self.inner.tx.send(msg).is_ok() {
                return;
            }
            self.dequeue_lost();
        }
        not_durable(ticket, notify);
    }

    /// False while the audit cannot be written (and after shutdown); true again once a write
    /// (and sync) succeeds.
    pub fn healthy(&self) -> bool {
        self.inner.shared.healthy.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> Stats {
        let shared = &self.inner.shared;
        Stats {
            records: shared.records.load(Ordering::Relaxed),
            sync_seconds: shared.sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            syncs: shared.syncs.load(Ordering::Relaxed),
            lost: shared.lost.load(Ordering::Relaxed),
        }
    }

    /// Writes `stop` and a final seal, syncs, and joins the writer. Later calls do nothing.
    pub fn shutdown(&self, reason: &str) {
        let Some(thread) = self.inner.thread.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        let _ = self.inner.tx.send(Msg::Shutdown {
            reason: reason.to_owned(),
        });
        if thread.join().is_err() {
            log::error!("audit: the writer thread panicked");
        }
    }

    /// Counts a record into the queue, or as lost when the queue is full.
    fn enqueue(&self) -> bool {
        let shared = &self.inner.shared;
        if shared.queued.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUE {
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            shared.lost.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// A queued record that the channel refused: the writer is gone.
    fn dequeue_lost(&self) {
        self.inner.shared.queued.fetch_sub(1, Ordering::SeqCst);
        self.inner.shared.lost.fetch_add(1, Ordering::SeqCst);
    }
}

/// Tells the waiter of a durable record that it will not be durable.
fn not_durable(ticket: u64, notify: &Notifier) {
    let _ = notify.replies.send(Durable { ticket, seq: None });
    (notify.wake)();
}

/// A worker's records, gathered over one or more turns of its event loop and handed to the
/// writer as one message by `flush`: under load the writer thread wakes at most once per turn,
/// not once per record, and on a small box every wake-up is a context switch the worker pays
/// for. Order is kept; the same queue limit and loss accounting apply as for `Audit::record`.
pub struct Outbox {
    audit: Audit,
    msgs: Vec<Msg>,
    /// Whether a gathered record has a worker waiting for it to be durable.
    has_waiter: bool,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("gathered", &self.msgs.len())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    pub fn new(audit: Audit) -> Outbox {
        Outbox {
            audit,
            msgs: Vec::new(),
            has_waiter: false,
        }
    }

    pub fn record(&mut self, event: Event) {
        if self.audit.enqueue() {
            self.msgs.push(Msg::Record(event));
        }
    }

    /// As `Audit::record_durable`; the answer comes after `flush`.
    pub fn record_durable(&mut self, event: Event, ticket: u64, notify: &Notifier) {
        if self.audit.enqueue() {
            self.msgs.push(Msg::Durable {
                event,
                ticket,
                notify: notify.clone(),
            });
            self.has_waiter = true;
        } else {
            not_durable(ticket, notify);
        }
    }

    /// Records gathered and not yet handed over.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Whether a gathered record has a worker waiting for it to be durable.
    pub fn has_waiter(&self) -> bool {
        self.has_waiter
    }

    /// Hands what was gathered to the writer.
    pub fn flush(&mut self) {
        if self.msgs.is_empty() {
            return;
        }
        self.has_waiter = false;
        let msgs = std::mem::take(&mut self.msgs);
        if let Err(mpsc::SendError(Msg::Many(msgs))) = self.audit.inner.tx.send(Msg::Many(msgs)) {
            for msg in msgs {
                self.audit.dequeue_lost();
                if let Msg::Durable { ticket, notify, .. } = msg {
                    not_durable(ticket, &notify);
                }
            }
        }
    }
}
