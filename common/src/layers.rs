//! The tower stack in front of every gRPC server: a per-request timeout, a
//! global concurrency limit, and load shedding once that limit is reached, so
//! overload is answered at once with `RESOURCE_EXHAUSTED` instead of queueing
//! without bound.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;
use tonic::transport::Server;
use tower::{
    layer::util::{Identity, Stack},
    Layer, Service,
};

use crate::{
    config::nonzero, limits::ServerLimits, limits_status::LimitsStatusLayer, rpc::RpcTraceLayer, serve::ConnTrackLayer,
};

/// The connection tracker (outermost), RPC spans and metrics, and load shedding.
pub type ServerLayers = Stack<ShedLayer, Stack<RpcTraceLayer, Stack<ConnTrackLayer, Identity>>>;

/// A tonic server builder with the timeout, HTTP/2 limits, the connection
/// tracker (for idle timeouts), the RPC span and metrics layer (so refused
/// calls are counted too) and load shedding applied. Serve it with
/// [`crate::serve::incoming`], which enforces the connection limits.
pub fn server(limits: &ServerLimits) -> Server<Stack<LimitsStatusLayer, ServerLayers>> {
    let mut server = Server::builder()
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
        .layer(RpcTraceLayer::default())
        .layer(ShedLayer::new(limits.max_concurrent_requests))
        // Innermost: the client's deadline ends streams too, and an oversized
        // request is RESOURCE_EXHAUSTED, as with grpc-go/java; see limits_status.
        .layer(LimitsStatusLayer)
}

/// Admits at most `limit` requests at once and answers the rest immediately
/// with `RESOURCE_EXHAUSTED`.
#[derive(Clone, Debug)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    /// A layer admitting `limit` concurrent requests (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// Service produced by [`ShedLayer`].
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Shed<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let result = response.await;
                    drop(permit);
                    result
                })
            }
            Err(_) => Box::pin(std::future::ready(Ok(tonic::Status::resource_exhausted(
                "server is at its concurrency limit; retry with backoff",
            )
            .into_http()))),
        }
    }
}
