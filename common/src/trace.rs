//! W3C trace-context carriers: gRPC/HTTP headers, and the plain
//! `traceparent`/`tracestate` strings stored with events and stream entries.

use std::collections::HashMap;

use opentelemetry::{
    propagation::{Extractor, Injector},
    Context,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Map<'a>(&'a mut HashMap<String, String>);

impl Injector for Map<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for Map<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The remote parent a caller sent in request headers (empty when none).
pub fn from_headers(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)))
}

/// A remote parent from stored `traceparent`/`tracestate` strings.
pub fn from_traceparent(traceparent: &str, tracestate: &str) -> Context {
    let mut map = HashMap::new();
    map.insert("traceparent".to_owned(), traceparent.to_owned());
    if !tracestate.is_empty() {
        map.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Map(&mut map)))
}

/// `(traceparent, tracestate)` of `span`, or empty strings when it is not recorded.
pub fn traceparent_of(span: &tracing::Span) -> (String, String) {
    let mut map = HashMap::new();
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Map(&mut map)));
    (
        map.remove("traceparent").unwrap_or_default(),
        map.remove("tracestate").unwrap_or_default(),
    )
}

/// Makes `span` a child of the given remote parent, when there is one.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    use opentelemetry::trace::TraceContextExt;
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}
