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
//! without pause it still takes a step every [`OVERDUE`], so the index
//! keeps up even then. A step holds the writer for about [`STEP_BUDGET`]. With the
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

/// Longest the indexer waits for an idle writer before it takes a step.
/// Short, with steps as short as [`STEP_BUDGET`]: under writes without
/// pause the index keeps up with about 40 steps a second.
const OVERDUE: Duration = Duration::from_millis(25);

/// About how long one step may hold the writer: a batch that arrives
/// meanwhile waits for it, so this bounds what the index adds to the
/// projection lag. Fixed steps of 128 posts (15 ms on the bench's 500-byte
/// posts, more as the index grew) were the lag's tail at half the command
/// rate (docs/performance.md), and steps of 1,024 held batches for 100 ms.
const STEP_BUDGET: Duration = Duration::from_millis(4);

/// Posts the first step indexes; later steps size themselves to the budget
/// from how long the last full one took, within [`MIN_STEP`, `MAX_STEP`].
const FIRST_STEP: i64 = 32;
const MIN_STEP: i64 = 8;
const MAX_STEP: i64 = 1024;

/// Index pages one merge step writes when the queue is empty and the
/// writer idle (a few milliseconds of work, for the same reason).
const MERGE_PAGES: i64 = 12;

/// The next step's size: `posts` took `took`, so about this many fit the budget.
fn next_step(posts: i64, took: Duration) -> i64 {
    let fits = posts as f64 * STEP_BUDGET.as_secs_f64() / took.as_secs_f64().max(1e-6);
    (fits as i64).clamp(MIN_STEP, MAX_STEP)
}

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

    /// A batch ended (written or not).
    pub fn write_ends(&self) {
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
        let mut step = FIRST_STEP;
        // Whether to wait before looking again: not right after a step taken
        // on an idle writer, so a backlog is indexed in short steps back to
        // back while nothing else wants the writer.
        let mut rest = true;
        loop {
            if rest {
                tokio::time::sleep(IDLE).await;
            }
            rest = true;
            if store.is_closed() || self.stopped.load(Ordering::SeqCst) {
                self.running.store(false, Ordering::SeqCst);
                return;
            }
            let now = now_millis();
            let idle = self.writing.load(Ordering::SeqCst) == 0
                && now - self.last_write.load(Ordering::SeqCst) >= millis(IDLE);
            let overdue = now - self.last_step.load(Ordering::SeqCst) >= millis(OVERDUE);
            if !idle && !overdue {
                continue;
            }
            let writes = self.writes.load(Ordering::SeqCst);
            let began = std::time::Instant::now();
            match store.index_search(step).await {
                Ok(indexed) => {
                    failures = 0;
                    self.last_step.store(now_millis(), Ordering::SeqCst);
                    if indexed as i64 == step {
                        step = next_step(step, began.elapsed());
                    }
                    if indexed > 0 {
                        rest = !idle;
                        continue;
                    }
                    // The queue is empty: merge the segments the steps left
                    // while nothing waits for the writer.
                    if idle {
                        match store.merge_search(MERGE_PAGES).await {
                            Ok(true) => {
                                rest = false;
                                continue;
                            }
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
                    for _ in 0..OVERDUE.as_millis() / IDLE.as_millis() {
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
