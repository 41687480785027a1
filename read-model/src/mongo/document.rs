//! The stored shape of the read model in MongoDB, and conversions to and
//! from the store-neutral [`VersionRecord`].

use mongodb::bson::DateTime;
use postmesh_proto::v1::{EventType, Post};
use serde::{Deserialize, Serialize};

use crate::{millis_to_timestamp, PostVersion, StoreError, VersionRecord};

/// One document of `posts`: the latest state of a post.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PostDoc {
    pub post_id: i64,
    pub version: i64,
    pub title: String,
    pub content: String,
    pub author_name: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub deleted: bool,
}

/// One document of `post_versions`: a post as it stood at one version.
///
/// The fields are repeated rather than `#[serde(flatten)]`ed because flatten
/// buffers through serde's generic content type and loses BSON date-times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct VersionDoc {
    /// Absent in documents stored before positions were kept: read as 0.
    #[serde(default)]
    pub position: i64,
    pub post_id: i64,
    pub version: i64,
    pub event_type: String,
    pub title: String,
    pub content: String,
    pub author_name: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    pub deleted: bool,
}

impl From<VersionRecord> for VersionDoc {
    fn from(record: VersionRecord) -> Self {
        Self {
            position: record.position,
            post_id: record.post_id,
            version: record.version,
            event_type: record.event_type.event_name().to_owned(),
            title: record.title,
            content: record.content,
            author_name: record.author_name,
            created_at: DateTime::from_millis(record.created_at_ms),
            updated_at: DateTime::from_millis(record.updated_at_ms),
            deleted: record.deleted,
        }
    }
}

impl VersionDoc {
    /// The `posts` document this version becomes when it is the newest.
    pub fn to_post_doc(&self) -> PostDoc {
        PostDoc {
            post_id: self.post_id,
            version: self.version,
            title: self.title.clone(),
            content: self.content.clone(),
            author_name: self.author_name.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted: self.deleted,
        }
    }

    /// The protobuf form, or `Corrupt` when the event type is unknown.
    pub fn into_version(self, collection: &str) -> Result<PostVersion, StoreError> {
        let event_type = EventType::from_event_name(&self.event_type).ok_or_else(|| StoreError::Corrupt {
            location: collection.to_owned(),
            reason: format!(
                "post {} version {} has unknown event_type {:?}",
                self.post_id, self.version, self.event_type
            ),
        })?;
        Ok(PostVersion {
            event_type,
            position: self.position,
            post: self.to_post_doc().into_post(),
        })
    }
}

impl PostDoc {
    /// The protobuf form.
    pub fn into_post(self) -> Post {
        Post {
            post_id: self.post_id,
            version: self.version,
            title: self.title,
            content: self.content,
            author_name: self.author_name,
            created_at: Some(millis_to_timestamp(self.created_at.timestamp_millis())),
            updated_at: Some(millis_to_timestamp(self.updated_at.timestamp_millis())),
            deleted: self.deleted,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_version_document_round_trips_to_the_record_it_came_from() {
        let record = VersionRecord {
            position: 12,
            post_id: 7,
            version: 2,
            event_type: EventType::PostUpdated,
            title: "t".into(),
            content: "c".into(),
            author_name: "a".into(),
            created_at_ms: 100_123,
            updated_at_ms: 300_005,
            deleted: false,
        };
        let doc = VersionDoc::from(record.clone());
        assert_eq!(doc.event_type, "PostUpdated");
        assert_eq!(doc.updated_at.timestamp_millis(), 300_005);
        let version = doc.into_version("post_versions").unwrap();
        assert_eq!(version.post, record.to_post());
        assert_eq!(version.event_type, EventType::PostUpdated);
        assert_eq!(version.position, 12);
    }
}
