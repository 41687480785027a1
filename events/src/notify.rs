//! The notification event-relay publishes on the notify channel (Redis
//! pub/sub, [`DEFAULT_CHANNEL`] unless configured) and query-svc receives:
//! it invalidates query-svc's post cache, wakes GetPost's min_version waits
//! and feeds WatchPosts.
//!
//! Payloads are JSON, exactly these bytes (other languages may read them):
//! - `{"post_id":N,"version":V}`: post N reached version V in the read model,
//!   published after the write ([`Notification::Applied`]);
//! - `{"reset":true}`: the read model was replaced wholesale by a rebuild;
//!   anything read from it before may be gone or older now
//!   ([`Notification::Reset`]).

use postmesh_proto::PostId;
use serde::{Deserialize, Serialize};

/// The channel both ends use unless told otherwise (`NOTIFY_CHANNEL`).
pub const DEFAULT_CHANNEL: &str = "posts.applied";

/// A post reached a version in the read model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The post that changed.
    pub post_id: i64,
    /// Its version after the change.
    pub version: i64,
}

/// Anything published on the notify channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// A post reached a version.
    Applied(Change),
    /// The read model was replaced wholesale (`event-relay rebuild`).
    Reset,
}

/// The reset payload's shape.
#[derive(Serialize, Deserialize)]
struct Reset {
    reset: bool,
}

impl Notification {
    /// The payload to publish.
    pub fn encode(&self) -> String {
        let encoded = match self {
            Self::Applied(change) => serde_json::to_string(change),
            Self::Reset => serde_json::to_string(&Reset { reset: true }),
        };
        // Serialising two integers or a bool cannot fail.
        encoded.unwrap_or_default()
    }

    /// Parses a payload: a change with a positive post id and version, or
    /// `{"reset":true}`; `None` for anything else (including a change with a
    /// zero or negative id or version, and `{"reset":false}`).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        if let Some(change) = serde_json::from_slice::<Change>(payload)
            .ok()
            .filter(|c| PostId::new(c.post_id).is_ok() && c.version > 0)
        {
            return Some(Self::Applied(change));
        }
        serde_json::from_slice::<Reset>(payload)
            .ok()
            .filter(|r| r.reset)
            .map(|_| Self::Reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payloads_are_these_bytes() {
        let applied = Notification::Applied(Change {
            post_id: 123,
            version: 4,
        });
        assert_eq!(applied.encode(), r#"{"post_id":123,"version":4}"#);
        assert_eq!(Notification::Reset.encode(), r#"{"reset":true}"#);
        for notification in [applied, Notification::Reset] {
            assert_eq!(
                Notification::parse(notification.encode().as_bytes()),
                Some(notification)
            );
        }
    }

    #[test]
    fn notifications_parse_strictly() {
        assert_eq!(
            Notification::parse(br#"{"post_id":3,"version":2}"#),
            Some(Notification::Applied(Change { post_id: 3, version: 2 }))
        );
        assert_eq!(Notification::parse(br#"{"reset":true}"#), Some(Notification::Reset));
        assert_eq!(Notification::parse(br#"{"post_id":0,"version":4}"#), None);
        assert_eq!(Notification::parse(br#"{"post_id":-1,"version":2}"#), None);
        assert_eq!(Notification::parse(br#"{"post_id":"1","version":4}"#), None);
        assert_eq!(Notification::parse(br#"{"reset":false}"#), None);
        assert_eq!(Notification::parse(b"not json"), None);
        assert_eq!(Notification::parse(b"[]"), None);
    }
}
