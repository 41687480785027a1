//! gRPC adapters: translate requests into domain commands and store calls.

mod command;
mod event_store;

pub use command::CommandService;
pub use event_store::EventStoreService;

use tonic::metadata::MetadataMap;

use crate::store::EventMeta;

/// Reads the W3C trace context a client sent, so the stored event can be
/// joined to the caller's trace.
pub fn event_meta(metadata: &MetadataMap) -> EventMeta {
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
        actor: String::new(),
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
