//! The seam between the relay and the read model: anything that can apply an
//! event. Production uses the read model's `ReadStore`; tests wrap it to
//! inject writer failures.

use std::future::Future;

use postmesh_proto::v1::PostEvent;
use postmesh_read_model::{Applied, ReadModelStore, ReadStore, StoreError};

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The read store is unreachable: an outage, not a bad event. The relay
    /// pauses instead of counting an attempt.
    #[error("read store unavailable: {0}")]
    Unavailable(String),
    /// The store refused this event.
    #[error("{0}")]
    Rejected(String),
}

impl From<StoreError> for ApplyError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            Self::Unavailable(error.to_string())
        } else {
            Self::Rejected(error.to_string())
        }
    }
}

/// Applies events to a read model.
pub trait Projector: Clone + Send + Sync + 'static {
    /// Applies one event; idempotent and order-independent.
    fn apply(&self, event: &PostEvent) -> impl Future<Output = Result<Applied, ApplyError>> + Send;
    /// Applies a batch of events (any posts, any order, duplicates allowed)
    /// and tells per event, in the same order, what it did; all or nothing as
    /// far as the caller knows: an error leaves every event to be applied
    /// again. `None` when this projector applies one event at a time only
    /// (the relay then calls [`apply`](Self::apply) per entry).
    fn apply_batch(
        &self,
        events: &[PostEvent],
    ) -> impl Future<Output = Option<Result<Vec<Applied>, ApplyError>>> + Send {
        let _ = events;
        std::future::ready(None)
    }
    /// Checks the read model is reachable.
    fn ping(&self) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

impl Projector for ReadStore {
    async fn apply(&self, event: &PostEvent) -> Result<Applied, ApplyError> {
        Ok(ReadModelStore::apply(self, event).await?)
    }

    async fn apply_batch(&self, events: &[PostEvent]) -> Option<Result<Vec<Applied>, ApplyError>> {
        Some(
            ReadModelStore::apply_batch(self, events)
                .await
                .map_err(ApplyError::from),
        )
    }

    async fn ping(&self) -> Result<(), ApplyError> {
        Ok(ReadModelStore::ping(self).await?)
    }
}
