//! The one error type of command-svc and its single mapping to gRPC status.

use postmesh_common::errors::{describe, invalid_argument};
use postmesh_proto::PostId;
use sea_orm::{DbErr, RuntimeErr, SqlErr};
use tonic::Code;
use tonic_types::FieldViolation;

/// Everything a command or event-store read can fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// Input broke one or more field rules; each violation names its field.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No post has this id.
    #[error("post {0} does not exist")]
    NotFound(PostId),
    /// The post was deleted, so it can no longer change.
    #[error("post {0} is deleted")]
    Deleted(PostId),
    /// The client's expected_version is not the current version.
    #[error("post {post_id} is at version {current}, not the expected version {expected}")]
    VersionMismatch {
        /// The post.
        post_id: PostId,
        /// What the client expected.
        expected: i64,
        /// What the store holds.
        current: i64,
    },
    /// Another writer won a race that retrying did not resolve (0: a new post).
    #[error("post {0} changed concurrently; retry the command")]
    Contention(i64),
    /// The idempotency key was used before with a different request.
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// The database cannot be reached right now.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a database error we cannot classify.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::Deleted(_) => Code::FailedPrecondition,
            Self::VersionMismatch { .. } | Self::Contention(_) => Code::Aborted,
            Self::IdempotencyKeyReused(_) => Code::AlreadyExists,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => invalid_argument(message, violations),
            Error::NotFound(_)
            | Error::Deleted(_)
            | Error::VersionMismatch { .. }
            | Error::Contention(_)
            | Error::IdempotencyKeyReused(_)
            | Error::Unavailable(_) => tonic::Status::new(error.code(), message),
            Error::Internal(_) => {
                tracing::error!(%message, "internal error");
                tonic::Status::new(Code::Internal, message)
            }
        }
    }
}

impl From<DbErr> for Error {
    fn from(error: DbErr) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

/// True for errors that mean "the database is not reachable", as opposed to
/// a bad query: those become UNAVAILABLE so clients retry.
pub fn is_unavailable(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    let runtime = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    match runtime {
        RuntimeErr::SqlxError(sqlx) => match sqlx {
            Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::Tls(_) | Sqlx::Protocol(_) => true,
            Sqlx::WorkerCrashed => true,
            // 1053 server shutdown, 1927 connection killed, 2006 gone away, 2013 lost connection.
            Sqlx::Database(db) => matches!(db.code().as_deref(), Some("1053" | "1927" | "2006" | "2013" | "08S01")),
            _ => false,
        },
        RuntimeErr::Internal(_) => false,
    }
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// True for transient write conflicts worth retrying: a MySQL deadlock or
/// lock-wait timeout, or SQLite reporting the database busy/locked.
pub fn is_retryable_conflict(error: &DbErr) -> bool {
    let text = error.to_string();
    text.contains("Deadlock") || text.contains("1213") || text.contains("1205") || text.contains("database is locked")
}
