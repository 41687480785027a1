//! gRPC adapters: translate requests into domain commands and store calls.

mod command;
mod event_store;

pub use command::CommandService;
pub use event_store::EventStoreService;

use postmesh_common::auth::Principal;
use tonic::{metadata::MetadataMap, Extensions};

use crate::store::EventMeta;

/// The trace context to store with the event. The server span continues the
/// caller's trace, so storing its context makes the publish and the relay its
/// children. Without a trace exporter (no spans then) or a tracing pipeline
/// (in-process tests) it is the `traceparent` the caller sent, so a relay that
/// exports still continues the caller's trace. The actor is who sent the command: the
/// verified token's subject (empty when tokens are not checked).
pub fn event_meta(metadata: &MetadataMap, extensions: &Extensions) -> EventMeta {
    let actor = extensions
        .get::<Principal>()
        .map(|principal| principal.subject.clone())
        .unwrap_or_default();
    if postmesh_common::telemetry::traces_exported() {
        let (traceparent, tracestate) = postmesh_common::trace::traceparent_of(&tracing::Span::current());
        if valid_traceparent(&traceparent) {
            return EventMeta {
                traceparent,
                tracestate,
                actor,
            };
        }
    }
    let header = |name: &str| {
        metadata
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect::<String>()
    };
    let traceparent = header("traceparent");
    EventMeta {
        traceparent: if valid_traceparent(&traceparent) {
            traceparent
        } else {
            String::new()
        },
        tracestate: header("tracestate"),
        actor,
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, the only version we store.
fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    #[test]
    fn traceparent_shape_is_checked() {
        assert!(super::valid_traceparent(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        assert!(!super::valid_traceparent("00-xyz-b7ad6b7169203331-01"));
        assert!(!super::valid_traceparent(""));
    }
}
