//! The group committer: one task per process through which every command is
//! written. Commands queue while a transaction is in flight; the next
//! transaction takes all that queued, up to [`MAX_BATCH`] commands and
//! [`MAX_BATCH_BYTES`] of content. On MySQL two transactions may be in
//! flight (`COMMAND_COMMIT_PIPELINE`): the next batch reads and locks its
//! heads while the one before it commits, and waits for it at the position
//! counter; SQLite's one writer takes one at a time. There is no timer: a lone command goes
//! at once, and under load a batch is as large as what arrived during one
//! commit, so the commit's round trips, its fsync and the hold of the
//! position counter (see `crate::store`) are paid once per batch.
//!
//! Each command keeps its own answer ([`crate::app::run_batch`] decides them
//! one by one). When the batch's transaction fails before its commit (the
//! database refused a value, a duplicate key raced in from another replica,
//! a deadlock), nothing was written: its commands run again one per
//! transaction, so the failing one fails alone and its neighbours go
//! through. A failed commit is not re-run: whether it committed is unknown,
//! and each of its commands is told so (UNAVAILABLE).
//!
//! The batch runs in this task, never in a caller's future: a caller that
//! gives up (deadline, reset) while its batch is in flight still has its
//! command committed and published, and one that gave up before its batch
//! began is left out of it, leaving nothing.

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    app::{run_batch, BatchError},
    domain::Command,
    error::Error,
    outbox::Handoff,
    store::{Appended, EventMeta, EventStore, Idempotency, WriteError},
};

/// Commands one transaction takes at most.
pub const MAX_BATCH: usize = 256;

/// Content (title, body, author) one transaction takes at most, beyond its
/// first command: keeps each multi-row statement far below MySQL's
/// `max_allowed_packet` (16 MiB by default).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Commands waiting for the committer before callers wait to queue.
const QUEUE: usize = 4096;

/// How often a command that lost a race is run again before its caller is
/// told to retry.
const MAX_CONFLICT_RETRIES: usize = 8;

/// One queued command and where its answer goes.
#[derive(Debug)]
pub struct Job {
    pub(crate) command: Command,
    pub(crate) meta: EventMeta,
    pub(crate) idempotency: Option<Idempotency>,
    reply: oneshot::Sender<Result<Appended, Error>>,
    bytes: usize,
}

impl Job {
    /// A command to run, answered on `reply`.
    pub fn new(
        command: Command,
        meta: EventMeta,
        idempotency: Option<Idempotency>,
        reply: oneshot::Sender<Result<Appended, Error>>,
    ) -> Self {
        let bytes = command.content_bytes();
        Self {
            command,
            meta,
            idempotency,
            reply,
            bytes,
        }
    }

    fn answer(self, answer: Result<Appended, Error>) {
        // The caller may be gone; the command's effect stands either way.
        let _ = self.reply.send(answer);
    }
}

/// The handlers' end of the committer.
#[derive(Clone, Debug)]
pub struct Queue(mpsc::Sender<Job>);

impl Queue {
    /// Queues a command (waiting while the queue is full).
    pub async fn send(&self, job: Job) -> Result<(), Error> {
        self.0
            .send(job)
            .await
            .map_err(|_| Error::Internal("the group committer stopped".into()))
    }
}

/// Spawns the committer with up to `in_flight` transactions at once (at
/// least 1); it ends when every [`Queue`] is dropped and its last batches
/// are done.
pub fn spawn(store: EventStore, handoff: Handoff, in_flight: usize) -> (Queue, JoinHandle<()>) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    (
        Queue(sender),
        tokio::spawn(run(store, handoff, receiver, in_flight.max(1))),
    )
}

async fn run(store: EventStore, handoff: Handoff, mut queue: mpsc::Receiver<Job>, in_flight: usize) {
    let mut running = tokio::task::JoinSet::new();
    let mut carried = None;
    loop {
        // A free slot first: while every slot is taken, commands queue up
        // for the batch that takes the next one.
        while running.len() >= in_flight {
            let _ = running.join_next().await;
        }
        let first = match carried.take() {
            Some(job) => job,
            None => tokio::select! {
                job = queue.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                // A batch ending frees its slot; nothing to take yet.
                Some(_) = running.join_next(), if !running.is_empty() => continue,
            },
        };
        // One pass of the scheduler before the batch closes (not a timer):
        // handlers whose requests arrived with this one queue their
        // commands into it, rather than into the next transaction.
        tokio::task::yield_now().await;
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(job) = queue.try_recv() else { break };
            if bytes + job.bytes > MAX_BATCH_BYTES {
                carried = Some(job);
                break;
            }
            bytes += job.bytes;
            batch.push(job);
        }
        // Callers that gave up before their batch began: left out, nothing written.
        batch.retain(|job| !job.reply.is_closed());
        if !batch.is_empty() {
            let (store, handoff) = (store.clone(), handoff.clone());
            running.spawn(async move { commit(&store, &handoff, batch).await });
        }
    }
    while running.join_next().await.is_some() {}
}

/// Runs `batch` in one transaction; when that fails before its commit, each
/// command alone, retrying transient conflicts.
async fn commit(store: &EventStore, handoff: &Handoff, batch: Vec<Job>) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match run_batch(store, handoff, &batch).await {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    job.answer(answer);
                }
                return;
            }
            Err(BatchError::Commit(error)) => {
                tracing::warn!(%error, commands = batch.len(), "commit failed; its outcome is unknown");
                let message = format!("the commit failed and may or may not have applied: {error}");
                for job in batch {
                    job.answer(Err(Error::Unavailable(message.clone())));
                }
                return;
            }
            Err(BatchError::Write(error)) => error,
        };
        match error {
            // The database is away: every command would fail the same way.
            WriteError::Failed(Error::Unavailable(message)) => {
                for job in batch {
                    job.answer(Err(Error::Unavailable(message.clone())));
                }
                return;
            }
            error if batch.len() > 1 => {
                tracing::debug!(
                    ?error,
                    commands = batch.len(),
                    "batch failed; running its commands one by one"
                );
                for job in batch {
                    Box::pin(commit(store, handoff, vec![job])).await;
                }
                return;
            }
            WriteError::Conflict(error) if attempt < MAX_CONFLICT_RETRIES => {
                tracing::debug!(attempt, %error, "write conflict; retrying");
                tokio::time::sleep(Duration::from_millis(2 * attempt as u64)).await;
            }
            WriteError::Conflict(error) => {
                tracing::warn!(attempt, %error, "write conflict persisted");
                for job in batch {
                    let post_id = job.command.post_id().map_or(0, |id| id.get());
                    job.answer(Err(Error::Contention(post_id)));
                }
                return;
            }
            WriteError::Failed(error) => {
                for job in batch {
                    job.answer(Err(error.clone()));
                }
                return;
            }
        }
    }
}
