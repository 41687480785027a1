//! The seam between the relay and the read model: anything that can apply a
//! batch of events. Production uses the read model's `ReadStore`; tests wrap
//! it to inject writer failures.

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
    /// The store refused this batch.
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
    /// The store's kind as the write spans name it (`db.system`).
    fn db_system(&self) -> &'static str;

    /// Applies a batch of events (any posts, any order, duplicates allowed;
    /// one event is a batch of one) and tells per event, in the same order,
    /// what it did; idempotent and order-independent, and all or nothing as
    /// far as the caller knows: an error leaves every event to be applied
    /// again.
    fn project(&self, events: &[PostEvent]) -> impl Future<Output = Result<Vec<Applied>, ApplyError>> + Send;

    /// Checks the read model is reachable.
    fn ping_store(&self) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

impl Projector for ReadStore {
    fn db_system(&self) -> &'static str {
        self.system()
    }

    async fn project(&self, events: &[PostEvent]) -> Result<Vec<Applied>, ApplyError> {
        Ok(self.apply_batch(events).await?)
    }

    async fn ping_store(&self) -> Result<(), ApplyError> {
        Ok(self.ping().await?)
    }
}
