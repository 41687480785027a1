//! What the read-model store can fail with, and whether a failure is an
//! outage (retry later) or a problem with the input (retrying cannot help).

use std::time::Duration;

use mongodb::error::{ErrorKind, WriteFailure};

/// Server error codes that mean "this server cannot serve you right now"
/// rather than "your request is wrong": network trouble, shutdown, elections.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Everything a [`ReadStore`](super::ReadStore) call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The driver or the server reported an error.
    #[error("MongoDB {op} failed: {source}")]
    Mongo {
        /// What we were doing, for the message.
        op: &'static str,
        /// The driver error.
        #[source]
        source: mongodb::error::Error,
    },
    /// The operation did not finish in time (a hung server, not a refused one).
    #[error("MongoDB {op} did not finish within {after:?}")]
    Timeout {
        /// What we were doing.
        op: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The server refused one item of a write command (its write error).
    #[error("MongoDB {op} failed: {message} (code {code})")]
    Write {
        /// What we were doing.
        op: &'static str,
        /// The server's error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The event cannot be applied whatever the state of the store: a missing
    /// post, a non-positive id or version, an unspecified event type.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A stored document does not have the shape this code writes.
    #[error("corrupt document in {collection}: {reason}")]
    Corrupt {
        /// The collection holding it.
        collection: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A caller asked for something the store cannot do, such as swapping in
    /// collections from another database.
    #[error("invalid store operation: {0}")]
    Usage(String),
}

impl StoreError {
    pub(crate) fn mongo(op: &'static str) -> impl FnOnce(mongodb::error::Error) -> Self {
        move |source| Self::Mongo { op, source }
    }

    /// True when the store could not be reached or did not answer (connection
    /// refused, server selection timed out, I/O error, shutdown, election):
    /// the same request may well succeed later. The relay must retry these
    /// indefinitely rather than dead-letter the event, and query-svc answers
    /// them with `UNAVAILABLE`. Authentication failures count too: they say
    /// nothing about the event and are fixed by an operator, not by dropping it.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Mongo { source, .. } => mongo_is_unavailable(source),
            Self::Write { code, .. } => TRANSIENT_CODES.contains(code),
            Self::InvalidEvent(_) | Self::Corrupt { .. } | Self::Usage(_) => false,
        }
    }
}

fn mongo_is_unavailable(error: &mongodb::error::Error) -> bool {
    if error.contains_label("RetryableWriteError") {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(command) => TRANSIENT_CODES.contains(&command.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => TRANSIENT_CODES.contains(&concern.code),
        ErrorKind::Write(WriteFailure::WriteError(write)) => TRANSIENT_CODES.contains(&write.code),
        _ => false,
    }
}

/// The code of a unique-index violation (E11000).
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// True when `error` says the namespace does not exist (code 26).
pub(crate) fn is_namespace_not_found(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(command) if command.code == 26)
}

/// True when the server does not implement a command or option (code 238),
/// as FerretDB answers for some options MongoDB has.
pub(crate) fn is_not_implemented(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(command) if command.code == 238)
}
