//! What the read model holds, whatever stores it: the outcome of applying an
//! event, a post at one version, and the checks every event passes before
//! any implementation stores it.

use postmesh_proto::{
    v1::{EventType, Post, PostEvent},
    PostId,
};
use prost_types::Timestamp;

use crate::StoreError;

/// What applying an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The event's version is now the post's latest state.
    Applied,
    /// The store already held this or a newer version; the post's latest
    /// state is unchanged (its version is stored, so history stays complete).
    Stale,
}

/// A post at one version together with the kind of change that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct PostVersion {
    /// The post's full state at this version.
    pub post: Post,
    /// What kind of change produced this version.
    pub event_type: EventType,
    /// The event's position in the event log (0 for a version stored before
    /// positions were kept): what [`count_positions`](crate::ReadModelStore::count_positions)
    /// counts.
    pub position: i64,
}

/// Milliseconds since the epoch: the precision the read model keeps.
pub fn timestamp_to_millis(ts: &Timestamp) -> i64 {
    let nanos_as_millis = i64::from(ts.nanos.clamp(0, 999_999_999)) / 1_000_000;
    ts.seconds.saturating_mul(1000).saturating_add(nanos_as_millis)
}

/// The inverse of [`timestamp_to_millis`].
pub fn millis_to_timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        // rem_euclid keeps this in 0..1000, so the product fits an i32.
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// An event checked and flattened into the post as it stands at the event's
/// version: what every implementation stores, once as the version and, when
/// it is the newest, as the post's latest state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    /// The event's position in the event log (0 when the event carries none,
    /// as in tests that build events by hand).
    pub position: i64,
    /// The post.
    pub post_id: i64,
    /// Its version after the event.
    pub version: i64,
    /// The change (never `Unspecified`).
    pub event_type: EventType,
    /// Title at this version.
    pub title: String,
    /// Content at this version.
    pub content: String,
    /// Author at this version.
    pub author_name: String,
    /// When the post was created (milliseconds since the epoch).
    pub created_at_ms: i64,
    /// When this change happened: the event's time, never the applier's.
    pub updated_at_ms: i64,
    /// Deleted at this version.
    pub deleted: bool,
}

impl VersionRecord {
    /// Checks an event and flattens it. An event that fails here fails the
    /// same way on every store and at every retry
    /// ([`StoreError::InvalidEvent`]): a missing post state, a non-positive
    /// id or version, an unspecified event type, missing times.
    pub fn from_event(event: &PostEvent) -> Result<Self, StoreError> {
        let invalid = |why: String| StoreError::InvalidEvent(why);
        if let Err(bad) = PostId::new(event.post_id) {
            return Err(invalid(format!("post_id {bad}")));
        }
        if event.version <= 0 {
            return Err(invalid(format!(
                "post {}: version must be > 0, got {}",
                event.post_id, event.version
            )));
        }
        let event_type = EventType::try_from(event.event_type)
            .ok()
            .filter(|t| *t != EventType::Unspecified)
            .ok_or_else(|| {
                invalid(format!(
                    "post {} version {}: unknown event type {}",
                    event.post_id, event.version, event.event_type
                ))
            })?;
        let post = event.post.as_ref().ok_or_else(|| {
            invalid(format!(
                "post {} version {}: the event carries no post state",
                event.post_id, event.version
            ))
        })?;
        if post.post_id != 0 && post.post_id != event.post_id {
            return Err(invalid(format!(
                "event is for post {} but carries the state of post {}",
                event.post_id, post.post_id
            )));
        }
        // created_at is the PostCreated time, which every event carries in its
        // post state; a version-1 event may rely on occurred_at alone.
        let created_at = post
            .created_at
            .as_ref()
            .or(event.occurred_at.as_ref().filter(|_| event.version == 1))
            .ok_or_else(|| {
                invalid(format!(
                    "post {} version {}: created_at is missing",
                    event.post_id, event.version
                ))
            })?;
        // updated_at is when this change happened: the event's time, never ours.
        let updated_at = event.occurred_at.as_ref().or(post.updated_at.as_ref()).ok_or_else(|| {
            invalid(format!(
                "post {} version {}: occurred_at is missing",
                event.post_id, event.version
            ))
        })?;
        if event.position < 0 {
            return Err(invalid(format!(
                "post {} version {}: position must be >= 0, got {}",
                event.post_id, event.version, event.position
            )));
        }
        Ok(Self {
            position: event.position,
            post_id: event.post_id,
            version: event.version,
            event_type,
            title: post.title.clone(),
            content: post.content.clone(),
            author_name: post.author_name.clone(),
            created_at_ms: timestamp_to_millis(created_at),
            updated_at_ms: timestamp_to_millis(updated_at),
            deleted: post.deleted || event_type == EventType::PostDeleted,
        })
    }

    /// The post's state at this version, in protobuf form.
    pub fn to_post(&self) -> Post {
        Post {
            post_id: self.post_id,
            version: self.version,
            title: self.title.clone(),
            content: self.content.clone(),
            author_name: self.author_name.clone(),
            created_at: Some(millis_to_timestamp(self.created_at_ms)),
            updated_at: Some(millis_to_timestamp(self.updated_at_ms)),
            deleted: self.deleted,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(version: i64, event_type: EventType) -> PostEvent {
        PostEvent {
            position: version,
            post_id: 7,
            version,
            event_type: event_type as i32,
            post: Some(Post {
                post_id: 7,
                version,
                title: "t".into(),
                content: "c".into(),
                author_name: "a".into(),
                created_at: Some(Timestamp {
                    seconds: 100,
                    nanos: 123_456_789,
                }),
                updated_at: Some(Timestamp { seconds: 200, nanos: 0 }),
                deleted: false,
            }),
            occurred_at: Some(Timestamp {
                seconds: 300,
                nanos: 5_000_000,
            }),
            ..PostEvent::default()
        }
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        for millis in [0, 1, 999, 1000, 1_700_000_000_123, -1, -1001] {
            assert_eq!(timestamp_to_millis(&millis_to_timestamp(millis)), millis);
        }
        let ts = Timestamp {
            seconds: 1,
            nanos: 999_999_999,
        };
        assert_eq!(timestamp_to_millis(&ts), 1999);
    }

    #[test]
    fn updated_at_is_the_event_time() {
        let record = VersionRecord::from_event(&event(2, EventType::PostUpdated)).unwrap();
        assert_eq!(record.updated_at_ms, 300_005);
        assert_eq!(record.created_at_ms, 100_123);
        assert_eq!(record.event_type, EventType::PostUpdated);
    }

    #[test]
    fn delete_events_mark_the_post_deleted() {
        let record = VersionRecord::from_event(&event(3, EventType::PostDeleted)).unwrap();
        assert!(record.deleted);
    }

    #[test]
    fn malformed_events_are_rejected() {
        let mut bad = event(1, EventType::PostCreated);
        bad.post = None;
        assert!(matches!(
            VersionRecord::from_event(&bad),
            Err(StoreError::InvalidEvent(_))
        ));
        let bad = event(1, EventType::Unspecified);
        assert!(matches!(
            VersionRecord::from_event(&bad),
            Err(StoreError::InvalidEvent(_))
        ));
        let mut bad = event(0, EventType::PostCreated);
        bad.version = 0;
        assert!(matches!(
            VersionRecord::from_event(&bad),
            Err(StoreError::InvalidEvent(_))
        ));
        let mut bad = event(1, EventType::PostCreated);
        if let Some(post) = bad.post.as_mut() {
            post.post_id = 8;
        }
        assert!(matches!(
            VersionRecord::from_event(&bad),
            Err(StoreError::InvalidEvent(_))
        ));
    }
}
