//! JSON log lines carry the OpenTelemetry ids of their span. Its own test
//! process: the ids are read through the global subscriber, installed once.

use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::prelude::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn json_lines_carry_the_trace_and_span_ids_of_their_span() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let tracer = SdkTracerProvider::builder().build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer.tracer("test")))
        .with(postmesh_common::telemetry::json_lines(move || writer.clone()))
        .try_init()
        .expect("the only subscriber of this process");
    {
        let span = tracing::info_span!("rpc");
        let _entered = span.enter();
        tracing::info!(domain = "posts", "command applied");
    }
    let written = buffer.0.lock().expect("not poisoned").clone();
    let line = String::from_utf8(written).expect("UTF-8");
    let value: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(value["message"], "command applied");
    let hex = |key: &str, len: usize| {
        let id = value[key].as_str().unwrap_or_default();
        id.len() == len && id.bytes().all(|b| b.is_ascii_hexdigit())
    };
    assert!(hex("trace_id", 32) && hex("span_id", 16), "{line}");
}
