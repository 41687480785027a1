//! The one error type of query-svc and its single mapping to gRPC status.

use postmesh_common::errors::{describe, invalid_argument};
use tonic::Code;
use tonic_types::FieldViolation;

use postmesh_read_model::StoreError;

/// Everything a PostQuery call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input broke one or more field rules; each violation names its field.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The read model has no post with this id.
    #[error("post {0} does not exist")]
    NotFound(i64),
    /// The post is deleted and the caller did not ask for deleted posts.
    #[error("post {0} is deleted")]
    Deleted(i64),
    /// The read model holds no version of this post.
    #[error("post {0} has no history")]
    NoHistory(i64),
    /// GetPost's min_version was not reached within the wait allowed.
    #[error(
        "the read model has post {post_id} at version {current}, not yet at the requested \
         min_version {wanted}; retry shortly"
    )]
    NotCaughtUp {
        /// The post.
        post_id: i64,
        /// The version the client asked for.
        wanted: i64,
        /// The version the read model holds (0: not there at all).
        current: i64,
    },
    /// The read model cannot be reached or did not answer in time.
    #[error("read model unavailable: {0}")]
    Unavailable(String),
    /// MAX_WATCHERS streams are open already.
    #[error("{0} WatchPosts streams are open, the most this server allows; retry later")]
    TooManyWatchers(usize),
    /// A watcher fell more than its buffer behind and was cut off.
    #[error("watcher fell more than {0} changes behind and was ended; reconnect and re-read")]
    WatcherLagged(usize),
    /// Anything else: a bug, or a stored document we cannot read.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => invalid_argument(message, violations),
            Error::NotFound(_) | Error::Deleted(_) | Error::NoHistory(_) => tonic::Status::new(Code::NotFound, message),
            Error::NotCaughtUp { .. } | Error::Unavailable(_) => tonic::Status::new(Code::Unavailable, message),
            Error::TooManyWatchers(_) | Error::WatcherLagged(_) => tonic::Status::new(Code::ResourceExhausted, message),
            Error::Internal(_) => {
                tracing::error!(%message, "internal error");
                tonic::Status::new(Code::Internal, message)
            }
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn bad_input_carries_field_violations() {
        let status = tonic::Status::from(Error::field("page_size", "must be at most 100"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad_request = details.bad_request().unwrap();
        assert_eq!(bad_request.field_violations[0].field, "page_size");
    }

    #[test]
    fn not_caught_up_names_both_versions() {
        let status = tonic::Status::from(Error::NotCaughtUp {
            post_id: 3,
            wanted: 7,
            current: 5,
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("version 5"));
        assert!(status.message().contains("min_version 7"));
    }
}
