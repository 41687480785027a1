//! The `posts.v1` contract: generated message types, clients and servers for
//! `PostCommand`, `EventStore` and `PostQuery`, plus the encoded file
//! descriptor set that every server hands to gRPC reflection, and
//! [`PostId`], the id every crate checks the same way. The descriptor set
//! also carries the `google.api.http` annotations (google/api/*.proto,
//! vendored under proto/): the HTTP/JSON routes postmesh-gateway serves.

mod post_id;

pub use post_id::{InvalidPostId, PostId};

/// Generated code for package `posts.v1`.
pub mod posts {
    /// Version 1 of the posts API.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("posts.v1");
    }
}

pub use posts::v1;

/// Response metadata (initial headers) of `EventStore.ReadAll`: the log's
/// head when the read began, as `GetHead` gives it. Every position at or
/// below it is committed, so a reader that got this far from its cursor has
/// read the log completely up to it.
pub const COMPLETE_THROUGH_METADATA: &str = "postmesh-complete-through";

/// The OpenAPI (Swagger 2.0) documents of the HTTP/JSON API, generated from
/// the `google.api.http` annotations by scripts/gen-openapi.sh (committed;
/// CI checks they match the protos).
pub mod openapi {
    /// `PostCommand` and `EventStore`, as command-svc serves them.
    pub const COMMAND: &str = include_str!("../openapi/command.swagger.json");
    /// `PostQuery`, as query-svc serves it.
    pub const QUERY: &str = include_str!("../openapi/query.swagger.json");
}

/// Encoded `FileDescriptorSet` for tonic-reflection: `posts.v1`, plus
/// `google.rpc.Status` and the error details (`google.rpc.BadRequest`, ...)
/// that the servers put in `grpc-status-details-bin`, so a reflection client
/// such as grpcurl decodes the details of an error without proto files.
pub static FILE_DESCRIPTOR_SET: &[u8] = &WITH_ERROR_DETAILS;

const POSTS_V1: &[u8] = tonic::include_file_descriptor_set!("posts_v1_descriptor");

// Protobuf messages concatenate as a merge and `file` is a repeated field, so
// the two encoded sets one after the other are one set holding both.
static WITH_ERROR_DETAILS: [u8; POSTS_V1.len() + tonic_types::pb::FILE_DESCRIPTOR_SET.len()] =
    concat_bytes(POSTS_V1, tonic_types::pb::FILE_DESCRIPTOR_SET);

const fn concat_bytes<const N: usize>(first: &[u8], second: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < first.len() {
        out[i] = first[i];
        i += 1;
    }
    let mut j = 0;
    while j < second.len() {
        out[i + j] = second[j];
        j += 1;
    }
    out
}

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
}
