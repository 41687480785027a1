//! Stream entries: decoding what command-svc wrote, and the dead-letter format.

use std::collections::HashMap;

use postmesh_proto::v1::PostEvent;
use prost::Message;

/// Fields of one stream entry, raw.
pub type Fields = HashMap<String, Vec<u8>>;

/// One entry read from a stream.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The stream it came from.
    pub stream: String,
    /// Its id in that stream.
    pub id: String,
    /// Its fields.
    pub fields: Fields,
}

/// Why an entry could not be decoded; such entries are dead-lettered at once.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The `event` field is absent.
    #[error("entry has no `event` field")]
    MissingEvent,
    /// The `event` field is not a PostEvent.
    #[error("`event` is not a valid posts.v1.PostEvent: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// Decoded, but cannot describe a post change.
    #[error("event is incomplete: {0}")]
    Incomplete(&'static str),
}

impl Entry {
    /// Decodes and sanity-checks the event.
    pub fn event(&self) -> Result<PostEvent, DecodeError> {
        let bytes = self.fields.get("event").ok_or(DecodeError::MissingEvent)?;
        let event = PostEvent::decode(bytes.as_slice())?;
        if event.post_id <= 0 {
            return Err(DecodeError::Incomplete("post_id must be > 0"));
        }
        if event.version <= 0 {
            return Err(DecodeError::Incomplete("version must be > 0"));
        }
        if event.post.is_none() {
            return Err(DecodeError::Incomplete("post state missing"));
        }
        Ok(event)
    }

    /// A field as text, or "" when absent or not UTF-8; for logs and listings.
    pub fn text(&self, field: &str) -> String {
        self.fields
            .get(field)
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .unwrap_or_default()
    }

    /// The action recorded on the entry ("create"/"update"/"delete"), for logs.
    pub fn action(&self) -> &'static str {
        match self.text("event_type").as_str() {
            "PostCreated" => "create",
            "PostUpdated" => "update",
            "PostDeleted" => "delete",
            _ => "unknown",
        }
    }
}

/// Dead-letter fields added to the original ones.
pub mod dlq_fields {
    /// The error of the last attempt.
    pub const ERROR: &str = "dlq_error";
    /// How many attempts were made.
    pub const ATTEMPTS: &str = "dlq_attempts";
    /// The stream the entry came from (where replay puts it back).
    pub const SOURCE_STREAM: &str = "dlq_source_stream";
    /// The entry's id in that stream.
    pub const SOURCE_ID: &str = "dlq_source_id";
    /// When it was dead-lettered (RFC 3339).
    pub const FAILED_AT: &str = "dlq_failed_at";
    /// Every field the relay adds; replay strips them.
    pub const ALL: [&str; 5] = [ERROR, ATTEMPTS, SOURCE_STREAM, SOURCE_ID, FAILED_AT];
}

/// Parses an XREAD/XREADGROUP/XAUTOCLAIM entry list.
pub fn from_ids(stream: &str, ids: Vec<redis::streams::StreamId>) -> Vec<Entry> {
    ids.into_iter()
        .map(|entry| Entry {
            stream: stream.to_owned(),
            id: entry.id,
            fields: entry
                .map
                .into_iter()
                .map(|(k, v)| (k, redis::from_redis_value::<Vec<u8>>(&v).unwrap_or_default()))
                .collect(),
        })
        .collect()
}
