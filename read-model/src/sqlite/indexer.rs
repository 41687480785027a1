//! The search index's follower: moves the posts the triggers queued (see
//! `schema`) into the FTS5 index, behind the writes.
//!
//! Why behind: a 500-byte post is some 545 trigrams, tokenized again for its
//! old text on every update, and that is most of a batch's time when the
//! index is written in the batch's transaction (docs/performance.md: 34,000
//! events/s without it, 4,600 with it). Queued, a batch only notes which
//! posts changed, and a post changed many times meanwhile is indexed once.
//! Searches stay complete: they test a queued post's text directly.
//!
//! When: one task per store (its clones share it), woken by a write. It
//! takes the writer when the writer has been idle for [`IDLE`], so the
//! relay's batches do not wait for it while events arrive; under writes
//! without pause it still takes a short step ([`BUSY_STEP`]) every
//! [`OVERDUE`], so the index keeps up with about 1,000 changed posts a
//! second even then, and a batch waits for at most one short step. Not
//! while a backlog drains (batches of [`BACKLOG_BATCH`] records and more):
//! the drain brings some 30,000 changes a second, far more than short steps
//! could index, and they would only slow it, and every read waits for the
//! drain, where only searches of the posts changed meanwhile wait for the
//! index (and find them all the same, through the queue). With the
//! queue empty it merges the index's segments while the writer is idle.
//! It ends when there is nothing left to merge and starts again with the
//! next write. A queue left by a process that stopped is taken by the next
//! writer of the file.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{error::is_missing_table, now_millis, SqliteStore};

/// How long the writer must have been idle before the indexer takes it.
pub(crate) const IDLE: Duration = Duration::from_millis(10);

/// Longest the indexer waits for an idle writer before it takes a
/// [`BUSY_STEP`].
const OVERDUE: Duration = Duration::from_millis(25);

/// How long the indexer waits after a failed step (checking for a stop).
const RETRY: Duration = Duration::from_millis(100);

/// Posts one step on an idle writer indexes (about 15 ms on the bench's
/// 500-byte posts). Steps of 1,024 every second held the relay's batches
/// for 100 ms and more (docs/performance.md).
const STEP: i64 = 128;

/// Posts one step on a busy writer (overdue) indexes: a batch that arrives
/// meanwhile waits for it. Steps of 128 every 100 ms were the projection
/// lag's tail at half the command rate (p99 61 ms, docs/performance.md);
/// fewer posts per step save less than that, as a step has a fixed cost of
/// some milliseconds (steps of 8 took about 7 ms), so the index fell
/// behind with steps sized to 4 ms.
const BUSY_STEP: i64 = 32;

/// Records in a batch that mark a backlog draining: the relay reads up to
/// `RELAY_BATCH_SIZE` (256) events at a time, so a batch this full means
/// events were waiting. At half the bench's maximum command rate its
/// batches hold a few events.
const BACKLOG_BATCH: usize = 128;

/// Index pages one merge step writes when the queue is empty and the
/// writer idle (about 20 ms of work, for the same reason).
const MERGE_PAGES: i64 = 50;

/// What the writes and the indexer of one store share.
#[derive(Debug, Default)]
pub(crate) struct Indexer {
    /// Whether the task runs.
    running: AtomicBool,
    /// Batches being written.
    writing: AtomicUsize,
    /// When the last batch ended (ms since the epoch).
    last_write: AtomicI64,
    /// When the indexer last took a step (ms since the epoch).
    last_step: AtomicI64,
    /// Whether the last batch was a backlog's ([`BACKLOG_BATCH`]).
    backlog: AtomicBool,
    /// Batches written: tells the stopping task that one came in meanwhile.
    writes: AtomicU64,
    /// Set by [`stop`](Self::stop): no step begins after it.
    stopped: AtomicBool,
    /// The task, for [`stop`](Self::stop) to wait for.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Indexer {
    /// A batch begins: the indexer keeps off the writer.
    pub fn write_begins(&self) {
        self.writing.fetch_add(1, Ordering::SeqCst);
    }

    /// A batch of `records` ended (written or not).
    pub fn write_ends(&self, records: usize) {
        self.backlog.store(records >= BACKLOG_BATCH, Ordering::SeqCst);
        self.last_write.store(now_millis(), Ordering::SeqCst);
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.writing.fetch_sub(1, Ordering::SeqCst);
    }

    /// Starts the task for `store` unless it runs.
    pub fn wake(store: &SqliteStore) {
        let indexer = Arc::clone(&store.indexer);
        if indexer.stopped.load(Ordering::SeqCst) || indexer.running.swap(true, Ordering::SeqCst) {
            return;
        }
        if indexer.last_step.load(Ordering::SeqCst) == 0 {
            indexer.last_step.store(now_millis(), Ordering::SeqCst);
        }
        let store = store.clone();
        let task = tokio::spawn({
            let indexer = Arc::clone(&indexer);
            async move { indexer.run(store).await }
        });
        if let Ok(mut slot) = indexer.task.lock() {
            *slot = Some(task);
        };
    }

    /// Stops the task after the step it is taking, if any (before the
    /// store's connections close, so that no step holds one past them).
    pub async fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let task = self.task.lock().ok().and_then(|mut slot| slot.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn run(&self, store: SqliteStore) {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(IDLE).await;
            if store.is_closed() || self.stopped.load(Ordering::SeqCst) {
                self.running.store(false, Ordering::SeqCst);
                return;
            }
            let now = now_millis();
            let idle = self.writing.load(Ordering::SeqCst) == 0
                && now - self.last_write.load(Ordering::SeqCst) >= millis(IDLE);
            let overdue =
                now - self.last_step.load(Ordering::SeqCst) >= millis(OVERDUE) && !self.backlog.load(Ordering::SeqCst);
            if !idle && !overdue {
                continue;
            }
            let writes = self.writes.load(Ordering::SeqCst);
            match store.index_search(if idle { STEP } else { BUSY_STEP }).await {
                Ok(indexed) => {
                    failures = 0;
                    self.last_step.store(now_millis(), Ordering::SeqCst);
                    if indexed > 0 {
                        continue;
                    }
                    // The queue is empty: merge the segments the steps left
                    // while nothing waits for the writer.
                    if idle {
                        match store.merge_search(MERGE_PAGES).await {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(error) if is_missing_table(&error) => {
                                self.running.store(false, Ordering::SeqCst);
                                return;
                            }
                            Err(error) => tracing::warn!(%error, "could not merge the search index"),
                        }
                    }
                    // Empty: stop, unless a batch came in since the step
                    // looked (its wake saw this task running).
                    self.running.store(false, Ordering::SeqCst);
                    if self.writes.load(Ordering::SeqCst) == writes || self.running.swap(true, Ordering::SeqCst) {
                        return;
                    }
                }
                // A staging model swapped in (its tables now the live
                // ones, whose writer indexes them) or dropped.
                Err(error) if is_missing_table(&error) => {
                    self.running.store(false, Ordering::SeqCst);
                    return;
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(100) {
                        tracing::warn!(%error, failures, "could not index queued posts for search; trying again");
                    }
                    for _ in 0..RETRY.as_millis() / IDLE.as_millis() {
                        if self.stopped.load(Ordering::SeqCst) {
                            break;
                        }
                        tokio::time::sleep(IDLE).await;
                    }
                }
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
