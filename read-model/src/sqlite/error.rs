//! How SQLite's errors map onto [`StoreError`](crate::StoreError): which
//! result codes are outages (a locked, missing, unreadable or full file),
//! and the one error the store handles itself (a table not created yet).

use sea_orm::sqlx;

use crate::StoreError;

/// Primary result codes that mean "the file cannot serve you right now"
/// rather than "your request is wrong". Corrupt and not-a-database files are
/// among them: an operator repairs those, and the relay must wait for it
/// rather than dead-letter every event.
const UNAVAILABLE_CODES: &[i32] = &[
    3,  // SQLITE_PERM
    5,  // SQLITE_BUSY: another connection holds the lock past busy_timeout
    6,  // SQLITE_LOCKED
    7,  // SQLITE_NOMEM
    8,  // SQLITE_READONLY (a read-only file or directory)
    10, // SQLITE_IOERR
    11, // SQLITE_CORRUPT
    13, // SQLITE_FULL
    14, // SQLITE_CANTOPEN: the file or its directory is missing
    15, // SQLITE_PROTOCOL
    23, // SQLITE_AUTH
    26, // SQLITE_NOTADB
];

/// Labels a driver error with what we were doing.
pub(crate) fn labelled(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}

/// The primary result code of a database error (the extended code's low byte).
fn primary_code(error: &sqlx::Error) -> Option<i32> {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff),
        _ => None,
    }
}

/// True when a driver error is an outage (see [`StoreError::is_unavailable`]).
pub(crate) fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(_) => primary_code(error).is_some_and(|code| UNAVAILABLE_CODES.contains(&code)),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// True when a statement named a table that does not exist: a store whose
/// schema was never ensured, or a staging store after its swap. Reads treat
/// it as an empty model (as MongoDB treats a missing collection); the writer
/// creates the schema and writes again.
pub(crate) fn is_missing_table(error: &StoreError) -> bool {
    match error {
        StoreError::Sqlite {
            source: sqlx::Error::Database(source),
            ..
        } => source.message().starts_with("no such table"),
        _ => false,
    }
}
