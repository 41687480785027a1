//! The `posts.v1` contract: generated message types, clients and servers for
//! `PostCommand`, `EventStore` and `PostQuery`, plus the encoded file
//! descriptor set that every server hands to gRPC reflection.

/// Generated code for package `posts.v1`.
pub mod posts {
    /// Version 1 of the posts API.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("posts.v1");
    }
}

pub use posts::v1;

/// Encoded `FileDescriptorSet` of `posts.v1`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("posts_v1_descriptor");

impl v1::EventType {
    /// The event type name stored in the event store and on stream entries.
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Unspecified => "Unspecified",
            Self::PostCreated => "PostCreated",
            Self::PostUpdated => "PostUpdated",
            Self::PostDeleted => "PostDeleted",
        }
    }

    /// Parses a stored event type name.
    pub fn from_event_name(name: &str) -> Option<Self> {
        match name {
            "PostCreated" => Some(Self::PostCreated),
            "PostUpdated" => Some(Self::PostUpdated),
            "PostDeleted" => Some(Self::PostDeleted),
            _ => None,
        }
    }

    /// The action word used for per-action streams and logs.
    pub fn action(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::PostCreated => "create",
            Self::PostUpdated => "update",
            Self::PostDeleted => "delete",
        }
    }
}
