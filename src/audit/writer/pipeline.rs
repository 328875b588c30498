//! `sync = "batch"` with the wait at one fdatasync: the writer thread writes each batch as soon
//! as it has it and leaves its fdatasync to one of two `ssp-audit-sync` threads. A batch
//! written while a sync is under way starts its own sync at once (two overlapping on the
//! file) instead of waiting first for that one to end and then for its own.
//!
//! The promise, kept by [`Pipeline`] alone (pure, tested below): a batch's waiters are
//! answered only after an fdatasync that began after the batch's write(2) returned has
//! completed, and only once every sync begun before that one has completed too: answers
//! follow the order syncs began in, so a failed earlier sync is never hidden by a later one
//! that succeeded. After a failure nothing more is answered durable: the waiters still
//! waiting are refused at once, and the writer rolls the chain back to the last durable batch.
//! Each sync thread syncs through its own open file description, because Linux reports a
//! writeback error once per description: two syncs on one descriptor could both see success
//! where one should have failed.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::{Item, Shared, Waiter};
use crate::audit::Durable;
use crate::audit::record::Head;

/// Syncs under way at most (one thread, one file description each).
pub(super) const SYNCERS: usize = 2;

/// A batch written and not yet answered.
pub(super) struct Batch {
    /// The active file's length and the chain head before this batch: where a failure
    /// rolls back to.
    pub before: (u64, Head),
    /// The writer's pending `open` record before this batch (restored if it fails).
    pub opening: Option<Option<String>>,
    pub first_seq: u64,
    /// Its records; on success only the waiters matter, on failure the events are rewritten.
    pub items: Vec<Item>,
}

struct SyncRun {
    /// Batches written before it began: it covers `..covers`.
    covers: u64,
    done: Option<io::Result<()>>,
}

/// Answers to send: a waiter and its seq, or `None` for refused.
pub(super) type Answers = Vec<(Waiter, Option<u64>)>;

/// Batches written, syncs begun, and who may be answered. No I/O.
#[derive(Default)]
pub(super) struct Pipeline {
    /// Unanswered batches, oldest first; `batches[0]` is batch number `answered`.
    batches: VecDeque<Batch>,
    answered: u64,
    /// Syncs begun and not yet accounted for, in the order they began; `syncs[0]` is sync
    /// number `first_sync`.
    syncs: VecDeque<SyncRun>,
    first_sync: u64,
    /// Batches covered by the last sync begun.
    covered: u64,
    failed: Option<io::Error>,
    /// Durable waiters refused since the writer last looked.
    refused: u64,
}

impl Pipeline {
    fn written(&self) -> u64 {
        self.answered + self.batches.len() as u64
    }

    /// A batch whose write(2) has returned.
    pub fn push(&mut self, batch: Batch) {
        self.batches.push_back(batch);
    }

    /// Begins a sync if a batch is not covered by one yet: returns its number.
    pub fn begin(&mut self) -> Option<u64> {
        if self.failed.is_some() || self.covered >= self.written() {
            return None;
        }
        self.covered = self.written();
        self.syncs.push_back(SyncRun {
            covers: self.covered,
            done: None,
        });
        Some(self.first_sync + self.syncs.len() as u64 - 1)
    }

    /// Sync `number` has returned. Answers the batches that the syncs ended so far, in the
    /// order they began, make durable; a failure refuses every waiter left.
    pub fn end(&mut self, number: u64, result: io::Result<()>) -> Answers {
        let at = number.wrapping_sub(self.first_sync) as usize;
        if let Some(sync) = self.syncs.get_mut(at) {
            sync.done = Some(result);
        }
        let mut answers = Vec::new();
        while self.syncs.front().is_some_and(|s| s.done.is_some()) {
            let Some(sync) = self.syncs.pop_front() else { break };
            self.first_sync += 1;
            match sync.done {
                Some(Ok(())) if self.failed.is_none() => {
                    while self.answered < sync.covers {
                        let Some(mut batch) = self.batches.pop_front() else {
                            break;
                        };
                        self.answered += 1;
                        for (i, item) in batch.items.iter_mut().enumerate() {
                            if let Some(waiter) = item.waiter.take() {
                                answers.push((waiter, Some(batch.first_seq + i as u64)));
                            }
                        }
                    }
                }
                Some(Err(e)) if self.failed.is_none() => {
                    self.failed = Some(e);
                    for batch in &mut self.batches {
                        // A refused record is not written again: its request gets a `deny`.
                        batch.items.retain_mut(|item| match item.waiter.take() {
                            Some(waiter) => {
                                answers.push((waiter, None));
                                false
                            }
                            None => true,
                        });
                    }
                    self.refused += answers.iter().filter(|(_, s)| s.is_none()).count() as u64;
                }
                _ => {}
            }
        }
        answers
    }

    /// Nothing under way and nothing waiting for a sync.
    fn idle(&self) -> bool {
        self.syncs.is_empty() && (self.batches.is_empty() || self.failed.is_some())
    }

    /// After a failure, once no sync is under way: the error, the batches to roll back
    /// (oldest first) and how many waiters were refused.
    pub fn take_failure(&mut self) -> Option<(io::Error, Vec<Batch>, u64)> {
        if !self.syncs.is_empty() {
            return None;
        }
        let error = self.failed.take()?;
        self.answered += self.batches.len() as u64;
        self.covered = self.answered;
        let refused = std::mem::take(&mut self.refused);
        Some((error, self.batches.drain(..).collect(), refused))
    }
}

struct State {
    pipeline: Pipeline,
    /// The active file, opened once per sync thread; `None` between files.
    files: Option<[Arc<File>; SYNCERS]>,
    stop: bool,
}

struct Inner {
    state: Mutex<State>,
    /// A batch to sync, or stop.
    work: Condvar,
    /// A sync ended.
    ended: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's end: the sync threads and what they share.
pub(super) struct Syncers {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl Syncers {
    pub fn start(shared: &Arc<Shared>) -> io::Result<Syncers> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                pipeline: Pipeline::default(),
                files: None,
                stop: false,
            }),
            work: Condvar::new(),
            ended: Condvar::new(),
        });
        let mut syncers = Syncers {
            inner: inner.clone(),
            threads: Vec::new(),
        };
        for i in 0..SYNCERS {
            let (inner, shared) = (inner.clone(), shared.clone());
            syncers.threads.push(
                thread::Builder::new()
                    .name("ssp-audit-sync".into())
                    .spawn(move || syncer(&inner, &shared, i))?,
            );
        }
        Ok(syncers)
    }

    pub fn has_files(&self) -> bool {
        self.inner.lock().files.is_some()
    }

    /// The active file's descriptions for the sync threads (`None`: no file).
    pub fn set_files(&self, files: Option<[Arc<File>; SYNCERS]>) {
        self.inner.lock().files = files;
    }

    /// Hands a written batch over; `Err` gives it back when a sync has failed meanwhile.
    pub fn push(&self, batch: Batch) -> Result<(), Batch> {
        let mut state = self.inner.lock();
        if state.pipeline.failed.is_some() {
            return Err(batch);
        }
        state.pipeline.push(batch);
        drop(state);
        self.inner.work.notify_one();
        Ok(())
    }

    /// Waits until the syncs under way have ended (all of them with `all`, else only after a
    /// failure); returns the failure, if any, for the writer to roll back.
    pub fn settle(&self, all: bool) -> Option<(io::Error, Vec<Batch>, u64)> {
        let mut state = self.inner.lock();
        loop {
            if state.pipeline.failed.is_some() {
                if let Some(failure) = state.pipeline.take_failure() {
                    return Some(failure);
                }
            } else if !all || state.pipeline.idle() {
                return None;
            }
            state = self.inner.ended.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Syncers {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.work.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One sync thread: begins a sync whenever a written batch is not covered yet.
fn syncer(inner: &Inner, shared: &Shared, i: usize) {
    let mut state = inner.lock();
    loop {
        if state.stop {
            return;
        }
        let file = state.files.as_ref().map(|f| f[i].clone());
        let Some((file, number)) = file.and_then(|f| Some((f, state.pipeline.begin()?))) else {
            state = inner.work.wait(state).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        drop(state);
        let started = Instant::now();
        let result = file.sync_data();
        drop(file);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
        shared.syncs.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            // Admission stops now; the writer records the outage at its next turn.
            shared.healthy.store(false, Ordering::SeqCst);
        }
        state = inner.lock();
        let answers = state.pipeline.end(number, result);
        drop(state);
        inner.ended.notify_all();
        answer(answers);
        state = inner.lock();
    }
}

/// Sends the answers, then wakes each worker once.
pub(super) fn answer(answers: Answers) {
    let mut wakes: Vec<Arc<dyn Fn() + Send + Sync>> = Vec::new();
    for (waiter, seq) in answers {
        let _ = waiter.notify.replies.send(Durable {
            ticket: waiter.ticket,
            seq,
        });
        if !wakes.iter().any(|w| Arc::ptr_eq(w, &waiter.notify.wake)) {
            wakes.push(waiter.notify.wake.clone());
        }
    }
    wakes.iter().for_each(|wake| wake());
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::audit::Notifier;
    use crate::audit::record::Entry;
    use crate::audit::writer::Pending;

    /// A batch of `n` durable records starting at `first_seq`, answered on `tx`.
    fn batch(first_seq: u64, n: u64, tx: &mpsc::Sender<Durable>) -> Batch {
        let notify = Notifier {
            replies: tx.clone(),
            wake: Arc::new(|| {}),
        };
        Batch {
            before: (0, Head::GENESIS),
            opening: None,
            first_seq,
            items: (0..n)
                .map(|i| Item {
                    what: Pending::Entry(Entry::Stop {
                        reason: String::new(),
                    }),
                    waiter: Some(Waiter {
                        ticket: first_seq + i,
                        notify: notify.clone(),
                    }),
                })
                .collect(),
        }
    }

    /// Sends the answers and returns (ticket, seq) of each, in order.
    fn sent(answers: Answers, rx: &mpsc::Receiver<Durable>) -> Vec<(u64, Option<u64>)> {
        answer(answers);
        rx.try_iter().map(|d| (d.ticket, d.seq)).collect()
    }

    #[test]
    fn a_batch_written_during_a_sync_is_not_answered_when_that_sync_ends() {
        let (tx, rx) = mpsc::channel();
        let mut p = Pipeline::default();
        p.push(batch(10, 2, &tx));
        let first = p.begin().unwrap();
        // Written while the first sync is under way: that sync does not cover it.
        p.push(batch(12, 1, &tx));
        assert_eq!(sent(p.end(first, Ok(())), &rx), [(10, Some(10)), (11, Some(11))]);
        assert!(!p.idle(), "batch 12 still waits for a sync of its own");
        let second = p.begin().unwrap();
        assert_eq!(p.begin(), None, "nothing more to cover");
        assert_eq!(sent(p.end(second, Ok(())), &rx), [(12, Some(12))]);
        assert!(p.idle());
    }

    #[test]
    fn a_batch_is_not_answered_before_any_sync_begins_or_while_its_own_is_under_way() {
        let (tx, rx) = mpsc::channel();
        let mut p = Pipeline::default();
        p.push(batch(0, 1, &tx));
        assert!(rx.try_recv().is_err());
        let n = p.begin().unwrap();
        p.push(batch(1, 1, &tx));
        assert!(rx.try_recv().is_err());
        assert_eq!(sent(p.end(n, Ok(())), &rx), [(0, Some(0))]);
    }

    #[test]
    fn two_overlapping_syncs_answer_in_the_order_they_began() {
        let (tx, rx) = mpsc::channel();
        let mut p = Pipeline::default();
        p.push(batch(0, 1, &tx));
        let a = p.begin().unwrap();
        p.push(batch(1, 1, &tx));
        let b = p.begin().unwrap();
        // The later sync ends first: it covers both batches, but the earlier one has not
        // ended, and might yet fail.
        assert!(sent(p.end(b, Ok(())), &rx).is_empty());
        assert_eq!(sent(p.end(a, Ok(())), &rx), [(0, Some(0)), (1, Some(1))]);
        assert!(p.idle());
    }

    #[test]
    fn a_failed_sync_refuses_every_waiter_left_even_if_a_later_sync_succeeded() {
        let (tx, rx) = mpsc::channel();
        let mut p = Pipeline::default();
        p.push(batch(0, 1, &tx));
        let a = p.begin().unwrap();
        p.push(batch(1, 2, &tx));
        let b = p.begin().unwrap();
        assert!(sent(p.end(b, Ok(())), &rx).is_empty());
        let refused = sent(p.end(a, Err(io::Error::other("EIO"))), &rx);
        assert_eq!(refused, [(0, None), (1, None), (2, None)]);
        assert_eq!(p.begin(), None, "no sync after a failure");
        let (_, batches, count) = p.take_failure().unwrap();
        assert_eq!(count, 3);
        assert_eq!(batches.len(), 2, "both batches are rolled back");
        assert!(
            batches.iter().all(|b| b.items.is_empty()),
            "refused records are not rewritten"
        );
        assert!(p.idle());
        // After the writer has rolled back, the pipeline works again.
        p.push(batch(0, 1, &tx));
        let c = p.begin().unwrap();
        assert_eq!(sent(p.end(c, Ok(())), &rx), [(0, Some(0))]);
    }

    #[test]
    fn a_failure_is_taken_only_once_no_sync_is_under_way() {
        let (tx, rx) = mpsc::channel();
        let mut p = Pipeline::default();
        p.push(batch(0, 1, &tx));
        let a = p.begin().unwrap();
        p.push(batch(1, 1, &tx));
        let b = p.begin().unwrap();
        let refused = sent(p.end(a, Err(io::Error::other("EIO"))), &rx);
        assert_eq!(refused, [(0, None), (1, None)]);
        assert!(p.take_failure().is_none(), "sync b is still under way");
        assert!(
            sent(p.end(b, Ok(())), &rx).is_empty(),
            "nothing is answered after a failure"
        );
        assert!(p.take_failure().is_some());
    }

    #[test]
    fn records_without_waiters_survive_a_failure_to_be_written_again() {
        let (tx, rx) = mpsc::channel();
        let mut p = Pipeline::default();
        let mut b = batch(0, 1, &tx);
        b.items.push(Item {
            what: Pending::Entry(Entry::Stop {
                reason: "kept".into(),
            }),
            waiter: None,
        });
        p.push(b);
        let a = p.begin().unwrap();
        assert_eq!(sent(p.end(a, Err(io::Error::other("EIO"))), &rx), [(0, None)]);
        let (_, batches, _) = p.take_failure().unwrap();
        assert_eq!(batches[0].items.len(), 1);
        assert!(batches[0].items[0].waiter.is_none());
    }
}
