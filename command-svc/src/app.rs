//! The use case: commands, top to bottom. The handler validated a command
//! and [`Commands::execute`] queues it for the group committer
//! (`crate::committer`), which runs every command that queued while the
//! previous transaction was in flight in one transaction ([`run_batch`]):
//! the store's writer reads and locks the heads of the posts they touch and
//! their idempotency keys, the domain decides each command in order (a
//! command sees the ones before it in the batch), the writer appends what
//! was decided in one statement per table and commits, and the outbox's
//! handoff publishes. Each command keeps its own answer: a refusal (a
//! version mismatch, a deleted post, a reused key) is decided before
//! anything is written and touches no neighbour.

use std::collections::HashMap;

use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    committer::{self, Job},
    domain::{self, Command},
    error::Error,
    outbox::Handoff,
    store::{Appended, EventMeta, EventStore, Idempotency, ToAppend, WriteError},
};

/// Runs commands against the event store and hands their events to the
/// publisher; cheap to clone.
#[derive(Clone, Debug)]
pub struct Commands {
    store: EventStore,
    queue: committer::Queue,
}

impl Commands {
    /// Commands appended to `store`, their events handed to `handoff`, by a
    /// group committer spawned on the current runtime.
    pub fn new(store: EventStore, handoff: Handoff) -> Self {
        let in_flight = store.default_commit_pipeline();
        Self::spawn(store, handoff, in_flight).0
    }

    /// As [`Self::new`], with up to `in_flight` transactions at once, and the
    /// committer's task: it ends once every clone of the returned `Commands`
    /// is dropped and the last batches are done (committed and handed to the
    /// publisher, or failed).
    pub fn spawn(store: EventStore, handoff: Handoff, in_flight: usize) -> (Self, JoinHandle<()>) {
        let (queue, task) = committer::spawn(store.clone(), handoff, in_flight);
        (Self { store, queue }, task)
    }

    /// The event store the commands go to.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Validated command in, one event appended (or the first answer to a
    /// repeated idempotency key) out. The command runs in the committer's
    /// task, not in this future: dropped while the batch is in flight, the
    /// command still commits and its event is published; dropped before its
    /// batch began, it is left out of it and nothing is written.
    pub async fn execute(
        &self,
        command: &Command,
        meta: &EventMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<Appended, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::new(command.clone(), meta.clone(), idempotency.cloned(), reply))
            .await?;
        answer
            .await
            .map_err(|_| Error::Internal("the group committer stopped".into()))?
    }
}

/// What became of one command of a batch while it was decided.
enum Outcome {
    /// Decided; its event is the batch's `n`th append.
    Appends(usize),
    /// Answered without writing: a repeated idempotency key or a refusal.
    Answered(Result<Appended, Error>),
    /// Its idempotency key came with the same request earlier in the batch,
    /// at this index: it gets that command's answer.
    Repeats(usize),
}

/// A batch's transaction failed.
pub(crate) enum BatchError {
    /// Before the commit: nothing was written, the commands may run again.
    Write(WriteError),
    /// The commit failed: whether it committed is unknown.
    Commit(Error),
}

/// Runs `jobs` in one transaction and returns each one's answer, in order.
pub(crate) async fn run_batch(
    store: &EventStore,
    handoff: &Handoff,
    jobs: &[Job],
) -> Result<Vec<Result<Appended, Error>>, BatchError> {
    let writer = store.writer().await.map_err(BatchError::Write)?;
    let mut ids: Vec<_> = jobs.iter().filter_map(|job| job.command.post_id()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut heads = writer.heads(&ids).await.map_err(BatchError::Write)?;
    let keys: Vec<&str> = jobs
        .iter()
        .filter_map(|job| job.idempotency.as_ref().map(|idem| idem.key.as_str()))
        .collect();
    let stored = writer.keys(&keys).await.map_err(BatchError::Write)?;

    let now_us = chrono::Utc::now().timestamp_micros();
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut appends = Vec::new();
    // Keys this batch takes: the index of the command that takes each, and its request.
    let mut taken: HashMap<&str, (usize, &str)> = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        if let Some(idem) = &job.idempotency {
            // A retry of a command that went through finds the post moved on
            // (or deleted): its key answers, not the rules.
            let first = stored
                .get(&idem.key)
                .map(|key| (key.request_hash.as_str(), Outcome::Answered(Ok(key.answer))))
                .or_else(|| {
                    taken
                        .get(idem.key.as_str())
                        .map(|&(first, hash)| (hash, Outcome::Repeats(first)))
                });
            if let Some((hash, outcome)) = first {
                outcomes.push(if hash == idem.request_hash {
                    outcome
                } else {
                    Outcome::Answered(Err(Error::IdempotencyKeyReused(idem.key.clone())))
                });
                continue;
            }
        }
        let current = job.command.post_id().and_then(|id| heads.get(&id));
        match domain::decide(current, &job.command, now_us) {
            Ok(decision) => {
                if let Some(post_id) = decision.post_id {
                    heads.insert(post_id, decision.state.clone());
                }
                if let Some(idem) = &job.idempotency {
                    taken.insert(&idem.key, (index, &idem.request_hash));
                }
                outcomes.push(Outcome::Appends(appends.len()));
                appends.push(ToAppend {
                    decision,
                    meta: job.meta.clone(),
                    idempotency: job.idempotency.clone(),
                });
            }
            Err(refused) => outcomes.push(Outcome::Answered(Err(refused))),
        }
    }

    let mut recorded = Vec::new();
    if appends.is_empty() {
        drop(writer);
    } else {
        recorded = writer.append(appends).await.map_err(BatchError::Write)?;
        // Claimed before the commit, so the poller never publishes the rows
        // too; dropped unsent when the commit fails, they are the poller's.
        let reserved: Vec<_> = recorded
            .iter()
            .map(|recorded| handoff.reserve(recorded.pending.clone()))
            .collect();
        writer.commit().await.map_err(BatchError::Commit)?;
        for reservation in reserved {
            reservation.send();
        }
    }
    let appended = |n: usize| recorded[n].appended;
    let answers: Vec<Result<Appended, Error>> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Outcome::Appends(n) => Ok(appended(*n)),
            Outcome::Answered(answer) => answer.clone(),
            Outcome::Repeats(first) => match &outcomes[*first] {
                Outcome::Appends(n) => Ok(Appended {
                    position: 0,
                    ..appended(*n)
                }),
                Outcome::Answered(_) | Outcome::Repeats(_) => Err(Error::Internal(
                    "an idempotency key repeated a command that was not appended".into(),
                )),
            },
        })
        .collect();
    Ok(answers)
}
