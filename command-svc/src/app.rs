//! The use case: one command, top to bottom. The handler validated it; here
//! the store's writer reads the post's head, the domain decides, the writer
//! appends and commits, and the outbox's handoff publishes. Conflicts are
//! decided again on fresh state; idempotency keys answer repeats.
//!
//! The seam for batching: [`Commands::once`] is one command in one
//! transaction; a group committer runs the same steps (head, decide, append,
//! reserve) for many commands in one writer and commits once.

use std::time::Duration;

use crate::{
    domain::{self, Command},
    error::Error,
    outbox::Handoff,
    store::{Append, Appended, EventMeta, EventStore, Idempotency, WriteError},
};

/// How often a command that lost a race is decided again before its caller
/// is told to retry.
const MAX_CONFLICT_RETRIES: usize = 8;

/// Runs commands against the event store and hands their events to the
/// publisher; cheap to clone.
#[derive(Clone, Debug)]
pub struct Commands {
    store: EventStore,
    handoff: Handoff,
}

impl Commands {
    /// Commands appended to `store`, their events handed to `handoff`.
    pub fn new(store: EventStore, handoff: Handoff) -> Self {
        Self { store, handoff }
    }

    /// The event store the commands go to.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Validated command in, one event appended (or the first answer to a
    /// repeated idempotency key) out.
    pub async fn execute(
        &self,
        command: &Command,
        meta: &EventMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<Appended, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.once(command, meta, idempotency).await {
                Ok(appended) => return Ok(appended),
                Err(WriteError::Conflict(error)) if attempt < MAX_CONFLICT_RETRIES => {
                    tracing::debug!(attempt, %error, "write conflict; retrying");
                    tokio::time::sleep(Duration::from_millis(2 * attempt as u64)).await;
                }
                Err(WriteError::Conflict(error)) => {
                    tracing::warn!(attempt, %error, "write conflict persisted");
                    return Err(Error::Contention(command.post_id().map_or(0, |id| id.get())));
                }
                Err(WriteError::Failed(error)) => return Err(error),
            }
        }
    }

    /// One attempt in one transaction.
    async fn once(
        &self,
        command: &Command,
        meta: &EventMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<Appended, WriteError> {
        let writer = self.store.writer().await?;
        let now_us = chrono::Utc::now().timestamp_micros();
        let current = match command.post_id() {
            Some(post_id) => writer.head(post_id).await?,
            None => None,
        };
        let decision = match domain::decide(current.as_ref(), command, now_us) {
            Ok(decision) => decision,
            Err(refused) => {
                drop(writer);
                // A retry of a command that went through finds the post moved
                // on (or deleted): its key answers, not the rules.
                return match self.first_answer(idempotency).await? {
                    Some(first) => Ok(first),
                    None => Err(refused.into()),
                };
            }
        };
        let recorded = match writer.append(decision, meta, idempotency).await? {
            Append::Recorded(recorded) => *recorded,
            Append::KeyTaken => {
                drop(writer);
                return self
                    .first_answer(idempotency)
                    .await?
                    .ok_or_else(|| WriteError::Conflict("the idempotency key vanished".into()));
            }
        };
        // Claimed before the commit, so the poller never publishes the row too.
        let reserved = self.handoff.reserve(recorded.pending);
        writer.commit().await?;
        reserved.send();
        Ok(recorded.appended)
    }

    async fn first_answer(&self, idempotency: Option<&Idempotency>) -> Result<Option<Appended>, Error> {
        match idempotency {
            Some(idem) => self.store.first_answer(idem).await,
            None => Ok(None),
        }
    }
}
