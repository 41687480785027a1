//! Logs, traces and metrics for every binary.
//!
//! - Logs: JSON lines (with the `trace_id` and `span_id` of their span when
//!   traces are exported), or a readable format when stderr is a terminal
//!   (or `LOG_FORMAT=pretty`).
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
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
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
        registry_layers
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .with_writer(std::io::stderr),
            )
            .try_init()
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

    /// Serves `GET /metrics` (any path, in fact) on `addr` until shutdown.
    /// A minimal HTTP/1.1 responder: Prometheus scrapers need nothing more.
    pub async fn serve_metrics(
        self: std::sync::Arc<Self>,
        addr: SocketAddr,
        mut shutdown: Shutdown,
    ) -> std::io::Result<SocketAddr> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = shutdown.wait() => return,
                };
                let telemetry = self.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 2048];
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), socket.read(&mut request)).await;
                    let body = telemetry.prometheus_text();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
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

/// One JSON object per event: time, level, target, message and fields, plus
/// the OpenTelemetry `trace_id`/`span_id` of the span it happened in.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut map = serde_json::Map::new();
        map.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        map.insert("level".into(), event.metadata().level().as_str().into());
        map.insert("target".into(), event.metadata().target().into());
        event.record(&mut Fields(&mut map));
        if let Some(span) = ctx.lookup_current() {
            map.insert("span".into(), span.name().into());
            let context = tracing::Span::current().context();
            let span_context = context.span().span_context().clone();
            if span_context.is_valid() {
                map.insert("trace_id".into(), span_context.trace_id().to_string().into());
                map.insert("span_id".into(), span_context.span_id().to_string().into());
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(map))
    }
}

struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
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
