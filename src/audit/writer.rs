//! The audit writer thread. It alone owns the chain (seq, prev, h), the active file and the
//! seal key, so none of them needs a lock.
//!
//! One turn: block for the first message, drain what else is queued (bounded), serialise it
//! all, one write(2), then (with `sync = "batch"`) hand its fdatasync to a sync thread, which
//! tells the durable waiters once it has ended (`pipeline.rs`: a batch written while a sync is
//! under way gets its own at once). `"always"` writes and syncs record by record on this
//! thread, as do the records that must be durable before the writer goes on (start, stop,
//! seals, rotation, the end of an outage); `"off"` never syncs.
//!
//! When a write or sync fails the file is not trusted again: the descriptor is dropped, and
//! the retry reopens the file and cuts it back to the last byte known good, so a partial batch
//! never breaks the chain. Until a write succeeds again every durable request is refused (the
//! proxy answers 503) and other records wait in memory.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::files::{self, ACTIVE};
use super::record::{self, Entry, Head, format_ts};
use super::seal::{self, Key};
use super::{AuditError, Durable, Event, Notifier, Settings, recover};
use crate::config::AuditSync;
use crate::durable_file::WRITEBACK_EVERY;
use active::{Displaced, next_midnight};
use pipeline::{Batch, Syncers};

mod active;
mod pipeline;

/// Records drained into one batch at most.
const MAX_BATCH: usize = 512;
/// Records queued or held back during an outage, at most; beyond that they are counted as lost.
pub(crate) const MAX_QUEUE: usize = 1 << 16;
/// How often a failed audit is retried, and the active file checked for being moved.
const RETRY_EVERY: Duration = Duration::from_millis(250);
const HOUSEKEEPING: Duration = Duration::from_millis(500);

pub(crate) enum Msg {
    /// A worker's records of one event-loop turn (see `Outbox`), in order.
    Many(Vec<Msg>),
    Record(Event),
    Durable {
        event: Event,
        ticket: u64,
        notify: Notifier,
    },
    Shutdown {
        reason: String,
    },
}

/// What the handles read without asking the writer.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub healthy: AtomicBool,
    pub records: AtomicU64,
    pub sync_nanos: AtomicU64,
    pub syncs: AtomicU64,
    pub queued: AtomicUsize,
    pub lost: AtomicU64,
}

struct Waiter {
    ticket: u64,
    notify: Notifier,
}

/// A record to write. Some are built at the last minute: a seal's MAC covers its final seq and
/// prev, and the alarm that ends an outage says when it ended.
enum Pending {
    Entry(Entry),
    Seal,
    Recovered,
}

struct Item {
    what: Pending,
    waiter: Option<Waiter>,
}

impl Item {
    fn bare(what: Pending) -> Item {
        Item { what, waiter: None }
    }

    fn entry(entry: Entry) -> Item {
        Item::bare(Pending::Entry(entry))
    }

    fn seal() -> Item {
        Item::bare(Pending::Seal)
    }

    fn event(event: Event) -> Item {
        Item::entry(Entry::Event(Box::new(event)))
    }
}

/// The evolving key. `current` is the key of the seal being written: the file already holds
/// the next one, so a seal made with k[n] never sits on disk beside k[n].
struct Sealer {
    path: PathBuf,
    on_disk: Key,
    current: Option<Key>,
}

impl Sealer {
    fn prepare(&mut self) -> io::Result<()> {
        if self.current.is_none() {
            let next = self.on_disk.next();
            seal::store(&self.path, &next)?;
            self.current = Some(std::mem::replace(&mut self.on_disk, next));
        }
        Ok(())
    }
}

/// A period during which the audit could not be written.
struct Outage {
    since: String,
    error: String,
    refused: u64,
}

impl Outage {
    /// The alarm written when it ends.
    fn describe(&self, until: &str) -> String {
        format!(
            "audit writing failed from {} to {until}: {}; {} durable records were refused (503 AUDIT_UNAVAILABLE)",
            self.since, self.error, self.refused
        )
    }
}

pub(crate) struct Writer {
    dir: PathBuf,
    sync: AuditSync,
    rotate_bytes: u64,
    seal_interval: Duration,
    shared: Arc<Shared>,
    sealer: Option<Sealer>,
    file: Option<File>,
    /// Device and inode of the active file, to notice it being replaced.
    ident: Option<(u64, u64)>,
    /// Length of the active file up to its last record known written (and synced unless off).
    good_len: u64,
    /// Bytes written since the last sync or writeback started (`sync = "off"`).
    unsynced: u64,
    head: Head,
    file_first_seq: u64,
    /// Midnight UTC after the active file was opened: daily rotation.
    rotate_at: SystemTime,
    /// The active file is new: its first record must be an `open` continuing this file.
    opening: Option<Option<String>>,
    /// The active file ends with `close` and must be renamed to this before anything else.
    closed_as: Option<String>,
    /// Records waiting for the audit to be writable, oldest first.
    retained: VecDeque<Event>,
    outage: Option<Outage>,
    /// `sync = "batch"`: the threads that sync written batches and answer their waiters.
    syncers: Option<Syncers>,
    next_seal: Instant,
    next_retry: Instant,
    next_check: Instant,
    reported_lost: u64,
}

impl Writer {
    /// Recovers the directory and writes the `start` record; the thread starts afterwards.
    pub fn start(settings: &Settings, shared: Arc<Shared>) -> Result<Writer, AuditError> {
        let dir = settings.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
        let sealer = match &settings.key {
            Some(path) => Some(Sealer {
                path: path.clone(),
                on_disk: seal::load(path)?,
                current: None,
            }),
            None => {
                log::warn!(
                    "AUDIT KEYS DISABLED: no [audit] key configured, so the audit in {} is never sealed; \
                     anyone with access to this box can rewrite it undetected. Run `ssp audit keygen`.",
                    dir.display()
                );
                None
            }
        };
        let found = recover::inspect(&dir)?;
        let now = SystemTime::now();
        let mut items = Vec::new();
        if !found.torn.is_empty() {
            items.push(Item::entry(recover::set_aside(
                &dir,
                &found,
                &files::torn_name(found.head.next_seq),
            )?));
        }
        let today = record::day(&format_ts(now)).to_owned();
        let first = found.first.as_ref().or(found.last.as_ref());
        let file_first_seq = first.map_or(found.head.next_seq, |r| r.seq);
        let (writer_shared, dir_for_error) = (shared.clone(), dir.clone());
        let mut writer = Writer {
            dir,
            sync: settings.sync,
            rotate_bytes: settings.rotate_bytes,
            seal_interval: settings.seal_interval,
            shared,
            sealer,
            file: None,
            ident: None,
            good_len: found.good_len,
            unsynced: 0,
            head: found.head,
            file_first_seq,
            rotate_at: match first {
                Some(r) if record::day(&r.ts) != today => now,
                _ => next_midnight(now),
            },
            opening: None,
            closed_as: None,
            retained: VecDeque::new(),
            outage: None,
            syncers: match settings.sync {
                AuditSync::Batch => {
                    Some(Syncers::start(&writer_shared).map_err(|e| AuditError::io(&dir_for_error, e))?)
                }
                AuditSync::Always | AuditSync::Off => None,
            },
            next_seal: Instant::now() + settings.seal_interval,
            next_retry: Instant::now(),
            next_check: Instant::now() + HOUSEKEEPING,
            reported_lost: 0,
        };
        match &found.last {
            // A crash between `close` and the rename: finish the rotation.
            Some(last) if last.kind == "close" => {
                let time = record::compact_ts(&last.ts).unwrap_or_else(|| "00000000T000000Z".into());
                writer.closed_as = Some(files::rotated_name(&time, file_first_seq));
            }
            Some(_) => {}
            None => writer.opening = Some(found.previous.clone()),
        }
        items.push(Item::entry(Entry::Start {
            version: settings.version.to_owned(),
            config_hash: settings.config_hash,
            boot_id: seal::random().unwrap_or_else(|_| fallback_boot_id()),
            pid: std::process::id(),
            sync: sync_name(settings.sync),
            key_epoch: writer.sealer.as_ref().map(|s| s.on_disk.epoch()),
        }));
        if !writer.write(items, now, true) {
            let error = writer
                .outage
                .as_ref()
                .map_or_else(String::new, |o| o.error.clone());
            return Err(AuditError::new(
                &writer.dir.join(ACTIVE),
                format!("cannot write the start record: {error}"),
            ));
        }
        Ok(writer)
    }

    pub fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // Whatever ends this thread, the proxy must stop admitting.
        struct Unhealthy(Arc<Shared>);
        impl Drop for Unhealthy {
            fn drop(&mut self) {
                self.0.healthy.store(false, Ordering::SeqCst);
            }
        }
        let _guard = Unhealthy(self.shared.clone());
        loop {
            // During an outage housekeeping only retries: waiting for a seal or check that
            // is already due would spin.
            let deadline = match self.outage {
                Some(_) => self.next_retry,
                None => self.next_seal.min(self.next_check),
            };
            let first = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.stop("every audit handle was dropped");
                    return;
                }
            };
            let mut batch: Vec<Msg> = Vec::new();
            let add = |msg: Msg, batch: &mut Vec<Msg>| match msg {
                Msg::Many(msgs) => batch.extend(msgs),
                msg => batch.push(msg),
            };
            if let Some(msg) = first {
                add(msg, &mut batch);
            }
            while batch.len() < MAX_BATCH
                && let Ok(msg) = rx.try_recv()
            {
                add(msg, &mut batch);
            }
            let records = batch
                .iter()
                .filter(|m| !matches!(m, Msg::Shutdown { .. }))
                .count();
            self.shared.queued.fetch_sub(records, Ordering::SeqCst);
            let shutdown = self.handle(batch);
            self.housekeeping();
            if let Some(reason) = shutdown {
                self.stop(&reason);
                return;
            }
        }
    }

    /// Writes one batch of messages; returns the shutdown reason if one was asked for.
    fn handle(&mut self, batch: Vec<Msg>) -> Option<String> {
        let mut items = Vec::with_capacity(batch.len());
        let mut shutdown = None;
        for msg in batch {
            match msg {
                Msg::Record(event) => items.push(Item::event(event)),
                Msg::Durable {
                    event,
                    ticket,
                    notify,
                } => items.push(Item {
                    what: Pending::Entry(Entry::Event(Box::new(event))),
                    waiter: Some(Waiter { ticket, notify }),
                }),
                Msg::Shutdown { reason } => shutdown = Some(reason),
                // Flattened by `run`; nested ones are never sent.
                Msg::Many(_) => {}
            }
        }
        if items.is_empty() {
            return shutdown;
        }
        let now = SystemTime::now();
        if self.outage.is_some() && Instant::now() >= self.next_retry {
            self.try_recover(now);
        }
        if self.outage.is_some() {
            self.hold_back(items);
        } else {
            self.write(items, now, false);
        }
        shutdown
    }

    /// Timed work: retry, lost-record alarms, moved files, rotation, seals, held-back records.
    fn housekeeping(&mut self) {
        let now = SystemTime::now();
        self.settle(false, now);
        let instant = Instant::now();
        if self.outage.is_some() {
            if instant >= self.next_retry {
                self.try_recover(now);
            }
            if self.outage.is_some() {
                return;
            }
        }
        let lost = self.shared.lost.load(Ordering::SeqCst);
        if lost > self.reported_lost {
            self.alarm(format!(
                "{} audit records lost: the audit queue was full",
                lost - self.reported_lost
            ));
            self.reported_lost = lost;
        }
        if instant >= self.next_check {
            self.next_check = instant + HOUSEKEEPING;
            match self.displaced() {
                Ok(Displaced::No) => {}
                Ok(Displaced::Deleted) => self.rotate("deleted", now),
                Ok(Displaced::Moved) => self.rotate("moved", now),
                Err(e) => log::warn!("audit: cannot check {}: {e}", self.dir.join(ACTIVE).display()),
            }
        }
        let records_in_file = self.head.next_seq.saturating_sub(self.file_first_seq);
        if now >= self.rotate_at {
            self.rotate("day", now);
        } else if self.good_len >= self.rotate_bytes && records_in_file > 1 {
            self.rotate("size", now);
        }
        if instant >= self.next_seal {
            self.next_seal = instant + self.seal_interval;
            if self.prepare_seal() {
                self.write(vec![Item::seal()], now, false);
            }
        }
        if !self.retained.is_empty() && self.outage.is_none() {
            self.write(Vec::new(), now, false);
        }
    }

    /// The last records: `stop`, then a seal over it, so a clean stop leaves nothing unsealed.
    fn stop(&mut self, reason: &str) {
        let now = SystemTime::now();
        self.settle(true, now);
        if self.outage.is_some() {
            self.try_recover(now);
        }
        let mut items = vec![Item::entry(Entry::Stop {
            reason: reason.to_owned(),
        })];
        if self.prepare_seal() {
            items.push(Item::seal());
        }
        if self.outage.is_some() || !self.write(items, now, true) {
            log::error!("audit: the stop record could not be written; the next start continues the chain");
        }
    }

    /// Readies the key for a seal; a key that cannot be evolved means no seal, loudly.
    fn prepare_seal(&mut self) -> bool {
        let Some(sealer) = &mut self.sealer else {
            return false;
        };
        match sealer.prepare() {
            Ok(()) => true,
            Err(e) => {
                let path = sealer.path.display().to_string();
                self.alarm(format!(
                    "audit key {path} could not be evolved ({e}): seal skipped"
                ));
                false
            }
        }
    }

    /// Serialises `items` after anything held back, writes and syncs them, and answers the
    /// durable waiters. Returns false if the audit is failing (the outage is recorded).
    fn write(&mut self, items: Vec<Item>, now: SystemTime, force_sync: bool) -> bool {
        if self.outage.is_some() {
            self.hold_back(items);
            return false;
        }
        self.write_unchecked(items, now, force_sync)
    }

    /// [`Writer::write`] without the outage check, for the retry that ends an outage.
    fn write_unchecked(&mut self, items: Vec<Item>, now: SystemTime, force_sync: bool) -> bool {
        // Seals and the end of an outage change the writer's state once durable: synced here.
        let pipelined = !force_sync
            && self.syncers.is_some()
            && items.iter().all(|i| matches!(i.what, Pending::Entry(_)));
        // A file to (re)open: nothing may be under way on the one before.
        if !self.settle(!pipelined || self.file.is_none(), now) {
            self.hold_back(items);
            return false;
        }
        if let Err(e) = self.ensure_file(now) {
            self.fail(e, items, now);
            return false;
        }
        let mut all = Vec::with_capacity(items.len() + self.retained.len() + 1);
        if let Some(previous) = &self.opening {
            all.push(Item::entry(Entry::Open {
                previous: previous.clone(),
            }));
        }
        all.extend(self.retained.drain(..).map(Item::event));
        all.extend(items);
        let ts = format_ts(now);
        let (buf, ends) = self.serialise(&mut all, &ts);
        if pipelined {
            return self.write_pipelined(all, &buf, &ends, now);
        }
        let unit = if self.sync == AuditSync::Always {
            1
        } else {
            all.len().max(1)
        };
        let sync = force_sync || self.sync != AuditSync::Off;
        let (mut start, mut done) = (0, 0);
        while done < all.len() {
            let until = (done + unit).min(all.len());
            let (end, unit_head) = ends[until - 1];
            if let Err(e) = self.append(&buf[start..end], sync) {
                let rest = all.split_off(done);
                self.fail(e, rest, now);
                return false;
            }
            self.good_len += (end - start) as u64;
            self.head = unit_head;
            self.opening = None;
            self.shared
                .records
                .fetch_add((until - done) as u64, Ordering::Relaxed);
            let first_seq = unit_head.next_seq - (until - done) as u64;
            self.written(&mut all[done..until], first_seq);
            start = end;
            done = until;
        }
        true
    }

    /// `sync = "batch"`: one write(2), and the batch goes to the sync threads, which answer
    /// its waiters once a sync begun after this write has ended (`pipeline.rs`).
    fn write_pipelined(
        &mut self,
        all: Vec<Item>,
        buf: &[u8],
        ends: &[(usize, Head)],
        now: SystemTime,
    ) -> bool {
        let Some(&(end, head)) = ends.last() else {
            return true;
        };
        let written = self.open_for_syncers().and_then(|()| match &mut self.file {
            Some(file) => file.write_all(&buf[..end]),
            None => Err(io::Error::other("no active file")),
        });
        if let Err(e) = written {
            // The batches before this one end first, durable or not.
            if self.settle(true, now) {
                self.fail(e, all, now);
            } else {
                self.hold_back(all);
            }
            return false;
        }
        let n = all.len() as u64;
        let batch = Batch {
            before: (self.good_len, self.head),
            opening: self.opening.take(),
            first_seq: head.next_seq - n,
            items: all,
        };
        self.good_len += end as u64;
        self.head = head;
        self.shared.records.fetch_add(n, Ordering::Relaxed);
        let Some(syncers) = &self.syncers else {
            return true;
        };
        if let Err(batch) = syncers.push(batch) {
            // A sync failed meanwhile: this batch is rolled back with the ones it failed.
            (self.good_len, self.head) = batch.before;
            self.opening = batch.opening;
            self.shared.records.fetch_sub(n, Ordering::Relaxed);
            self.settle(true, now);
            self.hold_back(batch.items);
            return false;
        }
        true
    }

    /// The active file opened again for each sync thread, once per file: each its own open
    /// file description, so each sees every writeback error (`pipeline.rs`).
    fn open_for_syncers(&mut self) -> io::Result<()> {
        let Some(syncers) = &self.syncers else {
            return Ok(());
        };
        if syncers.has_files() {
            return Ok(());
        }
        let path = self.dir.join(ACTIVE);
        let open = || -> io::Result<Arc<File>> {
            let file = File::open(&path)?;
            let meta = file.metadata()?;
            if Some((meta.dev(), meta.ino())) != self.ident {
                return Err(io::Error::other(format!(
                    "{ACTIVE} is not the file being written"
                )));
            }
            Ok(Arc::new(file))
        };
        syncers.set_files(Some([open()?, open()?]));
        Ok(())
    }

    /// Waits for the sync threads (until nothing is under way with `all`, else only if a sync
    /// failed). After a failure: the chain rolls back to the last durable batch, the records
    /// after it are held back (their waiters were refused), the file is failed. Returns false
    /// when it found a failure.
    fn settle(&mut self, all: bool, now: SystemTime) -> bool {
        let Some((error, batches, refused)) = self.syncers.as_ref().and_then(|s| s.settle(all)) else {
            return true;
        };
        if let Some(first) = batches.first() {
            (self.good_len, self.head) = first.before;
            if first.opening.is_some() {
                self.opening.clone_from(&first.opening);
            }
        }
        let items: Vec<Item> = batches.into_iter().flat_map(|b| b.items).collect();
        let rolled_back = items.len() as u64 + refused;
        self.shared.records.fetch_sub(rolled_back, Ordering::Relaxed);
        self.fail(error, items, now);
        if let Some(outage) = &mut self.outage {
            outage.refused += refused;
        }
        false
    }

    /// The active file is not trusted any more: dropped, here and by the sync threads.
    fn forget_file(&mut self) {
        self.file = None;
        if let Some(syncers) = &self.syncers {
            syncers.set_files(None);
        }
    }

    /// The bytes of `all` (items that cannot be built any more are dropped from it) and, per
    /// item, where its line ends and the chain head after it.
    fn serialise(&self, all: &mut Vec<Item>, ts: &str) -> (Vec<u8>, Vec<(usize, Head)>) {
        let key = self.sealer.as_ref().and_then(|s| s.current.as_ref());
        // A seal whose key could not be readied, or an outage already ended, is not written.
        all.retain(|item| match item.what {
            Pending::Seal => key.is_some(),
            Pending::Recovered => self.outage.is_some(),
            Pending::Entry(_) => true,
        });
        let mut buf = String::with_capacity(all.len() * 512);
        let mut ends = Vec::with_capacity(all.len());
        let mut head = self.head;
        for item in all.iter() {
            let built;
            let entry = match (&item.what, key, &self.outage) {
                (Pending::Entry(entry), ..) => entry,
                (Pending::Seal, Some(key), _) => {
                    built = Entry::Seal {
                        epoch: key.epoch(),
                        mac: key.mac(head.next_seq, &head.prev, ts),
                    };
                    &built
                }
                (Pending::Recovered, _, Some(outage)) => {
                    built = Entry::Event(Box::new(Event::Alarm {
                        message: outage.describe(ts),
                    }));
                    &built
                }
                // Removed above.
                (Pending::Seal | Pending::Recovered, ..) => continue,
            };
            let h = record::append_line(&mut buf, head.next_seq, ts, entry, &head.prev);
            head = Head {
                next_seq: head.next_seq + 1,
                prev: h,
            };
            ends.push((buf.len(), head));
        }
        (buf.into_bytes(), ends)
    }

    /// After `items` (from `first_seq` on) are written and synced: the seal key is spent, an
    /// outage is over, the durable waiters are told, and each worker is woken once.
    fn written(&mut self, items: &mut [Item], first_seq: u64) {
        let mut wakes: Vec<Arc<dyn Fn() + Send + Sync>> = Vec::new();
        for (i, item) in items.iter_mut().enumerate() {
            match item.what {
                Pending::Seal => {
                    if let Some(sealer) = &mut self.sealer {
                        sealer.current = None;
                    }
                }
                Pending::Recovered => {
                    self.outage = None;
                    log::warn!("audit: writing works again; admission resumes");
                }
                Pending::Entry(_) => {}
            }
            if let Some(waiter) = item.waiter.take() {
                let _ = waiter.notify.replies.send(Durable {
                    ticket: waiter.ticket,
                    seq: Some(first_seq + i as u64),
                });
                if !wakes.iter().any(|w| Arc::ptr_eq(w, &waiter.notify.wake)) {
                    wakes.push(waiter.notify.wake.clone());
                }
            }
        }
        if self.outage.is_none() {
            self.shared.healthy.store(true, Ordering::SeqCst);
        }
        wakes.iter().for_each(|wake| wake());
    }

    /// One write(2) of `bytes`, then fdatasync if asked.
    fn append(&mut self, bytes: &[u8], sync: bool) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Err(io::Error::other("no active file"));
        };
        file.write_all(bytes)?;
        if !sync {
            self.unsynced += bytes.len() as u64;
            if self.unsynced >= WRITEBACK_EVERY {
                crate::durable_file::start_writeback(file);
                self.unsynced = 0;
            }
        } else {
            self.unsynced = 0;
            let started = Instant::now();
            file.sync_data()?;
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The audit is failing: stop trusting the file, refuse the durable waiters, hold the rest.
    fn fail(&mut self, error: io::Error, items: Vec<Item>, now: SystemTime) {
        self.forget_file();
        self.shared.healthy.store(false, Ordering::SeqCst);
        self.next_retry = Instant::now() + RETRY_EVERY;
        if self.outage.is_none() {
            log::error!(
                "audit alarm: writing {} failed: {error}; refusing admission (503 AUDIT_UNAVAILABLE) until it works again",
                self.dir.join(ACTIVE).display()
            );
            self.outage = Some(Outage {
                since: format_ts(now),
                error: error.to_string(),
                refused: 0,
            });
        }
        self.hold_back(items);
    }

    /// During an outage: durable requests are refused now, other events wait.
    fn hold_back(&mut self, items: Vec<Item>) {
        for item in items {
            if let Some(waiter) = item.waiter {
                if let Some(outage) = &mut self.outage {
                    outage.refused += 1;
                }
                let _ = waiter.notify.replies.send(Durable {
                    ticket: waiter.ticket,
                    seq: None,
                });
                (waiter.notify.wake)();
            } else if let Pending::Entry(Entry::Event(event)) = item.what {
                self.retain(*event);
            }
            // Bookkeeping records (open, close, seal, start, stop) are redone by whoever
            // wanted them once writing works again.
        }
    }

    fn retain(&mut self, event: Event) {
        if self.retained.len() >= MAX_QUEUE {
            self.retained.pop_front();
            self.shared.lost.fetch_add(1, Ordering::SeqCst);
        }
        self.retained.push_back(event);
    }

    fn alarm(&mut self, message: String) {
        log::error!("audit alarm: {message}");
        self.retain(Event::Alarm { message });
    }

    /// Retries after an outage: a file that works again gets an alarm record saying what was
    /// missed, and admission resumes.
    fn try_recover(&mut self, now: SystemTime) {
        self.next_retry = Instant::now() + RETRY_EVERY;
        if let Err(e) = self.ensure_file(now) {
            log::debug!("audit: still failing: {e}");
            return;
        }
        self.write_unchecked(vec![Item::bare(Pending::Recovered)], now, true);
    }
}

fn sync_name(sync: AuditSync) -> &'static str {
    match sync {
        AuditSync::Always => "always",
        AuditSync::Batch => "batch",
        AuditSync::Off => "off",
    }
}

/// Without /dev/urandom a boot id only has to differ between starts.
fn fallback_boot_id() -> [u8; 16] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mixed = nanos ^ (u128::from(std::process::id()) << 96);
    mixed.to_be_bytes()
}
