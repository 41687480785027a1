//! The outermost layer of every gRPC server: one server span per call, named
//! and attributed per the OpenTelemetry RPC conventions and continuing the
//! caller's W3C trace context, plus call count and latency metrics by method
//! and status.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::{
    metrics::{Counter, Histogram},
    KeyValue,
};
use tower::{Layer, Service};
use tracing::Instrument;

/// Layer producing [`RpcTrace`].
#[derive(Clone)]
pub struct RpcTraceLayer {
    duration: Histogram<f64>,
    calls: Counter<u64>,
}

impl std::fmt::Debug for RpcTraceLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcTraceLayer")
    }
}

impl Default for RpcTraceLayer {
    fn default() -> Self {
        let meter = opentelemetry::global::meter("postmesh");
        Self {
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_description("Duration of gRPC calls until the response headers")
                .with_boundaries(vec![
                    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                ])
                .build(),
            calls: meter
                .u64_counter("rpc.server.calls")
                .with_description("gRPC calls by method and status")
                .build(),
        }
    }
}

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service produced by [`RpcTraceLayer`].
#[derive(Clone)]
pub struct RpcTrace<S> {
    inner: S,
    layer: RpcTraceLayer,
}

impl<S> std::fmt::Debug for RpcTrace<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcTrace")
    }
}

/// Health checks and reflection are polled constantly by probes and tools;
/// tracing them would bury the traces that matter. They are still counted.
fn is_infrastructure(service: &str) -> bool {
    service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.")
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
        let (service, method) = (service.to_owned(), method.to_owned());
        // Without a trace exporter there are no spans: skip extracting the parent too.
        let span = if is_infrastructure(&service) || !crate::telemetry::traces_exported() {
            tracing::Span::none()
        } else {
            let span = tracing::info_span!(
                "rpc",
                otel.name = %path,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
            );
            crate::trace::set_parent(&span, crate::trace::from_headers(request.headers()));
            span
        };
        let started = Instant::now();
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let layer = self.layer.clone();
        Box::pin(
            async move {
                let result = response.await;
                // Unary errors and refusals come as trailers-only responses with the
                // status in the headers; a missing header means the call went on to
                // send messages, which we count as OK.
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0),
                    Err(_) => 2,
                };
                let span = tracing::Span::current();
                span.record("rpc.grpc.status_code", code);
                if code != 0 {
                    span.record("otel.status_code", "ERROR");
                }
                let attributes = [
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", service),
                    KeyValue::new("rpc.method", method),
                    KeyValue::new("rpc.grpc.status_code", code),
                ];
                layer
                    .duration
                    .record(started.elapsed().as_secs_f64() * 1000.0, &attributes);
                layer.calls.add(1, &attributes);
                result
            }
            .instrument(span),
        )
    }
}
