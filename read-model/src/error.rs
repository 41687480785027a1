//! What a read store can fail with, and whether a failure is an outage
//! (retry later) or a problem with the input (retrying cannot help).

use std::time::Duration;

use crate::{mongo, sqlite};

/// Everything a [`ReadStore`](crate::ReadStore) call can fail with, whatever
/// the implementation. Implementations add a variant for their driver's error
/// and decide, in [`is_unavailable`](Self::is_unavailable), which of its
/// errors are outages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The MongoDB driver or server reported an error.
    #[error("MongoDB {op} failed: {source}")]
    Mongo {
        /// What we were doing, for the message.
        op: &'static str,
        /// The driver error.
        #[source]
        source: mongodb::error::Error,
    },
    /// The MongoDB server refused one item of a write command (its write error).
    #[error("MongoDB {op} failed: {message} (code {code})")]
    MongoWrite {
        /// What we were doing.
        op: &'static str,
        /// The server's error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// SQLite (through sqlx) reported an error.
    #[error("SQLite {op} failed: {source}")]
    Sqlite {
        /// What we were doing, for the message.
        op: &'static str,
        /// The driver error.
        #[source]
        source: sea_orm::sqlx::Error,
    },
    /// The operation did not finish in time (a hung server, not a refused one).
    #[error("{store} {op} did not finish within {after:?}")]
    Timeout {
        /// Which store ("MongoDB", "SQLite").
        store: &'static str,
        /// What we were doing.
        op: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The event cannot be applied whatever the state of the store: a missing
    /// post, a non-positive id or version, an unspecified event type.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// Writing the event kept colliding with a record the store holds under
    /// another key (a unique index the version gate does not address, such
    /// as a stray document with the post's `post_id`): applying it again
    /// cannot help. The relay dead-letters the event with this reason rather
    /// than acknowledge it unapplied.
    #[error("conflict in {location}: {reason}")]
    Conflict {
        /// The collection or table holding the colliding record.
        location: String,
        /// What collided.
        reason: String,
    },
    /// A stored document or row does not have the shape this code writes.
    #[error("corrupt data in {location}: {reason}")]
    Corrupt {
        /// The collection or table holding it.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A caller asked for something the store cannot do, such as swapping in
    /// a staging store of another database, or a URL of an unknown scheme.
    #[error("invalid store operation: {0}")]
    Usage(String),
}

impl StoreError {
    /// True when the store could not be reached or did not answer (connection
    /// refused, server selection timed out, I/O error, shutdown, election):
    /// the same request may well succeed later. The relay must retry these
    /// indefinitely rather than dead-letter the event, and query-svc answers
    /// them with `UNAVAILABLE`. Authentication failures count too: they say
    /// nothing about the event and are fixed by an operator, not by dropping it.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Mongo { source, .. } => mongo::error::is_unavailable(source),
            Self::MongoWrite { code, .. } => mongo::error::is_transient(*code),
            Self::Sqlite { source, .. } => sqlite::error::is_unavailable(source),
            Self::InvalidEvent(_) | Self::Conflict { .. } | Self::Corrupt { .. } | Self::Usage(_) => false,
        }
    }
}
