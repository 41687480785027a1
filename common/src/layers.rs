//! The tower stack in front of every gRPC server: a per-request timeout, a
//! global concurrency limit, and load shedding once that limit is reached, so
//! overload is answered at once with `RESOURCE_EXHAUSTED` instead of queueing
//! without bound. HTTP/JSON and gRPC-Web come in right inside the connection
//! tracker (postmesh-gateway), so a transcoded call meets everything a gRPC
//! call meets: spans and metrics, shedding, limits, auth, handlers.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use postmesh_gateway::GatewayLayer;
use tonic::transport::Server;
use tower::{
    layer::util::{Identity, Stack},
    limit::GlobalConcurrencyLimitLayer,
    load_shed::{error::Overloaded, LoadShedLayer},
    BoxError, Layer, Service, ServiceBuilder,
};

use crate::{
    config::nonzero,
    limits::ServerLimits,
    limits_status::{DeadlineBody, LimitsStatusLayer},
    rpc::RpcTraceLayer,
    serve::ConnTrackLayer,
};

/// The connection tracker (outermost), the HTTP gateway, RPC spans and
/// metrics, and load shedding.
pub type ServerLayers = Stack<ShedLayers, Stack<RpcTraceLayer, Stack<GatewayLayer, Stack<ConnTrackLayer, Identity>>>>;

/// A tonic server builder with the timeout, HTTP/2 limits, the connection
/// tracker (for idle timeouts), the RPC span and metrics layer (so refused
/// calls are counted too) and load shedding applied; `http` answers what is
/// not gRPC (HTTP/1.1 is accepted for it). Serve it with
/// [`crate::serve::incoming`], which enforces the connection limits.
pub fn server(limits: &ServerLimits, http: GatewayLayer) -> Server<Stack<LimitsStatusLayer, ServerLayers>> {
    let mut server = Server::builder()
        .accept_http1(true)
        .timeout(limits.request_timeout())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes.max(1024))
        .http2_keepalive_interval(nonzero(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(nonzero(limits.http2_keepalive_timeout));
    if let Some(age) = nonzero(limits.max_connection_age) {
        server = server
            .max_connection_age(age)
            .max_connection_age_grace(limits.request_timeout());
    }
    server
        .layer(ConnTrackLayer)
        .layer(http)
        .layer(RpcTraceLayer::default())
        .layer(shed(limits.max_concurrent_requests))
        // Innermost: the client's deadline ends streams too, and an oversized
        // request is RESOURCE_EXHAUSTED, as with grpc-go/java; see limits_status.
        .layer(LimitsStatusLayer)
}

/// Past the concurrency limit, a request is answered at once with
/// `RESOURCE_EXHAUSTED` instead of waiting: tower's load shedding in front
/// of its global concurrency limit (one semaphore for all connections), and
/// the refusal turned into that answer here, inside the RPC layer, so it is
/// traced and counted with its status.
pub type ShedLayers =
    ServiceBuilder<Stack<GlobalConcurrencyLimitLayer, Stack<LoadShedLayer, Stack<RefuseOverloadLayer, Identity>>>>;

/// The response of the layers inside the shedding.
type Answer = http::Response<DeadlineBody<tonic::body::Body>>;

fn shed(limit: usize) -> ShedLayers {
    ServiceBuilder::new()
        .layer(RefuseOverloadLayer)
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(limit.max(1)))
}

/// Turns load shedding's refusal into a gRPC answer.
///
/// A named layer rather than `map_result` with a function pointer: a
/// `fn(Result<_, BoxError>)` in the stack's type carries the boxed error's
/// lifetime, which rustc loses inside async fns, and then it cannot prove
/// the layers above (the HTTP gateway) `'static` and `Send`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefuseOverloadLayer;

impl<S> Layer<S> for RefuseOverloadLayer {
    type Service = RefuseOverload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseOverload { inner }
    }
}

/// Service produced by [`RefuseOverloadLayer`].
#[derive(Clone, Debug)]
pub struct RefuseOverload<S> {
    inner: S,
}

impl<S, R> Service<R> for RefuseOverload<S>
where
    S: Service<R, Response = Answer, Error = BoxError>,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = RefusalFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        RefusalFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of [`RefuseOverload`].
    pub struct RefusalFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Future for RefusalFuture<F>
where
    F: Future<Output = Result<Answer, BoxError>>,
{
    type Output = Result<Answer, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.project().inner.poll(cx));
        Poll::Ready(refuse_overload(result))
    }
}

/// Load shedding's refusal as a gRPC answer; anything else as it was.
fn refuse_overload(result: Result<Answer, BoxError>) -> Result<Answer, BoxError> {
    match result {
        Err(error) if error.is::<Overloaded>() => {
            Ok(tonic::Status::resource_exhausted("server is at its concurrency limit; retry with backoff").into_http())
        }
        other => other,
    }
}
