//! The stream entry: one committed event on a Redis stream.
//!
//! command-svc's outbox writes it with [`xadd`]; event-relay reads it back as
//! an [`Entry`]. The fields, in the order they are written (values are bytes;
//! numbers in decimal, as Redis writes integer arguments):
//!
//! | field         | value                                              |
//! |---------------|----------------------------------------------------|
//! | `position`    | the event's position in the event log              |
//! | `post_id`     | the post                                           |
//! | `version`     | the post's version after the event                 |
//! | `event_type`  | `PostCreated`, `PostUpdated` or `PostDeleted`      |
//! | `traceparent` | W3C trace context of the publish span (may be "")  |
//! | `tracestate`  | W3C trace state (may be "")                        |
//! | `event`       | the `posts.v1.PostEvent`, protobuf-encoded         |
//!
//! `event` is the only field the relay applies; the others repeat parts of
//! it so that logs, dead-letter listings and tracing need not decode it.
//! Clients in other languages and the tests read these bytes: keep them.

use std::collections::HashMap;

use postmesh_proto::v1::{EventType, PostEvent};
use prost::Message;

use crate::topology::Action;

/// The field names of a stream entry.
pub mod field {
    /// The event's position in the event log.
    pub const POSITION: &str = "position";
    /// The post.
    pub const POST_ID: &str = "post_id";
    /// The post's version after the event.
    pub const VERSION: &str = "version";
    /// The event type's name ([`EventType::event_name`](postmesh_proto::v1::EventType::event_name)).
    pub const EVENT_TYPE: &str = "event_type";
    /// W3C `traceparent` of the publish span.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C `tracestate` of the publish span.
    pub const TRACESTATE: &str = "tracestate";
    /// The protobuf-encoded `posts.v1.PostEvent`.
    pub const EVENT: &str = "event";
}

/// The fields of the stream entry of `event`, in the order they are
/// written, carrying the trace context `traceparent`/`tracestate`. This is
/// the one place the fields are listed.
fn fields_of(event: &PostEvent, traceparent: &str, tracestate: &str) -> [(&'static str, Vec<u8>); 7] {
    [
        (field::POSITION, event.position.to_string().into_bytes()),
        (field::POST_ID, event.post_id.to_string().into_bytes()),
        (field::VERSION, event.version.to_string().into_bytes()),
        (field::EVENT_TYPE, event.event_type().event_name().as_bytes().to_vec()),
        (field::TRACEPARENT, traceparent.as_bytes().to_vec()),
        (field::TRACESTATE, tracestate.as_bytes().to_vec()),
        (field::EVENT, event.encode_to_vec()),
    ]
}

/// The `XADD` (with an id of `*`) that appends `event` to `stream`, carrying
/// the trace context `traceparent`/`tracestate` (the publish span's, so the
/// relay's work hangs below the publish in the trace).
pub fn xadd(stream: &str, event: &PostEvent, traceparent: &str, tracestate: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (name, value) in fields_of(event, traceparent, tracestate) {
        cmd.arg(name).arg(value);
    }
    cmd
}

/// Fields of one stream entry, raw.
pub type Fields = HashMap<String, Vec<u8>>;

/// One entry read from a stream (an event entry, or a dead letter).
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
    /// The event's post id is not one.
    #[error("event post_id {0}")]
    PostId(#[from] postmesh_proto::InvalidPostId),
}

impl Entry {
    /// The entry `event` would have on `stream` under `id`, for an event read
    /// from the event log instead (the relay's catch-up): the same fields, so
    /// it logs, traces and dead-letters (and replays) like one from the stream.
    pub fn of_event(stream: &str, id: String, event: &PostEvent) -> Self {
        Self {
            stream: stream.to_owned(),
            id,
            fields: fields_of(event, &event.traceparent, &event.tracestate)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        }
    }

    /// Decodes and sanity-checks the event.
    pub fn event(&self) -> Result<PostEvent, DecodeError> {
        let bytes = self.fields.get(field::EVENT).ok_or(DecodeError::MissingEvent)?;
        let event = PostEvent::decode(bytes.as_slice())?;
        postmesh_proto::PostId::new(event.post_id)?;
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

    /// The action the entry's `event_type` field records, if it names one.
    pub fn action(&self) -> Option<Action> {
        EventType::from_event_name(&self.text(field::EVENT_TYPE)).and_then(Action::of)
    }
}

/// Parses an XREAD/XREADGROUP/XAUTOCLAIM/XRANGE entry list of `stream`.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use postmesh_proto::v1::Post;

    use super::*;

    fn event() -> PostEvent {
        PostEvent {
            position: 7,
            post_id: 3,
            version: 2,
            event_type: EventType::PostUpdated as i32,
            post: Some(Post {
                post_id: 3,
                version: 2,
                title: "t".into(),
                ..Post::default()
            }),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ..PostEvent::default()
        }
    }

    /// The entry as Redis would hand it back: the XADD's arguments after the
    /// stream and the id, in pairs.
    fn written(cmd: &redis::Cmd) -> Vec<(String, Vec<u8>)> {
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                redis::Arg::Cursor => Vec::new(),
            })
            .collect();
        assert_eq!(args[0], b"XADD");
        assert_eq!(args[2], b"*");
        args[3..]
            .chunks(2)
            .map(|pair| (String::from_utf8(pair[0].clone()).unwrap(), pair[1].clone()))
            .collect()
    }

    #[test]
    fn the_entry_carries_these_bytes_in_this_order() {
        let event = event();
        let fields = written(&xadd("s", &event, &event.traceparent, ""));
        let expected: Vec<(String, Vec<u8>)> = [
            ("position", b"7".to_vec()),
            ("post_id", b"3".to_vec()),
            ("version", b"2".to_vec()),
            ("event_type", b"PostUpdated".to_vec()),
            ("traceparent", event.traceparent.as_bytes().to_vec()),
            ("tracestate", Vec::new()),
            ("event", event.encode_to_vec()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn what_xadd_writes_decodes_to_the_same_event() {
        let event = event();
        let entry = Entry {
            stream: "s".into(),
            id: "1-0".into(),
            fields: written(&xadd("s", &event, "tp", "ts")).into_iter().collect(),
        };
        assert_eq!(entry.event().unwrap(), event);
        assert_eq!(entry.action(), Some(Action::Update));
        assert_eq!(entry.text(field::POST_ID), "3");
        assert_eq!(entry.text(field::TRACEPARENT), "tp");
        assert_eq!(entry.text(field::TRACESTATE), "ts");
    }

    #[test]
    fn an_event_read_from_the_log_makes_the_entry_xadd_writes() {
        let mut event = event();
        event.traceparent = "tp".into();
        let entry = Entry::of_event("s", "log-7".into(), &event);
        let written: Fields = written(&xadd("s", &event, "tp", "")).into_iter().collect();
        assert_eq!(entry.fields, written);
        assert_eq!(entry.event().unwrap(), event);
    }

    #[test]
    fn broken_entries_say_why() {
        let mut entry = Entry {
            stream: "s".into(),
            id: "1-0".into(),
            fields: Fields::new(),
        };
        assert!(matches!(entry.event(), Err(DecodeError::MissingEvent)));
        assert_eq!(entry.action(), None);
        entry
            .fields
            .insert(field::EVENT.into(), b"\xff\xfe not protobuf".to_vec());
        assert!(matches!(entry.event(), Err(DecodeError::Protobuf(_))));
        let mut incomplete = event();
        incomplete.post = None;
        entry.fields.insert(field::EVENT.into(), incomplete.encode_to_vec());
        assert!(matches!(entry.event(), Err(DecodeError::Incomplete(_))));
    }
}
