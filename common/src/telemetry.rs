//! Logs, traces and metrics for every binary.
//!
//! - Logs: JSON lines (tracing-subscriber's: `timestamp`, `level`, the
//!   event's fields with its `message` at the top level, `target`, the
//!   current `span` with its fields, and the `trace_id` and `span_id` of that
//!   span when traces are exported), or a readable format when stderr is a
//!   terminal (or `LOG_FORMAT=pretty`).
//! - Traces: `tracing` spans become OpenTelemetry spans exported over
//!   OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
//!   variable) is set. The standard `OTEL_*` variables apply: service name,
//!   resource attributes, sampler. W3C trace context is the propagator.
//!   Without an endpoint no span is created at all (they would cost CPU on
//!   every call and go nowhere): [`traces_exported`] is false, span macros
//!   are disabled at their call sites, and the services carry the caller's
//!   `traceparent` through unchanged so a downstream service that exports
//!   still continues the trace. Log lines then have no `span`, `trace_id`
//!   or `span_id` from a span.
//! - Metrics: OpenTelemetry instruments, readable in Prometheus text format on
//!   the service's metrics port, and pushed over OTLP when an endpoint is set.

use std::{
    fmt,
    io::IsTerminal,
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
};

use clap::ValueEnum;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::{
    metrics::SdkMeterProvider, propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource,
};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    fmt::{
        format::{Format, Json, JsonFields, Writer},
        FmtContext, FormatEvent, FormatFields, MakeWriter,
    },
    prelude::*,
    registry::LookupSpan,
    EnvFilter,
};

use crate::shutdown::Shutdown;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Keeps the exporters alive; flushes them on `shutdown`.
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    registry: prometheus::Registry,
}

/// Set once the subscriber installed by [`init`] exports spans.
static TRACES_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (an OTLP trace endpoint is configured
/// and [`init`] installed the OpenTelemetry layer). When false, spans are
/// disabled: skip the work that only feeds them (trace-context extraction and
/// injection, span names) and pass the caller's `traceparent` on as is.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(Ordering::Relaxed)
}

fn otlp_configured(signal: &str) -> bool {
    let set = |name: &str| std::env::var(name).map(|v| !v.trim().is_empty()).unwrap_or(false);
    set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))
}

fn resource(default_service: &str) -> Resource {
    let builder = Resource::builder();
    // OTEL_SERVICE_NAME wins (the env detector reads it); ours is the fallback.
    if std::env::var("OTEL_SERVICE_NAME").map(|v| v.is_empty()).unwrap_or(true) {
        builder.with_service_name(default_service.to_owned()).build()
    } else {
        builder.build()
    }
}

/// Installs logging, tracing and metrics for `service`. Levels come from
/// `RUST_LOG` (default `info`). Safe to call more than once in a process
/// (tests start several services): the first call's subscriber stays.
pub fn init(service: &str, format: LogFormat) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = resource(service);

    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut export_error = None;
    let mut export_traces = false;
    if otlp_configured("TRACES") {
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                tracer_builder = tracer_builder.with_batch_exporter(exporter);
                export_traces = true;
            }
            Err(error) => export_error = Some(format!("OTLP trace exporter disabled: {error}")),
        }
    }
    let tracer = tracer_builder.build();

    let registry = prometheus::Registry::new();
    let mut meter_builder = SdkMeterProvider::builder().with_resource(resource);
    match opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
    {
        Ok(reader) => meter_builder = meter_builder.with_reader(reader),
        Err(error) => export_error = Some(format!("Prometheus exporter disabled: {error}")),
    }
    if otlp_configured("METRICS") {
        match opentelemetry_otlp::MetricExporter::builder().with_tonic().build() {
            Ok(exporter) => meter_builder = meter_builder.with_periodic_exporter(exporter),
            Err(error) => export_error = Some(format!("OTLP metric exporter disabled: {error}")),
        }
    }
    let meter = meter_builder.build();
    opentelemetry::global::set_meter_provider(meter.clone());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // With nowhere to export spans to, neither the OpenTelemetry layer nor the
    // spans themselves are worth their cost: a metadata-only filter turns every
    // span call site off for good (events, the log lines, stay on).
    let otel = export_traces.then(|| tracing_opentelemetry::layer().with_tracer(tracer.tracer("postmesh")));
    let no_spans = (!export_traces).then(|| tracing_subscriber::filter::filter_fn(|metadata| !metadata.is_span()));
    let registry_layers = tracing_subscriber::registry().with(filter).with(no_spans).with(otel);
    let installed = if json {
        registry_layers.with(json_lines(std::io::stderr)).try_init()
    } else {
        registry_layers
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    if installed.is_ok() {
        opentelemetry::global::set_tracer_provider(tracer.clone());
        TRACES_EXPORTED.store(export_traces, Ordering::Relaxed);
    }
    if let Some(error) = export_error {
        tracing::warn!(%error, "telemetry export degraded");
    }
    Telemetry {
        tracer,
        meter,
        registry,
    }
}

impl Telemetry {
    /// Prometheus text of every metric recorded so far.
    pub fn prometheus_text(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_to_string(&self.registry.gather()).unwrap_or_default()
    }

    /// Serves `GET /metrics` on `addr` until shutdown (other paths: 404).
    pub async fn serve_metrics(
        self: std::sync::Arc<Self>,
        addr: SocketAddr,
        mut shutdown: Shutdown,
    ) -> std::io::Result<SocketAddr> {
        use axum::{http::header::CONTENT_TYPE, routing::get, Router};
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let metrics = Router::new().route(
            "/metrics",
            get(move || async move { ([(CONTENT_TYPE, PROMETHEUS_TEXT)], self.prometheus_text()) }),
        );
        tokio::spawn(async move {
            let served = axum::serve(listener, metrics)
                .with_graceful_shutdown(async move { shutdown.wait().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%bound, %error, "metrics endpoint failed");
            }
        });
        Ok(bound)
    }

    /// Flushes spans and metrics still buffered.
    pub fn shutdown(&self) {
        let _ = self.tracer.force_flush();
        let _ = self.meter.force_flush();
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The JSON log lines, written to `writer`: the event's fields at the top
/// level, the current span, no span list, and the OpenTelemetry ids.
pub fn json_lines<S, W>(writer: W) -> tracing_subscriber::fmt::Layer<S, JsonFields, WithTraceIds<Format<Json>>, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    let format = tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_span_list(false);
    tracing_subscriber::fmt::layer()
        .fmt_fields(JsonFields::new())
        .event_format(WithTraceIds(format))
        .with_writer(writer)
}

/// tracing-subscriber's JSON lines, plus the OpenTelemetry `trace_id` and
/// `span_id` of the span an event happened in (when there is one): the
/// library formats the line, this adds the two ids before its closing brace.
/// The ids are read through the global subscriber, the one [`init`] installs.
#[derive(Debug)]
pub struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let ids = ctx.lookup_current().and_then(|_| {
            let context = tracing::Span::current().context();
            let span = context.span().span_context().clone();
            span.is_valid().then(|| (span.trace_id(), span.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let object = line.trim_end().strip_suffix('}').ok_or(fmt::Error)?;
        writeln!(writer, r#"{object},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#)
    }
}

/// `init`, then the metrics endpoint on `metrics_addr` (when given). A port
/// that cannot be bound is logged, not fatal: metrics are auxiliary and a
/// service must not crash-loop over them.
pub async fn start(
    service: &str,
    format: LogFormat,
    metrics_addr: Option<SocketAddr>,
    shutdown: Shutdown,
) -> std::sync::Arc<Telemetry> {
    let telemetry = std::sync::Arc::new(init(service, format));
    if let Some(addr) = metrics_addr {
        match telemetry.clone().serve_metrics(addr, shutdown).await {
            Ok(bound) => tracing::info!(%bound, "Prometheus metrics served"),
            Err(error) => tracing::warn!(%addr, %error, "cannot serve metrics"),
        }
    }
    telemetry
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_put_the_event_fields_at_the_top_level() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(json_lines(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", rpc.method = "CreatePost");
            let _entered = span.enter();
            tracing::info!(domain = "posts", post_id = 7_i64, replayed = true, "command applied");
        });
        let line = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(line.ends_with('\n') && line.lines().count() == 1, "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["message"], "command applied");
        assert_eq!(value["domain"], "posts");
        assert_eq!(value["post_id"], 7);
        assert!(line.contains(r#""replayed":true"#), "{line}");
        assert_eq!(value["span"]["name"], "rpc");
        assert!(value.get("trace_id").is_none(), "no OpenTelemetry span, no ids");
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: metrics\r\nconnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn metrics_are_served_on_their_path_only() {
        let telemetry = Arc::new(init("metrics-test", LogFormat::Json));
        opentelemetry::global::meter("postmesh")
            .u64_counter("test.metrics.served")
            .build()
            .add(1, &[]);
        let (trigger, shutdown) = crate::shutdown::channel();
        let addr = telemetry
            .serve_metrics(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown)
            .await
            .unwrap();
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains(PROMETHEUS_TEXT), "{metrics}");
        assert!(metrics.contains("test_metrics_served"), "{metrics}");
        let elsewhere = get(addr, "/").await;
        assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
        trigger.trigger();
    }
}
