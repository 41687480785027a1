//! [`PostId`]: a post's id, positive by construction.

use std::fmt;

use tonic_types::FieldViolation;

/// A post's id. The event store assigns them from 1 upwards, so an id is
/// positive; one that is not never becomes a `PostId`, and code holding one
/// never checks it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostId(i64);

impl PostId {
    /// `id` when it is positive.
    pub const fn new(id: i64) -> Result<Self, InvalidPostId> {
        if id > 0 {
            Ok(Self(id))
        } else {
            Err(InvalidPostId(id))
        }
    }

    /// The id of a request field, or the violation naming `field`.
    pub fn from_field(field: &str, id: i64) -> Result<Self, FieldViolation> {
        Self::new(id).map_err(|invalid| invalid.violation(field))
    }

    /// The id as the wire and the databases carry it.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for PostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<PostId> for i64 {
    fn from(id: PostId) -> Self {
        id.0
    }
}

impl TryFrom<i64> for PostId {
    type Error = InvalidPostId;

    fn try_from(id: i64) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

/// A value that is not a post id: zero or negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidPostId(pub i64);

impl InvalidPostId {
    /// The `google.rpc.BadRequest` violation of request field `field`.
    pub fn violation(self, field: &str) -> FieldViolation {
        FieldViolation::new(field, self.to_string())
    }
}

/// The one wording of a bad post id, wherever it is found.
impl fmt::Display for InvalidPostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "must be greater than 0 (got {})", self.0)
    }
}

impl std::error::Error for InvalidPostId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_ids_are_post_ids() {
        assert_eq!(PostId::new(1).map(PostId::get), Ok(1));
        assert_eq!(PostId::new(0), Err(InvalidPostId(0)));
        assert_eq!(PostId::try_from(-4), Err(InvalidPostId(-4)));
        let violation = PostId::from_field("post_id", 0).expect_err("zero is refused");
        assert_eq!(violation.field, "post_id");
        assert_eq!(violation.description, "must be greater than 0 (got 0)");
    }
}
